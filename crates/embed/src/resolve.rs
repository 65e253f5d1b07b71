//! Turns a model spec (a local directory, or a hub id such as `sentence-transformers/all-MiniLM-L6-v2`)
//! into a local directory. Own resolver rather than `crossfeed_model::hub::resolve` because a
//! sentence-transformers repo needs files that resolver does not fetch (`modules.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`). With `HF_HUB_OFFLINE=1` (or
//! `ResolveOptions::offline`) only the local hub cache is read. Endpoint, token and cache come from
//! `crossfeed-hub`, as for models and datasets; `HF_TOKEN` is passed through, never logged.

use std::path::{Path, PathBuf};

use crossfeed_hub::{HubEnv, HubRepo, RepoKind};

use crate::error::EmbedError;

/// Files the embedder needs; the hub snapshot directory keeps the repo's layout, so `1_Pooling/...`
/// lands next to `config.json`.
pub const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
pub const OPTIONAL_FILES: &[&str] = &["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"];

#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Read only the local hub cache, never the network.
    pub offline: bool,
    /// Branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
}

impl ResolveOptions {
    /// Offline when `HF_HUB_OFFLINE` is `1`/`true`/`yes`/`on`.
    pub fn from_env() -> Self {
        Self { offline: HubEnv::from_env().offline, revision: None }
    }
}

/// A directory as given, or the hub-cache snapshot directory of a hub id (downloading unless offline).
pub fn resolve_model_dir(spec: &str, opts: &ResolveOptions) -> Result<PathBuf, EmbedError> {
    let p = Path::new(spec);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/') && !spec.contains('\\');
    if !looks_like_id {
        return Err(EmbedError::Hub {
            spec: spec.into(),
            msg: "no such directory, and not a hub id like owner/name".into(),
        });
    }
    let mut env = HubEnv::from_env();
    env.offline |= opts.offline;
    let repo = HubRepo::new(env, RepoKind::Model, spec, opts.revision.as_deref());
    let hub = |e: crossfeed_hub::HubError| EmbedError::Hub { spec: spec.into(), msg: e.to_string() };
    let snap = repo.snapshot().map_err(hub)?;
    for f in REQUIRED_FILES {
        repo.get(&snap, f).map_err(hub)?;
    }
    // Absent in some repos; the loader falls back to documented defaults.
    for f in OPTIONAL_FILES.iter().filter(|f| repo.env.offline || snap.files.iter().any(|x| x.as_str() == **f)) {
        match repo.get(&snap, f) {
            Ok(_) | Err(crossfeed_hub::HubError::NotCached { .. }) => {}
            Err(e) => return Err(hub(e)),
        }
    }
    Ok(snap.dir)
}
