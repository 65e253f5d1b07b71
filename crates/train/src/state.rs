//! Persistent trainer progress and the atomic-write helper used for every state file.
//!
//! A run that is killed mid-save must never leave a truncated `optimizer.safetensors` next to a
//! newer `trainer_state.json`: each file is written to a temporary sibling, fsynced, then renamed
//! over the target (rename is atomic on POSIX filesystems). The trainer writes the optimizer first
//! and the JSON last, so the JSON's presence marks a complete checkpoint.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::order::DataCursor;
use crate::trainer::TrainConfig;

/// File name of the optimizer state inside a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File name of the trainer progress inside a checkpoint directory.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// Everything besides the optimizer moments needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Format tag, bumped on incompatible changes.
    pub format: String,
    /// Optimizer steps completed.
    pub step: u64,
    /// Micro-batches consumed so far (across all steps).
    pub micro_batches_seen: u64,
    /// Predicted tokens consumed so far.
    pub tokens_seen: u64,
    /// Data order position (epoch and index into that epoch's permutation).
    pub data: DataCursor,
    /// The configuration the run was started with (checked on resume).
    pub config: TrainConfig,
}

pub(crate) const TRAINER_STATE_FORMAT: &str = "crossfeed-trainer-v1";

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| TrainError::io(path, std::io::Error::other("path has no file name")))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; not all platforms allow opening a directory, so best effort.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::io(path, e));
    }
    Ok(())
}
