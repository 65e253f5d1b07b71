//! Times the ops of one decode step of the bench model (Llama-shaped, hidden 256, SwiGLU 688, vocab
//! 8192, 16 running sequences) two ways: candle's own op and the one the model uses. Measurement
//! behind crates/model/src/skinny.rs and the in-place KV cache; not a test.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p crossfeed-model --example decode_ops

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use crossfeed_model::{skinny, KvCache};

fn time(name: &str, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..10 {
        f()?;
    }
    let (mut n, start) = (0usize, Instant::now());
    while start.elapsed().as_secs_f64() < 0.3 {
        f()?;
        n += 1;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{name:44} {us:9.1} µs");
    Ok(us)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let rows = 16;
    println!("threads: {}", rayon::current_num_threads());
    for (name, n, k) in [("q/k/v/o proj", 256, 256), ("gate/up proj", 688, 256), ("down proj", 256, 688), ("lm head", 8192, 256)] {
        let x = Tensor::randn(0f32, 1., (rows, k), &dev)?;
        let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
        let a = time(&format!("{name} [{rows},{k}]x[{n},{k}]^T candle"), || x.matmul(&w.t()?).map(drop))?;
        let b = time(&format!("{name} [{rows},{k}]x[{n},{k}]^T skinny"), || skinny::linear(&x, &w).map(drop))?;
        println!("{:44} {:9.2}x", "", a / b);
    }
    // Appending one column to a 96-column cache of [16, 4, T, 64].
    let past = Tensor::randn(0f32, 1., (rows, 4, 96, 64), &dev)?;
    let step = Tensor::randn(0f32, 1., (rows, 4, 1, 64), &dev)?;
    let a = time("kv append by Tensor::cat", || Tensor::cat(&[&past, &step], 2).map(drop))?;
    let mut cache = KvCache::new(1);
    cache.append(0, &past, &past)?;
    let b = time("kv append in place (KvCache)", || {
        if cache.past_len() >= 200 {
            cache = KvCache::new(1);
            cache.append(0, &past, &past)?;
        }
        cache.append(0, &step, &step).map(drop)
    })?;
    println!("{:44} {:9.2}x", "", a / b);
    Ok(())
}
