//! The theory's figures: the relative-efficiency heatmap and curves against generation. This file
//! says what to draw; `crossfeed-figure` writes each as SVG and PNG.

use std::path::{Path, PathBuf};

use crossfeed_figure::{write_svg_png, Figure, FigureError};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::sweep::{Curve, Heatmap};
use crate::TheoryError;

fn perr<E: std::fmt::Debug>(e: E) -> TheoryError {
    TheoryError::Plot(format!("{e:?}"))
}

/// Viridis-like colour ramp for `v` in [0, 1].
fn ramp(v: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let x = v * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &Heatmap, title: &str) -> Result<(), TheoryError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(perr)?;
    let (w, _) = root.dim_in_pixel();
    let (main, bar) = root.split_horizontally(w.saturating_sub(110));
    let vmax = h.cells.iter().map(|c| c.metrics.mean_rel_eff()).filter(|v| v.is_finite()).fold(1e-12, f64::max);
    let half = 0.5 / (h.steps - 1) as f64;
    let mut chart = ChartBuilder::on(&main)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-half..1.0 + half, -half..1.0 + half)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("alpha (synthetic share of each update)")
        .y_desc("beta (private share of real data)")
        .x_labels(6)
        .y_labels(6)
        .draw()
        .map_err(perr)?;
    chart
        .draw_series(h.cells.iter().map(|c| {
            let (a, b) = (c.setting.alpha, c.setting.beta);
            Rectangle::new([(a - half, b - half), (a + half, b + half)], ramp(c.metrics.mean_rel_eff() / vmax).filled())
        }))
        .map_err(perr)?;
    let best = &h.cells[h.best].setting;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(best.alpha - half, best.beta - half), (best.alpha + half, best.beta + half)],
            ShapeStyle::from(&RED).stroke_width(3),
        )))
        .map_err(perr)?
        .label(format!("best: alpha={:.2}, beta={:.2}", best.alpha, best.beta))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], ShapeStyle::from(&RED).stroke_width(2)));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(perr)?;
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(40)
        .margin_bottom(55)
        .margin_right(10)
        .y_label_area_size(55)
        .caption("rel. eff.", ("sans-serif", 13))
        .build_cartesian_2d(0.0..1.0, 0.0..vmax)
        .map_err(perr)?;
    cb.configure_mesh().disable_mesh().disable_x_axis().y_labels(6).y_label_style(("sans-serif", 12)).y_label_formatter(&|v| format!("{v:.2}")).draw().map_err(perr)?;
    let n = 64;
    cb.draw_series((0..n).map(|i| {
        let lo = vmax * i as f64 / n as f64;
        let hi = vmax * (i + 1) as f64 / n as f64;
        Rectangle::new([(0.0, lo), (1.0, hi)], ramp(i as f64 / (n - 1) as f64).filled())
    }))
    .map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(())
}

type Extract = fn(&crate::dynamics::Metrics) -> f64;

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, curves: &[Curve], title: &str, ylab: &str, get: Extract) -> Result<(), TheoryError>
where
    DB::ErrorType: 'static,
{
    let t_max = curves.iter().map(|c| c.per_generation.len()).max().unwrap_or(1).saturating_sub(1).max(1);
    let vals = curves.iter().flat_map(|c| c.per_generation.iter().map(get)).filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo.max(hi * 1e-9) * 0.8, hi * 1.25) } else { (1e-3, 1.0) };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(0usize..t_max, (lo..hi).log_scale())
        .map_err(perr)?;
    chart.configure_mesh().x_desc("generation t").y_desc(ylab).y_label_formatter(&|v| format!("{v:.1e}")).draw().map_err(perr)?;
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(usize, f64)> = c.per_generation.iter().enumerate().map(|(t, m)| (t, get(m))).filter(|(_, v)| v.is_finite() && *v > 0.0).map(|(t, v)| (t, v.max(lo))).collect();
        chart
            .draw_series(LineSeries::new(pts, ShapeStyle::from(&color).stroke_width(2)))
            .map_err(perr)?
            .label(format!("alpha={:.2}", c.setting.alpha))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ShapeStyle::from(&color).stroke_width(2)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(perr)?;
    Ok(())
}

fn draw_curves<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &[Curve], beta: f64) -> Result<(), TheoryError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(perr)?;
    let panels = root.split_evenly((1, 3));
    draw_panel(&panels[0], curves, &format!("mean MSE vs theta* (beta={beta:.2})"), "E||theta_k - theta*_k||^2", |m| m.mean_mse())?;
    draw_panel(&panels[1], curves, "cross-entity task error", "excess risk on others' tasks", |m| m.cross_task_error())?;
    draw_panel(&panels[2], curves, "inter-entity dispersion", "(1/K) sum E||theta_k - mean||^2", |m| m.dispersion)?;
    root.present().map_err(perr)?;
    Ok(())
}

impl From<FigureError> for TheoryError {
    fn from(e: FigureError) -> Self {
        match e {
            FigureError::Draw { message, .. } => TheoryError::Plot(message),
            FigureError::Io(e) => e.into(),
        }
    }
}

struct HeatmapFigure<'a>(&'a Heatmap, &'a str);

impl Figure for HeatmapFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw_heatmap(&root, self.0, self.1).map_err(|e| e.to_string())
    }
}

struct CurvesFigure<'a>(&'a [Curve], f64);

impl Figure for CurvesFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw_curves(&root, self.0, self.1).map_err(|e| e.to_string())
    }
}

/// Write `<stem>.svg` and `<stem>.png` of the heatmap into `dir`.
pub fn write_heatmap(dir: &Path, stem: &str, h: &Heatmap, title: &str) -> Result<Vec<PathBuf>, TheoryError> {
    Ok(write_svg_png(&dir.join(stem), (820, 680), &HeatmapFigure(h, title))?.to_vec())
}

/// Write `<stem>.svg` and `<stem>.png` of the generation curves into `dir`.
pub fn write_curves(dir: &Path, stem: &str, curves: &[Curve], beta: f64) -> Result<Vec<PathBuf>, TheoryError> {
    Ok(write_svg_png(&dir.join(stem), (1500, 500), &CurvesFigure(curves, beta))?.to_vec())
}
