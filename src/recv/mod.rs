//! The receiver: turns a command stream into a read-only subvolume under a destination
//! directory — faithfully (the same tree `btrfs receive` makes), safely (nothing outside the new
//! subvolume is ever touched, whatever the stream says) and atomically (the subvolume appears
//! under its final name only after END: received UUID set, then read-only, then renamed).
//!
//! Staging: each subvolume is received as `.subvol-recv-staging.<pid>.<nonce>` inside DEST and
//! holds an exclusive `flock` on its root directory while it is being written. On any error or
//! signal the staging subvolume is deleted; after a kill -9 or power loss, the next receive into
//! the same DEST finds staging subvolumes whose lock is free and deletes them (reporting each).
//!
//! Confinement ([`beneath`]): every path is resolved beneath the staging root without following
//! symlinks; files are written only after checking they are regular files; clone sources are the
//! subvolume being received, its parent, or a subvolume on DEST's file system found by UUID, and
//! the source path is resolved beneath that subvolume's root; FALLOCATE modes are whitelisted;
//! decoded extents are capped.

pub mod beneath;
pub mod decompress;
pub mod mounts;

use crate::pipeline::Source;
use crate::stream::{AttrError, Command, Item, Op, Timespec, Uuid, cmd};
use crate::{Error, ExitCode};
use beneath::{OpenRegularError, PathRefusal, is_within};
use decompress::DecodeError;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Name prefix of staging subvolumes inside DEST.
pub const STAGING_PREFIX: &str = ".subvol-recv-staging.";
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// Printable form of a stream path (lossy, escaped control characters).
fn show(p: &[u8]) -> String {
    let mut v = Vec::new();
    crate::dump::escape_into(&mut v, p);
    String::from_utf8_lossy(&v).into_owned()
}

/// What went wrong applying one command.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A btrfs ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] subvol_ioctl::Error),
    /// The stream asks for something unsafe or unsupported.
    #[error("refused: {0}")]
    Refused(String),
    /// A path that is not a plain path beneath the subvolume.
    #[error("refused path: {0}")]
    Path(#[from] PathRefusal),
    /// A malformed command.
    #[error(transparent)]
    Attr(#[from] AttrError),
    /// An encoded extent that cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A command out of place (data before SUBVOL, parent not found, ...).
    #[error("{0}")]
    Protocol(String),
}

fn os(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> Failure {
    move |e| Failure::Os {
        op,
        source: e.into(),
    }
}

/// Errors of resolving a directory beneath the root: a symlink on the way or an escape is a
/// refusal, anything else an OS error.
fn dir_err(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> Failure {
    move |e| match e {
        rustix::io::Errno::LOOP => Failure::Refused(format!("{op}: a path component is a symlink")),
        rustix::io::Errno::XDEV => Failure::Refused(format!("{op}: path leaves the subvolume")),
        other => Failure::Os {
            op,
            source: other.into(),
        },
    }
}

fn regular(op: &'static str) -> impl FnOnce(OpenRegularError) -> Failure {
    move |e| match e {
        OpenRegularError::Os(e) => Failure::Os {
            op,
            source: e.into(),
        },
        OpenRegularError::NotRegular => Failure::Refused(format!("{op}: not a regular file")),
    }
}

/// Errors of the receiver.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The destination cannot be used.
    #[error("{}: {reason}", dest.display())]
    Dest {
        /// DEST.
        dest: PathBuf,
        /// Why.
        reason: String,
        /// The OS error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// A command could not be applied; the staging subvolume was removed.
    #[error("command {index} ({cmd}) at byte {offset}{}: {failure}", path.as_ref().map(|p| format!(", path '{p}'")).unwrap_or_default())]
    Command {
        /// Command index (0-based over the whole input).
        index: u64,
        /// Byte offset where the command starts.
        offset: u64,
        /// Command name.
        cmd: &'static str,
        /// The stream path concerned (escaped).
        path: Option<String>,
        /// What failed.
        #[source]
        failure: Failure,
    },
    /// Committing a received subvolume failed; it was removed.
    #[error("committing subvolume '{name}': {failure}")]
    Commit {
        /// Final name.
        name: String,
        /// What failed.
        #[source]
        failure: Failure,
    },
    /// SIGINT or SIGTERM arrived; the staging subvolume was removed.
    #[error("interrupted by a signal; partial subvolume removed")]
    Interrupted,
}

impl RecvError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        let f = match self {
            RecvError::Interrupted => return ExitCode::Interrupted,
            RecvError::Dest { .. } => return ExitCode::Io,
            RecvError::Command { failure, .. } | RecvError::Commit { failure, .. } => failure,
        };
        match f {
            Failure::Os { .. } | Failure::Ioctl(_) => ExitCode::Io,
            Failure::Refused(_) | Failure::Path(_) | Failure::Decode(DecodeError::Geometry(_)) => {
                ExitCode::Refused
            }
            Failure::Attr(_) | Failure::Decode(_) | Failure::Protocol(_) => ExitCode::InvalidStream,
        }
    }
}

/// How to receive.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Directory (on btrfs) where subvolumes are created.
    pub dest: PathBuf,
    /// Mount point of DEST's file system (found in mountinfo if None).
    pub root_mount: Option<PathBuf>,
    /// Stop after the first END.
    pub stop_at_end: bool,
    /// Never use encoded writes.
    pub force_decompress: bool,
    /// Set by a signal handler: stop, clean up, return [`RecvError::Interrupted`].
    pub interrupted: Option<Arc<AtomicBool>>,
}

