//! The durable writes leave the old content or the new, never a temp file or half a directory.

use crossfeed_fsio::{commit, replace_dir, temp_sibling, write_atomic, write_atomic_with, write_new, FsError};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

#[test]
fn write_replaces_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(names(dir.path()), ["a.json"]);
}

#[test]
fn a_failed_fill_keeps_the_old_file_and_removes_the_temp() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    write_atomic(&p, b"old").unwrap();
    let err = write_atomic_with(&p, |tmp| -> Result<(), FsError> {
        std::fs::write(tmp, b"half").unwrap();
        Err(FsError { path: tmp.to_path_buf(), source: std::io::Error::other("serializer failed") })
    })
    .unwrap_err();
    assert!(err.to_string().contains("serializer failed"), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["m.safetensors"]);
}

#[test]
fn an_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing-dir").join("x.txt");
    let err = write_atomic(&p, b"x").unwrap_err();
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

#[test]
fn temp_names_differ_between_calls_and_keep_the_file_name_first() {
    let p = std::path::Path::new("/r/config.toml");
    let (a, b) = (temp_sibling(p, "tmp"), temp_sibling(p, "tmp"));
    assert_ne!(a, b);
    assert!(a.file_name().unwrap().to_string_lossy().starts_with("config.toml.tmp-"), "{a:?}");
}

#[test]
fn threads_writing_one_file_never_see_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shared.txt");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let p = &p;
            s.spawn(move || {
                for _ in 0..25 {
                    write_atomic(p, &[t; 4096]).unwrap();
                }
            });
        }
    });
    let bytes = std::fs::read(&p).unwrap();
    assert!(bytes.len() == 4096 && bytes.iter().all(|&b| b == bytes[0]));
    assert_eq!(names(dir.path()), ["shared.txt"]);
}

#[test]
fn commit_and_replace_dir_put_whole_directories_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (built, dst) = (dir.path().join("model.partial"), dir.path().join("model"));
    std::fs::create_dir(&built).unwrap();
    std::fs::write(built.join("w"), b"1").unwrap();
    replace_dir(&built, &dst).unwrap();
    assert_eq!(std::fs::read(dst.join("w")).unwrap(), b"1");
    std::fs::create_dir(&built).unwrap();
    std::fs::write(built.join("w"), b"2").unwrap();
    replace_dir(&built, &dst).unwrap();
    assert_eq!(std::fs::read(dst.join("w")).unwrap(), b"2");
    assert_eq!(names(dir.path()), ["model"]);
    let part = dir.path().join("blob.part");
    std::fs::write(&part, b"bytes").unwrap();
    commit(&part, &dir.path().join("blob")).unwrap();
    assert_eq!(names(dir.path()), ["blob", "model"]);
}

#[test]
fn write_new_creates_once_and_never_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    assert!(write_new(&p, b"first").unwrap(), "an absent file is created");
    assert!(!write_new(&p, b"second").unwrap(), "an existing file is reported, not replaced");
    assert_eq!(std::fs::read(&p).unwrap(), b"first");
    assert_eq!(names(dir.path()), ["config.toml"], "no temp file left behind");
}

#[test]
fn of_threads_creating_one_file_exactly_one_wins() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        let barrier = std::sync::Barrier::new(4);
        let wins: Vec<(usize, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|i| {
                    let (p, barrier) = (&p, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        (i, write_new(p, format!("writer {i}").as_bytes()).unwrap())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = wins.iter().filter(|w| w.1).map(|w| w.0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {wins:?}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("writer {}", winners[0]), "round {round}");
    }
}
