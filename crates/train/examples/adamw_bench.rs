//! Optimizer-step timing: crossfeed AdamW (fused, in place) vs candle_nn::AdamW on the shapes of
//! the 7.36M-parameter Llama-style model from notes/cpu-performance.md (f32, CPU).
//!
//! cargo run --release -p crossfeed-train --example adamw_bench [-- steps]

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use crossfeed_train::{AdamW, AdamWConfig};

fn shapes() -> Vec<(String, Vec<usize>)> {
    let (v, h, f, layers) = (8192, 256, 688, 4);
    let mut s = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..layers {
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            s.push((format!("model.layers.{l}.self_attn.{p}.weight"), vec![h, h]));
        }
        s.push((format!("model.layers.{l}.mlp.gate_proj.weight"), vec![f, h]));
        s.push((format!("model.layers.{l}.mlp.up_proj.weight"), vec![f, h]));
        s.push((format!("model.layers.{l}.mlp.down_proj.weight"), vec![h, f]));
        s.push((format!("model.layers.{l}.input_layernorm.weight"), vec![h]));
        s.push((
            format!("model.layers.{l}.post_attention_layernorm.weight"),
            vec![h],
        ));
    }
    s.push(("model.norm.weight".to_string(), vec![h]));
    s.push(("lm_head.weight".to_string(), vec![v, h]));
    s
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

fn main() -> anyhow_free::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dev = Device::Cpu;
    let make = || -> candle_core::Result<(Vec<(String, Var)>, GradStore)> {
        let mut params = Vec::new();
        let mut grads = GradStore::default();
        for (n, s) in shapes() {
            let v = Var::from_tensor(&(Tensor::randn(0f32, 0.02, s.as_slice(), &dev)?))?;
            let g = Tensor::randn(0f32, 1e-3, s.as_slice(), &dev)?;
            grads.insert(v.as_tensor(), g);
            params.push((n, v));
        }
        Ok((params, grads))
    };
    let (params, grads) = make()?;
    let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    println!(
        "{n} f32 parameters in {} tensors, {} threads",
        params.len(),
        rayon_threads()
    );

    let cfg = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let mut ours = AdamW::new(params.clone(), cfg, crossfeed_train::hf_decay)?;
    let mut t_ours = Vec::new();
    for i in 0..steps + 3 {
        let t = Instant::now();
        ours.step(&grads, 1e-3)?;
        if i >= 3 {
            t_ours.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    let (params2, grads2) = make()?;
    let vars: Vec<Var> = params2.iter().map(|(_, v)| v.clone()).collect();
    let mut theirs = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )?;
    let mut t_theirs = Vec::new();
    for i in 0..steps + 3 {
        let t = Instant::now();
        theirs.step(&grads2)?;
        if i >= 3 {
            t_theirs.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // The trainer's extra per-step pass: global gradient norm (also the NaN check).
    let vars_ours: Vec<Var> = params.iter().map(|(_, v)| v.clone()).collect();
    let mut t_norm = Vec::new();
    for i in 0..steps + 3 {
        let t = Instant::now();
        std::hint::black_box(crossfeed_train::grad_norm(&grads, &vars_ours)?);
        if i >= 3 {
            t_norm.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "grad-norm pass                    : median {:8.2} ms",
        median(t_norm)
    );
    let (a, b) = (median(t_ours), median(t_theirs));
    println!("crossfeed AdamW  (fused, in place): median {a:8.2} ms/step");
    println!("candle_nn::AdamW (tensor ops)     : median {b:8.2} ms/step");
    println!("speed-up {:.1}x", b / a);

    // Save/load cost of the full state, for reference.
    let dir = std::env::temp_dir().join(format!("crossfeed-adamw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let path = dir.join("optimizer.safetensors");
    let t = Instant::now();
    ours.save(&path)?;
    let ts = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    ours.load(&path)?;
    let tl = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "state save {ts:.0} ms, load {tl:.0} ms ({} MB)",
        std::fs::metadata(&path)
            .map(|m| m.len() / 1_000_000)
            .unwrap_or(0)
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

/// Minimal boxed-error result so the example needs no extra dependency.
mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}
