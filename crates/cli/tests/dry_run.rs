//! `crossfeed run CONFIG --dry-run`: the plan with estimates, from the config alone (no run directory,
//! no model load beyond its config.json), with and without a throughput file; and the device errors
//! a user without the right build or libraries sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn crossfeed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crossfeed")).args(args).current_dir(repo()).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let o = crossfeed(&["run", "configs/tiny.toml", "--runs-dir", runs, "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 3 generations x (2 train + 2 eval + similarity) + 2 x 2 generate + base eval/similarity = 21 stages.
    assert!(out.contains("total: 21 stages"), "{out}");
    assert!(out.contains("generation 1 entity 0 generate") || out.contains("1:0:generate"), "{out}");
    assert!(out.contains("no --bench file"), "{out}");
    assert!(out.contains("topology \"all\" (the default for this pool_policy)"), "{out}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "--dry-run created files");

    let bench = tmp.path().join("bench.json");
    std::fs::write(&bench, r#"{"device": "test", "model": "tiny", "train_tokens_per_s": 1000, "generate_tokens_per_s": 100, "score_tokens_per_s": 5000}"#).unwrap();
    let o = crossfeed(&["run", "configs/tiny.toml", "--runs-dir", runs, "--dry-run", "--bench", bench.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("wall time <="), "{out}");

    std::fs::write(&bench, r#"{"train_tokens_per_s": 1000, "generate_tokens_per_s": 0, "score_tokens_per_s": 5000}"#).unwrap();
    let o = crossfeed(&["run", "configs/tiny.toml", "--runs-dir", runs, "--dry-run", "--bench", bench.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("generate_tokens_per_s"), "{err}");
}

#[test]
fn dry_run_of_a_paper_config_uses_the_built_in_shape() {
    let o = crossfeed(&["run", "configs/paper-llama1b-k2-b0.5-a0.5.toml", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("1236M parameters"), "{out}");
    assert!(out.contains("dtype bf16"), "{out}");
}

#[test]
fn dry_run_of_the_qwen3_and_gemma_configs_uses_their_built_in_shapes() {
    for (config, params) in [("configs/paper-qwen3-0.6b-k2-b0.5-a0.5.toml", "596M parameters"), ("configs/paper-gemma3-1b-k2-b0.5-a0.5.toml", "1000M parameters"), ("configs/paper-gemma2-2b-k2-b0.5-a0.5.toml", "2614M parameters")] {
        let o = crossfeed(&["run", config, "--dry-run"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{config}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(params) && out.contains("dtype bf16"), "{config}: {out}");
    }
}

#[test]
fn cuda_device_errors_say_what_to_do() {
    // A real line of text: an empty file is refused before the device is opened.
    let data = std::env::temp_dir().join(format!("crossfeed-cuda-err-{}.jsonl", std::process::id()));
    std::fs::write(&data, "{\"text\": \"hello world\"}\n").unwrap();
    let o = crossfeed(&["score", "--model", "tests/fixtures/models/llama32", "--data", data.to_str().unwrap(), "--device", "cuda"]);
    let _ = std::fs::remove_file(&data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "--device cuda should fail here");
    if cfg!(feature = "cuda") {
        assert!(err.contains("no CUDA device could be opened") && !err.contains("panicked"), "{err}");
    } else {
        assert!(err.contains("make cuda"), "{err}");
    }
}
