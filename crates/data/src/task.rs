//! Task kinds, their hub layouts, their columns, and the default templates that render a row.
//!
//! Default templates (origin: EleutherAI/lm-evaluation-harness 4e7e0d4 task YAMLs, with the
//! harness's `target_delimiter = " "` folded into the completion):
//!
//! | task | prompt | completion | origin |
//! |---|---|---|---|
//! | SciQ | `"{support}\nQuestion: {question}\nAnswer:"` | `" {correct_answer}"` | `tasks/sciq/sciq.yaml` (`support.lstrip()`; target = choice 3 = `correct_answer`) |
//! | GSM8K | `"Question: {question}\nAnswer:"` | `" {answer}"` | `tasks/gsm8k/gsm8k.yaml` (full worked answer with `<<..>>` and the final `#### N`) |
//! | ARC | `"Question: {question}\n{choices}\nAnswer:"` | `" {answer_letter}. {answer_text}"` | ours: harness prompt `"Question: {question}\nAnswer:"` plus the lettered options, one per line `"A. text"`; the target names the letter and the text |
//! | BookCorpus | `""` | `"{text}"` | a passage of consecutive sentences joined by single spaces |
//!
//! Fields available to templates:
//! - SciQ: `question, distractor1, distractor2, distractor3, correct_answer, support` (`support` left-stripped, may be empty).
//! - GSM8K: `question, answer, answer_no_calc` (every `<<…>>` removed), `final_answer` (text after `#### `).
//! - ARC: `id, question, choices` (lines `"A. text"` joined by `\n`), `answer_letter`, `answer_text`,
//!   `answer_key` (raw `answerKey`, possibly `"1".."5"`). Letters are by position (A = first option),
//!   so numeric labels `"1".."5"` become `A..E`; the gold option is the index of `answerKey` in `choices.label`.
//! - BookCorpus: `text`.

use crate::error::{DataError, Result};
use crate::template::Template;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The datasets / tasks this crate can render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// `allenai/sciq`.
    Sciq,
    /// `openai/gsm8k`, config `main`.
    Gsm8k,
    /// `allenai/ai2_arc`, config `ARC-Challenge`.
    ArcChallenge,
    /// `allenai/ai2_arc`, config `ARC-Easy`.
    ArcEasy,
    /// BookCorpus passages (public data).
    Bookcorpus,
    /// Toy world: multi-step arithmetic word problems (GSM8K-shaped).
    ToyArithmetic,
    /// Toy world: fact questions with a supporting sentence (SciQ-shaped).
    ToyFacts,
    /// Toy world: lettered multiple choice (ARC-shaped).
    ToyChoice,
    /// Toy world: public passages (BookCorpus stand-in).
    ToyPublic,
    /// Any table or text file, with templates over its columns ([`crate::custom`]).
    Custom,
}

/// Arrow shape of a column this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `string` (also accepts `large_string` / `string_view`).
    Str,
    /// ARC `choices`: `struct<text: list<string>, label: list<string>>`.
    Choices,
}

/// One cell read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Str(String),
    Choices { text: Vec<String>, label: Vec<String> },
}

impl Cell {
    pub fn as_str(&self) -> &str {
        match self {
            Cell::Str(s) => s,
            Cell::Choices { .. } => "",
        }
    }
}

const SCIQ_COLS: &[(&str, ColumnKind)] = &[
    ("question", ColumnKind::Str),
    ("distractor3", ColumnKind::Str),
    ("distractor1", ColumnKind::Str),
    ("distractor2", ColumnKind::Str),
    ("correct_answer", ColumnKind::Str),
    ("support", ColumnKind::Str),
];
const GSM8K_COLS: &[(&str, ColumnKind)] = &[("question", ColumnKind::Str), ("answer", ColumnKind::Str)];
const ARC_COLS: &[(&str, ColumnKind)] = &[
    ("id", ColumnKind::Str),
    ("question", ColumnKind::Str),
    ("choices", ColumnKind::Choices),
    ("answerKey", ColumnKind::Str),
];
const BOOK_COLS: &[(&str, ColumnKind)] = &[("text", ColumnKind::Str)];

