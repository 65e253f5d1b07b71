//! The inference fast paths against the plain candle ops they replace: the skinny CPU linear (values
//! and gradients, contiguous and strided inputs) and the in-place KV cache (append past its capacity,
//! row selection, trimming, stacking caches of different lengths).

use candle_core::{Device, Tensor, Var};
use crossfeed_model::{skinny, KvCache};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn skinny_linear_matches_matmul_in_value_and_gradient() {
    let dev = Device::Cpu;
    for (m, k, n) in [(1, 8, 5), (3, 17, 33), (16, 64, 300), (64, 40, 700), (65, 16, 9)] {
        let x = Var::randn(0f32, 1., (m, k), &dev).unwrap();
        let w = Var::randn(0f32, 1., (n, k), &dev).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let got = skinny::linear(&x, &w).unwrap();
        assert_eq!(got.dims(), &[m, n]);
        assert!(max_diff(&got, &want) < 1e-4, "values m={m} k={k} n={n}");

        let probe = Tensor::randn(0f32, 1., (m, n), &dev).unwrap();
        let g_want = (&want * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_got = (&got * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            let (a, b) = (g_got.get(v).unwrap(), g_want.get(v).unwrap());
            assert!(max_diff(a, b) < 1e-4, "gradient m={m} k={k} n={n}");
        }
    }
}

#[test]
fn skinny_linear_reads_strided_inputs() {
    let dev = Device::Cpu;
    // x as the transpose of a [k, m] tensor, W as a column slice of a wider matrix.
    let xt = Tensor::randn(0f32, 1., (24, 6), &dev).unwrap();
    let x = xt.t().unwrap();
    let wide = Tensor::randn(0f32, 1., (10, 40), &dev).unwrap();
    let w = wide.narrow(1, 8, 24).unwrap();
    let want = x.contiguous().unwrap().matmul(&w.contiguous().unwrap().t().unwrap()).unwrap();
    assert!(max_diff(&skinny::linear(&x, &w).unwrap(), &want) < 1e-4);
}

/// A reference cache kept as plain concatenations.
fn cat_cols(a: &Tensor, b: &Tensor) -> Tensor {
    Tensor::cat(&[a, b], 2).unwrap()
}

#[test]
fn kv_cache_in_place_equals_concatenation() {
    let dev = Device::Cpu;
    let (b, h, d) = (3, 2, 4);
    let mut cache = KvCache::new(2);
    let k0 = Tensor::randn(0f32, 1., (b, h, 5, d), &dev).unwrap();
    let v0 = (&k0 * 2.0).unwrap();
    let (mut rk, mut rv) = (k0.clone(), v0.clone());
    for layer in 0..2 {
        cache.append(layer, &k0, &v0).unwrap();
    }
    // 300 single steps: the buffers must grow past their first capacity.
    for _ in 0..300 {
        let k = Tensor::randn(0f32, 1., (b, h, 1, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (b, h, 1, d), &dev).unwrap();
        let mut last = None;
        for layer in 0..2 {
            last = Some(cache.append(layer, &k, &v).unwrap());
        }
        rk = cat_cols(&rk, &k);
        rv = cat_cols(&rv, &v);
        let (ck, cv) = last.unwrap();
        assert_eq!(ck.dims(), rk.dims());
        assert_eq!(max_diff(&ck, &rk), 0.0);
        assert_eq!(max_diff(&cv, &rv), 0.0);
    }
    assert_eq!(cache.past_len(), 305);

    // Keep rows 2 and 0, drop the first 7 columns, then stack a shorter cache underneath.
    cache.select_rows(&Tensor::new(&[2u32, 0], &dev).unwrap()).unwrap();
    cache.trim_front(7).unwrap();
    let rows = Tensor::new(&[2u32, 0], &dev).unwrap();
    let rk = rk.index_select(&rows, 0).unwrap().narrow(2, 7, 298).unwrap();
    let mut other = KvCache::new(2);
    let ok = Tensor::randn(0f32, 1., (1, h, 4, d), &dev).unwrap();
    for layer in 0..2 {
        other.append(layer, &ok, &ok).unwrap();
    }
    cache.extend_rows(&other).unwrap();
    assert_eq!(cache.batch_size(), 3);
    assert_eq!(cache.past_len(), 298);
    let layers = cache.layers().unwrap();
    let (k, _) = layers[1].as_ref().unwrap();
    assert_eq!(max_diff(&k.narrow(0, 0, 2).unwrap(), &rk), 0.0);
    let padded = k.narrow(0, 2, 1).unwrap();
    assert_eq!(max_diff(&padded.narrow(2, 294, 4).unwrap(), &ok), 0.0);
    assert_eq!(padded.narrow(2, 0, 294).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);

    // Appending after all that still lands at the end of every row.
    let step = Tensor::ones((3, h, 1, d), candle_core::DType::F32, &dev).unwrap();
    let (k, _) = cache.append(0, &step, &step).unwrap();
    assert_eq!(k.dims()[2], 299);
    assert_eq!(max_diff(&k.narrow(2, 298, 1).unwrap(), &step), 0.0);
}

#[test]
fn fused_cross_entropy_matches_the_composed_ops_in_value_and_gradient() {
    use crossfeed_model::loss::{log_softmax_last, next_token_ce};
    let dev = Device::Cpu;
    let (b, t, v) = (3, 7, 50);
    let logits = Var::randn(0f32, 3., (b, t, v), &dev).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 49, 0, 3, 3], [7, 7, 7, 7, 7, 7, 7], [2, 4, 6, 8, 10, 12, 14]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], &dev).unwrap();
    let labels_on = Tensor::new(&[[0u32, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1, 0]], &dev).unwrap();
    for label_mask in [None, Some(&labels_on)] {
        let fused = next_token_ce(&logits, &ids, &mask, label_mask).unwrap();
        // The composed reference: log-softmax, gather, mask.
        let lp = log_softmax_last(&logits.narrow(1, 0, t - 1).unwrap().reshape((b * (t - 1), v)).unwrap()).unwrap();
        let picked = lp.gather(&ids.narrow(1, 1, t - 1).unwrap().contiguous().unwrap().reshape((b * (t - 1), 1)).unwrap(), 1).unwrap();
        let mut w = mask.narrow(1, 1, t - 1).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        if let Some(lm) = label_mask {
            w = (w * lm.narrow(1, 1, t - 1).unwrap().to_dtype(candle_core::DType::F32).unwrap()).unwrap();
        }
        let want = (picked.reshape((b, t - 1)).unwrap().neg().unwrap() * &w).unwrap().sum(1).unwrap();
        assert!(max_diff(&fused.ce_sum, &want) < 1e-4);
        let (gf, gw) = (fused.mean().unwrap().backward().unwrap(), (want.sum_all().unwrap() / fused.total_tokens() as f64).unwrap().backward().unwrap());
        let (a, e) = (gf.get(&logits).unwrap(), gw.get(&logits).unwrap());
        assert!(max_diff(a, e) < 1e-6, "gradient differs by {}", max_diff(a, e));
    }
    // A label outside the vocabulary is an error, not a read out of bounds.
    let bad = Tensor::new(&[[1u32, 50]], &dev).unwrap();
    let small = Tensor::randn(0f32, 1., (1, 2, v), &dev).unwrap();
    assert!(next_token_ce(&small, &bad, &Tensor::ones((1, 2), candle_core::DType::U32, &dev).unwrap(), None).is_err());
}
