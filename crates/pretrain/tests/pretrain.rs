//! Micro base builds: tokenizer layout, loadability, loss goes down, caching and rebuilds.

use std::path::Path;

use candle_core::{DType, Device};
use crossfeed_model::{CausalLm, TextTokenizer};
use crossfeed_pretrain::{build_base, cached_base, ensure_base, read_report, BaseConfig, ModelShape, BOS_ID, EOS_ID};

fn micro() -> BaseConfig {
    BaseConfig::micro()
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn micro_base_builds_loads_learns_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base");
    let cfg = micro();
    let mut steps = Vec::new();
    let dir = ensure_base(&cfg, &out, |s, l| steps.push((s, l))).unwrap();
    assert_eq!(dir, out);
    assert_eq!(steps.len(), 20);
    assert_eq!(steps.first().unwrap().0, 1);

    // Only the final directory is left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["base".to_string()]);

    // Tokenizer: Llama-3 layout, bos prepended, round trip.
    let tok = TextTokenizer::from_dir(&out).unwrap();
    assert_eq!(tok.bos_id, Some(BOS_ID));
    assert_eq!(tok.eos_id, Some(EOS_ID));
    let text = "The small dog ate 3 apples.\nThen it slept.";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], BOS_ID);
    assert!(ids.len() < text.len(), "BPE should merge bytes: {} tokens for {} bytes", ids.len(), text.len());
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    assert_eq!(tok.encode_plain(text).unwrap(), ids[1..].to_vec());
    assert!(tok.len() <= 320);

    // Model: loads, vocab padded to a multiple of 8, tied head, the expected tensors.
    let model = CausalLm::load_dir(&out, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.vocab_size() % 8, 0);
    assert!(model.vocab_size() >= tok.len());
    let names: Vec<&str> = model.params.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"model.embed_tokens.weight"));
    assert!(names.contains(&"model.layers.1.mlp.down_proj.weight"));
    assert!(!names.contains(&"lm_head.weight"));
    assert_eq!(names.len(), 1 + 2 * 9 + 1);
    assert_eq!(model.eos_token_ids(), vec![EOS_ID]);

    // Learning happened: the report is consistent and the loss went down.
    let report = read_report(&out).unwrap();
    assert_eq!(report.config, cfg);
    assert_eq!(report.loss_curve.len(), 20);
    let first = report.loss_curve[0];
    assert!((first - (report.vocab_size as f64).ln()).abs() < 0.5, "initial loss {first} should be ~ln(V)");
    assert!(report.final_loss < first - 1.0, "loss {first} -> {}", report.final_loss);
    assert!(report.public_eval_ce_after < report.public_eval_ce_before - 1.0, "{report:?}");
    assert_eq!(report.num_params, cfg.model.num_params(report.vocab_size));

    // Second ensure: skipped (no step callback, files untouched).
    let stamp = mtime(&out.join("model.safetensors"));
    let mut called = false;
    ensure_base(&cfg, &out, |_, _| called = true).unwrap();
    assert!(!called);
    assert_eq!(mtime(&out.join("model.safetensors")), stamp);
    assert!(cached_base(&cfg, &out).is_some());

    // A changed config rebuilds and replaces the directory.
    let mut changed = cfg.clone();
    changed.steps = 5;
    assert!(cached_base(&changed, &out).is_none());
    let mut n = 0;
    ensure_base(&changed, &out, |_, _| n += 1).unwrap();
    assert_eq!(n, 5);
    assert_eq!(read_report(&out).unwrap().config, changed);
    assert!(cached_base(&cfg, &out).is_none());
    let names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["base".to_string()]);
}

#[test]
fn builds_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = micro();
    cfg.steps = 3;
    build_base(&cfg, &tmp.path().join("a"), |_, _| {}).unwrap();
    build_base(&cfg, &tmp.path().join("b"), |_, _| {}).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert_eq!(std::fs::read(tmp.path().join("a").join(f)).unwrap(), std::fs::read(tmp.path().join("b").join(f)).unwrap(), "{f}");
    }
    assert_eq!(read_report(&tmp.path().join("a")).unwrap().loss_curve, read_report(&tmp.path().join("b")).unwrap().loss_curve);
}

#[test]
fn config_rejects_unknown_keys_and_bad_shapes() {
    let err = serde_json::from_str::<BaseConfig>(r#"{"stepz": 3}"#).unwrap_err();
    assert!(err.to_string().contains("stepz"));
    let cfg: BaseConfig = serde_json::from_str(r#"{"steps": 3, "model": {"hidden_size": 64}}"#).unwrap();
    assert_eq!(cfg.steps, 3);
    assert_eq!(cfg.model.num_hidden_layers, 4);
    let mut bad = micro();
    bad.model.num_key_value_heads = 3;
    let tmp = tempfile::tempdir().unwrap();
    let e = build_base(&bad, &tmp.path().join("x"), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("num_key_value_heads"), "{e}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn default_shape_param_count() {
    let shape = ModelShape::default();
    let n = shape.num_params(512);
    assert!((500_000..3_000_000).contains(&n), "{n}");
}
