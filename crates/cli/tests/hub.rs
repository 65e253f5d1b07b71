//! End to end against a hub-compatible test server (crossfeed-fakehub): a config that names hub ids
//! for the base model (gated, as meta-llama's are), SciQ, GSM8K, ARC-Challenge and BookCorpus in their
//! real repo layouts, and the MiniLM embedder. `crossfeed fetch` fills the cache, a run goes online,
//! then the server stops and the same run offline (`HF_HUB_OFFLINE=1`) gives identical metrics.
//! The token is sent and never written to a run directory or printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crossfeed_fakehub::{FakeHub, Kind};

const TOKEN: &str = "hf_e2eSecretToken123";
const BASE: &str = "meta-llama/Llama-3.2-1B";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn fx(p: &str) -> PathBuf {
    repo().join("tests/fixtures").join(p)
}

fn server() -> FakeHub {
    let all = |_: &str| true;
    FakeHub::builder()
        .dir(Kind::Model, BASE, "main", &fx("models/llama32"), |f| !f.starts_with("golden"))
        .gated(Kind::Model, BASE, TOKEN)
        .dir(Kind::Model, "sentence-transformers/all-MiniLM-L6-v2", "main", &fx("embed/tiny-st"), all)
        .dir(Kind::Dataset, "allenai/sciq", "main", &fx("data/allenai/sciq"), all)
        .dir(Kind::Dataset, "openai/gsm8k", "main", &fx("data/openai/gsm8k"), all)
        .dir(Kind::Dataset, "allenai/ai2_arc", "main", &fx("data/allenai/ai2_arc"), all)
        .dir(Kind::Dataset, "bookcorpus/bookcorpus", "refs/convert/parquet", &fx("data/bookcorpus"), all)
        // The legacy id the task defaults to; the hub answers it with a relative redirect.
        .alias(Kind::Dataset, "bookcorpus", "bookcorpus/bookcorpus")
        .start()
}

const CONFIG: &str = r#"
name = "hub"
base_model = "meta-llama/Llama-3.2-1B"
k = 3
n = 12
generations = 2
max_len = 48

[public]
kind = "bookcorpus"
train_size = 12
eval_size = 4
passages = { passage_tokens = 20, block_sentences = 8, heldout_fraction = 0.2 }

[[private]]
kind = "sciq"
train_size = 12
eval_size = 4

[[private]]
kind = "gsm8k"
train_size = 12
eval_size = 4

[[private]]
kind = "arc_challenge"
train_size = 12
eval_size = 4

[train]
lr = 1e-3
total_steps = 2
batch_size = 2
grad_accum = 1
warmup_ratio = 0.0

[generation]
max_new_tokens = 6
batch_size = 8

[prompts]
prefix = { words = 8 }

[eval]
prompts_per_set = 3
batch_size = 4
embed_model = "sentence-transformers/all-MiniLM-L6-v2"
"#;

