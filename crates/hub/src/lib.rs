//! crossfeed-hub — the one place that talks to the Hugging Face hub, so models, datasets and the
//! sentence embedder agree on the endpoint (`HF_ENDPOINT`), the token (`HF_TOKEN`, else the token
//! file `huggingface-cli login` writes), offline mode (`HF_HUB_OFFLINE`) and the cache directory
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
//!
//! The cache has the layout of Python's `huggingface_hub` (`models--owner--name/{blobs,refs,snapshots}`),
//! so one cache serves both. Downloads go through `hf-hub` (blob named by its etag, a `.part` file
//! resumed with a range request, a relative symlink in `snapshots/<commit>/`); on top of it this crate
//! lists the revision first (one request: the commit and every file's size), checks each finished
//! file against the listed size, and keeps `refs/<revision>` pointing at the commit it resolved.

mod download;
mod env;
mod error;
mod repo;
mod resolve;

pub use download::{origin, sha256_file};
pub use env::{set_progress, HubEnv};
pub use error::{HubError, Result};
pub use repo::{commit_of_snapshot_dir, HubRepo, RepoKind, Snapshot};
pub use resolve::{resolve, resolve_in, Files, ResolveError, ResolveOptions, Resolved};

/// Why `name` is not a safe relative file name of a repo (None when it is): a relative path of normal
/// components — no `..`, no `.`, no empty component, no absolute path, no backslash, no NUL or control
/// character. Every name from a listing, an index's `weight_map` or any repo file is checked with this
/// before it becomes a path.
pub fn unsafe_file_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.starts_with('/') {
        return Some("it is an absolute path");
    }
    if name.contains('\\') {
        return Some("it contains a backslash");
    }
    if name.chars().any(char::is_control) {
        return Some("it contains a control character");
    }
    if name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Some("it has an empty, `.` or `..` component");
    }
    None
}

/// Why a repo id (`owner/name` or `name`) or revision is unsafe to put in a path or URL.
pub fn unsafe_repo_id(id: &str) -> Option<&'static str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let parts: Vec<&str> = id.split('/').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || !p.chars().all(ok)) {
        return Some("a repo id is `owner/name` of letters, digits, `-`, `_` and `.`");
    }
    None
}
