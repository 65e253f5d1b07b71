//! bf16/f16 attention as transformers runs it, `sdpa` (its default) and `eager` (goldens:
//! scripts/make_sdpa_fixtures.py), on every fixture model (OPT ×2, Llama ×2, Qwen2, Qwen3, GPT-2, Gemma 3,
//! Gemma 2; Gemma 2 has no sdpa in transformers, so both modes are eager's) and three more shapes
//! (head_dim 64 with GQA, OPT post-LN with head_dim 64, a tied Llama with 4 heads): the first step's
//! loss and every parameter's gradient measured as a multiple of torch.autocast's own distance from
//! f32. `--nocapture` prints the ratios per model. Excluded: `k_proj.bias` (and GPT-2's fused
//! `c_attn.bias`), whose true gradient is zero (softmax ignores a per-query constant), so both sides
//! hold rounding noise.
//!
//! Both hold within 0.25x, as the issue asked. Measured on a Xeon with AVX-512/AMX, torch 2.15: losses
//! ≤ 0.04x, gradients ≤ 0.17x (a tied Llama's `input_layernorm` in bf16 sdpa), most models 0.00-0.09x;
//! OPT, GPT-2, Llama and Qwen3 in f16 bit for bit but for single tensors. What it took: under autocast on
//! the CPU the f32 parts of a step run in torch's own rounding order (`torch_cpu.rs`: LayerNorm's Welford
//! moments and backward, RMSNorm's sums, softmax, cross entropy with torch's `exp`, SiLU; `ops::sdpa_low`:
//! the flash kernel's sums and its per-query-block dK/dV accumulation), since an f32 last bit there flips
//! a bf16/f16 rounding at the next linear; Gemma's soft-capping in the low dtype; and every family's keys
//! kept f32 out of RoPE until attention repeats them per query head, as `repeat_kv` does. The last test
//! pins that the default moved toward what HF's trainer runs: against torch's sdpa, crossfeed's sdpa
//! mode lands at a mean 0.01x (bf16 and f16), its eager mode at 0.70x / 0.67x.
//!
//! The f16 goldens depend on the machine that makes them: the committed ones come from a Xeon with
//! AVX-512 FP16 and AMX; an earlier run of the same script (same torch, probably another CPU) gave f16
//! goldens 0.06-0.52x (mean per model) away from these, while its bf16 ones were the same bits.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use crossfeed_model::{AttnImpl, Batch, CausalLm};
use serde_json::Value;

