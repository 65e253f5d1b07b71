//! Mixed precision against PyTorch on CPU (goldens: scripts/make_mixed_precision_fixtures.py): 12
//! full-batch AdamW steps (lr 2e-3, warmup 2, weight decay 0.1, clipping 1.0) on every fixture model:
//!   bf16:      autocast's per-op dtypes (f32 residual stream, bf16 linears and attention matmuls), f32
//!              master weights, gradients and AdamW state — against `torch.autocast("cpu", bfloat16)`,
//!              and against `bf16_pure` (torch with the whole forward and backward in bf16), which it
//!              must not match better than autocast (first-step test at the end);
//!   f16:       f16 activations with dynamic loss scaling — against `torch.autocast("cpu", float16)` +
//!              `torch.amp.GradScaler` (scale sequence incl. a growth step, schedule held on skipped steps);
//!   f16_skip:  init scale 2^27, backoff 0.25, growth 4 every 3 steps: 5 overflowing steps skipped, then
//!              growth, another skip — every decision and every scale equal to torch's.
//! Tolerances (measured worst cases in brackets; `--nocapture` prints them):
//!   f32:  loss rel 1e-5 [1.9e-7], grad norm rel 1e-4 [4.7e-7], update rel 1e-4 [4.8e-6];
//!   bf16: loss rel 3e-3 [1.6e-3], grad norm rel 5e-2 [2.9e-2], update rel 0.12 [7.5e-2];
//!   f16:  loss rel 1e-3 [3.4e-4], grad norm rel 3e-2 [1.3e-2], update rel 0.06 [3.9e-2];
//! where "update rel" is |w_ours − w_torch| / |w_torch − w_init| over all weights. bf16 rounds at 2^-8,
//! and torch's own bf16 run lands 2.7–5.4% (update rel) from its f32 run; ours must be closer to
//! torch's mixed-precision run than that (measured after 12 steps: 0.15–0.51x in bf16, 0.37–0.76x in
//! f16, where Adam turns every rounding flip into a full ±lr step on weights with tiny gradients).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use crossfeed_model::{AttnImpl, CausalLm, TextTokenizer};
use crossfeed_train::{tokenize, FineTune, GradScalerConfig, LmExample, Schedule, TrainConfig};
use serde_json::Value;

const VARIANTS: &[&str] = &["opt125", "opt350", "llama32", "llama"];

