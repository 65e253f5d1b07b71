//! One repo at one revision: resolve it to a commit (listing online, `refs/` offline) and get its
//! files into the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};

use crate::env::HubEnv;
use crate::error::{HubError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    fn prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A revision resolved to a commit, and the files it holds (online: the hub's listing; offline: the
/// files present in the cached snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub commit: String,
    /// `<cache>/<kind>s--owner--name/snapshots/<commit>`.
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// Sizes the hub listed (empty offline); a download that ends at another size is discarded.
    pub sizes: BTreeMap<String, u64>,
    /// sha256 of the LFS files the hub listed (empty offline); a download with another one is discarded.
    pub sha256: BTreeMap<String, String>,
}

/// A repo on the hub, at a revision (branch, tag, `refs/convert/parquet`, or commit).
#[derive(Debug, Clone)]
pub struct HubRepo {
    pub env: HubEnv,
    pub kind: RepoKind,
    pub id: String,
    pub revision: String,
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `(repo id, commit)` when `dir` is a snapshot directory of a hub cache, for the run's provenance.
pub fn commit_of_snapshot_dir(dir: &Path) -> Option<(String, String)> {
    let commit = dir.file_name()?.to_str()?;
    let snaps = dir.parent()?;
    if snaps.file_name()? != "snapshots" || !is_commit(commit) {
        return None;
    }
    let folder = snaps.parent()?.file_name()?.to_str()?;
    let rest = folder.strip_prefix("models--").or_else(|| folder.strip_prefix("datasets--"))?;
    Some((rest.replace("--", "/"), commit.to_string()))
}

#[derive(Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    size: u64,
    /// `sha256` in the hub's `?blobs=true` listing (`oid` in the older form).
    #[serde(default, alias = "oid")]
    sha256: Option<String>,
}

/// Relative paths (with `/`) of every file under `dir`, sorted.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if p.is_file() {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
}

/// Writes through a synced temp file and a rename, so a concurrent reader (an offline run on the same
/// cache) never sees an empty or half ref, and a crash never leaves one.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let parent = path.parent().ok_or_else(|| HubError::io(path, std::io::Error::other("no parent directory")))?;
    std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    Ok(crossfeed_fsio::write_atomic(path, text.as_bytes())?)
}

