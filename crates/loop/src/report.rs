//! The report: CE of each entity on its own task and on the others' tasks, init (generation 0)
//! → final, as in the paper's tables; and similarity/diversity by generation.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::metrics::{headline_accuracy, read_jsonl, MetricLine, ACCURACY_METRICS, COLLAPSE_METRICS};
use crate::rundir::{write_atomic, RunDir};
use crate::ExperimentConfig;

/// The rendered report.
pub struct Report {
    pub markdown: String,
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

/// Builds `report.md` from `metrics.jsonl`; `set_names` are the eval sets (private tasks in entity
/// order, then `public`).
pub fn write_report(dir: &RunDir, cfg: &ExperimentConfig, set_names: &[String]) -> Result<Report> {
    let lines: Vec<MetricLine> = read_jsonl(&dir.root.join("metrics.jsonl"))?;
    let mut ce: BTreeMap<(i64, Option<usize>, String), f64> = BTreeMap::new();
    let mut other: BTreeMap<(i64, String, String), f64> = BTreeMap::new();
    let mut gens: Vec<i64> = Vec::new();
    for l in &lines {
        if l.metric == "ce" {
            ce.insert((l.generation, l.entity, l.eval_set.clone()), l.value);
        } else if l.entity.is_none() || l.generation < 0 {
            other.insert((l.generation, l.metric.clone(), l.eval_set.clone()), l.value);
        }
        if !gens.contains(&l.generation) {
            gens.push(l.generation);
        }
    }
    let last = gens.iter().copied().filter(|&g| g >= 0).max();
    let mut md = format!("# {}\n\n", cfg.name);
    md.push_str(&format!(
        "K = {}, alpha = {}, beta = {}, n = {}, generations = {} (finished: {}), base = `{}`\n\n",
        cfg.k,
        cfg.alpha,
        cfg.beta,
        cfg.n,
        cfg.generations,
        last.map(|l| (l + 1).to_string()).unwrap_or_else(|| "0".into()),
        cfg.base_model
    ));
    md.push_str("## Token-level CE, init (generation 0) → final\n\n");
    let get = |g: Option<i64>, e: usize, s: &str| g.and_then(|g| ce.get(&(g, Some(e), s.to_string())).copied());
    let mut header = String::from("| Model | Own task |");
    let mut sep = String::from("|---|---|");
    for s in set_names {
        header.push_str(&format!(" {s} |"));
        sep.push_str("---|");
    }
    md.push_str(&header);
    md.push('\n');
    md.push_str(&sep);
    md.push('\n');
    for e in 0..cfg.k {
        let own = &set_names[e];
        md.push_str(&format!("| M{} | {} {} → {} |", e + 1, own, fmt(get(Some(0), e, own)), fmt(get(last, e, own))));
        for s in set_names {
            let mark = if s == own { " (own)" } else { "" };
            md.push_str(&format!(" {} → {}{mark} |", fmt(get(Some(0), e, s)), fmt(get(last, e, s))));
        }
        md.push('\n');
    }
    if ce.keys().any(|k| k.0 == -1) {
        md.push_str("| base | – |");
        for s in set_names {
            md.push_str(&format!(" {} |", fmt(ce.get(&(-1, None, s.clone())).copied())));
        }
        md.push('\n');
    }
    md.push_str("\n## CE by generation\n\n| generation | entity |");
    for s in set_names {
        md.push_str(&format!(" {s} |"));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(set_names.len()));
    md.push('\n');
    for &g in &gens {
        let ents: Vec<Option<usize>> = if g < 0 { vec![None] } else { (0..cfg.k).map(Some).collect() };
        for e in ents {
            md.push_str(&format!("| {} | {} |", if g < 0 { "base".to_string() } else { g.to_string() }, e.map(|x| format!("M{}", x + 1)).unwrap_or("–".into())));
            for s in set_names {
                md.push_str(&format!(" {} |", fmt(ce.get(&(g, e, s.clone())).copied())));
            }
            md.push('\n');
        }
    }
    accuracy_tables(&mut md, &lines, &gens, cfg.k, &set_names[..cfg.k.min(set_names.len())]);
    md.push_str("\n## Homogenization by generation (all entities' completions of the same prompts)\n\n");
    let metrics: Vec<&str> = ["cosine", "distinct_1", "distinct_2"].into_iter().filter(|m| other.keys().any(|k| k.1 == *m)).collect();
    md.push_str("| generation |");
    for s in set_names {
        for m in &metrics {
            md.push_str(&format!(" {s} {m} |"));
        }
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(set_names.len() * metrics.len()));
    md.push('\n');
    for &g in &gens {
        md.push_str(&format!("| {} |", if g < 0 { "base".to_string() } else { g.to_string() }));
        for s in set_names {
            for m in &metrics {
                md.push_str(&format!(" {} |", fmt(other.get(&(g, m.to_string(), s.clone())).copied())));
            }
        }
        md.push('\n');
    }
    if !metrics.contains(&"cosine") {
        md.push_str("\n(cosine similarity not computed: `eval.embed_model` is empty)\n");
    }
    collapse_tables(&mut md, &lines, &gens, cfg.k, set_names);
    let accuracy = crate::plot::write_plots(&dir.root, &lines, cfg.k, set_names)?;
    md.push_str("\nFigures: `ce.svg`/`ce.png` (CE of every entity on every eval set against generation), `similarity.svg`/`similarity.png`, `collapse.svg`/`collapse.png` (self-BLEU, Vendi, perplexity of every entity against generation, with the real data's)");
    md.push_str(if accuracy { ", `accuracy.svg`/`accuracy.png` (each task's accuracy against generation).\n" } else { ".\n" });
    write_atomic(&dir.root.join("report.md"), md.as_bytes())?;
    Ok(Report { markdown: md })
}

/// A markdown table's header and rule: the leading columns, then one "task metric" column each.
fn task_metric_header(md: &mut String, lead: &[&str], cols: &[(&String, &str)]) {
    md.push('|');
    for l in lead {
        md.push_str(&format!(" {l} |"));
    }
    for (s, m) in cols {
        md.push_str(&format!(" {s} {m} |"));
    }
    md.push('\n');
    md.push('|');
    md.push_str(&"---|".repeat(lead.len() + cols.len()));
    md.push('\n');
}

/// Task accuracy (lm-evaluation-harness's metrics) of every entity on every private task: the
/// headline metric init → final, then every accuracy metric by generation. Nothing when the run
/// measured none (`eval.accuracy = false`, or no task with an accuracy form).
fn accuracy_tables(md: &mut String, lines: &[MetricLine], gens: &[i64], k: usize, tasks: &[String]) {
    let acc: BTreeMap<(i64, Option<usize>, String, String), f64> = lines
        .iter()
        .filter(|l| ACCURACY_METRICS.contains(&l.metric.as_str()))
        .map(|l| ((l.generation, l.entity, l.eval_set.clone(), l.metric.clone()), l.value))
        .collect();
    let heads: Vec<(&String, &str)> = tasks.iter().filter_map(|s| headline_accuracy(lines, s).map(|m| (s, m))).collect();
    if heads.is_empty() {
        return;
    }
    let last = gens.iter().copied().filter(|&g| g >= 0).max();
    let get = |g: Option<i64>, e: Option<usize>, s: &str, m: &str| g.and_then(|g| acc.get(&(g, e, s.to_string(), m.to_string())).copied());
    md.push_str("\n## Task accuracy, init (generation 0) → final\n\n");
    task_metric_header(md, &["Model"], &heads);
    for e in 0..k {
        md.push_str(&format!("| M{} |", e + 1));
        for (i, (s, m)) in heads.iter().enumerate() {
            let mark = if i == e { " (own)" } else { "" };
            md.push_str(&format!(" {} → {}{mark} |", fmt(get(Some(0), Some(e), s, m)), fmt(get(last, Some(e), s, m))));
        }
        md.push('\n');
    }
    if acc.keys().any(|key| key.0 == -1) {
        md.push_str("| base |");
        for (s, m) in &heads {
            md.push_str(&format!(" {} |", fmt(get(Some(-1), None, s, m))));
        }
        md.push('\n');
    }
    let present = |s: &String, m: &str| acc.keys().any(|key| &key.2 == s && key.3 == m);
    let cols: Vec<(&String, &str)> = tasks.iter().flat_map(|s| ACCURACY_METRICS.iter().filter(|m| present(s, m)).map(move |m| (s, *m))).collect();
    md.push_str("\n## Task accuracy by generation\n\n");
    task_metric_header(md, &["generation", "entity"], &cols);
    for &g in gens {
        let ents: Vec<Option<usize>> = if g < 0 { vec![None] } else { (0..k).map(Some).collect() };
        for e in ents {
            md.push_str(&format!("| {} | {} |", if g < 0 { "base".to_string() } else { g.to_string() }, e.map(|x| format!("M{}", x + 1)).unwrap_or("–".into())));
            for (s, m) in &cols {
                md.push_str(&format!(" {} |", fmt(get(Some(g), e, s, m))));
            }
            md.push('\n');
        }
    }
}

/// The collapse metrics of every entity's completions (rows: the real data, the base model, then each
/// generation and entity; one column per eval set and metric measured), and the shared errors of each
/// pair of entities on each private task against chance. Nothing for a run that measured none.
fn collapse_tables(md: &mut String, lines: &[MetricLine], gens: &[i64], k: usize, set_names: &[String]) {
    let get = |g: i64, e: Option<usize>, peer: Option<usize>, s: &str, m: &str| {
        lines.iter().find(|l| l.generation == g && l.entity == e && l.peer == peer && l.eval_set == s && l.metric == m).map(|l| l.value)
    };
    let present = |m: &str| lines.iter().any(|l| l.metric == m || l.metric.strip_prefix("data_") == Some(m));
    let metrics: Vec<&str> = COLLAPSE_METRICS.into_iter().filter(|m| present(m)).collect();
    if !metrics.is_empty() {
        md.push_str("\n## Collapse metrics by generation (each entity's completions of the eval prompts)\n\n");
        md.push_str("self_bleu: sacrebleu's BLEU of each completion against the entity's others (0–100, higher = more repetitive); vendi: effective number of distinct completions (sentence embeddings); ttr: type-token ratio within a completion; perplexity: under the base model. Row `data`: the eval sets' real continuations of the same prompts.\n\n");
        let cols: Vec<(&String, &str)> = set_names.iter().flat_map(|s| metrics.iter().map(move |m| (s, *m))).collect();
        task_metric_header(md, &["generation", "entity"], &cols);
        let mut row = |label: &str, ent: &str, value: &dyn Fn(&str, &str) -> Option<f64>| {
            md.push_str(&format!("| {label} | {ent} |"));
            for (s, m) in &cols {
                md.push_str(&format!(" {} |", fmt(value(s, m))));
            }
            md.push('\n');
        };
        if lines.iter().any(|l| l.metric.starts_with("data_")) {
            row("data", "–", &|s, m| get(-1, None, None, s, &format!("data_{m}")));
        }
        for &g in gens {
            let ents: Vec<Option<usize>> = if g < 0 { vec![None] } else { (0..k).map(Some).collect() };
            for e in ents {
                let label = if g < 0 { "base".to_string() } else { g.to_string() };
                row(&label, &e.map(|x| format!("M{}", x + 1)).unwrap_or("–".into()), &|s, m| get(g, e, None, s, m));
            }
        }
    }
    let tasks: Vec<&String> = set_names.iter().filter(|s| lines.iter().any(|l| l.metric == "both_wrong" && &l.eval_set == *s)).collect();
    if tasks.is_empty() {
        return;
    }
    md.push_str("\n## Shared errors (fraction of a task's accuracy documents; in brackets: if the two erred independently)\n\n");
    let cols: Vec<(&String, &str)> = tasks.iter().flat_map(|s| [(*s, "both wrong"), (*s, "same wrong option")]).collect();
    task_metric_header(md, &["generation", "pair"], &cols);
    for &g in gens.iter().filter(|&&g| g >= 0) {
        for i in 0..k {
            for j in i + 1..k {
                md.push_str(&format!("| {g} | M{}–M{} |", i + 1, j + 1));
                for t in &tasks {
                    for m in ["both_wrong", "same_wrong"] {
                        let v = get(g, Some(i), Some(j), t, m);
                        let c = get(g, Some(i), Some(j), t, &format!("{m}_chance"));
                        md.push_str(&match v {
                            Some(v) => format!(" {} ({}) |", fmt(Some(v)), fmt(c)),
                            None => " – |".to_string(),
                        });
                    }
                }
                md.push('\n');
            }
        }
    }
}
