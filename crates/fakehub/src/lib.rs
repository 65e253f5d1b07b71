//! crossfeed-fakehub — a Hugging Face hub for tests (std only, 127.0.0.1, a random port; its "CDN" on a
//! second loopback address, 127.0.0.2, so a test sees which host got the token), serving
//! repos from fixture directories with the URL scheme and headers `hf-hub` 0.5 and Python's
//! `huggingface_hub` rely on:
//!
//! - `GET|HEAD /{id}/resolve/{rev}/{file}` (models) and `/datasets/{id}/resolve/{rev}/{file}`, the
//!   revision URL-encoded (`refs%2Fconvert%2Fparquet`). Small files answer directly with `ETag`
//!   (quoted) and `X-Repo-Commit`; large ("LFS") files answer `302` with an absolute `Location` on
//!   the "CDN" (`/cdn/{sha256}`), `X-Linked-Etag`, `X-Linked-Size` and `X-Repo-Commit`. A renamed repo
//!   answers `307` with a relative `Location` (as the hub does for `bookcorpus` →
//!   `bookcorpus/bookcorpus`).
//! - `Range: bytes=a-b` / `bytes=a-` → `206` with `Content-Range: bytes a-b/total` (the metadata
//!   request asks for `bytes=0-0`; a resumed download asks for the rest).
//! - `GET /api/{models,datasets}/{id}/revision/{rev}` → `{"sha", "siblings": [{"rfilename", "size",
//!   "lfs"}]}`.
//! - `401` for a gated repo without the right `Authorization: Bearer` token, `404` (with the hub's
//!   `X-Error-Code`) for a missing repo, revision or file.
//! - [`FakeHub::cut`] makes the next downloads of a file stop mid-way (the connection closes after
//!   some bytes of a body whose `Content-Length` promises more); [`FakeHub::shorten`] serves a file
//!   short but well-formed.
//!
//! Every request is logged ([`FakeHub::requests`]) so tests can check what was sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Files above this size are served like LFS files (redirect to the CDN), as are weights and parquet.
const LFS_MIN: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Model,
    Dataset,
}

struct File {
    bytes: Arc<Vec<u8>>,
    sha256: String,
    lfs: bool,
}

struct Revision {
    commit: String,
    files: BTreeMap<String, File>,
}

#[derive(Default)]
struct RepoEntry {
    revisions: BTreeMap<String, Revision>,
    token: Option<String>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// The address the request came in on: the hub (127.0.0.1) or its CDN (127.0.0.2).
    pub host: String,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<(Kind, String), RepoEntry>,
    aliases: BTreeMap<(Kind, String), String>,
    /// File name → (bytes to send before closing, how many more downloads to cut).
    cuts: Mutex<BTreeMap<String, (usize, usize)>>,
    /// File name → bytes served as if they were the whole file (a well-formed but short answer).
    shorts: Mutex<BTreeMap<String, usize>>,
    /// Files served with one byte changed (right size, wrong content).
    corrupt: Mutex<std::collections::BTreeSet<String>>,
    /// Files served with a megabyte more than they hold.
    oversize: Mutex<std::collections::BTreeSet<String>>,
    /// LFS files whose redirect names an etag other than the listing's sha256.
    wrong_etag: Mutex<std::collections::BTreeSet<String>>,
    log: Mutex<Vec<Request>>,
    base: String,
    cdn: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Builds the repos, then [`Builder::start`]s the server.
#[derive(Default)]
pub struct Builder {
    state: State,
}

impl Builder {
    /// A revision of a repo from `(path in repo, bytes)` pairs; its commit hash is derived from the
    /// contents, so the same files always give the same commit.
    pub fn files(mut self, kind: Kind, id: &str, revision: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        let mut map = BTreeMap::new();
        for (name, bytes) in files {
            h.update(name.as_bytes());
            h.update(&bytes);
            let lfs = bytes.len() >= LFS_MIN || [".safetensors", ".bin", ".parquet"].iter().any(|e| name.ends_with(e));
            map.insert(name, File { sha256: sha256(&bytes), bytes: Arc::new(bytes), lfs });
        }
        let commit = hex(&h.finalize())[..40].to_string();
        let entry = self.state.repos.entry((kind, id.to_string())).or_default();
        entry.revisions.insert(revision.to_string(), Revision { commit, files: map });
        self
    }