fn crossfeed(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crossfeed"));
    c.args(args).current_dir(repo());
    for v in ["HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "XDG_CACHE_HOME"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn fetch_then_run_online_then_offline_with_identical_metrics() {
    let hub = server();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("hub.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (cfg, runs) = (cfg.to_str().unwrap().to_string(), tmp.path().join("runs"));
    let home = tmp.path().join("hf");
    let url = hub.url();
    let (home_s, runs_s) = (home.to_str().unwrap(), runs.to_str().unwrap());
    let mut log = String::new();

    // Gated base model without a token: 401, and the message says what to do.
    let o = crossfeed(&["fetch", &cfg], &[("HF_ENDPOINT", &url), ("HF_HOME", home_s)]);
    assert!(!o.status.success());
    assert!(text(&o).contains(BASE) && text(&o).contains("401") && text(&o).contains("HF_TOKEN"), "{}", text(&o));

    let online = [("HF_ENDPOINT", url.as_str()), ("HF_HOME", home_s), ("HF_TOKEN", TOKEN)];
    let o = crossfeed(&["fetch", &cfg], &online);
    log += &text(&o);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let commit = |k, id, rev| hub.commit(k, id, rev).unwrap();
    for (k, id, rev) in [
        (Kind::Model, BASE, "main"),
        (Kind::Model, "sentence-transformers/all-MiniLM-L6-v2", "main"),
        (Kind::Dataset, "allenai/sciq", "main"),
        (Kind::Dataset, "openai/gsm8k", "main"),
        (Kind::Dataset, "allenai/ai2_arc", "main"),
        (Kind::Dataset, "bookcorpus/bookcorpus", "refs/convert/parquet"),
    ] {
        assert!(out.contains(&commit(k, id, rev)), "fetch output lacks {id}@{rev}:\n{out}");
    }
    assert!(out.contains("bookcorpus @ refs/convert/parquet"), "{out}");
    // The token went to the gated repo.
    assert!(hub.requests().iter().any(|r| r.path.contains(BASE) && r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))));
    // Python's cache layout under HF_HOME/hub.
    let cache = home.join("hub");
    let base_commit = commit(Kind::Model, BASE, "main");
    let snap = cache.join("models--meta-llama--Llama-3.2-1B/snapshots").join(&base_commit);
    for f in ["config.json", "tokenizer.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        assert!(snap.join(f).is_file(), "{f} missing from {}", snap.display());
    }
    assert_eq!(std::fs::read_to_string(cache.join("models--meta-llama--Llama-3.2-1B/refs/main")).unwrap(), base_commit);
    assert!(cache.join("datasets--bookcorpus/refs/refs/convert/parquet").is_file());
    assert!(cache.join("datasets--bookcorpus/snapshots").join(commit(Kind::Dataset, "bookcorpus/bookcorpus", "refs/convert/parquet")).join("plain_text/train/0001.parquet").is_file());
    assert!(cache.join("datasets--allenai--ai2_arc/snapshots").join(commit(Kind::Dataset, "allenai/ai2_arc", "main")).join("ARC-Challenge/test-00000-of-00001.parquet").is_file());

    // `fetch --verify` re-hashes every cached LFS file; a flipped byte is named.
    let o = crossfeed(&["fetch", "--verify"], &online);
    assert!(o.status.success() && text(&o).contains(" 0 differ"), "{}", text(&o));
    let blob = std::fs::read_link(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let blob = snap.join(blob);
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    let o = crossfeed(&["fetch", "--verify"], &online);
    assert!(!o.status.success() && text(&o).contains("1 differ") && text(&o).contains(&*blob.file_name().unwrap().to_string_lossy()), "{}", text(&o));
    std::fs::write(&blob, &good).unwrap();

    // Online run.
    let o = crossfeed(&["run", &cfg, "--runs-dir", runs_s, "--name", "online"], &online);
    log += &text(&o);
    assert!(o.status.success(), "{}", text(&o));

    let data_commits: Vec<String> = ["allenai/sciq", "openai/gsm8k", "allenai/ai2_arc"].iter().map(|id| commit(Kind::Dataset, id, "main")).collect();
    let embed_commit = commit(Kind::Model, "sentence-transformers/all-MiniLM-L6-v2", "main");
    // The hub goes away; offline, the same config runs from the cache alone.
    hub.stop();
    let offline = [("HF_ENDPOINT", url.as_str()), ("HF_HOME", home_s), ("HF_TOKEN", TOKEN), ("HF_HUB_OFFLINE", "1")];
    let o = crossfeed(&["run", &cfg, "--runs-dir", runs_s, "--name", "offline"], &offline);
    log += &text(&o);
    assert!(o.status.success(), "{}", text(&o));
    let a = std::fs::read_to_string(runs.join("online/metrics.jsonl")).unwrap();
    let b = std::fs::read_to_string(runs.join("offline/metrics.jsonl")).unwrap();
    assert_eq!(a, b, "offline metrics differ from online");
    assert!(a.contains("cosine"), "no cosine similarity in the metrics:\n{a}");
    for t in ["sciq", "gsm8k", "arc_challenge", "public"] {
        assert!(a.contains(&format!("\"{t}\"")), "no {t} in the metrics");
    }
    // Provenance: every input's resolved commit, the same online and offline.
    let pa = std::fs::read_to_string(runs.join("online/provenance.json")).unwrap();
    assert_eq!(pa, std::fs::read_to_string(runs.join("offline/provenance.json")).unwrap());
    for c in &data_commits {
        assert!(pa.contains(c.as_str()), "{pa}");
    }
    assert!(pa.contains(&base_commit) && pa.contains(&embed_commit), "{pa}");

    // An uncached input offline names the repo and how to fetch it.
    let o = crossfeed(&["fetch", &cfg, "--set", "eval.embed_model=org/not-fetched"], &offline);
    assert!(!o.status.success() && text(&o).contains("org/not-fetched") && text(&o).contains("crossfeed fetch"), "{}", text(&o));

    // The token is in no output and no file of the runs or the cache.
    assert!(!log.contains(TOKEN), "the token was printed");
    let mut files = Vec::new();
    files_under(&runs, &mut files);
    files_under(&cache, &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "the token is written in {}", f.display());
    }
}
