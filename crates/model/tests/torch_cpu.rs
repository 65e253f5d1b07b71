//! The autocast-only CPU kernels (`torch_cpu.rs`) give torch's f32 bits, values and gradients: LayerNorm
//! (ATen's kernels) and transformers' LlamaRMSNorm on rows of 64, 100 and 2048
//! (`scripts/make_mixed_precision_fixtures.py --norms`, torch on one thread). Under bf16/f16 autocast these
//! values are rounded next, where one f32 ulp flips a rounding; the fused kernels that f32 runs take
//! agree to f32 precision but not bit for bit.

use candle_core::{DType, Device, Tensor, Var};
use crossfeed_model::ops;

fn golden() -> std::collections::HashMap<String, Tensor> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train/torch_norms.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn differing(ours: &Tensor, theirs: &Tensor) -> usize {
    let (a, b) = (ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(), theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).filter(|(p, q)| p.to_bits() != q.to_bits()).count()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn autocast_norms_give_torchs_bits() {
    let g = golden();
    for width in [64, 100, 2048] {
        let get = |k: &str| g[&format!("{width}.{k}")].clone();
        let (x, w, b, dy) = (Var::from_tensor(&get("x")).unwrap(), Var::from_tensor(&get("w")).unwrap(), Var::from_tensor(&get("b")).unwrap(), get("dy"));
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            let ln = ops::layer_norm_in(&x, &w, &b, 1e-5, dtype).unwrap();
            let grads = (&ln * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let ln_grads = [("dx", grads.get(&x).unwrap().clone()), ("dw", grads.get(&w).unwrap().clone()), ("db", grads.get(&b).unwrap().clone())];
            let rms = ops::rms_norm_in(&x, &w, 1e-6, dtype).unwrap();
            let grads = (&rms * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let rms_grads = [("dx", grads.get(&x).unwrap().clone()), ("dw", grads.get(&w).unwrap().clone())];
            let all = [("ln", ln.clone(), get("ln")), ("rms", rms.clone(), get("rms"))]
                .into_iter()
                .chain(ln_grads.into_iter().map(|(k, t)| (k, t, get(&format!("ln.{k}")))))
                .chain(rms_grads.into_iter().map(|(k, t)| (k, t, get(&format!("rms.{k}")))));
            for (what, ours, theirs) in all {
                if dtype == DType::F32 {
                    // f32 runs keep the fused kernels: torch's values to f32 precision.
                    let scale = theirs.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-30);
                    assert!(max_diff(&ours, &theirs) / scale < 1e-5, "{what} at width {width} in f32");
                } else {
                    assert_eq!(differing(&ours, &theirs), 0, "{what} at width {width} ({dtype:?} autocast)");
                }
            }
        }
    }
}