    /// A revision holding every file under `dir` that `keep` accepts (paths relative to `dir`, `/`).
    pub fn dir(self, kind: Kind, id: &str, revision: &str, dir: &Path, keep: impl Fn(&str) -> bool) -> Self {
        let mut files = Vec::new();
        collect(dir, dir, &mut files);
        let files = files.into_iter().filter(|(n, _)| keep(n)).collect();
        self.files(kind, id, revision, files)
    }

    /// The repo answers 401 unless `Authorization: Bearer <token>` is sent.
    pub fn gated(mut self, kind: Kind, id: &str, token: &str) -> Self {
        self.state.repos.entry((kind, id.to_string())).or_default().token = Some(token.to_string());
        self
    }

    /// `old` redirects (307, relative) to `new`, as a renamed repo does.
    pub fn alias(mut self, kind: Kind, old: &str, new: &str) -> Self {
        self.state.aliases.insert((kind, old.to_string()), new.to_string());
        self
    }

    pub fn start(mut self) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let cdn = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2:0 (a second loopback address)");
        let (addr, cdn_addr) = (listener.local_addr().expect("local addr"), cdn.local_addr().expect("local addr"));
        self.state.base = format!("http://{addr}");
        self.state.cdn = format!("http://{cdn_addr}");
        let state = Arc::new(self.state);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = |listener: TcpListener| {
            let (s, st) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&s, conn);
                        });
                    }
                }
            })
        };
        let handles = vec![(accept(listener), addr), (accept(cdn), cdn_addr)];
        FakeHub { state, stop, handles }
    }
}

fn toggle(set: &Mutex<std::collections::BTreeSet<String>>, file: &str, on: bool) {
    let mut s = set.lock().unwrap();
    if on {
        s.insert(file.to_string());
    } else {
        s.remove(file);
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("fixture dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((rel, std::fs::read(&p).expect("fixture file")));
        }
    }
}

/// A running server; stopped (port closed) on [`FakeHub::stop`] or drop.
pub struct FakeHub {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    handles: Vec<(JoinHandle<()>, std::net::SocketAddr)>,
}

