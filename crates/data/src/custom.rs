//! `kind = "custom"`: any table or text file as a private task or a public corpus.
//!
//! A custom task names its columns through its templates: `prompt = "Question: {{question}}\nAnswer:"`
//! and `answer = " {{answer}}"` (lm-evaluation-harness's `doc_to_text`/`doc_to_target` spelling) read
//! the columns `question` and `answer` of every row. Files are parquet (string, number, boolean and
//! list-of-string columns), JSONL (one object per line; numbers and booleans read as Python prints
//! them, `3`, `True`, as lm-eval's templates render them), CSV (a header row, RFC 4180 quoting) or plain text (column `text`: one document per line, or per blank-line-separated block).
//! Errors name the file, the column and the template that wanted it, with the columns the file has.

use crate::error::{DataError, Result};
use crate::files::{open_parquet, FileFormat, TextCell};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

fn d_answer() -> String {
    "{{text}}".into()
}

/// `[private.custom]` / `[public.custom]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTask {
    /// The task's name in metrics, reports and errors (eval set `name`).
    pub name: String,
    /// Plain text only: `line` (default, one document per non-empty line) or `block` (documents
    /// separated by blank lines).
    #[serde(default)]
    pub text_unit: TextUnit,
    /// Prompt template over the columns, `{{column}}`; default empty (a corpus).
    #[serde(default)]
    pub prompt: String,
    /// Answer (completion) template; default `{{text}}`. `loss_mask = "completion_only"` trains on it
    /// alone.
    #[serde(default = "d_answer")]
    pub answer: String,
    /// Task accuracy next to the CE (private tasks only); unset: none.
    #[serde(default)]
    pub accuracy: Option<CustomAccuracy>,
}

/// How a plain-text file splits into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextUnit {
    #[default]
    Line,
    Block,
}

/// The options of a multiple-choice row: one list-valued column, or one column per option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionColumns {
    List(String),
    Columns(Vec<String>),
}

/// Accuracy of a custom task, scored as lm-evaluation-harness scores its output types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CustomAccuracy {
    /// `output_type: multiple_choice`: the context is the prompt template, each option is scored as
    /// `" " + option` (lm-eval's default `target_delimiter`); acc and acc_norm.
    MultipleChoice {
        options: OptionColumns,
        /// Column of the gold option: an index from 0 (`2`, `"2"`) or a letter (`"C"`).
        label: String,
    },
    /// `output_type: generate_until` with a regex filter and `exact_match`: greedy generation from
    /// the prompt until a stop string, the answer extracted by `regex`, compared with `target`.
    ExactMatch {
        /// The reference answer, a template over the columns (`"{{answer}}"`).
        target: String,
        /// Stop strings (lm-eval's `until`); default `["\n\n"]` (its few-shot delimiter). The EOS
        /// text always stops.
        #[serde(default)]
        stop: Option<Vec<String>>,
        /// lm-eval's `regex` filter: the `group_select`-th match (negative from the end; its first
        /// group if the pattern has one), stripped; `[invalid]` when none. Unset: the whole generation.
        #[serde(default)]
        regex: Option<String>,
        #[serde(default)]
        group_select: isize,
        /// `exact_match`'s `ignore_case` and `ignore_punctuation` (default false).
        #[serde(default)]
        ignore_case: bool,
        #[serde(default)]
        ignore_punctuation: bool,
    },
}

impl CustomTask {
    /// Every column the task reads, with what reads it (for error messages), in first-use order.
    pub fn columns(&self) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut add = |col: String, by: String| {
            if !out.iter().any(|(c, _)| *c == col) {
                out.push((col, by));
            }
        };
        for (key, t) in [("prompt", &self.prompt), ("answer", &self.answer)] {
            for f in template_fields(t, &format!("custom.{key}"))? {
                add(f, format!("template custom.{key} = {t:?}"));
            }
        }
        if let Some(CustomAccuracy::MultipleChoice { options, label }) = &self.accuracy {
            match options {
                OptionColumns::List(c) => add(c.clone(), "custom.accuracy.options".into()),
                OptionColumns::Columns(cs) => cs.iter().for_each(|c| add(c.clone(), "custom.accuracy.options".into())),
            }
            add(label.clone(), "custom.accuracy.label".into());
        }
        if let Some(CustomAccuracy::ExactMatch { target, .. }) = &self.accuracy {
            for f in template_fields(target, "custom.accuracy.target")? {
                add(f, format!("template custom.accuracy.target = {target:?}"));
            }
        }
        Ok(out)
    }

    /// Checks what can be checked without the files.
    pub fn validate(&self) -> Result<()> {
        // It becomes a metrics.csv field, a TensorBoard tag and a report column.
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(DataError::Config(format!(
                "custom.name = {:?}: it names the task in metrics and reports; use letters, digits, `_`, `-` and `.`",
                self.name
            )));
        }
        if let Some(CustomAccuracy::MultipleChoice { options: OptionColumns::Columns(cs), .. }) = &self.accuracy {
            if cs.len() < 2 {
                return Err(DataError::Config(format!("custom.accuracy.options lists {} column(s); a multiple-choice task needs at least 2", cs.len())));
            }
        }
        self.columns().map(|_| ())
    }
}