const MODELS: &[&str] = &[
    "opt125",
    "opt350",
    "llama32",
    "llama",
    "qwen2",
    "qwen3",
    "gpt2",
    "gemma3",
    "gemma2",
    "attn/llama_gqa64",
    "attn/opt_post64",
    "attn/llama_tied",
];
const LIMIT: f32 = 0.25;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// First-step token-mean loss and every parameter's gradient (f32), as HF's trainer backpropagates it.
fn first_step(model: &str, dtype: DType, imp: AttnImpl) -> (f32, Vec<(String, Tensor)>) {
    let dir = root().join("models").join(model);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let seqs: Vec<Vec<u32>> =
        json["token_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()).collect();
    let mut lm = CausalLm::load_dir(&dir, &Device::Cpu, dtype).unwrap();
    lm.attention = imp;
    let batch = Batch::right_padded(&seqs, json["pad_id"].as_u64().unwrap() as u32, 512, None, &Device::Cpu).unwrap();
    let ce = lm.ce(&batch).unwrap();
    let loss = (ce.ce_sum.sum_all().unwrap() / ce.total_tokens() as f64).unwrap();
    let g = loss.backward().unwrap();
    let grads = lm.params.iter().map(|(n, var)| (n.clone(), g.get(var.as_tensor()).unwrap().to_dtype(DType::F32).unwrap())).collect();
    (loss.to_scalar::<f32>().unwrap(), grads)
}

/// Runs one (dtype, attention) over every model; returns the failures (empty when all hold).
fn check(mode: &str, dtype: DType, imp: AttnImpl) -> Vec<String> {
    check_against(mode, dtype, imp, imp).0
}

/// [`check`] of crossfeed running `imp` against torch's `gold` goldens; also returns the mean
/// gradient ratio over all models' tensors.
fn check_against(mode: &str, dtype: DType, imp: AttnImpl, gold: AttnImpl) -> (Vec<String>, f32) {
    let dir = root().join("train/attention");
    let losses: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("losses.json")).unwrap()).unwrap();
    let norm = |x: &Tensor| x.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    let mut failures = Vec::new();
    let (mut total, mut count) = (0f32, 0f32);
    for model in MODELS {
        let key = model.trim_start_matches("attn/");
        let golden = candle_core::safetensors::load(dir.join(format!("{key}.{mode}.safetensors")), &Device::Cpu).unwrap();
        let (f32_loss, f32_grads) = first_step(model, DType::F32, imp);
        let (loss, grads) = first_step(model, dtype, imp);
        let torch_loss = losses[format!("{key}.{mode}.{}", gold.as_str())].as_f64().unwrap() as f32;
        let torch_f32 = losses[format!("{key}.f32")].as_f64().unwrap() as f32;
        assert!((f32_loss - torch_f32).abs() < 1e-4 * torch_f32.abs(), "{model}: f32 loss {f32_loss} vs torch {torch_f32}");
        let loss_ratio = (loss - torch_loss).abs() / (torch_f32 - torch_loss).abs().max(1e-12);
        let mut worst = (0f32, String::new());
        let mut sum_ratio = HashMap::<&str, f32>::new();
        for ((name, ours), (_, f32g)) in grads.iter().zip(&f32_grads).filter(|((n, _), _)| !n.ends_with("k_proj.bias") && !n.ends_with("c_attn.bias")) {
            let theirs = golden.get(&format!("{}.{name}", gold.as_str())).unwrap_or_else(|| panic!("no golden {key}.{mode}.{name}"));
            let (d_ours, d_f32) = (norm(&(ours - theirs).unwrap()), norm(&(f32g - theirs).unwrap()));
            let r = d_ours / d_f32.max(1e-12);
            *sum_ratio.entry("n").or_default() += 1.0;
            *sum_ratio.entry("sum").or_default() += r;
            total += r;
            count += 1.0;
            if r > LIMIT {
                failures.push(format!("{model} {mode} {}: {name} gradient at {r:.2}x", imp.as_str()));
            }
            if r > worst.0 {
                worst = (r, name.clone());
            }
        }
        eprintln!(
            "{model:18} {mode:4} {:5} vs torch {:5}: loss {loss_ratio:.2}x  gradients worst {:.2}x ({}), mean {:.2}x",
            imp.as_str(),
            gold.as_str(),
            worst.0,
            worst.1,
            sum_ratio["sum"] / sum_ratio["n"]
        );
        if loss_ratio > LIMIT {
            failures.push(format!("{model} {mode} {}: loss at {loss_ratio:.2}x (|ours - torch| {:.2e}, |f32 - torch| {:.2e})", imp.as_str(), (loss - torch_loss).abs(), (torch_f32 - torch_loss).abs()));
        }
    }
    (failures, total / count.max(1.0))
}

#[test]
fn bf16_attention_follows_sdpa_by_default() {
    assert_eq!(AttnImpl::default(), AttnImpl::Sdpa);
    let f = check("bf16", DType::BF16, AttnImpl::Sdpa);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn bf16_attention_follows_eager_when_asked() {
    let f = check("bf16", DType::BF16, AttnImpl::Eager);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn f16_attention_follows_sdpa_by_default() {
    let f = check("f16", DType::F16, AttnImpl::Sdpa);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn f16_attention_follows_eager_when_asked() {
    let f = check("f16", DType::F16, AttnImpl::Eager);
    assert!(f.is_empty(), "{f:#?}");
}

/// The default moves bf16/f16 toward what HF's trainer runs: crossfeed's sdpa mode is nearer torch's
/// sdpa goldens than its eager mode is (mean per-tensor ratio over every model; measured 0.01x against
/// 0.70x in bf16, 0.01x against 0.67x in f16).
#[test]
fn sdpa_mode_is_nearer_torch_sdpa_than_eager_mode_is() {
    for (mode, dtype) in [("bf16", DType::BF16), ("f16", DType::F16)] {
        let (_, sdpa) = check_against(mode, dtype, AttnImpl::Sdpa, AttnImpl::Sdpa);
        let (_, eager) = check_against(mode, dtype, AttnImpl::Eager, AttnImpl::Sdpa);
        eprintln!("{mode}: against torch sdpa, mean gradient ratio {sdpa:.2}x in sdpa mode, {eager:.2}x in eager mode");
        assert!(sdpa < eager, "{mode}: sdpa mode {sdpa:.2}x is not nearer torch's sdpa than eager mode {eager:.2}x");
    }
}
