//! Per-step sampling cost at a real batch and vocabulary (B = 8, V = 128,256, Llama 3's), on the CPU
//! fast path and on the device-generic path (what CUDA runs, here executed by candle's CPU backend).
//! Ignored by default (timings, not a check); run with
//!
//!     cargo test -p crossfeed-generate --test sampling_bench -- --ignored --nocapture
//!
//! Debug builds (opt-level 1) are slower than release; compare rows with each other, not with torch.

use std::time::Instant;

use candle_core::{Device, Tensor};
use crossfeed_generate::sampling::{next_tokens, SamplingParams};
use crossfeed_model::fastpath::with_generic;

const B: usize = 8;
const V: usize = 128_256;

/// Deterministic logits with a realistic spread (a few high values, a long flat tail).
fn logits() -> Tensor {
    let rows: Vec<f32> = (0..B as u64)
        .flat_map(|r| {
            (0..V as u64).map(move |i| {
                let h = ((i * 2654435761 + r * 40503) % (1u64 << 32)) as f64 / (1u64 << 32) as f64;
                (12.0 * h.powi(6)) as f32
            })
        })
        .collect();
    Tensor::from_vec(rows, (B, V), &Device::Cpu).expect("logits")
}

/// Median wall time of one `next_tokens` call over `n` runs, in ms.
fn median_ms(l: &Tensor, p: &SamplingParams, u: &[f32], n: usize) -> f64 {
    next_tokens(l, p, u).expect("warm-up");
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            next_tokens(l, p, u).expect("step");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

#[test]
#[ignore = "timings only; run with --ignored --nocapture"]
fn sampling_step_time_at_b8_v128256() {
    let l = logits();
    let u = vec![0.5f32; B];
    let d = SamplingParams::default;
    let settings: Vec<(&str, SamplingParams)> = vec![
        ("greedy", SamplingParams::greedy()),
        ("temperature 1", d()),
        ("top_k 50", SamplingParams { top_k: 50, ..d() }),
        ("top_k 3000", SamplingParams { top_k: 3000, ..d() }),
        ("top_p 0.9", SamplingParams { top_p: 0.9, ..d() }),
        ("min_p 0.05", SamplingParams { min_p: 0.05, ..d() }),
        ("t0.7 k50 p0.95 min_p0.02", SamplingParams { temperature: 0.7, top_k: 50, top_p: 0.95, min_p: 0.02, ..d() }),
    ];
    println!("B={B} V={V}: median ms per sampling step (5 runs)");
    println!("{:<26} {:>10} {:>10}", "setting", "cpu fast", "generic");
    for (name, p) in settings {
        let fast = median_ms(&l, &p, &u, 5);
        let generic = with_generic(|| median_ms(&l, &p, &u, 5));
        println!("{name:<26} {fast:>10.1} {generic:>10.1}");
    }
}
