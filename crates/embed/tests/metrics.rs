//! The metric helpers against hand computations and NLTK (sentence_bleu with SmoothingFunction().method2,
//! numbers computed once with nltk 3.x and pasted here).

use crossfeed_embed::{cosine, distinct_n, mean_pairwise_cosine, self_bleu};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn cosine_basics() {
    assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-7);
    assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
    assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
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
    assert!((mean_pairwise_cosine(&sets) - 4.0 / 6.0).abs() < 1e-6);
    assert!(mean_pairwise_cosine(&sets[..1]).is_nan());
    assert!(mean_pairwise_cosine(&[vec![], vec![]]).is_nan());
}

#[test]
fn distinct_n_by_hand() {
    let t = s(&["a b a b", "a b c"]);
    // unigrams: a b a b a b c -> 3 unique / 7
    assert!((distinct_n(&t, 1) - 3.0 / 7.0).abs() < 1e-12);
    // bigrams: ab ba ab | ab bc -> {ab, ba, bc} 3 / 5
    assert!((distinct_n(&t, 2) - 3.0 / 5.0).abs() < 1e-12);
    assert_eq!(distinct_n(&s(&["a"]), 2), 0.0);
    assert_eq!(distinct_n(&[], 1), 0.0);
}

#[test]
fn self_bleu_matches_nltk_method2() {
    let t = s(&[
        "the cat sat on the mat",
        "the cat sat on a mat today",
        "a dog ran in the park",
        "the the the cat",
        "hello",
    ]);
    // nltk: mean of sentence_bleu(others, t_i, weights=(1/n,)*n, smoothing_function=SmoothingFunction().method2)
    assert!((self_bleu(&t, 4) - 0.3522061067730234).abs() < 1e-12, "{}", self_bleu(&t, 4));
    assert!((self_bleu(&t, 2) - 0.4246951421918819).abs() < 1e-12, "{}", self_bleu(&t, 2));
    let dup = s(&["a b c d e", "a b c d e", "x y z"]);
    assert!((self_bleu(&dup, 4) - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(self_bleu(&s(&["only one"]), 4), 0.0);
}
