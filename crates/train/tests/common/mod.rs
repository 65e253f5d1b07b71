//! Shared test model: the fixture MLP (fc1 -> relu -> elementwise norm.weight -> fc2) in candle ops.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor, Var, D};

pub const NAMES: [&str; 5] = [
    "fc1.weight",
    "fc1.bias",
    "norm.weight",
    "fc2.weight",
    "fc2.bias",
];

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train")
}

pub fn load_fixture() -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = fixture_dir();
    let t = candle_core::safetensors::load(dir.join("mlp_adamw.safetensors"), &Device::Cpu)
        .expect("fixture tensors");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlp_adamw.json")).expect("fixture json"))
            .expect("json");
    (t, j)
}

pub struct Mlp {
    pub params: Vec<(String, Var)>,
}

impl Mlp {
    /// Fresh vars (own storage) holding `init.<name>` (or `<prefix><name>`) from the fixture.
    pub fn from_tensors(t: &HashMap<String, Tensor>, prefix: &str) -> Self {
        let params = NAMES
            .iter()
            .map(|n| {
                let src = &t[&format!("{prefix}{n}")];
                let var = Var::from_tensor(&src.copy().unwrap()).unwrap();
                (n.to_string(), var)
            })
            .collect();
        Mlp { params }
    }

    /// Fresh vars with the current values of `other` (simulates reloading saved weights).
    pub fn clone_values(other: &Mlp) -> Self {
        let params = other
            .params
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(),
                )
            })
            .collect();
        Mlp { params }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .as_tensor()
    }

    /// Summed cross-entropy over the rows of `x` and the number of predicted "tokens" (rows).
    pub fn ce_sum(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, usize)> {
        let h = x
            .matmul(&self.get("fc1.weight").t()?)?
            .broadcast_add(self.get("fc1.bias"))?;
        let h = h.relu()?.broadcast_mul(self.get("norm.weight"))?;
        let logits = h
            .matmul(&self.get("fc2.weight").t()?)?
            .broadcast_add(self.get("fc2.bias"))?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = lsm.gather(&y.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
        Ok((picked.sum_all()?.neg()?, x.dim(0)?))
    }

    pub fn values(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }
}
