//! Loading tasks from fixtures in the real hub schemas: rendering, splits, hub cache/offline paths,
//! local parquet/JSONL sources, BookCorpus streaming, and bad input.

use crossfeed_data::*;
use std::path::{Path, PathBuf};

fn fx(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data").join(rel)
}

fn local(kind: TaskKind, dir: &str) -> TaskConfig {
    TaskConfig { source: SourceConfig::Local { dir: fx(dir), config: None }, ..TaskConfig::new(kind) }
}

#[test]
fn sciq_renders_lm_eval_format() {
    let d = load_task(&local(TaskKind::Sciq, "allenai/sciq")).unwrap();
    assert_eq!((d.train.len(), d.eval.len()), (24, 8));
    assert_eq!(
        d.train[0].prompt,
        "Mesophiles grow best in moderate temperature, typically between 25°C and 40°C (77°F and 104°F). Mesophiles are often found living in or on the bodies of humans or other animals.\nQuestion: What type of organism is commonly used in preparation of foods such as cheese and yogurt?\nAnswer:"
    );
    assert_eq!(d.train[0].completion, " mesophilic organisms");
    // Empty support: the prompt starts with the newline, as in the harness.
    assert_eq!(d.train[1].prompt, "\nQuestion: What is the least dangerous radioactive decay?\nAnswer:");
    assert_eq!(d.train[1].completion, " alpha decay");
    // support.lstrip()
    assert!(d.train[2].prompt.starts_with("Gravity is a force"));
    // Eval is the test split, never train.
    assert!(d.eval.iter().all(|e| e.prompt.contains("(test")));
    assert!(d.files.iter().any(|f| f.file == "data/train-00000-of-00001.parquet"));
    // Completion-only boundary.
    let ex = &d.train[0];
    assert_eq!(&ex.text()[ex.prompt_len_bytes()..], " mesophilic organisms");
}

#[test]
fn gsm8k_renders_and_jsonl_matches_parquet() {
    let d = load_task(&local(TaskKind::Gsm8k, "openai/gsm8k")).unwrap();
    assert_eq!(d.train[0].text(), "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?\nAnswer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72");
    assert!(d.train.iter().all(|e| e.completion.contains("\n#### ")));
    let j = load_task(&local(TaskKind::Gsm8k, "jsonl/gsm8k")).unwrap();
    assert_eq!(d.train, j.train);
    assert_eq!(d.eval, j.eval);
    // A template override with the annotation-free answer.
    let t = TaskConfig { template: Some(Template::new("Q: {question}\nA:", " {answer_no_calc}")), ..local(TaskKind::Gsm8k, "openai/gsm8k") };
    let d = load_task(&t).unwrap();
    assert!(d.train[0].completion.starts_with(" Natalia sold 48/2 = 24 clips in May."));
    let bad = TaskConfig { template: Some(Template::new("{quesiton}", "")), ..local(TaskKind::Gsm8k, "openai/gsm8k") };
    let e = load_task(&bad).unwrap_err().to_string();
    assert!(e.contains("quesiton") && e.contains("answer_no_calc"), "{e}");
}

#[test]
fn arc_renders_lettered_choices() {
    let d = load_task(&local(TaskKind::ArcChallenge, "allenai/ai2_arc")).unwrap();
    assert_eq!((d.train.len(), d.eval.len()), (16, 6));
    assert_eq!(
        d.train[0].text(),
        "Question: Which of these is a source of light energy? [train 0]\nA. the Sun\nB. a rock\nC. a pillow\nD. a shadow\nAnswer: A. the Sun"
    );
    // Row 3 uses numeric labels "1".."4" (answerKey "3"): still lettered.
    assert_eq!(d.train[3].prompt, "Question: Which tool is best for measuring the mass of a rock? [train 3]\nA. a ruler\nB. a thermometer\nC. a balance\nD. a graduated cylinder\nAnswer:");
    assert_eq!(d.train[3].completion, " C. a balance");
    // Row 5 has five options.
    assert!(d.train[5].prompt.contains("\nE. none of these\nAnswer:"));
    assert_eq!(d.train[5].completion, " B. whale");
    // ARC-Easy from the config subdirectory; JSONL copy identical.
    let e = load_task(&local(TaskKind::ArcEasy, "allenai/ai2_arc")).unwrap();
    assert!(e.train[0].prompt.contains("[train 0]") && e.files[0].file.starts_with("ARC-Easy/"));
    let j = load_task(&local(TaskKind::ArcEasy, "jsonl/ai2_arc")).unwrap();
    assert_eq!(e.train, j.train);
}

