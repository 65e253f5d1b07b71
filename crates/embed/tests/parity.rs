//! Parity with transformers on the tiny random-weight fixture (scripts/make_embed_fixtures.py):
//! same token ids (truncation to max_seq_length 16 despite tokenizer.json's baked-in 128 / fixed
//! padding 40), same vectors within 1e-4, batching-invariant, unit norm, `bert.`-prefixed weights
//! accepted, and the documented fallbacks/errors for missing files.

use std::path::{Path, PathBuf};

use candle_core::Device;
use crossfeed_embed::{EmbedError, Embedder, Pooling};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/embed")
}

struct Golden {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
    embs: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("golden.json")).unwrap()).unwrap();
    let items = v["items"].as_array().unwrap();
    Golden {
        texts: items.iter().map(|i| i["text"].as_str().unwrap().to_string()).collect(),
        ids: items
            .iter()
            .map(|i| i["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .collect(),
        embs: items
            .iter()
            .map(|i| {
                i["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect(),
    }
}

/// Cosine of two unit vectors (both sides' embeddings are L2-normalised; the norms are checked).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_against_golden(e: &Embedder, g: &Golden) -> (f32, f32) {
    let (mut worst_cos, mut worst_abs) = (1.0f32, 0.0f32);
    for bs in [5, 1, 2] {
        let out = e.embed(&g.texts, bs).unwrap();
        assert_eq!(out.len(), g.texts.len());
        for (i, (ours, reference)) in out.iter().zip(&g.embs).enumerate() {
            assert_eq!(ours.len(), reference.len());
            let c = cosine(ours, reference);
            let d = max_abs(ours, reference);
            assert!(c >= 1.0 - 1e-4, "batch {bs} text {i}: cosine {c}");
            assert!(d <= 1e-4, "batch {bs} text {i}: max abs diff {d}");
            let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "text {i}: norm {norm}");
            worst_cos = worst_cos.min(c);
            worst_abs = worst_abs.max(d);
        }
    }
    (worst_cos, worst_abs)
}

#[test]
fn tiny_model_matches_transformers() {
    let g = golden();
    let e = Embedder::load(fixture_dir().join("tiny-st").to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(e.max_seq_length(), 16);
    assert_eq!(e.pooling(), Pooling::Mean);
    assert_eq!(e.dim(), 32);
    assert!(e.notes().is_empty(), "{:?}", e.notes());
    for (t, ids) in g.texts.iter().zip(&g.ids) {
        assert_eq!(&e.token_ids(t).unwrap(), ids, "token ids for {t:?}");
    }
    assert!(g.ids.iter().any(|i| i.len() == 16), "fixture must exercise truncation");
    let (c, d) = check_against_golden(&e, &g);
    eprintln!("tiny parity: worst cosine {c:.9}, worst max-abs diff {d:.3e}");

    // Batch of 5 equals one at a time exactly enough, and texts differ from each other.
    let all = e.embed(&g.texts, 5).unwrap();
    for (i, t) in g.texts.iter().enumerate() {
        let one = e.embed(std::slice::from_ref(t), 1).unwrap();
        assert!(max_abs(&one[0], &all[i]) <= 1e-5);
    }
    assert!(cosine(&all[0], &all[3]) < 0.99);
    assert!(e.embed(&[], 4).unwrap().is_empty());
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// A writable copy of the tiny sentence-transformers fixture (the directory lives as long as the guard).
fn tiny_st_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture_dir().join("tiny-st"), &dir);
    (tmp, dir)
}

#[test]
fn bert_prefixed_weights_load_the_same() {
    let g = golden();
    let (_tmp, dir) = tiny_st_copy();
    let w = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    let mut renamed: std::collections::HashMap<String, candle_core::Tensor> =
        tensors.into_iter().map(|(k, v)| (format!("bert.{k}"), v)).collect();
    // An unrelated head that must be ignored.
    renamed.insert(
        "cls.predictions.bias".into(),
        candle_core::Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&renamed, &w).unwrap();
    let e = Embedder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    check_against_golden(&e, &g);
}

#[test]
fn missing_pooling_config_defaults_to_mean_with_note() {
    let g = golden();
    let (_tmp, dir) = tiny_st_copy();
    std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();
    let e = Embedder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(e.pooling(), Pooling::Mean);
    assert!(
        e.notes().iter().any(|n| n.contains("1_Pooling") && n.contains("mean")),
        "{:?}",
        e.notes()
    );
    check_against_golden(&e, &g);
}

#[test]
fn missing_weights_error_names_the_path() {
    let (_tmp, dir) = tiny_st_copy();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = Embedder::load(dir.to_str().unwrap(), &Device::Cpu).err().expect("must fail");
    assert!(matches!(err, EmbedError::Missing { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&dir.join("model.safetensors").display().to_string()), "{msg}");
}

#[test]
fn several_pooling_modes_are_rejected_naming_the_keys() {
    let (_tmp, dir) = tiny_st_copy();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    let msg = Embedder::load(dir.to_str().unwrap(), &Device::Cpu)
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("1_Pooling") && msg.contains("pooling_mode_max_tokens"), "{msg}");
}

#[test]
fn offline_hub_id_not_in_cache_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = crossfeed_embed::ResolveOptions {
        offline: true,
        revision: None,
    };
    // Point the hub cache at an empty folder so nothing is found and no network is touched.
    std::env::set_var("HF_HOME", tmp.path());
    std::env::set_var("HF_HUB_CACHE", tmp.path().join("hub"));
    let msg = Embedder::load_with("nobody/not-a-model", &Device::Cpu, &opts)
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("nobody/not-a-model") && msg.contains("offline"), "{msg}");
}

/// Config values the vendored BERT does not implement fail naming the key (not as a bare serde error).
#[test]
fn unsupported_bert_config_values_are_rejected_naming_the_key() {
    for (key, value) in [
        ("position_embedding_type", serde_json::json!("relative_key")),
        ("hidden_act", serde_json::json!("gelu_new")),
        ("is_decoder", serde_json::json!(true)),
        ("num_attention_heads", serde_json::json!(5)),
    ] {
        let (_tmp, dir) = tiny_st_copy();
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        let err = Embedder::load(dir.to_str().unwrap(), &Device::Cpu).err().expect("must fail");
        assert!(matches!(err, EmbedError::Config { .. }), "{key}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains("config.json"), "{msg}");
    }
}

/// An explicit `"position_embedding_type": "absolute"` (all-MiniLM-L6-v2's config has it) is accepted.
#[test]
fn explicit_absolute_position_embeddings_load() {
    let g = golden();
    let (_tmp, dir) = tiny_st_copy();
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["position_embedding_type"] = serde_json::json!("absolute");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let e = Embedder::load(dir.to_str().unwrap(), &Device::Cpu).unwrap();
    check_against_golden(&e, &g);
}
