//! Safe wrappers around the btrfs (and a few generic VFS) ioctls that
//! `subvol` needs: subvolume creation, snapshots, deletion, read-only flag,
//! subvolume information, received-UUID bookkeeping, UUID and root-tree
//! lookups, `BTRFS_IOC_SEND`, reflink clone/dedupe, encoded (compressed)
//! reads and writes, fs-verity and filesystem sync.
//!
//! # Safety
//!
//! This crate is the only place in the project that contains `unsafe` code,
//! and all of it lives in one private module (`sys`): `#[repr(C)]` argument
//! structures whose sizes and field offsets are checked at compile time
//! against the kernel headers, ioctl request numbers checked by unit tests,
//! and one small function per ioctl with a `// SAFETY:` justification.
//! Every public function is safe, takes file descriptors as
//! [`AsFd`](std::os::fd::AsFd) (so they are borrowed, valid and open for the
//! whole call), and builds any pointer the kernel dereferences from a live
//! Rust borrow.
//!
//! Only 64-bit Linux is supported (the structure layouts differ on 32-bit
//! targets).
//!
//! # Errors
//!
//! Every function returns [`Result`]; [`Error`] carries the ioctl name and
//! the errno (see [`Error::errno`]). Results parsed from kernel buffers are
//! bounds-checked and reported as [`Error::Malformed`] rather than panicking.
//!
//! # Privileges
//!
//! `TREE_SEARCH`-based functions ([`find_subvol_by_uuid`],
//! [`find_subvol_by_received_uuid`], [`subvol_path`], [`list_subvolumes`]),
//! [`ino_lookup`] for objects other than 256, [`send`], [`encoded_read`],
//! [`encoded_write`] and [`subvol_destroy_by_id`] need `CAP_SYS_ADMIN`.
//! [`subvol_info`] and [`subvol_id`] do not.
//!
//! # Example
//!
//! ```no_run
//! use std::fs::File;
//! use std::ffi::OsStr;
//!
//! # fn main() -> Result<(), subvol_ioctl::Error> {
//! let parent = File::open("/mnt/pool").expect("open");
//! subvol_ioctl::subvol_create(&parent, OsStr::new("data"))?;
//! let data = File::open("/mnt/pool/data").expect("open");
//! subvol_ioctl::snapshot_create(&parent, &data, OsStr::new("data.snap"), true)?;
//! let info = subvol_ioctl::subvol_info(&data)?;
//! println!("subvolume {} uuid {:02x?}", info.id, info.uuid);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
// All unsafe code is in `sys`, which opts back in with `#![allow(unsafe_code)]`.
#![deny(unsafe_code)]

mod error;
mod file;
mod fsinfo;
mod lookup;
mod search;
mod send;
mod subvol;
mod sys;
mod types;

pub use error::{Error, Result};
pub use file::{
    COMPRESSION_LZO_4K, COMPRESSION_LZO_8K, COMPRESSION_LZO_16K, COMPRESSION_LZO_32K,
    COMPRESSION_LZO_64K, COMPRESSION_NONE, COMPRESSION_ZLIB, COMPRESSION_ZSTD, EncodedRead,
    EncodedWrite, FS_VERITY_HASH_ALG_SHA256, FS_VERITY_HASH_ALG_SHA512, clone_file, clone_range,
    dedupe_range, enable_verity, encoded_read, encoded_write, fs_sync,
};
pub use fsinfo::{BTRFS_SUPER_MAGIC, is_btrfs, is_subvol_root};
pub use lookup::{
    RootEntry, find_subvol_by_received_uuid, find_subvol_by_uuid, ino_lookup, list_subvolumes,
    subvol_id, subvol_path,
};
pub use send::{
    SEND_FLAG_COMPRESSED, SEND_FLAG_NO_FILE_DATA, SEND_FLAG_OMIT_END_CMD,
    SEND_FLAG_OMIT_STREAM_HEADER, SEND_FLAG_VERSION, SendArgs, send,
};
pub use subvol::{
    ReceivedResult, SUBVOL_RDONLY, SubvolInfo, set_received_subvol, snapshot_create, subvol_create,
    subvol_destroy, subvol_destroy_by_id, subvol_get_flags, subvol_info, subvol_set_flags,
    subvol_set_readonly,
};
pub use types::{ParseUuidError, Timespec, Uuid};

impl Timespec {
    fn from_sys(t: sys::IoctlTimespec) -> Self {
        Timespec {
            sec: t.sec.cast_signed(),
            nsec: t.nsec,
        }
    }
}

/// Object id of the top-level subvolume (`BTRFS_FS_TREE_OBJECTID`).
pub const FS_TREE_OBJECTID: u64 = 5;
/// Lowest subvolume id / inode number of a subvolume's root directory
/// (`BTRFS_FIRST_FREE_OBJECTID`).
pub const FIRST_FREE_OBJECTID: u64 = 256;
/// Highest id a subvolume can have (`BTRFS_LAST_FREE_OBJECTID`, `-256ULL`).
pub const LAST_FREE_OBJECTID: u64 = 0u64.wrapping_sub(256);
/// The read-only bit of the *on-disk* root item flags, as found in
/// [`SubvolInfo::flags`] and [`RootEntry::flags`] (`BTRFS_ROOT_SUBVOL_RDONLY`).
/// Not to be confused with [`SUBVOL_RDONLY`], the ioctl flag.
pub const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;
