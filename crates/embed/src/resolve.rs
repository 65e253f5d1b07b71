//! Turns a model spec (a local directory, or a hub id such as `sentence-transformers/all-MiniLM-L6-v2`)
//! into a local directory. Own resolver rather than `crossfeed_model::hub::resolve` because a
//! sentence-transformers repo needs files that resolver does not fetch (`modules.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`). With `HF_HUB_OFFLINE=1` (or
//! `ResolveOptions::offline`) only the local hub cache is read. `HF_TOKEN` is passed through, never logged.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

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
    /// Offline when `HF_HUB_OFFLINE` is `1`/`true`/`yes`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self { offline, revision: None }
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
    let repo = match &opts.revision {
        Some(r) => Repo::with_revision(spec.to_string(), RepoType::Model, r.clone()),
        None => Repo::new(spec.to_string(), RepoType::Model),
    };
    let config = if opts.offline {
        let cache = Cache::from_env().repo(repo);
        for f in REQUIRED_FILES {
            if cache.get(f).is_none() {
                return Err(EmbedError::Hub {
                    spec: spec.into(),
                    msg: format!("{f} is not in the local hub cache and offline mode is on (HF_HUB_OFFLINE); download it on a connected machine or pass a directory"),
                });
            }
        }
        cache.get("config.json").expect("checked above")
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_token(std::env::var("HF_TOKEN").ok())
            .with_progress(false)
            .build()
            .map_err(|e| EmbedError::Hub {
                spec: spec.into(),
                msg: e.to_string(),
            })?;
        let r = api.repo(repo);
        let mut config = None;
        for f in REQUIRED_FILES {
            let got = r.get(f).map_err(|e| EmbedError::Hub {
                spec: spec.into(),
                msg: format!("{f}: {e}"),
            })?;
            if *f == "config.json" {
                config = Some(got);
            }
        }
        for f in OPTIONAL_FILES {
            let _ = r.get(f); // absent in some repos; the loader falls back to documented defaults
        }
        config.expect("config.json is in REQUIRED_FILES")
    };
    config.parent().map(Path::to_path_buf).ok_or_else(|| EmbedError::Hub {
        spec: spec.into(),
        msg: "cached config.json has no parent directory".into(),
    })
}
