//! Bad checkpoints fail with an error that names the file and the key or tensor at fault.

mod common;

use candle_core::{DType, Device};
use common::*;
use crossfeed_model::{CausalLm, TextTokenizer};

fn load_err(dir: &std::path::Path) -> String {
    CausalLm::load_dir(dir, &Device::Cpu, DType::F32).expect_err("must fail").to_string()
}

fn edit_config(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn unknown_model_type_is_named() {
    let tmp = copy_fixture("opt125");
    edit_config(tmp.path(), |v| v["model_type"] = "gpt5".into());
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("gpt5") && e.contains("\"opt\""), "{e}");
}

#[test]
fn missing_weight_is_named() {
    let tmp = copy_fixture("llama");
    // A config with more layers than the checkpoint holds.
    edit_config(tmp.path(), |v| v["num_hidden_layers"] = 3.into());
    let e = load_err(tmp.path());
    assert!(e.contains("missing weight") && e.contains("model.layers.2.") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn shape_mismatch_is_named() {
    let tmp = copy_fixture("opt125");
    edit_config(tmp.path(), |v| v["ffn_dim"] = 65.into());
    let e = load_err(tmp.path());
    assert!(e.contains("fc1.weight") && e.contains("shape"), "{e}");
}

#[test]
fn extra_weight_is_named() {
    let tmp = copy_fixture("llama");
    edit_config(tmp.path(), |v| v["num_hidden_layers"] = 1.into());
    let e = load_err(tmp.path());
    assert!(e.contains("unexpected weight") && e.contains("model.layers.1."), "{e}");
}

#[test]
fn missing_weights_file_names_the_directory() {
    let tmp = copy_fixture("opt125");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("no weights found") && e.contains(&tmp.path().display().to_string()), "{e}");
}

#[test]
fn tokenizer_larger_than_vocab_is_refused() {
    let tmp = copy_fixture("opt125");
    edit_config(tmp.path(), |v| v["vocab_size"] = 100.into());
    let e = crossfeed_model::check_tokenizer_fits(&TextTokenizer::from_dir(tmp.path()).unwrap(), 100, &tmp.path().join("config.json"))
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("vocab_size is 100") && e.contains("config.json"), "{e}");
}

#[test]
fn not_a_dir_nor_hub_id() {
    let e = CausalLm::load("./no/such/dir", &Device::Cpu, DType::F32, &Default::default()).expect_err("must fail").to_string();
    assert!(e.contains("./no/such/dir") && e.contains("no such model directory"), "{e}");
}

#[test]
fn offline_hub_id_not_in_cache_says_how_to_fetch() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", cache.path());
    let opts = crossfeed_model::HubOptions { offline: true, revision: None };
    let e = CausalLm::load("facebook/opt-350m", &Device::Cpu, DType::F32, &opts).expect_err("must fail").to_string();
    assert!(e.contains("facebook/opt-350m") && e.contains("offline") && e.contains("download"), "{e}");
}

/// An index whose weight_map points outside the checkpoint (`..` or an absolute path) is refused,
/// naming the shard, instead of reading a file elsewhere on the machine.
#[test]
fn a_weight_map_pointing_outside_the_checkpoint_is_refused() {
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama32");
    let outside = tempfile::tempdir().unwrap();
    let stolen = outside.path().join("elsewhere.safetensors");
    std::fs::copy(src.join("model-00001-of-00002.safetensors"), &stolen).unwrap();
    for shard in [stolen.display().to_string(), "../../elsewhere.safetensors".to_string()] {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let index_path = dir.path().join("model.safetensors.index.json");
        let mut index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
        for v in index["weight_map"].as_object_mut().unwrap().values_mut() {
            if v == "model-00001-of-00002.safetensors" {
                *v = serde_json::Value::from(shard.clone());
            }
        }
        std::fs::write(&index_path, index.to_string()).unwrap();
        let e = crossfeed_model::CausalLm::load_dir(dir.path(), &candle_core::Device::Cpu, candle_core::DType::F32).err().expect("must refuse").to_string();
        assert!(e.contains("weight_map") && e.contains(&shard), "{shard}: {e}");
    }
}

/// Gemma 3's text checkpoints ship a tokenizer one special token (`<image_soft_token>`) past the
/// embedding table: allowed, while an ordinary token past it is still refused.
#[test]
fn special_tokens_past_the_table_are_allowed_ordinary_ones_are_not() {
    let tmp = copy_fixture("gemma3");
    let path = tmp.path().join("tokenizer.json");
    let mut tj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let n = TextTokenizer::from_dir(tmp.path()).unwrap().len();
    tj["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": n, "content": "<image_soft_token>",
        "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    std::fs::write(&path, tj.to_string()).unwrap();
    let tok = TextTokenizer::from_dir(tmp.path()).unwrap();
    assert_eq!(tok.len(), n + 1);
    let config = tmp.path().join("config.json");
    crossfeed_model::check_tokenizer_fits(&tok, n, &config).unwrap();
    let e = crossfeed_model::check_tokenizer_fits(&tok, n - 1, &config).err().expect("an ordinary token past the table");
    assert!(e.to_string().contains("config.json"), "{e}");
}
