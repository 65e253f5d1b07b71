//! TensorBoard event files for a run (`tb/` in the run directory), so `tensorboard --logdir runs/`
//! shows every run and sweep point side by side: per generation the metrics of `metrics.jsonl` (CE
//! matrix, similarity, diversity, collapse) as `<metric>/<eval_set>/entity<k>` (a pair metric:
//! `entity<i>-<j>`) at step = generation (the base model and the real-data baseline at -1), and per
//! train stage `train/{loss,lr,grad_norm}/entity<k>` at the global optimizer step (generation ×
//! steps + step).
//!
//! Written by hand, not with a crate: the one Rust crate for it (`tensorboard-rs`) is unmaintained
//! since 2022 and pulls protobuf 2 and image 0.23. The format is small: TFRecord framing (u64 length,
//! masked CRC32C of the length, data, masked CRC32C of the data) around `Event` protobufs (wall_time,
//! step, file_version, summary{value{tag, simple_value}}). The file is a pure function of the run's
//! stage files, rewritten atomically whenever the metrics are (so a resume never duplicates a point,
//! and the same run gives the same bytes: wall_time is 0).

use std::path::Path;

use crate::config::ExperimentConfig;
use crate::metrics::MetricLine;
use crate::rundir::{write_atomic, RunDir};
use crate::plan::{plan, GenId, Stage};
use crate::{LoopError, Result};

/// The event file's name inside `tb/` (TensorBoard reads files whose name contains `tfevents`).
pub const EVENT_FILE: &str = "events.out.tfevents.0.crossfeed";

/// One scalar point.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub value: f32,
}

fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
        }
        *e = c;
    }
    t
}

/// CRC-32C (Castagnoli), as TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(crc32c_table);
    !data.iter().fold(!0u32, |c, &b| t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

enum Body<'a> {
    Version(&'a str),
    Scalar(&'a Scalar),
}

/// An `Event` protobuf: wall_time (1, double), step (2, int64), then file_version (3) or summary (5).
fn event(step: i64, body: Body) -> Vec<u8> {
    let mut e = vec![0x09];
    e.extend_from_slice(&0f64.to_le_bytes());
    varint(2 << 3, &mut e);
    varint(step as u64, &mut e);
    match body {
        Body::Version(version) => bytes_field(3, version.as_bytes(), &mut e),
        Body::Scalar(s) => {
            // Summary.Value { tag (1), simple_value (2, float) } inside Summary.value (1).
            let mut v = Vec::new();
            bytes_field(1, s.tag.as_bytes(), &mut v);
            v.push(2 << 3 | 5);
            v.extend_from_slice(&s.value.to_le_bytes());
            let mut summary = Vec::new();
            bytes_field(1, &v, &mut summary);
            bytes_field(5, &summary, &mut e);
        }
    }
    e
}

fn record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked(crc32c(&len)).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked(crc32c(data)).to_le_bytes());
}

