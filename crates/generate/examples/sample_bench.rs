//! Times the batch sampler alone: `cargo run --release -p crossfeed-generate --example sample_bench`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use crossfeed_generate::{sampling, SamplingParams};

fn main() -> candle_core::Result<()> {
    let (b, v) = (16, 8192);
    let logits = Tensor::randn(0f32, 3.0, (b, v), &Device::Cpu)?;
    let u = vec![0.5f32; b];
    let p = SamplingParams::default();
    for (name, f) in [
        ("warp", Box::new(|| sampling::warp(&logits, &p).map(|_| ())) as Box<dyn Fn() -> candle_core::Result<()>>),
        ("next_tokens", Box::new(|| sampling::next_tokens(&logits, &p, &u).map(|_| ()))),
        ("argmax", Box::new(|| crossfeed_model::cuda_rules::argmax(&logits).map(|_| ()))),
    ] {
        f()?;
        let t0 = Instant::now();
        for _ in 0..50 {
            f()?;
        }
        println!("{name}: {:.3} ms", t0.elapsed().as_secs_f64() * 1e3 / 50.0);
    }
    Ok(())
}
