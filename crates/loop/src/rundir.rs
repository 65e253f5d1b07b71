//! The run directory: `config.toml`, `gen-XXX/entity-K/` stage outputs, `DONE` markers, metrics.
//!
//! A stage is done exactly when its marker exists; the marker is written last, through a temp file
//! and a rename, so a crash leaves either a finished stage or one that runs again from scratch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{LoopError, Result};
use crate::lock::{self, Holder, Lock, TryLock};
use crate::seeds::fnv64_hex;
use crate::plan::{GenId, StageId};

pub const CONFIG_FILE: &str = "config.toml";

/// What a finished stage leaves behind: its seed, checksums of the files it wrote, and its cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageMarker {
    pub stage: String,
    /// -1 = the base model.
    pub generation: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entity: Option<usize>,
    pub seed: u64,
    /// File (relative to the stage's directory) → FNV-1a 64 of its bytes.
    pub files: BTreeMap<String, String>,
    pub wall_s: f64,
    /// Tokens processed (generated, trained on, or scored).
    pub tokens: u64,
}

/// An opened run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// Writes `bytes` to `path` durably (`crossfeed-fsio`), creating its directory first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LoopError::io(parent, e))?;
    }
    Ok(crossfeed_fsio::write_atomic(path, bytes)?)
}

