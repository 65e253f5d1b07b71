//! `kind = "custom"`: the same rows through parquet, JSONL and CSV; plain text by line and by block;
//! multiple-choice documents; and the errors a bad task file gets.

use crossfeed_data::fixtures::{str_col, write_parquet};
use crossfeed_data::*;
use std::path::Path;

fn custom(name: &str, prompt: &str, answer: &str) -> CustomTask {
    CustomTask { name: name.into(), text_unit: TextUnit::Line, prompt: prompt.into(), answer: answer.into(), accuracy: None }
}

fn task(dir: &Path, spec: CustomTask) -> TaskConfig {
    TaskConfig {
        source: SourceConfig::Local { dir: dir.to_path_buf(), config: None },
        eval_size: Some(500),
        custom: Some(spec),
        ..TaskConfig::new(TaskKind::Custom)
    }
}

/// Rows `(question, answer, a, b, c, label)`; label alternates between a letter and an index.
fn rows(split: &str, n: usize) -> Vec<[String; 6]> {
    (0..n)
        .map(|i| {
            let gold = i % 3;
            let opts: Vec<String> = (0..3).map(|j| if j == gold { format!("{split}-ans{i}") } else { format!("wrong{j}") }).collect();
            let label = if i % 2 == 0 { ["A", "B", "C"][gold].to_string() } else { gold.to_string() };
            [format!("{split} q{i}, \"quoted\""), format!("{split}-ans{i}"), opts[0].clone(), opts[1].clone(), opts[2].clone(), label]
        })
        .collect()
}

const COLS: [&str; 6] = ["question", "answer", "a", "b", "c", "label"];

