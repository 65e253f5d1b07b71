//! Hugging Face hub access through `hf-hub` (sync API) and the standard cache layout
//! (`<cache>/datasets--<org>--<name>/{refs/<revision>, snapshots/<commit>/<file>}`).
//!
//! Offline mode (`HF_HUB_OFFLINE=1`, or `offline = true` in the source config) only reads the
//! cache; a file that is not there is a [`DataError::NotCached`] that says how to fetch it.
//! Revisions may be branch names (`main`), refs (`refs/convert/parquet`) or 40-hex commit hashes;
//! every resolved file reports the commit it came from, for the run record.

use crate::error::{DataError, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The hub cache directory: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var("HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Directory of a dataset repo in the cache.
pub fn repo_cache_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("datasets--{}", repo.replace('/', "--")))
}

/// The snapshot directory a revision resolves to in the cache, if any.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<(String, PathBuf)> {
    let dir = repo_cache_dir(cache, repo);
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        std::fs::read_to_string(dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    let snap = dir.join("snapshots").join(&commit);
    snap.is_dir().then_some((commit, snap))
}

/// Hub access settings for one dataset.
#[derive(Debug, Clone)]
pub struct Hub {
    pub repo: String,
    pub revision: String,
    pub offline: bool,
    pub cache_dir: PathBuf,
}

impl Hub {
    fn not_cached(&self, file: &str) -> DataError {
        DataError::NotCached {
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            file: file.to_string(),
            cache: self.cache_dir.clone(),
        }
    }

    fn hub_err(&self, file: &str, e: impl std::fmt::Display) -> DataError {
        DataError::Hub {
            repo: self.repo.clone(),
            file: file.to_string(),
            message: e.to_string(),
        }
    }

    /// Local path of `file` at this revision: from the cache, or downloaded when online.
    pub fn get(&self, file: &str) -> Result<ResolvedFile> {
        let resolved = |commit: String, path: PathBuf| ResolvedFile {
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            commit: Some(commit),
            file: file.to_string(),
            path,
        };
        if let Some((commit, snap)) = cached_snapshot(&self.cache_dir, &self.repo, &self.revision) {
            let p = snap.join(file);
            if p.exists() {
                return Ok(resolved(commit, p));
            }
        }
        if self.offline {
            return Err(self.not_cached(file));
        }
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(self.cache_dir.clone()))
            .with_progress(false)
            .build()
            .map_err(|e| self.hub_err(file, e))?;
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Dataset, self.revision.clone());
        let path = api.repo(repo).get(file).map_err(|e| self.hub_err(file, e))?;
        // …/snapshots/<commit>/<file>
        let mut commit = path.clone();
        for _ in 0..Path::new(file).components().count() {
            commit.pop();
        }
        let commit = commit.file_name().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(resolved(commit, path))
    }

    /// Every file path in the repo at this revision (offline: the files present in the cached
    /// snapshot).
    pub fn list(&self) -> Result<Vec<String>> {
        if self.offline {
            let (_, snap) = cached_snapshot(&self.cache_dir, &self.repo, &self.revision).ok_or_else(|| self.not_cached("<file listing>"))?;
            let mut out = Vec::new();
            walk(&snap, &snap, &mut out);
            out.sort();
            return Ok(out);
        }
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(self.cache_dir.clone()))
            .with_progress(false)
            .build()
            .map_err(|e| self.hub_err("<file listing>", e))?;
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Dataset, self.revision.clone());
        let info = api.repo(repo).info().map_err(|e| self.hub_err("<file listing>", e))?;
        let mut out: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        out.sort();
        Ok(out)
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
