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

mod env;
mod error;
mod repo;

pub use env::{set_progress, HubEnv};
pub use error::{HubError, Result};
pub use repo::{commit_of_snapshot_dir, HubRepo, RepoKind, Snapshot};
