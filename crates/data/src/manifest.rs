//! The run's training manifest: one JSON line per drawn sample, recording its origin.

use crate::error::{DataError, Result};
use crate::mixture::{Mixture, Origin};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One manifest line: which sample the trainee `(generation, entity)` saw at `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub generation: u64,
    pub entity: usize,
    pub position: usize,
    pub origin: Origin,
    /// Whether the trainer's optimizer steps read this position (set by the loop, which knows the
    /// data order; a mixture holds more samples than 100 steps read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<bool>,
}

/// Manifest records of a mixture, in training order.
pub fn manifest_records(m: &Mixture) -> Vec<ManifestRecord> {
    m.samples
        .iter()
        .enumerate()
        .map(|(position, d)| ManifestRecord {
            generation: m.generation,
            entity: m.entity,
            position,
            origin: d.origin,
            read: None,
        })
        .collect()
}

/// Append a mixture's records as JSON lines to `w`.
pub fn write_manifest_jsonl<W: Write>(w: &mut W, m: &Mixture) -> std::io::Result<()> {
    write_manifest_jsonl_read(w, m, None)
}

/// [`write_manifest_jsonl`] with each record's `read` flag from `read[position]`.
pub fn write_manifest_jsonl_read<W: Write>(w: &mut W, m: &Mixture, read: Option<&[bool]>) -> std::io::Result<()> {
    for mut r in manifest_records(m) {
        r.read = read.and_then(|f| f.get(r.position).copied());
        serde_json::to_writer(&mut *w, &r)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Append a mixture's records to the JSONL file at `path` (created if missing).
pub fn append_manifest(path: &Path, m: &Mixture) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| DataError::io(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    write_manifest_jsonl(&mut w, m).map_err(|e| DataError::io(path, e))?;
    w.flush().map_err(|e| DataError::io(path, e))
}

/// Read a JSONL manifest back.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| DataError::Json {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}
