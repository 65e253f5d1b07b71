//! What follows a stage, whoever ran it (the serial driver, a parallel worker, a Slurm task): the run's
//! records are rebuilt from the stages' own files — `metrics.jsonl`/`metrics.csv`, then the TensorBoard
//! event file — and then old checkpoints are pruned. All of it runs under the run's records lock
//! (`metrics.lock`), one process at a time, so the last rebuild sees every marker written before it
//! started and two pruners never race.

use std::path::Path;

use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};
use crate::lock;
use crate::metrics::{self, MetricLine};
use crate::plan::{plan, readers, GenId, Stage, StageId};
use crate::rundir::RunDir;

fn records_lock(dir: &RunDir) -> Result<lock::Lock> {
    lock::lock_wait(&dir.root.join("metrics.lock"), "rebuilding the run's records")
}

/// Rebuilds metrics.jsonl/csv and the TensorBoard file from the finished stages; returns the lines.
pub fn record(dir: &RunDir, cfg: &ExperimentConfig) -> Result<Vec<MetricLine>> {
    let _lock = records_lock(dir)?;
    record_locked(dir, cfg)
}

fn record_locked(dir: &RunDir, cfg: &ExperimentConfig) -> Result<Vec<MetricLine>> {
    let lines = metrics::rebuild(dir, cfg)?;
    crate::tensorboard::write_run(dir, cfg, &lines)?;
    Ok(lines)
}

/// Everything that follows a finished stage: the records, then pruning. Returns the metric lines.
pub fn finish_stage(dir: &RunDir, cfg: &ExperimentConfig) -> Result<Vec<MetricLine>> {
    let _lock = records_lock(dir)?;
    let lines = record_locked(dir, cfg)?;
    prune_with(dir, cfg, &mut |_| {})?;
    Ok(lines)
}

/// Prunes under the records lock (a driver whose worker may have stopped before its own pruning).
pub fn prune(dir: &RunDir, cfg: &ExperimentConfig) -> Result<()> {
    let _lock = records_lock(dir)?;
    prune_with(dir, cfg, &mut |_| {})
}

/// With `keep_last = k`, deletes the checkpoint of (generation g, entity e) once g is older than the
/// last k generations whose similarity is done AND every stage that reads it is done. The readers come
/// from the stage graph (`plan::readers` of train(g, e): its eval, the next generation's generate and
/// warm-started train), not from generation arithmetic: under workers or Slurm an old eval can still be
/// pending or failed after later generations finish, and deleting its model then would leave a run no
/// resume can finish. Idempotent: a checkpoint already gone is pruned.
///
/// `before_remove` runs just before each deletion (tests use it to interleave a second pruner).
#[doc(hidden)]
pub fn prune_with(dir: &RunDir, cfg: &ExperimentConfig, before_remove: &mut dyn FnMut(&Path)) -> Result<()> {
    let k = cfg.keep_last;
    if k == 0 {
        return Ok(());
    }
    let stages = plan(cfg);
    let newest = stages
        .iter()
        .filter(|id| id.stage == Stage::Similarity && dir.is_done(id))
        .filter_map(|id| match id.gen {
            GenId::Gen(t) => Some(t),
            GenId::Base => None,
        })
        .max();
    let Some(t) = newest.filter(|&t| t >= k) else { return Ok(()) };
    for old in 0..=(t - k) {
        for e in 0..cfg.k {
            let d = dir.model_dir(GenId::Gen(old), e);
            if !d.exists() {
                continue;
            }
            let trained = StageId { gen: GenId::Gen(old), entity: Some(e), stage: Stage::Train };
            if readers(cfg, &trained).iter().all(|id| dir.is_done(id)) {
                before_remove(&d);
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => {}
                    Err(er) if er.kind() == std::io::ErrorKind::NotFound => {}
                    Err(er) => return Err(LoopError::io(&d, er)),
                }
            }
        }
    }
    Ok(())
}