#[test]
fn subsets_are_seeded_and_sizes_checked() {
    let c = TaskConfig { train_size: Some(10), eval_size: Some(3), subset_seed: 4, ..local(TaskKind::Sciq, "allenai/sciq") };
    let a = load_task(&c).unwrap();
    assert_eq!((a.train.len(), a.eval.len()), (10, 3));
    assert_eq!(a, load_task(&c).unwrap());
    assert!(a.train_rows.windows(2).all(|w| w[0] < w[1]));
    let other = load_task(&TaskConfig { subset_seed: 5, ..c.clone() }).unwrap();
    assert_ne!(a.train_rows, other.train_rows);
    let e = load_task(&TaskConfig { train_size: Some(25), ..c }).unwrap_err().to_string();
    assert!(e.contains("sciq train split") && e.contains("24") && e.contains("25"), "{e}");
}

fn book(train: usize, eval: usize) -> TaskConfig {
    TaskConfig {
        train_size: Some(train),
        eval_size: Some(eval),
        passages: PassageConfig { passage_tokens: 20, block_sentences: 8, heldout_fraction: 0.1 },
        ..local(TaskKind::Bookcorpus, "bookcorpus")
    }
}

#[test]
fn bookcorpus_streams_passages_of_consecutive_sentences() {
    let d = load_task(&book(12, 4)).unwrap();
    assert_eq!((d.train.len(), d.eval.len()), (12, 4));
    assert_eq!(d.files.len(), 2);
    // 320 rows → 40 blocks of 8; last 4 blocks (rows 288..320) held out.
    assert!(d.train_rows.iter().all(|&r| r < 288 && r % 8 == 0));
    assert!(d.eval_rows.iter().all(|&r| r >= 288));
    let lines: Vec<String> = fixtures::bookcorpus_lines(0, 160).into_iter().chain(fixtures::bookcorpus_lines(1, 160)).collect();
    for (ex, &row) in d.train.iter().zip(&d.train_rows).chain(d.eval.iter().zip(&d.eval_rows)) {
        assert!(ex.prompt.is_empty());
        // Rebuild from the raw lines: consecutive non-empty sentences within the block, ≤ 20 words.
        let mut expect = String::new();
        let mut words = 0;
        for l in lines[row as usize..(row as usize + 8)].iter().filter(|l| !l.is_empty()) {
            let w = l.split_whitespace().count();
            if words > 0 && words + w > 20 {
                break;
            }
            if !expect.is_empty() {
                expect.push(' ');
            }
            expect.push_str(l);
            words += w;
        }
        assert_eq!(ex.completion, expect);
        assert!(whitespace_tokens(&ex.completion) <= 20);
    }
    assert_eq!(d, load_task(&book(12, 4)).unwrap());
    // Streaming (row groups of 40, two shards) gives what an in-memory corpus gives.
    let paths = [fx("bookcorpus/plain_text/train/0000.parquet"), fx("bookcorpus/plain_text/train/0001.parquet")];
    let cfg = book(30, 4).passages;
    let mut pq = ParquetCorpus::open(&paths).unwrap();
    let mut mem = MemoryCorpus(lines);
    let count = |s: &str| s.len() / 4; // a "tokenizer" closure
    assert_eq!(sample_passages(&mut pq, &cfg, 30, 4, 9, &count).unwrap(), sample_passages(&mut mem, &cfg, 30, 4, 9, &count).unwrap());
    // Asking for more passages than blocks is a clear error.
    let e = load_task(&book(37, 4)).unwrap_err().to_string();
    assert!(e.contains("36") && e.contains("37"), "{e}");
}

fn fake_cache(cache: &Path, repo: &str, revision: &str, commit: &str, files: &[(&str, PathBuf)]) {
    let dir = cache.join(format!("datasets--{}", repo.replace('/', "--")));
    let refp = dir.join("refs").join(revision);
    std::fs::create_dir_all(refp.parent().unwrap()).unwrap();
    std::fs::write(&refp, commit).unwrap();
    for (rel, src) in files {
        let p = dir.join("snapshots").join(commit).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(src, p).unwrap();
    }
}

fn hub(cache: &Path, revision: Option<&str>) -> SourceConfig {
    SourceConfig::Hub { repo: None, revision: revision.map(str::to_string), config: None, offline: Some(true), cache_dir: Some(cache.to_path_buf()), files: None }
}