impl FakeHub {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The endpoint, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        self.state.base.clone()
    }

    /// The commit a revision resolves to.
    pub fn commit(&self, kind: Kind, id: &str, revision: &str) -> Option<String> {
        Some(self.state.repos.get(&(kind, id.to_string()))?.revisions.get(revision)?.commit.clone())
    }

    /// The next `times` downloads of any file named `file` (its path in the repo) send only `after`
    /// bytes of the body and close the connection.
    pub fn cut(&self, file: &str, after: usize, times: usize) {
        self.state.cuts.lock().unwrap().insert(file.to_string(), (after, times));
    }

    /// Downloads of `file` end cleanly after `len` bytes (a `Content-Length` that agrees), as a
    /// misbehaving proxy might answer; `None` restores the file.
    pub fn shorten(&self, file: &str, len: Option<usize>) {
        let mut s = self.state.shorts.lock().unwrap();
        match len {
            Some(n) => s.insert(file.to_string(), n),
            None => s.remove(file),
        };
    }

    /// Downloads of `file` send its bytes with one changed: the right size, the wrong sha256.
    pub fn corrupt(&self, file: &str, on: bool) {
        toggle(&self.state.corrupt, file, on);
    }

    /// Downloads of `file` send a megabyte past its end (a body that does not stop where the listing says).
    pub fn oversize(&self, file: &str, on: bool) {
        toggle(&self.state.oversize, file, on);
    }

    /// The LFS redirect for `file` sends an etag (`X-Linked-Etag`) that is not the listing's sha256:
    /// the sha256 of other bytes, as a cache already holding a different blob under that name would see.
    pub fn wrong_etag(&self, file: &str, on: bool) {
        toggle(&self.state.wrong_etag, file, on);
    }

    /// The etag [`FakeHub::wrong_etag`] makes the hub send for `bytes`.
    pub fn wrong_etag_of(bytes: &[u8]) -> String {
        sha256(&[bytes, b"-other"].concat())
    }

    /// The CDN's address (`http://127.0.0.2:port`).
    pub fn cdn_url(&self) -> String {
        self.state.cdn.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (h, addr) in self.handles.drain(..) {
            let _ = TcpStream::connect(addr); // wakes the accept loop
            let _ = h.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    /// Slice of `body` to send.
    range: (usize, usize),
    cut: Option<usize>,
}

impl Response {
    fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Arc::new(Vec::new()), range: (0, 0), cut: None }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn text(status: u16, msg: &str) -> Self {
        let body = Arc::new(msg.as_bytes().to_vec());
        Response { range: (0, body.len()), body, ..Response::new(status) }.header("Content-Type", "text/plain")
    }
    fn error(status: u16, code: &str, msg: &str) -> Self {
        Self::text(status, msg).header("X-Error-Code", code)
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(state: &State, mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    if method.is_empty() {
        return Ok(()); // the wake-up connection of `stop`
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let host = conn.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let req = Request { method: method.clone(), path: target.clone(), range: headers.get("range").cloned(), authorization: headers.get("authorization").cloned(), host };
    state.log.lock().unwrap().push(req.clone());
    let resp = route(state, &req);
    let (a, b) = resp.range;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", b - a));
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let end = resp.cut.map_or(b, |n| (a + n).min(b));
        conn.write_all(&resp.body[a..end])?;
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Error",
    }
}

/// `(start, end exclusive)` of a `bytes=a-b` / `bytes=a-` header, or None for the whole body.
fn parse_range(range: Option<&str>, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = range?.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a: usize = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() { len.saturating_sub(1) } else { b.trim().parse::<usize>().ok()?.min(len.saturating_sub(1)) };
    Some(if a >= len || b < a { Err(()) } else { Ok((a, b + 1)) })
}

/// Serves bytes with range support (the CDN and small files alike).
fn content(state: &State, req: &Request, name: &str, f: &File, resp: Response) -> Response {
    let len = f.bytes.len();
    let mut resp = Response { body: f.bytes.clone(), range: (0, len), ..resp }.header("Accept-Ranges", "bytes");
    match parse_range(req.range.as_deref(), len) {
        Some(Ok((a, b))) => {
            resp.status = 206;
            resp.range = (a, b);
            resp = resp.header("Content-Range", format!("bytes {a}-{}/{len}", b - 1));
        }
        Some(Err(())) => return Response::text(416, "range not satisfiable").header("Content-Range", format!("bytes */{len}")),
        None => {}
    }
    let metadata_probe = req.range.as_deref() == Some("bytes=0-0") || req.method == "HEAD";
    if !metadata_probe {
        let mut cuts = state.cuts.lock().unwrap();
        if let Some((after, times)) = cuts.get_mut(name) {
            if *times > 0 {
                *times -= 1;
                resp.cut = Some(*after);
            }
        }
        if let Some(&n) = state.shorts.lock().unwrap().get(name) {
            resp.range.1 = resp.range.1.min(n.max(resp.range.0));
        }
        if state.oversize.lock().unwrap().contains(name) {
            // The whole file and then some, as if the body never ended (the Content-Length agrees).
            let mut bytes = f.bytes.to_vec();
            bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
            resp.range.1 = bytes.len();
            resp.body = Arc::new(bytes);
        }
        if state.corrupt.lock().unwrap().contains(name) && !f.bytes.is_empty() {
            let mut bytes = f.bytes.to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 0xFF;
            resp.body = Arc::new(bytes);
        }
    }
    resp
}

fn route(state: &State, req: &Request) -> Response {
    let path = req.path.split('?').next().unwrap_or("");
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let name = req.path.split_once("?file=").map(|(_, f)| decode(f)).unwrap_or_default();
        for entry in state.repos.values() {
            for rev in entry.revisions.values() {
                if let Some(f) = rev.files.values().find(|f| f.sha256 == sha) {
                    return content(state, req, &name, f, Response::new(200).header("ETag", format!("\"{sha}\"")));
                }
            }
        }
        return Response::error(404, "EntryNotFound", "no such blob");
    }
    let (api, rest) = match path.strip_prefix("/api/") {
        Some(r) => (true, r),
        None => (false, path.trim_start_matches('/')),
    };
    let (kind, rest) = if api {
        match rest.split_once('/') {
            Some(("models", r)) => (Kind::Model, r),
            Some(("datasets", r)) => (Kind::Dataset, r),
            _ => return Response::error(404, "RepoNotFound", "unknown API path"),
        }
    } else if let Some(r) = rest.strip_prefix("datasets/") {
        (Kind::Dataset, r)
    } else {
        (Kind::Model, rest)
    };
    let sep = if api { "/revision/" } else { "/resolve/" };
    let Some((id, tail)) = rest.split_once(sep) else { return Response::error(404, "RepoNotFound", "not a hub URL") };
    let (rev_enc, file) = if api { (tail, "") } else { tail.split_once('/').unwrap_or((tail, "")) };
    if let Some(new) = state.aliases.get(&(kind, id.to_string())) {
        let prefix = match (api, kind) {
            (true, Kind::Model) => "/api/models/",
            (true, Kind::Dataset) => "/api/datasets/",
            (false, Kind::Model) => "/",
            (false, Kind::Dataset) => "/datasets/",
        };
        let loc = if api { format!("{prefix}{new}/revision/{rev_enc}") } else { format!("{prefix}{new}/resolve/{rev_enc}/{file}") };
        return Response::text(307, "moved").header("Location", loc);
    }
    let Some(entry) = state.repos.get(&(kind, id.to_string())) else {
        return Response::error(404, "RepoNotFound", "Repository not found");
    };
    if let Some(t) = &entry.token {
        if req.authorization.as_deref() != Some(&format!("Bearer {t}")) {
            return Response::error(401, "GatedRepo", "Access to this repo is restricted; you must be authenticated");
        }
    }
    let revision = decode(rev_enc);
    let Some(rev) = entry.revisions.get(&revision).or_else(|| entry.revisions.values().find(|r| r.commit == revision)) else {
        return Response::error(404, "RevisionNotFound", "Invalid rev id");
    };
    if api {
        let siblings: Vec<serde_json::Value> = rev
            .files
            .iter()
            .map(|(n, f)| {
                let mut v = serde_json::json!({"rfilename": n, "size": f.bytes.len()});
                if f.lfs {
                    v["lfs"] = serde_json::json!({"sha256": f.sha256, "size": f.bytes.len(), "pointerSize": 134});
                }
                v
            })
            .collect();
        let body = serde_json::json!({"id": id, "sha": rev.commit, "siblings": siblings}).to_string();
        return Response { body: Arc::new(body.clone().into_bytes()), range: (0, body.len()), ..Response::new(200) }.header("Content-Type", "application/json");
    }
    let file = decode(file);
    let Some(f) = rev.files.get(&file) else {
        return Response::error(404, "EntryNotFound", "Entry not found").header("X-Repo-Commit", rev.commit.clone());
    };
    if f.lfs {
        let loc = format!("{}/cdn/{}?file={}", state.cdn, f.sha256, file.replace('/', "%2F"));
        return Response::text(302, "Found")
            .header("Location", loc)
            .header("X-Repo-Commit", rev.commit.clone())
            .header("X-Linked-Etag", format!("\"{}\"", if state.wrong_etag.lock().unwrap().contains(&file) { FakeHub::wrong_etag_of(&f.bytes) } else { f.sha256.clone() }))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", &f.sha256[..40]));
    }
    let etag = format!("\"{}\"", &f.sha256[..40]);
    content(state, req, &file, f, Response::new(200).header("ETag", etag).header("X-Repo-Commit", rev.commit.clone()))
}
