//! Sweeps: the alpha × beta relative-efficiency heatmap and curves against generation,
//! plus their CSV renderings.

use std::fmt::Write as _;

use crate::config::{Evaluate, TheoryConfig};
use crate::dynamics::{self, Metrics};
use crate::problem::{Problem, Setting};
use crate::TheoryError;

/// One heatmap cell.
#[derive(Debug, Clone)]
pub struct Cell {
    pub setting: Setting,
    pub metrics: Metrics,
}

/// The full grid, alpha-major: `cells[i * steps + j]` has `alpha_i`, `beta_j`.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub steps: usize,
    pub cells: Vec<Cell>,
    /// Index of the cell with the highest mean relative efficiency.
    pub best: usize,
}

impl Heatmap {
    pub fn grid_value(steps: usize, i: usize) -> f64 {
        i as f64 / (steps - 1) as f64
    }
    pub fn cell(&self, i: usize, j: usize) -> &Cell {
        &self.cells[i * self.steps + j]
    }
    /// Grid index closest to `v`.
    pub fn nearest(&self, v: f64) -> usize {
        ((v * (self.steps - 1) as f64).round() as usize).min(self.steps - 1)
    }
    /// 1-based rank of a cell by mean relative efficiency (1 = best).
    pub fn rank_of(&self, idx: usize) -> usize {
        let v = self.cells[idx].metrics.mean_rel_eff();
        1 + self.cells.iter().filter(|c| c.metrics.mean_rel_eff() > v).count()
    }
}

/// Evaluate the long-run metrics on the `steps × steps` grid.
pub fn heatmap(p: &Problem, cfg: &TheoryConfig) -> Result<Heatmap, TheoryError> {
    let steps = cfg.sweep.steps;
    let fixed = cfg.sweep.evaluate == Evaluate::FixedPoint;
    let mut cells = Vec::with_capacity(steps * steps);
    for i in 0..steps {
        for j in 0..steps {
            let setting = Setting { alpha: Heatmap::grid_value(steps, i), beta: Heatmap::grid_value(steps, j) };
            let metrics = dynamics::long_run(p, setting, fixed, cfg.generations)?;
            cells.push(Cell { setting, metrics });
        }
    }
    let best = cells
        .iter()
        .enumerate()
        .fold((0usize, f64::NEG_INFINITY), |(bi, bv), (i, c)| {
            let v = c.metrics.mean_rel_eff();
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0;
    Ok(Heatmap { steps, cells, best })
}

/// Metrics at every generation 0..=T for one (alpha, beta).
#[derive(Debug, Clone)]
pub struct Curve {
    pub setting: Setting,
    pub per_generation: Vec<Metrics>,
}

/// Curves for each `sweep.curve_alphas` at the config's beta.
pub fn curves(p: &Problem, cfg: &TheoryConfig) -> Vec<Curve> {
    cfg.sweep
        .curve_alphas
        .iter()
        .map(|&alpha| {
            let setting = Setting { alpha, beta: cfg.beta };
            let rho = dynamics::message_radius(p, setting, 1);
            let per_generation = dynamics::transient(p, setting, cfg.generations)
                .iter()
                .map(|mo| dynamics::metrics(p, mo, if mo.generation == 0 { 0.0 } else { rho }))
                .collect();
            Curve { setting, per_generation }
        })
        .collect()
}

fn f(v: f64) -> String {
    if v.is_finite() { format!("{v:.6e}") } else if v.is_nan() { "nan".into() } else { "inf".into() }
}

/// `alpha,beta,mean_rel_eff,min_rel_eff,mean_mse,ideal_mse,own_task_error,cross_task_error,dispersion,spectral_radius,converged,rel_eff_0..`
pub fn heatmap_csv(h: &Heatmap) -> String {
    let k = h.cells.first().map(|c| c.metrics.mse.len()).unwrap_or(0);
    let mut s = String::from("alpha,beta,mean_rel_eff,min_rel_eff,mean_mse,ideal_mse,own_task_error,cross_task_error,dispersion,spectral_radius,converged");
    for e in 0..k {
        let _ = write!(s, ",rel_eff_{e}");
    }
    s.push('\n');
    for c in &h.cells {
        let m = &c.metrics;
        let min_re = m.rel_eff.iter().cloned().fold(f64::INFINITY, f64::min);
        let _ = write!(
            s,
            "{:.4},{:.4},{},{},{},{},{},{},{},{},{}",
            c.setting.alpha,
            c.setting.beta,
            f(m.mean_rel_eff()),
            f(min_re),
            f(m.mean_mse()),
            f(m.ideal_mse.iter().sum::<f64>() / k.max(1) as f64),
            f(m.own_task_error()),
            f(m.cross_task_error()),
            f(m.dispersion),
            f(m.spectral_radius),
            m.converged
        );
        for r in &m.rel_eff {
            let _ = write!(s, ",{}", f(*r));
        }
        s.push('\n');
    }
    s
}

/// `alpha,beta,generation,mean_mse,mean_rel_eff,own_task_error,cross_task_error,dispersion,pairwise_distance`
pub fn curves_csv(curves: &[Curve]) -> String {
    let mut s = String::from("alpha,beta,generation,mean_mse,mean_rel_eff,own_task_error,cross_task_error,dispersion,pairwise_distance\n");
    for c in curves {
        for (t, m) in c.per_generation.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:.4},{:.4},{t},{},{},{},{},{},{}",
                c.setting.alpha,
                c.setting.beta,
                f(m.mean_mse()),
                f(m.mean_rel_eff()),
                f(m.own_task_error()),
                f(m.cross_task_error()),
                f(m.dispersion),
                f(m.pairwise_distance)
            );
        }
    }
    s
}

/// Per-entity table: `entity,mse,ideal_mse,rel_eff,task_error_0..K-1,task_error_public`.
pub fn entities_csv(m: &Metrics) -> String {
    let k = m.mse.len();
    let mut s = String::from("entity,mse,ideal_mse,rel_eff");
    for j in 0..k {
        let _ = write!(s, ",task_error_{j}");
    }
    s.push_str(",task_error_public\n");
    for e in 0..k {
        let _ = write!(s, "{e},{},{},{}", f(m.mse[e]), f(m.ideal_mse[e]), f(m.rel_eff[e]));
        for v in &m.task_error[e] {
            let _ = write!(s, ",{}", f(*v));
        }
        s.push('\n');
    }
    s
}
