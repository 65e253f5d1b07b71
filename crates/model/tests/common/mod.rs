//! Shared helpers for the parity tests: fixture paths and golden-file readers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;

pub const VARIANTS: &[&str] = &["opt125", "opt350", "llama32", "llama", "qwen2", "qwen3", "gpt2", "gemma3", "gemma2"];

pub fn fixture(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(variant)
}

pub struct Golden {
    pub json: Value,
    pub tensors: HashMap<String, Tensor>,
}

pub fn golden(variant: &str) -> Golden {
    let dir = fixture(variant);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).expect("golden.json")).expect("json");
    assert_eq!(json["version"], 1, "fixture version changed: regenerate with scripts/make_model_fixtures.py");
    let tensors = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).expect("golden.safetensors");
    Golden { json, tensors }
}

pub fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().expect("array").iter().map(|r| r.as_array().expect("row").iter().map(|x| x.as_u64().expect("id") as u32).collect()).collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f") as f32).collect()
}

/// Max absolute difference of two same-shape tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Copies a fixture directory into a temp dir so a test can break it.
pub fn copy_fixture(variant: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture(variant)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy");
    }
    tmp
}
