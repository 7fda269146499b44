//! File-system helpers: atomic writes and output files, directory locks, and btrfs checks by path.

use rustix::fs::{AtFlags, Mode, OFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// Writes `data` to `dir/name` atomically (an [`AtomicFile`]): readers see the old file or the
/// new one, never a part.
///
/// # Errors
/// I/O errors (nothing is left behind, the old file is unchanged).
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), PathError> {
    let target = dir.join(name);
    let mut f = AtomicFile::create(&target, 0o666)?;
    f.write_all(data)
        .map_err(|e| PathError::new("write", &target, e))?;
    f.commit()
}

/// An output file that appears complete or not at all. It is written under no name (an
/// `O_TMPFILE` inode) or under a hidden unique name beside the target, and takes the target's
/// name only in [`AtomicFile::commit`], after an fsync; dropped uncommitted, it leaves the file
/// system as it was (an existing target is never truncated or removed).
///
/// A target that exists and is not a regular file (a FIFO, a device such as `/dev/null`) is
/// written in place: there is nothing there to destroy, and renaming over it would replace it.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    /// The name the user gave (for messages).
    target: PathBuf,
    /// The target with symbolic links resolved: the name the file takes.
    resolved: PathBuf,
    dir: PathBuf,
    pending: Pending,
}

#[derive(Debug)]
enum Pending {
    /// An `O_TMPFILE` inode: nothing to clean up if the process dies.
    Unnamed,
    /// A hidden name in the target's directory (where `O_TMPFILE` is unsupported), removed on
    /// drop.
    Named(PathBuf),
    /// Written in place (the target is not a regular file).
    InPlace,
    /// Committed.
    Done,
}

