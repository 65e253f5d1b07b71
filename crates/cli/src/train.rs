//! `crossfeed train`: fine-tune a model with the crossfeed-train engine, writing a transformers-loadable
//! checkpoint, the optimizer/trainer state (for `--resume`) and a JSONL step log.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use crossfeed_train::{tokenize, FineTune, LmExample, Schedule, TrainConfig};
use serde_json::{json, Value};

use crate::common::{load_model, progress, read_jsonl};
use crate::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL: {"text": ...} or {"prompt": ..., "completion": ...} per line.
    #[arg(long)]
    pub data: PathBuf,
    /// Checkpoint directory (model + optimizer.safetensors + trainer_state.json + train_log.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    #[arg(long, default_value_t = 8e-6)]
    pub lr: f64,
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2)]
    pub grad_accum: usize,
    /// linear, constant, constant_with_warmup or cosine.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    #[arg(long, default_value_t = 0.025, conflicts_with = "warmup_steps")]
    pub warmup_ratio: f64,
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// 0 disables clipping.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Loss on completion tokens only ({"prompt","completion"} lines).
    #[arg(long)]
    pub completion_only: bool,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a resumable checkpoint) after this many steps in this invocation.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Train without dropout (default: the rates of config.json, as transformers' Trainer trains).
    #[arg(long)]
    pub no_dropout: bool,
}

fn parse_schedule(s: &str) -> Result<Schedule> {
    Ok(match s {
        "linear" => Schedule::Linear,
        "constant" => Schedule::Constant,
        "constant_with_warmup" => Schedule::ConstantWithWarmup,
        "cosine" => Schedule::Cosine,
        _ => bail!("unknown --schedule {s:?} (allowed: linear, constant, constant_with_warmup, cosine)"),
    })
}

fn examples(path: &std::path::Path) -> Result<Vec<LmExample>> {
    read_jsonl(path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).map(String::from);
            match (s("text"), s("prompt"), s("completion")) {
                (Some(t), _, _) => Ok(LmExample { prompt: String::new(), completion: t }),
                (None, p, Some(c)) => Ok(LmExample { prompt: p.unwrap_or_default(), completion: c }),
                _ => bail!("{}:{}: needs a \"text\" field or a \"completion\" field", path.display(), i + 1),
            }
        })
        .collect()
}

pub fn run(a: TrainArgs) -> Result<()> {
    let ex = examples(&a.data)?;
    let resuming = a.resume && a.out.join(crossfeed_train::TRAINER_STATE_FILE).exists();
    let mut margs = a.model.clone();
    if resuming {
        margs.model = a.out.to_string_lossy().into_owned();
    } else if a.resume {
        eprintln!("note: no checkpoint in {} yet; starting from {}", a.out.display(), a.model.model);
    }
    let (model, tok) = load_model(&margs)?;
    // transformers' Trainer would train with these on; crossfeed does not.
    for s in model.unapplied_training_settings() {
        eprintln!("warning: config.json {s} is not applied (crossfeed trains without layer drop)");
    }
    let cfg = TrainConfig {
        lr: a.lr,
        schedule: parse_schedule(&a.schedule)?,
        warmup_steps: a.warmup_steps,
        warmup_ratio: a.warmup_ratio,
        total_steps: a.steps,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        dropout: !a.no_dropout,
        ..TrainConfig::default()
    };
    let data = tokenize(&tok, &ex, a.max_len, a.completion_only)?;
    let pad = model.pad_id(&tok);
    let mut ft = FineTune::new(&model, data, cfg, pad, a.max_len)?;
    if resuming {
        ft.resume(&a.out).with_context(|| format!("resuming from {}", a.out.display()))?;
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let log_path = a.out.join("train_log.jsonl");
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    let pb = progress(a.steps, "train");
    pb.set_position(ft.trainer().step_count());
    let mut ran = 0;
    while !ft.done() && a.stop_after.is_none_or(|n| ran < n) {
        let t0 = Instant::now();
        let s = ft.step()?;
        let secs = t0.elapsed().as_secs_f64();
        let line = json!({"step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "clipped": s.clipped, "tokens": s.tokens, "tokens_per_s": s.tokens as f64 / secs});
        writeln!(log, "{line}")?;
        pb.set_position(s.step);
        pb.set_message(format!("train loss {:.4}", s.loss));
        ran += 1;
    }
    pb.finish_and_clear();
    ft.save(&a.out).with_context(|| format!("saving checkpoint to {}", a.out.display()))?;
    eprintln!("{} steps done ({} this run); checkpoint in {}", ft.trainer().step_count(), ran, a.out.display());
    Ok(())
}
