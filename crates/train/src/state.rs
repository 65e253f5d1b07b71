//! Persistent trainer progress (what a resume needs besides the weights and the optimizer).
//!
//! A run that is killed mid-save must never leave a truncated `optimizer.safetensors` next to a
//! newer `trainer_state.json`: each file is written durably (`crossfeed-fsio`). The trainer writes
//! the optimizer first and the JSON last, so the JSON's presence marks a complete checkpoint.

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::grad_scaler::GradScaler;
use crate::order::DataCursor;

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
    /// Steps skipped by f16 loss scaling (not applied to the weights or the schedule).
    #[serde(default)]
    pub skipped_steps: u64,
    /// f16 loss scaling: the scale and its growth counter.
    #[serde(default)]
    pub grad_scaler: Option<GradScaler>,
}

pub(crate) const TRAINER_STATE_FORMAT: &str = "crossfeed-trainer-v1";