/// Something a caller may want to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stale staging subvolume from a killed receive was deleted.
    StaleRemoved(&'a OsStr),
    /// A subvolume (`snapshot == false`) or snapshot started.
    Started {
        /// Final name.
        name: &'a OsStr,
        /// Incremental?
        snapshot: bool,
    },
    /// Input consumed so far.
    Progress {
        /// Bytes.
        bytes: u64,
        /// Commands.
        commands: u64,
    },
}

/// A committed subvolume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its name in DEST.
    pub name: OsString,
    /// Its full path.
    pub path: PathBuf,
    /// Received UUID (the sender's UUID).
    pub uuid: Uuid,
    /// Sender's ctransid (stored as stransid).
    pub ctransid: u64,
    /// The parent's UUID for incremental streams.
    pub parent_uuid: Option<Uuid>,
}

/// The destination directory and its file system.
struct Dest {
    path: PathBuf,
    dir: OwnedFd,
    root_mount: Option<PathBuf>,
    mount: Option<(OwnedFd, Vec<u8>)>,
}

impl Dest {
    fn open(opts: &Options) -> Result<Dest, RecvError> {
        let fail = |reason: &str, e: Option<io::Error>| RecvError::Dest {
            dest: opts.dest.clone(),
            reason: reason.to_string(),
            source: e,
        };
        let path =
            std::fs::canonicalize(&opts.dest).map_err(|e| fail("cannot resolve", Some(e)))?;
        let dir = rfs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("cannot open directory", Some(e.into())))?;
        let st = rfs::fstatfs(&dir).map_err(|e| fail("statfs", Some(e.into())))?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        if st.f_type as i64 != BTRFS_SUPER_MAGIC {
            return Err(fail("not on a btrfs file system", None));
        }
        Ok(Dest {
            path,
            dir,
            root_mount: opts.root_mount.clone(),
            mount: None,
        })
    }

    /// The mount showing DEST's file system and the fs path it shows (`/`, or `/@` with subvol=).
    fn mount(&mut self) -> Result<(BorrowedFd<'_>, &[u8]), Failure> {
        if self.mount.is_none() {
            let infos = std::fs::read("/proc/self/mountinfo").map_err(|e| Failure::Os {
                op: "read /proc/self/mountinfo",
                source: e,
            })?;
            let all = mounts::parse(&infos);
            let m = match &self.root_mount {
                Some(rm) => {
                    let rm = std::fs::canonicalize(rm).map_err(|e| Failure::Os {
                        op: "resolve -m ROOTMOUNT",
                        source: e,
                    })?;
                    all.iter().rev().find(|m| m.target == rm).cloned()
                }
                None => mounts::containing(&all, &self.path),
            }
            .filter(|m| m.fstype == "btrfs")
            .ok_or_else(|| {
                Failure::Protocol(format!("no btrfs mount found for {}", self.path.display()))
            })?;
            let fd = rfs::open(
                &m.target,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(os("open mount point"))?;
            self.mount = Some((fd, m.root));
        }
        match &self.mount {
            Some((fd, root)) => Ok((fd.as_fd(), root.as_slice())),
            None => Err(Failure::Protocol("mount lookup failed".into())),
        }
    }

    /// Finds a subvolume on DEST's file system by received UUID, then by UUID, and opens its root.
    fn open_subvol_by_uuid(&mut self, uuid: &Uuid, what: &str) -> Result<OwnedFd, Failure> {
        let id = match subvol_ioctl::find_subvol_by_received_uuid(&self.dir, uuid)? {
            Some(id) => id,
            None => subvol_ioctl::find_subvol_by_uuid(&self.dir, uuid)?
                .ok_or_else(|| Failure::Protocol(format!("cannot find {what} subvolume {uuid}")))?,
        };
        let fs_path = subvol_ioctl::subvol_path(&self.dir, id)?;
        let fs_path = fs_path.strip_prefix(b"/").unwrap_or(&fs_path).to_vec();
        let (mount_fd, root) = self.mount()?;
        let root = root.strip_prefix(b"/").unwrap_or(root);
        let rel: &[u8] = if root.is_empty() {
            &fs_path
        } else if fs_path == root {
            b""
        } else if is_within(&fs_path, root) {
            &fs_path[root.len() + 1..]
        } else {
            return Err(Failure::Refused(format!(
                "{what} subvolume {uuid} ({}) is not reachable from the mounted subvolume",
                show(&fs_path)
            )));
        };
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let fd = rfs::openat2(
            mount_fd,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            beneath::resolve_flags(),
        )
        .map_err(os("open subvolume"))?;
        // The path could have been replaced between lookup and open: check it is the same root.
        if subvol_ioctl::subvol_id(&fd)? != id {
            return Err(Failure::Refused(format!(
                "{what} subvolume {uuid} changed while opening it"
            )));
        }
        Ok(fd)
    }
}

