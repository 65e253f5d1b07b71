//! Reading dataset rows from parquet (the hub's schemas, read with parquet's column readers: no
//! Arrow in the binary) and JSONL files (same schema,
//! one JSON object per line; ARC `choices` as `{"text": [...], "label": [...]}`).

use crate::error::{DataError, Result};
use crate::task::{Cell, ColumnKind};
use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use parquet::schema::types::{SchemaDescriptor, Type};
use std::fs::File;
use std::path::Path;

/// File formats a local source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Jsonl,
    /// Custom tasks only.
    Csv,
    /// Plain text, custom tasks only.
    Text,
}

impl FileFormat {
    pub fn of(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            "parquet" => Some(FileFormat::Parquet),
            "jsonl" | "json" => Some(FileFormat::Jsonl),
            "csv" => Some(FileFormat::Csv),
            "txt" | "text" => Some(FileFormat::Text),
            _ => None,
        }
    }
}

/// Read the listed columns of every row of `path` (parquet or JSONL by extension).
pub fn read_rows(path: &Path, cols: &[(&str, ColumnKind)]) -> Result<Vec<Vec<Cell>>> {
    match FileFormat::of(path) {
        Some(FileFormat::Parquet) => read_parquet_rows(path, cols),
        Some(FileFormat::Jsonl) => read_jsonl_rows(path, cols),
        Some(FileFormat::Csv | FileFormat::Text) => Err(DataError::Config(format!(
            "{}: CSV and plain text are read by `kind = \"custom\"` tasks; built-in tasks read .parquet, .jsonl or .json",
            path.display()
        ))),
        None => Err(DataError::Config(format!(
            "{}: unknown file type (expected .parquet, .jsonl or .json)",
            path.display()
        ))),
    }
}

/// The arrow-like name of a parquet schema node, for error messages: `string`, `list<string>`,
/// `struct<text: list<string>, ...>`, or the physical type (`int64`, `binary`, ...).
fn describe(t: &Type) -> String {
    if t.is_primitive() {
        return if is_string_leaf(t) { "string".into() } else { format!("{:?}", t.get_physical_type()).to_lowercase() };
    }
    let info = t.get_basic_info();
    let fields = t.get_fields();
    let is_list = info.logical_type_ref() == Some(&LogicalType::List) || info.converted_type() == ConvertedType::LIST;
    if is_list && fields.len() == 1 {
        // <list> (repeated) list { <element> }, or the legacy two-level form <list> (repeated) <element>.
        let rep = &fields[0];
        let elem = if rep.is_group() && rep.get_fields().len() == 1 { &rep.get_fields()[0] } else { rep };
        return format!("list<{}>", describe(elem));
    }
    let inner: Vec<String> = fields.iter().map(|f| format!("{}: {}", f.name(), describe(f))).collect();
    format!("struct<{}>", inner.join(", "))
}

fn is_string_leaf(t: &Type) -> bool {
    let info = t.get_basic_info();
    t.is_primitive() && t.get_physical_type() == PhysicalType::BYTE_ARRAY && (info.logical_type_ref() == Some(&LogicalType::String) || info.converted_type() == ConvertedType::UTF8)
}

fn expected(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Str => "string",
        ColumnKind::Choices => "struct<text: list<string>, label: list<string>>",
    }
}

/// Where a column's values live among the file's leaf columns.
#[derive(Debug, Clone, Copy)]
pub enum Leaves {
    /// A top-level string: leaf index.
    Str(usize),
    /// ARC's `choices`: the `text` and `label` lists' leaves.
    Choices { text: ListLeaf, label: ListLeaf },
}

/// A list of strings stored in one leaf column: an element exists where the definition level
/// reaches `element_def` (the level of the list's repeated node), and is non-null at the leaf's max.
#[derive(Debug, Clone, Copy)]
pub struct ListLeaf {
    pub column: usize,
    pub element_def: i16,
}

