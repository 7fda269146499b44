//! The staging subvolume: its name (`.subvol-recv-staging.<pid>.<nonce>` in DEST), its lock,
//! the commit sequence (received UUID, read-only, final name) and the removal of stale ones
//! left by killed receives.
//!
//! The lock is a file `<staging name>.lock` beside the staging subvolume, made with `O_TMPFILE`,
//! locked (exclusive `flock`) and only then linked under its name: no cleanup can ever see a
//! lock file that is not locked by a live receive or left by a dead one. The lock file exists
//! before the staging subvolume and is removed only after the staging name is gone (renamed
//! to the final name, or deleted), so holding the lock file's lock is holding the staging
//! subvolume. A cleanup touches a staging subvolume only after taking that lock and proving
//! the names still refer to the inodes it locked and opened.

use super::dest::Dest;
use super::resume::{self, Checkpoints};
use super::{Event, Failure, Received, RecvError, os, show};
use crate::stream::Uuid;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Name prefix of staging subvolumes (and their lock files) inside DEST.
pub(super) const PREFIX: &str = ".subvol-recv-staging.";

/// Suffix of a staging subvolume's lock file.
const LOCK_SUFFIX: &str = ".lock";

/// True for a name the receiver uses for staging subvolumes or their lock files.
pub(super) fn is_staging_name(name: &[u8]) -> bool {
    name.starts_with(PREFIX.as_bytes())
}

/// Where the commit sequence is. The sealed state (received UUID set, read-only) is kept until
/// the whole input was read, then every sealed subvolume of the input is renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Writing,
    Sealed,
    Committed,
}

/// A subvolume being received under its staging name. Dropping it before [`Staging::commit`]
/// removes it; dropping it at any time removes its lock file.
pub(super) struct Staging {
    dest_dir: OwnedFd,
    staging_name: OsString,
    lock_name: OsString,
    /// The locked lock file: held as long as this value lives.
    lock: OwnedFd,
    /// The root directory, kept once sealed (a later stream of the input may use it as its
    /// parent or clone source).
    root: Option<OwnedFd>,
    name: OsString,
    uuid: Uuid,
    ctransid: u64,
    parent_uuid: Option<Uuid>,
    state: State,
    /// Checkpoints taken of it (see [`resume`]).
    checkpoints: Checkpoints,
    /// Interrupted where it can be resumed: dropping it keeps the checkpoint, its record and
    /// the lock file (unlocked), and removes only the working subvolume.
    keep: bool,
}