impl RunDir {
    /// Creates `<runs_dir>/<cfg.name>` and writes the resolved config, or reopens it when it holds
    /// the same config. A directory made from a different config is refused with the differing keys,
    /// and nothing in it is touched.
    pub fn create(runs_dir: &Path, cfg: &ExperimentConfig) -> Result<Self> {
        let root = runs_dir.join(&cfg.name);
        let cfg_path = root.join(CONFIG_FILE);
        if !cfg_path.exists() {
            // A run directory's config is its first file: before it there are only config temp files
            // (another driver's, started at the same moment, or one that died mid-write).
            let temp = format!("{CONFIG_FILE}.tmp-");
            let foreign = std::fs::read_dir(&root).is_ok_and(|entries| {
                entries.filter_map(|e| e.ok()).any(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name != CONFIG_FILE && !name.starts_with(&temp)
                })
            });
            if !foreign {
                std::fs::create_dir_all(&root).map_err(|e| LoopError::io(&root, e))?;
                // Of two drivers creating the run at once, one publishes its config and the other
                // finds it below, compared like any existing run's.
                if crossfeed_fsio::write_new(&cfg_path, cfg.to_toml()?.as_bytes())? {
                    return Ok(RunDir { root });
                }
            } else if !cfg_path.exists() {
                // (Checked again: the other driver may have published its config and gone on to write
                // its lock since the first look.)
                return Err(LoopError::Config(format!(
                    "{} exists, is not empty and has no {CONFIG_FILE}; refusing to write into it",
                    root.display()
                )));
            }
        }
        let stored = ExperimentConfig::load(&cfg_path, &[])?;
        let diffs = stored.diff(cfg)?;
        if !diffs.is_empty() {
            return Err(LoopError::ConfigMismatch { dir: root, diffs });
        }
        Ok(RunDir { root })
    }

    /// Opens an existing run and reads its config.
    pub fn open(root: &Path) -> Result<(Self, ExperimentConfig)> {
        let cfg_path = root.join(CONFIG_FILE);
        if !cfg_path.exists() {
            return Err(LoopError::NotARun(root.to_path_buf()));
        }
        let cfg = ExperimentConfig::load(&cfg_path, &[])?;
        Ok((RunDir { root: root.to_path_buf() }, cfg))
    }

    /// Rewrites the stored config (only `resume --generations` does this).
    pub fn store_config(&self, cfg: &ExperimentConfig) -> Result<()> {
        write_atomic(&self.root.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())
    }

    pub fn gen_dir(&self, g: GenId) -> PathBuf {
        self.root.join(g.dir_name())
    }

    /// Where a stage's files live: `gen-XXX/entity-K` (or the generation directory for stages of
    /// the whole generation and for the base model).
    pub fn stage_dir(&self, id: &StageId) -> PathBuf {
        match id.entity {
            Some(e) => self.gen_dir(id.gen).join(format!("entity-{e}")),
            None => self.gen_dir(id.gen),
        }
    }

    pub fn model_dir(&self, g: GenId, entity: usize) -> PathBuf {
        self.gen_dir(g).join(format!("entity-{entity}")).join("model")
    }

    pub fn marker_path(&self, id: &StageId) -> PathBuf {
        self.stage_dir(id).join(format!("{}.DONE", id.stage.name()))
    }

    /// The advisory lock a process holds while it runs `id` (see `lock.rs`).
    pub fn lock_path(&self, id: &StageId) -> PathBuf {
        self.stage_dir(id).join(format!("{}.lock", id.stage.name()))
    }

    /// Where a worker or Slurm task writes the log of `id`.
    pub fn log_path(&self, id: &StageId) -> PathBuf {
        self.stage_dir(id).join(format!("{}.log", id.stage.name()))
    }

    /// The lock of a driver (`crossfeed run`/`resume`) on the whole run.
    pub fn run_lock_path(&self) -> PathBuf {
        self.root.join("run.lock")
    }

    /// Takes the run's driver lock, or fails naming the process that holds it.
    pub fn lock_run(&self, what: &str) -> Result<Lock> {
        match lock::try_lock(&self.run_lock_path(), what)? {
            TryLock::Acquired(l) => Ok(l),
            TryLock::Busy(h) => Err(LoopError::Busy { what: format!("run {}", self.root.display()), holder: busy_holder(h) }),
        }
    }

    /// Takes the lock of stage `id`, or fails naming the process that holds it.
    pub fn lock_stage(&self, id: &StageId) -> Result<Lock> {
        match lock::try_lock(&self.lock_path(id), &format!("stage {id}"))? {
            TryLock::Acquired(l) => Ok(l),
            TryLock::Busy(h) => Err(LoopError::Busy { what: format!("{id} of {}", self.root.display()), holder: busy_holder(h) }),
        }
    }

    pub fn is_done(&self, id: &StageId) -> bool {
        self.marker_path(id).exists()
    }

    pub fn read_marker(&self, id: &StageId) -> Result<Option<StageMarker>> {
        let p = self.marker_path(id);
        match std::fs::read_to_string(&p) {
            Ok(s) => serde_json::from_str(&s).map(Some).map_err(|e| LoopError::Json { path: p, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LoopError::io(p, e)),
        }
    }

    /// Writes the marker of `id` with checksums of `files` (relative to the stage directory).
    pub fn mark_done(&self, id: &StageId, seed: u64, files: &[&str], wall_s: f64, tokens: u64) -> Result<StageMarker> {
        let dir = self.stage_dir(id);
        let mut sums = BTreeMap::new();
        for f in files {
            let p = dir.join(f);
            let bytes = std::fs::read(&p).map_err(|e| LoopError::io(&p, e))?;
            sums.insert(f.to_string(), fnv64_hex(&bytes));
        }
        let m = StageMarker {
            stage: id.stage.name().to_string(),
            generation: id.gen.as_i64(),
            entity: id.entity,
            seed,
            files: sums,
            wall_s,
            tokens,
        };
        let text = serde_json::to_string_pretty(&m).map_err(|e| LoopError::Json { path: self.marker_path(id), message: e.to_string() })?;
        write_atomic(&self.marker_path(id), text.as_bytes())?;
        Ok(m)
    }

    /// Re-hashes the files a marker lists; returns the ones that changed or vanished.
    pub fn verify(&self, id: &StageId) -> Result<Vec<String>> {
        let Some(m) = self.read_marker(id)? else { return Ok(Vec::new()) };
        let dir = self.stage_dir(id);
        Ok(m.files
            .iter()
            .filter(|(f, sum)| std::fs::read(dir.join(f)).map(|b| &fnv64_hex(&b) != *sum).unwrap_or(true))
            .map(|(f, _)| f.clone())
            .collect())
    }
}

fn busy_holder(h: Option<Holder>) -> String {
    h.map(|h| format!("held by {h}")).unwrap_or_else(|| "held by a process that is just starting".into())
}
