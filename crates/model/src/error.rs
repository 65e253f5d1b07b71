//! Typed errors of the model crate. Each variant names the file, key or tensor at fault so that the
//! binary can print it as is.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: key {key:?}: {message}")]
    Config { path: PathBuf, key: String, message: String },
    #[error("{path}: unsupported model_type {found:?} (supported: \"opt\", \"llama\", \"qwen2\", \"qwen3\", \"gpt2\", \"gemma2\", \"gemma3_text\", and \"gemma3\" read as its text model)")]
    UnsupportedModelType { path: PathBuf, found: String },
    #[error("{path}: no weights found (looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin)")]
    NoWeights { path: PathBuf },
    #[error("{path}: missing weight {name:?}")]
    MissingWeight { path: PathBuf, name: String },
    #[error("{path}: weight {name:?} has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: tokenizer has {tokenizer} tokens but config.json vocab_size is {vocab}")]
    VocabTooLarge { path: PathBuf, tokenizer: usize, vocab: usize },
    #[error("hub: {0}")]
    Hub(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}

/// A durable write's failure keeps the path it names.
impl From<crossfeed_fsio::FsError> for ModelError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        ModelError::io(e.path, e.source)
    }
}
