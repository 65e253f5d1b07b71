//! One error type for the crate. Every variant names the file (or hub file, or config key) at fault,
//! because the usual failure is a model directory laid out slightly differently from all-MiniLM-L6-v2.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file that must exist is absent (e.g. `model.safetensors`, `tokenizer.json`, `config.json`).
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// A config value we cannot honour, e.g. several pooling modes at once.
    #[error("{path}: key `{key}`: {msg}")]
    Config { path: PathBuf, key: String, msg: String },
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    /// Fetching from the Hugging Face hub, or reading its cache in offline mode.
    #[error("hub {spec}: {msg}")]
    Hub { spec: String, msg: String },
    /// Loading weights into the BERT graph (names the file; candle's message names the tensor).
    #[error("weights {path}: {source}")]
    Weights { path: PathBuf, source: candle_core::Error },
    #[error("tokenizing: {0}")]
    Encode(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl EmbedError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
