//! crossfeed-theory: the paper's linear-regression model of K entities that retrain on
//! public real data, their own private real data and each other's synthetic outputs.
//!
//! * [`config`] — `TheoryConfig` (TOML + dotted overrides, validated).
//! * [`problem`] — a seeded problem instance (designs, theta*, synthetic input laws).
//! * [`dynamics`] — closed form: `P_t`, `Q_t`, mean/covariance recursions, fixed point, MSE,
//!   relative efficiency, homogenisation.
//! * [`montecarlo`] — the same process simulated sample by sample.
//! * [`sweep`] — alpha × beta heatmaps and curves against generation, CSV output.
//! * [`plot`] — SVG/PNG figures.

// Index loops mirror the block-matrix formulas in docs/theory.md; keep them.
#![allow(clippy::needless_range_loop)]

pub mod config;
pub mod dynamics;
pub mod montecarlo;
pub mod plot;
pub mod problem;
pub mod report;
pub mod sweep;

pub use config::TheoryConfig;
pub use problem::{Problem, Setting};

use std::path::{Path, PathBuf};

/// Every failure of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TheoryError {
    #[error("unknown config key `{key}`; allowed keys: {allowed}")]
    UnknownKey { key: String, allowed: String },
    #[error("config value out of range: `{key}` = {value}, expected {expected}")]
    OutOfRange { key: String, value: String, expected: String },
    #[error("config error: {0}")]
    Config(String),
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("plot error: {0}")]
    Plot(String),
    #[error("model error: {0}")]
    Model(String),
}

impl From<crossfeed_fsio::FsError> for TheoryError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        TheoryError::Io { path: e.path, source: e.source }
    }
}

/// Writes `contents` to `dir/name` durably (`crossfeed-fsio`), so a crashed or concurrent run never
/// leaves a truncated CSV behind.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, TheoryError> {
    let dst = dir.join(name);
    crossfeed_fsio::write_atomic(&dst, contents.as_bytes())?;
    Ok(dst)
}

/// `crossfeed theory [--config FILE] [--set k=v]... [--out DIR]`: load the config (defaults
/// when `None`), apply overrides, run the heatmap sweep, the generation curves and the Monte
/// Carlo validation, write `config.toml`, CSVs, SVG/PNG plots and `summary.txt` into
/// `out_dir`, and return the summary text.
pub fn run_cli(config: Option<&std::path::Path>, sets: &[String], out_dir: &std::path::Path) -> Result<String, TheoryError> {
    let cfg = TheoryConfig::load(config, sets)?;
    std::fs::create_dir_all(out_dir).map_err(|e| TheoryError::Io { path: out_dir.to_path_buf(), source: e })?;
    let problem = Problem::from_config(&cfg)?;
    let setting = Setting { alpha: cfg.alpha, beta: cfg.beta };
    let heat = sweep::heatmap(&problem, &cfg)?;
    let curves = sweep::curves(&problem, &cfg);
    let chosen = dynamics::long_run(&problem, setting, cfg.sweep.evaluate == config::Evaluate::FixedPoint, cfg.generations)?;
    let mc = (cfg.montecarlo.replications > 0).then(|| {
        let closed = dynamics::metrics(&problem, dynamics::transient(&problem, setting, cfg.generations).last().expect("non-empty"), f64::NAN);
        let sim = montecarlo::simulate(&problem, setting, cfg.generations, cfg.montecarlo.replications, problem::mix(cfg.seed ^ 0x3C));
        (closed, sim)
    });
    write_atomic(out_dir, "config.toml", &cfg.to_toml()?)?;
    write_atomic(out_dir, "heatmap.csv", &sweep::heatmap_csv(&heat))?;
    write_atomic(out_dir, "curves.csv", &sweep::curves_csv(&curves))?;
    write_atomic(out_dir, "entities.csv", &sweep::entities_csv(&chosen))?;
    if let Some((closed, sim)) = &mc {
        write_atomic(out_dir, "montecarlo.csv", &report::montecarlo_csv(closed, sim))?;
    }
    let title = format!(
        "mean relative efficiency, K={} d={} ranks {}/{} n={}/{}",
        cfg.entities, cfg.dim, cfg.data.public_rank, cfg.data.private_rank, cfg.data.public_samples, cfg.data.private_samples
    );
    plot::write_heatmap(out_dir, "heatmap", &heat, &title)?;
    plot::write_curves(out_dir, "curves", &curves, cfg.beta)?;
    let text = report::summary(&cfg, &heat, &curves, &chosen, mc.as_ref().map(|(c, s)| (c, s)));
    write_atomic(out_dir, "summary.txt", &text)?;
    Ok(text)
}

/// `crossfeed bench theory`: time a full 21 × 21 fixed-point heatmap for K = 4, d = 50
/// (public rank 10 + four private ranks of 10 tile R^50, so the loop can converge).
pub fn bench_heatmap() -> Result<String, TheoryError> {
    let sets: Vec<String> = ["dim=50", "entities=4", "data.public_rank=10", "data.private_rank=10", "sweep.steps=21"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cfg = TheoryConfig::load(None, &sets)?;
    let t0 = std::time::Instant::now();
    let problem = Problem::from_config(&cfg)?;
    let heat = sweep::heatmap(&problem, &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    let best = &heat.cells[heat.best];
    Ok(format!(
        "theory heatmap 21x21 K=4 d=50: {secs:.3} s ({:.2} ms/cell, {} cells); best alpha={:.2} beta={:.2} rel_eff={:.4}",
        1e3 * secs / heat.cells.len() as f64,
        heat.cells.len(),
        best.setting.alpha,
        best.setting.beta,
        best.metrics.mean_rel_eff()
    ))
}
