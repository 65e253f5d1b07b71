//! Dataset repos on the Hugging Face hub, through `crossfeed-hub` (the endpoint, token, offline
//! mode and cache that models and the embedder use too; the cache is Python's layout,
//! `<cache>/datasets--<org>--<name>/{refs/<revision>, snapshots/<commit>/<file>}`).
//!
//! Offline mode (`HF_HUB_OFFLINE=1`, or `offline = true` in the source config) only reads the
//! cache; a file that is not there is a [`DataError::NotCached`] that says how to fetch it.
//! Revisions may be branch names (`main`), refs (`refs/convert/parquet`) or 40-hex commit hashes;
//! every resolved file reports the commit it came from, for the run record.

use crate::error::{DataError, Result};
use crossfeed_hub::{HubEnv, HubError, HubRepo, RepoKind, Snapshot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A dataset file on local disk and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedFile {
    /// `owner/name` for hub files, the source directory for local ones.
    pub repo: String,
    /// Requested revision (`local` for local files).
    pub revision: String,
    /// Commit hash the file was resolved to, when known.
    pub commit: Option<String>,
    /// Path inside the repo / source directory.
    pub file: String,
    /// Path on disk.
    pub path: PathBuf,
}

/// True when `HF_HUB_OFFLINE` is set to `1`, `true`, `yes` or `on`.
pub fn offline_from_env() -> bool {
    HubEnv::from_env().offline
}

/// The hub cache directory: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    HubEnv::from_env().cache_dir
}

/// One dataset repo at one revision; the revision is resolved (listed online, read from
/// `refs/` offline) once, on first use.
#[derive(Debug)]
pub struct Hub {
    repo: HubRepo,
    snapshot: OnceLock<Snapshot>,
}

impl Hub {
    /// `HF_ENDPOINT` and `HF_TOKEN` come from the environment; offline mode and the cache as given.
    pub fn new(repo: &str, revision: &str, offline: bool, cache_dir: PathBuf) -> Self {
        let env = HubEnv { offline, cache_dir, ..HubEnv::from_env() };
        Hub { repo: HubRepo::new(env, RepoKind::Dataset, repo, Some(revision)), snapshot: OnceLock::new() }
    }

    fn err(&self, file: &str, e: HubError) -> DataError {
        match e {
            HubError::NotCached { .. } => DataError::NotCached {
                repo: self.repo.id.clone(),
                revision: self.repo.revision.clone(),
                file: file.to_string(),
                cache: self.repo.env.cache_dir.clone(),
            },
            e => DataError::Hub { repo: self.repo.id.clone(), file: file.to_string(), message: e.to_string() },
        }
    }

    fn snapshot(&self, file: &str) -> Result<&Snapshot> {
        if let Some(s) = self.snapshot.get() {
            return Ok(s);
        }
        let s = self.repo.snapshot().map_err(|e| self.err(file, e))?;
        Ok(self.snapshot.get_or_init(|| s))
    }

    /// Local path of `file` at this revision: from the cache, or downloaded when online.
    pub fn get(&self, file: &str) -> Result<ResolvedFile> {
        let snap = self.snapshot(file)?;
        let path = self.repo.get(snap, file).map_err(|e| self.err(file, e))?;
        Ok(ResolvedFile {
            repo: self.repo.id.clone(),
            revision: self.repo.revision.clone(),
            commit: Some(snap.commit.clone()),
            file: file.to_string(),
            path,
        })
    }

    /// `(repo id, requested revision)`.
    pub fn name(&self) -> (&str, &str) {
        (&self.repo.id, &self.repo.revision)
    }

    /// Every file path in the repo at this revision (offline: the files present in the cached
    /// snapshot).
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self.snapshot("<file listing>")?.files.clone())
    }
}

/// Relative paths (with `/`) of all files under `dir`.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
}

/// Does repo-relative `file` hold rows of `split` (within config directory `config`, if given)?
/// Matches `<config>/<split>-*.{parquet,jsonl}`, `<config>/<split>.{parquet,jsonl,json}`, and the
/// dataset-viewer conversion layout `<config>/<split>/*.parquet` or `<config>/partial-<split>/*`.
pub fn file_matches_split(file: &str, config: Option<&str>, split: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    let Some((name, dirs)) = parts.split_last() else { return false };
    if crate::files::FileFormat::of(Path::new(name)).is_none() {
        return false;
    }
    let dirs: &[&str] = match config {
        Some(c) => match dirs.iter().position(|d| *d == c) {
            Some(i) => &dirs[i + 1..],
            None => return false,
        },
        None => dirs,
    };
    let partial = format!("partial-{split}");
    if dirs.iter().any(|d| *d == split || *d == partial) {
        return true;
    }
    let stem = name.split('.').next().unwrap_or("");
    stem == split || name.starts_with(&format!("{split}-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matching() {
        assert!(file_matches_split("data/train-00000-of-00001.parquet", Some("data"), "train"));
        assert!(!file_matches_split("data/test-00000-of-00001.parquet", Some("data"), "train"));
        assert!(file_matches_split("plain_text/train/0000.parquet", Some("plain_text"), "train"));
        assert!(file_matches_split("plain_text/partial-train/0003.parquet", Some("plain_text"), "train"));
        assert!(file_matches_split("plain_text/train-00003-of-00010.parquet", Some("plain_text"), "train"));
        assert!(!file_matches_split("README.md", None, "train"));
        assert!(file_matches_split("validation.jsonl", None, "validation"));
        assert!(!file_matches_split("ARC-Easy/train-00000-of-00001.parquet", Some("ARC-Challenge"), "train"));
    }
}
