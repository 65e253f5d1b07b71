//! Where a model comes from: a local directory, or a hub id fetched through `crossfeed-hub` (the
//! endpoint, token, offline mode and cache that datasets and the embedder use too). In offline mode
//! (`HF_HUB_OFFLINE=1` or `HubOptions::offline`) only the cache is read. `HF_TOKEN` is passed to the
//! hub for gated repos and never logged.

use std::path::{Path, PathBuf};

use crossfeed_hub::{HubEnv, HubRepo, RepoKind};

use crate::error::{ModelError, Result};

/// Files a checkpoint directory may hold; all but `config.json` and the weights are optional.
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
        Self { offline: HubEnv::from_env().offline, revision: None }
    }
}

/// Resolves `spec` (a directory or a hub id such as `facebook/opt-350m`) to a local directory holding
/// the checkpoint files (for a hub id, `<cache>/models--owner--name/snapshots/<commit>`).
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if !looks_like_id {
        return Err(ModelError::Invalid(format!("{spec}: no such model directory (and not a hub id like owner/name)")));
    }
    let mut env = HubEnv::from_env();
    env.offline |= opts.offline;
    let repo = HubRepo::new(env, RepoKind::Model, spec, opts.revision.as_deref());
    let hub = |e: crossfeed_hub::HubError| ModelError::Hub(e.to_string());
    let snap = repo.snapshot().map_err(hub)?;
    if repo.env.offline {
        repo.get(&snap, "config.json").map_err(hub)?;
        return Ok(snap.dir);
    }
    let has = |f: &str| snap.files.iter().any(|x| x == f);
    let get = |f: &str| repo.get(&snap, f).map_err(hub);
    if !has("config.json") {
        return Err(ModelError::Hub(format!("{spec} (revision `{}`) has no config.json: not a transformers checkpoint", repo.revision)));
    }
    get("config.json")?;
    for f in OPTIONAL_FILES.iter().filter(|f| has(f)) {
        get(f)?;
    }
    if has("model.safetensors") {
        get("model.safetensors")?;
    } else if has("model.safetensors.index.json") {
        for shard in shard_files(&get("model.safetensors.index.json")?)? {
            get(&shard)?;
        }
    } else if has("pytorch_model.bin") {
        get("pytorch_model.bin")?;
    } else {
        return Err(ModelError::Hub(format!(
            "{spec} (revision `{}`) has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin",
            repo.revision
        )));
    }
    Ok(snap.dir)
}

/// The shard file names of a `model.safetensors.index.json`, deduplicated, in order.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.into(), source })?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Invalid(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
    // A shard name becomes a path (and a hub download): `../..` or an absolute path would read or
    // write outside the checkpoint, so it is refused whether the index came from the hub or a folder.
    if let Some((f, why)) = files.iter().find_map(|f| crossfeed_hub::unsafe_file_name(f).map(|w| (f, w))) {
        return Err(ModelError::Invalid(format!("{}: weight_map names the shard {f:?}: {why}; refused", index.display())));
    }
    files.sort();
    files.dedup();
    Ok(files)
}
