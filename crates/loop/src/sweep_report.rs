//! The paper's table across a sweep's runs: rows (architecture, setting, alpha, entity), each entity's
//! own task and the others' tasks, init (generation 0) → final, and the between-entity similarity,
//! as mean ± standard deviation over seeds; plus cross-task CE and similarity against alpha.

use std::collections::BTreeMap;
use std::path::Path;

use crossfeed_figure::{write_svg_png, Figure};
use plotters::prelude::*;

use crate::error::Result;
use crate::metrics::{headline_accuracy, read_jsonl, MetricLine, CONSENSUS_METRICS};
use crate::rundir::write_atomic;
use crate::sweep::{Sweep, SweepPoint};

/// Eval set names as the runner names them: private tasks in entity order (a repeated name gets
/// `#index`; custom tasks are named by `custom.name`), then `public`.
pub fn set_names(cfg: &crate::ExperimentConfig) -> Vec<String> {
    let private = &cfg.private[..cfg.k.min(cfg.private.len())];
    let mut names: Vec<String> = private
        .iter()
        .enumerate()
        .map(|(i, t)| if private[..i].iter().any(|p| p.name() == t.name()) { format!("{}#{i}", t.name()) } else { t.name() })
        .collect();
    names.push("public".into());
    names
}

/// Per-run numbers: own/other CE at init and final per entity, similarity at init and final.
#[derive(Debug, Default, Clone)]
struct RunNumbers {
    /// Per entity: (own init, own final, others init, others final).
    ce: Vec<[f64; 4]>,
    /// The same for task accuracy (each task's headline metric: `exact_match` or `acc`); NaN where
    /// the run measured none.
    acc: Vec<[f64; 4]>,
    /// (cosine init, cosine final, distinct-2 init, distinct-2 final), means over eval sets.
    sim: [f64; 4],
    /// Per entity: (self-BLEU, Vendi, perplexity under the base, type-token ratio) at init and final,
    /// means over eval sets, in that order; NaN where not measured.
    collapse: Vec<[f64; 8]>,
    /// [`CONSENSUS_METRICS`] at init and final, means over entity pairs and private tasks:
    /// [both wrong init, final, chance init, final, same wrong init, final, chance init, final].
    shared: [f64; 8],
    finished: i64,
}