fn write_jsonl(path: &Path, rows: &[[String; 6]]) {
    let mut s = String::new();
    for r in rows {
        let mut o = serde_json::Map::new();
        for (c, v) in COLS.iter().zip(r) {
            o.insert(c.to_string(), serde_json::Value::String(v.clone()));
        }
        s += &serde_json::Value::Object(o).to_string();
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn write_csv(path: &Path, rows: &[[String; 6]]) {
    let q = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    // As spreadsheet programs write it: a byte-order mark and CRLF.
    let mut s = "\u{feff}".to_string() + &COLS.join(",") + "\r\n";
    for r in rows {
        s += &r.iter().map(|v| q(v)).collect::<Vec<_>>().join(",");
        s += "\r\n";
    }
    std::fs::write(path, s).unwrap();
}

fn write_pq(path: &Path, rows: &[[String; 6]]) {
    let cols = COLS.iter().enumerate().map(|(i, c)| (*c, str_col(&rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>()))).collect();
    write_parquet(path, cols, Some(3)).unwrap();
}

fn mc() -> CustomTask {
    CustomTask {
        accuracy: Some(CustomAccuracy::MultipleChoice { options: OptionColumns::Columns(vec!["a".into(), "b".into(), "c".into()]), label: "label".into() }),
        ..custom("qa", "Question: {{question}}\nAnswer:", " {{ answer }}")
    }
}

#[test]
fn parquet_jsonl_and_csv_give_the_same_task() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (rows("train", 10), rows("test", 5));
    let mut loaded = Vec::new();
    for (fmt, write) in [("parquet", write_pq as fn(&Path, &[[String; 6]])), ("jsonl", write_jsonl), ("csv", write_csv)] {
        let dir = tmp.path().join(fmt);
        std::fs::create_dir_all(&dir).unwrap();
        let name = |s: &str| if fmt == "parquet" { format!("{s}-00000-of-00001.parquet") } else { format!("{s}.{fmt}") };
        write(&dir.join(name("train")), &train);
        write(&dir.join(name("test")), &test);
        let cfg = TaskConfig { train_size: Some(6), ..task(&dir, mc()) };
        let d = load_task(&cfg).unwrap();
        assert_eq!((d.train.len(), d.eval.len()), (6, 5), "{fmt}");
        assert_eq!(d.eval[0].prompt, "Question: test q0, \"quoted\"\nAnswer:", "{fmt}");
        assert_eq!(d.eval[0].completion, " test-ans0", "{fmt}");
        assert_eq!(d.kind, TaskKind::Custom);
        let (docs, fewshot) = custom_choice_docs(&cfg).unwrap().unwrap();
        assert_eq!(docs.len(), 5);
        assert_eq!(fewshot.len(), 6);
        for (i, (ctx, opts, gold)) in docs.iter().enumerate() {
            assert_eq!(*ctx, d.eval[i].prompt);
            assert_eq!(opts[*gold], format!("test-ans{i}"), "{fmt}: label by letter and by index");
        }
        loaded.push((d.train, d.eval, docs));
    }
    assert_eq!(loaded[0], loaded[1]);
    assert_eq!(loaded[1], loaded[2]);
    assert_eq!(cfg_name(), "qa");
}

fn cfg_name() -> String {
    task(Path::new("."), mc()).name()
}

#[test]
fn jsonl_lists_and_numbers_and_plain_text_corpora() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let line = |q: &str, label: serde_json::Value| serde_json::json!({"q": q, "opts": ["x", "y", "z"], "label": label, "n": 3, "b": true}).to_string();
    std::fs::write(dir.join("train.jsonl"), format!("{}\n\n{}\n", line("a", 1.into()), line("b", "c".into()))).unwrap();
    std::fs::write(dir.join("test.jsonl"), format!("{}\n", line("c", 2.into()))).unwrap();
    let spec = CustomTask {
        accuracy: Some(CustomAccuracy::MultipleChoice { options: OptionColumns::List("opts".into()), label: "label".into() }),
        ..custom("lists", "{{q}} ({{n}}, {{b}}):", " {{label}}")
    };
    let cfg = task(dir, spec);
    let d = load_task(&cfg).unwrap();
    assert_eq!(d.train[0].text(), "a (3, True): 1");
    let (docs, fewshot) = custom_choice_docs(&cfg).unwrap().unwrap();
    assert_eq!(docs, vec![("c (3, True):".to_string(), vec!["x".to_string(), "y".into(), "z".into()], 2)]);
    assert_eq!(fewshot[1].2, 2, "letter c");

    // Plain text: one document per line, or per blank-line-separated block; one split, eval held out.
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("train.txt"), "one a\none b\n\n\ntwo a\n\nthree a\nthree b\n").unwrap();
    let mut c = task(&corpus, custom("corpus", "", "{{text}}"));
    c.eval_split = Some("train".into());
    c.eval_size = Some(1);
    let d = load_task(&c).unwrap();
    assert_eq!(d.train.len() + d.eval.len(), 5);
    c.custom.as_mut().unwrap().text_unit = TextUnit::Block;
    let d = load_task(&c).unwrap();
    let mut all: Vec<String> = d.train.iter().chain(&d.eval).map(|e| e.text()).collect();
    all.sort();
    assert_eq!(all, vec!["one a\none b", "three a\nthree b", "two a"]);
    assert_eq!(d.eval.len(), 1);
    assert!(d.train.iter().all(|e| e.prompt.is_empty()));
    // Held out: eval never among train.
    assert!(!d.train.contains(&d.eval[0]));
}

