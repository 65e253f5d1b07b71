//! Custom tasks end to end: the shipped example (JSONL questions with multiple-choice accuracy, a plain
//! text corpus), the same questions from parquet (written by pyarrow, scripts/make_custom_fixtures.py)
//! and from JSONL as private task and public corpus, and both through the hub-compatible test server
//! (crossfeed-fakehub). The same rows give the same base-model metrics wherever they come from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crossfeed_fakehub::{FakeHub, Kind};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

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

/// A two-entity config: `private` and `public` are TOML tables' bodies (source + custom).
fn config(name: &str, private: &str, public: &str) -> String {
    format!(
        r#"
name = "{name}"
base_model = "tests/fixtures/models/llama32"
k = 2
n = 12
generations = 2
max_len = 48

[public]
kind = "custom"
eval_size = 4
{public}

[[private]]
kind = "custom"
eval_size = 6
{private}

[[private]]
kind = "toy_facts"
source = {{ type = "toy" }}
train_size = 16
eval_size = 4

[train]
lr = 1e-3
total_steps = 2
batch_size = 2
warmup_ratio = 0.0

[generation]
max_new_tokens = 6
batch_size = 8

[prompts]
prefix = {{ words = 8 }}

[eval]
prompts_per_set = 3
batch_size = 4
accuracy_max_new_tokens = 8
"#
    )
}

const QA_JSONL: &str = r#"source = { type = "local", dir = "examples/custom-qa" }
custom = { name = "colors", prompt = "Question: {{question}}\nAnswer:", answer = " {{answer}}", accuracy = { type = "multiple_choice", options = "options", label = "label" } }"#;
const QA_PARQUET: &str = r#"source = { type = "local", dir = "tests/fixtures/custom-qa-parquet" }
custom = { name = "colors", prompt = "Question: {{question}}\nAnswer:", answer = " {{answer}}", accuracy = { type = "multiple_choice", options = ["opt_a", "opt_b", "opt_c", "opt_d"], label = "label" } }"#;
const QA_HUB: &str = r#"source = { type = "hub", repo = "lab/colors", revision = "v1", config = "data" }
custom = { name = "colors", prompt = "Question: {{question}}\nAnswer:", answer = " {{answer}}", accuracy = { type = "multiple_choice", options = ["opt_a", "opt_b", "opt_c", "opt_d"], label = "label" } }"#;
const CORPUS_JSONL: &str = r#"source = { type = "local", dir = "examples/custom-qa" }
custom = { name = "qa-text", answer = "{{question}} {{answer}}." }"#;
const CORPUS_PARQUET: &str = r#"source = { type = "local", dir = "tests/fixtures/custom-qa-parquet" }
custom = { name = "qa-text", answer = "{{question}} {{answer}}." }"#;
const CORPUS_TEXT: &str = r#"source = { type = "local", dir = "examples/custom-corpus" }
eval_split = "train"
custom = { name = "corpus", text_unit = "block" }"#;
const CORPUS_HUB: &str = r#"source = { type = "hub", repo = "lab/corpus" }
eval_split = "train"
custom = { name = "corpus", text_unit = "block" }"#;