/// The goldens were made with `attn_implementation="eager"` (scripts/make_mixed_precision_fixtures.py);
/// sdpa, the default, is tested against its own goldens in attention_precision.rs.
fn eager(mut model: CausalLm) -> CausalLm {
    model.attention = AttnImpl::Eager;
    model
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Golden {
    meta: Value,
    weights: HashMap<String, Tensor>,
}

fn golden() -> Golden {
    let dir = root().join("train");
    let meta = serde_json::from_str(&std::fs::read_to_string(dir.join("mixed_precision.json")).unwrap()).unwrap();
    let weights = candle_core::safetensors::load(dir.join("mixed_precision.safetensors"), &Device::Cpu).unwrap();
    Golden { meta, weights }
}

struct Tol {
    loss: f64,
    norm: f64,
    weight: f32,
}

fn mode(name: &str) -> (DType, Option<GradScalerConfig>, Tol) {
    let bf16 = Tol { loss: 3e-3, norm: 5e-2, weight: 0.12 };
    let f16 = Tol { loss: 1e-3, norm: 3e-2, weight: 0.06 };
    let scaler = |init_scale, growth_factor, backoff_factor, growth_interval| {
        Some(GradScalerConfig { init_scale, growth_factor, backoff_factor, growth_interval })
    };
    match name {
        "f32" => (DType::F32, None, Tol { loss: 1e-5, norm: 1e-4, weight: 1e-4 }),
        "bf16" | "bf16_pure" => (DType::BF16, None, bf16),
        "f16" => (DType::F16, scaler(65536.0, 2.0, 0.5, 8), f16),
        "f16_skip" => (DType::F16, scaler(134217728.0, 4.0, 0.25, 3), f16),
        _ => unreachable!(),
    }
}

fn floats(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(Value::as_f64).collect()
}

/// Runs one (model, mode) and returns the worst deviations (loss rel, grad norm rel, weight abs).
fn check(g: &Golden, variant: &str, name: &str) -> (f64, f64, f32) {
    let (dtype, scaler, tol) = mode(name);
    let dir = root().join("models").join(variant);
    let want = &g.meta["runs"][format!("{variant}.{name}")];
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let examples: Vec<LmExample> =
        json["texts"].as_array().unwrap().iter().map(|t| LmExample { prompt: String::new(), completion: t.as_str().unwrap().into() }).collect();
    let model = eager(CausalLm::load_dir(&dir, &Device::Cpu, dtype).unwrap());
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let data = tokenize(&tok, &examples, 512, false).unwrap();
    let hp = &g.meta["hp"];
    let cfg = TrainConfig {
        lr: hp["lr"].as_f64().unwrap(),
        schedule: Schedule::Linear,
        warmup_steps: hp["warmup_steps"].as_u64(),
        total_steps: g.meta["steps"].as_u64().unwrap(),
        batch_size: examples.len(),
        grad_accum: 1,
        weight_decay: hp["weight_decay"].as_f64().unwrap(),
        max_grad_norm: hp["max_grad_norm"].as_f64().unwrap(),
        ..TrainConfig::default()
    };
    let pad = json["pad_id"].as_u64().unwrap() as u32;
    let init: HashMap<String, Vec<f32>> =
        model.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
    let mut ft = FineTune::with_grad_scaler(&model, data, cfg, pad, 512, scaler).unwrap();
    let (losses, norms, lrs, scales) = (floats(&want["loss"]), floats(&want["grad_norm"]), floats(&want["lr"]), floats(&want["scale"]));
    let skipped: Vec<bool> = want["skipped"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
    let (mut worst_loss, mut worst_norm) = (0f64, 0f64);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-9);
    let at = format!("{variant} {name}");
    for i in 0..losses.len() {
        let s = ft.step().unwrap();
        assert_eq!(s.skipped, skipped[i], "{at} step {i}: skipped {} (torch: {})", s.skipped, skipped[i]);
        if let Some(scale) = scales[i].filter(|_| name.starts_with("f16")) {
            assert_eq!(s.loss_scale, Some(scale), "{at} step {i}: loss scale");
        }
        assert!((s.lr - lrs[i].unwrap()).abs() < 1e-12, "{at} step {i}: lr {} vs {:?}", s.lr, lrs[i]);
        if s.skipped {
            assert!(!s.grad_norm.is_finite(), "{at} step {i}: a skipped step reports an inf/NaN grad norm");
            continue;
        }
        worst_loss = worst_loss.max(rel(s.loss, losses[i].unwrap()));
        worst_norm = worst_norm.max(rel(s.grad_norm, norms[i].unwrap()));
    }
    // Weights: the distance between the two runs' updates relative to the size of torch's update, over
    // every tensor (k_proj.bias has a zero true gradient: Adam turns rounding noise into full steps, so
    // its value is arbitrary on both sides). Max-abs is meaningless here: Adam moves a weight whose
    // gradient is mostly rounding noise by a full ±lr either way.
    let (mut num, mut den, mut noise) = (0f64, 0f64, 0f64);
    for (pname, var) in model.params.iter().filter(|(n, _)| !n.ends_with("k_proj.bias")) {
        let want = g.weights.get(&format!("{variant}.{name}.{pname}")).unwrap_or_else(|| panic!("{at}: no golden {pname}"));
        let a = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = &init[pname];
        let f32_ref = g.weights[&format!("{variant}.f32.{pname}")].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        noise += b.iter().zip(&f32_ref).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
        for ((x, y), s0) in a.iter().zip(&b).zip(s) {
            num += ((x - y) as f64).powi(2);
            den += ((y - s0) as f64).powi(2);
        }
    }
    let worst_w = (num / den.max(1e-30)).sqrt() as f32;
    // Yardstick: how far torch's own run in this mode lands from torch's f32 run.
    let torch_vs_f32 = (noise / den.max(1e-30)).sqrt();
    eprintln!("{at:18} loss rel {worst_loss:.2e}  grad-norm rel {worst_norm:.2e}  update rel {worst_w:.2e}  (torch {name} vs torch f32: update rel {torch_vs_f32:.2e})");
    assert!(worst_loss <= tol.loss, "{at}: loss differs by rel {worst_loss:.2e} > {}", tol.loss);
    assert!(worst_norm <= tol.norm, "{at}: grad norm differs by rel {worst_norm:.2e} > {}", tol.norm);
    if name != "f32" && name != "f16_skip" {
        // Against autocast (bf16, f16): closer than torch's own f32 run. bf16_pure is another recipe
        // (the residual stream in bf16 too): within 2x of its distance from f32 is all that is claimed.
        let factor = if name == "bf16_pure" { 2.0 } else { 1.0 };
        assert!(
            worst_w as f64 <= factor * torch_vs_f32,
            "{at}: our update is {worst_w:.2e} from torch's, more than {factor}x torch's own distance from f32 ({torch_vs_f32:.2e})"
        );
    }
    assert!(worst_w <= tol.weight, "{at}: weight updates differ by rel {worst_w:.2e} > {}", tol.weight);
    (worst_loss, worst_norm, worst_w)
}

#[test]
fn f32_reference_matches_pytorch() {
    let g = golden();
    for v in VARIANTS {
        check(&g, v, "f32");
    }
}

#[test]
fn bf16_with_f32_master_weights_matches_torch() {
    let g = golden();
    for v in VARIANTS {
        check(&g, v, "bf16_pure");
        check(&g, v, "bf16");
    }
}

#[test]
fn f16_with_dynamic_loss_scaling_matches_torch_grad_scaler() {
    let g = golden();
    for v in VARIANTS {
        check(&g, v, "f16");
        check(&g, v, "f16_skip");
    }
}

#[test]
fn f16_loss_scaling_resumes_identically() {
    let dir = root().join("models").join("llama32");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let examples: Vec<LmExample> =
        json["texts"].as_array().unwrap().iter().map(|t| LmExample { prompt: String::new(), completion: t.as_str().unwrap().into() }).collect();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let data = || tokenize(&tok, &examples, 512, false).unwrap();
    let cfg = TrainConfig { lr: 2e-3, total_steps: 8, batch_size: 2, grad_accum: 2, warmup_steps: Some(1), ..TrainConfig::default() };
    // Skips, backoff and growth all happen in the 8 steps, some before and some after the checkpoint.
    let scaler = Some(GradScalerConfig { init_scale: 134217728.0, growth_factor: 4.0, backoff_factor: 0.25, growth_interval: 2 });
    let run = |ft: &mut FineTune, n: usize| -> Vec<(bool, u64, Option<f64>)> {
        (0..n).map(|_| ft.step().unwrap()).map(|s| (s.skipped, s.loss.to_bits(), s.loss_scale)).collect()
    };
    let weights = |m: &CausalLm| -> Vec<Vec<f32>> { m.params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect() };

    let straight = eager(CausalLm::load_dir(&dir, &Device::Cpu, DType::F16).unwrap());
    let mut ft = FineTune::with_grad_scaler(&straight, data(), cfg.clone(), 1, 512, scaler).unwrap();
    let want = run(&mut ft, 8);
    assert!(want.iter().any(|s| s.0) && want.iter().any(|s| !s.0), "the run must both skip and update: {want:?}");

    let tmp = tempfile::tempdir().unwrap();
    let first = eager(CausalLm::load_dir(&dir, &Device::Cpu, DType::F16).unwrap());
    let mut ft = FineTune::with_grad_scaler(&first, data(), cfg.clone(), 1, 512, scaler).unwrap();
    let mut got = run(&mut ft, 4);
    ft.save(tmp.path()).unwrap();
    drop(ft);
    let second = eager(CausalLm::load_dir(tmp.path(), &Device::Cpu, DType::F16).unwrap());
    // A checkpoint with loss-scaler state does not resume into a run without one.
    let mut plain = FineTune::with_grad_scaler(&second, data(), cfg.clone(), 1, 512, None).unwrap();
    assert!(plain.resume(tmp.path()).is_err(), "resuming f16 loss scaling without a scaler must fail");
    let mut ft = FineTune::with_grad_scaler(&second, data(), cfg, 1, 512, scaler).unwrap();
    ft.resume(tmp.path()).unwrap();
    got.extend(run(&mut ft, 4));
    assert!(ft.done());
    assert_eq!(want, got, "steps differ after resume");
    assert_eq!(weights(&straight), weights(&second), "weights differ after resume");
}

/// The first step (same weights on every side, so nothing has compounded yet), through the trainer,
/// measured against torch.autocast: how far crossfeed's loss and gradient norm land from autocast's, next
/// to how far f32 and an all-low-precision run (`bf16_pure`) land. Asserted as geometric means over the
/// fixture models (measured on AMD EPYC: bf16 loss 0.01x and grad norm 0.00x of f32's distance; f16 0.11x
/// and 0.03x). Per model the bf16 numbers are 0.00-0.50x; f16 autocast sits so close to f32 (6e-5 on the
/// loss) that one rounding flip from a different f32 summation order decides a single model's ratio
/// (llama: 1.4x), so f16 is asserted as the mean and per tensor (next test).
#[test]
fn mixed_precision_follows_autocast_not_f32_nor_all_low_precision() {
    let g = golden();
    let first = |v: &str, mode: &str, key: &str| g.meta["runs"][format!("{v}.{mode}")][key][0].as_f64().unwrap();
    let mut log_ratios: HashMap<String, Vec<f64>> = HashMap::new();
    for v in VARIANTS {
        let dir = root().join("models").join(v);
        let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let examples: Vec<LmExample> =
            json["texts"].as_array().unwrap().iter().map(|t| LmExample { prompt: String::new(), completion: t.as_str().unwrap().into() }).collect();
        let tok = TextTokenizer::from_dir(&dir).unwrap();
        let pad = json["pad_id"].as_u64().unwrap() as u32;
        for (mode, dtype, others) in [("bf16", DType::BF16, &["f32", "bf16_pure"][..]), ("f16", DType::F16, &["f32"][..])] {
            let model = eager(CausalLm::load_dir(&dir, &Device::Cpu, dtype).unwrap());
            let data = tokenize(&tok, &examples, 512, false).unwrap();
            let cfg = TrainConfig { lr: 2e-3, total_steps: 12, warmup_steps: Some(2), batch_size: examples.len(), grad_accum: 1, weight_decay: 0.1, ..TrainConfig::default() };
            // A scale that never overflows on the first step: the gradient norm is then comparable.
            let scaler = (dtype == DType::F16).then_some(GradScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 8 });
            let s = FineTune::with_grad_scaler(&model, data, cfg, pad, 512, scaler).unwrap().step().unwrap();
            for (key, ours) in [("loss", s.loss), ("grad_norm", s.grad_norm)] {
                let target = first(v, mode, key);
                let d_ours = (ours - target).abs();
                for other in others {
                    let d_other = (first(v, other, key) - target).abs();
                    eprintln!("{v:8} {mode:5} {key:9}: |ours - autocast| = {d_ours:.2e}, |{other} - autocast| = {d_other:.2e} ({:.2}x)", d_ours / d_other);
                    log_ratios.entry(format!("{mode} {key} vs {other}")).or_default().push((d_ours / d_other).ln());
                }
            }
        }
    }
    let mut keys: Vec<_> = log_ratios.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let r = &log_ratios[&k];
        let gm = (r.iter().sum::<f64>() / r.len() as f64).exp();
        eprintln!("geometric mean, {k}: {gm:.2}x");
        let limit = match k.as_str() {
            "bf16 loss vs f32" | "bf16 grad_norm vs f32" | "f16 grad_norm vs f32" => 0.1,
            "f16 loss vs f32" => 0.3,
            _ => 0.5, // against bf16_pure
        };
        assert!(gm <= limit, "{k}: crossfeed is not on autocast's side ({gm:.2}x > {limit}x)");
    }
}