/// `s` with every byte outside the URL-safe set percent-encoded (`/` kept when `keep_slash`).
fn url_encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b'/' if keep_slash => "/".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl HubRepo {
    /// Refuses a repo id, revision or file name that is not safe to turn into a path.
    fn check_name(&self, what: &'static str, name: &str, why: Option<&'static str>) -> Result<()> {
        match why {
            Some(why) => Err(HubError::BadName { repo: self.label(), revision: self.revision.clone(), what, name: name.to_string(), why: why.to_string() }),
            None => Ok(()),
        }
    }

    fn check_repo(&self) -> Result<()> {
        self.check_name("repo id", &self.id, crate::unsafe_repo_id(&self.id))?;
        // A revision is a branch/tag name (may contain `/`, as `refs/convert/parquet`) or a commit.
        self.check_name("revision", &self.revision, crate::unsafe_file_name(&self.revision))
    }

    /// `revision` defaults to `main`.
    pub fn new(env: HubEnv, kind: RepoKind, id: &str, revision: Option<&str>) -> Self {
        HubRepo { env, kind, id: id.to_string(), revision: revision.unwrap_or("main").to_string() }
    }

    /// The repo's folder in the cache.
    pub fn folder(&self) -> PathBuf {
        self.env.cache_dir.join(format!("{}--{}", self.kind.prefix(), self.id.replace('/', "--")))
    }

    fn label(&self) -> String {
        match self.kind {
            RepoKind::Model => self.id.clone(),
            RepoKind::Dataset => format!("dataset {}", self.id),
        }
    }

    fn hf_repo(&self) -> Repo {
        let t = match self.kind {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::with_revision(self.id.clone(), t, self.revision.clone())
    }

    fn api(&self) -> Result<hf_hub::api::sync::Api> {
        ApiBuilder::from_cache(Cache::new(self.env.cache_dir.clone()))
            .with_endpoint(self.env.endpoint.clone())
            .with_token(self.env.token.clone())
            .with_progress(false)
            .with_retries(2)
            .build()
            .map_err(|e| HubError::Listing { repo: self.label(), revision: self.revision.clone(), endpoint: self.env.endpoint.clone(), message: e.to_string() })
    }

    /// The revision as the cache has it: `refs/<revision>` (or the commit itself) and the files in
    /// its snapshot directory.
    pub fn cached(&self) -> Option<Snapshot> {
        self.check_repo().ok()?;
        let folder = self.folder();
        let commit = if is_commit(&self.revision) {
            self.revision.clone()
        } else {
            std::fs::read_to_string(folder.join("refs").join(&self.revision)).ok()?.trim().to_string()
        };
        let dir = folder.join("snapshots").join(&commit);
        if !dir.is_dir() {
            return None;
        }
        let mut files = Vec::new();
        walk(&dir, &dir, &mut files);
        files.sort();
        Some(Snapshot { commit, dir, files, sizes: BTreeMap::new(), sha256: BTreeMap::new() })
    }

    fn not_cached(&self, file: Option<&str>) -> HubError {
        HubError::NotCached { repo: self.label(), revision: self.revision.clone(), file: file.map(String::from), cache: self.env.cache_dir.clone() }
    }

    fn status_error(&self, status: u16, what: String) -> Option<HubError> {
        match status {
            401 | 403 => Some(HubError::Unauthorized { repo: self.label(), status, endpoint: self.env.endpoint.clone() }),
            404 => Some(HubError::NotFound { repo: self.label(), what, endpoint: self.env.endpoint.clone() }),
            _ => None,
        }
    }

    /// Resolves the revision: offline from the cache, online by listing it on the hub (which also
    /// points `refs/<revision>` at the listed commit).
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.check_repo()?;
        if self.env.offline {
            return self.cached().ok_or_else(|| self.not_cached(None));
        }
        let api = self.api()?;
        let listing: Listing = match api.repo(self.hf_repo()).info_request().query("blobs", "true").call() {
            Ok(mut r) => r.body_mut().read_json().map_err(|e| self.listing_error(e.to_string()))?,
            Err(ureq::Error::StatusCode(s)) => {
                return Err(self.status_error(s, format!("revision `{}`", self.revision)).unwrap_or_else(|| self.listing_error(format!("HTTP {s}"))))
            }
            Err(e) => return Err(self.listing_error(e.to_string())),
        };
        if !is_commit(&listing.sha) {
            return Err(self.listing_error(format!("the listing names commit {:?}, not a 40-hex hash", listing.sha)));
        }
        for s in &listing.siblings {
            self.check_name("file name in the listing", &s.rfilename, crate::unsafe_file_name(&s.rfilename))?;
        }
        if !is_commit(&self.revision) {
            let r = self.folder().join("refs").join(&self.revision);
            write_atomic(&r, &listing.sha)?;
        }
        let sizes = listing.siblings.iter().filter_map(|s| Some((s.rfilename.clone(), s.lfs.as_ref().map(|l| l.size).or(s.size)?))).collect();
        let sha256 = listing.siblings.iter().filter_map(|s| Some((s.rfilename.clone(), s.lfs.as_ref()?.sha256.clone()?))).collect();
        let mut files: Vec<String> = listing.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        Ok(Snapshot { dir: self.folder().join("snapshots").join(&listing.sha), commit: listing.sha, files, sizes, sha256 })
    }

    fn listing_error(&self, message: String) -> HubError {
        HubError::Listing { repo: self.label(), revision: self.revision.clone(), endpoint: self.env.endpoint.clone(), message }
    }

    /// `file` of `snap` on local disk: from the cache, or downloaded (unless offline). The name is
    /// checked first; a download that ends short (or long) of the listed size, or with another sha256
    /// than the listing's, is deleted, never left for a later run.
    pub fn get(&self, snap: &Snapshot, file: &str) -> Result<PathBuf> {
        self.check_repo()?;
        self.check_name("file name", file, crate::unsafe_file_name(file))?;
        let local = snap.dir.join(file);
        if local.is_file() {
            return Ok(local);
        }
        if self.env.offline {
            return Err(self.not_cached(Some(file)));
        }
        let kind = match self.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let url = format!("{}/{kind}{}/resolve/{}/{}", self.env.endpoint.trim_end_matches('/'), self.id, snap.commit, url_encode(file, true));
        let label = self.label();
        let d = crate::download::Downloader { endpoint: &self.env.endpoint, token: self.env.token.as_deref(), retries: 2, repo: &label, file };
        let expect = crate::download::Expect { size: snap.sizes.get(file).copied(), sha256: snap.sha256.get(file).map(String::as_str) };
        let status_error = |s: u16| self.status_error(s, format!("file `{file}` at revision `{}`", self.revision));
        d.run(&url, &self.folder(), &snap.commit, expect, &status_error)
    }

    /// Bytes of `files` in the snapshot (what a fetch reports).
    pub fn bytes(snap: &Snapshot, files: &[String]) -> u64 {
        files.iter().filter_map(|f| std::fs::metadata(snap.dir.join(f)).ok()).map(|m| m.len()).sum()
    }
}