/// Runs `cfg` (TOML text) into `runs`; returns metrics.jsonl.
fn run(tmp: &Path, name: &str, cfg: &str, env: &[(&str, &str)]) -> String {
    let path = tmp.join(format!("{name}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let runs = tmp.join("runs");
    let o = crossfeed(&["run", path.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()], env);
    assert!(o.status.success(), "{name}: {}", text(&o));
    std::fs::read_to_string(runs.join(name).join("metrics.jsonl")).unwrap()
}

/// The base model's (generation -1) lines of one eval set.
fn base_lines(metrics: &str, set: &str) -> Vec<String> {
    metrics.lines().filter(|l| l.contains("\"generation\":-1") && l.contains(&format!("\"eval_set\":\"{set}\""))).map(String::from).collect()
}

#[test]
fn custom_tasks_from_jsonl_parquet_text_and_the_hub_run_the_whole_loop() {
    let tmp = tempfile::tempdir().unwrap();

    // The shipped example.
    let runs = tmp.path().join("example-runs");
    let o = crossfeed(&["run", "configs/custom-example.toml", "--runs-dir", runs.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::read_to_string(runs.join("custom-example/metrics.jsonl")).unwrap();
    for (set, metric) in [("colors", "acc"), ("colors", "acc_norm"), ("colors", "ce"), ("colors-b", "ce"), ("public", "ce")] {
        assert!(m.lines().any(|l| l.contains(&format!("\"eval_set\":\"{set}\"")) && l.contains(&format!("\"metric\":\"{metric}\""))), "no {set} {metric}:\n{m}");
    }
    assert!(m.lines().any(|l| l.contains("\"eval_set\":\"colors-b\"") && l.contains("\"metric\":\"exact_match\"")), "no colors-b exact_match:\n{m}");
    assert!(!m.contains("\"eval_set\":\"colors-b\",\"metric\":\"acc\""), "colors-b is scored by exact match only");
    // Every exact-match decision is recorded with the generation and what the regex extracted.
    let acc = std::fs::read_to_string(runs.join("custom-example/gen-000/entity-1/accuracy.jsonl")).unwrap();
    assert!(acc.lines().any(|l| l.contains("\"eval_set\":\"colors-b\"") && l.contains("\"generation\"") && l.contains("\"exact_match\"")), "{acc}");

    // The same questions from JSONL and from parquet, as a private task and as the public corpus.
    let a = run(tmp.path(), "jsonl", &config("jsonl", QA_JSONL, CORPUS_PARQUET), &[]);
    let b = run(tmp.path(), "parquet", &config("parquet", QA_PARQUET, CORPUS_JSONL), &[]);
    for set in ["colors", "public"] {
        let (la, lb) = (base_lines(&a, set), base_lines(&b, set));
        assert!(!la.is_empty(), "{set}: {a}");
        assert_eq!(la, lb, "{set}: JSONL and parquet rows score differently");
    }
    assert!(a.contains("\"metric\":\"acc_norm\"") && a.contains("\"generation\":1"), "{a}");
    // The trained models differ only through the public corpus's template; both runs train on it.
    let manifest = std::fs::read_to_string(tmp.path().join("runs/parquet/gen-001/entity-0/manifest.jsonl")).unwrap();
    assert!(manifest.contains("\"source\":\"public\"") && manifest.contains("\"source\":\"private\"") && manifest.contains("\"source\":\"synthetic\""));

    // Through the hub: a dataset repo at a pinned revision with a config directory, and a text corpus.
    let fx = repo().join("tests/fixtures/custom-qa-parquet");
    let read = |p: &Path| std::fs::read(p).unwrap();
    let hub = FakeHub::builder()
        .files(
            Kind::Dataset,
            "lab/colors",
            "v1",
            vec![
                ("data/train-00000-of-00001.parquet".into(), read(&fx.join("train-00000-of-00001.parquet"))),
                ("data/test-00000-of-00001.parquet".into(), read(&fx.join("test-00000-of-00001.parquet"))),
                ("README.md".into(), b"# colors\n".to_vec()),
            ],
        )
        .files(Kind::Dataset, "lab/corpus", "main", vec![("train.txt".into(), read(&repo().join("examples/custom-corpus/train.txt")))])
        .start();
    let home = tmp.path().join("hf");
    let url = hub.url();
    let env = [("HF_ENDPOINT", url.as_str()), ("HF_HOME", home.to_str().unwrap())];
    let h = run(tmp.path(), "hub", &config("hub", QA_HUB, CORPUS_HUB), &env);
    let l = run(tmp.path(), "local", &config("local", QA_PARQUET, CORPUS_TEXT), &[]);
    assert_eq!(h, l, "the hub's copy gives the local files' metrics");
    let prov = std::fs::read_to_string(tmp.path().join("runs/hub/provenance.json")).unwrap();
    assert!(prov.contains(&hub.commit(Kind::Dataset, "lab/colors", "v1").unwrap()), "{prov}");
    assert!(home.join("hub/datasets--lab--colors/snapshots").is_dir());
    // `crossfeed fetch` gets custom hub tasks too; offline, the same run comes from the cache alone.
    let fetch_cfg = tmp.path().join("hub-offline.toml");
    std::fs::write(&fetch_cfg, config("hub-offline", QA_HUB, CORPUS_HUB)).unwrap();
    let o = crossfeed(&["fetch", fetch_cfg.to_str().unwrap()], &env);
    assert!(o.status.success() && text(&o).contains("lab/colors") && text(&o).contains("lab/corpus"), "{}", text(&o));
    hub.stop();
    let offline = [env[0], env[1], ("HF_HUB_OFFLINE", "1")];
    assert_eq!(run(tmp.path(), "hub-offline", &config("hub-offline", QA_HUB, CORPUS_HUB), &offline), h);
}

#[test]
fn a_bad_custom_task_stops_the_run_naming_file_column_and_template() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = QA_JSONL.replace("{{question}}", "{{questoin}}");
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, config("bad", &bad, CORPUS_TEXT)).unwrap();
    let o = crossfeed(&["run", path.to_str().unwrap(), "--runs-dir", tmp.path().join("runs").to_str().unwrap()], &[]);
    let e = text(&o);
    assert!(!o.status.success());
    assert!(e.contains("train.jsonl") && e.contains("`questoin`") && e.contains("custom.prompt") && e.contains("question"), "{e}");
    // A private task may not take the public set's name.
    let o = crossfeed(&["run", path.to_str().unwrap(), "--dry-run", "--set", "private.0.custom.name=public"], &[]);
    assert!(!o.status.success() && text(&o).contains("custom.name = \"public\""), "{}", text(&o));
    // A custom section on a built-in kind is refused when the config is read.
    let o = crossfeed(&["run", "configs/tiny.toml", "--dry-run", "--set", "private.0.custom={ name = \"x\" }"], &[]);
    assert!(!o.status.success() && text(&o).contains("only for kind = \"custom\""), "{}", text(&o));
}