fn mean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn sd(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = mean(&v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn numbers(point: &SweepPoint, lines: &[MetricLine]) -> RunNumbers {
    let names = set_names(&point.cfg);
    let k = point.cfg.k;
    let last = lines.iter().map(|l| l.generation).max().unwrap_or(-1);
    let ce = |g: i64, e: usize, s: &str| {
        lines.iter().find(|l| l.metric == "ce" && l.generation == g && l.entity == Some(e) && l.eval_set == s).map_or(f64::NAN, |l| l.value)
    };
    let acc = |g: i64, e: usize, s: &str| {
        headline_accuracy(lines, s)
            .and_then(|m| lines.iter().find(|l| l.metric == m && l.generation == g && l.entity == Some(e) && l.eval_set == s))
            .map_or(f64::NAN, |l| l.value)
    };
    let pooled = |g: i64, m: &str| mean(&lines.iter().filter(|l| l.metric == m && l.generation == g && l.entity.is_none()).map(|l| l.value).collect::<Vec<_>>());
    // Per entity: `value` on its own task and the mean over the others' tasks, at generation 0 and last.
    let own_and_others = |value: &dyn Fn(i64, usize, &str) -> f64| -> Vec<[f64; 4]> {
        (0..k)
            .map(|e| {
                let own = &names[e];
                let others: Vec<&String> = names[..k].iter().filter(|s| *s != own).collect();
                let o = |g| mean(&others.iter().map(|s| value(g, e, s)).collect::<Vec<_>>());
                [value(0, e, own), value(last, e, own), o(0), o(last)]
            })
            .collect()
    };
    let per_entity = |g: i64, e: usize, m: &str| {
        mean(&lines.iter().filter(|l| l.metric == m && l.generation == g && l.entity == Some(e) && l.peer.is_none()).map(|l| l.value).collect::<Vec<_>>())
    };
    let collapse = (0..k)
        .map(|e| ["self_bleu", "vendi", "perplexity", "ttr"].map(|m| [per_entity(0, e, m), per_entity(last, e, m)]).as_flattened().try_into().expect("8 numbers"))
        .collect();
    let pairs = |g: i64, m: &str| mean(&lines.iter().filter(|l| l.metric == m && l.generation == g && l.peer.is_some()).map(|l| l.value).collect::<Vec<_>>());
    let shared = CONSENSUS_METRICS.map(|m| [pairs(0, m), pairs(last, m)]).as_flattened().try_into().expect("8 numbers");
    RunNumbers {
        ce: own_and_others(&ce),
        acc: own_and_others(&acc),
        sim: [pooled(0, "cosine"), pooled(last, "cosine"), pooled(0, "distinct_2"), pooled(last, "distinct_2")],
        collapse,
        shared,
        finished: last + 1,
    }
}

/// Shared errors between entities (means over pairs and private tasks), init → final, each next to
/// its value under independent errors. Nothing when no run measured them.
fn shared_errors_table(md: &mut String, rows: &[(&(String, String, String), &Vec<(f64, RunNumbers)>)]) {
    if !rows.iter().any(|(_, runs)| runs.iter().any(|r| r.1.shared[1].is_finite())) {
        return;
    }
    md.push_str("\nShared errors between entities on the private tasks (fraction of accuracy documents, mean over entity pairs and tasks), init → final; \
        \"by chance\": the same if the two erred independently (same wrong option: and picked wrong options uniformly).\n\n");
    md.push_str("| model | setting | alpha | both wrong | by chance | same wrong option | by chance |\n|---|---|---|---|---|---|---|\n");
    for ((model, setting, alpha), runs) in rows {
        let col = |i: usize| runs.iter().map(|r| r.1.shared[i]).collect::<Vec<f64>>();
        md.push_str(&format!(
            "| {model} | {} | {alpha} | {} | {} | {} | {} |\n",
            if setting.is_empty() { "–" } else { setting },
            arrow(&col(0), &col(1)),
            arrow(&col(2), &col(3)),
            arrow(&col(4), &col(5)),
            arrow(&col(6), &col(7))
        ));
    }
}

fn ms(v: &[f64]) -> String {
    let (m, s) = (mean(v), sd(v));
    if m.is_nan() {
        "–".into()
    } else if s.is_nan() {
        format!("{m:.3}")
    } else {
        format!("{m:.3} ± {s:.3}")
    }
}

fn arrow(init: &[f64], fin: &[f64]) -> String {
    format!("{} → {}", ms(init), ms(fin))
}

/// A row group: (architecture, setting, alpha as text) → the runs (one per seed).
type Groups = BTreeMap<(String, String, String), Vec<(f64, RunNumbers)>>;

/// Writes `<sweep_dir>/report.md`, `cross_ce.{svg,png}`, `similarity.{svg,png}` and (when measured)
/// `self_bleu.{svg,png}`; returns the markdown.
pub fn write_sweep_report(sweep: &Sweep, sweep_dir: &Path) -> Result<String> {
    let mut groups: Groups = BTreeMap::new();
    let mut missing = Vec::new();
    for p in &sweep.points {
        let path = sweep_dir.join(&p.name).join("metrics.jsonl");
        if !path.exists() {
            missing.push(p.name.clone());
            continue;
        }
        let lines = read_jsonl(&path)?;
        let alpha = p.cfg.alpha;
        groups.entry((p.model.clone(), p.setting(), format!("{alpha}"))).or_default().push((alpha, numbers(p, &lines)));
    }
    let mut md = format!("# Sweep {}\n\n", sweep.name);
    md.push_str(&format!("{} runs from `{}`; every number is the mean ± standard deviation over the seeds of a row.\n\n", sweep.points.len(), sweep.path.display()));
    md.push_str("Token-level CE (lower is better), init (generation 0) → final generation; task accuracy (lm-evaluation-harness's `exact_match` for generated answers, else `acc`; higher is better), the same way; similarity between entities' completions of the same prompts (cosine of sentence embeddings; distinct-2 of the pooled completions); collapse of each entity's completions (self-BLEU as sacrebleu computes it, 0–100, higher = more repetitive; Vendi score of their sentence embeddings; perplexity under the base model; type-token ratio within a completion), means over the eval sets.\n\n");
    md.push_str("| model | setting | alpha | entity | own task | other's task(s) | own accuracy | other's accuracy | cosine | distinct-2 | self-BLEU | Vendi | perplexity | TTR | seeds | generations |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut rows: Vec<_> = groups.iter().collect();
    rows.sort_by(|a, b| (&a.0 .0, &a.0 .1).cmp(&(&b.0 .0, &b.0 .1)).then(a.1[0].0.total_cmp(&b.1[0].0)));
    for ((model, setting, alpha), runs) in &rows {
        let k = runs.iter().map(|r| r.1.ce.len()).max().unwrap_or(0);
        let col = |f: &dyn Fn(&RunNumbers) -> f64| runs.iter().map(|r| f(&r.1)).collect::<Vec<f64>>();
        let gens: Vec<String> = runs.iter().map(|r| r.1.finished.to_string()).collect();
        for e in 0..k {
            let c = |i: usize| col(&|n: &RunNumbers| n.ce.get(e).map_or(f64::NAN, |x| x[i]));
            let a = |i: usize| col(&|n: &RunNumbers| n.acc.get(e).map_or(f64::NAN, |x| x[i]));
            let (cos, dist) = if e == 0 {
                (arrow(&col(&|n| n.sim[0]), &col(&|n| n.sim[1])), arrow(&col(&|n| n.sim[2]), &col(&|n| n.sim[3])))
            } else {
                (String::new(), String::new())
            };
            let cl = |i: usize| col(&|n: &RunNumbers| n.collapse.get(e).map_or(f64::NAN, |x| x[i]));
            md.push_str(&format!(
                "| {model} | {} | {alpha} | M{} | {} | {} | {} | {} | {cos} | {dist} | {} | {} | {} | {} | {} | {} |\n",
                if setting.is_empty() { "–" } else { setting },
                e + 1,
                arrow(&c(0), &c(1)),
                arrow(&c(2), &c(3)),
                arrow(&a(0), &a(1)),
                arrow(&a(2), &a(3)),
                arrow(&cl(0), &cl(1)),
                arrow(&cl(2), &cl(3)),
                arrow(&cl(4), &cl(5)),
                arrow(&cl(6), &cl(7)),
                runs.len(),
                gens.join(",")
            ));
        }
    }
    shared_errors_table(&mut md, &rows);
    if !missing.is_empty() {
        md.push_str(&format!("\nNot finished (no metrics.jsonl yet): {}\n", missing.join(", ")));
    }
    // Lines against alpha: one per (model, setting), means over entities and seeds.
    let mut cross: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sim: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut bleu: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let has_cosine = groups.values().flatten().any(|r| r.1.sim[1].is_finite());
    for ((model, setting, _), runs) in &groups {
        let label = if setting.is_empty() { model.clone() } else { format!("{model} {setting}") };
        let alpha = runs[0].0;
        let other = mean(&runs.iter().flat_map(|r| r.1.ce.iter().map(|x| x[3])).collect::<Vec<_>>());
        let s = mean(&runs.iter().map(|r| if has_cosine { r.1.sim[1] } else { r.1.sim[3] }).collect::<Vec<_>>());
        cross.entry(label.clone()).or_default().push((alpha, other));
        sim.entry(label.clone()).or_default().push((alpha, s));
        let b = mean(&runs.iter().flat_map(|r| r.1.collapse.iter().map(|x| x[1])).collect::<Vec<_>>());
        if b.is_finite() {
            bleu.entry(label).or_default().push((alpha, b));
        }
    }
    let sim_label = if has_cosine { "final cosine similarity" } else { "final distinct-2 (no embedder: eval.embed_model empty)" };
    for (file, title, y, series) in [("cross_ce", "CE on the other entities' tasks, final generation", "token CE", &cross), ("similarity", "Similarity between entities, final generation", sim_label, &sim)] {
        plot(&sweep_dir.join(file), title, y, series)?;
    }
    if !bleu.is_empty() {
        plot(&sweep_dir.join("self_bleu"), "Self-BLEU within each entity, final generation", "self-BLEU (0-100)", &bleu)?;
    }
    md.push_str("\nFigures: `cross_ce.svg`/`.png` (final CE on the other entities' tasks against alpha), `similarity.svg`/`.png` (final similarity against alpha)");
    md.push_str(if bleu.is_empty() { ".\n" } else { ", `self_bleu.svg`/`.png` (final self-BLEU, mean over entities, against alpha).\n" });
    write_atomic(&sweep_dir.join("report.md"), md.as_bytes())?;
    Ok(md)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, title: &str, y_desc: &str, series: &BTreeMap<String, Vec<(f64, f64)>>) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
    let pts: Vec<(f64, f64)> = series.values().flatten().copied().filter(|p| p.1.is_finite()).collect();
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = if y0 > y1 { (0.0, 1.0) } else { (y0, y1) };
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.05f64..1.05f64, y0 - pad..y1 + pad)
        .map_err(|e| format!("{e:?}"))?;
    chart.configure_mesh().x_desc("alpha (share of synthetic data)").y_desc(y_desc).draw().map_err(|e| format!("{e:?}"))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| format!("{e:?}"))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| format!("{e:?}"))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| format!("{e:?}"))?;
    root.present().map_err(|e| format!("{e:?}"))
}

struct AlphaFigure<'a> {
    title: &'a str,
    y_desc: &'a str,
    series: &'a BTreeMap<String, Vec<(f64, f64)>>,
}

impl Figure for AlphaFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self.title, self.y_desc, self.series)
    }
}

/// `stem.svg` and `stem.png`.
fn plot(stem: &Path, title: &str, y_desc: &str, series: &BTreeMap<String, Vec<(f64, f64)>>) -> Result<()> {
    write_svg_png(stem, (800, 500), &AlphaFigure { title, y_desc, series })?;
    Ok(())
}
