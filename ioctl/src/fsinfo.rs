//! What file system an open file is on, and whether a directory is a subvolume root: the one
//! place that knows the btrfs magic number and the subvolume root inode.

use std::os::fd::AsFd;

use crate::FIRST_FREE_OBJECTID;
use crate::error::{Error, Result};

/// `BTRFS_SUPER_MAGIC`: `statfs.f_type` of a btrfs file system.
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// True when `fd` is on a btrfs file system (`fstatfs`).
///
/// # Errors
///
/// `fstatfs` fails (`EBADF`, `EIO`).
pub fn is_btrfs(fd: impl AsFd) -> Result<bool> {
    let st = nix::sys::statfs::fstatfs(fd.as_fd()).map_err(|e| Error::sys("fstatfs", e))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // f_type's width varies
    let magic = st.filesystem_type().0 as i64;
    Ok(magic == BTRFS_SUPER_MAGIC)
}

/// True when `fd` is the root directory of a btrfs subvolume: a directory with inode 256 on
/// btrfs.
///
/// # Errors
///
/// `fstat` or `fstatfs` fails.
pub fn is_subvol_root(fd: impl AsFd) -> Result<bool> {
    let fd = fd.as_fd();
    let st = nix::sys::stat::fstat(fd).map_err(|e| Error::sys("fstat", e))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Ok(is_dir && st.st_ino == FIRST_FREE_OBJECTID && is_btrfs(fd)?)
}
