//! Where a model comes from: a local directory as given, or a hub id whose files are fetched into the
//! cache. The one resolver of the causal LMs (crossfeed-model) and the sentence embedder
//! (crossfeed-embed); each passes the files it needs ([`Files`]), and the endpoint, token, cache and
//! offline mode are [`HubEnv`]'s, as for datasets.

use std::path::{Path, PathBuf};

use crate::env::HubEnv;
use crate::error::HubError;
use crate::repo::{HubRepo, RepoKind, Snapshot};

/// How to resolve a hub id.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Read only the local cache, never the network (also when `HF_HUB_OFFLINE` says so).
    pub offline: bool,
    /// A branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
}

impl ResolveOptions {
    /// Offline when `HF_HUB_OFFLINE` is set to a true value.
    pub fn from_env() -> Self {
        Self { offline: HubEnv::from_env().offline, revision: None }
    }
}

/// The files of a model repo a caller needs (names relative to the repo; `1_Pooling/config.json` keeps
/// its folder).
#[derive(Debug, Clone, Copy, Default)]
pub struct Files<'a> {
    /// Fetched always. Online, one the listing lacks is [`ResolveError::Missing`]; offline, one not in
    /// the cache is the hub's `NotCached` error (which says how to fetch it).
    pub required: &'a [&'a str],
    /// Fetched when the listing has them; offline, used when cached and otherwise left out.
    pub optional: &'a [&'a str],
    /// Alternatives (the weights' formats), in order of preference: online, the first the listing has
    /// is fetched, none is [`ResolveError::NoneOf`]. Offline they are not checked: the loader names the
    /// file it misses.
    pub one_of: &'a [&'a str],
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{spec}: no such directory, and not a hub id like owner/name")]
    NotAnId { spec: String },
    #[error("{spec} (revision `{revision}`) has no {file}")]
    Missing { spec: String, revision: String, file: String },
    #[error("{spec} (revision `{revision}`) has none of {}", files.join(", "))]
    NoneOf { spec: String, revision: String, files: Vec<String> },
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// A resolved model: its directory, and for a hub id the snapshot it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The directory as given, or `<cache>/models--owner--name/snapshots/<commit>`.
    pub dir: PathBuf,
    /// The alternative of [`Files::one_of`] that was fetched (None for a local directory, offline, or
    /// without alternatives).
    pub chosen: Option<String>,
    hub: Option<(HubRepo, Snapshot)>,
}

impl Resolved {
    /// Fetches one more file of the snapshot, for files another one names (an index's shards); in a
    /// local directory the path as is.
    pub fn get(&self, file: &str) -> Result<PathBuf, ResolveError> {
        match &self.hub {
            Some((repo, snap)) => Ok(repo.get(snap, file)?),
            None => Ok(self.dir.join(file)),
        }
    }
}

/// Resolves `spec` (a directory, or a hub id such as `facebook/opt-350m`) to a local directory holding
/// `files` (for a hub id, downloading what the cache lacks unless offline), with the environment's hub.
pub fn resolve(spec: &str, opts: &ResolveOptions, files: &Files) -> Result<Resolved, ResolveError> {
    resolve_in(HubEnv::from_env(), spec, opts, files)
}

/// [`resolve`] against the hub and cache of `env` (offline when `env` or `opts` says so).
pub fn resolve_in(mut env: HubEnv, spec: &str, opts: &ResolveOptions, files: &Files) -> Result<Resolved, ResolveError> {
    let p = Path::new(spec);
    if p.is_dir() {
        return Ok(Resolved { dir: p.to_path_buf(), chosen: None, hub: None });
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/') && !spec.contains('\\');
    if !looks_like_id {
        return Err(ResolveError::NotAnId { spec: spec.into() });
    }
    env.offline |= opts.offline;
    let repo = HubRepo::new(env, RepoKind::Model, spec, opts.revision.as_deref());
    let snap = repo.snapshot()?;
    let listed = |f: &str| snap.files.iter().any(|x| x == f);
    let offline = repo.env.offline;
    let mut chosen = None;
    if !offline {
        if let Some(f) = files.required.iter().find(|f| !listed(f)) {
            return Err(ResolveError::Missing { spec: spec.into(), revision: repo.revision.clone(), file: f.to_string() });
        }
        if !files.one_of.is_empty() {
            let f = files.one_of.iter().find(|f| listed(f)).ok_or_else(|| ResolveError::NoneOf {
                spec: spec.into(),
                revision: repo.revision.clone(),
                files: files.one_of.iter().map(|f| f.to_string()).collect(),
            })?;
            chosen = Some(f.to_string());
        }
    }
    for f in files.required {
        repo.get(&snap, f)?;
    }
    for f in files.optional.iter().filter(|f| offline || listed(f)) {
        match repo.get(&snap, f) {
            Ok(_) | Err(HubError::NotCached { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(f) = &chosen {
        repo.get(&snap, f)?;
    }
    Ok(Resolved { dir: snap.dir.clone(), chosen, hub: Some((repo, snap)) })
}
