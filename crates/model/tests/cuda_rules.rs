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

/// Planted ties at the maximum, at a vocabulary's scale: the lowest index wins on the generic path
/// (candle's CUDA argmax would return the lowest *thread*'s), as on the CPU fast path and in torch,
/// in f32 and bf16, and a row of NaNs still gives an index in range.
#[test]
fn argmax_returns_the_lowest_index_among_planted_ties() {
    for v in [128, 256, 50_272, 128_256] {
        let rows = 5;
        // Distinct values below 1.0, then ties of 2.0 planted at spots a thread-ordered reduction could
        // prefer (a block's last element, the row's end, far apart).
        let mut data: Vec<f32> = (0..rows * v).map(|i| ((i * 7919) % 100_003) as f32 / 100_003.0).collect();
        let plants: Vec<Vec<usize>> = vec![vec![v - 1, 0], vec![v / 2, v - 1, v / 3], vec![1, 2], vec![v - 2, v - 1], vec![]];
        let mut want = Vec::new();
        for (r, p) in plants.iter().enumerate() {
            for &j in p {
                data[r * v + j] = 2.0;
            }
            let row = &data[r * v..(r + 1) * v];
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            want.push(row.iter().position(|&x| x == max).unwrap() as u32);
        }
        let x = Tensor::from_vec(data, (rows, v), &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let x = x.to_dtype(dtype).unwrap();
            let fast: Vec<u32> = cuda_rules::argmax(&x).unwrap().to_vec1().unwrap();
            let generic: Vec<u32> = with_generic(|| cuda_rules::argmax(&x).unwrap().to_vec1().unwrap());
            if dtype == DType::F32 {
                assert_eq!(generic, want, "V = {v}: generic path");
            }
            assert_eq!(generic, fast, "V = {v} {dtype:?}: generic path = CPU fast path");
        }
    }
    let nan = Tensor::full(f32::NAN, (2, 300), &Device::Cpu).unwrap();
    let got: Vec<u32> = with_generic(|| cuda_rules::argmax(&nan).unwrap().to_vec1().unwrap());
    assert!(got.iter().all(|&i| i < 300), "{got:?}");
}

/// A batch whose logits reach 2³² elements is refused with its shape on the generic path (candle's CUDA
/// kernels index with u32 and would compute it wrongly); the CPU fast path takes it.
#[test]
fn logits_past_two_to_the_32_elements_are_refused_with_the_shape() {
    let dev = Device::Cpu;
    assert!(cuda_rules::element_count("logits", &[16, 2048, 128_256], &dev).is_ok(), "CPU fast path");
    let e = with_generic(|| cuda_rules::element_count("logits", &[17, 2048, 128_256], &dev)).unwrap_err().to_string();
    assert!(e.contains("[17, 2048, 128256]") && e.contains("2^32"), "{e}");
    with_generic(|| cuda_rules::element_count("logits", &[16, 2048, 128_256], &dev)).unwrap();
}