fn open_dir_nofollow(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name.as_bytes(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
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

/// Test hook: in debug builds only, `SUBVOL_TEST_PAUSE_AT=<step>` stops the process (SIGSTOP)
/// at that step of the commit sequence, so a test can kill it there. Release builds never look.
fn pause_at(step: &str) {
    if cfg!(debug_assertions)
        && std::env::var_os("SUBVOL_TEST_PAUSE_AT").is_some_and(|s| s.as_bytes() == step.as_bytes())
    {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}

/// Creates `name` in `dir` as a regular file that is already locked when it appears.
fn create_locked(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive)?;
    // Linking the open file itself needs CAP_DAC_READ_SEARCH; through /proc it needs /proc.
    if rfs::linkat(&fd, "", dir, name.as_bytes(), AtFlags::EMPTY_PATH).is_err() {
        rfs::linkat(
            rfs::CWD,
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            dir,
            name.as_bytes(),
            AtFlags::SYMLINK_FOLLOW,
        )?;
    }
    Ok(fd)
}

/// True when `name` in `dir` still is the inode `fd` is open on.
fn same_inode(dir: BorrowedFd<'_>, name: &OsStr, fd: &OwnedFd) -> bool {
    match (
        rfs::statat(dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW),
        rfs::fstat(fd),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

impl Staging {
    /// Creates the staging subvolume for the stream's subvolume `path` (empty, or a writable
    /// snapshot of `parent`) with its lock taken before its name is visible, and returns it
    /// with its root handle.
    ///
    /// # Errors
    /// A name that is not a plain name, an existing subvolume of that name, ioctl errors.
    pub(super) fn create(
        dest: &Dest,
        path: &[u8],
        uuid: Uuid,
        ctransid: u64,
        parent: Option<(Uuid, BorrowedFd<'_>)>,
    ) -> Result<(Staging, OwnedFd), Failure> {
        let name = match super::beneath::split(path)? {
            Some((None, n)) if !is_staging_name(n) => OsStr::from_bytes(n).to_os_string(),
            _ => {
                return Err(Failure::Refused(format!(
                    "invalid subvolume name '{}'",
                    show(path)
                )));
            }
        };
        if rfs::statat(dest.dir(), name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(Failure::Refused(format!(
                "{} already exists in {}; refusing to overwrite it",
                show(name.as_bytes()),
                dest.path().display()
            )));
        }
        let staging_name =
            OsString::from(format!("{PREFIX}{}.{:016x}", std::process::id(), nonce()));
        let mut lock_name = staging_name.clone();
        lock_name.push(LOCK_SUFFIX);
        let dest_dir = dest.dir().try_clone_to_owned().map_err(|e| Failure::Os {
            op: "dup",
            source: e,
        })?;
        let lock = create_locked(dest.dir(), &lock_name).map_err(os("create staging lock file"))?;
        // From here on, Drop removes the staging subvolume and the lock file on any failure.
        let staging = Staging {
            dest_dir,
            staging_name,
            lock_name,
            lock,
            root: None,
            name,
            uuid,
            ctransid,
            parent_uuid: parent.map(|(u, _)| u),
            state: State::Writing,
            checkpoints: Checkpoints {
                seq: 0,
                current: None,
                started: 0,
            },
            keep: false,
        };
        match parent {
            Some((_, fd)) => {
                subvol_ioctl::snapshot_create(dest.dir(), fd, &staging.staging_name, false)?;
            }
            None => subvol_ioctl::subvol_create(dest.dir(), &staging.staging_name)?,
        }
        let root = open_dir_nofollow(&staging.dest_dir, &staging.staging_name)
            .map_err(os("open staging subvolume"))?;
        // Also lock the root, so that receivers that predate lock files leave it alone.
        rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive)
            .map_err(os("lock staging subvolume"))?;
        Ok((staging, root))
    }

    /// Takes up the interrupted receive `inc` (see [`resume::adopt`]).
    ///
    /// # Errors
    /// It is in use, its checkpoint changed, ioctl errors.
    pub(super) fn adopt(
        dest: &Dest,
        inc: &resume::Incomplete,
    ) -> Result<(Staging, OwnedFd), crate::Error> {
        let (lock, staging_name, root, checkpoints) = resume::adopt(dest, inc)?;
        let mut lock_name = staging_name.clone();
        lock_name.push(LOCK_SUFFIX);
        let dest_dir = dest
            .dir()
            .try_clone_to_owned()
            .map_err(|e| RecvError::Dest {
                dest: dest.path().to_path_buf(),
                reason: "dup".into(),
                source: Some(e),
            })?;
        let staging = Staging {
            dest_dir,
            staging_name,
            lock_name,
            lock,
            root: None,
            name: OsString::from(&inc.name),
            uuid: inc.uuid,
            ctransid: inc.ctransid,
            parent_uuid: inc.parent_uuid,
            state: State::Writing,
            checkpoints,
            keep: false,
        };
        Ok((staging, root))
    }

    /// Takes a checkpoint of the subvolume being received (root `root`), valid for `state`.
    ///
    /// # Errors
    /// ioctl and I/O errors.
    pub(super) fn checkpoint(
        &mut self,
        dest: &Dest,
        root: BorrowedFd<'_>,
        state: crate::pipeline::ResumeState,
    ) -> Result<(), crate::Error> {
        resume::checkpoint(
            dest,
            &self.staging_name,
            root,
            &mut self.checkpoints,
            &self.name,
            self.uuid,
            self.ctransid,
            self.parent_uuid,
            state,
        )
    }

    /// Keeps what a resume needs when this is dropped, if a checkpoint was taken. True if so.
    pub(super) fn keep_for_resume(&mut self) -> bool {
        self.keep = self.state == State::Writing && self.checkpoints.current.is_some();
        self.keep
    }

    /// The final name.
    pub(super) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The sender's UUID of the subvolume.
    pub(super) fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The root of a sealed subvolume.
    pub(super) fn sealed_root(&self) -> Option<BorrowedFd<'_>> {
        self.root.as_ref().map(AsFd::as_fd)
    }

    /// First commit steps, once the subvolume's stream ended: sets the received UUID and makes
    /// the subvolume read-only, still under its staging name and lock. `root` is its root.
    ///
    /// # Errors
    /// ioctl errors.
    pub(super) fn seal(&mut self, root: OwnedFd) -> Result<(), Failure> {
        subvol_ioctl::set_received_subvol(&root, &self.uuid, self.ctransid)?;
        pause_at("received");
        subvol_ioctl::subvol_set_readonly(&root, true)?;
        pause_at("readonly");
        self.root = Some(root);
        self.state = State::Sealed;
        Ok(())
    }

    /// Last commit step: renames the sealed subvolume to its final name (never over an
    /// existing one) in `dest`. The lock file goes when this value is dropped.
    ///
    /// # Errors
    /// A subvolume that is not sealed, rename errors.
    pub(super) fn commit(&mut self, dest: &Dest) -> Result<Received, Failure> {
        if self.state != State::Sealed {
            return Err(Failure::Bug("commit of a subvolume that is not sealed"));
        }
        rfs::renameat_with(
            &self.dest_dir,
            self.staging_name.as_bytes(),
            &self.dest_dir,
            self.name.as_bytes(),
            rfs::RenameFlags::NOREPLACE,
        )
        .map_err(os("rename staging subvolume to its final name"))?;
        self.state = State::Committed;
        pause_at("renamed");
        Ok(Received {
            name: self.name.clone(),
            path: dest.path().join(&self.name),
            uuid: self.uuid,
            ctransid: self.ctransid,
            parent_uuid: self.parent_uuid,
        })
    }

    /// Takes a committed subvolume back under its staging name (a later subvolume of the same
    /// input failed to commit), so that dropping it removes it.
    pub(super) fn uncommit(&mut self) {
        if self.state == State::Committed
            && rfs::renameat_with(
                &self.dest_dir,
                self.name.as_bytes(),
                &self.dest_dir,
                self.staging_name.as_bytes(),
                rfs::RenameFlags::NOREPLACE,
            )
            .is_ok()
        {
            self.state = State::Sealed;
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.root = None;
        if self.keep {
            // The checkpoint, its record and the lock file stay; the lock goes with `lock`.
            let _ = subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name);
            return;
        }
        // The record first: no record may name a checkpoint that is gone.
        let _ = rfs::unlinkat(
            &self.dest_dir,
            resume::record_name(&self.staging_name).as_bytes(),
            AtFlags::empty(),
        );
        if let Some(ckpt) = self.checkpoints.current.take() {
            let _ = subvol_ioctl::subvol_destroy(&self.dest_dir, &ckpt);
        }
        if self.state != State::Committed
            && subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name).is_err()
        {
            // Sealed (read-only): ours, under our lock; clear the flag and try again.
            if let Ok(fd) = open_dir_nofollow(&self.dest_dir, &self.staging_name) {
                let _ = subvol_ioctl::subvol_set_readonly(&fd, false);
            }
            let _ = subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name);
        }
        // Only now that the staging name is gone; the lock is released when `lock` closes.
        if same_inode(self.dest_dir.as_fd(), &self.lock_name, &self.lock) {
            let _ = rfs::unlinkat(&self.dest_dir, self.lock_name.as_bytes(), AtFlags::empty());
        }
    }
}

/// Deletes staging subvolumes in DEST whose receiver is gone, and their lock files.
pub(super) fn remove_stale(
    dest: &Dest,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(), RecvError> {
    let entries = std::fs::read_dir(dest.path()).map_err(|e| RecvError::Dest {
        dest: dest.path().to_path_buf(),
        reason: "cannot list".into(),
        source: Some(e),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if !is_staging_name(bytes) || resume::owner_of(bytes).is_some() {
            continue; // a checkpoint or record: removed with its staging subvolume
        }
        let removed = match bytes.strip_suffix(LOCK_SUFFIX.as_bytes()) {
            Some(subvol) => remove_locked(dest, &name, OsStr::from_bytes(subvol)),
            None => remove_unlocked(dest, &name),
        }
        .map_err(|e| RecvError::Dest {
            dest: dest.path().to_path_buf(),
            reason: format!(
                "cannot remove stale staging subvolume {}",
                show(name.as_bytes())
            ),
            source: Some(e),
        })?;
        if let Some(subvol) = removed {
            on_event(Event::StaleRemoved(&subvol));
        }
    }
    Ok(())
}

/// Lock file `lock_name` of staging subvolume `subvol_name`: if its lock is free (its receive
/// is gone), deletes the subvolume (if still under its staging name) and the lock file.
/// Returns the subvolume's name if one was deleted.
fn remove_locked(
    dest: &Dest,
    lock_name: &OsStr,
    subvol_name: &OsStr,
) -> io::Result<Option<OsString>> {
    let Ok(lock) = rfs::openat(
        dest.dir(),
        lock_name.as_bytes(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) else {
        return Ok(None); // gone meanwhile
    };
    if !rfs::fstat(&lock)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
    {
        return Ok(None);
    }
    if rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(None); // a live receive holds it
    }
    // Another cleanup may have removed and unlinked it between our open and our lock.
    if !same_inode(dest.dir(), lock_name, &lock) {
        return Ok(None);
    }
    if resume::keep_for_resume(dest, subvol_name) {
        return Ok(None); // kept for a resume (see `resume`)
    }
    let removed = remove_set(dest, subvol_name, &lock)?;
    Ok(removed.then(|| subvol_name.to_os_string()))
}

/// Deletes staging subvolume `base` with its checkpoint record and snapshots, then its lock
/// file (the caller holds `lock`, the lock file's lock). True if the subvolume was there.
pub(super) fn remove_set(dest: &Dest, base: &OsStr, lock: &OwnedFd) -> io::Result<bool> {
    match rfs::unlinkat(
        dest.dir(),
        resume::record_name(base).as_bytes(),
        AtFlags::empty(),
    ) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    for ckpt in resume::ckpts_of(dest.path(), base) {
        destroy_staging(dest, &ckpt)?;
    }
    let removed = destroy_staging(dest, base)?;
    let mut lock_name = base.to_os_string();
    lock_name.push(LOCK_SUFFIX);
    if same_inode(dest.dir(), &lock_name, lock) {
        match rfs::unlinkat(dest.dir(), lock_name.as_bytes(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// Deletes subvolume `name` (a staging name or checkpoint, whose lock the caller holds) if
/// it is there.
pub(super) fn destroy_subvol(dest: &Dest, name: &OsStr) -> io::Result<()> {
    destroy_staging(dest, name).map(|_| ())
}

/// Staging names in DEST that have a lock file.
pub(super) fn locked_bases(dest: &Dest) -> Result<Vec<OsString>, RecvError> {
    let entries = std::fs::read_dir(dest.path()).map_err(|e| RecvError::Dest {
        dest: dest.path().to_path_buf(),
        reason: "cannot list".into(),
        source: Some(e),
    })?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let base = name.as_bytes().strip_suffix(LOCK_SUFFIX.as_bytes())?;
            is_staging_name(base).then(|| OsStr::from_bytes(base).to_os_string())
        })
        .collect())
}

/// Takes the lock of staging subvolume `base` if its receive is gone: the lock file, locked.
pub(super) fn try_lock(dest: &Dest, base: &OsStr) -> Option<OwnedFd> {
    let mut lock_name = base.to_os_string();
    lock_name.push(LOCK_SUFFIX);
    let lock = rfs::openat(
        dest.dir(),
        lock_name.as_bytes(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    if !rfs::fstat(&lock)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
    {
        return None;
    }
    rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockExclusive).ok()?;
    same_inode(dest.dir(), &lock_name, &lock).then_some(lock)
}

/// A staging subvolume without a lock file (left by a receiver that predates lock files):
/// deleted if its root's lock is free and it still has no lock file.
fn remove_unlocked(dest: &Dest, name: &OsStr) -> io::Result<Option<OsString>> {
    let Ok(root) = open_dir_nofollow(dest.dir(), name) else {
        return Ok(None);
    };
    let mut lock_name = name.to_os_string();
    lock_name.push(LOCK_SUFFIX);
    // A lock file appears before its staging subvolume and goes after its name: if there is
    // none after we opened the subvolume, while the name still shows it afterwards, it never
    // had one (and the root's lock, which the old receivers hold, is not touched otherwise).
    if rfs::statat(dest.dir(), lock_name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).is_ok()
        || rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive).is_err()
        || !same_inode(dest.dir(), name, &root)
    {
        return Ok(None);
    }
    drop(root);
    Ok(destroy_staging(dest, name)?.then(|| name.to_os_string()))
}

/// Deletes the staging subvolume `name` (the caller holds its lock), clearing its read-only
/// flag first if it was sealed. False if there is no subvolume under that name.
fn destroy_staging(dest: &Dest, name: &OsStr) -> io::Result<bool> {
    let Ok(root) = open_dir_nofollow(dest.dir(), name) else {
        return Ok(false);
    };
    // Only a subvolume's root under a staging name, which the caller's lock makes ours.
    if !is_staging_name(name.as_bytes())
        || !rfs::fstat(&root).is_ok_and(|st| st.st_ino == subvol_ioctl::FIRST_FREE_OBJECTID)
        || subvol_ioctl::subvol_id(&root).is_err()
    {
        return Ok(false);
    }
    if subvol_ioctl::subvol_get_flags(&root).is_ok_and(|f| f & subvol_ioctl::SUBVOL_RDONLY != 0) {
        subvol_ioctl::subvol_set_readonly(&root, false)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    }
    drop(root);
    match subvol_ioctl::subvol_destroy(dest.dir(), name) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == rustix::io::Errno::NOENT.raw_os_error() => Ok(false),
        Err(e) => Err(io::Error::from_raw_os_error(e.errno())),
    }
}
