//! `metrics.jsonl` and `metrics.csv`: rebuilt from the stages' own output files after every
//! generation, in plan order, so their bytes depend only on the config — not on how often the run
//! was interrupted or which process ran which stage.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LoopError, Result};
use crate::rundir::{write_atomic, RunDir};
use crate::plan::{plan, Stage};
use crate::ExperimentConfig;

/// One measurement. `metric` is `ce` (token-mean cross entropy, with `tokens` the predicted-token
/// count), one of [`ACCURACY_METRICS`] (with `examples` the examples scored), `distinct_1` /
/// `distinct_2` (diversity of completions of the shared eval prompts; no entity = all entities
/// pooled), `cosine` (mean pairwise embedding similarity between entities), or one of
/// [`COLLAPSE_METRICS`] (per entity; at generation -1 also on the real data as `data_<metric>`) or
/// [`CONSENSUS_METRICS`] (per private task and pair of entities: `entity` and `peer`).
/// `generation` -1 is the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLine {
    pub generation: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entity: Option<usize>,
    /// The second entity of a pair metric ([`CONSENSUS_METRICS`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer: Option<usize>,
    pub eval_set: String,
    pub metric: String,
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub examples: Option<u64>,
}

/// Task accuracy metrics (lm-evaluation-harness's): `acc` and `acc_norm` (multiple choice by
/// log-likelihood), `exact_match` (its gsm8k `strict-match` filter) and `exact_match_flexible` (its
/// `flexible-extract` filter), each a fraction of the line's `examples`.
pub const ACCURACY_METRICS: [&str; 4] = ["acc", "acc_norm", "exact_match", "exact_match_flexible"];

/// The collapse metrics of each entity's completions of the shared eval prompts (`crate::collapse`):
/// self-BLEU (sacrebleu's, 0–100, over `eval.self_bleu_samples`), Vendi score of the sentence
/// embeddings (with `eval.embed_model`), type-token ratio, perplexity under the base model
/// (`eval.perplexity`).
pub const COLLAPSE_METRICS: [&str; 4] = ["self_bleu", "vendi", "ttr", "perplexity"];

/// Shared errors of two entities on one private task, fractions of its accuracy documents: both wrong,
/// and (multiple choice) both wrong with the same option; each with its value under independent errors.
pub const CONSENSUS_METRICS: [&str; 4] = ["both_wrong", "both_wrong_chance", "same_wrong", "same_wrong_chance"];

/// The accuracy a table shows for `set`: `exact_match` for generated answers, else `acc`.
pub fn headline_accuracy(lines: &[MetricLine], set: &str) -> Option<&'static str> {
    ["exact_match", "acc"].into_iter().find(|m| lines.iter().any(|l| l.metric == *m && l.eval_set == set))
}

pub const EVAL_FILE: &str = "eval.jsonl";
pub const SIMILARITY_FILE: &str = "similarity.jsonl";

pub fn to_jsonl(lines: &[MetricLine]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).unwrap_or_default());
        s.push('\n');
    }
    s
}

pub fn read_jsonl(path: &Path) -> Result<Vec<MetricLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| LoopError::Json { path: path.to_path_buf(), message: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

/// Collects every finished eval/similarity stage's lines in plan order and rewrites
/// `metrics.jsonl` and `metrics.csv`. Returns the lines.
pub fn rebuild(dir: &RunDir, cfg: &ExperimentConfig) -> Result<Vec<MetricLine>> {
    let mut all = Vec::new();
    for id in plan(cfg) {
        let file = match id.stage {
            Stage::Eval => EVAL_FILE,
            Stage::Similarity => SIMILARITY_FILE,
            _ => continue,
        };
        if dir.is_done(&id) {
            all.extend(read_jsonl(&dir.stage_dir(&id).join(file))?);
        }
    }
    write_atomic(&dir.root.join("metrics.jsonl"), to_jsonl(&all).as_bytes())?;
    let mut csv = String::from("generation,entity,peer,eval_set,metric,value,tokens,examples\n");
    for l in &all {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            l.generation,
            l.entity.map(|e| e.to_string()).unwrap_or_default(),
            l.peer.map(|e| e.to_string()).unwrap_or_default(),
            l.eval_set,
            l.metric,
            l.value,
            l.tokens.map(|t| t.to_string()).unwrap_or_default(),
            l.examples.map(|t| t.to_string()).unwrap_or_default()
        ));
    }
    write_atomic(&dir.root.join("metrics.csv"), csv.as_bytes())?;
    Ok(all)
}
