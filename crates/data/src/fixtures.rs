//! Writers of the small test fixtures under `tests/fixtures/data/`, in the exact hub schemas
//! (column names, order and Arrow types as in the hub's parquet files) and repo layouts:
//!
//! ```text
//! allenai/sciq/data/{train,validation,test}-00000-of-00001.parquet      (24/8/8 rows)
//! openai/gsm8k/main/{train,test}-00000-of-00001.parquet                 (24/8)
//! allenai/ai2_arc/{ARC-Challenge,ARC-Easy}/{train,validation,test}-00000-of-00001.parquet (16/6/6)
//! bookcorpus/plain_text/train/{0000,0001}.parquet                       (2 shards × 160 rows, row groups of 40)
//! jsonl/gsm8k/{train,test}.jsonl, jsonl/ai2_arc/ARC-Easy/{train,test}.jsonl (local JSONL sources)
//! ```
//! Regenerate with `cargo test -p crossfeed-data --test fixtures -- --ignored regenerate`.
//! Rows are invented in the datasets' style (plus SciQ's and GSM8K's well-known first training
//! rows), and cover the awkward cases: empty and space-led SciQ support, numeric ARC labels, five
//! ARC options, calculator annotations, empty BookCorpus lines.

use crate::error::{DataError, Result};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// Write a batch of string columns (+ optional extra arrays) to parquet.
pub fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>, row_group_rows: Option<usize>) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect()).map_err(|e| DataError::parquet(path, e))?;
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(row_group_rows)
        .set_created_by("crossfeed-data fixtures".into())
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| DataError::parquet(path, e))?;
    w.write(&batch).map_err(|e| DataError::parquet(path, e))?;
    w.close().map_err(|e| DataError::parquet(path, e))?;
    Ok(())
}

/// A `string` column.
pub fn str_col<S: AsRef<str>>(v: &[S]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v.iter().map(|s| s.as_ref())))
}

/// ARC's `choices: struct<text: list<string>, label: list<string>>` column.
pub fn choices_col(rows: &[(Vec<String>, Vec<String>)]) -> ArrayRef {
    let mut text = ListBuilder::new(StringBuilder::new());
    let mut label = ListBuilder::new(StringBuilder::new());
    for (t, l) in rows {
        for s in t {
            text.values().append_value(s);
        }
        text.append(true);
        for s in l {
            label.values().append_value(s);
        }
        label.append(true);
    }
    let (text, label): (ArrayRef, ArrayRef) = (Arc::new(text.finish()), Arc::new(label.finish()));
    let fields = Fields::from(vec![
        Field::new("text", text.data_type().clone(), true),
        Field::new("label", label.data_type().clone(), true),
    ]);
    Arc::new(StructArray::new(fields, vec![text, label], None))
}

/// The Arrow type of ARC's `choices`.
pub fn choices_type() -> DataType {
    choices_col(&[]).data_type().clone()
}