/// The leaf column under `prefix` that is a string list (exactly one repeated node on its path).
fn string_list_leaf(schema: &SchemaDescriptor, prefix: &[&str]) -> Option<ListLeaf> {
    let mut found = schema.columns().iter().enumerate().filter(|(_, c)| c.path().parts().len() > prefix.len() && c.path().parts().iter().zip(prefix).all(|(a, b)| a == b));
    let (column, leaf) = found.next()?;
    if found.next().is_some() || leaf.max_rep_level() != 1 || !is_string_leaf(leaf.self_type()) {
        return None;
    }
    // Walk the path from the root, counting the optional/repeated nodes up to the repeated one.
    let mut node = schema.root_schema();
    let mut def = 0i16;
    for part in leaf.path().parts() {
        node = node.get_fields().iter().find(|f| f.name() == part)?;
        match node.get_basic_info().repetition() {
            Repetition::REQUIRED => {}
            Repetition::OPTIONAL => def += 1,
            Repetition::REPEATED => return Some(ListLeaf { column, element_def: def + 1 }),
        }
    }
    None
}

/// Check that the file's schema has every column with the right type; return where their values are.
pub fn check_schema(path: &Path, schema: &SchemaDescriptor, cols: &[(&str, ColumnKind)]) -> Result<Vec<Leaves>> {
    let top = schema.root_schema().get_fields();
    let available = || top.iter().map(|f| format!("{}: {}", f.name(), describe(f))).collect::<Vec<_>>().join(", ");
    cols.iter()
        .map(|(name, kind)| {
            let field = top.iter().find(|f| f.name() == *name).ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: available(),
            })?;
            let wrong = || DataError::ColumnType {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: describe(field),
                expected: expected(*kind).to_string(),
            };
            match kind {
                ColumnKind::Str => {
                    if !is_string_leaf(field) || field.get_basic_info().repetition() == Repetition::REPEATED {
                        return Err(wrong());
                    }
                    let i = schema.columns().iter().position(|c| c.path().parts() == [name.to_string()]).ok_or_else(wrong)?;
                    Ok(Leaves::Str(i))
                }
                ColumnKind::Choices => {
                    if !field.is_group() || field.get_basic_info().repetition() == Repetition::REPEATED {
                        return Err(wrong());
                    }
                    let text = string_list_leaf(schema, &[name, "text"]).ok_or_else(wrong)?;
                    let label = string_list_leaf(schema, &[name, "label"]).ok_or_else(wrong)?;
                    Ok(Leaves::Choices { text, label })
                }
            }
        })
        .collect()
}

/// Open a parquet file (reads the footer only).
pub fn open_parquet(path: &Path) -> Result<SerializedFileReader<File>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    SerializedFileReader::new(file).map_err(|e| DataError::parquet(path, e))
}

fn utf8<'v>(path: &Path, v: &'v ByteArray) -> Result<&'v str> {
    std::str::from_utf8(v.data()).map_err(|e| DataError::parquet(path, format!("invalid UTF-8 in a string column: {e}")))
}

fn byte_array_reader(path: &Path, rg: &dyn RowGroupReader, column: usize) -> Result<ColumnReaderImpl<ByteArrayType>> {
    match rg.get_column_reader(column).map_err(|e| DataError::parquet(path, e))? {
        ColumnReader::ByteArrayColumnReader(r) => Ok(r),
        _ => Err(DataError::parquet(path, "a string column is not stored as BYTE_ARRAY")),
    }
}

/// Reads a top-level string column of one row group, row by row, skipping rows on request
/// (nulls read as "").
pub struct StrColumn<'a> {
    path: &'a Path,
    reader: ColumnReaderImpl<ByteArrayType>,
    max_def: i16,
    // Reused across `read` calls (a BookCorpus draw reads thousands of short runs).
    def: Vec<i16>,
    vals: Vec<ByteArray>,
}

impl<'a> StrColumn<'a> {
    pub fn new(path: &'a Path, rg: &dyn RowGroupReader, column: usize) -> Result<Self> {
        let max_def = rg.metadata().schema_descr().column(column).max_def_level();
        Ok(StrColumn { path, reader: byte_array_reader(path, rg, column)?, max_def, def: Vec::new(), vals: Vec::new() })
    }

    pub fn skip(&mut self, rows: usize) -> Result<()> {
        let skipped = self.reader.skip_records(rows).map_err(|e| DataError::parquet(self.path, e))?;
        if skipped != rows {
            return Err(DataError::parquet(self.path, format!("row group ended after {skipped} of {rows} skipped rows")));
        }
        Ok(())
    }

