//! `crossfeed generate`: completions for a JSONL file of prompts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use crossfeed_generate::{GenerationConfig, Generator, SamplingParams};
use serde_json::Value;

use crate::common::{load_model, progress, read_jsonl, string_field};
use crate::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL with a "prompt" field per line (other fields are passed through).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output JSONL: each input line plus "completion", "token_ids", "finish_reason".
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 disables.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// transformers' min_p: drop tokens less likely than min_p times the most likely; 0 disables.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f64,
    /// Stop strings (repeatable); the completion is cut before the first one found.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let sampling = SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, repetition_penalty: a.repetition_penalty, min_p: a.min_p };
    sampling.validate().map_err(|e| anyhow::anyhow!("--{}: {e}", e.key.replace('_', "-")))?;
    let mut rows = read_jsonl(&a.prompts)?;
    if rows.is_empty() {
        bail!("{}: no prompts (the file is empty; expected one JSON object with a \"prompt\" field per line)", a.prompts.display());
    }
    let prompts = string_field(&rows, "prompt", &a.prompts)?;
    let (model, tok) = load_model(&a.model)?;
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p)).collect::<Result<_, _>>()?;
    let cfg = GenerationConfig {
        sampling,
        max_new_tokens: a.max_new_tokens,
        min_new_tokens: a.min_new_tokens,
        stop: a.stop.clone(),
        seed: a.seed,
        batch_size: a.batch_size,
        ..Default::default()
    };
    let pb = progress(ids.len() as u64, "generate");
    let start = Instant::now();
    let out = Generator::new(&model, &tok, cfg).run(&ids, |_, done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    let new_tokens: usize = out.iter().map(|c| c.token_ids.len()).sum();
    let secs = start.elapsed().as_secs_f64();
    let mut text = String::new();
    for (row, c) in rows.iter_mut().zip(out) {
        row.insert("completion".into(), Value::String(c.text));
        row.insert("token_ids".into(), serde_json::to_value(&c.token_ids)?);
        row.insert("finish_reason".into(), serde_json::to_value(c.finish_reason)?);
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    crossfeed_fsio::write_atomic(&a.out, text.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("generated {new_tokens} tokens for {} prompts in {secs:.2}s ({:.0} tok/s)", rows.len(), new_tokens as f64 / secs);
    Ok(())
}
