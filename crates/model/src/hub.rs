//! Where a model comes from: a local directory, or a hub id fetched through `hf-hub` into its normal
//! cache. In offline mode (`HF_HUB_OFFLINE=1` or `HubOptions::offline`) only the cache is read.
//! `HF_TOKEN` is passed to the hub for gated repos and never logged.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{ModelError, Result};

/// Files a checkpoint directory may hold; all but `config.json` are optional.
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Read only the local cache, never the network.
    pub offline: bool,
    /// A branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
}

impl HubOptions {
    /// Offline when asked, or when `HF_HUB_OFFLINE` is set to a true value.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
        Self { offline, revision: None }
    }
}

/// Resolves `spec` (a directory or a hub id such as `facebook/opt-350m`) to a local directory holding
/// the checkpoint files.
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if !looks_like_id {
        return Err(ModelError::Invalid(format!("{spec}: no such model directory (and not a hub id like owner/name)")));
    }
    let repo = match &opts.revision {
        Some(r) => Repo::with_revision(spec.to_string(), RepoType::Model, r.clone()),
        None => Repo::new(spec.to_string(), RepoType::Model),
    };
    if opts.offline {
        from_cache(spec, repo)
    } else {
        download(spec, repo)
    }
}

fn from_cache(spec: &str, repo: Repo) -> Result<PathBuf> {
    let cache = Cache::from_env().repo(repo);
    let config = cache.get("config.json").ok_or_else(|| {
        ModelError::Hub(format!(
            "{spec} is not in the local cache and offline mode is on; fetch it on a connected machine \
             (`huggingface-cli download {spec}`) or pass a local directory"
        ))
    })?;
    parent(&config)
}

fn download(spec: &str, repo: Repo) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_token(std::env::var("HF_TOKEN").ok())
        .with_progress(false)
        .build()
        .map_err(|e| ModelError::Hub(format!("{spec}: {e}")))?;
    let r = api.repo(repo);
    let config = r.get("config.json").map_err(|e| ModelError::Hub(format!("{spec}/config.json: {e}")))?;
    for f in OPTIONAL_FILES {
        let _ = r.get(f);
    }
    if r.get("model.safetensors").is_err() {
        if let Ok(index) = r.get("model.safetensors.index.json") {
            for shard in shard_files(&index)? {
                r.get(&shard).map_err(|e| ModelError::Hub(format!("{spec}/{shard}: {e}")))?;
            }
        } else {
            r.get("pytorch_model.bin").map_err(|e| ModelError::Hub(format!("{spec}: no weights: {e}")))?;
        }
    }
    parent(&config)
}

fn parent(p: &Path) -> Result<PathBuf> {
    p.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| ModelError::Invalid(format!("{}: has no parent directory", p.display())))
}

/// The shard file names of a `model.safetensors.index.json`, deduplicated, in order.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.into(), source })?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Invalid(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}
