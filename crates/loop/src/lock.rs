//! Advisory locks that keep two processes off the same stage (and two drivers off the same run).
//!
//! A lock is a file holding its holder (host, pid, Slurm job, command, start time) under an OS
//! advisory lock (`flock`; on NFS the kernel maps it to POSIX locks). The kernel drops the lock
//! when its process dies, however it dies, so a lock file whose lock is free but whose holder line
//! is still written is the trace of a killed process: the next taker reports it and takes over.
//! A clean release empties the file first. Lock files are never deleted: deleting one while another
//! process waits on it would let two processes hold "the same" lock on different inodes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LoopError, Result};

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// `SLURM_JOB_ID` (array tasks: `ARRAYID_TASK`) when the holder runs under Slurm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What the holder is doing (`crossfeed run`, `stage generation 1 entity 0 train`).
    pub what: String,
    /// Unix seconds when the lock was taken.
    pub since: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)?;
        if let Some(j) = &self.job {
            write!(f, " (slurm job {j})")?;
        }
        let ago = now().saturating_sub(self.since);
        write!(f, ", {}, for {ago}s", self.what)
    }
}

impl Holder {
    /// This process.
    pub fn me(what: &str) -> Self {
        let job = match (std::env::var("SLURM_ARRAY_JOB_ID"), std::env::var("SLURM_ARRAY_TASK_ID"), std::env::var("SLURM_JOB_ID")) {
            (Ok(a), Ok(t), _) => Some(format!("{a}_{t}")),
            (_, _, Ok(j)) => Some(j),
            _ => None,
        };
        Holder { host: hostname(), pid: std::process::id(), job, what: what.to_string(), since: now() }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A held lock; released (file emptied, lock dropped) when dropped.
#[derive(Debug)]
pub struct Lock {
    file: File,
    pub path: PathBuf,
    /// The holder of a stale lock this one took over (a killed process), if any.
    pub took_over: Option<Holder>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Empty first: a free lock with an empty file is a clean release, not a crash.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
        let _ = self.file.unlock();
    }
}

/// The outcome of trying a lock.
#[derive(Debug)]
pub enum TryLock {
    Acquired(Lock),
    /// Someone holds it (None when the holder has not written its line yet).
    Busy(Option<Holder>),
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    // An unreadable line is still the trace of a holder; keep what is known.
    Some(serde_json::from_str(s).unwrap_or_else(|_| Holder { host: "?".into(), pid: 0, job: None, what: s.chars().take(80).collect(), since: 0 }))
}

fn open(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LoopError::io(parent, e))?;
    }
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| LoopError::io(path, e))
}

/// Takes the lock at `path` without waiting, recording `what` as this process's work.
pub fn try_lock(path: &Path, what: &str) -> Result<TryLock> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(TryLock::Busy(read_holder(&mut file))),
        Err(TryLockError::Error(e)) => return Err(LoopError::io(path, e)),
    }
    Ok(TryLock::Acquired(held(file, path, what)?))
}

/// Takes the lock at `path`, waiting while another process holds it: for short sections every
/// process passes through in turn (rebuilding a run's records, pruning).
pub fn lock_wait(path: &Path, what: &str) -> Result<Lock> {
    let file = open(path)?;
    file.lock().map_err(|e| LoopError::io(path, e))?;
    held(file, path, what)
}

/// A freshly locked file becomes a `Lock`: the previous holder line (a killed process) is kept as
/// `took_over` and replaced by this process's.
fn held(mut file: File, path: &Path, what: &str) -> Result<Lock> {
    let took_over = read_holder(&mut file);
    let line = serde_json::to_string(&Holder::me(what)).map_err(|e| LoopError::Json { path: path.to_path_buf(), message: e.to_string() })?;
    let write = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_data()
    };
    write(&mut file).map_err(|e| LoopError::io(path, e))?;
    Ok(Lock { file, path: path.to_path_buf(), took_over })
}

/// Who holds the lock at `path` right now, without taking it (a stale holder line is left alone).
pub fn holder(path: &Path) -> Result<Option<Holder>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoopError::io(path, e)),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => Ok(Some(
            read_holder(&mut file).unwrap_or_else(|| Holder { host: "?".into(), pid: 0, job: None, what: "starting".into(), since: 0 }),
        )),
        Err(TryLockError::Error(e)) => Err(LoopError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_sees_the_holder_and_a_dropped_lock_is_free_and_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.lock");
        let TryLock::Acquired(a) = try_lock(&p, "first").unwrap() else { panic!("free lock not acquired") };
        assert!(a.took_over.is_none());
        match try_lock(&p, "second").unwrap() {
            TryLock::Busy(Some(h)) => assert_eq!((h.pid, h.what.as_str()), (std::process::id(), "first")),
            other => panic!("expected busy, got {other:?}"),
        }
        assert!(holder(&p).unwrap().is_some());
        drop(a);
        assert!(holder(&p).unwrap().is_none());
        let TryLock::Acquired(b) = try_lock(&p, "third").unwrap() else { panic!() };
        assert!(b.took_over.is_none(), "a clean release is not a stale lock");
    }

    #[test]
    fn a_free_lock_with_a_holder_line_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.lock");
        // What a killed process leaves: its line, no OS lock.
        std::fs::write(&p, serde_json::to_string(&Holder { host: "h".into(), pid: 42, job: Some("7_1".into()), what: "dead".into(), since: 1 }).unwrap()).unwrap();
        assert!(holder(&p).unwrap().is_none(), "a stale lock is not held");
        let TryLock::Acquired(l) = try_lock(&p, "new").unwrap() else { panic!() };
        assert_eq!(l.took_over.as_ref().map(|h| h.pid), Some(42));
    }
}
