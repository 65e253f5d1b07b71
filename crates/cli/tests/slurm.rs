//! The tiny sweep on a real Slurm (one node on localhost; `make test-slurm` starts it and sets
//! SLURM_CONF): its metrics equal the same sweep run locally, and a job cancelled mid-stage is
//! completed by `crossfeed slurm --resume` with the same metrics. Ignored by `cargo test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn crossfeed(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crossfeed"));
    c.args(args).current_dir(repo()).env_remove("CROSSFEED_TEST_PAUSE_STAGE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = crossfeed(args, env);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "crossfeed {args:?} failed:\n{err}");
    err
}

const SWEEP: &str = "configs/sweeps/tiny.toml";
const POINTS: [&str; 2] = ["alpha0-s0", "alpha1-s0"];

/// Waits until squeue lists none of this user's jobs (the test cluster runs only ours).
fn wait_for_queue(limit: Duration) {
    let start = Instant::now();
    loop {
        let o = Command::new("squeue").args(["--me", "-h", "-o", "%i %T"]).output().unwrap();
        assert!(o.status.success(), "squeue: {}", String::from_utf8_lossy(&o.stderr));
        if o.stdout.is_empty() {
            return;
        }
        assert!(start.elapsed() < limit, "jobs still queued after {limit:?}:\n{}", String::from_utf8_lossy(&o.stdout));
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn metrics(dir: &Path, point: &str) -> Vec<u8> {
    std::fs::read(dir.join("tiny-sweep").join(point).join("metrics.jsonl")).unwrap_or_default()
}

#[test]
#[ignore = "needs a local Slurm: make test-slurm"]
fn sweep_on_slurm_equals_local_and_resume_completes_a_cancelled_job() {
    assert!(std::env::var("SLURM_CONF").is_ok(), "SLURM_CONF is not set: run `make test-slurm`");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    ok(&["sweep", "run", SWEEP, "--runs-dir", local.to_str().unwrap()], &[]);

    // 1. The whole sweep as job arrays, one task requeued mid-stage (as on a node failure).
    let t = Instant::now();
    let on = tmp.path().join("slurm");
    let pause = [("CROSSFEED_TEST_PAUSE_STAGE", "generation 0 entity 1 train@10")];
    let out = ok(&["slurm", SWEEP, "--runs-dir", on.to_str().unwrap(), "--submit", "--requeue"], &pause);
    assert!(out.contains("gen-001-train") && out.contains("after"), "{out}");
    let requeued = on.join("tiny-sweep").join(POINTS[1]).join("gen-000/entity-1/train.lock");
    let job = wait_for_holder_job(&requeued);
    let o = Command::new("scontrol").args(["requeue", &job]).output().unwrap();
    assert!(o.status.success(), "scontrol requeue {job}: {}", String::from_utf8_lossy(&o.stderr));
    wait_for_queue(Duration::from_secs(900));
    let log = std::fs::read_to_string(requeued.with_extension("log")).unwrap();
    assert!(log.contains("(restart 1)") && log.contains("taking over the lock"), "the requeued task should take over its first run's lock:\n{log}");
    eprintln!("slurm sweep finished in {:.1}s", t.elapsed().as_secs_f64());
    for p in POINTS {
        let m = metrics(&on, p);
        assert!(!m.is_empty() && m == metrics(&local, p), "{p}: metrics under Slurm differ from the local run\n{}", status(&on, p));
    }
    assert!(on.join("tiny-sweep/alpha0-s0/gen-001/entity-1/train.log").is_file(), "no per-stage log");

    // 2. One task cancelled mid-stage: only its descendants stop; --resume completes the run.
    let cut = tmp.path().join("cut");
    let pause = [("CROSSFEED_TEST_PAUSE_STAGE", "generation 1 entity 0 train@20")];
    ok(&["slurm", SWEEP, "--runs-dir", cut.to_str().unwrap(), "--submit"], &pause);
    let lock = cut.join("tiny-sweep").join(POINTS[0]).join("gen-001/entity-0/train.lock");
    let job = wait_for_holder_job(&lock);
    let o = Command::new("scancel").arg(&job).output().unwrap();
    assert!(o.status.success(), "scancel {job}: {}", String::from_utf8_lossy(&o.stderr));
    wait_for_queue(Duration::from_secs(900));
    assert!(metrics(&cut, POINTS[0]) != metrics(&local, POINTS[0]), "the cancelled point should be unfinished");
    assert_eq!(metrics(&cut, POINTS[1]), metrics(&local, POINTS[1]), "the other point must not be stopped by the cancelled task");
    let st = status(&cut, POINTS[0]);
    assert!(st.contains("pending  generation 1 entity 0 train") && st.contains("[slurm"), "{st}");

    let out = ok(&["slurm", SWEEP, "--runs-dir", cut.to_str().unwrap(), "--resume"], &[]);
    assert!(!out.contains("gen-000-train"), "resume must submit only what is missing:\n{out}");
    wait_for_queue(Duration::from_secs(900));
    for p in POINTS {
        assert_eq!(metrics(&cut, p), metrics(&local, p), "{p}: metrics after --resume differ from the local run");
    }
    let log = std::fs::read_to_string(lock.with_extension("log")).unwrap();
    assert!(log.contains("taking over the lock"), "the resumed task should report the cancelled one's lock:\n{log}");
}

fn status(dir: &Path, point: &str) -> String {
    let o = crossfeed(&["status", dir.join("tiny-sweep").join(point).to_str().unwrap()], &[]);
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Waits until a task has taken `lock`; returns its Slurm job id (`ARRAYID_TASK`).
fn wait_for_holder_job(lock: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(lock) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(s.trim()) {
                return v["job"].as_str().expect("a Slurm task records its job").to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(600), "no task took {} in 600 s", lock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
