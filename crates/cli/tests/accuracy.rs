//! `crossfeed accuracy` end to end: the lm-evaluation-harness fixture tasks (hub layout under
//! tests/fixtures/accuracy/data) scored on the opt125 fixture model give lm-eval's numbers
//! (scripts/make_accuracy_fixtures.py), and the printed table ends in a newline.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn accuracy_command_prints_lm_evals_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("acc.json");
    let o = Command::new(env!("CARGO_BIN_EXE_crossfeed"))
        .args(["accuracy", "--model", "tests/fixtures/models/opt125", "--task", "sciq,arc_easy"])
        .args(["--data-dir", "tests/fixtures/accuracy/data", "--output", out.to_str().unwrap()])
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.ends_with('\n') && !stdout.ends_with("\n\n"), "the table ends in one newline: {stdout:?}");
    for task in ["sciq", "arc_easy"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("|{task}"))), "{task} row in\n{stdout}");
    }
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("tests/fixtures/accuracy/opt125.json")).unwrap()).unwrap();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for r in got["results"].as_array().unwrap() {
        let task = r["task"].as_str().unwrap();
        let want = fx["runs"].as_array().unwrap().iter().find(|x| x["task"] == task && x["num_fewshot"] == r["num_fewshot"]).unwrap();
        for key in ["acc,none", "acc_norm,none"] {
            assert_eq!(r["metrics"][key], want["metrics"][key], "{task} {key}");
        }
    }
}
