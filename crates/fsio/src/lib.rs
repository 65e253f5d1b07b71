//! Durable writes: the only code in crossfeed that renames a file or directory into place.
//!
//! Every write goes to a temp sibling (same directory, so the rename never crosses a file system),
//! is synced, renamed over the destination, and the directory holding it is synced so the rename
//! itself survives a crash. A reader sees the old content or the new, never half a file. Depends on
//! no crossfeed crate; each crate maps [`FsError`] into its own error, which keeps the path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O failure and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    fn new(path: &Path, source: std::io::Error) -> Self {
        Self { path: path.to_path_buf(), source }
    }
}

/// `<path>.<tag>-<pid>-<n>`: a sibling private to this process and this call (threads of one process
/// writing the same file get different temp names). Prefixed by the full file name, so a directory
/// listing shows whose temp file it is (`config.toml.tmp-…`).
pub fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    PathBuf::from(s)
}

/// Writes `bytes` to `path` durably (temp sibling, fsync, rename, directory fsync). The parent
/// directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, |tmp| -> Result<(), FsError> {
        let mut f = std::fs::File::create(tmp).map_err(|e| FsError::new(tmp, e))?;
        f.write_all(bytes).map_err(|e| FsError::new(tmp, e))
    })
}

/// Like [`write_atomic`] for writers that want a path rather than bytes (a serializer that opens
/// its own file): `fill` writes the temp path, which is then synced and renamed to `path`. On any
/// error the temp file is removed and `path` is untouched.
pub fn write_atomic_with<E: From<FsError>>(path: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temp_sibling(path, "tmp");
    let result = fill(&tmp).and_then(|()| commit(&tmp, path).map_err(E::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` durably unless `path` already exists: `Ok(true)` when this call created
/// it, `Ok(false)` when it was there first (its content untouched). The temp sibling is published with
/// a hard link, which fails when the name is taken, so of two processes creating the same file at once
/// exactly one wins and the other learns it; a rename would let the later one silently replace it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, FsError> {
    let tmp = temp_sibling(path, "tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| FsError::new(&tmp, e));
    let published = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => sync_parent(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links (FAT, some FUSE mounts) answers EPERM or ENOTSUP: there the
        // file is still written whole, by a rename, and only a creator racing this one could be missed.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Unsupported) => {
            if path.exists() {
                Ok(false)
            } else {
                commit(&tmp, path).map(|()| true)
            }
        }
        Err(e) => Err(FsError::new(path, e)),
    });
    let _ = std::fs::remove_file(&tmp);
    published
}

/// Puts a finished file or directory `from` in place at `to` (same file system): syncs `from`,
/// renames it over `to` (a directory `to` must be absent or empty; see [`replace_dir`]) and syncs
/// the parent directory. For files written elsewhere (a download's `.part`) and directories built
/// beside their final place.
pub fn commit(from: &Path, to: &Path) -> Result<(), FsError> {
    std::fs::File::open(from).and_then(|f| f.sync_all()).map_err(|e| FsError::new(from, e))?;
    std::fs::rename(from, to).map_err(|e| FsError::new(to, e))?;
    sync_parent(to)
}

/// Replaces the directory `to` with the finished directory `from` (built beside it): the old one is
/// renamed aside first, so at every moment `to` is either the whole old directory or the whole new
/// one, then removed. Without an old `to` this is [`commit`].
pub fn replace_dir(from: &Path, to: &Path) -> Result<(), FsError> {
    if std::fs::symlink_metadata(to).is_err() {
        return commit(from, to);
    }
    let old = temp_sibling(to, "old");
    std::fs::rename(to, &old).map_err(|e| FsError::new(to, e))?;
    if let Err(e) = commit(from, to) {
        // Put the old directory back, so a failed replace changes nothing.
        let _ = std::fs::rename(&old, to);
        return Err(e);
    }
    std::fs::remove_dir_all(&old).map_err(|e| FsError::new(&old, e))
}

/// Syncs the directory holding `path`, so a rename into it survives a crash. Not every platform can
/// open a directory for syncing; there it is skipped rather than failing the write.
fn sync_parent(path: &Path) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir) {
        Ok(d) => match d.sync_all() {
            Ok(()) => Ok(()),
            // Some file systems refuse fsync on a directory handle; the data itself is synced.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied) => Ok(()),
            Err(e) => Err(FsError::new(dir, e)),
        },
        Err(_) => Ok(()),
    }
}
