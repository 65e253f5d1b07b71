//! The Llama shape of the base model, its `config.json` / `generation_config.json`, and a seeded
//! random initialisation written as `model.safetensors` with `LlamaForCausalLM`'s tensor names.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{PretrainError, Result};
use crate::tokenizer::{BOS_ID, EOS_ID};

/// Shape of the base Llama. Every field has a default; unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelShape {
    /// Width of the residual stream. Default 128.
    pub hidden_size: usize,
    /// Decoder layers. Default 4.
    pub num_hidden_layers: usize,
    /// Query heads. Default 4 (head_dim = hidden_size / heads = 32).
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention). Default 2.
    pub num_key_value_heads: usize,
    /// SwiGLU inner width. Default 344 (~ 8/3 * hidden, rounded to a multiple of 8).
    pub intermediate_size: usize,
    /// Context length. Default 512.
    pub max_position_embeddings: usize,
    /// RoPE base. Default 10000.
    pub rope_theta: f64,
    /// RMSNorm epsilon. Default 1e-5.
    pub rms_norm_eps: f64,
    /// Share the embedding with the LM head. Default true.
    pub tie_word_embeddings: bool,
    /// Std of the normal initialisation of linear and embedding weights. Default 0.02.
    pub initializer_range: f64,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            hidden_size: 128,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 344,
            max_position_embeddings: 512,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}

impl ModelShape {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PretrainError::Config(m));
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return bad("model: hidden_size, num_hidden_layers and intermediate_size must be >= 1".into());
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!("model: hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("model: head_dim {} must be even (RoPE)", self.head_dim()));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "model: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.initializer_range > 0.0 && self.initializer_range.is_finite()) {
            return bad(format!("model: initializer_range must be > 0, got {}", self.initializer_range));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Every weight tensor of `LlamaForCausalLM` (tied head omitted when tied), in a fixed order,
    /// with its shape and whether it is an RMSNorm weight (initialised to ones).
    pub fn tensor_specs(&self, vocab_size: usize) -> Vec<(String, Vec<usize>, bool)> {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * d, self.num_key_value_heads * d);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab_size, h], false)];
        for l in 0..self.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), vec![h], true));
            out.push((p("self_attn.q_proj.weight"), vec![q, h], false));
            out.push((p("self_attn.k_proj.weight"), vec![kv, h], false));
            out.push((p("self_attn.v_proj.weight"), vec![kv, h], false));
            out.push((p("self_attn.o_proj.weight"), vec![h, q], false));
            out.push((p("post_attention_layernorm.weight"), vec![h], true));
            out.push((p("mlp.gate_proj.weight"), vec![i, h], false));
            out.push((p("mlp.up_proj.weight"), vec![i, h], false));
            out.push((p("mlp.down_proj.weight"), vec![h, i], false));
        }
        out.push(("model.norm.weight".to_string(), vec![h], true));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![vocab_size, h], false));
        }
        out
    }

    /// Number of parameters (tied head counted once).
    pub fn num_params(&self, vocab_size: usize) -> usize {
        self.tensor_specs(vocab_size).iter().map(|(_, s, _)| s.iter().product::<usize>()).sum()
    }

    /// transformers' `LlamaConfig` as `config.json`.
    pub fn config_json(&self, vocab_size: usize) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "pretraining_tp": 1,
            "initializer_range": self.initializer_range,
            "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID,
            "use_cache": true,
            "torch_dtype": "float32"
        })
    }
}

/// `vocab_size` rounded up to a multiple of 8.
pub fn padded_vocab(tokenizer_len: usize) -> usize {
    tokenizer_len.div_ceil(8) * 8
}

/// Writes `config.json`, `generation_config.json` and a random `model.safetensors` into `dir`.
/// Linear and embedding weights ~ N(0, initializer_range²) from a ChaCha8 stream seeded by `seed`
/// (one stream over the tensors in [`ModelShape::tensor_specs`] order); RMSNorm weights are ones.
pub fn write_random_init(shape: &ModelShape, vocab_size: usize, seed: u64, dir: &Path) -> Result<()> {
    shape.validate()?;
    crate::write_json_atomic(&dir.join("config.json"), &shape.config_json(vocab_size))?;
    crate::write_json_atomic(
        &dir.join("generation_config.json"),
        &json!({"_from_model_config": true, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": true}),
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let std = shape.initializer_range;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, dims, is_norm) in shape.tensor_specs(vocab_size) {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = if is_norm { vec![1.0; n] } else { normals(&mut rng, n, std) };
        tensors.insert(name, Tensor::from_vec(data, dims, &Device::Cpu)?);
    }
    let path = dir.join("model.safetensors");
    crossfeed_fsio::write_atomic_with(&path, |tmp| Ok(candle_core::safetensors::save(&tensors, tmp)?))
}

/// `n` draws of N(0, std²) by Box–Muller (both outputs used).
fn normals(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}
