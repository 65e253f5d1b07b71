//! The collapse metrics against hand computations (distinct-n, cosine: what crossfeed-embed's copies
//! pinned before they were removed, with the loop's edge cases: undefined = `None`).

use crossfeed_loop::collapse::{cosine, distinct_n, mean_pairwise_cosine};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn cosine_basics() {
    assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
    assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
    assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
}

#[test]
fn mean_pairwise_cosine_by_hand() {
    // 3 entities, 2 prompts. Prompt 0: e0=e1=(1,0), e2=(0,1) -> pairs 1,0,0. Prompt 1: all (1,1) -> 1,1,1.
    let sets = vec![
        vec![vec![1.0, 0.0], vec![1.0, 1.0]],
        vec![vec![1.0, 0.0], vec![2.0, 2.0]],
        vec![vec![0.0, 1.0], vec![3.0, 3.0]],
    ];
    assert!((mean_pairwise_cosine(&sets).unwrap() - 4.0 / 6.0).abs() < 1e-12);
    let (a, b, c) = (vec![vec![1.0, 0.0]], vec![vec![1.0, 0.0]], vec![vec![0.0, 1.0]]);
    assert_eq!(mean_pairwise_cosine(&[a.clone(), b]), Some(1.0));
    assert_eq!(mean_pairwise_cosine(&[a.clone(), c]), Some(0.0));
    // Undefined: one entity, or no prompt.
    assert_eq!(mean_pairwise_cosine(&[a]), None);
    assert_eq!(mean_pairwise_cosine(&[vec![], vec![]]), None);
}

#[test]
fn distinct_n_by_hand() {
    let t = s(&["a b a b"]);
    assert_eq!(distinct_n(&t, 1), 0.5);
    assert!((distinct_n(&t, 2) - 2.0 / 3.0).abs() < 1e-12);
    let t = s(&["a b a b", "a b c"]);
    // unigrams: a b a b a b c -> 3 unique / 7; bigrams: ab ba ab | ab bc -> {ab, ba, bc} 3 / 5
    assert!((distinct_n(&t, 1) - 3.0 / 7.0).abs() < 1e-12);
    assert!((distinct_n(&t, 2) - 3.0 / 5.0).abs() < 1e-12);
    assert_eq!(distinct_n(&s(&["a"]), 2), 0.0);
    assert_eq!(distinct_n(&[], 1), 0.0);
    assert_eq!(distinct_n(&t, 0), 0.0);
}
