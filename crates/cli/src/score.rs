//! `crossfeed score`: token-level cross entropy of a model on text.

use std::path::PathBuf;

use anyhow::{bail, Result};
use crossfeed_model::Batch;
use serde_json::json;

use crate::common::{load_model, progress, read_jsonl, string_field};
use crate::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL with a "text" field per line.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Sequences are truncated to this many tokens.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let rows = read_jsonl(&a.data)?;
    if rows.is_empty() {
        bail!("{}: no text to score (the file is empty; expected one JSON object with a \"text\" field per line)", a.data.display());
    }
    let texts = string_field(&rows, "text", &a.data)?;
    let (model, tok) = load_model(&a.model)?;
    let model = model.frozen()?;
    let pad = model.pad_id(&tok);
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect::<Result<_, _>>()?;
    let pb = progress(seqs.len() as u64, "score");
    let mut per_sequence = Vec::with_capacity(seqs.len());
    let (mut total, mut tokens) = (0f64, 0usize);
    for chunk in seqs.chunks(a.batch_size.max(1)) {
        let batch = Batch::right_padded(chunk, pad, a.max_len, None, &model.device)?;
        let ce = model.ce(&batch)?;
        for (s, n) in ce.ce_sum.to_vec1::<f32>()?.into_iter().zip(ce.tokens) {
            total += s as f64;
            tokens += n;
            let mean = if n > 0 { s as f64 / n as f64 } else { f64::NAN };
            per_sequence.push(json!({"tokens": n, "ce_sum": s, "ce_mean": if n > 0 { json!(mean) } else { json!(null) }}));
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    if tokens == 0 {
        // A mean over no predictions is undefined: an error, not a null that a script reads as a score.
        bail!("{}: no token to score (every text is shorter than 2 tokens after tokenization)", a.data.display());
    }
    println!("{}", json!({"mean_ce": total / tokens as f64, "tokens": tokens, "per_sequence": per_sequence}));
    Ok(())
}
