//! Reading dataset rows from parquet (Arrow types as on the hub) and JSONL files (same schema,
//! one JSON object per line; ARC `choices` as `{"text": [...], "label": [...]}`).

use crate::error::{DataError, Result};
use crate::task::{Cell, ColumnKind};
use arrow_array::{Array, ArrayRef, LargeListArray, LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray, StructArray};
use arrow_schema::{DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::path::Path;

/// File formats a local source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Jsonl,
}

impl FileFormat {
    pub fn of(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            "parquet" => Some(FileFormat::Parquet),
            "jsonl" | "json" => Some(FileFormat::Jsonl),
            _ => None,
        }
    }
}

/// Read the listed columns of every row of `path` (parquet or JSONL by extension).
pub fn read_rows(path: &Path, cols: &[(&str, ColumnKind)]) -> Result<Vec<Vec<Cell>>> {
    match FileFormat::of(path) {
        Some(FileFormat::Parquet) => read_parquet_rows(path, cols),
        Some(FileFormat::Jsonl) => read_jsonl_rows(path, cols),
        None => Err(DataError::Config(format!(
            "{}: unknown file type (expected .parquet, .jsonl or .json)",
            path.display()
        ))),
    }
}

fn type_ok(dt: &DataType, kind: ColumnKind) -> bool {
    fn is_str(dt: &DataType) -> bool {
        matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    }
    fn is_str_list(dt: &DataType) -> bool {
        match dt {
            DataType::List(f) | DataType::LargeList(f) => is_str(f.data_type()),
            _ => false,
        }
    }
    match kind {
        ColumnKind::Str => is_str(dt),
        ColumnKind::Choices => match dt {
            DataType::Struct(fields) => ["text", "label"]
                .iter()
                .all(|n| fields.iter().any(|f| f.name() == *n && is_str_list(f.data_type()))),
            _ => false,
        },
    }
}

fn expected(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Str => "string",
        ColumnKind::Choices => "struct<text: list<string>, label: list<string>>",
    }
}

/// Check that `schema` has every column with the right type; return their top-level indices.
pub fn check_schema(path: &Path, schema: &Schema, cols: &[(&str, ColumnKind)]) -> Result<Vec<usize>> {
    let available = || {
        schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    cols.iter()
        .map(|(name, kind)| {
            let (i, f) = schema.column_with_name(name).ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: available(),
            })?;
            if !type_ok(f.data_type(), *kind) {
                return Err(DataError::ColumnType {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    found: f.data_type().to_string(),
                    expected: expected(*kind).to_string(),
                });
            }
            Ok(i)
        })
        .collect()
}

/// Strings of a string-typed array (nulls read as "").
pub fn strings(arr: &dyn Array) -> Option<Vec<String>> {
    let any = arr.as_any();
    let get = |i: usize, v: &str| if arr.is_null(i) { String::new() } else { v.to_string() };
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Some((0..a.len()).map(|i| get(i, a.value(i))).collect());
    }
    if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        return Some((0..a.len()).map(|i| get(i, a.value(i))).collect());
    }
    if let Some(a) = any.downcast_ref::<StringViewArray>() {
        return Some((0..a.len()).map(|i| get(i, a.value(i))).collect());
    }
    None
}

fn list_values(arr: &ArrayRef, i: usize) -> Vec<String> {
    if arr.is_null(i) {
        return Vec::new();
    }
    let inner = if let Some(l) = arr.as_any().downcast_ref::<ListArray>() {
        l.value(i)
    } else if let Some(l) = arr.as_any().downcast_ref::<LargeListArray>() {
        l.value(i)
    } else {
        return Vec::new();
    };
    strings(inner.as_ref()).unwrap_or_default()
}

fn batch_cells(path: &Path, batch: &RecordBatch, cols: &[(&str, ColumnKind)], out: &mut Vec<Vec<Cell>>) -> Result<()> {
    let n = batch.num_rows();
    let mut columns: Vec<Vec<Cell>> = Vec::with_capacity(cols.len());
    for (name, kind) in cols {
        let arr = batch.column_by_name(name).ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            available: String::new(),
        })?;
        let col = match kind {
            ColumnKind::Str => strings(arr.as_ref()).expect("type checked").into_iter().map(Cell::Str).collect(),
            ColumnKind::Choices => {
                let s = arr.as_any().downcast_ref::<StructArray>().expect("type checked");
                let text = s.column_by_name("text").expect("type checked");
                let label = s.column_by_name("label").expect("type checked");
                (0..n)
                    .map(|i| Cell::Choices {
                        text: list_values(text, i),
                        label: list_values(label, i),
                    })
                    .collect()
            }
        };
        columns.push(col);
    }
    let mut iters: Vec<_> = columns.into_iter().map(|c| c.into_iter()).collect();
    for _ in 0..n {
        out.push(iters.iter_mut().map(|it| it.next().unwrap()).collect());
    }
    Ok(())
}

fn read_parquet_rows(path: &Path, cols: &[(&str, ColumnKind)]) -> Result<Vec<Vec<Cell>>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::parquet(path, e))?;
    let idx = check_schema(path, builder.schema(), cols)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let reader = builder.with_projection(mask).build().map_err(|e| DataError::parquet(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| DataError::parquet(path, e))?;
        batch_cells(path, &batch, cols, &mut out)?;
    }
    Ok(out)
}

fn read_jsonl_rows(path: &Path, cols: &[(&str, ColumnKind)]) -> Result<Vec<Vec<Cell>>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let jerr = |m: String| DataError::Json {
            path: path.to_path_buf(),
            line: ln + 1,
            message: m,
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| jerr(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| jerr("not a JSON object".into()))?;
        let mut row = Vec::with_capacity(cols.len());
        for (name, kind) in cols {
            let val = obj.get(*name).ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: format!("line {}: {}", ln + 1, obj.keys().cloned().collect::<Vec<_>>().join(", ")),
            })?;
            let cell = match kind {
                ColumnKind::Str => match val {
                    serde_json::Value::String(s) => Cell::Str(s.clone()),
                    serde_json::Value::Null => Cell::Str(String::new()),
                    other => return Err(jerr(format!("column `{name}` is {other}, expected a string"))),
                },
                ColumnKind::Choices => {
                    let list = |k: &str| -> Result<Vec<String>> {
                        val.get(k)
                            .and_then(|x| x.as_array())
                            .ok_or_else(|| jerr(format!("column `{name}` needs a `{k}` list")))?
                            .iter()
                            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| jerr(format!("`{name}.{k}` holds a non-string"))))
                            .collect()
                    };
                    Cell::Choices {
                        text: list("text")?,
                        label: list("label")?,
                    }
                }
            };
            row.push(cell);
        }
        out.push(row);
    }
    Ok(out)
}