#[test]
fn bad_task_files_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_jsonl(&dir.join("train.jsonl"), &rows("train", 4));
    write_pq(&dir.join("test-00000-of-00001.parquet"), &rows("test", 2));
    let err = |spec: CustomTask| load_task(&task(dir, spec)).unwrap_err().to_string();

    // A template field that is no column: the file, the column, the template, the columns that exist.
    let e = err(custom("qa", "Q: {{questoin}}", " {{answer}}"));
    assert!(e.contains("train.jsonl") && e.contains("`questoin`") && e.contains("custom.prompt") && e.contains("columns present: a, answer, b, c, label, question"), "{e}");
    // The same in a parquet file (train has it; test lacks `extra`).
    std::fs::write(dir.join("train.jsonl"), "{\"question\": \"q\", \"answer\": \"a\", \"extra\": \"x\"}\n").unwrap();
    let e = err(custom("qa", "{{question}} {{extra}}", " {{answer}}"));
    assert!(e.contains("test-00000-of-00001.parquet") && e.contains("`extra`") && e.contains("custom.prompt") && e.contains("label"), "{e}");
    // Accuracy columns are checked too.
    write_jsonl(&dir.join("train.jsonl"), &rows("train", 4));
    let e = err(CustomTask { accuracy: Some(CustomAccuracy::MultipleChoice { options: OptionColumns::Columns(vec!["a".into(), "d".into()]), label: "label".into() }), ..custom("qa", "{{question}}", " {{answer}}") });
    assert!(e.contains("`d`") && e.contains("custom.accuracy.options"), "{e}");
    // Template syntax: the template is named.
    let e = err(custom("qa", "{{question", " {{answer}}"));
    assert!(e.contains("custom.prompt") && e.contains("unclosed"), "{e}");
    // An empty split names the split.
    std::fs::write(dir.join("train.jsonl"), "\n\n").unwrap();
    let e = err(custom("qa", "{{question}}", " {{answer}}"));
    assert!(e.contains("split `train` has no rows") && e.contains("qa"), "{e}");
    // A missing split names the split and the file names it looks for.
    std::fs::remove_file(dir.join("train.jsonl")).unwrap();
    let e = err(custom("qa", "{{question}}", " {{answer}}"));
    assert!(e.contains("split `train`"), "{e}");
    // CSV: a ragged row names file and row.
    std::fs::write(dir.join("train.csv"), "question,answer\nq,a\nonly\n").unwrap();
    let e = err(custom("qa", "{{question}}", " {{answer}}"));
    assert!(e.contains("train.csv") && e.contains("row 2"), "{e}");

    // The section and the kind must agree.
    let mut c = task(dir, custom("qa", "", "{{text}}"));
    c.custom = None;
    assert!(load_task(&c).unwrap_err().to_string().contains("needs a `custom` section"));
    let mut c = TaskConfig::new(TaskKind::Sciq);
    c.custom = Some(custom("qa", "", "{{text}}"));
    assert!(c.check().unwrap_err().to_string().contains("only for kind = \"custom\""));
    let mut c = task(dir, custom("qa", "", "{{text}}"));
    c.template = Some(Template::new("{question}", "{answer}"));
    assert!(c.check().unwrap_err().to_string().contains("not `template`"));
    assert!(task(dir, custom(" ", "", "{{text}}")).check().unwrap_err().to_string().contains("custom.name"));
    assert!(task(dir, custom("a,b", "", "{{text}}")).check().unwrap_err().to_string().contains("custom.name = \"a,b\""));
    // Built-in tasks do not read CSV.
    assert!(read_rows(&dir.join("train.csv"), &[]).unwrap_err().to_string().contains("custom"));
}

/// pyarrow's parquet (scripts/make_custom_fixtures.py) with a list<string> options column, an int64
/// label, a nullable int32 and a bool: the same documents as the JSONL it was made from.
#[test]
fn parquet_lists_numbers_and_booleans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spec = |options: OptionColumns, label: &str, answer: &str| CustomTask {
        accuracy: Some(CustomAccuracy::MultipleChoice { options, label: label.into() }),
        ..custom("colors", "Question: {{question}}\nAnswer:", answer)
    };
    let pq = task(&root.join("tests/fixtures/custom-qa-parquet"), spec(OptionColumns::List("options".into()), "label_idx", " {{answer}}"));
    let js = task(&root.join("examples/custom-qa"), spec(OptionColumns::List("options".into()), "label", " {{answer}}"));
    let cols = task(&root.join("tests/fixtures/custom-qa-parquet"), spec(OptionColumns::Columns(["opt_a", "opt_b", "opt_c", "opt_d"].map(String::from).to_vec()), "label", " {{answer}}"));
    let (a, b, c) = (custom_choice_docs(&pq).unwrap().unwrap(), custom_choice_docs(&js).unwrap().unwrap(), custom_choice_docs(&cols).unwrap().unwrap());
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.0.len(), 12);
    let d = load_task(&task(&root.join("tests/fixtures/custom-qa-parquet"), custom("t", "", "{{maybe}}|{{even}}|{{label_idx}}|{{options}}"))).unwrap();
    assert_eq!(d.train[0].completion, "|True|1|green\nred\nblue\nyellow");
    assert_eq!(d.train[1].completion, "1|False|1|red\nblue\nyellow\ngreen");
}
