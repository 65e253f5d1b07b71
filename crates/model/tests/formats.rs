//! Checkpoints as each transformers era writes them (tests/fixtures/models/formats, written by
//! `scripts/make_model_fixtures.py --formats` under transformers 5.x and 4.x): 5.x `rope_parameters`
//! and 4.x `rope_scaling` + `rope_theta`, `dtype` / `torch_dtype`, a config with only the sizes,
//! weights stored as f32/bf16/f16 safetensors and as an old-hub `pytorch_model.bin` with `decoder.*`
//! names, and a multimodal Gemma 3 (`gemma3`, the 4B-and-up layout: a SigLIP tower beside the language
//! model, text_config with only the keys that differ from the defaults) read as its text model. Logits must match transformers loading the same directory in f32 to 1e-4.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use crossfeed_model::{Batch, CausalLm, TextTokenizer};
use serde_json::{json, Value};

const FORMATS: &[&str] = &[
    "tf5-llama32",
    "tf5-llama32-bf16",
    "tf5-llama-f16",
    "tf5-llama-minimal",
    "tf5-opt350-bf16",
    "tf4-llama32-bf16",
    "tf4-opt350-f16-bin",
    "tf4-opt125",
    "tf5-gemma3-multimodal-bf16",
];

fn variant(name: &str) -> String {
    format!("formats/{name}")
}

fn golden_batch(g: &Golden) -> Batch {
    let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
    Batch { input_ids: to_u32(&g.tensors["input_ids"]), attention_mask: to_u32(&g.tensors["attention_mask"]), label_mask: None, host: None }
}

/// Max |Δ| over real-token positions (transformers gives pad positions other positions).
fn masked_diff(logits: &Tensor, want: &Tensor, mask: &Tensor) -> f32 {
    let mask = mask.to_vec2::<u32>().unwrap();
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, _) in row.iter().enumerate().filter(|(_, m)| **m == 1) {
            worst = worst.max(max_abs_diff(&logits.get(b).unwrap().get(t).unwrap(), &want.get(b).unwrap().get(t).unwrap()));
        }
    }
    worst
}

