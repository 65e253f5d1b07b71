//! CUDA's stricter preconditions, asserted on the CPU under `with_generic` (the generic-twin tests run
//! the whole generic path this way): layouts cuBLAS refuses, sorts too long for candle's CUDA kernel,
//! non-contiguous sources; and the KV cache's views, which attention reads in place on every backend.

use candle_core::{DType, Device, Tensor};
use crossfeed_model::cuda_rules;
use crossfeed_model::fastpath::with_generic;
use crossfeed_model::KvCache;

fn t(dims: &[usize]) -> Tensor {
    Tensor::arange(0f32, dims.iter().product::<usize>() as f32, &Device::Cpu).unwrap().reshape(dims).unwrap()
}

#[test]
fn a_strided_view_cublas_refuses_fails_on_the_cpu_too() {
    // blocked_cumsum's old block totals: the last column of [B, nb, bs] blocks, a [B, nb] view with
    // strides (nb·bs, bs) — no unit stride in either dim.
    let totals = t(&[4, 3, 8]).narrow(2, 7, 1).unwrap().squeeze(2).unwrap();
    let strict = t(&[3, 3]);
    assert!(cuda_rules::matmul(&totals, &strict).is_ok(), "unchecked, the CPU gemm takes it");
    let e = with_generic(|| cuda_rules::matmul(&totals, &strict)).unwrap_err().to_string();
    assert!(e.contains("CUDA rule (matmul)") && e.contains("MatMulNonContiguous"), "{e}");
    // Made contiguous, or merely transposed, it is fine.
    with_generic(|| cuda_rules::matmul(&totals.contiguous().unwrap(), &strict)).unwrap();
    with_generic(|| cuda_rules::matmul(&t(&[3, 4]).t().unwrap(), &t(&[3, 5]))).unwrap();
}

#[test]
fn a_vocabulary_sized_sort_fails_on_the_cpu_too() {
    for v in [50_272, 128_256] {
        let logits = Tensor::zeros((2, v), DType::F32, &Device::Cpu).unwrap();
        let e = with_generic(|| cuda_rules::sort_last_dim(&logits, false).map(|_| ())).unwrap_err().to_string();
        assert!(e.contains("CUDA rule (sort_last_dim)") && e.contains("shared memory"), "{v}: {e}");
    }
    with_generic(|| cuda_rules::sort_last_dim(&t(&[2, 8192]), true)).unwrap();
    let strided = t(&[8, 4]).t().unwrap();
    assert!(with_generic(|| cuda_rules::sort_last_dim(&strided, true)).is_err());
}

#[test]
fn non_contiguous_sources_of_index_ops_fail_on_the_cpu_too() {
    let x = t(&[4, 6]).t().unwrap();
    let ids = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    assert!(with_generic(|| cuda_rules::index_select(&x, &ids, 0)).is_err());
    with_generic(|| cuda_rules::index_select(&x.contiguous().unwrap(), &ids, 0)).unwrap();
    let g = Tensor::new(&[[0u32], [1], [2], [0], [1], [2]], &Device::Cpu).unwrap();
    assert!(with_generic(|| cuda_rules::gather(&x, &g, 1)).is_err());
}

#[test]
fn kv_cache_views_are_read_in_place_by_every_backend() {
    let mut cache = KvCache::new(1);
    let step = || (Tensor::randn(0f32, 1., (2, 3, 1, 8), &Device::Cpu).unwrap(), Tensor::randn(0f32, 1., (2, 3, 1, 8), &Device::Cpu).unwrap());
    for _ in 0..5 {
        let (k, v) = step();
        let (kc, vc) = with_generic(|| cache.append(0, &k, &v)).unwrap();
        assert!(!kc.is_contiguous(), "the view is a narrowed buffer with spare capacity");
        assert!(cuda_rules::matmul_ready(&kc) && cuda_rules::matmul_ready(&kc.t().unwrap()) && cuda_rules::matmul_ready(&vc));
    }
}
