//! Typed errors of the loop; each names the file, key or stage at fault.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, LoopError>;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },

    #[error("unknown config key `{key}`; valid keys here: {}", valid.join(", "))]
    UnknownKey { key: String, valid: Vec<String> },

    #[error("invalid config: {0}")]
    Config(String),

    #[error("bad override `{0}` (expected key=value, e.g. alpha=0.5 or train.lr=1e-4)")]
    Override(String),

    #[error(
        "run directory {dir} was made from a different config; nothing was changed. Differing keys:\n  {}\n(use a new --name, or delete the directory)",
        diffs.join("\n  ")
    )]
    ConfigMismatch { dir: PathBuf, diffs: Vec<String> },

    #[error("{0} is not a run directory (no config.toml)")]
    NotARun(PathBuf),

    #[error("stage {stage} needs {missing} to be done first")]
    MissingStage { stage: String, missing: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },

    #[error("eval.embed_model = {0:?} is set but no embedder was supplied to the runner")]
    NoEmbedder(String),

    #[error("embedding failed: {0}")]
    Embed(String),

    #[error("{what} is in progress elsewhere: {holder}; nothing was changed")]
    Busy { what: String, holder: String },

    #[error("{0}")]
    Workers(String),

    #[error("stopped after {0} (stop_after)")]
    Stopped(String),

    /// A request holds a token id the model has no embedding row (nor logit) for: the tokenizer is
    /// larger than the model's vocabulary.
    #[error("token id {id} is past the model's embedding table ({vocab} rows, vocab_size = {vocab}): the tokenizer ({tokenizer} ids) is larger than the model")]
    TokenPastVocab { id: u32, tokenizer: usize, vocab: usize },

    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },

    #[error(transparent)]
    Model(#[from] crossfeed_model::ModelError),

    #[error(transparent)]
    Train(#[from] crossfeed_train::TrainError),

    #[error(transparent)]
    Data(#[from] crossfeed_data::DataError),

    #[error(transparent)]
    Generate(#[from] crossfeed_generate::GenerateError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LoopError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoopError::Io { path: path.into(), source }
    }
}

/// A durable write's failure keeps the path it names.
impl From<crossfeed_fsio::FsError> for LoopError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        LoopError::io(e.path, e.source)
    }
}

/// A figure that could not be drawn names its file; one that could not be written, the path.
impl From<crossfeed_figure::FigureError> for LoopError {
    fn from(e: crossfeed_figure::FigureError) -> Self {
        match e {
            crossfeed_figure::FigureError::Draw { path, message } => LoopError::Plot { path, message },
            crossfeed_figure::FigureError::Io(e) => e.into(),
        }
    }
}