/// One row: column → value (list-valued JSON columns keep their items).
pub type Row = BTreeMap<String, Value>;

/// A cell of a custom file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    List(Vec<String>),
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::List(v) => v.join("\n"),
        }
    }
}

/// The `{{name}}` fields of a template (`{{ name }}` with spaces too), in order; `what` names the
/// template in errors.
pub fn template_fields(t: &str, what: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or_else(|| DataError::Template(format!("{what} = {t:?}: unclosed `{{{{`")))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ' || c == '.') {
            return Err(DataError::Template(format!("{what} = {t:?}: `{{{{{name}}}}}` is not a column name")));
        }
        out.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Renders `{{name}}` fields from `row`; `what` names the template in errors.
pub fn render(t: &str, row: &Row, what: &str) -> Result<String> {
    let mut out = String::with_capacity(t.len() + 64);
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or_else(|| DataError::Template(format!("{what} = {t:?}: unclosed `{{{{`")))?;
        let name = after[..end].trim();
        let v = row.get(name).ok_or_else(|| {
            let have: Vec<&str> = row.keys().map(String::as_str).collect();
            DataError::Template(format!("{what} = {t:?}: unknown field `{{{{{name}}}}}`; the rows have: {}", have.join(", ")))
        })?;
        out.push_str(&v.text());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The columns a file has (parquet: from the footer; other formats: from its rows).
fn parquet_columns(path: &Path) -> Result<Vec<String>> {
    let r = open_parquet(path)?;
    use parquet::file::reader::FileReader;
    Ok(r.metadata().file_metadata().schema_descr().root_schema().get_fields().iter().map(|f| f.name().to_string()).collect())
}

/// Reads `wanted` columns (name, what wants it) of every row of `path`.
pub fn read_custom(path: &Path, task: &CustomTask, wanted: &[(String, String)]) -> Result<Vec<Row>> {
    let missing = |column: &str, by: &str, have: Vec<String>| DataError::CustomColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        used_by: by.to_string(),
        available: if have.is_empty() { "none".into() } else { have.join(", ") },
    };
    let format = FileFormat::of(path).ok_or_else(|| {
        DataError::Config(format!("{}: unknown file type (custom tasks read .parquet, .jsonl/.json, .csv, .txt)", path.display()))
    })?;
    match format {
        FileFormat::Parquet => {
            let have = parquet_columns(path)?;
            if let Some((c, by)) = wanted.iter().find(|(c, _)| !have.contains(c)) {
                return Err(missing(c, by, have));
            }
            let names: Vec<&str> = wanted.iter().map(|(c, _)| c.as_str()).collect();
            Ok(crate::files::read_parquet_text(path, &names)?
                .into_iter()
                .map(|cells| {
                    wanted
                        .iter()
                        .zip(cells)
                        .map(|((c, _), v)| {
                            let v = match v {
                                TextCell::Str(s) => Value::Str(s),
                                TextCell::List(l) => Value::List(l),
                            };
                            (c.clone(), v)
                        })
                        .collect()
                })
                .collect())
        }
        FileFormat::Jsonl => {
            let text = read_text(path)?;
            let mut rows = Vec::new();
            for (ln, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let jerr = |m: String| DataError::Json { path: path.to_path_buf(), line: ln + 1, message: m };
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| jerr(e.to_string()))?;
                let obj = v.as_object().ok_or_else(|| jerr("not a JSON object".into()))?;
                let mut row = Row::new();
                for (c, by) in wanted {
                    let v = obj.get(c).ok_or_else(|| missing(c, &format!("{by} (line {})", ln + 1), obj.keys().cloned().collect()))?;
                    row.insert(c.clone(), json_value(v).map_err(|m| jerr(format!("column `{c}`: {m}")))?);
                }
                rows.push(row);
            }
            Ok(rows)
        }
        FileFormat::Csv => {
            let text = read_text(path)?;
            let mut records = parse_csv(&text).map_err(|(line, m)| DataError::BadRow { path: path.to_path_buf(), row: line, message: m })?.into_iter();
            let header = records.next().unwrap_or_default();
            let idx: Vec<usize> = wanted
                .iter()
                .map(|(c, by)| header.iter().position(|h| h == c).ok_or_else(|| missing(c, by, header.clone())))
                .collect::<Result<_>>()?;
            records
                .enumerate()
                .map(|(r, rec)| {
                    if rec.len() != header.len() {
                        return Err(DataError::BadRow { path: path.to_path_buf(), row: r + 1, message: format!("{} fields, the header has {}", rec.len(), header.len()) });
                    }
                    Ok(wanted.iter().zip(&idx).map(|((c, _), &i)| (c.clone(), Value::Str(rec[i].clone()))).collect())
                })
                .collect()
        }
        FileFormat::Text => {
            if let Some((c, by)) = wanted.iter().find(|(c, _)| c != "text") {
                return Err(missing(c, by, vec!["text".into()]));
            }
            let text = read_text(path)?;
            let docs: Vec<String> = match task.text_unit {
                TextUnit::Line => text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(String::from).collect(),
                TextUnit::Block => blocks(&text),
            };
            Ok(docs.into_iter().map(|d| Row::from([("text".to_string(), Value::Str(d))])).collect())
        }
    }
}