#[test]
fn hub_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path();
    let commit = "2c94ad3e1aafab77146f384e23536f97a4849815";
    let files: Vec<(&str, PathBuf)> = ["train", "validation", "test"]
        .iter()
        .map(|s| {
            let rel: &str = Box::leak(format!("data/{s}-00000-of-00001.parquet").into_boxed_str());
            (rel, fx(&format!("allenai/sciq/{rel}")))
        })
        .collect();
    fake_cache(cache, "allenai/sciq", "main", commit, &files);
    let d = load_task(&TaskConfig { source: hub(cache, None), ..TaskConfig::new(TaskKind::Sciq) }).unwrap();
    assert_eq!(d, TaskData { files: d.files.clone(), ..load_task(&local(TaskKind::Sciq, "allenai/sciq")).unwrap() });
    assert!(d.files.iter().all(|f| f.commit.as_deref() == Some(commit) && f.repo == "allenai/sciq" && f.revision == "main"));
    // A pinned commit resolves without the ref.
    let d2 = load_task(&TaskConfig { source: hub(cache, Some(commit)), ..TaskConfig::new(TaskKind::Sciq) }).unwrap();
    assert_eq!(d.train, d2.train);
    // Not cached + offline: the error says how to fetch.
    let e = load_task(&TaskConfig { source: hub(cache, None), ..TaskConfig::new(TaskKind::Gsm8k) }).unwrap_err().to_string();
    assert!(e.contains("openai/gsm8k") && e.contains("main/train-00000-of-00001.parquet") && e.contains("huggingface-cli download --repo-type dataset") && e.contains("offline"), "{e}");
    let e = load_task(&TaskConfig { source: hub(cache, Some("v9")), ..TaskConfig::new(TaskKind::Sciq) }).unwrap_err().to_string();
    assert!(e.contains("--revision v9"), "{e}");

    // BookCorpus via refs/convert/parquet: shards listed from the cached snapshot.
    fake_cache(
        cache,
        "bookcorpus",
        "refs/convert/parquet",
        "0123456789abcdef0123456789abcdef01234567",
        &[("plain_text/train/0000.parquet", fx("bookcorpus/plain_text/train/0000.parquet")), ("plain_text/train/0001.parquet", fx("bookcorpus/plain_text/train/0001.parquet"))],
    );
    let b = load_task(&TaskConfig { source: hub(cache, None), ..book(12, 4) }).unwrap();
    assert_eq!(b.train, load_task(&book(12, 4)).unwrap().train);
    assert_eq!(b.files[1].file, "plain_text/train/0001.parquet");
}

#[test]
fn hf_hub_offline_env_var() {
    // The only test that touches the environment; every other hub test sets `offline` explicitly.
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY (edition 2021: safe fn): no other test reads HF_HUB_OFFLINE.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert!(offline_from_env());
    let src = SourceConfig::Hub { repo: None, revision: None, config: None, offline: None, cache_dir: Some(tmp.path().into()), files: None };
    let e = load_task(&TaskConfig { source: src, ..TaskConfig::new(TaskKind::ArcEasy) }).unwrap_err();
    std::env::remove_var("HF_HUB_OFFLINE");
    assert!(matches!(e, DataError::NotCached { .. }), "{e}");
    assert!(e.to_string().contains("allenai/ai2_arc") && e.to_string().contains("ARC-Easy/train-00000-of-00001.parquet"));
}

