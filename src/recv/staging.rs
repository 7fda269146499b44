//! The staging subvolume: its name (`.subvol-recv-staging.<pid>.<nonce>` in DEST), its lock
//! (an exclusive `flock` on its root directory while it is written), the commit sequence
//! (received UUID, read-only, final name) and the removal of stale ones left by killed receives.

use super::dest::Dest;
use super::{Event, Failure, Received, RecvError, os, show};
use crate::stream::Uuid;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Name prefix of staging subvolumes inside DEST.
pub(super) const PREFIX: &str = ".subvol-recv-staging.";

/// A subvolume being received under its staging name. Dropping it before [`Staging::commit`]
/// removes it (the caller closes its handles into it first).
pub(super) struct Staging {
    dest_dir: OwnedFd,
    staging_name: OsString,
    name: OsString,
    uuid: Uuid,
    ctransid: u64,
    committed: bool,
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

impl Staging {
    /// Creates the staging subvolume for the stream's subvolume `path` (empty, or a writable
    /// snapshot of `parent`), locks it, and returns it with its locked root handle.
    ///
    /// # Errors
    /// A name that is not a plain name, an existing subvolume of that name, ioctl errors.
    pub(super) fn create(
        dest: &Dest,
        path: &[u8],
        uuid: Uuid,
        ctransid: u64,
        parent: Option<(Uuid, &OwnedFd)>,
    ) -> Result<(Staging, OwnedFd), Failure> {
        let name = match super::beneath::split(path)? {
            Some((None, n)) if !n.starts_with(PREFIX.as_bytes()) => {
                OsStr::from_bytes(n).to_os_string()
            }
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
                name.to_string_lossy(),
                dest.path().display()
            )));
        }
        let staging_name =
            OsString::from(format!("{PREFIX}{}.{:016x}", std::process::id(), nonce()));
        match parent {
            Some((_, fd)) => {
                subvol_ioctl::snapshot_create(dest.dir(), fd, &staging_name, false)?;
            }
            None => subvol_ioctl::subvol_create(dest.dir(), &staging_name)?,
        }
        let dest_dir = dest.dir().try_clone_to_owned().map_err(|e| Failure::Os {
            op: "dup",
            source: e,
        })?;
        // From here on, Drop removes the staging subvolume on any failure.
        let staging = Staging {
            dest_dir,
            staging_name,
            name,
            uuid,
            ctransid,
            committed: false,
        };
        let root = open_dir_nofollow(&staging.dest_dir, &staging.staging_name)
            .map_err(os("open staging subvolume"))?;
        rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive)
            .map_err(os("lock staging subvolume"))?;
        Ok((staging, root))
    }

    /// The final name.
    pub(super) fn name(&self) -> &OsStr {
        &self.name
    }

    /// Sets the received UUID, makes the subvolume read-only and renames it to its final name
    /// (never over an existing one) in `dest`. `root` is its locked root handle, released
    /// afterwards.
    ///
    /// # Errors
    /// ioctl or rename errors; the staging subvolume is then removed.
    pub(super) fn commit(
        mut self,
        root: OwnedFd,
        dest: &Dest,
        parent_uuid: Option<Uuid>,
    ) -> Result<Received, Failure> {
        let result = (|| {
            subvol_ioctl::set_received_subvol(&root, &self.uuid, self.ctransid)?;
            subvol_ioctl::subvol_set_readonly(&root, true)?;
            rfs::renameat_with(
                &self.dest_dir,
                self.staging_name.as_bytes(),
                &self.dest_dir,
                self.name.as_bytes(),
                rfs::RenameFlags::NOREPLACE,
            )
            .map_err(os("rename staging subvolume to its final name"))
        })();
        drop(root);
        result?;
        self.committed = true;
        Ok(Received {
            name: self.name.clone(),
            path: dest.path().join(&self.name),
            uuid: self.uuid,
            ctransid: self.ctransid,
            parent_uuid,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name).is_err() {
            // A failure after the read-only flag was set: clear it and try again.
            if let Ok(fd) = open_dir_nofollow(&self.dest_dir, &self.staging_name) {
                let _ = subvol_ioctl::subvol_set_readonly(&fd, false);
            }
            let _ = subvol_ioctl::subvol_destroy(&self.dest_dir, &self.staging_name);
        }
    }
}

/// Deletes staging subvolumes in DEST whose receiver is gone (their lock is free).
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
        if !name.as_bytes().starts_with(PREFIX.as_bytes()) {
            continue;
        }
        let Ok(fd) = open_dir_nofollow(dest.dir(), &name) else {
            continue;
        };
        if rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live receive owns it
        }
        let _ = subvol_ioctl::subvol_set_readonly(&fd, false);
        drop(fd);
        subvol_ioctl::subvol_destroy(dest.dir(), &name).map_err(|e| RecvError::Dest {
            dest: dest.path().to_path_buf(),
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
