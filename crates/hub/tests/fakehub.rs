//! crossfeed-hub against the test hub: the revision listing, small and redirected ("LFS") files,
//! Python's cache layout, gated and missing repos, renamed repos, and a download cut mid-way.

use crossfeed_fakehub::{FakeHub, Kind};
use crossfeed_hub::{HubEnv, HubError, HubRepo, RepoKind};
use std::path::Path;

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn env(hub: &FakeHub, cache: &Path, token: Option<&str>) -> HubEnv {
    HubEnv { endpoint: hub.url(), token: token.map(String::from), offline: false, cache_dir: cache.to_path_buf() }
}

fn server() -> FakeHub {
    FakeHub::builder()
        .files(Kind::Model, "org/tiny", "main", vec![("config.json".into(), b"{\"a\": 1}".to_vec()), ("model.safetensors".into(), bytes(50_000, 7))])
        .files(Kind::Dataset, "org/books", "refs/convert/parquet", vec![("plain_text/train/0000.parquet".into(), bytes(3000, 1))])
        .alias(Kind::Dataset, "books", "org/books")
        .files(Kind::Model, "org/gated", "main", vec![("config.json".into(), b"{}".to_vec())])
        .gated(Kind::Model, "org/gated", "hf_secret")
        .start()
}

#[test]
fn listing_downloads_and_python_cache_layout() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let repo = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", None);
    let snap = repo.snapshot().unwrap();
    assert_eq!(Some(snap.commit.clone()), hub.commit(Kind::Model, "org/tiny", "main"));
    assert_eq!(snap.files, ["config.json", "model.safetensors"]);
    let folder = tmp.path().join("models--org--tiny");
    assert_eq!(std::fs::read_to_string(folder.join("refs/main")).unwrap(), snap.commit);
    for f in ["config.json", "model.safetensors"] {
        let p = repo.get(&snap, f).unwrap();
        assert_eq!(p, folder.join("snapshots").join(&snap.commit).join(f));
        // A relative symlink into blobs/, named by the etag (sha256 for LFS files), as huggingface_hub does.
        let link = std::fs::read_link(&p).unwrap();
        assert!(link.starts_with("../../blobs"), "{link:?}");
    }
    assert_eq!(std::fs::read(folder.join("snapshots").join(&snap.commit).join("model.safetensors")).unwrap(), bytes(50_000, 7));
    let blobs: Vec<String> = std::fs::read_dir(folder.join("blobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".lock")).collect();
    assert!(blobs.iter().any(|b| b.len() == 64) && blobs.iter().any(|b| b.len() == 40), "{blobs:?}");
    // The large file went through the absolute redirect to the CDN.
    assert!(hub.requests().iter().any(|r| r.path.starts_with("/cdn/")));

    // Offline: the same snapshot from refs/main, no request.
    let n = hub.requests().len();
    let off = HubRepo::new(HubEnv { offline: true, ..env(&hub, tmp.path(), None) }, RepoKind::Model, "org/tiny", None);
    let s2 = off.snapshot().unwrap();
    assert_eq!((s2.commit.clone(), s2.files.clone()), (snap.commit.clone(), snap.files.clone()));
    assert_eq!(hub.requests().len(), n);
    let e = HubRepo::new(HubEnv { offline: true, ..env(&hub, tmp.path(), None) }, RepoKind::Model, "org/other", None).snapshot().unwrap_err();
    assert!(matches!(e, HubError::NotCached { .. }) && e.to_string().contains("org/other"), "{e}");

    // A dataset on refs/convert/parquet under its old name: 307 (relative) to the new one.
    let ds = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Dataset, "books", Some("refs/convert/parquet"));
    let snap = ds.snapshot().unwrap();
    let p = ds.get(&snap, "plain_text/train/0000.parquet").unwrap();
    assert_eq!(std::fs::read(p).unwrap(), bytes(3000, 1));
    let f = tmp.path().join("datasets--books");
    assert_eq!(std::fs::read_to_string(f.join("refs/refs/convert/parquet")).unwrap(), snap.commit);
    assert!(hub.requests().iter().any(|r| r.path.starts_with("/api/datasets/books/revision/refs%2Fconvert%2Fparquet")));
}

