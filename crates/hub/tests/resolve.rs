//! The one model resolver (`crossfeed_hub::resolve`) against the test hub: required, optional and
//! alternative files, a file named by another one (an index's shards), and the errors model and embed
//! turn into their own.

use std::path::Path;

use crossfeed_fakehub::{FakeHub, Kind};
use crossfeed_hub::{resolve_in, Files, HubEnv, ResolveError, ResolveOptions};

fn env(hub: &FakeHub, cache: &Path) -> HubEnv {
    HubEnv { endpoint: hub.url(), token: None, offline: false, cache_dir: cache.to_path_buf() }
}

const FILES: Files = Files { required: &["config.json"], optional: &["tokenizer.json", "1_Pooling/config.json"], one_of: &["model.safetensors", "index.json", "pytorch_model.bin"] };

fn server() -> FakeHub {
    let f = |n: &str, b: &[u8]| (n.to_string(), b.to_vec());
    FakeHub::builder()
        .files(Kind::Model, "org/sharded", "main", vec![f("config.json", b"{}"), f("1_Pooling/config.json", b"{}"), f("index.json", b"[\"a.bin\"]"), f("a.bin", b"A"), f("pytorch_model.bin", b"P"), f("README.md", b"r")])
        .files(Kind::Model, "org/noconfig", "main", vec![f("model.safetensors", b"S")])
        .files(Kind::Model, "org/noweights", "main", vec![f("config.json", b"{}")])
        .start()
}

#[test]
fn fetches_the_listed_files_and_what_they_name() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let opts = ResolveOptions::default();
    let r = resolve_in(env(&hub, tmp.path()), "org/sharded", &opts, &FILES).unwrap();
    // The first listed alternative only; optional files when listed; nothing else.
    assert_eq!(r.chosen.as_deref(), Some("index.json"));
    for f in ["config.json", "1_Pooling/config.json", "index.json"] {
        assert!(r.dir.join(f).is_file(), "{f}");
    }
    for f in ["tokenizer.json", "pytorch_model.bin", "a.bin", "README.md"] {
        assert!(!r.dir.join(f).exists(), "{f}");
    }
    assert_eq!(std::fs::read(r.get("a.bin").unwrap()).unwrap(), b"A");

    // Offline from the cache: the same directory, no request.
    let n = hub.requests().len();
    let off = resolve_in(env(&hub, tmp.path()), "org/sharded", &ResolveOptions { offline: true, revision: None }, &FILES).unwrap();
    assert_eq!((off.dir, off.chosen), (r.dir.clone(), None));
    assert_eq!(hub.requests().len(), n);

    // A local directory is taken as it is.
    let local = resolve_in(env(&hub, tmp.path()), &r.dir.display().to_string(), &opts, &FILES).unwrap();
    assert_eq!(local.dir, r.dir);
}

#[test]
fn missing_files_and_bad_specs_are_typed_errors() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let opts = ResolveOptions::default();
    match resolve_in(env(&hub, tmp.path()), "org/noconfig", &opts, &FILES).unwrap_err() {
        ResolveError::Missing { spec, revision, file } => assert_eq!((spec.as_str(), revision.as_str(), file.as_str()), ("org/noconfig", "main", "config.json")),
        e => panic!("{e}"),
    }
    let e = resolve_in(env(&hub, tmp.path()), "org/noweights", &opts, &FILES).unwrap_err();
    assert!(matches!(&e, ResolveError::NoneOf { files, .. } if files.len() == 3), "{e}");
    assert!(e.to_string().contains("model.safetensors, index.json, pytorch_model.bin"), "{e}");
    for spec in ["./no/such/dir", "a/b/c", "a\\b/c"] {
        assert!(matches!(resolve_in(env(&hub, tmp.path()), spec, &opts, &FILES), Err(ResolveError::NotAnId { .. })), "{spec}");
    }
    let e = resolve_in(env(&hub, tmp.path()), "org/absent", &ResolveOptions { offline: true, revision: None }, &FILES).unwrap_err();
    assert!(matches!(e, ResolveError::Hub(crossfeed_hub::HubError::NotCached { .. })), "{e}");
}