    /// The next `rows` values, passed to `f` in order.
    pub fn read(&mut self, rows: usize, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        let mut left = rows;
        while left > 0 {
            self.def.clear();
            self.vals.clear();
            let want = left.min(8192);
            let (got, _, _) = self.reader.read_records(want, Some(&mut self.def), None, &mut self.vals).map_err(|e| DataError::parquet(self.path, e))?;
            if got == 0 {
                return Err(DataError::parquet(self.path, format!("row group ended {left} rows early")));
            }
            let mut values = self.vals.iter();
            for i in 0..got {
                if self.max_def == 0 || self.def[i] == self.max_def {
                    let v = values.next().ok_or_else(|| DataError::parquet(self.path, "string column has fewer values than rows"))?;
                    f(utf8(self.path, v)?)?;
                } else {
                    f("")?;
                }
            }
            left -= got;
        }
        Ok(())
    }
}

/// Every row's list of strings in one row group of a list leaf column.
fn read_string_lists(path: &Path, rg: &dyn RowGroupReader, leaf: ListLeaf, rows: usize) -> Result<Vec<Vec<String>>> {
    let max_def = rg.metadata().schema_descr().column(leaf.column).max_def_level();
    let mut reader = byte_array_reader(path, rg, leaf.column)?;
    let (mut def, mut rep, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let (got, _, _) = reader.read_records(rows, Some(&mut def), Some(&mut rep), &mut vals).map_err(|e| DataError::parquet(path, e))?;
    if got != rows {
        return Err(DataError::parquet(path, format!("list column holds {got} of the row group's {rows} rows")));
    }
    let mut out: Vec<Vec<String>> = Vec::with_capacity(rows);
    let mut values = vals.iter();
    for (&d, &r) in def.iter().zip(&rep) {
        if r == 0 {
            out.push(Vec::new());
        }
        let row = out.last_mut().ok_or_else(|| DataError::parquet(path, "list column starts inside a row"))?;
        if d == max_def {
            let v = values.next().ok_or_else(|| DataError::parquet(path, "list column has fewer values than levels"))?;
            row.push(utf8(path, v)?.to_string());
        } else if d >= leaf.element_def {
            row.push(String::new()); // a null element
        }
    }
    Ok(out)
}

fn read_parquet_rows(path: &Path, cols: &[(&str, ColumnKind)]) -> Result<Vec<Vec<Cell>>> {
    let reader = open_parquet(path)?;
    let leaves = check_schema(path, reader.metadata().file_metadata().schema_descr(), cols)?;
    let mut out = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(|e| DataError::parquet(path, e))?;
        let n = rg.metadata().num_rows() as usize;
        let mut columns: Vec<Vec<Cell>> = Vec::with_capacity(cols.len());
        for leaf in &leaves {
            let col = match *leaf {
                Leaves::Str(i) => {
                    let mut v = Vec::with_capacity(n);
                    StrColumn::new(path, rg.as_ref(), i)?.read(n, &mut |s| {
                        v.push(Cell::Str(s.to_string()));
                        Ok(())
                    })?;
                    v
                }
                Leaves::Choices { text, label } => read_string_lists(path, rg.as_ref(), text, n)?
                    .into_iter()
                    .zip(read_string_lists(path, rg.as_ref(), label, n)?)
                    .map(|(text, label)| Cell::Choices { text, label })
                    .collect(),
            };
            columns.push(col);
        }
        let mut iters: Vec<_> = columns.into_iter().map(|c| c.into_iter()).collect();
        for _ in 0..n {
            out.push(iters.iter_mut().filter_map(|it| it.next()).collect());
        }
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

/// A custom task's parquet cell: a string (numbers and booleans as their text) or a list of strings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TextCell {
    Str(String),
    List(Vec<String>),
}

/// Where a custom task's column lives: a string leaf, a number/boolean leaf, or a list of strings.
enum TextLeaf {
    Str(usize),
    Scalar(usize),
    List(ListLeaf),
}

/// Every row of `path`'s columns `names` as text (custom tasks read any string, number or boolean
/// column, and lists of strings). `names` must exist (the caller names what wanted a missing one); a
/// column of another type is an error naming it and its type.
pub(crate) fn read_parquet_text(path: &Path, names: &[&str]) -> Result<Vec<Vec<TextCell>>> {
    let reader = open_parquet(path)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let top = schema.root_schema().get_fields();
    let leaves: Vec<TextLeaf> = names
        .iter()
        .map(|name| {
            let field = top.iter().find(|f| f.name() == *name).ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                available: top.iter().map(|f| f.name().to_string()).collect::<Vec<_>>().join(", "),
            })?;
            let wrong = || DataError::ColumnType {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: describe(field),
                expected: "string, number, boolean or list<string>".into(),
            };
            let leaf = || schema.columns().iter().position(|c| c.path().parts() == [name.to_string()]).ok_or_else(wrong);
            if field.is_primitive() && field.get_basic_info().repetition() != Repetition::REPEATED {
                return match field.get_physical_type() {
                    _ if is_string_leaf(field) => Ok(TextLeaf::Str(leaf()?)),
                    PhysicalType::BOOLEAN | PhysicalType::INT32 | PhysicalType::INT64 | PhysicalType::FLOAT | PhysicalType::DOUBLE => Ok(TextLeaf::Scalar(leaf()?)),
                    _ => Err(wrong()),
                };
            }
            string_list_leaf(&schema, &[name]).map(TextLeaf::List).ok_or_else(wrong)
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(|e| DataError::parquet(path, e))?;
        let n = rg.metadata().num_rows() as usize;
        let mut columns: Vec<std::vec::IntoIter<TextCell>> = Vec::with_capacity(leaves.len());
        for leaf in &leaves {
            let col: Vec<TextCell> = match *leaf {
                TextLeaf::Str(i) => {
                    let mut v = Vec::with_capacity(n);
                    StrColumn::new(path, rg.as_ref(), i)?.read(n, &mut |s| {
                        v.push(TextCell::Str(s.to_string()));
                        Ok(())
                    })?;
                    v
                }
                TextLeaf::Scalar(i) => read_scalars(path, rg.as_ref(), i, n)?.into_iter().map(TextCell::Str).collect(),
                TextLeaf::List(l) => read_string_lists(path, rg.as_ref(), l, n)?.into_iter().map(TextCell::List).collect(),
            };
            columns.push(col.into_iter());
        }
        for _ in 0..n {
            out.push(columns.iter_mut().filter_map(|c| c.next()).collect());
        }
    }
    Ok(out)
}