fn logits_of(dir: &Path, g: &Golden) -> Tensor {
    let model = CausalLm::load_dir(dir, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    model.forward_batch(&golden_batch(g)).unwrap()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn every_era_and_storage_dtype_matches_transformers() {
    let on_disk: Vec<String> = std::fs::read_dir(fixture("formats")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(on_disk.len(), FORMATS.len(), "fixtures on disk {on_disk:?} vs the list here");
    for name in FORMATS {
        let v = variant(name);
        let g = golden(&v);
        let tok = TextTokenizer::from_dir(&fixture(&v)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let texts: Vec<&str> = g.json["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for (text, want) in texts.iter().zip(ids(&g.json["token_ids"])) {
            assert_eq!(tok.encode(text).unwrap(), want, "{name}: token ids of {text:?}");
        }
        let model = CausalLm::load_dir(&fixture(&v), &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batch = golden_batch(&g);
        let d = masked_diff(&model.forward_batch(&batch).unwrap(), &g.tensors["logits"], &batch.attention_mask);
        eprintln!("{name} (transformers {}, stored {}): max |Δlogits| {d:.2e}", g.json["transformers_version"], g.json["storage_dtype"]);
        assert!(d <= 1e-4, "{name}: logits differ from transformers by {d}");
        let ce = model.ce(&batch).unwrap();
        for (s, w) in ce.ce_sum.to_vec1::<f32>().unwrap().iter().zip(floats(&g.json["ce_sum"])) {
            assert!((s - w).abs() < 1e-3 * w.abs().max(1.0), "{name}: ce {s} vs {w}");
        }
    }
}

/// The same Llama 3.2 RoPE written the 5.x way and the three 4.x ways computes the same logits.
#[test]
fn rope_settings_of_either_era_mean_the_same() {
    let v = variant("tf5-llama32");
    let g = golden(&v);
    let base = logits_of(&fixture(&v), &g);
    type Rewrite = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
    let rewrites: Vec<(&str, Rewrite)> = vec![
        ("4.x rope_scaling + top-level rope_theta", Box::new(|c| {
            let mut p = c.remove("rope_parameters").unwrap();
            c.insert("rope_theta".into(), p.as_object_mut().unwrap().remove("rope_theta").unwrap());
            c.insert("rope_scaling".into(), p);
        })),
        ("4.x with the old `type` key", Box::new(|c| {
            let mut p = c.remove("rope_parameters").unwrap();
            let o = p.as_object_mut().unwrap();
            c.insert("rope_theta".into(), o.remove("rope_theta").unwrap());
            let t = o.remove("rope_type").unwrap();
            o.insert("type".into(), t);
            c.insert("rope_scaling".into(), p);
        })),
        ("the same theta in both places", Box::new(|c| {
            c.insert("rope_theta".into(), json!(500000.0));
        })),
        ("llama3 without original_max_position_embeddings (= max_position_embeddings)", Box::new(|c| {
            c["rope_parameters"].as_object_mut().unwrap().remove("original_max_position_embeddings");
            c.insert("max_position_embeddings".into(), json!(8192));
        })),
    ];
    for (what, f) in rewrites {
        let tmp = copy_fixture(&v);
        edit_config(tmp.path(), f);
        assert_eq!(max_abs_diff(&logits_of(tmp.path(), &g), &base), 0.0, "{what}");
    }
    // And the setting matters: without the scaling the numbers move (the bug this guards against).
    let tmp = copy_fixture(&v);
    edit_config(tmp.path(), |c| {
        c.insert("rope_parameters".into(), json!({"rope_type": "default", "rope_theta": 500000.0}));
    });
    assert!(max_abs_diff(&logits_of(tmp.path(), &g), &base) > 1e-3);
}

/// `null` is "not set" for transformers: the derived or default value applies.
#[test]
fn null_optional_keys_take_the_defaults() {
    let v = variant("tf5-llama-f16");
    let g = golden(&v);
    let tmp = copy_fixture(&v);
    edit_config(tmp.path(), |c| {
        for k in ["head_dim", "num_key_value_heads", "pad_token_id", "rope_scaling"] {
            c.insert(k.into(), Value::Null);
        }
    });
    let d = masked_diff(&logits_of(tmp.path(), &g), &g.tensors["logits"], &g.tensors["attention_mask"].to_dtype(DType::U32).unwrap());
    assert!(d <= 1e-4, "{d}");
}

#[test]
fn training_only_settings_are_applied_or_reported() {
    // opt-350m's dropout 0.1 is applied in training; only layer drop would be reported.
    let opt = CausalLm::load_dir(&fixture(&variant("tf4-opt350-f16-bin")), &Device::Cpu, DType::F32).unwrap();
    assert!(opt.unapplied_training_settings().is_empty());
    assert!(opt.has_dropout());
    let llama = CausalLm::load_dir(&fixture(&variant("tf5-llama32")), &Device::Cpu, DType::F32).unwrap();
    assert!(llama.unapplied_training_settings().is_empty());
}

/// A narrow checkpoint saved by crossfeed is f32 and says so under both eras' dtype keys.
#[test]
fn saving_a_bf16_checkpoint_relabels_its_dtype() {
    let model = CausalLm::load_dir(&fixture(&variant("tf5-llama32-bf16")), &Device::Cpu, DType::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path()).unwrap();
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["dtype"].as_str(), cfg["torch_dtype"].as_str()), (Some("float32"), Some("float32")));
    let st = candle_core::safetensors::load(tmp.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(st.values().all(|t| t.dtype() == DType::F32));
}

/// A multimodal Gemma 3 loads as its text model: the vision tower is not read, the model is the same as
/// the `gemma3` fixture's text model (its weights), and what it saves is a `gemma3_text` checkpoint that
/// loads back to the same logits. Unknown top-level keys are refused by name.
#[test]
fn multimodal_gemma3_is_read_as_its_text_model() {
    let v = variant("tf5-gemma3-multimodal-bf16");
    let model = CausalLm::load_dir(&fixture(&v), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.config_json["model_type"], "gemma3_text");
    assert_eq!(model.config_json["architectures"], json!(["Gemma3ForCausalLM"]));
    assert!(model.params.iter().all(|(n, _)| n.starts_with("model.")), "{:?}", model.params.iter().map(|p| &p.0).collect::<Vec<_>>());
    assert_eq!(model.eos_token_ids(), vec![1, 3], "generation_config.json's eos ids");
    let g = golden(&v);
    let saved = tempfile::tempdir().unwrap();
    model.save(saved.path()).unwrap();
    // For a check that transformers loads what crossfeed saved (Gemma3ForCausalLM, same logits as the golden).
    if let Some(dir) = std::env::var_os("CROSSFEED_KEEP_SAVED") {
        model.save(&Path::new(&dir).join("gemma3-multimodal-text")).unwrap();
    }
    let text_only: Value = serde_json::from_str(&std::fs::read_to_string(saved.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(text_only["model_type"], "gemma3_text");
    let d = masked_diff(&logits_of(saved.path(), &g), &g.tensors["logits"], &golden_batch(&g).attention_mask);
    assert!(d <= 1e-4, "saved text model: logits differ by {d}");

    let copy = copy_fixture(&v);
    edit_config(copy.path(), |c| drop(c.insert("mm_future_setting".into(), json!(1))));
    let err = CausalLm::load_dir(copy.path(), &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("mm_future_setting"), "{err}");
}