fn json_value(v: &serde_json::Value) -> std::result::Result<Value, String> {
    use serde_json::Value as J;
    let scalar = |v: &J| -> std::result::Result<String, String> {
        match v {
            J::String(s) => Ok(s.clone()),
            J::Null => Ok(String::new()),
            J::Number(_) => Ok(v.to_string()),
            // As Python prints it, like lm-eval's Jinja templates and the parquet reader.
            J::Bool(b) => Ok(if *b { "True" } else { "False" }.to_string()),
            other => Err(format!("{other} is not a string, number or boolean")),
        }
    };
    match v {
        J::Array(items) => Ok(Value::List(items.iter().map(scalar).collect::<std::result::Result<_, _>>()?)),
        other => Ok(Value::Str(scalar(other)?)),
    }
}

/// A text file without the UTF-8 byte-order mark spreadsheet programs write (it would glue itself
/// to the first column's name).
fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Documents separated by one or more blank lines, each with its lines joined by `\n`.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for l in text.lines() {
        if l.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(l.trim_end());
        }
    }
    if !cur.is_empty() {
        out.push(cur.join("\n"));
    }
    out
}

/// RFC 4180 records: `,` separated, `"` quoted (`""` inside quotes is a quote), quoted fields may hold
/// newlines; `\r\n` or `\n` ends a record; empty lines are skipped. Err: (1-based line, message).
fn parse_csv(text: &str) -> std::result::Result<Vec<Vec<String>>, (usize, String)> {
    let mut records = Vec::new();
    let (mut rec, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut was_quoted, mut line) = (false, false, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    line += (c == '\n') as usize;
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err((line, "a quote inside an unquoted field (quote the whole field)".into())),
            ',' => {
                rec.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !rec.is_empty() || !field.is_empty() || was_quoted {
                    rec.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut rec));
                }
                was_quoted = false;
                line += 1;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err((line, "unclosed quote".into()));
    }
    if !rec.is_empty() || !field.is_empty() || was_quoted {
        rec.push(field);
        records.push(rec);
    }
    Ok(records)
}

/// The gold option's index from a label cell: `0`-based index or a letter (`A` = 0).
pub fn label_index(label: &str, options: usize) -> std::result::Result<usize, String> {
    let l = label.trim();
    let i = if let Ok(i) = l.parse::<usize>() {
        i
    } else if l.len() == 1 && l.chars().all(|c| c.is_ascii_alphabetic()) {
        (l.to_ascii_uppercase().as_bytes()[0] - b'A') as usize
    } else {
        return Err(format!("label {l:?} is neither an index from 0 nor a letter"));
    };
    if i >= options {
        return Err(format!("label {l:?} points past the {options} options"));
    }
    Ok(i)
}

/// The options of a row for multiple choice.
pub fn row_options(row: &Row, spec: &OptionColumns) -> Vec<String> {
    match spec {
        OptionColumns::List(c) => match row.get(c) {
            Some(Value::List(v)) => v.clone(),
            Some(Value::Str(s)) => s.lines().map(String::from).collect(),
            None => Vec::new(),
        },
        OptionColumns::Columns(cs) => cs.iter().map(|c| row.get(c).map(Value::text).unwrap_or_default()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_newlines_and_crlf() {
        let r = parse_csv("a,b\r\n\"x, y\",\"he said \"\"hi\"\"\nnext\"\n\n1,\n").unwrap();
        assert_eq!(r, vec![vec!["a", "b"], vec!["x, y", "he said \"hi\"\nnext"], vec!["1", ""]]);
        assert!(parse_csv("a,\"b\n").is_err());
    }

    #[test]
    fn templates_and_labels() {
        assert_eq!(template_fields("Q: {{question}}\n{{ answer }}", "t").unwrap(), vec!["question", "answer"]);
        assert!(template_fields("{{oops", "custom.prompt").unwrap_err().to_string().contains("custom.prompt"));
        let row = Row::from([("q".to_string(), Value::Str("2+2".into()))]);
        assert_eq!(render("Q: {{q}}?", &row, "t").unwrap(), "Q: 2+2?");
        let e = render("{{x}}", &row, "custom.prompt").unwrap_err().to_string();
        assert!(e.contains("custom.prompt") && e.contains("`{{x}}`") && e.contains("q"), "{e}");
        assert_eq!(label_index("C", 4), Ok(2));
        assert_eq!(label_index("1", 4), Ok(1));
        assert!(label_index("E", 4).is_err());
        assert_eq!(blocks("a\nb\n\n\nc\n"), vec!["a\nb", "c"]);
    }
}
