//! Independent stages at once: a run's stages form a graph (`plan::dependencies`); this driver
//! keeps one worker process per slot busy with any stage whose dependencies are done, in plan order.
//! Each worker is a separate process (the CLI spawns `crossfeed stage --if-needed …`) that takes the
//! stage's lock and writes its log to the stage's own file, so the metrics are those of the serial
//! run: every stage reads its inputs from disk and gets its seed from its coordinates, whoever runs it.

use std::collections::HashMap;
use std::fs::File;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};
use crate::metrics::MetricLine;
use crate::rundir::RunDir;
use crate::finish;
use crate::plan::{dependencies, plan, StageId};
use crate::stages::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
}

/// Starts the worker for `id` on `device`, its stdout and stderr going to `log`.
pub type Spawn<'a> = dyn FnMut(&StageId, &str, File) -> std::io::Result<Child> + 'a;

/// Runs every unfinished stage of `dir` with one worker per entry of `slots` (a device name each).
/// A failed stage stops only its descendants; the others run to the end, then the failures are
/// returned with their log files.
pub fn run_parallel(dir: &RunDir, cfg: &ExperimentConfig, slots: &[String], spawn: &mut Spawn, report: &mut dyn FnMut(&Event)) -> Result<Vec<MetricLine>> {
    if slots.is_empty() {
        return Err(LoopError::Config("at least one worker slot is needed".into()));
    }
    let stages = plan(cfg);
    let mut state: HashMap<StageId, State> = HashMap::new();
    for id in &stages {
        let done = dir.is_done(id);
        if done {
            report(&Event::Skipped(*id));
        }
        state.insert(*id, if done { State::Done } else { State::Pending });
    }
    let deps: HashMap<StageId, Vec<StageId>> = stages.iter().map(|id| (*id, dependencies(cfg, id))).collect();
    let mut free: Vec<usize> = (0..slots.len()).rev().collect();
    let mut running: Vec<(StageId, usize, Child, Instant)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    loop {
        while let Some(&slot) = free.last() {
            let ready = stages.iter().find(|id| state[*id] == State::Pending && deps[*id].iter().all(|d| state.get(d) == Some(&State::Done)));
            let Some(&id) = ready else { break };
            let log_path = dir.log_path(&id);
            let stage_dir = dir.stage_dir(&id);
            std::fs::create_dir_all(&stage_dir).map_err(|e| LoopError::io(&stage_dir, e))?;
            let log = File::create(&log_path).map_err(|e| LoopError::io(&log_path, e))?;
            let child = spawn(&id, &slots[slot], log).map_err(|e| LoopError::Workers(format!("cannot start the worker for {id}: {e}")))?;
            free.pop();
            state.insert(id, State::Running);
            report(&Event::Started(id));
            running.push((id, slot, child, Instant::now()));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut i = 0;
        while i < running.len() {
            let status = running[i].2.try_wait().map_err(|e| LoopError::Workers(format!("waiting for the worker of {}: {e}", running[i].0)))?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let (id, slot, _, start) = running.swap_remove(i);
            free.push(slot);
            let log = dir.log_path(&id);
            match dir.read_marker(&id)? {
                Some(m) if status.success() => {
                    state.insert(id, State::Done);
                    report(&Event::Done { id, wall_s: start.elapsed().as_secs_f64(), tokens: m.tokens, note: format!("on {} (log {})", slots[slot], log.display()) });
                    // The worker rebuilt the metrics; an old checkpoint may have lost its last reader.
                    finish::prune(dir, cfg)?;
                }
                _ => {
                    state.insert(id, State::Failed);
                    let why = format!("{id} failed ({status}); log: {}", log.display());
                    report(&Event::Warning(why.clone()));
                    failed.push(why);
                }
            }
        }
    }
    // Also what stages finished before this run started left.
    let lines = finish::finish_stage(dir, cfg)?;
    if failed.is_empty() {
        return Ok(lines);
    }
    let blocked = state.values().filter(|s| **s == State::Pending).count();
    Err(LoopError::Workers(format!(
        "{} stage(s) failed, {blocked} not started because they depend on them:\n  {}",
        failed.len(),
        failed.join("\n  ")
    )))
}