#[test]
fn gated_and_missing_repos_fail_clearly() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let e = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/gated", None).snapshot().unwrap_err();
    assert!(matches!(e, HubError::Unauthorized { status: 401, .. }) && e.to_string().contains("HF_TOKEN"), "{e}");
    let e = HubRepo::new(env(&hub, tmp.path(), Some("wrong")), RepoKind::Model, "org/gated", None).snapshot().unwrap_err();
    assert!(matches!(e, HubError::Unauthorized { .. }), "{e}");
    let ok = HubRepo::new(env(&hub, tmp.path(), Some("hf_secret")), RepoKind::Model, "org/gated", None);
    let snap = ok.snapshot().unwrap();
    ok.get(&snap, "config.json").unwrap();
    assert!(hub.requests().iter().filter(|r| r.path.contains("org/gated")).any(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    // The token is in no message and no file of the cache.
    assert!(!format!("{:?}", ok.env).contains("hf_secret"));

    let e = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/none", None).snapshot().unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }) && e.to_string().contains("org/none"), "{e}");
    let e = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", Some("v9")).snapshot().unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }) && e.to_string().contains("v9"), "{e}");
    let r = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", None);
    let snap = r.snapshot().unwrap();
    let e = r.get(&snap, "nope.json").unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }) && e.to_string().contains("nope.json"), "{e}");
}

#[test]
fn a_cut_download_is_never_taken_for_complete_and_resumes() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let repo = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", None);
    let snap = repo.snapshot().unwrap();
    let target = snap.dir.join("model.safetensors");
    // Every attempt (the first and hf-hub's retries) stops after 5,000 of 50,000 bytes.
    hub.cut("model.safetensors", 5_000, 10);
    let e = repo.get(&snap, "model.safetensors").unwrap_err();
    eprintln!("cut download: {e}");
    assert!(!target.exists(), "a cut download left {} behind", target.display());
    let off = HubRepo::new(HubEnv { offline: true, ..repo.env.clone() }, RepoKind::Model, "org/tiny", None);
    let e = off.snapshot().and_then(|s| off.get(&s, "model.safetensors")).unwrap_err();
    assert!(matches!(e, HubError::NotCached { .. }), "{e}");
    // With the connection healthy again, the download completes with the right bytes, resuming
    // from the partial file where one was kept.
    hub.cut("model.safetensors", 0, 0);
    let p = repo.get(&snap, "model.safetensors").unwrap();
    assert_eq!(std::fs::read(p).unwrap(), bytes(50_000, 7));
    let ranges: Vec<String> = hub.requests().iter().filter(|r| r.path.starts_with("/cdn/")).filter_map(|r| r.range.clone()).collect();
    // hf-hub kept the 15,000 bytes of the three cut attempts in a `.part` file and asked for the rest.
    assert!(ranges.iter().any(|r| r == "bytes=15000-"), "no resumed range request: {ranges:?}");
    assert!(!std::fs::read_dir(snap.dir.parent().unwrap().parent().unwrap().join("blobs")).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".part")));
}

#[test]
fn a_download_of_the_wrong_size_is_deleted() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let repo = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", None);
    let snap = repo.snapshot().unwrap();
    // A short answer that looks complete to the HTTP client: only the listed size gives it away.
    hub.shorten("model.safetensors", Some(30_000));
    let e = repo.get(&snap, "model.safetensors").unwrap_err();
    assert!(matches!(e, HubError::Incomplete { expected: 50_000, got: 30_000, .. }), "{e}");
    assert!(!snap.dir.join("model.safetensors").exists());
    let blobs = snap.dir.parent().unwrap().parent().unwrap().join("blobs");
    assert!(std::fs::read_dir(&blobs).unwrap().flatten().all(|e| e.file_name().to_string_lossy().ends_with(".lock")), "a wrong-size blob was kept");
    hub.shorten("model.safetensors", None);
    assert_eq!(std::fs::read(repo.get(&snap, "model.safetensors").unwrap()).unwrap(), bytes(50_000, 7));
}

