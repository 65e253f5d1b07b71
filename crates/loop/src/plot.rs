//! Figures for the report: CE of every entity on every eval set against generation (one panel per
//! eval set), and the homogenization metrics against generation. `crossfeed-figure` writes each as
//! SVG and PNG.

use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;

use crossfeed_figure::{write_svg_png, Figure};

use crate::error::Result;
use crate::metrics::{headline_accuracy, MetricLine};

/// One line of a panel: a label and (generation, value) points.
type Series = (String, Vec<(f64, f64)>);

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, y_desc: &str, series: &[Series]) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(GenerationAxis { lo: x0 - 0.2, hi: x1 + 0.2, ticks: generation_ticks(x0, x1) }, y0 - pad..y1 + pad)
        .map_err(|e| format!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("generation")
        .x_label_formatter(&|x| generation_label(*x))
        .y_desc(y_desc)
        .draw()
        .map_err(|e| format!("{e:?}"))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| format!("{e:?}"))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| format!("{e:?}"))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// The x axis: linear in the generation, ticks only where [`generation_ticks`] puts them (plotters'
/// own f64 axis picks "nice" steps such as 0.5, and its key-point override loses the label formatter).
struct GenerationAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for GenerationAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = if self.hi > self.lo { (v - self.lo) / (self.hi - self.lo) } else { 0.5 };
        limit.0 + (frac * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold ticks only: no light grid lines between generations.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Tick positions on whole generations only (plotters' automatic ticks on an f64 axis fall on
/// halves), thinned to about a dozen; the base (-1) is always one of them.
fn generation_ticks(x0: f64, x1: f64) -> Vec<f64> {
    let (first, last) = (x0.ceil() as i64, x1.floor() as i64);
    let step = ((last - first) / 12 + 1).max(1);
    let mut ticks: Vec<f64> = (first..=last).filter(|g| *g < 0 || (g - first.max(0)) % step == 0).map(|g| g as f64).collect();
    if ticks.is_empty() {
        ticks.push(first as f64);
    }
    ticks
}

/// `metrics.jsonl` puts the base model at generation -1: label it by name.
fn generation_label(x: f64) -> String {
    if x < 0.0 {
        "base".to_string()
    } else {
        format!("{}", x.round() as i64)
    }
}

fn grid<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &[(String, String, Vec<Series>)]) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, (title, y, series)) in areas.iter().zip(panels) {
        panel(area, title, y, series)?;
    }
    root.present().map_err(|e| format!("{e:?}"))
}

struct Grid<'a>(&'a [(String, String, Vec<Series>)]);

impl Figure for Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        grid(root, self.0)
    }
}

fn draw(dir: &Path, stem: &str, panels: &[(String, String, Vec<Series>)]) -> Result<()> {
    let w = 420 * panels.len().max(1) as u32;
    write_svg_png(&dir.join(stem), (w, 360), &Grid(panels))?;
    Ok(())
}

/// Writes `ce.{svg,png}`, `similarity.{svg,png}`, `collapse.{svg,png}` (when measured) and, where the
/// run measured task accuracy, `accuracy.{svg,png}` into the run directory; returns whether it wrote the accuracy figure.
pub fn write_plots(dir: &Path, lines: &[MetricLine], k: usize, set_names: &[String]) -> Result<bool> {
    let ce_panels: Vec<(String, String, Vec<Series>)> = set_names
        .iter()
        .map(|set| {
            let mut series: Vec<Series> = (0..k)
                .map(|e| {
                    let mut pts: Vec<(f64, f64)> = lines
                        .iter()
                        .filter(|l| l.metric == "ce" && &l.eval_set == set && (l.entity == Some(e) || (l.generation < 0 && l.entity.is_none())))
                        .map(|l| (l.generation as f64, l.value))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (format!("M{}", e + 1), pts)
                })
                .collect();
            series.retain(|s| !s.1.is_empty());
            (format!("CE on {set}"), "token CE (nats)".to_string(), series)
        })
        .collect();
    draw(dir, "ce", &ce_panels)?;
    let acc_panels: Vec<(String, String, Vec<Series>)> = set_names
        .iter()
        .filter_map(|set| {
            let m = headline_accuracy(lines, set)?;
            let series: Vec<Series> = (0..k)
                .map(|e| {
                    let mut pts: Vec<(f64, f64)> = lines
                        .iter()
                        .filter(|l| l.metric == m && &l.eval_set == set && (l.entity == Some(e) || (l.generation < 0 && l.entity.is_none())))
                        .map(|l| (l.generation as f64, l.value))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (format!("M{}", e + 1), pts)
                })
                .filter(|s| !s.1.is_empty())
                .collect();
            Some((format!("{m} on {set}"), m.to_string(), series))
        })
        .collect();
    if !acc_panels.is_empty() {
        draw(dir, "accuracy", &acc_panels)?;
    }
    let metrics: Vec<&str> = ["cosine", "distinct_2"].into_iter().filter(|m| lines.iter().any(|l| l.metric == *m)).collect();
    let sim_panels: Vec<(String, String, Vec<Series>)> = metrics
        .iter()
        .map(|m| {
            let series: Vec<Series> = set_names
                .iter()
                .map(|set| {
                    let mut pts: Vec<(f64, f64)> = lines
                        .iter()
                        .filter(|l| l.metric == *m && &l.eval_set == set && l.entity.is_none())
                        .map(|l| (l.generation as f64, l.value))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (set.clone(), pts)
                })
                .filter(|s| !s.1.is_empty())
                .collect();
            let title = if *m == "cosine" { "mean pairwise cosine between entities" } else { "distinct-2 of all entities' outputs" };
            (title.to_string(), m.to_string(), series)
        })
        .collect();
    draw(dir, "similarity", &sim_panels)?;
    let collapse = collapse_panels(lines, k);
    if !collapse.is_empty() {
        draw(dir, "collapse", &collapse)?;
    }
    Ok(!acc_panels.is_empty())
}

