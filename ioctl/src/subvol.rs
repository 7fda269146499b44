//! Creating, snapshotting, deleting and flagging subvolumes; subvolume info
//! and received-UUID bookkeeping.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::sys::{self, ReceivedSubvolArgs, VolArgsV2};
use crate::{ROOT_SUBVOL_RDONLY, Timespec, Uuid};

/// `BTRFS_SUBVOL_RDONLY`: the read-only flag of [`subvol_get_flags`] /
/// [`subvol_set_flags`] and of snapshot creation.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_SUBVOL_SPEC_BY_ID`.
const SUBVOL_SPEC_BY_ID: u64 = 1 << 4;
/// `BTRFS_NAME_LEN`: the longest directory entry name btrfs accepts.
const NAME_LEN_MAX: usize = 255;

const OP_SUBVOL_CREATE: &str = "BTRFS_IOC_SUBVOL_CREATE_V2";
const OP_SNAP_CREATE: &str = "BTRFS_IOC_SNAP_CREATE_V2";
const OP_SNAP_DESTROY: &str = "BTRFS_IOC_SNAP_DESTROY_V2";
const OP_GETFLAGS: &str = "BTRFS_IOC_SUBVOL_GETFLAGS";
const OP_SETFLAGS: &str = "BTRFS_IOC_SUBVOL_SETFLAGS";
const OP_GET_SUBVOL_INFO: &str = "BTRFS_IOC_GET_SUBVOL_INFO";
const OP_SET_RECEIVED: &str = "BTRFS_IOC_SET_RECEIVED_SUBVOL";

/// Checks a single path component used as a subvolume name and returns its
/// bytes: non-empty, not `.`/`..`, no `/`, no NUL, at most 255 bytes.
fn check_name<'a>(op: &'static str, name: &'a OsStr) -> Result<&'a [u8]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(op, "empty name"));
    }
    if bytes == b"." || bytes == b".." {
        return Err(Error::invalid(op, format!("name {name:?} is not allowed")));
    }
    if bytes.contains(&b'/') {
        return Err(Error::invalid(op, format!("name {name:?} contains '/'")));
    }
    if bytes.contains(&0) {
        return Err(Error::invalid(
            op,
            format!("name {name:?} contains a NUL byte"),
        ));
    }
    if bytes.len() > NAME_LEN_MAX {
        return Err(Error::NameTooLong {
            op,
            len: bytes.len(),
            max: NAME_LEN_MAX,
        });
    }
    Ok(bytes)
}

/// Builds `vol_args_v2` holding a checked name.
fn named_args(op: &'static str, name: &OsStr) -> Result<VolArgsV2> {
    let bytes = check_name(op, name)?;
    let mut args = VolArgsV2::zeroed();
    if !args.set_name(bytes) {
        // Unreachable after check_name (255 < 4039), kept as a hard guard.
        return Err(Error::NameTooLong {
            op,
            len: bytes.len(),
            max: NAME_LEN_MAX,
        });
    }
    Ok(args)
}

/// Creates an empty subvolume `name` in the directory `parent_dir`
/// (`BTRFS_IOC_SUBVOL_CREATE_V2`).
///
/// # Errors
///
/// `EEXIST` if `name` exists; [`Error::InvalidArgument`] /
/// [`Error::NameTooLong`] for a bad name.
pub fn subvol_create(parent_dir: impl AsFd, name: &OsStr) -> Result<()> {
    let args = named_args(OP_SUBVOL_CREATE, name)?;
    sys::subvol_create_v2(parent_dir.as_fd(), &args).map_err(|e| Error::sys(OP_SUBVOL_CREATE, e))
}

/// Creates a snapshot of the subvolume whose root directory is
/// `source_subvol`, named `name` in directory `parent_dir`
/// (`BTRFS_IOC_SNAP_CREATE_V2`), read-only if `readonly`.
///
/// # Errors
///
/// `EINVAL` if `source_subvol` is not a subvolume root (inode 256), `EXDEV`
/// across filesystems, `EEXIST` if `name` exists, plus name validation errors.
pub fn snapshot_create(
    parent_dir: impl AsFd,
    source_subvol: impl AsFd,
    name: &OsStr,
    readonly: bool,
) -> Result<()> {
    let mut args = named_args(OP_SNAP_CREATE, name)?;
    let source = source_subvol.as_fd();
    args.fd = i64::from(source.as_raw_fd());
    args.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    // `source` is borrowed until the end of this function, so the fd number
    // stored in `args` stays valid during the call.
    sys::snap_create_v2(parent_dir.as_fd(), &args).map_err(|e| Error::sys(OP_SNAP_CREATE, e))
}