impl TaskKind {
    pub const ALL: [TaskKind; 10] = [
        TaskKind::Sciq,
        TaskKind::Gsm8k,
        TaskKind::ArcChallenge,
        TaskKind::ArcEasy,
        TaskKind::Bookcorpus,
        TaskKind::ToyArithmetic,
        TaskKind::ToyFacts,
        TaskKind::ToyChoice,
        TaskKind::ToyPublic,
        TaskKind::Custom,
    ];

    /// snake_case name (as in config files).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Sciq => "sciq",
            TaskKind::Gsm8k => "gsm8k",
            TaskKind::ArcChallenge => "arc_challenge",
            TaskKind::ArcEasy => "arc_easy",
            TaskKind::Bookcorpus => "bookcorpus",
            TaskKind::ToyArithmetic => "toy_arithmetic",
            TaskKind::ToyFacts => "toy_facts",
            TaskKind::ToyChoice => "toy_choice",
            TaskKind::ToyPublic => "toy_public",
            TaskKind::Custom => "custom",
        }
    }

    pub fn is_toy(self) -> bool {
        matches!(
            self,
            TaskKind::ToyArithmetic | TaskKind::ToyFacts | TaskKind::ToyChoice | TaskKind::ToyPublic
        )
    }

    /// Public passages rather than a question/answer task.
    pub fn is_passages(self) -> bool {
        matches!(self, TaskKind::Bookcorpus | TaskKind::ToyPublic)
    }

    /// Default hub repository.
    pub fn hub_repo(self) -> Option<&'static str> {
        match self {
            TaskKind::Sciq => Some("allenai/sciq"),
            TaskKind::Gsm8k => Some("openai/gsm8k"),
            TaskKind::ArcChallenge | TaskKind::ArcEasy => Some("allenai/ai2_arc"),
            TaskKind::Bookcorpus => Some("bookcorpus"),
            _ => None,
        }
    }

    /// Default hub revision (SciQ, GSM8K, ARC ship parquet on `main`; BookCorpus is read from the
    /// dataset viewer's auto-conversion `refs/convert/parquet`).
    pub fn hub_revision(self) -> &'static str {
        match self {
            TaskKind::Bookcorpus => "refs/convert/parquet",
            _ => "main",
        }
    }

    /// Config directory inside the repo (`data` for SciQ, which has only `default`).
    pub fn hub_config(self) -> Option<&'static str> {
        match self {
            TaskKind::Sciq => Some("data"),
            TaskKind::Gsm8k => Some("main"),
            TaskKind::ArcChallenge => Some("ARC-Challenge"),
            TaskKind::ArcEasy => Some("ARC-Easy"),
            TaskKind::Bookcorpus => Some("plain_text"),
            _ => None,
        }
    }

    /// Exact file in the repo for a split of a single-file dataset (`None` for BookCorpus, whose
    /// shards are listed).
    pub fn hub_file(self, config: &str, split: &str) -> Option<String> {
        match self {
            TaskKind::Sciq | TaskKind::Gsm8k | TaskKind::ArcChallenge | TaskKind::ArcEasy => {
                Some(format!("{config}/{split}-00000-of-00001.parquet"))
            }
            _ => None,
        }
    }

    /// Default (train, eval) splits. Eval is the split lm-evaluation-harness scores (`test` when
    /// the task defines one); it is never the training pool. BookCorpus has one split; its eval
    /// passages come from a held-out tail of the corpus (see `PassageConfig`).
    pub fn default_splits(self) -> (&'static str, &'static str) {
        match self {
            TaskKind::Bookcorpus => ("train", "train"),
            _ => ("train", "test"),
        }
    }

    /// Columns read from files, with their Arrow shape (names exactly as on the hub).
    pub fn columns(self) -> &'static [(&'static str, ColumnKind)] {
        match self {
            TaskKind::Sciq => SCIQ_COLS,
            TaskKind::Gsm8k => GSM8K_COLS,
            TaskKind::ArcChallenge | TaskKind::ArcEasy => ARC_COLS,
            TaskKind::Bookcorpus => BOOK_COLS,
            _ => &[],
        }
    }

    /// Field names a template may use.
    pub fn field_names(self) -> &'static [&'static str] {
        match self {
            TaskKind::Sciq => &["question", "distractor1", "distractor2", "distractor3", "correct_answer", "support"],
            TaskKind::Gsm8k => &["question", "answer", "answer_no_calc", "final_answer"],
            TaskKind::ArcChallenge | TaskKind::ArcEasy => {
                &["id", "question", "choices", "answer_letter", "answer_text", "answer_key"]
            }
            TaskKind::Bookcorpus => &["text"],
            _ => &[],
        }
    }

    /// The documented default template (see the module docs).
    pub fn default_template(self) -> Template {
        match self {
            TaskKind::Sciq => Template::new("{support}\nQuestion: {question}\nAnswer:", " {correct_answer}"),
            TaskKind::Gsm8k => Template::new("Question: {question}\nAnswer:", " {answer}"),
            TaskKind::ArcChallenge | TaskKind::ArcEasy => {
                Template::new("Question: {question}\n{choices}\nAnswer:", " {answer_letter}. {answer_text}")
            }
            _ => Template::new("", "{text}"),
        }
    }

    /// Turn one row (cells in `columns()` order) into template fields.
    pub fn fields(self, cells: &[Cell], path: &Path, row: usize) -> Result<Vec<(&'static str, String)>> {
        let s = |i: usize| cells[i].as_str().to_string();
        match self {
            TaskKind::Sciq => Ok(vec![
                ("question", s(0)),
                ("distractor3", s(1)),
                ("distractor1", s(2)),
                ("distractor2", s(3)),
                ("correct_answer", s(4)),
                ("support", cells[5].as_str().trim_start().to_string()),
            ]),
            TaskKind::Gsm8k => {
                let answer = s(1);
                Ok(vec![
                    ("question", s(0)),
                    ("answer_no_calc", strip_calculator(&answer)),
                    ("final_answer", gsm8k_final_answer(&answer).unwrap_or_default()),
                    ("answer", answer),
                ])
            }
            TaskKind::ArcChallenge | TaskKind::ArcEasy => {
                let (text, label) = match &cells[2] {
                    Cell::Choices { text, label } => (text, label),
                    _ => unreachable!("reader guarantees the choices shape"),
                };
                let bad = |m: String| DataError::BadRow {
                    path: path.to_path_buf(),
                    row,
                    message: m,
                };
                if text.len() != label.len() || text.is_empty() || text.len() > 26 {
                    return Err(bad(format!(
                        "choices.text has {} entries, choices.label {}",
                        text.len(),
                        label.len()
                    )));
                }
                let key = cells[3].as_str().trim();
                let gold = label.iter().position(|l| l.trim() == key).ok_or_else(|| {
                    bad(format!("answerKey {key:?} is not among choices.label {label:?}"))
                })?;
                let choices: Vec<String> = text
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("{}. {}", letter(i), t))
                    .collect();
                Ok(vec![
                    ("id", s(0)),
                    ("question", s(1)),
                    ("choices", choices.join("\n")),
                    ("answer_letter", letter(gold).to_string()),
                    ("answer_text", text[gold].clone()),
                    ("answer_key", key.to_string()),
                ])
            }
            TaskKind::Bookcorpus => Ok(vec![("text", s(0))]),
            _ => Err(DataError::Config(format!("task {} has no file rows", self.name()))),
        }
    }
}

/// `A`, `B`, … for option `i`.
pub fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// Remove every GSM8K calculator annotation `<<…>>`.
pub fn strip_calculator(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(start) = rest.find("<<") {
        match rest[start + 2..].find(">>") {
            Some(end) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + 2 + end + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The text after the last `#### ` of a GSM8K answer, trimmed, with `,` removed (the harness's
/// `regexes_to_ignore` strips commas before comparing).
pub fn gsm8k_final_answer(answer: &str) -> Option<String> {
    let i = answer.rfind("####")?;
    Some(answer[i + 4..].trim().replace(',', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculator_annotations() {
        let a = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72";
        assert_eq!(strip_calculator(a), "Natalia sold 48/2 = 24 clips in May.\n#### 72");
        assert_eq!(gsm8k_final_answer(a).as_deref(), Some("72"));
        assert_eq!(gsm8k_final_answer("x\n#### 1,234").as_deref(), Some("1234"));
    }

    #[test]
    fn default_templates_use_known_fields() {
        for k in [TaskKind::Sciq, TaskKind::Gsm8k, TaskKind::ArcEasy, TaskKind::Bookcorpus] {
            k.default_template().validate(k.field_names()).unwrap();
        }
    }
}
