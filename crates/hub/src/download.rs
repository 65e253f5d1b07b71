//! Downloading one file of a listed revision into Python's cache layout (`blobs/<etag>`,
//! `snapshots/<commit>/<file>` → relative symlink, `refs/<revision>`), treating the server as untrusted:
//! the file name and the etag are checked before they touch a path, the token goes only to the
//! endpoint's own host (a redirect to the CDN gets none, as `huggingface_hub`/`requests` do), a
//! download of the wrong size or (for LFS files) the wrong sha256 never enters the cache, and a cut
//! download keeps its bytes in `blobs/<etag>.part` for the next attempt to resume.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::HubError;

/// What a download is checked against (from the revision's listing).
pub(crate) struct Expect<'a> {
    pub size: Option<u64>,
    pub sha256: Option<&'a str>,
}

/// The part of a URL that decides where a token may go: `scheme://host:port`.
pub fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    &url[..end]
}

/// An etag the hub gives a file: a git blob sha1 (40 hex) or an LFS sha256 (64 hex). Anything else
/// would become a path under `blobs/`, so it is refused.
fn valid_etag(raw: &str) -> Option<String> {
    let e = raw.trim().trim_start_matches("W/").trim_matches('"');
    ((e.len() == 40 || e.len() == 64) && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

pub(crate) struct Downloader<'a> {
    pub endpoint: &'a str,
    pub token: Option<&'a str>,
    pub retries: usize,
    /// For errors: the repo label and the file name.
    pub repo: &'a str,
    pub file: &'a str,
}

struct Head {
    etag: String,
    commit: String,
    /// Where the bytes are (the CDN for LFS files).
    location: String,
}

impl Downloader<'_> {
    fn err(&self, message: impl Into<String>) -> HubError {
        HubError::Download { repo: self.repo.to_string(), file: self.file.to_string(), message: message.into() }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().new_agent()
    }

    /// A GET that carries the token only when `url` is on the endpoint's own host.
    fn get(&self, agent: &ureq::Agent, url: &str, range: Option<String>) -> Result<ureq::http::Response<ureq::Body>, HubError> {
        let mut req = agent.get(url);
        if let (Some(t), true) = (self.token, origin(url) == origin(self.endpoint)) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.call().map_err(|e| self.err(e.to_string()))
    }

    fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// The resolve URL's answer without following it: etag, commit, and where the bytes are.
    fn head(&self, agent: &ureq::Agent, url: &str, status_error: &dyn Fn(u16) -> Option<HubError>) -> Result<Head, HubError> {
        let mut url = url.to_string();
        // Relative redirects (a renamed repo) stay on the hub; the first absolute one is the CDN.
        for _ in 0..5 {
            let resp = self.get(agent, &url, Some("bytes=0-0".into()))?;
            let status = resp.status().as_u16();
            if let Some(e) = status_error(status) {
                return Err(e);
            }
            let location = Self::header(&resp, "location");
            if (300..400).contains(&status) && location.as_deref().is_some_and(|l| l.starts_with('/')) {
                url = format!("{}{}", origin(self.endpoint), location.unwrap_or_default());
                continue;
            }
            let raw_etag = Self::header(&resp, "x-linked-etag").or_else(|| Self::header(&resp, "etag")).ok_or_else(|| self.err("the server sent no ETag"))?;
            let etag = valid_etag(&raw_etag).ok_or_else(|| self.err(format!("the server sent the etag {raw_etag:?}, not a 40- or 64-hex hash")))?;
            let commit = Self::header(&resp, "x-repo-commit").ok_or_else(|| self.err("the server sent no X-Repo-Commit"))?;
            let location = match (status, location) {
                (300..=399, Some(l)) => l,
                (300..=399, None) => return Err(self.err(format!("HTTP {status} without a Location"))),
                (200 | 206, _) => url,
                (s, _) => return Err(self.err(format!("HTTP {s}"))),
            };
            return Ok(Head { etag, commit, location });
        }
        Err(self.err("more than 5 redirects"))
    }

    /// Downloads into `folder` (the repo's cache folder) for `commit`; returns the snapshot path.
    pub(crate) fn run(&self, url: &str, folder: &Path, commit: &str, expect: Expect, status_error: &dyn Fn(u16) -> Option<HubError>) -> Result<PathBuf, HubError> {
        let agent = Self::agent();
        let head = self.head(&agent, url, status_error)?;
        if head.commit != commit {
            return Err(self.err(format!("the revision moved from commit {commit} to {} while downloading; run again", head.commit)));
        }
        // A cached `blobs/<etag>` is used without being read again, so its name must be the hash the
        // listing promised (LFS files: both are the sha256) before any snapshot points at it.
        if let Some(want) = expect.sha256.map(str::to_ascii_lowercase).filter(|w| *w != head.etag) {
            return Err(HubError::EtagMismatch { repo: self.repo.to_string(), file: self.file.to_string(), expected: want, etag: head.etag });
        }
        let blobs = folder.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let blob = blobs.join(&head.etag);
        let pointer = folder.join("snapshots").join(commit).join(self.file);
        if !blob.is_file() {
            let part = blobs.join(format!("{}.part", head.etag));
            let mut attempt = 0;
            loop {
                match self.fetch_into(&agent, &head.location, &part, expect.size) {
                    Ok(()) => break,
                    Err(e @ HubError::Incomplete { .. }) => return Err(e),
                    Err(e) if attempt >= self.retries => return Err(e),
                    Err(_) => attempt += 1,
                }
            }
            let got = std::fs::metadata(&part).map_err(|e| HubError::io(&part, e))?.len();
            if let Some(want) = expect.size.filter(|&w| w != got) {
                let _ = std::fs::remove_file(&part);
                return Err(HubError::Incomplete { repo: self.repo.to_string(), file: self.file.to_string(), expected: want, got });
            }
            // LFS files: the sha256 the listing gives (and the etag, which is the same hash).
            let want = expect.sha256.map(str::to_ascii_lowercase).or_else(|| (head.etag.len() == 64).then(|| head.etag.clone()));
            if let Some(want) = want {
                let got = sha256_file(&part)?;
                if got != want {
                    let _ = std::fs::remove_file(&part);
                    return Err(HubError::Integrity { repo: self.repo.to_string(), file: self.file.to_string(), expected: want, got });
                }
            }
            crossfeed_fsio::commit(&part, &blob)?;
        }
        let parent = pointer.parent().ok_or_else(|| self.err("no snapshot directory"))?;
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        // ../../blobs/<etag> from snapshots/<commit>/, one more ../ per directory of the file name.
        let depth = self.file.matches('/').count();
        let target: PathBuf = std::iter::repeat_n("..", depth + 2).collect::<PathBuf>().join("blobs").join(&head.etag);
        let _ = std::fs::remove_file(&pointer);
        std::os::unix::fs::symlink(&target, &pointer).map_err(|e| HubError::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Appends the rest of the file to `part` (a `Range` from what it already holds).
    fn fetch_into(&self, agent: &ureq::Agent, location: &str, part: &Path, total: Option<u64>) -> Result<(), HubError> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let mut url = location.to_string();
        for _ in 0..5 {
            let resp = self.get(agent, &url, Some(format!("bytes={have}-")))?;
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let l = Self::header(&resp, "location").ok_or_else(|| self.err(format!("HTTP {status} without a Location")))?;
                url = if l.starts_with('/') { format!("{}{l}", origin(&url)) } else { l };
                continue;
            }
            let mut file = match status {
                206 => std::fs::OpenOptions::new().append(true).create(true).open(part),
                // The server ignored the range: start over.
                200 => std::fs::File::create(part),
                416 if have > 0 => return Ok(()),
                s => return Err(self.err(format!("HTTP {s} from {}", origin(&url)))),
            }
            .map_err(|e| HubError::io(part, e))?;
            let mut reader = resp.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 16];
            let bar = crate::env::progress().then(|| {
                let b = indicatif::ProgressBar::new(total.unwrap_or(0));
                b.set_message(self.file.to_string());
                b.set_position(if status == 206 { have } else { 0 });
                b
            });
            let mut written = if status == 206 { have } else { 0 };
            loop {
                let n = reader.read(&mut buf).map_err(|e| self.err(format!("connection lost: {e}")))?;
                if n == 0 {
                    break;
                }
                written += n as u64;
                // An endless or oversized body would fill the disk before the size check: stop at
                // one byte past the listed size.
                if let Some(t) = total.filter(|&t| written > t) {
                    drop(file);
                    let _ = std::fs::remove_file(part);
                    return Err(HubError::Incomplete { repo: self.repo.to_string(), file: self.file.to_string(), expected: t, got: written });
                }
                file.write_all(&buf[..n]).map_err(|e| HubError::io(part, e))?;
                if let Some(b) = &bar {
                    b.inc(n as u64);
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return file.sync_all().map_err(|e| HubError::io(part, e));
        }
        Err(self.err("more than 5 redirects"))
    }
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut f = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
