//! The fused CPU kernels (`crossfeed_model::fused`) against their device-generic twins — the composed
//! candle ops CUDA runs, forced on the CPU with `fastpath::with_generic`: values and the gradient of
//! every input, and every parameter of the four fixture models getting the same non-zero gradient.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use crossfeed_model::fastpath::with_generic;
use crossfeed_model::{ops, Batch, CausalLm};

/// Runs `f` on the fast path and on the generic twin; returns (value, gradients of `vars`) for each.
fn both(vars: &[&Var], f: impl Fn() -> Tensor) -> [(Tensor, Vec<Tensor>); 2] {
    let fast = f();
    // A random probe makes the upstream gradient non-uniform (a plain sum would hide errors).
    let probe = Tensor::randn(0f32, 1., fast.shape(), fast.device()).unwrap();
    let run = |y: Tensor| {
        let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = vars.iter().map(|v| grads.get(v).expect("no gradient reaches an input").clone()).collect();
        (y, gs)
    };
    [run(fast), run(with_generic(&f))]
}

fn check(name: &str, vars: &[&Var], f: impl Fn() -> Tensor, tol: f32) {
    let [(y, g), (y0, g0)] = both(vars, f);
    assert_eq!(y.dims(), y0.dims(), "{name}: shape");
    let d = max_abs_diff(&y, &y0);
    assert!(d < tol, "{name}: values differ by {d}");
    for (i, (a, b)) in g.iter().zip(&g0).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(d < tol, "{name}: gradient of input {i} differs by {d}");
        let n = a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(n > 0.0 && n.is_finite(), "{name}: gradient of input {i} is {n}");
    }
}

fn var(shape: &[usize], scale: f64) -> Var {
    Var::from_tensor(&(Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap() * scale).unwrap()).unwrap()
}

#[test]
fn rms_norm_matches_composed_ops() {
    for (rows, h) in [(1, 8), (7, 33), (130, 256)] {
        let (x, w) = (var(&[rows, 3, h], 2.0), var(&[h], 1.0));
        check("rms_norm", &[&x, &w], || ops::rms_norm(&x, &w, 1e-6).unwrap(), 1e-4);
    }
}

#[test]
fn layer_norm_matches_composed_ops() {
    for (rows, h) in [(1, 8), (7, 33), (130, 256)] {
        let (x, w, b) = (var(&[rows, 2, h], 3.0), var(&[h], 1.0), var(&[h], 1.0));
        check("layer_norm", &[&x, &w, &b], || ops::layer_norm(&x, &w, &b, 1e-5).unwrap(), 1e-4);
    }
}

#[test]
fn attention_matches_composed_ops_with_padding_and_grouped_heads() {
    let dev = Device::Cpu;
    // (batch, query heads, kv heads, query len, past, head dim)
    for (b, hq, hkv, tq, past, d) in [(2, 4, 4, 9, 0, 8), (3, 4, 2, 5, 3, 16), (1, 2, 1, 1, 6, 4)] {
        let tk = past + tq;
        let (q, k, v) = (var(&[b, hq, tq, d], 1.0), var(&[b, hkv, tk, d], 1.0), var(&[b, hkv, tk, d], 1.0));
        // Row 0 is left-padded by two tokens (fully masked query rows included), the others are full.
        let mask: Vec<u32> = (0..b).flat_map(|r| (0..tk).map(move |j| u32::from(r != 0 || j >= 2))).collect();
        let mask = Tensor::from_vec(mask, (b, tk), &dev).unwrap();
        let bias = ops::attention_bias(&mask, tq).unwrap();
        let f = || ops::attention(&q, &k, &v, &bias, (d as f64).powf(-0.5), ops::AttnImpl::Sdpa).unwrap();
        check("attention", &[&q, &k, &v], f, 1e-4);
    }
}

#[test]
fn rope_matches_composed_ops_on_a_strided_head_view() {
    let (b, t, h, d) = (2, 5, 3, 8);
    let x = var(&[b, t, h * d], 1.0);
    let angles = Tensor::randn(0f32, 1., (b, 1, t, d / 2), &Device::Cpu).unwrap();
    let angles = Tensor::cat(&[&angles, &angles], 3).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    // The heads split off a projection: a transposed, non-contiguous view, as in the Llama layer.
    let f = || ops::rope(&x.reshape((b, t, h, d)).unwrap().transpose(1, 2).unwrap(), &cos, &sin).unwrap();
    check("rope", &[&x], f, 1e-5);
}

#[test]
fn swiglu_matches_composed_ops() {
    for n in [1, 37, 5000] {
        let (a, u) = (var(&[n, 3], 4.0), var(&[n, 3], 1.0));
        check("swiglu", &[&a, &u], || ops::swiglu(&a, &u).unwrap(), 1e-4);
    }
}

#[test]
fn relu_matches_composed_ops() {
    let x = var(&[300, 7], 1.0);
    check("relu", &[&x], || ops::relu(&x).unwrap(), 1e-6);
}