/// Every file under `dir`, recursively (to prove nothing was written outside the cache).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A hostile or broken server: names that would leave the cache, content that does not match its
/// hash, a token that must not reach another host. Each is an error naming what is wrong; nothing is
/// written outside the cache and nothing panics.
#[test]
fn a_hostile_server_gets_errors_and_nothing_leaves_the_cache() {
    let index = br#"{"metadata": {}, "weight_map": {"w": "../../../../../escape-pwned.safetensors"}}"#.to_vec();
    let hub = FakeHub::builder()
        .files(Kind::Model, "evil/escape", "main", vec![("config.json".into(), b"{}".to_vec()), ("../../../../../escape-pwned.safetensors".into(), bytes(20_000, 3)), ("model.safetensors.index.json".into(), index)])
        .files(Kind::Model, "evil/abs", "main", vec![("config.json".into(), b"{}".to_vec()), ("/etc/passwd-like".into(), b"x".to_vec())])
        .files(Kind::Model, "org/tiny", "main", vec![("config.json".into(), b"{\"a\": 1}".to_vec()), ("model.safetensors".into(), bytes(50_000, 7))])
        .gated(Kind::Model, "org/tiny", "hf_secret")
        .start();
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let e = env(&hub, &cache, Some("hf_secret"));

    // A listing that names a file outside the snapshot: refused before any download.
    for (id, name) in [("evil/escape", "../../../../../escape-pwned.safetensors"), ("evil/abs", "/etc/passwd-like")] {
        let repo = HubRepo::new(e.clone(), RepoKind::Model, id, None);
        let err = repo.snapshot().unwrap_err();
        assert!(matches!(err, HubError::BadName { .. }) && err.to_string().contains(id) && err.to_string().contains(name), "{err}");
    }
    // Asked directly for such a name (an index's weight_map), the hub crate refuses it too.
    let repo = HubRepo::new(e.clone(), RepoKind::Model, "org/tiny", None);
    let snap = repo.snapshot().unwrap();
    for bad in ["../../../../../escape-pwned.safetensors", "/abs/path", "a/./b", "a\\b", ""] {
        let err = repo.get(&snap, bad).unwrap_err();
        assert!(matches!(err, HubError::BadName { .. }), "{bad:?}: {err}");
    }
    for bad_id in ["../evil", "a/b/c", "a/.."] {
        let err = HubRepo::new(e.clone(), RepoKind::Model, bad_id, None).snapshot().unwrap_err();
        assert!(matches!(err, HubError::BadName { .. }), "{bad_id}: {err}");
    }
    assert!(files_under(root.path()).iter().all(|p| p.starts_with(&cache)), "something was written outside the cache");
    assert!(!root.path().join("escape-pwned.safetensors").exists());

    // Right size, wrong content: the sha256 the listing gives catches it, the blob is deleted.
    hub.corrupt("model.safetensors", true);
    let err = repo.get(&snap, "model.safetensors").unwrap_err();
    match &err {
        HubError::Integrity { file, expected, got, .. } => assert!(file == "model.safetensors" && expected != got && expected.len() == 64, "{err}"),
        _ => panic!("not an integrity error: {err}"),
    }
    let blobs = cache.join("models--org--tiny/blobs");
    assert!(files_under(&blobs).iter().all(|p| !std::fs::read(p).is_ok_and(|b| b.len() == 50_000)), "the corrupt blob stayed");
    assert!(!snap.dir.join("model.safetensors").exists());
    hub.corrupt("model.safetensors", false);
    assert_eq!(std::fs::read(repo.get(&snap, "model.safetensors").unwrap()).unwrap(), bytes(50_000, 7));

    // A body that runs past the listed size is cut off one byte past it, never written in full.
    std::fs::remove_file(&snap.dir.join("model.safetensors")).unwrap();
    for b in files_under(&blobs) {
        std::fs::remove_file(b).unwrap();
    }
    hub.oversize("model.safetensors", true);
    let err = repo.get(&snap, "model.safetensors").unwrap_err();
    assert!(matches!(err, HubError::Incomplete { expected: 50_000, got: 50_001.., .. }), "{err}");
    assert!(files_under(&blobs).iter().all(|p| std::fs::metadata(p).map_or(true, |m| m.len() <= 50_001)), "an oversized body was kept");
    hub.oversize("model.safetensors", false);

    // The token went to the hub's host only, never to the CDN on 127.0.0.2.
    let reqs = hub.requests();
    assert!(reqs.iter().any(|r| r.host == "127.0.0.2"), "the LFS file did not come from the CDN");
    assert!(reqs.iter().filter(|r| r.host == "127.0.0.2").all(|r| r.authorization.is_none()), "the token reached the CDN");
    assert!(reqs.iter().filter(|r| r.host == "127.0.0.1").all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
}

/// A cached `blobs/<etag>` is trusted without reading it, so the etag must be the listing's sha256
/// before a snapshot points at it: otherwise a server (or cache) naming another blob would hand the
/// run bytes the listing never promised.
#[test]
fn an_etag_that_is_not_the_listed_sha256_is_refused_before_any_blob_is_used() {
    let hub = server();
    hub.wrong_etag("model.safetensors", true);
    let tmp = tempfile::tempdir().unwrap();
    let repo = HubRepo::new(env(&hub, tmp.path(), None), RepoKind::Model, "org/tiny", None);
    let snap = repo.snapshot().unwrap();
    // Another file's bytes already sit in the cache under the etag the server names.
    let blobs = tmp.path().join("models--org--tiny/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(FakeHub::wrong_etag_of(&bytes(50_000, 7))), b"someone else's weights").unwrap();
    let e = repo.get(&snap, "model.safetensors").unwrap_err();
    assert!(matches!(e, HubError::EtagMismatch { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    let link = tmp.path().join("models--org--tiny/snapshots").join(&snap.commit).join("model.safetensors");
    assert!(std::fs::symlink_metadata(&link).is_err(), "the snapshot points at the wrong blob");
    // The honest answer is then downloaded and used.
    hub.wrong_etag("model.safetensors", false);
    assert_eq!(std::fs::read(repo.get(&snap, "model.safetensors").unwrap()).unwrap(), bytes(50_000, 7));
}
