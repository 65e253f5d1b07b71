//! The crate's error type. Messages name the repo, revision and file, and say what to do; none
//! carries the token.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{repo} (revision `{revision}`){} is not in the hub cache at {} and offline mode is on (HF_HUB_OFFLINE); fetch it on a machine with network access (`crossfeed fetch CONFIG`, or `huggingface-cli download {repo} --revision {revision}`) into the same cache, or pass a local directory", .file.as_ref().map(|f| format!(" file `{f}`")).unwrap_or_default(), .cache.display())]
    NotCached { repo: String, revision: String, file: Option<String>, cache: PathBuf },
    #[error("{repo}: access denied (HTTP {status}) by {endpoint}: the repo is gated or private; accept its terms on the hub and set HF_TOKEN to a token that has access")]
    Unauthorized { repo: String, status: u16, endpoint: String },
    #[error("{repo}: {what} not found on {endpoint} (HTTP 404); check the repo id, revision and file name")]
    NotFound { repo: String, what: String, endpoint: String },
    #[error("{repo} file `{file}`: {message} (a partial download is kept as a `.part` file and resumed by the next attempt)")]
    Download { repo: String, file: String, message: String },
    #[error("{repo}: cannot list revision `{revision}` on {endpoint}: {message} (offline? set HF_HUB_OFFLINE=1 to use the cache)")]
    Listing { repo: String, revision: String, endpoint: String, message: String },
    #[error("{repo} file `{file}`: downloaded {got} bytes, the hub lists {expected}; the file was removed, run again to download it")]
    Incomplete { repo: String, file: String, expected: u64, got: u64 },
    #[error("{repo} file `{file}`: sha256 {got} but the hub lists {expected}; the download was deleted (a corrupt or tampered file never enters the cache)")]
    Integrity { repo: String, file: String, expected: String, got: String },
    #[error("{repo} file `{file}`: the server names the blob {etag}, but the listing's sha256 is {expected}; refused before any cached blob was used")]
    EtagMismatch { repo: String, file: String, expected: String, etag: String },
    #[error("{repo} (revision `{revision}`): refusing the {what} {name:?}: {why}")]
    BadName { repo: String, revision: String, what: &'static str, name: String, why: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io { path: path.into(), source }
    }
}

/// A durable write's failure keeps the path it names.
impl From<crossfeed_fsio::FsError> for HubError {
    fn from(e: crossfeed_fsio::FsError) -> Self {
        HubError::io(e.path, e.source)
    }
}