/// Deletes the subvolume `name` in directory `parent_dir`
/// (`BTRFS_IOC_SNAP_DESTROY_V2` by name).
///
/// # Errors
///
/// `ENOENT` if it does not exist, `EINVAL` if `name` is not a subvolume,
/// `EPERM` if it is in use by a send or is the default subvolume, `ENOTEMPTY`
/// if it contains other subvolumes.
pub fn subvol_destroy(parent_dir: impl AsFd, name: &OsStr) -> Result<()> {
    let args = named_args(OP_SNAP_DESTROY, name)?;
    sys::snap_destroy_v2(parent_dir.as_fd(), &args).map_err(|e| Error::sys(OP_SNAP_DESTROY, e))
}

/// Deletes subvolume `subvol_id` (`BTRFS_IOC_SNAP_DESTROY_V2` with
/// `BTRFS_SUBVOL_SPEC_BY_ID`); `fs_fd` is any file or directory of the
/// filesystem. Needs `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// `EINVAL` for ids below 256, `ENOENT` if the id does not exist, and the
/// errors of [`subvol_destroy`].
pub fn subvol_destroy_by_id(fs_fd: impl AsFd, subvol_id: u64) -> Result<()> {
    let mut args = VolArgsV2::zeroed();
    args.flags = SUBVOL_SPEC_BY_ID;
    args.set_subvolid(subvol_id);
    sys::snap_destroy_v2(fs_fd.as_fd(), &args).map_err(|e| Error::sys(OP_SNAP_DESTROY, e))
}

/// Returns the subvolume flags (`BTRFS_IOC_SUBVOL_GETFLAGS`) of the
/// subvolume whose root directory is `subvol`; see [`SUBVOL_RDONLY`].
///
/// # Errors
///
/// `EINVAL` if `subvol` is not a subvolume root directory.
pub fn subvol_get_flags(subvol: impl AsFd) -> Result<u64> {
    sys::subvol_getflags(subvol.as_fd()).map_err(|e| Error::sys(OP_GETFLAGS, e))
}

/// Sets the subvolume flags (`BTRFS_IOC_SUBVOL_SETFLAGS`).
///
/// # Errors
///
/// `EINVAL` if `subvol` is not a subvolume root, `EOPNOTSUPP` for unknown
/// flags, `EPERM` when making a subvolume writable while a send uses it.
pub fn subvol_set_flags(subvol: impl AsFd, flags: u64) -> Result<()> {
    sys::subvol_setflags(subvol.as_fd(), flags).map_err(|e| Error::sys(OP_SETFLAGS, e))
}

/// Makes a subvolume read-only or writable: reads the flags, changes
/// [`SUBVOL_RDONLY`], and writes them back if they changed.
///
/// # Errors
///
/// As for [`subvol_get_flags`] and [`subvol_set_flags`].
pub fn subvol_set_readonly(subvol: impl AsFd, readonly: bool) -> Result<()> {
    let fd = subvol.as_fd();
    let flags = subvol_get_flags(fd)?;
    let wanted = if readonly {
        flags | SUBVOL_RDONLY
    } else {
        flags & !SUBVOL_RDONLY
    };
    if wanted == flags {
        return Ok(());
    }
    subvol_set_flags(fd, wanted)
}