#[test]
fn embedding_is_bit_identical_to_index_select_at_a_real_vocabulary_for_any_thread_count() {
    // OPT's 50,272 × 768 table; ids repeat (their gradient rows add up in position order, as index_add's
    // do) and most rows are never looked up (their gradient is exactly zero).
    let (v, h) = (50_272, 768);
    let table = var(&[v, h], 1.0);
    let ids: Vec<u32> = (0..2 * 96u32).map(|i| (i * 7919 + i / 3) % 97 * 511 + i % 5).collect();
    let ids = Tensor::from_vec(ids, (2, 96), &Device::Cpu).unwrap();
    let probe = Tensor::randn(0f32, 1., (2, 96, h), &Device::Cpu).unwrap();
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |threads: usize, generic: bool| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let f = || ops::embedding(&table, &ids).unwrap();
            let y = if generic { with_generic(f) } else { f() };
            let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            (bits(&y), bits(g.get(&table).expect("no gradient reaches the table")))
        })
    };
    let first_difference = |a: &[u32], b: &[u32]| a.iter().zip(b).position(|(x, y)| x != y);
    let (y0, g0) = run(2, true);
    for threads in [1, 2, 3] {
        let (y, g) = run(threads, false);
        assert_eq!(first_difference(&y, &y0), None, "{threads} threads: values differ from index_select's");
        assert_eq!(first_difference(&g, &g0), None, "{threads} threads: gradient bits differ from index_add's");
    }
}

#[test]
fn linear_with_and_without_bias_matches_composed_ops() {
    // More rows than the skinny path takes, so the fused gemm linear runs; also a [B, T, K] input.
    for (shape, n, bias) in [(vec![100, 24], 40, true), (vec![3, 50, 16], 9, false), (vec![2, 70, 8], 300, true)] {
        let k = *shape.last().unwrap();
        let (x, w, b) = (var(&shape, 1.0), var(&[n, k], 1.0), var(&[n], 1.0));
        let lin = ops::Linear { weight: w.as_tensor().clone(), bias: bias.then(|| b.as_tensor().clone()) };
        let vars: Vec<&Var> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
        check("linear", &vars, || lin.forward(&x).unwrap(), 1e-4);
        check("linear+relu", &vars, || lin.forward_relu(&x).unwrap(), 1e-4);
    }
}

fn load(variant: &str) -> CausalLm {
    CausalLm::load_dir(&fixture(variant), &Device::Cpu, DType::F32).expect("load")
}

/// The whole training forward/backward (every fused kernel on its real call site: RoPE on a strided
/// head view, SwiGLU, both norms, the attention softmax with padding, the fused CE) against the
/// generic twin, on all four fixture models.
#[test]
fn whole_model_loss_and_every_gradient_match_the_generic_path() {
    for v in VARIANTS {
        let g = golden(v);
        let to_u32 = |t: &Tensor| t.to_dtype(DType::U32).unwrap();
        let golden_batch = Batch { input_ids: to_u32(&g.tensors["input_ids"]), attention_mask: to_u32(&g.tensors["attention_mask"]), label_mask: None, host: None };
        let model = load(v);
        // A longer batch too (3 × 40 rows: more than the skinny linear takes, so the gemm linear runs),
        // right-padded with ragged lengths.
        let vocab = model.vocab_size() as u32;
        let seqs: Vec<Vec<u32>> = [40, 33, 25].iter().enumerate().map(|(i, &n)| (0..n).map(|j| ((i * 7919 + j * 104729) as u32) % vocab).collect()).collect();
        let long_batch = Batch::right_padded(&seqs, 0, 40, None, &Device::Cpu).unwrap();
        for batch in [golden_batch, long_batch] {
        let run = || {
            let loss = model.ce(&batch).unwrap().mean().unwrap();
            let grads = loss.backward().unwrap();
            let gs: Vec<Tensor> = model.params.iter().map(|(n, p)| grads.get(p).unwrap_or_else(|| panic!("{v}: no gradient for {n}")).clone()).collect();
            (loss.to_scalar::<f32>().unwrap(), gs)
        };
        let (fast, fast_g) = run();
        let (generic, generic_g) = with_generic(run);
        assert!((fast - generic).abs() < 1e-5, "{v}: loss {fast} vs {generic}");
        for ((name, _), (a, b)) in model.params.iter().zip(fast_g.iter().zip(&generic_g)) {
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            let d = max_abs_diff(a, b);
            assert!(d <= 1e-4 * scale.max(1.0), "{v}: gradient of {name} differs by {d} (max {scale})");
            assert!(scale > 0.0, "{v}: gradient of {name} is zero");
        }
        // Inference (frozen weights, KV cache) takes the same kernels: logits agree too.
        let frozen = model.frozen().unwrap();
        let fast = frozen.forward_batch(&batch).unwrap();
        let generic = with_generic(|| frozen.forward_batch(&batch).unwrap());
        assert!(max_abs_diff(&fast, &generic) < 1e-4, "{v}: frozen logits differ");
        }
    }
}

#[test]
fn mismatched_weight_and_bias_shapes_are_errors_on_both_paths() {
    let x = Tensor::randn(0f32, 1., (100, 24), &Device::Cpu).unwrap();
    let t = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
    let fails = |what: &str, f: &dyn Fn() -> candle_core::Result<Tensor>| {
        assert!(f().is_err(), "{what}: fast path accepted it");
        assert!(with_generic(f).is_err(), "{what}: generic path accepted it");
    };
    fails("rms_norm, weight 16 for rows of 24", &|| ops::rms_norm(&x, &t(16), 1e-6));
    fails("rms_norm, weight 32 for rows of 24", &|| ops::rms_norm(&x, &t(32), 1e-6));
    fails("layer_norm, weight 16", &|| ops::layer_norm(&x, &t(16), &t(16), 1e-5));
    fails("layer_norm, bias 25", &|| ops::layer_norm(&x, &t(24), &t(25), 1e-5));
    let w = Tensor::ones((40, 24), DType::F32, &Device::Cpu).unwrap();
    fails("linear, bias 41 for 40 outputs", &|| ops::Linear { weight: w.clone(), bias: Some(t(41)) }.forward(&x));
    fails("linear, bias 39 for 40 outputs", &|| ops::Linear { weight: w.clone(), bias: Some(t(39)) }.forward(&x));
}
