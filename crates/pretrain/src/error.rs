//! Typed errors of the base-model build; each names the file or stage at fault.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, PretrainError>;

#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// Fitting or saving the BPE tokenizer failed.
    #[error("tokenizer ({path}): {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// The base config is unusable (message names the key).
    #[error("base config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] crossfeed_model::ModelError),
    #[error(transparent)]
    Train(#[from] crossfeed_train::TrainError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl PretrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PretrainError::Io { path: path.into(), source }
    }
}

/// A durable write's failure keeps the path it names.
impl From<crossfeed_fsio::FsError> for PretrainError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        PretrainError::io(e.path, e.source)
    }
}
