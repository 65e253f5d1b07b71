//! `crossfeed run / resume / status / report / stage` on the tiny config, as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn crossfeed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crossfeed")).args(args).current_dir(repo()).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = crossfeed(args);
    assert!(o.status.success(), "crossfeed {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let o = crossfeed(args);
    assert!(!o.status.success(), "crossfeed {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn run_interrupt_resume_status_report_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    // Tiny config, uninterrupted.
    ok(&["run", "configs/tiny.toml", "--runs-dir", runs, "--name", "straight"]);
    // Interrupted after generation 1's first train stage, then resumed.
    ok(&["run", "configs/tiny.toml", "--runs-dir", runs, "--name", "cut", "--stop-after", "1:0:train"]);
    let cut = tmp.path().join("cut");
    let status = ok(&["status", cut.to_str().unwrap()]);
    assert!(status.contains("pending  generation 1 entity 1 train"), "{status}");
    // A stage whose dependencies are not done is refused.
    let e = fails(&["stage", cut.to_str().unwrap(), "--generation", "2", "--entity", "1", "--stage", "generate"]);
    assert!(e.contains("needs generation 1 entity 1 train to be done first"), "{e}");
    // One stage by hand, then resume the rest.
    ok(&["stage", cut.to_str().unwrap(), "--generation", "1", "--entity", "1", "--stage", "train"]);
    ok(&["resume", cut.to_str().unwrap()]);
    let a = std::fs::read(tmp.path().join("straight/metrics.jsonl")).unwrap();
    let b = std::fs::read(cut.join("metrics.jsonl")).unwrap();
    assert_eq!(a, b, "resumed metrics.jsonl differs from the uninterrupted run");
    let status = ok(&["status", cut.to_str().unwrap()]);
    assert!(!status.contains("pending"), "{status}");
    let report = ok(&["report", cut.to_str().unwrap()]);
    assert!(report.contains("| M1 | toy_arithmetic") && report.contains("distinct_2"), "{report}");
    assert!(cut.join("report.md").is_file());
    // Extending a finished run.
    ok(&["resume", cut.to_str().unwrap(), "--generations", "4"]);
    assert!(cut.join("gen-003/similarity.DONE").is_file());
}

#[test]
fn errors_name_the_problem_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "alpha=1.5"]);
    assert!(e.contains("alpha = 1.5"), "{e}");
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "train.lrr=1"]);
    assert!(e.contains("train.lrr") && e.contains("train.lr"), "{e}");
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "k=9"]);
    assert!(e.contains("k = 9"), "{e}");
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "base_model=./no/such/model"]);
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "a failed config check wrote something");

    ok(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "generations=1"]);
    let cfg = tmp.path().join("tiny/config.toml");
    let before = std::fs::read(&cfg).unwrap();
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs, "--set", "generations=1", "--set", "beta=0.2"]);
    assert!(e.contains("different config") && e.contains("beta"), "{e}");
    assert_eq!(before, std::fs::read(&cfg).unwrap());
}

#[test]
fn quick_demo_produces_every_artefact_and_reuses_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let out = ok(&["demo", "--quick", "--runs-dir", runs]);
    assert!(out.contains("| 0.5 | M1 | toy_arithmetic") && out.contains("| 1 | M2 | toy_facts"), "{out}");
    let base = tmp.path().join("demo-base-quick");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "base.json"] {
        assert!(base.join(f).is_file(), "base lacks {f}");
    }
    for a in ["0", "0.5", "1"] {
        let run = tmp.path().join(format!("demo-quick-a{a}"));
        for f in ["config.toml", "metrics.jsonl", "metrics.csv", "report.md", "ce.svg", "ce.png", "similarity.svg", "collapse.svg", "collapse.png"] {
            assert!(run.join(f).is_file(), "run a{a} lacks {f}");
        }
        let report = std::fs::read_to_string(run.join("report.md")).unwrap();
        assert!(report.contains("## Collapse metrics by generation") && report.contains("| data | – |") && report.contains("## Shared errors"), "{report}");
    }
    assert!(tmp.path().join("demo-quick-summary.md").is_file());
    // A second demo reuses the cached base and the finished runs.
    let o = crossfeed(&["demo", "--quick", "--runs-dir", runs]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("base model: reusing"));
}
