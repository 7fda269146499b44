//! The destination directory: opened once, checked to be on btrfs; the mount that shows its
//! file system (found lazily, for subvolumes looked up by UUID); subvolumes found by UUID.

use super::beneath::{self, is_within};
use super::staging::is_staging_name;
use super::{Failure, RecvError, mounts, os, show};
use crate::stream::Uuid;
use rustix::fs::{self as rfs, Mode, OFlags};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// The destination directory and its file system.
pub(super) struct Dest {
    path: PathBuf,
    dir: OwnedFd,
    root_mount: Option<PathBuf>,
    mount: Option<(OwnedFd, Vec<u8>)>,
}

impl Dest {
    /// Opens `dest` (canonicalized), which must be a directory on btrfs. `root_mount` is the
    /// mount point of its file system (None: found in mountinfo when needed).
    pub(super) fn open(dest: &Path, root_mount: Option<PathBuf>) -> Result<Dest, RecvError> {
        let fail = |reason: &str, e: Option<io::Error>| RecvError::Dest {
            dest: dest.to_path_buf(),
            reason: reason.to_string(),
            source: e,
        };
        let path = std::fs::canonicalize(dest).map_err(|e| fail("cannot resolve", Some(e)))?;
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
            root_mount,
            mount: None,
        })
    }

    /// DEST, canonical.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// DEST's directory handle.
    pub(super) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
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
            .ok_or_else(|| Failure::NoMount {
                dest: self.path.clone(),
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
            None => Err(Failure::Bug("mount lookup failed")),
        }
    }

    /// Finds a committed subvolume on DEST's file system: read-only, and neither a staging
    /// subvolume nor inside one. `received` picks by received UUID, else by own UUID.
    fn find_committed(&self, uuid: &Uuid, received: bool) -> Result<Option<u64>, Failure> {
        let all = subvol_ioctl::list_subvolumes(&self.dir)?;
        for e in all.iter().filter(|e| {
            e.readonly
                && if received {
                    e.received_uuid == *uuid
                } else {
                    e.uuid == *uuid
                }
        }) {
            // Being deleted meanwhile: not a candidate.
            let Ok(path) = subvol_ioctl::subvol_path(&self.dir, e.id) else {
                continue;
            };
            if !path.split(|&b| b == b'/').any(is_staging_name) {
                return Ok(Some(e.id));
            }
        }
        Ok(None)
    }

    /// Finds a committed subvolume on DEST's file system by received UUID, then (only if
    /// `allow_own_uuid`) by its own UUID, and opens its root. Staging subvolumes, subvolumes
    /// inside them and read-write subvolumes are never found.
    ///
    /// # Errors
    /// [`Failure::MissingSubvolume`] if none; [`Failure::Refused`] if only one with that own
    /// UUID exists and `allow_own_uuid` is false; lookup and open errors.
    pub(super) fn open_subvol_by_uuid(
        &mut self,
        uuid: &Uuid,
        what: &'static str,
        allow_own_uuid: bool,
    ) -> Result<OwnedFd, Failure> {
        let id = match self.find_committed(uuid, true)? {
            Some(id) => id,
            None => match self.find_committed(uuid, false)? {
                Some(id) if allow_own_uuid => id,
                Some(_) => {
                    return Err(Failure::Refused(format!(
                        "{what} subvolume {uuid} was not received from this stream's sender \
                         (a clone may read only from the new subvolume, its parent and \
                         subvolumes received from the same sender; --clone-from-any allows more)"
                    )));
                }
                None => return Err(Failure::MissingSubvolume { what, uuid: *uuid }),
            },
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
        if subvol_ioctl::subvol_id(&fd)? != id || !subvol_ioctl::subvol_info(&fd)?.is_readonly() {
            return Err(Failure::Refused(format!(
                "{what} subvolume {uuid} changed while opening it"
            )));
        }
        Ok(fd)
    }
}