/// A number or boolean column's values as Python's `str()` writes them for ints and bools (`3`,
/// `True`); floats as Rust prints them. Nulls read as "".
fn read_scalars(path: &Path, rg: &dyn RowGroupReader, column: usize, rows: usize) -> Result<Vec<String>> {
    use parquet::data_type::{BoolType, DataType, DoubleType, FloatType, Int32Type, Int64Type};
    fn typed<T: DataType>(path: &Path, mut r: ColumnReaderImpl<T>, max_def: i16, rows: usize, show: impl Fn(&T::T) -> String) -> Result<Vec<String>>
    where
        T::T: Clone,
    {
        let (mut def, mut vals) = (Vec::new(), Vec::new());
        let mut out = Vec::with_capacity(rows);
        while out.len() < rows {
            def.clear();
            vals.clear();
            let (got, _, _) = r.read_records(rows - out.len(), Some(&mut def), None, &mut vals).map_err(|e| DataError::parquet(path, e))?;
            if got == 0 {
                return Err(DataError::parquet(path, "row group ended early"));
            }
            let mut values = vals.iter();
            for d in def.iter().copied().chain(std::iter::repeat(0)).take(got) {
                if max_def == 0 || d == max_def {
                    out.push(show(values.next().ok_or_else(|| DataError::parquet(path, "column has fewer values than rows"))?));
                } else {
                    out.push(String::new());
                }
            }
        }
        Ok(out)
    }
    let max_def = rg.metadata().schema_descr().column(column).max_def_level();
    match rg.get_column_reader(column).map_err(|e| DataError::parquet(path, e))? {
        ColumnReader::BoolColumnReader(r) => typed::<BoolType>(path, r, max_def, rows, |b| if *b { "True".into() } else { "False".into() }),
        ColumnReader::Int32ColumnReader(r) => typed::<Int32Type>(path, r, max_def, rows, |v| v.to_string()),
        ColumnReader::Int64ColumnReader(r) => typed::<Int64Type>(path, r, max_def, rows, |v| v.to_string()),
        ColumnReader::FloatColumnReader(r) => typed::<FloatType>(path, r, max_def, rows, |v| v.to_string()),
        ColumnReader::DoubleColumnReader(r) => typed::<DoubleType>(path, r, max_def, rows, |v| v.to_string()),
        _ => Err(DataError::parquet(path, "not a number or boolean column")),
    }
}
