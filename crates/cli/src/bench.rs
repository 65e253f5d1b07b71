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
    },
    /// Time a 21x21 relative-efficiency heatmap for K = 4, d = 50.
    Theory,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Forward { model, shape: s } => forward(&model, s.batch_size, s.seq_len, s.steps),
        BenchWhat::Train { model, shape: s, warmup } => train(&model, s.batch_size, s.seq_len, s.steps, warmup),
        BenchWhat::Generate { model, prompts, prompt_len, new_tokens, batch_size, temperature } => {
            generate(&model, prompts, prompt_len, new_tokens, batch_size, temperature)
        }
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

fn train(args: &ModelArgs, b: usize, t: usize, steps: usize, warmup: usize) -> Result<()> {
    use crossfeed_train::{FineTune, TrainConfig, Tokenized};
    let (model, _) = load_model(args)?;
    let seqs = bench_tokens(b, t, model.vocab_size() as u32);
    let cfg = TrainConfig { lr: 1e-5, total_steps: (steps + warmup) as u64, batch_size: b, grad_accum: 1, warmup_steps: Some(0), ..TrainConfig::default() };
    let mut ft = FineTune::new(&model, Tokenized { seqs, label_starts: None }, cfg, 0, t)?;
    let mut times = Vec::new();
    for i in 0..steps + warmup {
        let t0 = Instant::now();
        ft.step()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let med = median(times);
    println!("crossfeed train: {:.1} ms/step, {:.0} tok/s (batch {b}x{t}, median of {steps})", med * 1e3, (b * t) as f64 / med);
    Ok(())
}

fn generate(args: &ModelArgs, n: usize, prompt_len: usize, new_tokens: usize, batch_size: usize, temperature: f64) -> Result<()> {
    use crossfeed_generate::{GenerationConfig, Generator, SamplingParams};
    let (model, tok) = load_model(args)?;
    let prompts = bench_tokens(n, prompt_len, model.vocab_size() as u32);
    let cfg = GenerationConfig {
        sampling: SamplingParams { temperature, ..Default::default() },
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