impl AtomicFile {
    /// Prepares to write `target`: a new file gets `mode` (less the umask), a replaced regular
    /// file keeps its permission bits (not set-id bits) and, when permitted, its owner, as
    /// writing it in place would.
    ///
    /// # Errors
    /// The target is a directory, or its directory does not allow a new file (the error names
    /// the target).
    pub fn create(target: &Path, mode: u32) -> Result<AtomicFile, PathError> {
        let err = |e: io::Error| PathError::new("create", target, e);
        let is_dir = || io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error());
        let (resolved, existing) = match std::fs::metadata(target) {
            Ok(m) if m.is_dir() => return Err(err(is_dir())),
            Ok(m) if m.is_file() => {
                let resolved = resolve_links(target).map_err(err)?;
                // A link that does not name the file it leads to is a /proc "magic" link
                // (/dev/stdout): only the open file is known, so it is written in place.
                if !is_same_file(&m, &resolved) {
                    return AtomicFile::in_place(target);
                }
                (resolved, Some(m))
            }
            Ok(_) => return AtomicFile::in_place(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (resolve_links(target).map_err(err)?, None)
            }
            Err(e) => return Err(err(e)),
        };
        let Some(name) = resolved.file_name() else {
            return Err(err(is_dir()));
        };
        let dir = match resolved.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (file, pending) = match rustix::fs::open(
            &dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => (File::from(fd), Pending::Unnamed),
            // Not every file system supports O_TMPFILE.
            Err(_) => {
                let tmp = dir.join(temp_name(name));
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&tmp)
                    .map_err(err)?;
                (file, Pending::Named(tmp))
            }
        };
        let out = AtomicFile {
            file,
            target: target.into(),
            resolved,
            dir,
            pending,
        };
        if let Some(m) = existing {
            // Only root may give a file away; anyone else keeps it as their own.
            let _ = std::os::unix::fs::fchown(&out.file, Some(m.uid()), Some(m.gid()));
            // The permission bits only: set-id bits are not carried to new content.
            out.file
                .set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o777))
                .map_err(err)?;
        }
        Ok(out)
    }

    /// Opens a target that is not a regular file (or only reachable through a /proc link) for
    /// writing in place.
    fn in_place(target: &Path) -> Result<AtomicFile, PathError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(target)
            .map_err(|e| PathError::new("open", target, e))?;
        Ok(AtomicFile {
            file,
            target: target.into(),
            resolved: target.into(),
            dir: PathBuf::new(),
            pending: Pending::InPlace,
        })
    }

    /// The open file (to set permissions, or to hand to a writer).
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes the file the target, replacing an existing one: fsync, rename, fsync of the
    /// directory.
    ///
    /// # Errors
    /// I/O errors (the target is unchanged, the temporary file removed).
    pub fn commit(mut self) -> Result<(), PathError> {
        if self.sync()? {
            return Ok(());
        }
        match std::mem::replace(&mut self.pending, Pending::Done) {
            Pending::Unnamed => {
                let tmp = self.dir.join(temp_name(self.resolved.as_os_str()));
                self.link_to(&tmp)?;
                if let Err(e) = std::fs::rename(&tmp, &self.resolved) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(PathError::new("rename", &self.target, e));
                }
            }
            Pending::Named(tmp) => {
                if let Err(e) = std::fs::rename(&tmp, &self.resolved) {
                    self.pending = Pending::Named(tmp);
                    return Err(PathError::new("rename", &self.target, e));
                }
            }
            Pending::InPlace | Pending::Done => {}
        }
        self.sync_named()?;
        sync_dir(&self.dir)
    }

    /// Makes the file the target only if no file of that name exists (an `EEXIST` error
    /// otherwise): fsync, link, fsync of the directory.
    ///
    /// # Errors
    /// The target exists; I/O errors (the temporary file is removed).
    pub fn commit_new(mut self) -> Result<(), PathError> {
        if matches!(self.pending, Pending::InPlace) {
            return Err(PathError::new(
                "create",
                &self.target,
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        self.sync()?;
        match std::mem::replace(&mut self.pending, Pending::Done) {
            Pending::Unnamed => {
                let to = self.resolved.clone();
                self.link_to(&to)?;
            }
            Pending::Named(tmp) => {
                let r = std::fs::hard_link(&tmp, &self.resolved);
                let _ = std::fs::remove_file(&tmp);
                r.map_err(|e| PathError::new("create", &self.target, e))?;
            }
            Pending::InPlace | Pending::Done => {}
        }
        self.sync_named()?;
        sync_dir(&self.dir)
    }

    /// fsyncs the data (not for a file written in place: a pipe cannot be synced). True when
    /// the file is written in place, so there is no name to give.
    fn sync(&mut self) -> Result<bool, PathError> {
        self.file
            .flush()
            .map_err(|e| PathError::new("write", &self.target, e))?;
        if matches!(self.pending, Pending::InPlace) {
            self.pending = Pending::Done;
            return Ok(true);
        }
        self.file
            .sync_all()
            .map_err(|e| PathError::new("fsync", &self.target, e))?;
        Ok(false)
    }

    /// fsyncs the file again now that it has its name: on btrfs, an `O_TMPFILE` inode fsynced
    /// before it was linked comes back empty after a crash when only the directory is fsynced
    /// after the link (seen in vm-tests/power-loss.sh: a 0-byte file under the final name).
    fn sync_named(&self) -> Result<(), PathError> {
        self.file
            .sync_all()
            .map_err(|e| PathError::new("fsync", &self.target, e))
    }

    /// Gives the unnamed inode the name `to` (fails if `to` exists).
    fn link_to(&self, to: &Path) -> Result<(), PathError> {
        // Linking the open file itself needs CAP_DAC_READ_SEARCH; through /proc it needs /proc.
        if rustix::fs::linkat(&self.file, "", rustix::fs::CWD, to, AtFlags::EMPTY_PATH).is_ok() {
            return Ok(());
        }
        rustix::fs::linkat(
            rustix::fs::CWD,
            format!("/proc/self/fd/{}", self.file.as_raw_fd()),
            rustix::fs::CWD,
            to,
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| PathError::new("create", &self.target, e.into()))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.file.write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Pending::Named(tmp) = &self.pending {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A hidden name for a temporary file beside `name`, unique to this process and call.
fn temp_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let base = Path::new(name).file_name().unwrap_or(name);
    let mut s = std::ffi::OsString::from(".");
    s.push(base);
    s.push(format!(".tmp-{}-{}", std::process::id(), super::nonce()));
    s
}

/// `path` with symbolic links in its last component followed (a dangling link gives the path
/// it points to, so the new file is created there, as `open(O_CREAT)` would).
fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    // As the kernel's limit on nested links.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::from_raw_os_error(
        rustix::io::Errno::LOOP.raw_os_error(),
    ))
}

/// Opens a file to read it whole, refusing a directory at once (reading one fails only at the
/// first read, where the error would no longer name the file).
///
/// # Errors
/// The file cannot be opened, or is a directory (`EISDIR`).
pub fn open_to_read(path: &Path) -> Result<(File, std::fs::Metadata), PathError> {
    let err = |e| PathError::new("open", path, e);
    let f = File::open(path).map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if meta.is_dir() {
        return Err(err(io::Error::from_raw_os_error(
            rustix::io::Errno::ISDIR.raw_os_error(),
        )));
    }
    Ok((f, meta))
}

/// Checks that this process may create entries in the directory `dir` (with its effective
/// ids): a read-only mount fails here with `EROFS`, naming `dir`, before any work is done.
///
/// # Errors
/// `dir` is missing, not a directory, read-only or not writable.
pub fn check_writable_dir(dir: &Path, op: &'static str) -> Result<(), PathError> {
    rustix::fs::accessat(
        rustix::fs::CWD,
        // With a trailing slash, a file that is no directory fails as one (ENOTDIR).
        dir.join(""),
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .map_err(|e| PathError::new(op, dir, e.into()))
}

/// True when `path` names the same file (device and inode) as `meta` describes.
#[must_use]
pub fn is_same_file(meta: &std::fs::Metadata, path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_file_replaces_only_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("out");
        std::fs::write(&t, b"old").unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Dropped uncommitted: the old file is untouched, nothing is left.
        let mut f = AtomicFile::create(&t, 0o600).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&t).unwrap(), b"old");
        assert_eq!(names(d.path()), ["out"]);
        // Committed: replaced, keeping the old file's mode.
        let mut f = AtomicFile::create(&t, 0o600).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&t).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(names(d.path()), ["out"]);
    }

    #[test]
    fn atomic_file_new_links_only_where_nothing_exists() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("key");
        let mut f = AtomicFile::create(&t, 0o600).unwrap();
        f.write_all(b"mine").unwrap();
        // Someone else's file appears meanwhile: it is not overwritten.
        std::fs::write(&t, b"theirs").unwrap();
        let e = f.commit_new().unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&t).unwrap(), b"theirs");
        assert_eq!(names(d.path()), ["key"]);
        let n = d.path().join("new");
        let mut f = AtomicFile::create(&n, 0o600).unwrap();
        f.write_all(b"x").unwrap();
        f.commit_new().unwrap();
        assert_eq!(std::fs::read(&n).unwrap(), b"x");
    }

    #[test]
    fn atomic_file_refuses_a_directory_and_follows_a_link() {
        let d = tempfile::tempdir().unwrap();
        let e = AtomicFile::create(d.path(), 0o600).unwrap_err();
        assert_eq!(e.path, d.path());
        assert_eq!(
            e.source.raw_os_error(),
            Some(rustix::io::Errno::ISDIR.raw_os_error())
        );
        // A link to a file: the file is replaced, the link stays a link.
        let real = d.path().join("real");
        std::fs::write(&real, b"old").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let mut f = AtomicFile::create(&link, 0o600).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A device is written in place.
        let mut f = AtomicFile::create(Path::new("/dev/null"), 0o600).unwrap();
        f.write_all(b"x").unwrap();
        f.commit().unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &std::fs::metadata("/dev/null").unwrap().file_type()
        ));
    }
}
