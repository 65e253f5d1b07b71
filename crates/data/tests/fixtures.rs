//! Fixture (re)generation and the checks that the committed fixtures are what the generator writes.

use crossfeed_data::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data")
}

/// `cargo test -p crossfeed-data --test fixtures -- --ignored regenerate`
#[test]
#[ignore]
fn regenerate() {
    fixtures::write_fixtures(&root()).unwrap();
}

#[test]
fn committed_fixtures_match_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_fixtures(dir.path()).unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    collect(dir.path(), dir.path(), &mut a);
    collect(&root(), &root(), &mut b);
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>(), "fixture file lists differ; regenerate");
    for ((name, fa), (_, fb)) in a.iter().zip(&b) {
        if name.ends_with(".parquet") {
            // Compare content, not bytes.
            let cols: &[(&str, ColumnKind)] = if name.contains("sciq") {
                TaskKind::Sciq.columns()
            } else if name.contains("gsm8k") {
                TaskKind::Gsm8k.columns()
            } else if name.contains("arc") {
                TaskKind::ArcEasy.columns()
            } else {
                TaskKind::Bookcorpus.columns()
            };
            assert_eq!(read_rows(fa, cols).unwrap(), read_rows(fb, cols).unwrap(), "{name}");
        } else {
            assert_eq!(std::fs::read(fa).unwrap(), std::fs::read(fb).unwrap(), "{name}");
        }
        let kb = std::fs::metadata(fb).unwrap().len() / 1024;
        assert!(kb < 32, "{name} is {kb} KiB");
    }
}

fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push((p.strip_prefix(root).unwrap().display().to_string(), p));
        }
    }
}
