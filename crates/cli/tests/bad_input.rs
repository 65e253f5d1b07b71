//! Bad arguments and inputs to `crossfeed score` / `generate` fail with an error naming the file or
//! the flag and its allowed range, before any model is run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_crossfeed")).args(args).current_dir(repo()).output().unwrap();
    assert!(!o.status.success(), "crossfeed {args:?} should fail; stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn score_on_an_empty_file_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("empty.jsonl");
    std::fs::write(&data, "").unwrap();
    let e = fails(&["score", "--model", "tests/fixtures/models/opt125", "--data", data.to_str().unwrap()]);
    assert!(e.contains(data.to_str().unwrap()) && e.contains("empty"), "{e}");
}

#[test]
fn score_with_nothing_to_predict_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("short.jsonl");
    std::fs::write(&data, "{\"text\": \"\"}\n").unwrap();
    let e = fails(&["score", "--model", "tests/fixtures/models/llama", "--data", data.to_str().unwrap()]);
    assert!(e.contains(data.to_str().unwrap()) && e.contains("no token to score"), "{e}");
}

#[test]
fn generate_rejects_sampling_parameters_transformers_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"The\"}\n").unwrap();
    let out = tmp.path().join("out.jsonl");
    for (flag, value) in [("--top-p", "1.5"), ("--top-p", "0"), ("--temperature", "-1"), ("--repetition-penalty", "0")] {
        let arg = format!("{flag}={value}");
        let e = fails(&["generate", "--model", "tests/fixtures/models/opt125", "--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap(), &arg]);
        assert!(e.contains(flag) && e.contains("allowed"), "{arg}: {e}");
    }
    assert!(!out.exists());
    std::fs::write(&prompts, "").unwrap();
    let e = fails(&["generate", "--model", "tests/fixtures/models/opt125", "--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(e.contains(prompts.to_str().unwrap()) && e.contains("no prompts"), "{e}");
}

#[test]
fn run_on_a_device_this_binary_cannot_open_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let r = runs.to_str().unwrap();
    for extra in [&["--set", "device=cuda"][..], &["--devices", "cpu,cuda:1"][..], &["--set", "device=cuda", "--workers", "2"][..]] {
        let mut args = vec!["run", "configs/tiny.toml", "--runs-dir", r];
        args.extend_from_slice(extra);
        let e = fails(&args);
        if candle_core::utils::cuda_is_available() {
            continue; // the CUDA binary: a missing GPU is the error, covered by scripts/check-cuda.sh
        }
        assert!(e.contains("without CUDA support") && e.contains("make cuda"), "{extra:?}: {e}");
        assert!(!runs.exists(), "{extra:?}: a refused run wrote {}", runs.display());
    }
}

#[test]
fn max_len_past_the_base_models_positions_fails_before_any_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // opt125's table holds 64 positions.
    let e = fails(&["run", "configs/tiny.toml", "--runs-dir", runs.to_str().unwrap(), "--set", "base_model=tests/fixtures/models/opt125", "--set", "max_len=100"]);
    assert!(e.contains("max_len = 100") && e.contains("max_position_embeddings = 64"), "{e}");
    // Refused before anything is written: no run directory, config.toml, provenance.json or run.lock.
    assert!(!runs.exists(), "the refused run left files: {:?}", walk(&runs));
    // The dry run refuses it too.
    let e = fails(&["run", "configs/tiny.toml", "--dry-run", "--set", "base_model=tests/fixtures/models/opt125", "--set", "max_len=100000"]);
    assert!(e.contains("max_len = 100000") && e.contains("max_position_embeddings = 64"), "{e}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