#[test]
fn missing_column_names_file_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for split in ["train", "test"] {
        let p = dir.join(format!("data/{split}-00000-of-00001.parquet"));
        let rows = fixtures::sciq_rows(split, 4);
        let col = |i: usize| fixtures::str_col(&rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>());
        fixtures::write_parquet(&p, vec![("question", col(0)), ("distractor3", col(1)), ("distractor1", col(2)), ("distractor2", col(3)), ("correct_answer", col(4))], None).unwrap();
    }
    let c = TaskConfig { source: SourceConfig::Local { dir: dir.into(), config: None }, ..TaskConfig::new(TaskKind::Sciq) };
    let e = load_task(&c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::MissingColumn { .. }));
    assert!(msg.contains("train-00000-of-00001.parquet") && msg.contains("`support`") && msg.contains("correct_answer: string"), "{msg}");
    // Wrong type: ARC `choices` as a plain string.
    let p = dir.join("arc/ARC-Easy/train-00000-of-00001.parquet");
    fixtures::write_parquet(&p, vec![("id", fixtures::str_col(&["x"])), ("question", fixtures::str_col(&["q"])), ("choices", fixtures::str_col(&["A"])), ("answerKey", fixtures::str_col(&["A"]))], None).unwrap();
    let e = read_rows(&p, TaskKind::ArcEasy.columns()).unwrap_err().to_string();
    assert!(e.contains("choices") && e.contains("struct<text"), "{e}");
    // JSONL line missing a key.
    let j = dir.join("bad.jsonl");
    std::fs::write(&j, "{\"question\": \"q\"}\n").unwrap();
    let e = read_rows(&j, TaskKind::Gsm8k.columns()).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("`answer`"), "{e}");
    // No files for a split.
    let e = load_task(&TaskConfig { source: SourceConfig::Local { dir: dir.join("arc"), config: None }, ..TaskConfig::new(TaskKind::ArcEasy) }).unwrap_err().to_string();
    assert!(e.contains("test") && e.contains("ARC-Easy/test-00000-of-00001.parquet"), "{e}");
}

#[test]
fn config_toml_round_trip() {
    let text = r#"
[public]
kind = "bookcorpus"
train_size = 12500
source = { type = "hub", revision = "refs/convert/parquet" }
passages = { passage_tokens = 256 }

[[private]]
kind = "sciq"
source = { type = "local", dir = "/data/sciq" }

[[private]]
kind = "gsm8k"
template = { prompt = "Q: {question}\nA:", completion = " {answer}" }

[[private]]
kind = "toy_facts"
source = { type = "toy", seed = 3 }

[mixture]
alpha = 0.5
beta = 0.5
rounding = "largest_remainder"
pool_policy = "latest"

[prompts]
source = "own_training"
prefix = { words = 16 }
"#;
    let c: DataConfig = toml::from_str(text).unwrap();
    assert_eq!(c.private.len(), 3);
    assert_eq!(c.public.passages.passage_tokens, 256);
    assert_eq!(c.public.passages.block_sentences, 64);
    assert_eq!(c.private[0].eval_size, Some(500));
    assert_eq!(c.prompts.prefix, PrefixLength::Words(16));
    assert_eq!(c.loss_mask, LossMask::Full);
    let back: DataConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    // Unknown fields are rejected, in nested structs and in the tagged source too.
    assert!(toml::from_str::<DataConfig>(&text.replace("passage_tokens", "passage_tokenz")).is_err());
    assert!(toml::from_str::<DataConfig>(&text.replace("dir = \"/data/sciq\"", "dri = \"/data/sciq\"")).is_err());
    assert!(toml::from_str::<DataConfig>(&text.replace("alpha = 0.5", "alpah = 0.5")).is_err());
}

#[test]
fn toy_source_loads_through_load_task() {
    let c = TaskConfig { train_size: Some(50), eval_size: Some(10), ..TaskConfig::new(TaskKind::ToyArithmetic) };
    let d = load_task(&c).unwrap();
    assert_eq!((d.train.len(), d.eval.len()), (50, 10));
    assert!(d.train[0].completion.contains("#### "));
    assert!(load_task(&TaskConfig { source: SourceConfig::Toy { seed: 0 }, ..TaskConfig::new(TaskKind::Sciq) }).is_err());
}

/// Files pyarrow writes (scripts/make_parquet_edge_fixtures.py): its defaults, several row groups
/// and pages with zstd and no dictionary, large_string/large_list, the older `list.item` naming;
/// null strings, null and empty lists, null list elements, non-ASCII text. Every row must read as
/// pyarrow reads it (nulls as "", a null list as no options).
#[test]
fn parquet_written_by_pyarrow() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parquet-edge");
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    assert_eq!(files.len(), 4);
    let cols = [("id", ColumnKind::Str), ("question", ColumnKind::Str), ("choices", ColumnKind::Choices), ("answerKey", ColumnKind::Str)];
    let strs = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
    for (name, rows) in files {
        let got = read_rows(&dir.join(name), &cols).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(got.len(), rows.len(), "{name}");
        for (i, (g, want)) in got.iter().zip(rows).enumerate() {
            let s = |k: &str| Cell::Str(want[k].as_str().unwrap().to_string());
            let choices = Cell::Choices { text: strs(&want["text"]), label: strs(&want["label"]) };
            assert_eq!(g, &vec![s("id"), s("question"), choices, s("answerKey")], "{name} row {i}");
        }
    }
}
