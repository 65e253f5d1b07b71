//! Typed errors for the fine-tuning engine.
//!
//! Every variant names the thing the user has to look at (parameter, optimizer step, micro-batch,
//! file): a silently frozen parameter or a NaN that surfaces ten steps later is far more expensive
//! to debug than an early, specific error.

use std::path::PathBuf;

use candle_core::{DType, Shape};

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Boxed error returned by a caller-supplied loss closure (candle, anyhow, ... all convert into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while building, stepping, saving or loading the optimizer/trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Model(#[from] crossfeed_model::ModelError),

    /// A trainable parameter has no gradient: it did not take part in the loss (or was detached).
    #[error(
        "parameter `{name}` received no gradient; it would be silently frozen \
         (set allow_missing_grads to skip such parameters on purpose)"
    )]
    MissingGrad { name: String },

    /// Gradient and parameter disagree in shape (a model wiring bug).
    #[error("gradient of `{name}` has shape {grad:?}, parameter has shape {param:?}")]
    GradShape {
        name: String,
        grad: Shape,
        param: Shape,
    },

    /// Master weights must be f32 (the model casts to its compute dtype in its forward).
    #[error(
        "parameter `{name}` has dtype {dtype:?}; master weights and optimizer state must be f32"
    )]
    UnsupportedDType { name: String, dtype: DType },

    /// Two parameters share a name (state files could not tell them apart) or the same Var is
    /// listed twice (it would be updated twice per step).
    #[error("duplicate parameter `{0}` (name or Var listed twice)")]
    DuplicateParam(String),

    /// The loss of one micro-batch is NaN or infinite.
    #[error("optimizer step {step}, micro-batch {micro_batch}: loss is {value} (not finite)")]
    NonFiniteLoss {
        step: u64,
        micro_batch: usize,
        value: f64,
    },

    /// The gradient of one micro-batch contains NaN or infinity.
    #[error(
        "optimizer step {step}, micro-batch {micro_batch}: gradient of `{param}` is not finite \
         (squared norm {sq_norm})"
    )]
    NonFiniteGrad {
        step: u64,
        micro_batch: usize,
        param: String,
        sq_norm: f64,
    },

    /// The caller's loss closure failed.
    #[error("optimizer step {step}, micro-batch {micro_batch}: loss function failed: {source}")]
    LossFn {
        step: u64,
        micro_batch: usize,
        #[source]
        source: BoxError,
    },

    /// The loss closure returned something that is not a scalar.
    #[error("optimizer step {step}, micro-batch {micro_batch}: loss must be a scalar, got shape {shape:?}")]
    LossNotScalar {
        step: u64,
        micro_batch: usize,
        shape: Shape,
    },

    /// No predicted tokens in a whole optimizer step: the mean loss is undefined.
    #[error("optimizer step {step}: the micro-batches contain no predicted tokens")]
    NoTokens { step: u64 },

    /// `Trainer::step` was called with an empty slice of micro-batches.
    #[error("optimizer step {step}: no micro-batches given")]
    NoMicroBatches { step: u64 },

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A state file lacks the tensor for a parameter.
    #[error("state file {path}: missing tensor `{tensor}`")]
    StateMissing { path: PathBuf, tensor: String },

    /// A state tensor does not have the parameter's shape.
    #[error("state file {path}: tensor `{tensor}` has shape {found:?}, the parameter has shape {expected:?}")]
    StateShape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A state file holds a tensor for a parameter this optimizer does not have.
    #[error("state file {path}: tensor `{tensor}` matches no parameter of this optimizer")]
    StateUnexpected { path: PathBuf, tensor: String },

    /// The state file is malformed (bad header, dtype, metadata).
    #[error("state file {path}: {msg}")]
    StateFormat { path: PathBuf, msg: String },

    /// The saved state was produced with a different configuration.
    #[error("state {path}: saved {what} = {saved} differs from current {current}")]
    ConfigMismatch {
        path: PathBuf,
        what: String,
        saved: String,
        current: String,
    },

    /// Filesystem error, with the path involved.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A durable write's failure keeps the path it names.
impl From<crossfeed_fsio::FsError> for TrainError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        TrainError::io(e.path, e.source)
    }
}
