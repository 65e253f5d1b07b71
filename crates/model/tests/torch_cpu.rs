//! The autocast-only CPU kernels (`torch_cpu.rs`) give torch's f32 bits: LayerNorm (ATen's kernel) and
//! transformers' LlamaRMSNorm on rows of 64-2048 (`scripts/make_mixed_precision_fixtures.py --norms`).
//! Under bf16/f16 autocast these outputs are rounded at the next linear, where one f32 ulp flips a
//! rounding; the fused f32 kernels that f32 runs take are within 1e-6 but not bit-identical.

use candle_core::{DType, Device, Tensor};
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

#[test]
fn autocast_norms_give_torchs_bits() {
    let g = golden();
    for width in [64, 100, 768, 1024, 2048] {
        let get = |k: &str| g[&format!("{width}.{k}")].clone();
        let (x, w, b) = (get("x"), get("w"), get("b"));
        for dtype in [DType::BF16, DType::F16] {
            let ln = ops::layer_norm_in(&x, &w, &b, 1e-5, dtype).unwrap();
            assert_eq!(differing(&ln, &get("ln")), 0, "LayerNorm at width {width} ({dtype:?} autocast)");
            let rms = ops::rms_norm_in(&x, &w, 1e-6, dtype).unwrap();
            assert_eq!(differing(&rms, &get("rms")), 0, "RMSNorm at width {width} ({dtype:?} autocast)");
        }
        // f32 runs keep the fused kernels: the same values to f32 precision.
        let close = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(close(&ops::layer_norm_in(&x, &w, &b, 1e-5, DType::F32).unwrap(), &get("ln")) < 1e-4);
        assert!(close(&ops::rms_norm_in(&x, &w, 1e-6, DType::F32).unwrap(), &get("rms")) < 1e-4);
    }
}
