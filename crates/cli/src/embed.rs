//! `crossfeed embed`: normalised sentence embeddings for {"text"} lines.

use std::path::PathBuf;

use anyhow::{Context, Result};
use crossfeed_embed::Embedder;
use serde_json::Value;

use crate::common::{read_jsonl, string_field};

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// Sentence-transformers directory or hub id (e.g. sentence-transformers/all-MiniLM-L6-v2).
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let mut rows = read_jsonl(&a.data)?;
    let texts = string_field(&rows, "text", &a.data)?;
    let device = crossfeed_model::parse_device(&a.device)?;
    let emb = Embedder::load(&a.model, &device).with_context(|| format!("loading embedder {}", a.model))?;
    crate::common::print_embedder_notes(&emb);
    for note in emb.notes() {
        eprintln!("note: {note}");
    }
    let vecs = emb.embed(&texts, a.batch_size)?;
    let mut out = String::new();
    for (row, v) in rows.iter_mut().zip(vecs) {
        row.insert("embedding".into(), serde_json::to_value(v)?);
        out.push_str(&serde_json::to_string(&Value::Object(row.clone()))?);
        out.push('\n');
    }
    crossfeed_fsio::write_atomic(&a.out, out.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    Ok(())
}
