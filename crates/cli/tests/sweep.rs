//! `crossfeed sweep` and `crossfeed slurm` without a cluster: the tiny sweep runs and reports, the
//! Slurm scripts are written, and bad input fails before anything is written or submitted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn crossfeed(args: &[&str], path_env: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crossfeed"));
    c.args(args).current_dir(repo());
    if let Some(p) = path_env {
        c.env("PATH", p);
    }
    c.output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = crossfeed(args, None);
    assert!(o.status.success(), "crossfeed {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(args: &[&str], path_env: Option<&str>) -> String {
    let o = crossfeed(args, path_env);
    assert!(!o.status.success(), "crossfeed {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn tiny_sweep_runs_reports_and_writes_slurm_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_str().unwrap();
    let md = ok(&["sweep", "run", "configs/sweeps/tiny.toml", "--runs-dir", runs, "--workers", "2"]);
    assert!(md.contains("| llama32 | – | 0 | M1 | ") && md.contains("| llama32 | – | 1 | M2 | "), "{md}");
    let dir = tmp.path().join("tiny-sweep");
    // Collapse columns: each entity's self-BLEU and perplexity init → final (no embedder here: no Vendi).
    assert!(md.contains("| self-BLEU | Vendi | perplexity | TTR |") && md.contains("self_bleu.svg"), "{md}");
    assert!(md.contains("| model | setting | alpha | both wrong | by chance | same wrong option | by chance |"), "{md}");
    for f in ["report.md", "cross_ce.svg", "cross_ce.png", "similarity.svg", "similarity.png", "self_bleu.svg", "self_bleu.png", "alpha0-s0/metrics.jsonl", "alpha1-s0/metrics.jsonl"] {
        assert!(dir.join(f).is_file(), "sweep lacks {f}");
    }
    let st = ok(&["sweep", "status", "configs/sweeps/tiny.toml", "--runs-dir", runs]);
    assert!(st.contains("28/28 stages done"), "{st}");

    // Scripts only (no --submit): one array per (generation, stage) over both points' entities.
    let out = crossfeed(&["slurm", "configs/sweeps/tiny.toml", "--runs-dir", runs, "--set", "generations=3", "--partition", "p1", "--extra-sbatch=--constraint=x"], None);
    // generations=3 is a different config than the finished runs: refused, nothing changed.
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("different config"));
    let fresh = tmp.path().join("fresh");
    let o = crossfeed(&["slurm", "configs/sweeps/tiny.toml", "--runs-dir", fresh.to_str().unwrap(), "--partition", "p1", "--extra-sbatch=--constraint=x"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sub = fresh.join("tiny-sweep/slurm/sub-000");
    let train = std::fs::read_to_string(sub.join("gen-001-train.sbatch")).unwrap();
    assert!(train.contains("#SBATCH --array=0-3") && train.contains("#SBATCH --partition=p1") && train.contains("#SBATCH --constraint=x"), "{train}");
    let tasks = std::fs::read_to_string(sub.join("gen-001-train.tasks")).unwrap();
    assert_eq!(tasks.lines().count(), 4, "{tasks}");
    let submit = std::fs::read_to_string(sub.join("submit.sh")).unwrap();
    assert!(submit.contains("--dependency=afterany:") && submit.contains("gen-001-similarity.sbatch"), "{submit}");

    // Sharded generate stages: one array of every shard (2 points × 2 entities × 3 shards), and the
    // generate (merge) array waits for it.
    let sharded = tmp.path().join("sharded");
    let o = crossfeed(&["slurm", "configs/sweeps/tiny.toml", "--runs-dir", sharded.to_str().unwrap(), "--set", "generation.shards=3"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sub = sharded.join("tiny-sweep/slurm/sub-000");
    let shards = std::fs::read_to_string(sub.join("gen-001-generate-shard.tasks")).unwrap();
    assert_eq!(shards.lines().count(), 12, "{shards}");
    assert!(shards.contains("generate-shard-2"), "{shards}");
    let submit = std::fs::read_to_string(sub.join("submit.sh")).unwrap();
    let (a, b) = (submit.find("gen-001-generate-shard.sbatch").unwrap(), submit.find("gen-001-generate.sbatch").unwrap());
    assert!(a < b, "{submit}");
}

#[test]
fn bad_sweeps_are_refused_before_anything_is_written_or_submitted() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let tiny = repo().join("configs/tiny.toml").display().to_string();
    let write = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, format!("name = \"bad\"\nbase = {tiny:?}\n{body}")).unwrap();
        p.display().to_string()
    };
    let r = runs.to_str().unwrap();

    let key = write("key.toml", "[grid]\n\"train.lrr\" = [1e-3]\n");
    let e = fails(&["sweep", "run", &key, "--runs-dir", r], None);
    assert!(e.contains("`train.lrr` is not a config key") && e.contains("train.lr"), "{e}");

    let alpha = write("alpha.toml", "[grid]\nalpha = [0.5, 1.5]\n");
    let e = fails(&["slurm", &alpha, "--runs-dir", r, "--submit"], None);
    assert!(e.contains("point alpha1.5-s0") && e.contains("alpha = 1.5 is outside [0, 1]"), "{e}");
    assert!(empty(&runs), "an invalid sweep wrote something");

    let e = fails(&["slurm", "configs/sweeps/tiny.toml", "--runs-dir", r, "--submit"], Some("/nonexistent"));
    assert!(e.contains("sbatch not found") && e.contains("apt-get install slurm-client"), "{e}");
    assert!(empty(&runs), "a failed submission wrote something");
}

#[test]
fn shipped_paper_sweeps_expand() {
    let tmp = tempfile::tempdir().unwrap();
    // The paper configs say device = "cuda": this (plain) binary refuses them before writing anything.
    let runs = tmp.path().join("plain");
    let e = fails(&["slurm", "configs/sweeps/paper-main.toml", "--runs-dir", runs.to_str().unwrap()], None);
    assert!(e.contains("device = \"cuda\"") && e.contains("make cuda") && e.contains("--bin"), "{e}");
    assert!(empty(&runs), "a refused sweep wrote something");
    // A CUDA binary (here a stand-in answering `backends` as one does) gets the scripts.
    let cuda = tmp.path().join("crossfeed-cuda");
    std::fs::write(&cuda, "#!/bin/sh\n[ \"$1\" = backends ] && echo cpu cuda\n").unwrap();
    std::fs::set_permissions(&cuda, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Scripts only: every point is checked; hub ids need no network to be written down.
    for (f, n) in [("paper-main", 18), ("paper-beta", 36), ("paper-k3", 18), ("topologies", 18)] {
        let o = crossfeed(&["slurm", &format!("configs/sweeps/{f}.toml"), "--runs-dir", tmp.path().to_str().unwrap(), "--bin", cuda.to_str().unwrap()], None);
        assert!(o.status.success(), "{f}: {}", String::from_utf8_lossy(&o.stderr));
        let runs = std::fs::read_dir(tmp.path().join(f)).unwrap().filter(|e| e.as_ref().unwrap().path().join("config.toml").is_file()).count();
        assert_eq!(runs, n, "{f}");
    }
}

#[test]
fn a_failing_squeue_stops_a_submission() {
    // Slurm's client commands as stand-ins: sbatch would queue, squeue fails (controller down).
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [("sbatch", "echo 4242"), ("squeue", "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1")] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let runs = tmp.path().join("runs");
    let slurm = runs.join("tiny/slurm");
    ok(&["slurm", "configs/tiny.toml", "--runs-dir", runs.to_str().unwrap()]);
    // A job recorded by an earlier submission, which may still be queued.
    let jobs = r#"[{"step":"gen-000-train","job":"4241","script":"x.sbatch","tasks":[]}]"#;
    std::fs::write(slurm.join("jobs.json"), jobs).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let e = fails(&["slurm", "configs/tiny.toml", "--runs-dir", runs.to_str().unwrap(), "--submit"], Some(&path));
    assert!(e.contains("squeue failed") && e.contains("Unable to contact") && e.contains("nothing was submitted"), "{e}");
    assert!(!slurm.join("sub-001").exists(), "a submission was written");
}
