//! `crossfeed bench`: throughput measurements. Correctness lives in tests; numbers live here.

use std::time::Instant;

use anyhow::Result;
use crossfeed_model::Batch;

use crate::common::load_model;
use crate::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// The batch shape and repetition count shared by the forward and train benchmarks.
#[derive(clap::Args, Debug)]
pub struct BatchShape {
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Forward + backward tokens/s of a model at a given batch shape.
    Forward {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        shape: BatchShape,
    },
    /// Training steps/s and tokens/s (forward, CE, backward, clipping, AdamW) on random token batches.
    Train {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        shape: BatchShape,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Train without dropout even where config.json sets it (to time the masks' cost).
        #[arg(long)]
        no_dropout: bool,
        /// Also print where a step's time goes: each CPU fast-path op and each phase, per step.
        #[arg(long)]
        profile: bool,
    },
    /// Generation tokens/s: N prompts of a fixed token pattern, fixed new-token count (no EOS stop).
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 32)]
        prompts: usize,
        #[arg(long, default_value_t = 32)]
        prompt_len: usize,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// transformers' top_p (1 disables).
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// transformers' repetition_penalty (1 disables).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f64,
    },
    /// Planted ties at the maximum of vocabulary-sized rows on the device: the project's argmax must
    /// return the lowest tied index (as torch and candle's CPU kernel do); prints how often candle's own
    /// argmax on this device picked another. Exits with an error when the project's argmax is wrong.
    ArgmaxTies {
        /// cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time a 21x21 relative-efficiency heatmap for K = 4, d = 50.
    Theory,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Forward { model, shape: s } => forward(&model, s.batch_size, s.seq_len, s.steps),
        BenchWhat::Train { model, shape: s, warmup, no_dropout, profile } => {
            train(&model, s.batch_size, s.seq_len, s.steps, warmup, !no_dropout, profile)
        }
        BenchWhat::Generate { model, prompts, prompt_len, new_tokens, batch_size, temperature, top_p, repetition_penalty } => {
            let sampling = crossfeed_generate::SamplingParams { temperature, top_p, repetition_penalty, ..Default::default() };
            sampling.validate()?;
            generate(&model, prompts, prompt_len, new_tokens, batch_size, sampling)
        }
        BenchWhat::ArgmaxTies { device } => argmax_ties(&device),
        BenchWhat::Theory => {
            println!("{}", crossfeed_theory::bench_heatmap()?);
            Ok(())
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn forward(args: &ModelArgs, b: usize, t: usize, steps: usize) -> Result<()> {
    let (model, _) = load_model(args)?;
    let seqs = bench_tokens(b, t, model.vocab_size() as u32);
    let batch = Batch::right_padded(&seqs, 0, t, None, &model.device)?;
    let (mut fwd, mut both) = (Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        let loss = model.ce(&batch)?.mean()?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let _grads = loss.backward()?;
        let t2 = Instant::now();
        if i >= 2 {
            fwd.push((t1 - t0).as_secs_f64());
            both.push((t2 - t0).as_secs_f64());
        }
    }
    let toks = (b * t) as f64;
    println!(
        "bench forward: model={} batch={b}x{t} dtype={} device={}: forward {:.0} tok/s, forward+backward {:.0} tok/s (median of {steps})",
        args.model,
        args.dtype,
        args.device,
        toks / median(fwd),
        toks / median(both)
    );
    Ok(())
}

/// Same token pattern as scripts/bench_train.py, so both sides see identical batches.
fn bench_tokens(b: usize, t: usize, v: u32) -> Vec<Vec<u32>> {
    (0..b).map(|i| (0..t).map(|j| ((i * 7919 + j * 104729) as u32) % v).collect()).collect()
}

fn train(args: &ModelArgs, b: usize, t: usize, steps: usize, warmup: usize, dropout: bool, profile: bool) -> Result<()> {
    use crossfeed_train::{FineTune, TrainConfig, Tokenized};
    let (model, _) = load_model(args)?;
    let rss_loaded = memory_mib().map(|m| m.0);
    let seqs = bench_tokens(b, t, model.vocab_size() as u32);
    let cfg = TrainConfig { lr: 1e-5, total_steps: (steps + warmup) as u64, batch_size: b, grad_accum: 1, warmup_steps: Some(0), dropout, ..TrainConfig::default() };
    let mut ft = FineTune::new(&model, Tokenized { seqs, label_starts: None }, cfg, 0, t)?;
    let mut times = Vec::new();
    for i in 0..steps + warmup {
        crossfeed_model::profile::enable(profile && i >= warmup);
        let t0 = Instant::now();
        ft.step()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    crossfeed_model::profile::enable(false);
    let total: f64 = times.iter().sum();
    let med = median(times);
    let drop = if dropout && model.has_dropout() { "dropout on" } else { "dropout off" };
    println!("crossfeed train: {:.1} ms/step, {:.0} tok/s (batch {b}x{t}, {drop}, median of {steps})", med * 1e3, (b * t) as f64 / med);
    let flops = train_step_flops(&model, b, t);
    if model.device.is_cpu() {
        let peak = gemm_peak_gflops();
        let achieved = flops / med / 1e9;
        println!(
            "crossfeed train: {:.1} GFLOP/step, {achieved:.0} GFLOP/s, MFU {:.0}% of this machine's measured GEMM peak {peak:.0} GFLOP/s \
             (f32 x·Wᵀ via candle → gemm, {} threads)",
            flops / 1e9,
            100.0 * achieved / peak,
            candle_core::utils::get_num_threads()
        );
    } else {
        println!("crossfeed train: {:.1} GFLOP/step, {:.0} GFLOP/s", flops / 1e9, flops / med / 1e9);
    }
    if let (Some(before), Some((_, peak))) = (rss_loaded, memory_mib()) {
        println!("crossfeed train: peak RSS {peak:.0} MiB ({before:.0} MiB with the model loaded, before the first step)");
    }
    if profile {
        print_profile(crossfeed_model::profile::take(), total, steps);
    }
    Ok(())
}

/// The per-step table of `bench train --profile`: phases, then ops by time, then what no op covers.
fn print_profile(table: std::collections::BTreeMap<&'static str, crossfeed_model::profile::Entry>, total: f64, steps: usize) {
    let per = |secs: f64| secs / steps.max(1) as f64 * 1e3;
    let pct = |secs: f64| 100.0 * secs / total.max(f64::MIN_POSITIVE);
    println!("crossfeed train profile ({} threads; ms per step, mean of {steps} steps; step {:.1} ms):", candle_core::utils::get_num_threads(), per(total));
    let (phases, mut ops): (Vec<_>, Vec<_>) = table.into_iter().partition(|(name, _)| name.starts_with("phase."));
    let in_phases: f64 = phases.iter().map(|(_, e)| e.secs).sum();
    for (name, e) in &phases {
        println!("  {name:<18} {:>9.1} ms {:>5.1}%", per(e.secs), pct(e.secs));
    }
    println!("  {:<18} {:>9.1} ms {:>5.1}%", "outside phases", per(total - in_phases), pct(total - in_phases));
    ops.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
    let in_ops: f64 = ops.iter().map(|(_, e)| e.secs).sum();
    for (name, e) in &ops {
        let rate = if e.flops > 0.0 { format!("{:>6.0} GFLOP/s", e.flops / e.secs / 1e9) } else { String::new() };
        println!("  {name:<18} {:>9.1} ms {:>5.1}% {:>5} calls {rate}", per(e.secs), pct(e.secs), e.calls / steps.max(1) as u64);
    }
    let rest = in_phases - in_ops;
    println!("  {:<18} {:>9.1} ms {:>5.1}%   (candle's own ops: element-wise, copies, casts, embedding; allocation)", "phases, no op", per(rest), pct(rest));
}

/// Matmul FLOPs of one training step (forward + backward = 3 × forward): 2·P per token for the P
/// weights used in matmuls (every 2-D weight but the embedding lookups, plus the head when tied), and
/// 4·T·(heads·head_dim) per token and layer for the two attention matmuls (full T×T, as computed).
fn train_step_flops(model: &crossfeed_model::CausalLm, b: usize, t: usize) -> f64 {
    let mut matmul_params = 0usize;
    let mut untied = false;
    let mut embed = 0usize;
    for (name, v) in &model.params {
        let dims = v.dims();
        if name.contains("embed_tokens") {
            embed = dims.get(1).copied().unwrap_or(0);
        } else if dims.len() == 2 && !name.contains("embed") {
            matmul_params += v.elem_count();
            untied |= name.contains("lm_head");
        }
    }
    if !untied {
        matmul_params += model.vocab_size() * embed;
    }
    let c = &model.config_json;
    let get = |k: &str| c.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let heads = get("num_attention_heads").unwrap_or(1);
    let width = get("head_dim").map_or_else(|| get("hidden_size").unwrap_or(0), |d| d * heads);
    let (tokens, layers) = ((b * t) as f64, model.num_layers() as f64);
    3.0 * (2.0 * matmul_params as f64 * tokens + 4.0 * layers * tokens * t as f64 * width as f64)
}

/// This machine's f32 GEMM throughput through the kernel the model uses (candle's CPU matmul → the
/// `gemm` crate, rayon's threads), best of two shapes of the bench models, median of 5 runs each.
fn gemm_peak_gflops() -> f64 {
    use candle_core::{Device, Tensor};
    let mut best = 0f64;
    for (m, k, n) in [(1024, 1024, 1024), (1024, 768, 3072)] {
        let (Ok(x), Ok(w)) = (Tensor::randn(0f32, 1., (m, k), &Device::Cpu), Tensor::randn(0f32, 1., (n, k), &Device::Cpu)) else {
            continue;
        };
        let Ok(wt) = w.t() else { continue };
        let mut times = Vec::new();
        for _ in 0..6 {
            let t0 = Instant::now();
            if x.matmul(&wt).is_err() {
                return f64::NAN;
            }
            times.push(t0.elapsed().as_secs_f64());
        }
        times.remove(0);
        best = best.max(2.0 * (m * k * n) as f64 / median(times) / 1e9);
    }
    best
}

/// (current, peak) resident set size in MiB, from /proc/self/status (Linux).
fn memory_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| {
        status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn generate(args: &ModelArgs, n: usize, prompt_len: usize, new_tokens: usize, batch_size: usize, sampling: crossfeed_generate::SamplingParams) -> Result<()> {
    use crossfeed_generate::{GenerationConfig, Generator};
    let (model, tok) = load_model(args)?;
    let prompts = bench_tokens(n, prompt_len, model.vocab_size() as u32);
    let cfg = GenerationConfig {
        sampling,
        max_new_tokens: new_tokens,
        min_new_tokens: new_tokens,
        batch_size,
        ..Default::default()
    };
    // Warm-up on a few prompts, then the timed run.
    Generator::new(&model, &tok, GenerationConfig { max_new_tokens: 4, min_new_tokens: 4, ..cfg.clone() }).run(&prompts[..batch_size.min(n)], |_, _| {})?;
    let t0 = Instant::now();
    let out = Generator::new(&model, &tok, cfg).run(&prompts, |_, _| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let toks: usize = out.iter().map(|c| c.token_ids.len()).sum();
    println!("crossfeed generate: {toks} new tokens in {secs:.2}s = {:.0} tok/s ({n} prompts x {prompt_len} tokens, batch {batch_size})", toks as f64 / secs);
    Ok(())
}

/// `crossfeed bench argmax-ties`: rows of 50,272 and 128,256 values (f32 and bf16) with the maximum
/// planted at two or three indices each, far apart and at a row's ends; one JSON line per case.
fn argmax_ties(device: &str) -> Result<()> {
    use candle_core::{DType, Tensor, D};
    let dev = crossfeed_model::parse_device(device)?;
    let mut wrong = 0;
    for v in [50_272usize, 128_256] {
        let plants: Vec<Vec<usize>> = (0..16).map(|r| vec![(r * 4099 + 1) % v, v - 1 - r, (r * 1024 + 7) % v].into_iter().take(2 + r % 2).collect()).collect();
        let rows = plants.len();
        let mut data: Vec<f32> = (0..rows * v).map(|i| ((i * 7919) % 100_003) as f32 / 100_003.0).collect();
        let mut want = Vec::new();
        for (r, p) in plants.iter().enumerate() {
            for &j in p {
                data[r * v + j] = 2.0;
            }
            want.push(*p.iter().min().unwrap_or(&0) as u32);
        }
        let x = Tensor::from_vec(data, (rows, v), &dev)?;
        for dtype in [DType::F32, DType::BF16] {
            let x = x.to_dtype(dtype)?;
            let ours: Vec<u32> = crossfeed_model::cuda_rules::argmax(&x)?.to_vec1()?;
            let candle: Vec<u32> = x.argmax(D::Minus1)?.to_vec1()?;
            let bad = ours.iter().zip(&want).filter(|(a, b)| a != b).count();
            let candle_other = candle.iter().zip(&want).filter(|(a, b)| a != b).count();
            wrong += bad;
            println!(
                "{}",
                serde_json::json!({"vocab": v, "dtype": format!("{dtype:?}"), "rows": rows, "wrong_rows": bad, "candle_argmax_other_index_rows": candle_other, "device": device})
            );
        }
    }
    anyhow::ensure!(wrong == 0, "argmax returned another index than the lowest tied one in {wrong} rows");
    Ok(())
}
