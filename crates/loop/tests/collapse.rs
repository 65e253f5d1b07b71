//! The collapse metrics against their references: hand computations (distinct-n, cosine, the ones
//! crossfeed-embed's copies pinned before they were removed) and `tests/fixtures/collapse.json`,
//! written by `scripts/make_collapse_fixtures.py` with sacrebleu, vendi-score and numpy.

use crossfeed_loop::collapse::{
    cosine, distinct_n, error_consensus, mean_pairwise_cosine, perplexity, self_bleu, sentence_bleu, tokenize_13a, type_token_ratio, vendi_score, Decision,
};
use serde_json::Value;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/collapse.json");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/collapse.json (scripts/make_collapse_fixtures.py)");
    let v: Value = serde_json::from_str(&text).expect("fixture JSON");
    assert_eq!(v["version"], 1, "regenerate with scripts/make_collapse_fixtures.py");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|x| x.as_str().expect("string").to_string()).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
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

#[test]
fn tokenizer_13a_matches_sacrebleu() {
    let f = fixture();
    for g in f["bleu"].as_array().unwrap() {
        for (text, want) in strings(&g["texts"]).iter().zip(g["tokens"].as_array().unwrap()) {
            assert_eq!(tokenize_13a(text), strings(want), "13a tokens of {text:?}");
        }
    }
}

#[test]
fn self_bleu_matches_sacrebleu() {
    let f = fixture();
    for g in f["bleu"].as_array().unwrap() {
        let texts = strings(&g["texts"]);
        for (i, want) in g["sentence_bleu"].as_array().unwrap().iter().enumerate() {
            let others: Vec<String> = texts.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, t)| t.clone()).collect();
            let (got, want) = (sentence_bleu(&texts[i], &others).unwrap(), want.as_f64().unwrap());
            assert!(close(got, want, 1e-12), "sentence BLEU {got} vs sacrebleu {want} of {:?}", texts[i]);
        }
        assert_eq!(sentence_bleu("a b", &[]), None);
        match g["self_bleu"].as_f64() {
            Some(want) => {
                let got = self_bleu(&texts).expect("two or more texts");
                assert!(close(got, want, 1e-12), "self-BLEU {got} vs sacrebleu {want} on {texts:?}");
            }
            None => assert_eq!(self_bleu(&texts), None),
        }
    }
}

#[test]
fn type_token_ratio_matches_numpy() {
    let f = fixture();
    for g in f["bleu"].as_array().unwrap() {
        let texts = strings(&g["texts"]);
        let got = type_token_ratio(&texts);
        match g["ttr"].as_f64() {
            Some(want) => assert!(close(got.unwrap(), want, 1e-12), "TTR {got:?} vs {want}"),
            None => assert_eq!(got, None),
        }
    }
    assert_eq!(type_token_ratio(&s(&["", "  "])), None);
}

#[test]
fn vendi_matches_vendi_score() {
    let f = fixture();
    for c in f["vendi"].as_array().unwrap() {
        let x: Vec<Vec<f32>> =
            c["embeddings"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()).collect();
        let want = c["vendi"].as_f64().unwrap();
        let got = vendi_score(&x).unwrap();
        assert!(close(got, want, 1e-9), "Vendi {got} vs vendi-score {want} ({} rows)", x.len());
    }
    assert_eq!(vendi_score(&[]), None);
}

#[test]
fn perplexity_matches_numpy() {
    let f = fixture();
    for c in f["perplexity"].as_array().unwrap() {
        let got = perplexity(c["mean_nll"].as_f64().unwrap(), c["tokens"].as_u64().unwrap()).unwrap();
        assert!(close(got, c["perplexity"].as_f64().unwrap(), 1e-12));
    }
    assert_eq!(perplexity(1.0, 0), None);
    assert_eq!(perplexity(f64::NAN, 3), None);
}

fn decisions(v: &Value) -> Vec<Decision> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| Decision {
            correct: d["correct"].as_bool().unwrap(),
            choice: d["choice"].as_array().map(|c| (c[0].as_u64().unwrap() as usize, c[1].as_u64().unwrap() as usize)),
        })
        .collect()
}

#[test]
fn error_consensus_matches_numpy() {
    let f = fixture();
    for c in f["consensus"].as_array().unwrap() {
        let (a, b) = (decisions(&c["a"]), decisions(&c["b"]));
        let got = error_consensus(&a, &b).unwrap();
        assert!(close(got.both_wrong, c["both_wrong"].as_f64().unwrap(), 1e-12));
        assert!(close(got.both_wrong_chance, c["both_wrong_chance"].as_f64().unwrap(), 1e-12));
        match (got.same_wrong, c["same_wrong"].as_f64()) {
            (Some(g), Some(w)) => assert!(close(g, w, 1e-12), "same_wrong {g} vs {w}"),
            (g, w) => assert_eq!(g, w),
        }
        match (got.same_wrong_chance, c["same_wrong_chance"].as_f64()) {
            (Some(g), Some(w)) => assert!(close(g, w, 1e-12), "same_wrong_chance {g} vs {w}"),
            (g, w) => assert_eq!(g, w),
        }
        assert_eq!(error_consensus(&a, &b[1..]), None, "different documents");
    }
    assert_eq!(error_consensus(&[], &[]), None);
}

/// A stand-in embedder: one-hot by the text's first byte, so equal texts embed alike.
struct FirstByte;
impl crossfeed_loop::TextEmbedder for FirstByte {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts.iter().map(|t| (0..4).map(|i| if t.bytes().next().unwrap_or(0) % 4 == i { 1.0 } else { 0.0 }).collect()).collect())
    }
}