/// The bytes of an event file holding `scalars` (after the `brain.Event:2` version record).
pub fn encode(scalars: &[Scalar]) -> Vec<u8> {
    let mut out = Vec::new();
    record(&event(0, Body::Version("brain.Event:2")), &mut out);
    for s in scalars {
        record(&event(s.step, Body::Scalar(s)), &mut out);
    }
    out
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Protobuf fields of `b` as (field, wire type, payload bytes or the varint value's bytes).
fn fields(b: &[u8]) -> Option<Vec<(u64, &[u8], u64)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = read_varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, &b[0..0], read_varint(b, &mut i)?)),
            1 => {
                out.push((field, b.get(i..i + 8)?, 0));
                i += 8;
            }
            2 => {
                let n = read_varint(b, &mut i)? as usize;
                out.push((field, b.get(i..i + n)?, 0));
                i += n;
            }
            5 => {
                out.push((field, b.get(i..i + 4)?, 0));
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Reads the scalars of an event file back, checking every CRC (the test of [`encode`]).
pub fn decode(b: &[u8]) -> std::result::Result<Vec<Scalar>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let head = b.get(i..i + 12).ok_or("truncated record header")?;
        let len = u64::from_le_bytes(head[..8].try_into().map_err(|_| "header")?) as usize;
        if u32::from_le_bytes(head[8..12].try_into().map_err(|_| "header")?) != masked(crc32c(&head[..8])) {
            return Err(format!("length CRC mismatch at byte {i}"));
        }
        let data = b.get(i + 12..i + 12 + len).ok_or("truncated record")?;
        let crc = b.get(i + 12 + len..i + 16 + len).ok_or("truncated record CRC")?;
        if u32::from_le_bytes(crc.try_into().map_err(|_| "crc")?) != masked(crc32c(data)) {
            return Err(format!("data CRC mismatch at byte {i}"));
        }
        i += 16 + len;
        let ev = fields(data).ok_or("bad Event protobuf")?;
        let step = ev.iter().find(|f| f.0 == 2).map_or(0, |f| f.2 as i64);
        for (_, summary, _) in ev.iter().filter(|f| f.0 == 5) {
            for (_, value, _) in fields(summary).ok_or("bad Summary")?.into_iter().filter(|f| f.0 == 1) {
                let v = fields(value).ok_or("bad Summary.Value")?;
                let tag = v.iter().find(|f| f.0 == 1).map(|f| String::from_utf8_lossy(f.1).to_string()).ok_or("no tag")?;
                let x = v.iter().find(|f| f.0 == 2).ok_or("no simple_value")?.1;
                out.push(Scalar { tag, step, value: f32::from_le_bytes(x.try_into().map_err(|_| "value")?) });
            }
        }
    }
    Ok(out)
}

/// The scalars of a run: `metrics` (per generation) and every finished train stage's log.
pub fn run_scalars(dir: &RunDir, cfg: &ExperimentConfig, metrics: &[MetricLine]) -> Result<Vec<Scalar>> {
    let mut out: Vec<Scalar> = metrics
        .iter()
        .map(|m| Scalar {
            tag: match (m.entity, m.peer) {
                (Some(e), Some(p)) => format!("{}/{}/entity{e}-{p}", m.metric, m.eval_set),
                (Some(e), None) => format!("{}/{}/entity{e}", m.metric, m.eval_set),
                (None, _) => format!("{}/{}", m.metric, m.eval_set),
            },
            step: m.generation,
            value: m.value as f32,
        })
        .collect();
    for id in plan(cfg).into_iter().filter(|id| id.stage == Stage::Train && dir.is_done(id)) {
        let (GenId::Gen(t), Some(e)) = (id.gen, id.entity) else { continue };
        let path = dir.stage_dir(&id).join("train_log.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|er| LoopError::io(&path, er))?;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|er| LoopError::Config(format!("{}: {er}", path.display())))?;
            let step = v["step"].as_i64().unwrap_or(0) + t as i64 * cfg.train.total_steps as i64;
            for key in ["loss", "lr", "grad_norm"] {
                if let Some(x) = v[key].as_f64() {
                    out.push(Scalar { tag: format!("train/{key}/entity{e}"), step, value: x as f32 });
                }
            }
        }
    }
    Ok(out)
}

/// Rewrites `tb/` of the run from its stage files.
pub fn write_run(dir: &RunDir, cfg: &ExperimentConfig, metrics: &[MetricLine]) -> Result<()> {
    let scalars = run_scalars(dir, cfg, metrics)?;
    let tb = dir.root.join("tb");
    std::fs::create_dir_all(&tb).map_err(|e| LoopError::io(&tb, e))?;
    write_atomic(&tb.join(EVENT_FILE), &encode(&scalars))
}

/// Where a run's event file is.
pub fn event_file(run_root: &Path) -> std::path::PathBuf {
    run_root.join("tb").join(EVENT_FILE)
}
