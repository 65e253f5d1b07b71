//! Stages in parallel worker processes, and the locks that keep two processes off one stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crossfeed"));
    c.args(args).current_dir(repo()).env_remove("CROSSFEED_TEST_PAUSE_STAGE");
    c
}

fn check(o: Output, args: &[&str]) -> String {
    assert!(o.status.success(), "crossfeed {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn ok(args: &[&str]) -> String {
    check(cmd(args).output().unwrap(), args)
}

/// `  generation 1 entity 0 train   …` lines a driver prints when it has run a stage, counted by stage.
fn stages_run(stderr: &str, counts: &mut BTreeMap<String, usize>) {
    for l in stderr.lines().filter(|l| l.starts_with("  generation ")) {
        // The printer pads the stage id to 36 characters.
        let id = l[2..].chars().take(36).collect::<String>();
        *counts.entry(id.trim().to_string()).or_default() += 1;
    }
}

fn metrics(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("metrics.jsonl")).unwrap()
}

#[test]
fn workers_equal_serial_and_locks_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let base = ["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "generations=2"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };

    ok(&with(&["--name", "serial"]));
    let serial = metrics(&tmp.path().join("serial"));

    // Two workers: same metrics, one log per stage.
    let out = ok(&with(&["--name", "w2", "--workers", "2"]));
    assert!(out.contains("2 worker(s)"), "{out}");
    let w2 = tmp.path().join("w2");
    assert_eq!(serial, metrics(&w2), "2-worker metrics.jsonl differs from the serial run");
    for log in ["gen-base/eval.log", "gen-001/entity-0/generate.log", "gen-001/entity-1/train.log", "gen-001/similarity.log"] {
        assert!(w2.join(log).is_file(), "no per-stage log {log}");
    }

    // Generate stages split in 3 shards over 2 workers: the same samples, merged in index order.
    ok(&with(&["--name", "shards", "--workers", "2", "--set", "generation.shards=3"]));
    let sh = tmp.path().join("shards");
    assert_eq!(serial, metrics(&sh), "sharded generation changed metrics.jsonl");
    for e in 0..2 {
        let f = format!("gen-001/entity-{e}/synthetic.jsonl");
        assert_eq!(std::fs::read(w2.join(&f)).unwrap(), std::fs::read(sh.join(&f)).unwrap(), "{f}");
        for i in 0..3 {
            assert!(sh.join(format!("gen-001/entity-{e}/generate-shard-{i}.DONE")).is_file());
        }
    }

    // Two drivers started at once on one run: every stage runs exactly once between them.
    let args = with(&["--name", "twice", "--workers", "2"]);
    let a = cmd(&args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let b = cmd(&args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (String::from_utf8_lossy(&a.stderr).to_string(), String::from_utf8_lossy(&b.stderr).to_string());
    let mut counts = BTreeMap::new();
    stages_run(&ea, &mut counts);
    stages_run(&eb, &mut counts);
    assert!(counts.values().all(|&n| n == 1), "a stage ran twice: {counts:?}\n--- a\n{ea}\n--- b\n{eb}");
    assert!(a.status.success() || ea.contains("in progress elsewhere"), "{ea}");
    assert!(b.status.success() || eb.contains("in progress elsewhere"), "{eb}");
    ok(&with(&["--name", "twice"]));
    assert_eq!(serial, metrics(&tmp.path().join("twice")));

    // A driver sitting in a stage: a second driver names it and leaves; so does a second stage process.
    let held = tmp.path().join("held");
    let first = cmd(&with(&["--name", "held", "--workers", "2"]))
        .env("CROSSFEED_TEST_PAUSE_STAGE", "generation 0 entity 0 train@60")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = held.join("gen-000/entity-0/train.lock");
    let worker_pid = wait_for_holder(&lock);
    let o = cmd(&with(&["--name", "held"])).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("in progress elsewhere") && e.contains(&format!("pid {}", first.id())), "{e}");
    let o = cmd(&["stage", held.to_str().unwrap(), "--generation", "0", "--entity", "0", "--stage", "train"]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains(&format!("pid {worker_pid}")), "{e}");

    // kill -9 of that worker: its lock stays behind; the next run takes it over and finishes.
    assert!(Command::new("kill").args(["-9", &worker_pid.to_string()]).status().unwrap().success());
    let o = first.wait_with_output().unwrap();
    assert!(!o.status.success(), "the driver should report the killed stage");
    assert!(!std::fs::read_to_string(&lock).unwrap().trim().is_empty(), "a killed worker's lock keeps its holder line");
    let out = ok(&["resume", held.to_str().unwrap(), "--workers", "2"]);
    let out = out + &std::fs::read_to_string(held.join("gen-000/entity-0/train.log")).unwrap();
    assert!(out.contains("taking over the lock") && out.contains(&format!("pid {worker_pid}")), "{out}");
    assert_eq!(serial, metrics(&held), "metrics after a killed worker differ from the serial run");
}

/// Waits until a worker has written its holder line into `lock`; returns its pid.
fn wait_for_holder(lock: &Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(lock) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(s.trim()) {
                return v["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no holder in {} after 120 s", lock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
