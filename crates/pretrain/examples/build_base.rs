//! Builds (or reuses) the default demo base and checks it is a useful starting point.
//!
//! `cargo run --release -p crossfeed-pretrain --example build_base [-- OUT_DIR [FT_STEPS]]`
//! (default OUT_DIR /tmp/toybase, FT_STEPS 100): prints the pretraining loss every 25 steps and the
//! build time, then fine-tunes a copy of the base on the toy arithmetic task and prints token-mean CE
//! on every task's eval split before and after (the fine-tuned task should drop markedly, the others
//! stay high). The fine-tuned model is not saved.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use crossfeed_data::toy_world;
use crossfeed_model::{CausalLm, TextTokenizer};
use crossfeed_pretrain::{ensure_base, mean_ce, passages, read_report, BaseConfig, EOS_ID};
use crossfeed_train::{FineTune, Schedule, TrainConfig, Tokenized};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("/tmp/toybase", String::as_str));
    let ft_steps: u64 = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let cfg = BaseConfig::default();

    let t0 = Instant::now();
    ensure_base(&cfg, &out, |step, loss| {
        if step == 1 || step % 25 == 0 {
            println!("pretrain step {step:4}  loss {loss:.4}  ({:.1}s)", t0.elapsed().as_secs_f64());
        }
    })?;
    let report = read_report(&out).ok_or("no base.json")?;
    println!(
        "base {}: {} params, tokenizer {} (vocab {}), build {:.1}s (this call {:.1}s); loss {:.3} -> {:.3}; public eval CE {:.3} -> {:.3}",
        out.display(),
        report.num_params,
        report.tokenizer_size,
        report.vocab_size,
        report.seconds,
        t0.elapsed().as_secs_f64(),
        report.loss_curve[0],
        report.final_loss,
        report.public_eval_ce_before,
        report.public_eval_ce_after
    );
    if ft_steps == 0 {
        return Ok(());
    }

    // Transfer check: fine-tune on the arithmetic task only.
    let world = toy_world(cfg.world_seed, &cfg.sizes);
    let tok = TextTokenizer::from_dir(&out)?;
    let model = CausalLm::load_dir(&out, &Device::Cpu, DType::F32)?;
    let max_len = 256;
    let texts = |ex: &[crossfeed_data::Example]| ex.iter().map(|e| e.text()).collect::<Vec<_>>();
    let evals = [
        ("public", passages(&tok, &texts(&world.public.eval), max_len)?),
        ("arithmetic", passages(&tok, &texts(&world.arithmetic.eval), max_len)?),
        ("facts", passages(&tok, &texts(&world.facts.eval), max_len)?),
        ("choice", passages(&tok, &texts(&world.choice.eval), max_len)?),
    ];
    let ce_all = |m: &CausalLm| -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        evals.iter().map(|(_, s)| Ok(mean_ce(m, s, EOS_ID, max_len, 32)?)).collect()
    };
    let before = ce_all(&model)?;
    let train = Tokenized { seqs: passages(&tok, &texts(&world.arithmetic.train), max_len)?, label_starts: None };
    let lens: Vec<usize> = train.seqs.iter().map(Vec::len).collect();
    println!("arithmetic train: {} examples, {:.1} tokens/example (max {})", lens.len(), lens.iter().sum::<usize>() as f64 / lens.len() as f64, lens.iter().max().unwrap_or(&0));
    let tcfg = TrainConfig { lr: 1e-3, schedule: Schedule::Linear, warmup_steps: Some(5), total_steps: ft_steps, batch_size: 8, grad_accum: 1, ..TrainConfig::default() };
    let t1 = Instant::now();
    let mut ft = FineTune::new(&model, train, tcfg, EOS_ID, max_len)?;
    while !ft.done() {
        let s = ft.step()?;
        if s.step == 1 || s.step % 25 == 0 {
            println!("fine-tune step {:4}  loss {:.4}", s.step, s.loss);
        }
    }
    let ft_secs = t1.elapsed().as_secs_f64();
    let after = ce_all(&model)?;
    println!("fine-tuned {ft_steps} steps on arithmetic (lr 1e-3, batch 8) in {ft_secs:.1}s; eval CE (nats/token):");
    for (i, (name, _)) in evals.iter().enumerate() {
        println!("  {name:<11} before {:.3}  after {:.3}", before[i], after[i]);
    }
    Ok(())
}