/// A one-entry cache of an open directory handle, keyed by stream path.
#[derive(Default)]
struct DirCache {
    key: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl DirCache {
    fn get<'a>(
        &'a mut self,
        root: BorrowedFd<'a>,
        rel: Option<&[u8]>,
    ) -> Result<BorrowedFd<'a>, Failure> {
        let Some(rel) = rel else { return Ok(root) };
        if self.fd.is_none() || self.key != rel {
            self.fd = Some(beneath::open_dir(root, rel).map_err(dir_err("open parent directory"))?);
            self.key.clear();
            self.key.extend_from_slice(rel);
        }
        match &self.fd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(Failure::Protocol("directory cache empty".into())),
        }
    }

    fn forget_within(&mut self, p: &[u8]) {
        if self.fd.is_some() && is_within(&self.key, p) {
            self.fd = None;
        }
    }
}

/// The open regular file being written, keyed by its current stream path.
#[derive(Default)]
struct FileCache {
    key: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl FileCache {
    fn hit(&self, path: &[u8]) -> Option<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .filter(|_| self.key == path)
            .map(AsFd::as_fd)
    }
    fn set(&mut self, path: &[u8], fd: OwnedFd) {
        self.key.clear();
        self.key.extend_from_slice(path);
        self.fd = Some(fd);
    }
    fn renamed(&mut self, from: &[u8], to: &[u8]) {
        if self.fd.is_none() {
            return;
        }
        if is_within(&self.key, from) {
            let mut k = to.to_vec();
            k.extend_from_slice(&self.key[from.len()..]);
            self.key = k;
        } else if is_within(&self.key, to) {
            self.fd = None;
        }
    }
    fn removed(&mut self, p: &[u8]) {
        if is_within(&self.key, p) {
            self.fd = None;
        }
    }
}

/// A subvolume being received.
struct Staging {
    dest_dir: OwnedFd,
    staging_name: OsString,
    name: OsString,
    root: Option<OwnedFd>,
    uuid: Uuid,
    ctransid: u64,
    parent: Option<(Uuid, OwnedFd)>,
    dirs: DirCache,
    file: FileCache,
    clone_sources: Vec<(Uuid, OwnedFd)>,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.close_all();
        if subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name).is_err() {
            // A failure after the read-only flag was set: clear it and try again.
            if let Ok(fd) = rfs::openat(
                &self.dest_dir,
                self.staging_name.as_bytes(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                let _ = subvol_ioctl::subvol_set_readonly(&fd, false);
            }
            let _ = subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name);
        }
    }
}

impl Staging {
    fn close_all(&mut self) {
        self.file.fd = None;
        self.dirs.fd = None;
        self.clone_sources.clear();
        self.parent = None;
        self.root = None;
    }

    fn root(&self) -> Result<BorrowedFd<'_>, Failure> {
        root_fd(&self.root)
    }
}

/// The staging root's handle (a free function so that the other fields of [`Staging`] stay
/// borrowable alongside it).
fn root_fd(root: &Option<OwnedFd>) -> Result<BorrowedFd<'_>, Failure> {
    root.as_ref()
        .map(AsFd::as_fd)
        .ok_or_else(|| Failure::Protocol("subvolume closed".into()))
}

fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Deletes staging subvolumes in DEST whose receiver is gone (their lock is free).
fn remove_stale(dest: &Dest, on_event: &mut dyn FnMut(Event<'_>)) -> Result<(), RecvError> {
    let entries = std::fs::read_dir(&dest.path).map_err(|e| RecvError::Dest {
        dest: dest.path.clone(),
        reason: "cannot list".into(),
        source: Some(e),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
            continue;
        }
        let Ok(fd) = rfs::openat(
            &dest.dir,
            name.as_bytes(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live receive owns it
        }
        let _ = subvol_ioctl::subvol_set_readonly(&fd, false);
        drop(fd);
        subvol_ioctl::subvol_destroy(&dest.dir, &name).map_err(|e| RecvError::Dest {
            dest: dest.path.clone(),
            reason: format!(
                "cannot remove stale staging subvolume {}",
                name.to_string_lossy()
            ),
            source: Some(io::Error::from_raw_os_error(e.errno())),
        })?;
        on_event(Event::StaleRemoved(&name));
    }
    Ok(())
}

/// Where a command sits in the input, for error messages.
#[derive(Clone, Copy, Default)]
struct Pos {
    offset: u64,
    index: u64,
}

/// Receives every subvolume in `source` into `opts.dest`. Returns the committed subvolumes.
///
/// # Errors
/// A destination, stream, command or commit error; the subvolume being received is removed
/// (subvolumes committed before the error stay).
pub fn receive(
    source: &mut dyn Source,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Received>, Error> {
    let mut dest = Dest::open(opts)?;
    remove_stale(&dest, on_event)?;
    let mut rx = Receiver {
        dest: &mut dest,
        opts,
        current: None,
        done: Vec::new(),
        decode_buf: Vec::new(),
    };
    let result = rx.run(source, on_event);
    // Dropping the receiver removes an uncommitted staging subvolume before we return.
    let done = std::mem::take(&mut rx.done);
    drop(rx);
    if opts
        .interrupted
        .as_ref()
        .is_some_and(|f| f.load(Ordering::Relaxed))
    {
        return Err(RecvError::Interrupted.into());
    }
    result.map(|()| done)
}

struct Receiver<'a> {
    dest: &'a mut Dest,
    opts: &'a Options,
    current: Option<Staging>,
    done: Vec<Received>,
    decode_buf: Vec<u8>,
}

/// The object of a metadata command (see `Receiver::target`).
enum Target<'a> {
    /// An open handle: the subvolume root or the cached file.
    Fd(BorrowedFd<'a>),
    /// A name in a directory beneath the root (never followed).
    Name(BorrowedFd<'a>, &'a [u8]),
}

/// What a create command makes.
enum Create<'a> {
    File,
    Dir,
    Node { mode: u64, rdev: u64 },
    Fifo,
    Sock,
    Symlink(&'a [u8]),
}

impl Receiver<'_> {
    fn interrupted(&self) -> bool {
        self.opts
            .interrupted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn run(
        &mut self,
        source: &mut dyn Source,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), Error> {
        let mut cmd = Command::empty();
        let mut next = Command::empty();
        let mut next_pos: Option<Pos> = None;
        loop {
            if self.interrupted() {
                return Err(RecvError::Interrupted.into());
            }
            let pos = if let Some(p) = next_pos.take() {
                std::mem::swap(&mut cmd, &mut next);
                p
            } else {
                let offset = source.offset();
                match source.next_item(&mut cmd)? {
                    None => break,
                    Some(Item::Header(_)) => continue,
                    Some(Item::Command) => Pos {
                        offset,
                        index: source.commands().saturating_sub(1),
                    },
                }
            };
            if pos.index % 1024 == 0 {
                on_event(Event::Progress {
                    bytes: source.offset(),
                    commands: source.commands(),
                });
            }
            let op = cmd.op().map_err(|e| self.fail(&cmd, pos, None, e.into()))?;
            match op {
                Op::Subvol {
                    path,
                    uuid,
                    ctransid,
                } => {
                    self.commit_current()?;
                    let name = self
                        .start(path, uuid, ctransid, None)
                        .map_err(|f| self.fail(&cmd, pos, Some(path), f))?;
                    on_event(Event::Started {
                        name: &name,
                        snapshot: false,
                    });
                }
                Op::Snapshot {
                    path,
                    uuid,
                    ctransid,
                    clone_uuid,
                    ..
                } => {
                    self.commit_current()?;
                    let name = self
                        .start(path, uuid, ctransid, Some(clone_uuid))
                        .map_err(|f| self.fail(&cmd, pos, Some(path), f))?;
                    on_event(Event::Started {
                        name: &name,
                        snapshot: true,
                    });
                }
                Op::End => {
                    self.commit_current()?;
                    if self.opts.stop_at_end {
                        break;
                    }
                }
                Op::Mkfile { path, .. }
                | Op::Mkdir { path, .. }
                | Op::Mknod { path, .. }
                | Op::Mkfifo { path, .. }
                | Op::Mksock { path, .. }
                | Op::Symlink { path, .. } => {
                    let what = match op {
                        Op::Mkfile { .. } => Create::File,
                        Op::Mkdir { .. } => Create::Dir,
                        Op::Mknod { mode, rdev, .. } => Create::Node { mode, rdev },
                        Op::Mkfifo { .. } => Create::Fifo,
                        Op::Mksock { .. } => Create::Sock,
                        Op::Symlink { target, .. } => Create::Symlink(target),
                        _ => unreachable!("matched above"),
                    };
                    // Kernel streams create each inode under a temporary name and rename it at
                    // once: look one command ahead and create it at its final name directly,
                    // which saves a rename (and churn in the root directory) per inode.
                    let offset = source.offset();
                    let ahead = source.next_item(&mut next)?;
                    let mut fused = false;
                    if let Some(Item::Command) = ahead {
                        let npos = Pos {
                            offset,
                            index: source.commands().saturating_sub(1),
                        };
                        if next.cmd() == cmd::RENAME
                            && let Ok(Op::Rename { from, to }) = next.op()
                            && from == path
                        {
                            match self.create(to, &what, true) {
                                Ok(true) => fused = true,
                                Ok(false) => {}
                                Err(f) => return Err(self.fail(&next, npos, Some(to), f)),
                            }
                        }
                        if !fused {
                            next_pos = Some(npos);
                        }
                    } else if let Some(Item::Header(_)) = ahead {
                        return Err(self.fail(
                            &cmd,
                            pos,
                            Some(path),
                            Failure::Protocol("new stream header before END".into()),
                        ));
                    }
                    if !fused {
                        self.create(path, &what, false)
                            .map_err(|f| self.fail(&cmd, pos, Some(path), f))?;
                    }
                }
                _ => {
                    let path = path_of(&op);
                    self.apply(&op).map_err(|f| self.fail(&cmd, pos, path, f))?;
                }
            }
        }
        if self.current.is_some() {
            return Err(crate::stream::StreamError {
                offset: source.offset(),
                index: None,
                cmd_name: None,
                kind: crate::stream::StreamErrorKind::MissingEnd,
            }
            .into());
        }
        Ok(())
    }

    fn fail(&self, c: &Command, pos: Pos, path: Option<&[u8]>, failure: Failure) -> Error {
        RecvError::Command {
            index: pos.index,
            offset: pos.offset,
            cmd: c.name(),
            path: path.map(show),
            failure,
        }
        .into()
    }

    fn staging(&mut self) -> Result<&mut Staging, Failure> {
        self.current
            .as_mut()
            .ok_or_else(|| Failure::Protocol("command before SUBVOL or SNAPSHOT".into()))
    }

    /// Creates the staging subvolume (empty, or a writable snapshot of the parent).
    fn start(
        &mut self,
        path: &[u8],
        uuid: Uuid,
        ctransid: u64,
        parent: Option<Uuid>,
    ) -> Result<OsString, Failure> {
        let name = match beneath::split(path)? {
            Some((None, n)) if !n.starts_with(STAGING_PREFIX.as_bytes()) => {
                OsStr::from_bytes(n).to_os_string()
            }
            _ => {
                return Err(Failure::Refused(format!(
                    "invalid subvolume name '{}'",
                    show(path)
                )));
            }
        };
        if rfs::statat(&self.dest.dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(Failure::Refused(format!(
                "{} already exists in {}; refusing to overwrite it",
                name.to_string_lossy(),
                self.dest.path.display()
            )));
        }
        let staging_name = OsString::from(format!(
            "{STAGING_PREFIX}{}.{:016x}",
            std::process::id(),
            nonce()
        ));
        let parent_fd = match parent {
            Some(p) => {
                let fd = self.dest.open_subvol_by_uuid(&p, "parent")?;
                subvol_ioctl::snapshot_create(&self.dest.dir, &fd, &staging_name, false)?;
                Some((p, fd))
            }
            None => {
                subvol_ioctl::subvol_create(&self.dest.dir, &staging_name)?;
                None
            }
        };
        let dest_dir = self.dest.dir.try_clone().map_err(|e| Failure::Os {
            op: "dup",
            source: e,
        })?;
        // From here on, Drop removes the staging subvolume on any failure.
        let mut staging = Staging {
            dest_dir,
            staging_name,
            name: name.clone(),
            root: None,
            uuid,
            ctransid,
            parent: parent_fd,
            dirs: DirCache::default(),
            file: FileCache::default(),
            clone_sources: Vec::new(),
            committed: false,
        };
        let root = rfs::openat(
            &self.dest.dir,
            staging.staging_name.as_bytes(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(os("open staging subvolume"))?;
        rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive)
            .map_err(os("lock staging subvolume"))?;
        staging.root = Some(root);
        self.current = Some(staging);
        Ok(name)
    }

    /// END (or a new SUBVOL in a `send -e` stream): received UUID, read-only, final name.
    fn commit_current(&mut self) -> Result<(), Error> {
        let Some(mut s) = self.current.take() else {
            return Ok(());
        };
        let fail = |name: &OsStr, failure: Failure| -> Error {
            RecvError::Commit {
                name: name.to_string_lossy().into_owned(),
                failure,
            }
            .into()
        };
        s.file.fd = None;
        s.dirs.fd = None;
        s.clone_sources.clear();
        let name = s.name.clone();
        let root = s.root().map_err(|f| fail(&name, f))?;
        subvol_ioctl::set_received_subvol(root, &s.uuid, s.ctransid)
            .map_err(|e| fail(&name, e.into()))?;
        subvol_ioctl::subvol_set_readonly(root, true).map_err(|e| fail(&name, e.into()))?;
        rfs::renameat_with(
            &s.dest_dir,
            s.staging_name.as_bytes(),
            &s.dest_dir,
            name.as_bytes(),
            rfs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| fail(&name, os("rename staging subvolume to its final name")(e)))?;
        s.committed = true;
        let parent_uuid = s.parent.as_ref().map(|p| p.0);
        self.done.push(Received {
            path: self.dest.path.join(&name),
            name,
            uuid: s.uuid,
            ctransid: s.ctransid,
            parent_uuid,
        });
        Ok(())
    }

    /// Creates an inode at `path`. With `try_only`, an existing name is not an error: it returns
    /// false so the caller falls back to the stream's own create-then-rename.
    fn create(&mut self, path: &[u8], what: &Create<'_>, try_only: bool) -> Result<bool, Failure> {
        let s = self.staging()?;
        let (dir, name) = match beneath::split(path)? {
            Some(x) => x,
            None => return Err(Failure::Path(PathRefusal::Root)),
        };
        let root = root_fd(&s.root)?;
        let parent = s.dirs.get(root, dir)?;
        let owner = Mode::from_raw_mode(0o600);
        let result = match what {
            Create::File => match rfs::openat(
                parent,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                owner,
            ) {
                Ok(fd) => {
                    s.file.set(path, fd);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Create::Dir => rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)),
            Create::Node { mode, rdev } => {
                let ft = FileType::from_raw_mode((*mode & 0o170000) as rfs::RawMode);
                if !matches!(
                    ft,
                    FileType::CharacterDevice
                        | FileType::BlockDevice
                        | FileType::Fifo
                        | FileType::Socket
                ) {
                    return Err(Failure::Refused(format!(
                        "mknod with file type {:o}",
                        mode & 0o170000
                    )));
                }
                // RDEV is the kernel's new_encode_dev, not glibc's dev_t.
                let major = ((rdev >> 8) & 0xfff) as u32;
                let minor = ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32;
                rfs::mknodat(parent, name, ft, owner, rfs::makedev(major, minor))
            }
            Create::Fifo => rfs::mknodat(parent, name, FileType::Fifo, owner, 0),
            Create::Sock => rfs::mknodat(parent, name, FileType::Socket, owner, 0),
            Create::Symlink(target) => {
                if target.contains(&0) {
                    return Err(Failure::Refused("NUL byte in symlink target".into()));
                }
                rfs::symlinkat(*target, parent, name)
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) if try_only => Ok(false),
            Err(e) => Err(os("create")(e)),
        }
    }

    fn apply(&mut self, op: &Op<'_>) -> Result<(), Failure> {
        match *op {
            Op::Rename { from, to } => {
                let (fd_dir, fname) =
                    beneath::split(from)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let (td_dir, tname) =
                    beneath::split(to)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let s = self.staging()?;
                let uuid = s.uuid;
                let Staging {
                    root,
                    dirs,
                    file,
                    clone_sources,
                    ..
                } = s;
                let root = root_fd(root)?;
                // Two parents may be needed at once: the cache holds one, open the other.
                let from_parent = match fd_dir {
                    Some(d) => {
                        Some(beneath::open_dir(root, d).map_err(dir_err("open parent directory"))?)
                    }
                    None => None,
                };
                let fp = from_parent.as_ref().map_or(root, AsFd::as_fd);
                let tp = dirs.get(root, td_dir)?;
                rfs::renameat(fp, fname, tp, tname).map_err(os("rename"))?;
                file.renamed(from, to);
                clone_sources.retain(|(u, _)| *u != uuid);
                if dirs.fd.is_some() && (is_within(&dirs.key, from) || is_within(&dirs.key, to)) {
                    dirs.fd = None;
                }
                Ok(())
            }
            Op::Link { path, target } => {
                let (td, tname) =
                    beneath::split(target)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let (nd, nname) = beneath::split(path)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let s = self.staging()?;
                let Staging { root, dirs, .. } = s;
                let root = root_fd(root)?;
                let tparent = match td {
                    Some(d) => {
                        Some(beneath::open_dir(root, d).map_err(dir_err("open parent directory"))?)
                    }
                    None => None,
                };
                let tp = tparent.as_ref().map_or(root, AsFd::as_fd);
                let np = dirs.get(root, nd)?;
                // No AT_SYMLINK_FOLLOW: a symlink is linked itself, never its target.
                rfs::linkat(tp, tname, np, nname, AtFlags::empty()).map_err(os("link"))
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                let dir = matches!(op, Op::Rmdir { .. });
                let s = self.staging()?;
                let (d, name) = beneath::split(path)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let root = root_fd(&s.root)?;
                let parent = s.dirs.get(root, d)?;
                let flags = if dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rfs::unlinkat(parent, name, flags).map_err(os(if dir {
                    "rmdir"
                } else {
                    "unlink"
                }))?;
                s.file.removed(path);
                s.clone_sources.retain(|(u, _)| *u != s.uuid);
                if dir {
                    s.dirs.forget_within(path);
                }
                Ok(())
            }
            Op::SetXattr { path, name, data } => self.xattr(path, name, Some(data)),
            Op::RemoveXattr { path, name } => self.xattr(path, name, None),
            Op::Write { path, offset, data } => {
                let fd = self.writable(path)?;
                pwrite_all(fd, data, offset)
            }
            Op::Clone {
                path,
                offset,
                len,
                clone_uuid,
                clone_path,
                clone_offset,
                ..
            } => self.clone(path, offset, len, clone_uuid, clone_path, clone_offset),
            Op::Truncate { path, size } => {
                let fd = self.writable(path)?;
                rfs::ftruncate(fd, size).map_err(os("truncate"))
            }
            Op::Chmod { path, mode } => {
                let mode = Mode::from_raw_mode((mode & 0o7777) as rfs::RawMode);
                self.on_inode(
                    path,
                    "chmod",
                    |fd| rfs::fchmod(fd, mode),
                    |handle, st| {
                        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                            return Err(Failure::Refused(
                                "chmod of a symlink (it would change its target)".into(),
                            ));
                        }
                        rfs::chmod(beneath::proc_fd_path(handle).as_str(), mode)
                            .map_err(os("chmod"))
                    },
                )
            }
            Op::Chown { path, uid, gid } => {
                let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
                    return Err(Failure::Refused(format!(
                        "uid {uid} / gid {gid} out of range"
                    )));
                };
                if uid == u32::MAX || gid == u32::MAX {
                    return Err(Failure::Refused("uid or gid -1".into()));
                }
                let (u, g) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
                self.on_name(
                    path,
                    "chown",
                    |fd| rfs::fchown(fd, Some(u), Some(g)),
                    |dir, name| {
                        rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                    },
                )
            }
            Op::Utimes {
                path, atime, mtime, ..
            } => {
                let times = rfs::Timestamps {
                    last_access: ts(atime),
                    last_modification: ts(mtime),
                };
                self.on_name(
                    path,
                    "utimes",
                    |fd| rfs::futimens(fd, &times),
                    |dir, name| rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW),
                )
            }
            Op::UpdateExtent { .. } | Op::Fileattr { .. } | Op::Unknown(_) => Ok(()),
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                // Allocate, keep-size, punch-hole (what the kernel sends) and zero-range only.
                const ALLOWED: [u32; 5] = [0, 0x1, 0x3, 0x10, 0x11];
                if !ALLOWED.contains(&mode) {
                    return Err(Failure::Refused(format!("fallocate mode {mode:#x}")));
                }
                let flags = rfs::FallocateFlags::from_bits_retain(mode);
                let fd = self.writable(path)?;
                rfs::fallocate(fd, flags, offset, len).map_err(os("fallocate"))
            }
            Op::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => {
                if encryption != 0 {
                    return Err(DecodeError::Encrypted(encryption).into());
                }
                decompress::check_geometry(unencoded_len, unencoded_offset, unencoded_file_len)?;
                let force = self.opts.force_decompress;
                let mut buf = std::mem::take(&mut self.decode_buf);
                let result = (|| {
                    let fd = self.writable(path)?;
                    if !force {
                        let args = subvol_ioctl::EncodedWrite {
                            offset,
                            len: unencoded_file_len,
                            unencoded_len,
                            unencoded_offset,
                            compression,
                            encryption,
                        };
                        match subvol_ioctl::encoded_write(fd, data, &args) {
                            Ok(_) => return Ok(()),
                            Err(e)
                                if [libc::ENOSPC, libc::ENOTTY, libc::EINVAL]
                                    .contains(&e.errno()) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    buf.clear();
                    buf.resize(unencoded_len as usize, 0);
                    decompress::decode(compression, data, &mut buf)?;
                    let start = unencoded_offset as usize;
                    pwrite_all(fd, &buf[start..start + unencoded_file_len as usize], offset)
                })();
                self.decode_buf = buf;
                result
            }
            Op::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => {
                let s = self.staging()?;
                s.file.fd = None; // verity needs no writers
                let (d, name) = beneath::split(path)?.ok_or(Failure::Path(PathRefusal::Root))?;
                let root = root_fd(&s.root)?;
                let parent = s.dirs.get(root, d)?;
                let fd =
                    beneath::open_regular(parent, name, false).map_err(regular("enable verity"))?;
                subvol_ioctl::enable_verity(&fd, u32::from(algorithm), block_size, salt, sig)?;
                Ok(())
            }
            Op::Subvol { .. }
            | Op::Snapshot { .. }
            | Op::End
            | Op::Mkfile { .. }
            | Op::Mkdir { .. }
            | Op::Mknod { .. }
            | Op::Mkfifo { .. }
            | Op::Mksock { .. }
            | Op::Symlink { .. } => Err(Failure::Protocol("handled elsewhere".into())),
        }
    }

    /// The write handle for a regular file at `path` (cached).
    fn writable(&mut self, path: &[u8]) -> Result<BorrowedFd<'_>, Failure> {
        let s = self
            .current
            .as_mut()
            .ok_or_else(|| Failure::Protocol("command before SUBVOL or SNAPSHOT".into()))?;
        if s.file.hit(path).is_none() {
            let (d, name) = beneath::split(path)?.ok_or(Failure::Path(PathRefusal::Root))?;
            let root = root_fd(&s.root)?;
            let parent = s.dirs.get(root, d)?;
            let fd =
                beneath::open_regular(parent, name, true).map_err(regular("open for writing"))?;
            s.file.set(path, fd);
        }
        s.file
            .hit(path)
            .ok_or_else(|| Failure::Protocol("file cache".into()))
    }

    /// What a metadata command applies to: an open handle (the subvolume root or the cached
    /// file), or a name in a parent directory resolved beneath the root.
    fn target<'a>(&'a mut self, path: &'a [u8]) -> Result<Target<'a>, Failure> {
        let s = self.staging()?;
        if let Some(fd) = s.file.hit(path) {
            return Ok(Target::Fd(fd));
        }
        let root = root_fd(&s.root)?;
        Ok(match beneath::split(path)? {
            None => Target::Fd(root),
            Some((d, name)) => Target::Name(s.dirs.get(root, d)?, name),
        })
    }

    /// Runs `with_fd` on the root or the cached open file, otherwise `with_name` on (parent, name).
    fn on_name(
        &mut self,
        path: &[u8],
        op: &'static str,
        with_fd: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<()>,
        with_name: impl FnOnce(BorrowedFd<'_>, &[u8]) -> rustix::io::Result<()>,
    ) -> Result<(), Failure> {
        match self.target(path)? {
            Target::Fd(fd) => with_fd(fd),
            Target::Name(parent, name) => with_name(parent, name),
        }
        .map_err(os(op))
    }

    /// Like [`Self::on_name`] but the fallback gets an `O_PATH` handle and its stat.
    fn on_inode(
        &mut self,
        path: &[u8],
        op: &'static str,
        with_fd: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<()>,
        with_handle: impl FnOnce(BorrowedFd<'_>, &rfs::Stat) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match self.target(path)? {
            Target::Fd(fd) => with_fd(fd).map_err(os(op)),
            Target::Name(parent, name) => {
                let handle = beneath::open_path(parent, name).map_err(os(op))?;
                let st = rfs::fstat(&handle).map_err(os(op))?;
                with_handle(handle.as_fd(), &st)
            }
        }
    }

    fn xattr(&mut self, path: &[u8], name: &[u8], value: Option<&[u8]>) -> Result<(), Failure> {
        if name.is_empty() || name.len() > 255 || name.contains(&0) {
            return Err(Failure::Refused(format!(
                "invalid xattr name '{}'",
                show(name)
            )));
        }
        let s = self.staging()?;
        let flags = rfs::XattrFlags::empty();
        let on_fd = |fd: BorrowedFd<'_>| match value {
            Some(v) => rfs::fsetxattr(fd, name, v, flags),
            None => rfs::fremovexattr(fd, name),
        };
        if let Some(fd) = s.file.hit(path) {
            return on_fd(fd).map_err(os("xattr"));
        }
        let root = root_fd(&s.root)?;
        match beneath::split(path)? {
            None => on_fd(root).map_err(os("xattr")),
            Some((d, fname)) => {
                let parent = s.dirs.get(root, d)?;
                // /proc/self/fd/<parent>/<name> with the l* calls: the last component is never
                // followed, and special files are never opened.
                let p = beneath::proc_fd_child(parent, fname);
                match value {
                    Some(v) => rfs::lsetxattr(p.as_slice(), name, v, flags),
                    None => rfs::lremovexattr(p.as_slice(), name),
                }
                .map_err(os("xattr"))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn clone(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        clone_uuid: Uuid,
        clone_path: &[u8],
        clone_offset: u64,
    ) -> Result<(), Failure> {
        let (sd, sname) = beneath::split(clone_path)?.ok_or(Failure::Path(PathRefusal::Root))?;
        let s = self
            .current
            .as_mut()
            .ok_or_else(|| Failure::Protocol("command before SUBVOL or SNAPSHOT".into()))?;
        // Source subvolume: the one being received, its parent, or one found by UUID on DEST's fs.
        let need_lookup = clone_uuid != s.uuid
            && s.parent.as_ref().is_none_or(|p| p.0 != clone_uuid)
            && !s.clone_sources.iter().any(|(u, _)| *u == clone_uuid);
        if need_lookup {
            let fd = self.dest.open_subvol_by_uuid(&clone_uuid, "clone source")?;
            let s = self
                .current
                .as_mut()
                .ok_or_else(|| Failure::Protocol("no subvolume".into()))?;
            s.clone_sources.push((clone_uuid, fd));
        }
        let s = self
            .current
            .as_mut()
            .ok_or_else(|| Failure::Protocol("no subvolume".into()))?;
        let src_root: BorrowedFd<'_> = if clone_uuid == s.uuid {
            s.root()?
        } else if let Some((_, fd)) = s.parent.as_ref().filter(|p| p.0 == clone_uuid) {
            fd.as_fd()
        } else {
            s.clone_sources
                .iter()
                .find(|(u, _)| *u == clone_uuid)
                .map(|(_, fd)| fd.as_fd())
                .ok_or_else(|| Failure::Protocol("clone source lost".into()))?
        };
        let src_dir = match sd {
            Some(d) => Some(
                beneath::open_dir(src_root, d).map_err(dir_err("open clone source directory"))?,
            ),
            None => None,
        };
        let src =
            beneath::open_regular(src_dir.as_ref().map_or(src_root, AsFd::as_fd), sname, false)
                .map_err(regular("open clone source"))?;
        // A nested subvolume below the source root is another subvolume: not an allowed source.
        let (a, b) = (
            rfs::fstat(&src).map_err(os("stat clone source"))?,
            rfs::fstat(src_root).map_err(os("stat clone source"))?,
        );
        if a.st_dev != b.st_dev {
            return Err(Failure::Refused(
                "clone source lies in a nested subvolume".into(),
            ));
        }
        let dst = self.writable(path)?;
        subvol_ioctl::clone_range(dst, &src, clone_offset, len, offset)?;
        Ok(())
    }
}

fn ts(t: Timespec) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec) as _,
    }
}