/// SciQ rows: (question, distractor3, distractor1, distractor2, correct_answer, support).
pub fn sciq_rows(split: &str, n: usize) -> Vec<[String; 6]> {
    let mut v = Vec::new();
    if split == "train" {
        v.push([
            "What type of organism is commonly used in preparation of foods such as cheese and yogurt?".into(),
            "viruses".into(),
            "protozoa".into(),
            "gymnosperms".into(),
            "mesophilic organisms".into(),
            "Mesophiles grow best in moderate temperature, typically between 25°C and 40°C (77°F and 104°F). Mesophiles are often found living in or on the bodies of humans or other animals.".into(),
        ]);
        v.push([
            "What is the least dangerous radioactive decay?".into(),
            "zeta decay".into(),
            "beta decay".into(),
            "gamma decay".into(),
            "alpha decay".into(),
            String::new(),
        ]);
        v.push([
            "What force pulls objects toward the center of the earth?".into(),
            "friction".into(),
            "magnetism".into(),
            "inertia".into(),
            "gravity".into(),
            "  Gravity is a force that pulls objects toward each other; on earth it pulls toward the center.".into(),
        ]);
    }
    let topics = [
        ("organelle makes energy for the cell", "mitochondria", "ribosome", "nucleus", "vacuole", "Mitochondria are the powerhouses of the cell, where cellular respiration releases energy."),
        ("gas do plants absorb from the air", "carbon dioxide", "oxygen", "nitrogen", "helium", "Plants take in carbon dioxide and release oxygen during photosynthesis."),
        ("part of the atom has a negative charge", "electron", "proton", "neutron", "nucleus", "Electrons are negatively charged particles that orbit the nucleus."),
        ("process turns liquid water into vapor", "evaporation", "condensation", "freezing", "melting", "Evaporation happens when liquid water gains enough energy to become a gas."),
        ("layer of the earth lies beneath the crust", "mantle", "core", "atmosphere", "ocean", "Beneath the crust lies the mantle, a thick layer of hot rock."),
        ("kind of energy is stored in food", "chemical energy", "nuclear energy", "sound energy", "light energy", "Food stores chemical energy in the bonds of its molecules."),
        ("organ pumps blood through the body", "heart", "liver", "lung", "kidney", ""),
        ("unit measures electrical resistance", "ohm", "volt", "watt", "ampere", "Resistance is measured in ohms, named after Georg Ohm."),
    ];
    let mut i = 0;
    while v.len() < n {
        let (q, a, d1, d2, d3, s) = topics[i % topics.len()];
        let suffix = if i >= topics.len() { format!(" ({split} {i})") } else { format!(" ({split})") };
        v.push([format!("What {q}?{suffix}"), d3.into(), d1.into(), d2.into(), a.into(), s.into()]);
        i += 1;
    }
    v.truncate(n);
    v
}

/// GSM8K rows: (question, answer).
pub fn gsm8k_rows(split: &str, n: usize) -> Vec<[String; 2]> {
    let mut v = Vec::new();
    if split == "train" {
        v.push([
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?".into(),
            "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72".into(),
        ]);
    }
    let names = ["Tom", "Maria", "Jin", "Aisha", "Pedro", "Lena"];
    let things = ["marbles", "stickers", "cookies", "pencils"];
    let mut i = 0u64;
    while v.len() < n {
        let name = names[(i as usize) % names.len()];
        let thing = things[(i as usize / 2) % things.len()];
        let (a, b, c) = (10 + 3 * i + if split == "test" { 1 } else { 0 }, 2 + i % 5, 3 + i % 4);
        let s = a + b;
        let t = s * c;
        v.push([
            format!("{name} has {a} {thing}. A friend gives {name} {b} more. Then {name} buys {c} times as many {thing} as {name} now has, in boxes. How many {thing} are in the boxes?"),
            format!("{name} has {a}+{b} = <<{a}+{b}={s}>>{s} {thing}.\nThe boxes hold {s}*{c} = <<{s}*{c}={t}>>{t} {thing}.\n#### {}", group(t)),
        ]);
        i += 1;
    }
    v.truncate(n);
    v
}

fn group(x: u64) -> String {
    if x >= 1000 {
        format!("{},{:03}", x / 1000, x % 1000)
    } else {
        x.to_string()
    }
}

/// One ARC row: (id, question, choices text, choices label, answerKey).
pub type ArcRow = (String, String, Vec<String>, Vec<String>, String);

/// ARC rows in the hub's column order.
pub fn arc_rows(config: &str, split: &str, n: usize) -> Vec<ArcRow> {
    let base: [(&str, [&str; 4], usize); 6] = [
        ("Which of these is a source of light energy?", ["the Sun", "a rock", "a pillow", "a shadow"], 0),
        ("Which property of a mineral can be determined just by looking at it?", ["luster", "mass", "weight", "hardness"], 0),
        ("A student mixes salt into water. What is formed?", ["a gas", "a solution", "a solid", "an element"], 1),
        ("Which tool is best for measuring the mass of a rock?", ["a ruler", "a thermometer", "a balance", "a graduated cylinder"], 2),
        ("What causes day and night on Earth?", ["the Moon's orbit", "Earth's tilt", "the Sun's movement", "Earth's rotation"], 3),
        ("Which animal is a mammal?", ["shark", "whale", "trout", "frog"], 1),
    ];
    let mut v = Vec::new();
    let prefix = if config == "ARC-Challenge" { "Mercury" } else { "MCAS" };
    for i in 0..n {
        let (q, opts, gold) = base[i % base.len()];
        let mut text: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        let numeric = i % 5 == 3;
        if i % 7 == 5 {
            text.push("none of these".into());
        }
        let label: Vec<String> = (0..text.len())
            .map(|j| if numeric { (j + 1).to_string() } else { ((b'A' + j as u8) as char).to_string() })
            .collect();
        let key = label[gold].clone();
        v.push((format!("{prefix}_{split}_{i:04}"), format!("{q} [{split} {i}]"), text, label, key));
    }
    v
}

