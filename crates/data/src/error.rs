//! The crate's error type.

use std::path::PathBuf;

/// Every failure of the data layer. Messages name the file, column, dataset or field involved and,
/// where the user can fix it, say how.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet error in {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: missing column `{column}` (columns present: {available})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },
    #[error("{path}:{line}: invalid JSON line: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: row {row}: {message}")]
    BadRow {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error("dataset `{repo}` (revision `{revision}`) file `{file}` is not in the Hugging Face cache at {cache} and offline mode is on; fetch it first with network access, e.g. `huggingface-cli download --repo-type dataset {repo} {file} --revision {revision}` (or unset HF_HUB_OFFLINE / `offline = false`), or point the source at a local directory")]
    NotCached {
        repo: String,
        revision: String,
        file: String,
        cache: PathBuf,
    },
    #[error("Hugging Face hub error for `{repo}` file `{file}`: {message}")]
    Hub {
        repo: String,
        file: String,
        message: String,
    },
    #[error("no data files for split `{split}` under {dir}: {hint}")]
    NoFiles {
        dir: PathBuf,
        split: String,
        hint: String,
    },
    #[error("{path}: no column `{column}`, used by {used_by} (columns present: {available})")]
    CustomColumn {
        path: PathBuf,
        column: String,
        used_by: String,
        available: String,
    },
    #[error("task {task}: split `{split}` has no rows (files: {files})")]
    EmptySplit { task: String, split: String, files: String },
    #[error("template error: {0}")]
    Template(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("source `{source_name}` has {available} items but {requested} were requested without replacement (replacement = strict)")]
    NotEnough {
        source_name: String,
        requested: usize,
        available: usize,
    },
    #[error("source `{source_name}` is empty but {requested} samples were allotted to it")]
    EmptySource { source_name: String, requested: usize },
}

/// Crate-wide result alias.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn parquet(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        DataError::Parquet {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