/// Information about a subvolume, from `BTRFS_IOC_GET_SUBVOL_INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubvolInfo {
    /// Subvolume (tree) id.
    pub id: u64,
    /// Name of the subvolume in its parent directory (empty for id 5).
    pub name: Vec<u8>,
    /// Id of the subvolume containing it (0 for id 5).
    pub parent_id: u64,
    /// Inode number of the directory containing it (in `parent_id`).
    pub dirid: u64,
    /// Latest transaction that changed the subvolume tree.
    pub generation: u64,
    /// On-disk root item flags; [`ROOT_SUBVOL_RDONLY`] (bit 0) means read-only.
    pub flags: u64,
    /// The subvolume's UUID.
    pub uuid: Uuid,
    /// UUID of the subvolume it is a snapshot of (zero if none).
    pub parent_uuid: Uuid,
    /// UUID of the sent subvolume it was received from (zero if none).
    pub received_uuid: Uuid,
    /// Transaction of the last change.
    pub ctransid: u64,
    /// Transaction of creation.
    pub otransid: u64,
    /// Transaction of the sent subvolume (set on receive).
    pub stransid: u64,
    /// Transaction in which it was received.
    pub rtransid: u64,
    /// Time of the last change.
    pub ctime: Timespec,
    /// Creation time.
    pub otime: Timespec,
    /// Send time (set on receive; btrfs-progs leaves it zero).
    pub stime: Timespec,
    /// Receive time.
    pub rtime: Timespec,
}

impl SubvolInfo {
    /// Whether the subvolume is read-only.
    pub fn is_readonly(&self) -> bool {
        self.flags & ROOT_SUBVOL_RDONLY != 0
    }
}

/// Returns information about the subvolume containing `fd`
/// (`BTRFS_IOC_GET_SUBVOL_INFO`; no privileges needed).
///
/// # Errors
///
/// `ENOTTY` if `fd` is not on btrfs.
pub fn subvol_info(fd: impl AsFd) -> Result<SubvolInfo> {
    let a = sys::get_subvol_info(fd.as_fd()).map_err(|e| Error::sys(OP_GET_SUBVOL_INFO, e))?;
    let name_len = a.name.iter().position(|&b| b == 0).unwrap_or(a.name.len());
    Ok(SubvolInfo {
        id: a.treeid,
        name: a.name[..name_len].to_vec(),
        parent_id: a.parent_id,
        dirid: a.dirid,
        generation: a.generation,
        flags: a.flags,
        uuid: Uuid(a.uuid),
        parent_uuid: Uuid(a.parent_uuid),
        received_uuid: Uuid(a.received_uuid),
        ctransid: a.ctransid,
        otransid: a.otransid,
        stransid: a.stransid,
        rtransid: a.rtransid,
        ctime: Timespec::from_sys(a.ctime),
        otime: Timespec::from_sys(a.otime),
        stime: Timespec::from_sys(a.stime),
        rtime: Timespec::from_sys(a.rtime),
    })
}

/// What the kernel recorded in [`set_received_subvol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedResult {
    /// Transaction in which the received UUID was set.
    pub rtransid: u64,
    /// Time at which it was set.
    pub rtime: Timespec,
}

/// Records that the subvolume whose root directory is `subvol` was received
/// from a sent subvolume with `uuid` at transaction `stransid`
/// (`BTRFS_IOC_SET_RECEIVED_SUBVOL`, with `stime` and flags zero as
/// btrfs-progs does). Must be done while the subvolume is still writable.
///
/// # Errors
///
/// `EROFS` if the subvolume is read-only, `EINVAL` if `subvol` is not a
/// subvolume root.
pub fn set_received_subvol(
    subvol: impl AsFd,
    uuid: &Uuid,
    stransid: u64,
) -> Result<ReceivedResult> {
    let mut args = ReceivedSubvolArgs {
        uuid: uuid.0,
        stransid,
        ..ReceivedSubvolArgs::default()
    };
    sys::set_received_subvol(subvol.as_fd(), &mut args)
        .map_err(|e| Error::sys(OP_SET_RECEIVED, e))?;
    Ok(ReceivedResult {
        rtransid: args.rtransid,
        rtime: Timespec::from_sys(args.rtime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_checks() {
        let op = "test";
        assert!(check_name(op, OsStr::new("ok-name")).is_ok());
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            let e = check_name(op, OsStr::new(bad)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{bad:?}: {e}");
            assert_eq!(e.errno(), libc::EINVAL);
        }
        let long = "x".repeat(256);
        let e = check_name(op, OsStr::new(&long)).unwrap_err();
        assert!(matches!(e, Error::NameTooLong { len: 256, .. }));
        assert_eq!(e.errno(), libc::ENAMETOOLONG);
        assert!(check_name(op, OsStr::new(&long[..255])).is_ok());
        // Non-UTF-8 names are fine.
        assert!(check_name(op, OsStr::from_bytes(b"\xff\xfe")).is_ok());
    }
}
