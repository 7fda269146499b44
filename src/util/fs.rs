//! File-system helpers: atomic writes, directory locks, and btrfs checks by path.

use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// An I/O operation on a path failed: the operation, the path, and the OS error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct PathError {
    /// What was being done ("open", "rename", ...).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl PathError {
    /// Builds one.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> PathError {
        PathError {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Writes `data` to `dir/name` atomically: a temporary file in `dir`, fsync, rename, fsync of
/// the directory. Readers see the old file or the new one, never a part.
///
/// # Errors
/// I/O errors (the temporary file is removed).
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), PathError> {
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        super::nonce()
    ));
    let fin = dir.join(name);
    let r = (|| {
        let mut f = File::create_new(&tmp).map_err(|e| PathError::new("create", &tmp, e))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(|e| PathError::new("write", &tmp, e))?;
        std::fs::rename(&tmp, &fin).map_err(|e| PathError::new("rename", &fin, e))?;
        sync_dir(dir)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// fsyncs a directory (after a rename into it, so the new name survives a crash).
///
/// # Errors
/// I/O errors.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PathError::new("fsync", dir, e))
}

/// A held exclusive `flock` on a directory, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Why [`lock_dir`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is locked by another process", .0.display())]
    Busy(PathBuf),
    /// Opening or locking failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Takes an exclusive, non-blocking `flock` on `dir`.
///
/// # Errors
/// [`LockError::Busy`] when another process holds it; I/O errors.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let f = File::open(dir).map_err(|e| PathError::new("open", dir, e))?;
    match rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(DirLock { _dir: f }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy(dir.to_path_buf())),
        Err(e) => Err(PathError::new("lock", dir, e.into()).into()),
    }
}

/// True when `path` is on a btrfs file system (false when it cannot be opened).
#[must_use]
pub fn is_btrfs(path: &Path) -> bool {
    open_path(path, OFlags::empty()).is_ok_and(|fd| subvol_ioctl::is_btrfs(&fd).unwrap_or(false))
}

/// True when `path` is the root directory of a btrfs subvolume (a final symlink is not
/// followed; false when it cannot be opened).
#[must_use]
pub fn is_subvolume(path: &Path) -> bool {
    open_path(path, OFlags::NOFOLLOW)
        .is_ok_and(|fd| subvol_ioctl::is_subvol_root(&fd).unwrap_or(false))
}

/// An `O_PATH` handle: enough for fstat/fstatfs, needs no read permission.
fn open_path(path: &Path, extra: OFlags) -> rustix::io::Result<std::os::fd::OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC | extra, Mode::empty())
}
