//! The hub settings, read from the environment the way Python's `huggingface_hub` reads them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static PROGRESS: AtomicBool = AtomicBool::new(false);

/// Draw a progress bar on stderr for each download (the `fetch` command turns this on; libraries
/// never print on their own).
pub fn set_progress(on: bool) {
    PROGRESS.store(on, Ordering::Relaxed);
}

pub(crate) fn progress() -> bool {
    PROGRESS.load(Ordering::Relaxed)
}

/// Where and how to reach the hub. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// `HF_ENDPOINT` without a trailing slash; default `https://huggingface.co`.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer …`; never logged or written.
    pub token: Option<String>,
    /// Read only the cache.
    pub offline: bool,
    pub cache_dir: PathBuf,
}

impl std::fmt::Debug for HubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEnv")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> PathBuf {
    if let Some(h) = var("HF_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("huggingface");
    }
    let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface")
}

impl HubEnv {
    /// Settings from `HF_ENDPOINT`, `HF_TOKEN` (else the file at `HF_TOKEN_PATH` or `HF_HOME/token`),
    /// `HF_HUB_OFFLINE` (`1`/`true`/`yes`/`on`) and `HF_HUB_CACHE` / `HF_HOME`.
    pub fn from_env() -> Self {
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()).trim_end_matches('/').to_string();
        let token = var("HF_TOKEN").map(|t| t.trim().to_string()).or_else(|| {
            let path = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home().join("token"));
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home().join("hub"));
        HubEnv { endpoint, token, offline, cache_dir }
    }
}
