//! `crossfeed accuracy`: one model's task accuracy as lm-evaluation-harness measures it, printed in
//! its table layout (`lm_eval --model hf --tasks …`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use crossfeed_data::{task_rows, SourceConfig, TaskConfig, TaskKind};
use crossfeed_loop::accuracy::{self, AccuracyOptions, DocResult};
use serde_json::json;

use crate::common::load_model;
use crate::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct AccuracyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// sciq, arc_easy, arc_challenge or gsm8k; repeat or comma-separate for several.
    #[arg(long, value_delimiter = ',', required = true)]
    pub task: Vec<String>,
    /// Read the task files from this local mirror of the hub's dataset repos instead of the hub: one
    /// directory per repo, by its name, in the hub layout (`DIR/sciq/data/test-*.parquet`,
    /// `DIR/ai2_arc/ARC-Easy/…`, `DIR/gsm8k/main/…`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The split scored (lm-eval's `test_split`).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Score the first N documents (lm-eval's --limit); default all.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Few-shot examples from the train split; default lm-eval's (gsm8k 5, the others 0).
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// lm-eval's --fewshot_random_seed.
    #[arg(long, default_value_t = accuracy::FEWSHOT_SEED)]
    pub fewshot_seed: u64,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// New tokens per generated answer (lm-eval's max_gen_toks).
    #[arg(long, default_value_t = accuracy::MAX_GEN_TOKS)]
    pub max_gen_toks: usize,
    /// Also write the aggregate metrics and every document's decisions to this JSON file.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

fn parse_task(name: &str) -> Result<TaskKind> {
    let kind: TaskKind = serde_json::from_value(json!(name)).ok().filter(|k| accuracy::lm_eval_task(*k).is_some()).with_context(|| {
        format!("--task {name:?} has no accuracy form (allowed: sciq, arc_easy, arc_challenge, gsm8k)")
    })?;
    Ok(kind)
}

pub fn run(a: AccuracyArgs) -> Result<()> {
    let kinds: Vec<TaskKind> = a.task.iter().map(|t| parse_task(t.trim())).collect::<Result<_>>()?;
    let (model, tok) = load_model(&a.model)?;
    let mut results = Vec::new();
    let mut per_task = Vec::new();
    for kind in kinds {
        let source = match &a.data_dir {
            Some(dir) => {
                let repo = kind.hub_repo().and_then(|r| r.rsplit('/').next()).expect("accuracy tasks live on the hub");
                SourceConfig::Local { dir: dir.join(repo), config: None }
            }
            None => SourceConfig::default(),
        };
        // Every row of the split, in file order (lm-eval scores the whole split).
        let cfg = TaskConfig { source, eval_split: Some(a.split.clone()), eval_size: None, ..TaskConfig::new(kind) };
        let shots = a.num_fewshot.unwrap_or_else(|| accuracy::default_fewshot(kind));
        let rows = task_rows(&cfg, shots > 0).with_context(|| format!("reading task {}", kind.name()))?;
        let mut docs = accuracy::docs_from_rows(&rows)?;
        if let Some(n) = a.limit {
            if n == 0 {
                bail!("--limit 0 scores nothing (give at least 1, or leave it out for the whole split)");
            }
            docs.truncate(n);
        }
        if docs.is_empty() {
            bail!("task {}: split {:?} has no documents", kind.name(), a.split);
        }
        let opts = AccuracyOptions { num_fewshot: shots, batch_size: a.batch_size, max_gen_toks: a.max_gen_toks, fewshot_seed: a.fewshot_seed };
        let name = accuracy::lm_eval_task(kind).expect("checked");
        eprintln!("{name}: {} documents, {shots}-shot", docs.len());
        let res = accuracy::evaluate(&model, &tok, name, accuracy::task_version(kind), &docs, &opts)?;
        let docs_json: Vec<_> = res
            .per_doc
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                DocResult::Choice { loglikelihoods, is_greedy, acc, acc_norm } => {
                    json!({"doc_id": i, "loglikelihoods": loglikelihoods, "is_greedy": is_greedy, "acc": acc, "acc_norm": acc_norm})
                }
                DocResult::Gen { context, generation, strict, flexible, strict_em, flexible_em } => json!({
                    "doc_id": i, "context": context, "generation": generation,
                    "filtered": {"strict-match": strict, "flexible-extract": flexible},
                    "exact_match": {"strict-match": strict_em, "flexible-extract": flexible_em},
                }),
            })
            .collect();
        let metrics: serde_json::Map<String, serde_json::Value> = res
            .metrics
            .iter()
            .flat_map(|m| {
                [
                    (format!("{},{}", m.lm_eval_metric, m.filter), json!(m.value)),
                    (format!("{}_stderr,{}", m.lm_eval_metric, m.filter), m.stderr.map_or(json!("N/A"), |s| json!(s))),
                ]
            })
            .collect();
        per_task.push(json!({"task": name, "num_fewshot": shots, "examples": res.examples, "metrics": metrics, "samples": docs_json}));
        results.push(res);
    }
    // lm-eval's table, ending in a newline like any line a shell prints.
    println!("{}", accuracy::markdown_table(&results).trim_end());
    if let Some(path) = &a.output {
        let text = serde_json::to_string_pretty(&json!({"model": a.model.model, "results": per_task}))?;
        crossfeed_fsio::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