/// BookCorpus-style lines for shard `shard` (lower-case, tokenized, some empty).
pub fn bookcorpus_lines(shard: usize, n: usize) -> Vec<String> {
    let subj = ["the girl", "he", "she", "my father", "the dog", "they", "the captain", "i"];
    let verb = ["looked at", "walked toward", "smiled at", "ignored", "remembered", "reached for"];
    let obj = ["the door", "the window", "her phone", "the old map", "his brother", "the fire"];
    (0..n)
        .map(|i| {
            let k = shard * n + i;
            if k % 23 == 7 {
                String::new()
            } else {
                format!("{} {} {} , line {k} .", subj[k % subj.len()], verb[(k / 3) % verb.len()], obj[(k / 7) % obj.len()])
            }
        })
        .collect()
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let mut s = String::new();
    for r in rows {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| DataError::io(path, e))
}

/// SciQ split as parquet (columns in card order).
pub fn write_sciq(path: &Path, rows: &[[String; 6]]) -> Result<()> {
    let col = |i: usize| str_col(&rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>());
    write_parquet(
        path,
        vec![("question", col(0)), ("distractor3", col(1)), ("distractor1", col(2)), ("distractor2", col(3)), ("correct_answer", col(4)), ("support", col(5))],
        None,
    )
}

/// Write every fixture under `root`.
pub fn write_fixtures(root: &Path) -> Result<()> {
    for (split, n) in [("train", 24), ("validation", 8), ("test", 8)] {
        write_sciq(&root.join(format!("allenai/sciq/data/{split}-00000-of-00001.parquet")), &sciq_rows(split, n))?;
    }
    for (split, n) in [("train", 24), ("test", 8)] {
        let rows = gsm8k_rows(split, n);
        let col = |i: usize| str_col(&rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>());
        write_parquet(&root.join(format!("openai/gsm8k/main/{split}-00000-of-00001.parquet")), vec![("question", col(0)), ("answer", col(1))], None)?;
        let json: Vec<_> = rows.iter().map(|r| serde_json::json!({"question": r[0], "answer": r[1]})).collect();
        write_jsonl(&root.join(format!("jsonl/gsm8k/{split}.jsonl")), &json)?;
    }
    for config in ["ARC-Challenge", "ARC-Easy"] {
        for (split, n) in [("train", 16), ("validation", 6), ("test", 6)] {
            let rows = arc_rows(config, split, n);
            let choices: Vec<(Vec<String>, Vec<String>)> = rows.iter().map(|r| (r.2.clone(), r.3.clone())).collect();
            write_parquet(
                &root.join(format!("allenai/ai2_arc/{config}/{split}-00000-of-00001.parquet")),
                vec![
                    ("id", str_col(&rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                    ("question", str_col(&rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
                    ("choices", choices_col(&choices)),
                    ("answerKey", str_col(&rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>())),
                ],
                None,
            )?;
            if config == "ARC-Easy" && split != "validation" {
                let json: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"id": r.0, "question": r.1, "choices": {"text": r.2, "label": r.3}, "answerKey": r.4}))
                    .collect();
                write_jsonl(&root.join(format!("jsonl/ai2_arc/ARC-Easy/{split}.jsonl")), &json)?;
            }
        }
    }
    for shard in 0..2 {
        write_parquet(
            &root.join(format!("bookcorpus/plain_text/train/{shard:04}.parquet")),
            vec![("text", str_col(&bookcorpus_lines(shard, 160)))],
            Some(40),
        )?;
    }
    Ok(())
}