/// One panel per collapse metric measured (self-BLEU, Vendi, perplexity): each entity's value, the
/// mean over eval sets, against generation (starting from the base model's), and the real data's as
/// a flat line across the generations.
fn collapse_panels(lines: &[MetricLine], k: usize) -> Vec<(String, String, Vec<Series>)> {
    let mean_at = |g: i64, e: Option<usize>, m: &str| {
        let v: Vec<f64> = lines.iter().filter(|l| l.generation == g && l.entity == e && l.peer.is_none() && l.metric == m).map(|l| l.value).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut gens: Vec<i64> = lines.iter().map(|l| l.generation).collect();
    gens.sort_unstable();
    gens.dedup();
    [("self_bleu", "self-BLEU within each entity", "BLEU (0-100)"), ("vendi", "Vendi score (sentence embeddings)", "effective samples"), ("perplexity", "perplexity under the base model", "perplexity")]
        .into_iter()
        .filter(|(m, _, _)| lines.iter().any(|l| l.metric == *m))
        .map(|(m, title, y)| {
            let mut series: Vec<Series> = (0..k)
                .map(|e| {
                    let pts = gens.iter().filter_map(|&g| mean_at(g, if g < 0 { None } else { Some(e) }, m).map(|v| (g as f64, v))).collect();
                    (format!("M{}", e + 1), pts)
                })
                .collect();
            if let (Some(v), Some(lo), Some(hi)) = (mean_at(-1, None, &format!("data_{m}")), gens.first(), gens.last()) {
                series.push(("real data".to_string(), vec![(*lo as f64, v), (*hi as f64, v)]));
            }
            series.retain(|s| !s.1.is_empty());
            (title.to_string(), y.to_string(), series)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_whole_generations_with_the_base_named() {
        assert_eq!(generation_ticks(-1.0, 3.0), vec![-1.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(generation_ticks(0.0, 0.0), vec![0.0]);
        let long = generation_ticks(-1.0, 49.0);
        assert!(long.len() <= 14 && long[0] == -1.0 && long.iter().all(|x| x.fract() == 0.0), "{long:?}");
        assert_eq!(generation_label(-1.0), "base");
        assert_eq!(generation_label(2.0), "2");
    }

    #[test]
    fn svg_axis_reads_base_and_integers() {
        let dir = tempfile::tempdir().unwrap();
        let line = |generation, entity, value| MetricLine { generation, entity, peer: None, eval_set: "sciq".into(), metric: "ce".into(), value, tokens: None, examples: None };
        let lines = vec![line(-1, None, 3.0), line(0, Some(0), 2.5), line(1, Some(0), 2.2), line(2, Some(0), 2.1)];
        write_plots(dir.path(), &lines, 1, &["sciq".to_string()]).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("ce.svg")).unwrap();
        // The SVG backend writes each label on the line after its <text> tag.
        let labels: Vec<&str> = svg.lines().zip(svg.lines().skip(1)).filter(|(tag, _)| tag.starts_with("<text")).map(|(_, l)| l.trim()).collect();
        assert!(labels.windows(4).any(|w| w == ["base", "0", "1", "2"]), "{labels:?}");
        assert!(!labels.iter().any(|l| ["-0.5", "0.5", "1.5", "-1"].contains(l)), "{labels:?}");
    }
}
