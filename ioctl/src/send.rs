//! `BTRFS_IOC_SEND`.

use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::sys;

/// Do not send file data: write commands carry only offsets and lengths
/// (`BTRFS_SEND_FLAG_NO_FILE_DATA`).
pub const SEND_FLAG_NO_FILE_DATA: u64 = 0x1;
/// Do not write the stream header (`BTRFS_SEND_FLAG_OMIT_STREAM_HEADER`),
/// for concatenating several subvolumes into one stream.
pub const SEND_FLAG_OMIT_STREAM_HEADER: u64 = 0x2;
/// Do not write the END command (`BTRFS_SEND_FLAG_OMIT_END_CMD`).
pub const SEND_FLAG_OMIT_END_CMD: u64 = 0x4;
/// [`SendArgs::version`] is valid (`BTRFS_SEND_FLAG_VERSION`); without it
/// the kernel produces protocol version 1.
pub const SEND_FLAG_VERSION: u64 = 0x8;
/// Send compressed extents as ENCODED_WRITE commands
/// (`BTRFS_SEND_FLAG_COMPRESSED`; needs protocol version 2 or later).
pub const SEND_FLAG_COMPRESSED: u64 = 0x10;

const OP_SEND: &str = "BTRFS_IOC_SEND";

/// Arguments of [`send`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SendArgs<'a> {
    /// Id of the parent subvolume for an incremental send, 0 for a full send.
    pub parent_root: u64,
    /// Ids of subvolumes the kernel may reference in CLONE commands.
    pub clone_sources: &'a [u64],
    /// `SEND_FLAG_*` bits.
    pub flags: u64,
    /// Protocol version; only used with [`SEND_FLAG_VERSION`] (0 = default).
    pub version: u32,
}

/// Runs `BTRFS_IOC_SEND` on the read-only subvolume containing `subvol`,
/// writing the stream to `out`.
///
/// The kernel writes the whole stream synchronously from inside this call,
/// so when `out` is a pipe another thread must drain it concurrently, or the
/// call blocks forever once the pipe is full. Needs `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// `EPERM` if the subvolume, parent or a clone source is not read-only (or
/// without privileges); `EINVAL` for bad flag combinations (e.g. compressed
/// with version 1); `EPROTO` for an unsupported version; `EOPNOTSUPP` for
/// unknown flags; `EPIPE` if the reader of `out` went away; `EAGAIN` if a
/// dedupe is running on one of the roots.
pub fn send(subvol: impl AsFd, out: impl AsFd, args: &SendArgs<'_>) -> Result<()> {
    sys::send(
        subvol.as_fd(),
        out.as_fd(),
        args.clone_sources,
        args.parent_root,
        args.flags,
        args.version,
    )
    .map_err(|e| Error::sys(OP_SEND, e))
}
