//! `crossfeed sweep run|status|report SWEEP`: a sweep file expanded into runs under
//! RUNS_DIR/<sweep name>/ (the expansion and the report live in crates/loop).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crossfeed_loop::plan::plan;
use crossfeed_loop::sweep::Sweep;
use crossfeed_loop::RunDir;

use crate::experiment::ParallelArgs;

#[derive(clap::Subcommand, Debug)]
pub enum SweepCommand {
    /// Run every point of a sweep (each its own run directory), then write the sweep's report.
    Run(SweepRunArgs),
    /// Stages done per run, with running stages and Slurm job states.
    Status(SweepArgs),
    /// The paper's table across the sweep's runs (mean ± sd over seeds) and plots against alpha.
    Report(SweepArgs),
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Sweep TOML (see configs/sweeps/).
    pub sweep: PathBuf,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Override a config key in every point (after the sweep's own `set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SweepRunArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

pub fn run(c: SweepCommand) -> Result<()> {
    match c {
        SweepCommand::Run(a) => run_cmd(a),
        SweepCommand::Status(a) => status_cmd(&a),
        SweepCommand::Report(a) => report_cmd(&a),
    }
}

pub(crate) fn load(a: &SweepArgs) -> Result<Sweep> {
    Sweep::load(&a.sweep, &a.set).with_context(|| format!("sweep {}", a.sweep.display()))
}

/// Makes (or reopens) every point's run directory: a point whose directory holds a different config
/// fails here, before any point runs.
pub(crate) fn create_dirs(sweep: &Sweep, dir: &Path) -> Result<Vec<RunDir>> {
    // Every point's max_len is checked before any directory is written.
    for p in &sweep.points {
        p.cfg.check_max_len().with_context(|| format!("point {}", p.name))?;
    }
    sweep.points.iter().map(|p| RunDir::create(dir, &p.cfg).with_context(|| format!("point {}", p.name))).collect()
}

fn run_cmd(a: SweepRunArgs) -> Result<()> {
    let sweep = load(&a.sweep)?;
    let dir = sweep.dir(&a.sweep.runs_dir);
    let mut seen = std::collections::HashSet::new();
    for p in sweep.points.iter().filter(|p| seen.insert(p.cfg.device.clone())) {
        a.parallel.open_devices(&p.cfg).with_context(|| format!("point {}", p.name))?;
    }
    let dirs = create_dirs(&sweep, &dir)?;
    eprintln!("sweep {}: {} runs in {}", sweep.name, sweep.points.len(), dir.display());
    let mut failed = Vec::new();
    for (p, d) in sweep.points.iter().zip(dirs) {
        eprintln!("\n== {} ({}) ==", p.name, d.root.display());
        // A failed point does not stop the others; they are listed at the end.
        if let Err(e) = crate::experiment::drive_run(d, p.cfg.clone(), &a.parallel, None) {
            eprintln!("error: {e:#}");
            failed.push(p.name.clone());
        }
    }
    let md = crossfeed_loop::sweep_report::write_sweep_report(&sweep, &dir)?;
    println!("{md}");
    eprintln!("wrote {}", dir.join("report.md").display());
    if !failed.is_empty() {
        anyhow::bail!("{} of {} runs did not finish: {}", failed.len(), sweep.points.len(), failed.join(", "));
    }
    Ok(())
}

fn status_cmd(a: &SweepArgs) -> Result<()> {
    let sweep = load(a)?;
    let dir = sweep.dir(&a.runs_dir);
    let jobs = crate::slurm::JobStates::load(&dir.join("slurm"));
    println!("sweep {} in {}", sweep.name, dir.display());
    let (mut all, mut total) = (0, 0);
    for p in &sweep.points {
        let run = RunDir { root: dir.join(&p.name) };
        let stages = plan(&p.cfg);
        let done = stages.iter().filter(|id| run.is_done(id)).count();
        let mut notes = Vec::new();
        for id in stages.iter().filter(|id| !run.is_done(id)) {
            if let Some(h) = crossfeed_loop::lock::holder(&run.lock_path(id))? {
                notes.push(format!("running {id} ({h})"));
            }
        }
        notes.extend(jobs.summary(&run.root));
        println!("  {:<40} {done:>3}/{:<3} {}", p.name, stages.len(), notes.join("; "));
        all += done;
        total += stages.len();
    }
    println!("{all}/{total} stages done");
    Ok(())
}

fn report_cmd(a: &SweepArgs) -> Result<()> {
    let sweep = load(a)?;
    let dir = sweep.dir(&a.runs_dir);
    let md = crossfeed_loop::sweep_report::write_sweep_report(&sweep, &dir)?;
    println!("{md}");
    eprintln!("wrote {}", dir.join("report.md").display());
    Ok(())
}
