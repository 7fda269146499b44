//! Cached handles of the subvolume being received: the last parent directory opened and the
//! regular file being written. Kernel streams touch one directory and one file many times in a
//! row, so one entry each saves most `openat2` calls.

use super::Failure;
use super::beneath::{self, is_within};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A one-entry cache of an open directory handle, keyed by stream path.
#[derive(Default)]
pub(super) struct DirCache {
    key: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl DirCache {
    /// The directory `rel` beneath `root` (`root` itself for None), opened without following
    /// symlinks.
    pub(super) fn get<'a>(
        &'a mut self,
        root: BorrowedFd<'a>,
        rel: Option<&[u8]>,
    ) -> Result<BorrowedFd<'a>, Failure> {
        let Some(rel) = rel else { return Ok(root) };
        if self.fd.is_none() || self.key != rel {
            self.fd = Some(
                beneath::open_dir(root, rel).map_err(super::dir_err("open parent directory"))?,
            );
            self.key.clear();
            self.key.extend_from_slice(rel);
        }
        self.fd
            .as_ref()
            .map(AsFd::as_fd)
            .ok_or(Failure::Bug("directory cache empty"))
    }

    /// Drops the handle if it is `p` or below it (`p` was removed or moved).
    pub(super) fn forget_within(&mut self, p: &[u8]) {
        if self.fd.is_some() && is_within(&self.key, p) {
            self.fd = None;
        }
    }
}

/// The open regular file being written, keyed by its current stream path.
#[derive(Default)]
pub(super) struct FileCache {
    key: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl FileCache {
    pub(super) fn hit(&self, path: &[u8]) -> Option<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .filter(|_| self.key == path)
            .map(AsFd::as_fd)
    }

    pub(super) fn set(&mut self, path: &[u8], fd: OwnedFd) {
        self.key.clear();
        self.key.extend_from_slice(path);
        self.fd = Some(fd);
    }

    /// Follows a rename of the file (or a directory above it); drops the handle if something
    /// was moved over it.
    pub(super) fn renamed(&mut self, from: &[u8], to: &[u8]) {
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

    /// Drops the handle if it is `p` or below it.
    pub(super) fn removed(&mut self, p: &[u8]) {
        if is_within(&self.key, p) {
            self.fd = None;
        }
    }

    pub(super) fn clear(&mut self) {
        self.fd = None;
    }
}
