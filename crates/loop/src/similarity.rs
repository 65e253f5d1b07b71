//! The collapse lines of a similarity stage: from every entity's completions of the shared eval
//! prompts and its per-document accuracy decisions to `self_bleu`, `vendi`, `ttr`, `perplexity` and
//! the error-consensus lines (the metrics are `crate::collapse`'s). Given its inputs it is pure: the
//! stage (stages.rs) reads the files, and the embedder and the base model come in as closures, so
//! the lines are rebuilt byte for byte from stage files like every other metric.
//!
//! At generation -1 the same metrics are also measured on the real data — the eval sets' own
//! continuations of the same prompts — as `data_<metric>` lines: the baseline that collapse drifts from.

use std::collections::BTreeMap;

use crate::collapse::{distinct_n, error_consensus, perplexity, self_bleu, type_token_ratio, vendi_score, Decision};
use crate::config::EvalConfig;
use crate::error::{LoopError, Result};
use crate::eval::TextEmbedder;
use crate::metrics::MetricLine;

/// A (prompt, completion) pair: what an entity wrote, or the real continuation.
pub type Pair = (String, String);

/// What one similarity stage measures the collapse metrics on.
pub struct CollapseInput<'a> {
    pub generation: i64,
    /// The entities whose outputs are measured (`None`: the base model).
    pub entities: &'a [Option<usize>],
    /// Per eval set: its name and each entity's (prompt, completion) pairs, in `entities` order.
    pub sets: Vec<(String, Vec<Vec<Pair>>)>,
    /// Generation -1 only: per eval set, the real (prompt, continuation) pairs of the same prompts.
    pub real: Vec<(String, Vec<Pair>)>,
    /// Per entity (in `entities` order): its accuracy decisions by task name, in document order.
    pub decisions: Vec<BTreeMap<String, Vec<Decision>>>,
}

/// Scores (prompt, completion) pairs under the base model: the token-mean NLL of the completions and
/// the number of tokens scored.
pub type Scorer<'s> = dyn FnMut(&[Pair]) -> Result<(f64, u64)> + 's;

fn line(generation: i64, entity: Option<usize>, set: &str, metric: &str, value: f64) -> MetricLine {
    MetricLine { generation, entity, peer: None, eval_set: set.to_string(), metric: metric.to_string(), value, tokens: None, examples: None }
}

/// The text metrics of one set of completions: self-BLEU over the first `eval.self_bleu_samples`
/// (0 = all), type-token ratio, Vendi (with an embedder), perplexity under the base model (with a
/// scorer), each named `prefix + metric`. Undefined metrics give no line.
fn text_lines(
    out: &mut Vec<MetricLine>,
    (generation, entity, set, prefix): (i64, Option<usize>, &str, &str),
    pairs: &[Pair],
    cfg: &EvalConfig,
    embedder: Option<&dyn TextEmbedder>,
    scorer: &mut Option<&mut Scorer>,
) -> Result<()> {
    let texts: Vec<String> = pairs.iter().map(|p| p.1.clone()).collect();
    let n = if cfg.self_bleu_samples == 0 { texts.len() } else { cfg.self_bleu_samples.min(texts.len()) };
    let mut push = |metric: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push(line(generation, entity, set, &format!("{prefix}{metric}"), v));
        }
    };
    push("self_bleu", self_bleu(&texts[..n]));
    push("ttr", type_token_ratio(&texts));
    if let Some(emb) = embedder {
        push("vendi", vendi_score(&emb.embed(&texts).map_err(LoopError::Embed)?));
    }
    if let Some(score) = scorer.as_mut() {
        let (nll, tokens) = score(pairs)?;
        push("perplexity", perplexity(nll, tokens));
    }
    Ok(())
}

/// Every collapse line of one similarity stage, in a fixed order: the real-data baseline (generation
/// -1), then per eval set each entity's text metrics, then per private task and entity pair (i < j)
/// the error consensus (`both_wrong`, `both_wrong_chance`, and for multiple choice `same_wrong`,
/// `same_wrong_chance`; `entity` = i, `peer` = j).
pub fn collapse_lines(input: &CollapseInput, cfg: &EvalConfig, embedder: Option<&dyn TextEmbedder>, mut scorer: Option<&mut Scorer>) -> Result<Vec<MetricLine>> {
    let mut out = Vec::new();
    let g = input.generation;
    for (set, pairs) in &input.real {
        if pairs.is_empty() {
            continue;
        }
        let texts: Vec<String> = pairs.iter().map(|p| p.1.clone()).collect();
        out.push(line(g, None, set, "data_distinct_1", distinct_n(&texts, 1)));
        out.push(line(g, None, set, "data_distinct_2", distinct_n(&texts, 2)));
        text_lines(&mut out, (g, None, set, "data_"), pairs, cfg, embedder, &mut scorer)?;
    }
    for (set, per_entity) in &input.sets {
        for (e, pairs) in input.entities.iter().zip(per_entity) {
            if !pairs.is_empty() {
                text_lines(&mut out, (g, *e, set, ""), pairs, cfg, embedder, &mut scorer)?;
            }
        }
    }
    let tasks: Vec<&String> = input.decisions.first().map(|d| d.keys().collect()).unwrap_or_default();
    for task in tasks {
        for i in 0..input.decisions.len() {
            for j in i + 1..input.decisions.len() {
                let (Some(a), Some(b)) = (input.decisions[i].get(task), input.decisions[j].get(task)) else { continue };
                let Some(c) = error_consensus(a, b) else { continue };
                let (ei, ej) = (input.entities[i], input.entities[j]);
                let mut push = |metric: &str, v: Option<f64>| {
                    if let Some(v) = v {
                        out.push(MetricLine { peer: ej, ..line(g, ei, task, metric, v) });
                    }
                };
                push("both_wrong", Some(c.both_wrong));
                push("both_wrong_chance", Some(c.both_wrong_chance));
                push("same_wrong", c.same_wrong);
                push("same_wrong_chance", c.same_wrong_chance);
            }
        }
    }
    Ok(out)
}

/// An entity's accuracy decisions by task from its eval stage's `accuracy.jsonl` (one line per
/// document, in order): multiple choice picks the argmax of the log-likelihoods (the first on ties,
/// as lm-evaluation-harness's `acc`) and is right when `acc` is; a generated answer is right when
/// `exact_match` (the strict filter) is.
pub fn read_decisions(path: &std::path::Path) -> Result<BTreeMap<String, Vec<Decision>>> {
    let text = std::fs::read_to_string(path).map_err(|e| LoopError::io(path, e))?;
    let mut out: BTreeMap<String, Vec<Decision>> = BTreeMap::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: &str| LoopError::Json { path: path.to_path_buf(), message: format!("line {}: {m}", i + 1) };
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| bad(&e.to_string()))?;
        let set = v["eval_set"].as_str().ok_or_else(|| bad("no eval_set"))?.to_string();
        let d = if let Some(ll) = v["loglikelihoods"].as_array() {
            let ll: Vec<f64> = ll.iter().map(|x| x.as_f64().ok_or_else(|| bad("a log-likelihood is not a number"))).collect::<Result<_>>()?;
            let best = (0..ll.len()).fold(0, |b, k| if ll[k] > ll[b] { k } else { b });
            Decision { correct: v["acc"].as_bool().ok_or_else(|| bad("no acc"))?, choice: Some((best, ll.len())) }
        } else {
            Decision { correct: v["exact_match"].as_bool().ok_or_else(|| bad("no acc or exact_match"))?, choice: None }
        };
        out.entry(set).or_default().push(d);
    }
    Ok(out)
}