// Every parameter's first-step gradient against torch.autocast's, per tensor, for every model family in
// sdpa and eager: attention_precision.rs (within 0.25x of f32's distance).

/// GPT-2's `gelu_new` on bf16 and f16 tensors, value and gradient, bit for bit against torch's op-by-op
/// evaluation (`make_mixed_precision_fixtures.py --gelu-new`: 4096 values per dtype, from small inputs
/// to past tanh's saturation).
#[test]
fn gelu_new_matches_torch_bit_for_bit_in_bf16_and_f16() {
    let golden = candle_core::safetensors::load(root().join("train/gelu_new.safetensors"), &Device::Cpu).unwrap();
    for (name, dtype) in [("bf16", DType::BF16), ("f16", DType::F16)] {
        let get = |k: &str| golden[&format!("{name}.{k}")].clone();
        let x = candle_core::Var::from_tensor(&get("x").to_dtype(dtype).unwrap()).unwrap();
        let y = crossfeed_model::ops::gelu_new(x.as_tensor()).unwrap();
        let loss = (y.to_dtype(DType::F32).unwrap() * get("g")).unwrap().sum_all().unwrap();
        let gx = loss.backward().unwrap().get(x.as_tensor()).unwrap().to_dtype(DType::F32).unwrap();
        // Without a gradient only the forward runs: the same values.
        let inference = crossfeed_model::ops::gelu_new(&x.as_tensor().detach()).unwrap().to_dtype(DType::F32).unwrap();
        for (what, ours, theirs) in [("value", y.to_dtype(DType::F32).unwrap(), get("y")), ("value without a gradient", inference, get("y")), ("gradient", gx, get("gx"))] {
            let (a, b) = (ours.to_vec1::<f32>().unwrap(), theirs.to_vec1::<f32>().unwrap());
            let differ = a.iter().zip(&b).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
            assert_eq!(differ, 0, "{name} gelu_new {what}: {differ} of {} values differ from torch's", a.len());
        }
    }
}