fn pwrite_all(fd: BorrowedFd<'_>, mut data: &[u8], mut offset: u64) -> Result<(), Failure> {
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|e| e > i64::MAX as u64)
    {
        return Err(Failure::Refused(format!(
            "write at offset {offset} out of range"
        )));
    }
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => {
                return Err(Failure::Os {
                    op: "write",
                    source: io::ErrorKind::WriteZero.into(),
                });
            }
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(os("write")(e)),
        }
    }
    Ok(())
}

/// The main path a command concerns, for error messages.
fn path_of<'a>(op: &Op<'a>) -> Option<&'a [u8]> {
    Some(match *op {
        Op::Rename { from, .. } => from,
        Op::Link { path, .. }
        | Op::Unlink { path }
        | Op::Rmdir { path }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. }
        | Op::Write { path, .. }
        | Op::Clone { path, .. }
        | Op::Truncate { path, .. }
        | Op::Chmod { path, .. }
        | Op::Chown { path, .. }
        | Op::Utimes { path, .. }
        | Op::UpdateExtent { path, .. }
        | Op::Fallocate { path, .. }
        | Op::Fileattr { path, .. }
        | Op::EncodedWrite { path, .. }
        | Op::EnableVerity { path, .. } => path,
        _ => return None,
    })
}

/// Re-exported for callers that only need to know the staging naming rule.
#[must_use]
pub fn is_staging_name(name: &Path) -> bool {
    name.as_os_str()
        .as_bytes()
        .starts_with(STAGING_PREFIX.as_bytes())
}
