//! Causal language models on candle that can be fine-tuned: OPT and Llama (3.2), full-sequence
//! logits over padded batches, differentiable ops only, loading from HF checkpoints (local or hub) and
//! saving checkpoints transformers loads. The reference is transformers' `modeling_opt.py` and
//! `modeling_llama.py`; `scripts/make_model_fixtures.py` writes the golden numbers the tests compare to.

mod attention;
pub mod cache;
pub mod causal_lm;
pub mod config_keys;
pub mod cuda_rules;
pub mod device;
pub mod dropout;
pub mod error;
pub mod fastpath;
mod fexp;
pub mod fused;
pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod hub;
mod linear;
pub mod llama;
pub mod loss;
pub mod ops;
pub mod opt;
pub mod profile;
pub mod qwen;
mod simd;
mod torch_cpu;
pub mod skinny;
pub mod tokenizer;
pub mod transfer;

pub use cache::KvCache;
pub use causal_lm::{Arch, Batch, CausalLm, HostBatch};
pub use error::{ModelError, Result};
pub use hub::HubOptions;
pub use loss::{next_token_ce, CeSums};
pub use ops::AttnImpl;
pub use tokenizer::{check_tokenizer_fits, TextTokenizer};

use candle_core::{DType, Device};

/// Parses a `--device` value: `cpu`, `cuda`, `cuda:N`, `metal`.
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = || ModelError::Invalid(format!("unknown device {s:?} (allowed: cpu, cuda, cuda:N, metal)"));
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => device::open_cuda(0),
        "metal" => Ok(Device::new_metal(0)?),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => device::open_cuda(n.parse().map_err(|_| bad())?),
            None => Err(bad()),
        },
    }
}

/// Parses an `--attention` value: `sdpa` (default), `eager` ([`AttnImpl`]).
pub fn parse_attention(s: &str) -> Result<AttnImpl> {
    AttnImpl::parse(s)
}

/// Parses a `--dtype` value: `f32`, `bf16`, `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(ModelError::Invalid(format!("unknown dtype {s:?} (allowed: f32, bf16, f16)"))),
    }
}