#[test]
fn similarity_stage_lines() {
    use crossfeed_loop::similarity::{collapse_lines, read_decisions, CollapseInput, Pair};
    let pairs = |v: &[&str]| -> Vec<Pair> { v.iter().map(|c| ("Q:".to_string(), c.to_string())).collect() };
    let dir = tempfile::tempdir().unwrap();
    let acc = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        read_decisions(&p).unwrap()
    };
    // Entity 0 picks option 1 (wrong) then 0 (right); entity 1 picks 1 (wrong) twice; gsm8k by exact_match.
    let a = acc(
        "a.jsonl",
        "{\"eval_set\":\"sciq\",\"index\":0,\"loglikelihoods\":[-3.0,-1.0,-2.0],\"acc\":false}\n{\"eval_set\":\"sciq\",\"index\":1,\"loglikelihoods\":[-1.0,-2.0,-1.0],\"acc\":true}\n{\"eval_set\":\"gsm8k\",\"index\":0,\"exact_match\":false}\n",
    );
    let b = acc(
        "b.jsonl",
        "{\"eval_set\":\"sciq\",\"index\":0,\"loglikelihoods\":[-3.0,-1.0,-2.0],\"acc\":false}\n{\"eval_set\":\"sciq\",\"index\":1,\"loglikelihoods\":[-3.0,-1.0,-2.0],\"acc\":false}\n{\"eval_set\":\"gsm8k\",\"index\":0,\"exact_match\":true}\n",
    );
    assert_eq!(a["sciq"][1], Decision { correct: true, choice: Some((0, 3)) }, "argmax, first on ties");
    let input = CollapseInput {
        generation: 2,
        entities: &[Some(0), Some(1)],
        sets: vec![("sciq".into(), vec![pairs(&["a b c", "a b c", "x y"]), pairs(&["z"])])],
        real: vec![],
        decisions: vec![a, b],
    };
    let mut cfg = crossfeed_loop::EvalConfig::default();
    cfg.self_bleu_samples = 2;
    let mut scored = Vec::new();
    let mut scorer = |p: &[Pair]| {
        scored.push(p.len());
        Ok((1.0, 3))
    };
    let lines = collapse_lines(&input, &cfg, Some(&FirstByte), Some(&mut scorer)).unwrap();
    let got: Vec<(Option<usize>, Option<usize>, &str, &str, f64)> =
        lines.iter().map(|l| (l.entity, l.peer, l.eval_set.as_str(), l.metric.as_str(), l.value)).collect();
    let e = std::f64::consts::E;
    // Self-BLEU of entity 0 over its first two completions (identical: 100); entity 1 has one completion: no self-BLEU.
    let want: Vec<(Option<usize>, Option<usize>, &str, &str, f64)> = vec![
        (Some(0), None, "sciq", "self_bleu", self_bleu(&s(&["a b c", "a b c"])).unwrap()),
        (Some(0), None, "sciq", "ttr", 1.0),
        (Some(0), None, "sciq", "vendi", vendi_score(&[vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap()),
        (Some(0), None, "sciq", "perplexity", e),
        (Some(1), None, "sciq", "ttr", 1.0),
        (Some(1), None, "sciq", "vendi", 1.0),
        (Some(1), None, "sciq", "perplexity", e),
        (Some(0), Some(1), "gsm8k", "both_wrong", 0.0),
        (Some(0), Some(1), "gsm8k", "both_wrong_chance", 0.0),
        (Some(0), Some(1), "sciq", "both_wrong", 0.5),
        (Some(0), Some(1), "sciq", "both_wrong_chance", 0.5),
        (Some(0), Some(1), "sciq", "same_wrong", 0.5),
        (Some(0), Some(1), "sciq", "same_wrong_chance", 0.25),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1, g.2, g.3), (w.0, w.1, w.2, w.3), "{got:?}");
        assert!((g.4 - w.4).abs() < 1e-12, "{g:?} vs {w:?}");
    }
    assert_eq!(scored, vec![3, 1]);

    // Generation -1: the real continuations as `data_*` lines, first.
    let real = CollapseInput { generation: -1, entities: &[None], sets: vec![], real: vec![("public".into(), pairs(&["a b", "c d"]))], decisions: vec![Default::default()] };
    let lines = collapse_lines(&real, &cfg, None, None).unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l.metric.as_str()).collect();
    assert_eq!(names, ["data_distinct_1", "data_distinct_2", "data_self_bleu", "data_ttr"]);
    assert!(lines.iter().all(|l| l.generation == -1 && l.entity.is_none() && l.eval_set == "public"));
}

#[test]
fn memo_embedder_embeds_each_list_once() {
    use crossfeed_loop::eval::MemoEmbedder;
    use crossfeed_loop::TextEmbedder;
    struct Counting(std::cell::Cell<usize>);
    impl TextEmbedder for Counting {
        fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
            self.0.set(self.0.get() + 1);
            FirstByte.embed(texts)
        }
    }
    let inner = Counting(std::cell::Cell::new(0));
    let memo = MemoEmbedder::new(&inner);
    let (a, b) = (s(&["a", "x"]), s(&["x"]));
    assert_eq!(memo.embed(&a).unwrap(), FirstByte.embed(&a).unwrap());
    assert_eq!(memo.embed(&a).unwrap(), FirstByte.embed(&a).unwrap());
    memo.embed(&b).unwrap();
    assert_eq!(inner.0.get(), 2, "one call per distinct list");
}
