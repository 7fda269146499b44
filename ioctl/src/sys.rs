//! Kernel ABI: `#[repr(C)]` argument structures, ioctl request numbers and the
//! raw ioctl calls.
//!
//! **This is the only module in the whole project that contains `unsafe`.**
//! Every function here is safe to call: each one builds (or is handed) a
//! fully initialised argument structure whose layout matches the kernel's,
//! keeps every buffer the kernel reads or writes alive and correctly sized
//! for the duration of the call, and only passes file descriptors obtained
//! from a [`BorrowedFd`] that outlives the call. Errors are returned as raw
//! [`Errno`] values; the public wrappers add the operation name.
//!
//! Layouts follow `linux/btrfs.h`, `linux/fs.h` and `linux/fsverity.h` for
//! 64-bit Linux (x86_64, aarch64, …); sizes and field offsets are checked at
//! compile time below, request numbers by unit tests.

#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use libc::{c_int, c_ulong, iovec};
use nix::errno::Errno;
use nix::sys::ioctl::ioctl_num_type;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!(
    "subvol-ioctl supports 64-bit Linux only (ioctl structure layouts differ elsewhere)"
);

/// Request number type of `libc::ioctl` on this target.
type Req = ioctl_num_type;

/// `BTRFS_IOCTL_MAGIC`.
const BTRFS_MAGIC: u8 = 0x94;
/// The `'f'` ioctl type used by `FS_IOC_*` (fs-verity).
const FS_MAGIC: u8 = b'f';

/// `BTRFS_SUBVOL_NAME_MAX + 1`: the name buffer of `btrfs_ioctl_vol_args_v2`.
pub(crate) const VOL_ARGS_V2_NAME_LEN: usize = 4040;
/// `BTRFS_INO_LOOKUP_PATH_MAX`: the name buffer of `btrfs_ioctl_ino_lookup_args`.
pub(crate) const INO_LOOKUP_PATH_MAX: usize = 4080;
/// `BTRFS_VOL_NAME_MAX + 1`: the name buffer of `btrfs_ioctl_get_subvol_info_args`.
pub(crate) const SUBVOL_INFO_NAME_LEN: usize = 256;
/// Size of the result buffer used with `BTRFS_IOC_TREE_SEARCH_V2` (64 KiB:
/// large enough for any item of the largest node size, bounded so that a
/// search never allocates more than this).
pub(crate) const SEARCH_V2_BUF_LEN: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------

/// `struct btrfs_ioctl_timespec` (16 bytes: the kernel struct has 4 bytes of
/// tail padding, made explicit here so the whole value is initialised).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IoctlTimespec {
    pub(crate) sec: u64,
    pub(crate) nsec: u32,
    pub(crate) pad: u32,
}

/// `struct btrfs_ioctl_vol_args_v2`. The second union (`name` / `devid` /
/// `subvolid`) is modelled as the name bytes; [`VolArgsV2::set_subvolid`]
/// stores the id in its first 8 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct VolArgsV2 {
    pub(crate) fd: i64,
    pub(crate) transid: u64,
    pub(crate) flags: u64,
    /// `{ u64 size; struct btrfs_qgroup_inherit *qgroup_inherit; }` / `u64 unused[4]`.
    /// Always zero here (no qgroup inheritance), so no pointer is ever passed.
    pub(crate) unused: [u64; 4],
    pub(crate) name: [u8; VOL_ARGS_V2_NAME_LEN],
}

impl VolArgsV2 {
    /// All-zero arguments.
    pub(crate) fn zeroed() -> Self {
        VolArgsV2 {
            fd: 0,
            transid: 0,
            flags: 0,
            unused: [0; 4],
            name: [0; VOL_ARGS_V2_NAME_LEN],
        }
    }

    /// Copies `name` into the name buffer, leaving at least one NUL after it.
    /// Returns `false` (and changes nothing) if it does not fit.
    pub(crate) fn set_name(&mut self, name: &[u8]) -> bool {
        if name.len() >= VOL_ARGS_V2_NAME_LEN {
            return false;
        }
        self.name = [0; VOL_ARGS_V2_NAME_LEN];
        self.name[..name.len()].copy_from_slice(name);
        true
    }

    /// Stores `subvolid` in the union that otherwise holds the name.
    pub(crate) fn set_subvolid(&mut self, subvolid: u64) {
        self.name = [0; VOL_ARGS_V2_NAME_LEN];
        self.name[..8].copy_from_slice(&subvolid.to_ne_bytes());
    }
}

/// `struct btrfs_ioctl_received_subvol_args`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceivedSubvolArgs {
    pub(crate) uuid: [u8; 16],
    pub(crate) stransid: u64,
    pub(crate) rtransid: u64,
    pub(crate) stime: IoctlTimespec,
    pub(crate) rtime: IoctlTimespec,
    pub(crate) flags: u64,
    pub(crate) reserved: [u64; 16],
}

/// `struct btrfs_ioctl_send_args`.
#[repr(C)]
struct SendArgs {
    send_fd: i64,
    clone_sources_count: u64,
    clone_sources: *const u64,
    parent_root: u64,
    flags: u64,
    version: u32,
    reserved: [u8; 28],
}

/// `struct btrfs_ioctl_get_subvol_info_args`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GetSubvolInfoArgs {
    pub(crate) treeid: u64,
    pub(crate) name: [u8; SUBVOL_INFO_NAME_LEN],
    pub(crate) parent_id: u64,
    pub(crate) dirid: u64,
    pub(crate) generation: u64,
    pub(crate) flags: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) parent_uuid: [u8; 16],
    pub(crate) received_uuid: [u8; 16],
    pub(crate) ctransid: u64,
    pub(crate) otransid: u64,
    pub(crate) stransid: u64,
    pub(crate) rtransid: u64,
    pub(crate) ctime: IoctlTimespec,
    pub(crate) otime: IoctlTimespec,
    pub(crate) stime: IoctlTimespec,
    pub(crate) rtime: IoctlTimespec,
    pub(crate) reserved: [u64; 8],
}

impl GetSubvolInfoArgs {
    fn zeroed() -> Self {
        GetSubvolInfoArgs {
            treeid: 0,
            name: [0; SUBVOL_INFO_NAME_LEN],
            parent_id: 0,
            dirid: 0,
            generation: 0,
            flags: 0,
            uuid: [0; 16],
            parent_uuid: [0; 16],
            received_uuid: [0; 16],
            ctransid: 0,
            otransid: 0,
            stransid: 0,
            rtransid: 0,
            ctime: IoctlTimespec::default(),
            otime: IoctlTimespec::default(),
            stime: IoctlTimespec::default(),
            rtime: IoctlTimespec::default(),
            reserved: [0; 8],
        }
    }
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct InoLookupArgs {
    pub(crate) treeid: u64,
    pub(crate) objectid: u64,
    pub(crate) name: [u8; INO_LOOKUP_PATH_MAX],
}

impl InoLookupArgs {
    /// Arguments for looking up `objectid` in tree `treeid` (0 = the tree of the fd).
    pub(crate) fn new(treeid: u64, objectid: u64) -> Self {
        InoLookupArgs {
            treeid,
            objectid,
            name: [0; INO_LOOKUP_PATH_MAX],
        }
    }
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SearchKey {
    pub(crate) tree_id: u64,
    pub(crate) min_objectid: u64,
    pub(crate) max_objectid: u64,
    pub(crate) min_offset: u64,
    pub(crate) max_offset: u64,
    pub(crate) min_transid: u64,
    pub(crate) max_transid: u64,
    pub(crate) min_type: u32,
    pub(crate) max_type: u32,
    /// In: maximum number of items to return. Out: number returned.
    pub(crate) nr_items: u32,
    pub(crate) unused: u32,
    pub(crate) unused1: u64,
    pub(crate) unused2: u64,
    pub(crate) unused3: u64,
    pub(crate) unused4: u64,
}

/// Size of `struct btrfs_ioctl_search_header` (u64 transid, objectid, offset;
/// u32 type, len), which precedes every item in a search result buffer.
pub(crate) const SEARCH_HEADER_LEN: usize = 32;

/// The fixed part of `struct btrfs_ioctl_search_args_v2` (its size is what
/// the ioctl number encodes).
#[repr(C)]
#[derive(Clone, Copy)]
struct SearchArgsV2Head {
    key: SearchKey,
    buf_size: u64,
}

/// `struct btrfs_ioctl_search_args_v2` followed by its result buffer.
#[repr(C)]
pub(crate) struct SearchArgsV2 {
    head: SearchArgsV2Head,
    buf: [u8; SEARCH_V2_BUF_LEN],
}

impl SearchArgsV2 {
    /// A zeroed, heap-allocated argument block (64 KiB, too large for the stack).
    pub(crate) fn new_boxed() -> Box<Self> {
        // (`Box::new_zeroed` would do, but needs Rust 1.92 > the MSRV.)
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: `layout` has a non-zero size (checked at compile time below).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Self>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is non-null and was allocated by the global allocator
        // with the layout of `Self`, which is what `Box` requires. The memory
        // is zeroed, and `SearchArgsV2` consists only of integers and integer
        // arrays, for which the all-zero bit pattern is a valid value.
        unsafe { Box::from_raw(ptr) }
    }

    /// The search key (input and, for `nr_items`, output).
    pub(crate) fn key_mut(&mut self) -> &mut SearchKey {
        &mut self.head.key
    }

    /// The search key as returned by the kernel.
    pub(crate) fn key(&self) -> &SearchKey {
        &self.head.key
    }

    /// The result buffer: `nr_items` (search header + item data) records.
    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// `struct btrfs_ioctl_search_args` (v1). Not used for searching (the v2
/// interface with a larger buffer is), kept so its ABI is documented and
/// checked next to the other structures.
#[cfg(test)]
#[repr(C)]
struct SearchArgsV1 {
    key: SearchKey,
    buf: [u8; 4096 - size_of::<SearchKey>()],
}

/// `struct btrfs_ioctl_clone_range_args` / `struct file_clone_range`.
#[repr(C)]
struct CloneRangeArgs {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `struct file_dedupe_range` (header; the ioctl number encodes only this).
#[repr(C)]
#[derive(Clone, Copy)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
}

/// `struct file_dedupe_range_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct DedupeRangeInfo {
    dest_fd: i64,
    dest_offset: u64,
    pub(crate) bytes_deduped: u64,
    pub(crate) status: i32,
    reserved: u32,
}

/// `struct file_dedupe_range` with exactly one `info[]` element.
#[repr(C)]
struct DedupeRangeOne {
    head: DedupeRange,
    info: [DedupeRangeInfo; 1],
}

/// `struct btrfs_ioctl_encoded_io_args`.
#[repr(C)]
struct EncodedIoArgs {
    iov: *const iovec,
    iovcnt: c_ulong,
    offset: i64,
    flags: u64,
    len: u64,
    unencoded_len: u64,
    unencoded_offset: u64,
    compression: u32,
    encryption: u32,
    reserved: [u8; 64],
}

/// The metadata fields of `btrfs_ioctl_encoded_io_args` (inputs of an
/// encoded write, outputs of an encoded read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EncodedMeta {
    pub(crate) offset: i64,
    pub(crate) len: u64,
    pub(crate) unencoded_len: u64,
    pub(crate) unencoded_offset: u64,
    pub(crate) compression: u32,
    pub(crate) encryption: u32,
}

/// `struct fsverity_enable_arg`.
#[repr(C)]
struct FsverityEnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

// Sizes and offsets, checked at compile time against the kernel headers.
const _: () = {
    assert!(size_of::<IoctlTimespec>() == 16);
    assert!(size_of::<VolArgsV2>() == 4096);
    assert!(offset_of!(VolArgsV2, flags) == 16);
    assert!(offset_of!(VolArgsV2, unused) == 24);
    assert!(offset_of!(VolArgsV2, name) == 56);
    assert!(size_of::<ReceivedSubvolArgs>() == 200);
    assert!(offset_of!(ReceivedSubvolArgs, stransid) == 16);
    assert!(offset_of!(ReceivedSubvolArgs, rtransid) == 24);
    assert!(offset_of!(ReceivedSubvolArgs, stime) == 32);
    assert!(offset_of!(ReceivedSubvolArgs, rtime) == 48);
    assert!(offset_of!(ReceivedSubvolArgs, flags) == 64);
    assert!(offset_of!(ReceivedSubvolArgs, reserved) == 72);
    assert!(size_of::<SendArgs>() == 72);
    assert!(offset_of!(SendArgs, clone_sources) == 16);
    assert!(offset_of!(SendArgs, parent_root) == 24);
    assert!(offset_of!(SendArgs, flags) == 32);
    assert!(offset_of!(SendArgs, version) == 40);
    assert!(offset_of!(SendArgs, reserved) == 44);
    assert!(size_of::<GetSubvolInfoArgs>() == 504);
    assert!(offset_of!(GetSubvolInfoArgs, name) == 8);
    assert!(offset_of!(GetSubvolInfoArgs, parent_id) == 264);
    assert!(offset_of!(GetSubvolInfoArgs, flags) == 288);
    assert!(offset_of!(GetSubvolInfoArgs, uuid) == 296);
    assert!(offset_of!(GetSubvolInfoArgs, parent_uuid) == 312);
    assert!(offset_of!(GetSubvolInfoArgs, received_uuid) == 328);
    assert!(offset_of!(GetSubvolInfoArgs, ctransid) == 344);
    assert!(offset_of!(GetSubvolInfoArgs, rtransid) == 368);
    assert!(offset_of!(GetSubvolInfoArgs, ctime) == 376);
    assert!(offset_of!(GetSubvolInfoArgs, rtime) == 424);
    assert!(offset_of!(GetSubvolInfoArgs, reserved) == 440);
    assert!(size_of::<InoLookupArgs>() == 4096);
    assert!(offset_of!(InoLookupArgs, name) == 16);
    assert!(size_of::<SearchKey>() == 104);
    assert!(offset_of!(SearchKey, min_type) == 56);
    assert!(offset_of!(SearchKey, nr_items) == 64);
    assert!(offset_of!(SearchKey, unused1) == 72);
    assert!(size_of::<SearchArgsV2Head>() == 112);
    assert!(offset_of!(SearchArgsV2, buf) == 112);
    assert!(size_of::<SearchArgsV2>() == 112 + SEARCH_V2_BUF_LEN);
    assert!(size_of::<CloneRangeArgs>() == 32);
    assert!(size_of::<DedupeRange>() == 24);
    assert!(size_of::<DedupeRangeInfo>() == 32);
    assert!(offset_of!(DedupeRangeInfo, status) == 24);
    assert!(offset_of!(DedupeRangeOne, info) == 24);
    assert!(size_of::<DedupeRangeOne>() == 56);
    assert!(size_of::<EncodedIoArgs>() == 128);
    assert!(offset_of!(EncodedIoArgs, offset) == 16);
    assert!(offset_of!(EncodedIoArgs, len) == 32);
    assert!(offset_of!(EncodedIoArgs, compression) == 56);
    assert!(offset_of!(EncodedIoArgs, reserved) == 64);
    assert!(size_of::<FsverityEnableArg>() == 128);
    assert!(offset_of!(FsverityEnableArg, salt_ptr) == 16);
    assert!(offset_of!(FsverityEnableArg, sig_ptr) == 32);
};

// ---------------------------------------------------------------------------
// Request numbers
// ---------------------------------------------------------------------------

pub(crate) const IOC_SYNC: Req = nix::request_code_none!(BTRFS_MAGIC, 8);
pub(crate) const IOC_CLONE: Req = nix::request_code_write!(BTRFS_MAGIC, 9, size_of::<c_int>());
pub(crate) const IOC_CLONE_RANGE: Req =
    nix::request_code_write!(BTRFS_MAGIC, 13, size_of::<CloneRangeArgs>());
#[cfg(test)]
pub(crate) const IOC_TREE_SEARCH: Req =
    nix::request_code_readwrite!(BTRFS_MAGIC, 17, size_of::<SearchArgsV1>());
pub(crate) const IOC_TREE_SEARCH_V2: Req =
    nix::request_code_readwrite!(BTRFS_MAGIC, 17, size_of::<SearchArgsV2Head>());
pub(crate) const IOC_INO_LOOKUP: Req =
    nix::request_code_readwrite!(BTRFS_MAGIC, 18, size_of::<InoLookupArgs>());
pub(crate) const IOC_SNAP_CREATE_V2: Req =
    nix::request_code_write!(BTRFS_MAGIC, 23, size_of::<VolArgsV2>());
pub(crate) const IOC_SUBVOL_CREATE_V2: Req =
    nix::request_code_write!(BTRFS_MAGIC, 24, size_of::<VolArgsV2>());
pub(crate) const IOC_SUBVOL_GETFLAGS: Req =
    nix::request_code_read!(BTRFS_MAGIC, 25, size_of::<u64>());
pub(crate) const IOC_SUBVOL_SETFLAGS: Req =
    nix::request_code_write!(BTRFS_MAGIC, 26, size_of::<u64>());
pub(crate) const IOC_SET_RECEIVED_SUBVOL: Req =
    nix::request_code_readwrite!(BTRFS_MAGIC, 37, size_of::<ReceivedSubvolArgs>());
pub(crate) const IOC_SEND: Req = nix::request_code_write!(BTRFS_MAGIC, 38, size_of::<SendArgs>());
pub(crate) const IOC_FIDEDUPERANGE: Req =
    nix::request_code_readwrite!(BTRFS_MAGIC, 54, size_of::<DedupeRange>());
pub(crate) const IOC_GET_SUBVOL_INFO: Req =
    nix::request_code_read!(BTRFS_MAGIC, 60, size_of::<GetSubvolInfoArgs>());
pub(crate) const IOC_SNAP_DESTROY_V2: Req =
    nix::request_code_write!(BTRFS_MAGIC, 63, size_of::<VolArgsV2>());
pub(crate) const IOC_ENCODED_READ: Req =
    nix::request_code_read!(BTRFS_MAGIC, 64, size_of::<EncodedIoArgs>());
pub(crate) const IOC_ENCODED_WRITE: Req =
    nix::request_code_write!(BTRFS_MAGIC, 64, size_of::<EncodedIoArgs>());
pub(crate) const FS_IOC_ENABLE_VERITY: Req =
    nix::request_code_write!(FS_MAGIC, 133, size_of::<FsverityEnableArg>());

/// Raw ioctl entry points. Each pairs a request number with the one argument
/// type that number's size field describes; the generated functions are
/// `unsafe` and only called from the safe wrappers below.
mod raw {
    use super::*;

    nix::ioctl_none_bad!(btrfs_sync, IOC_SYNC);
    nix::ioctl_write_int_bad!(ficlone, IOC_CLONE);
    nix::ioctl_write_ptr_bad!(ficlonerange, IOC_CLONE_RANGE, CloneRangeArgs);
    nix::ioctl_readwrite_bad!(tree_search_v2, IOC_TREE_SEARCH_V2, SearchArgsV2);
    nix::ioctl_readwrite_bad!(ino_lookup, IOC_INO_LOOKUP, InoLookupArgs);
    nix::ioctl_write_ptr_bad!(snap_create_v2, IOC_SNAP_CREATE_V2, VolArgsV2);
    nix::ioctl_write_ptr_bad!(subvol_create_v2, IOC_SUBVOL_CREATE_V2, VolArgsV2);
    nix::ioctl_read_bad!(subvol_getflags, IOC_SUBVOL_GETFLAGS, u64);
    nix::ioctl_write_ptr_bad!(subvol_setflags, IOC_SUBVOL_SETFLAGS, u64);
    nix::ioctl_readwrite_bad!(
        set_received_subvol,
        IOC_SET_RECEIVED_SUBVOL,
        ReceivedSubvolArgs
    );
    nix::ioctl_write_ptr_bad!(send, IOC_SEND, SendArgs);
    nix::ioctl_readwrite_bad!(fideduperange, IOC_FIDEDUPERANGE, DedupeRangeOne);
    nix::ioctl_read_bad!(get_subvol_info, IOC_GET_SUBVOL_INFO, GetSubvolInfoArgs);
    nix::ioctl_write_ptr_bad!(snap_destroy_v2, IOC_SNAP_DESTROY_V2, VolArgsV2);
    nix::ioctl_read_bad!(encoded_read, IOC_ENCODED_READ, EncodedIoArgs);
    nix::ioctl_write_ptr_bad!(encoded_write, IOC_ENCODED_WRITE, EncodedIoArgs);
    nix::ioctl_write_ptr_bad!(fs_enable_verity, FS_IOC_ENABLE_VERITY, FsverityEnableArg);
}

/// Converts a byte count returned by the kernel (never negative on success).
fn ret_len(ret: c_int) -> usize {
    usize::try_from(ret).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Safe wrappers (crate-private)
// ---------------------------------------------------------------------------

/// `BTRFS_IOC_SYNC` on any fd of the filesystem.
pub(crate) fn btrfs_sync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: BTRFS_IOC_SYNC takes no argument; `fd` is a valid open fd for
    // the duration of the call (borrowed).
    unsafe { raw::btrfs_sync(fd.as_raw_fd()) }.map(drop)
}

/// `FICLONE` (`BTRFS_IOC_CLONE`): the argument is the source fd *value*.
pub(crate) fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: FICLONE takes an int (the source fd) by value, not a pointer;
    // both fds are borrowed and stay open for the duration of the call.
    unsafe { raw::ficlone(dst.as_raw_fd(), src.as_raw_fd()) }.map(drop)
}

/// `FICLONERANGE` (`BTRFS_IOC_CLONE_RANGE`) on `dst`.
pub(crate) fn ficlonerange(
    dst: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
) -> Result<(), Errno> {
    let args = CloneRangeArgs {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset,
        src_length,
        dest_offset,
    };
    // SAFETY: `args` is a fully initialised `file_clone_range` matching the
    // size encoded in the request; the kernel only reads it. `src` is a
    // borrowed fd that stays open during the call.
    unsafe { raw::ficlonerange(dst.as_raw_fd(), &args) }.map(drop)
}

/// `BTRFS_IOC_TREE_SEARCH_V2`. Sets `buf_size` to the real buffer length; on
/// success the key's `nr_items` holds the number of records in the buffer.
pub(crate) fn tree_search_v2(fd: BorrowedFd<'_>, args: &mut SearchArgsV2) -> Result<(), Errno> {
    args.head.buf_size = SEARCH_V2_BUF_LEN as u64;
    // SAFETY: `args` is a valid, exclusively borrowed `btrfs_ioctl_search_args_v2`
    // header immediately followed by `buf_size` bytes of buffer inside the same
    // allocation; the kernel writes at most `buf_size` bytes after the header.
    unsafe { raw::tree_search_v2(fd.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_INO_LOOKUP`.
pub(crate) fn ino_lookup(fd: BorrowedFd<'_>, args: &mut InoLookupArgs) -> Result<(), Errno> {
    // SAFETY: `args` is a valid, exclusively borrowed 4096-byte
    // `btrfs_ioctl_ino_lookup_args`, the size encoded in the request.
    unsafe { raw::ino_lookup(fd.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_SNAP_CREATE_V2` on the destination directory; `args.fd` must be
/// set by the caller from a borrowed fd that outlives this call.
pub(crate) fn snap_create_v2(dir: BorrowedFd<'_>, args: &VolArgsV2) -> Result<(), Errno> {
    // SAFETY: `args` is a fully initialised 4096-byte `vol_args_v2`; its
    // qgroup pointer union is zero (no pointer), its name is NUL-terminated
    // (set_name keeps a trailing NUL), and the kernel only reads it. An
    // invalid `fd` value in it yields EBADF, not memory unsafety.
    unsafe { raw::snap_create_v2(dir.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_SUBVOL_CREATE_V2` on the parent directory.
pub(crate) fn subvol_create_v2(dir: BorrowedFd<'_>, args: &VolArgsV2) -> Result<(), Errno> {
    // SAFETY: as for snap_create_v2: fully initialised, no pointers, read only.
    unsafe { raw::subvol_create_v2(dir.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_SNAP_DESTROY_V2` on the parent directory (or any fd of the fs
/// when destroying by id).
pub(crate) fn snap_destroy_v2(dir: BorrowedFd<'_>, args: &VolArgsV2) -> Result<(), Errno> {
    // SAFETY: as for snap_create_v2: fully initialised, no pointers, read only.
    unsafe { raw::snap_destroy_v2(dir.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_SUBVOL_GETFLAGS`.
pub(crate) fn subvol_getflags(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut flags: u64 = 0;
    // SAFETY: the kernel writes one u64 (the size encoded in the request)
    // into `flags`, which is a valid, exclusively borrowed u64.
    unsafe { raw::subvol_getflags(fd.as_raw_fd(), &mut flags) }?;
    Ok(flags)
}

/// `BTRFS_IOC_SUBVOL_SETFLAGS`.
pub(crate) fn subvol_setflags(fd: BorrowedFd<'_>, flags: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads one u64 from `&flags`, a valid u64.
    unsafe { raw::subvol_setflags(fd.as_raw_fd(), &flags) }.map(drop)
}

/// `BTRFS_IOC_SET_RECEIVED_SUBVOL`; on success `args.rtransid`/`args.rtime`
/// hold the kernel's values.
pub(crate) fn set_received_subvol(
    fd: BorrowedFd<'_>,
    args: &mut ReceivedSubvolArgs,
) -> Result<(), Errno> {
    // SAFETY: `args` is a valid, exclusively borrowed 200-byte
    // `received_subvol_args` without pointers; the kernel reads and writes it.
    unsafe { raw::set_received_subvol(fd.as_raw_fd(), args) }.map(drop)
}

/// `BTRFS_IOC_SEND`: writes the stream to `out` synchronously.
pub(crate) fn send(
    subvol: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    clone_sources: &[u64],
    parent_root: u64,
    flags: u64,
    version: u32,
) -> Result<(), Errno> {
    let args = SendArgs {
        send_fd: i64::from(out.as_raw_fd()),
        clone_sources_count: clone_sources.len() as u64,
        clone_sources: if clone_sources.is_empty() {
            std::ptr::null()
        } else {
            clone_sources.as_ptr()
        },
        parent_root,
        flags,
        version,
        reserved: [0; 28],
    };
    // SAFETY: `args` is fully initialised; `clone_sources` points to
    // `clone_sources_count` u64s borrowed from a live slice (or is null with
    // a count of 0), which the kernel only reads during the call. `out` is a
    // borrowed fd that stays open for the whole (synchronous) call.
    unsafe { raw::send(subvol.as_raw_fd(), &args) }.map(drop)
}

/// `FIDEDUPERANGE` with one destination, issued on `src`.
pub(crate) fn fideduperange_one(
    src: BorrowedFd<'_>,
    src_offset: u64,
    src_length: u64,
    dst: BorrowedFd<'_>,
    dest_offset: u64,
) -> Result<DedupeRangeInfo, Errno> {
    let mut args = DedupeRangeOne {
        head: DedupeRange {
            src_offset,
            src_length,
            dest_count: 1,
            reserved1: 0,
            reserved2: 0,
        },
        info: [DedupeRangeInfo {
            dest_fd: i64::from(dst.as_raw_fd()),
            dest_offset,
            bytes_deduped: 0,
            status: 0,
            reserved: 0,
        }],
    };
    // SAFETY: `args` is a 24-byte `file_dedupe_range` header followed by
    // exactly `dest_count` (1) `file_dedupe_range_info` records in one
    // exclusively borrowed allocation; the kernel reads the header and reads
    // and writes that one record. `dst` stays open during the call.
    unsafe { raw::fideduperange(src.as_raw_fd(), &mut args) }?;
    Ok(args.info[0])
}

/// `BTRFS_IOC_ENCODED_WRITE` with a single iovec covering `data`.
pub(crate) fn encoded_write(
    fd: BorrowedFd<'_>,
    data: &[u8],
    meta: &EncodedMeta,
) -> Result<usize, Errno> {
    let iov = iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let args = EncodedIoArgs {
        iov: &iov,
        iovcnt: 1,
        offset: meta.offset,
        flags: 0,
        len: meta.len,
        unencoded_len: meta.unencoded_len,
        unencoded_offset: meta.unencoded_offset,
        compression: meta.compression,
        encryption: meta.encryption,
        reserved: [0; 64],
    };
    // SAFETY: `args` is fully initialised and points to one live iovec that
    // describes the borrowed `data` slice; for a write the kernel only reads
    // through it (the `*mut` in iovec is a C API artefact). Both outlive the call.
    let ret = unsafe { raw::encoded_write(fd.as_raw_fd(), &args) }?;
    Ok(ret_len(ret))
}

/// `BTRFS_IOC_ENCODED_READ` of the extent at `offset` into `buf`; returns the
/// number of encoded bytes stored in `buf` and the extent's metadata.
pub(crate) fn encoded_read(
    fd: BorrowedFd<'_>,
    offset: i64,
    buf: &mut [u8],
) -> Result<(usize, EncodedMeta), Errno> {
    let iov = iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut args = EncodedIoArgs {
        iov: &iov,
        iovcnt: 1,
        offset,
        flags: 0,
        len: 0,
        unencoded_len: 0,
        unencoded_offset: 0,
        compression: 0,
        encryption: 0,
        reserved: [0; 64],
    };
    // SAFETY: `args` is fully initialised and exclusively borrowed; its one
    // iovec describes the exclusively borrowed `buf`, so the kernel writes at
    // most `buf.len()` bytes into memory we own (it fails with ENOBUFS if the
    // extent does not fit). All of it outlives the call.
    let ret = unsafe { raw::encoded_read(fd.as_raw_fd(), &mut args) }?;
    let meta = EncodedMeta {
        offset: args.offset,
        len: args.len,
        unencoded_len: args.unencoded_len,
        unencoded_offset: args.unencoded_offset,
        compression: args.compression,
        encryption: args.encryption,
    };
    Ok((ret_len(ret).min(buf.len()), meta))
}

/// `FS_IOC_ENABLE_VERITY` (version 1 arguments).
pub(crate) fn enable_verity(
    fd: BorrowedFd<'_>,
    hash_algorithm: u32,
    block_size: u32,
    salt: &[u8],
    sig: &[u8],
) -> Result<(), Errno> {
    // Lengths that do not fit the u32 fields are rejected by the caller; the
    // kernel caps salt at 32 bytes and the signature at 16128 bytes anyway.
    let (Ok(salt_size), Ok(sig_size)) = (u32::try_from(salt.len()), u32::try_from(sig.len()))
    else {
        return Err(Errno::EINVAL);
    };
    let args = FsverityEnableArg {
        version: 1,
        hash_algorithm,
        block_size,
        salt_size,
        salt_ptr: if salt.is_empty() {
            0
        } else {
            salt.as_ptr() as u64
        },
        sig_size,
        reserved1: 0,
        sig_ptr: if sig.is_empty() {
            0
        } else {
            sig.as_ptr() as u64
        },
        reserved2: [0; 11],
    };
    // SAFETY: `args` is fully initialised; salt_ptr/sig_ptr point to
    // `salt_size`/`sig_size` bytes of live borrowed slices (or are 0 with a
    // size of 0), which the kernel only reads during the call.
    unsafe { raw::fs_enable_verity(fd.as_raw_fd(), &args) }.map(drop)
}

/// `BTRFS_IOC_GET_SUBVOL_INFO` for the subvolume containing `fd`.
pub(crate) fn get_subvol_info(fd: BorrowedFd<'_>) -> Result<GetSubvolInfoArgs, Errno> {
    let mut args = GetSubvolInfoArgs::zeroed();
    // SAFETY: the kernel writes one 504-byte `get_subvol_info_args` (the size
    // encoded in the request) into `args`, which is valid and exclusively
    // borrowed; every bit pattern is a valid value of its integer fields.
    unsafe { raw::get_subvol_info(fd.as_raw_fd(), &mut args) }?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request numbers as printed by a C program compiled against this
    /// machine's kernel headers (see the send-stream reference, section 6).
    /// The encoding is the generic `_IOC` one (x86_64, aarch64, riscv64…);
    /// powerpc/mips/sparc use other direction bits.
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    ))]
    fn ioctl_numbers_match_kernel_headers() {
        let table: &[(&str, Req, u32)] = &[
            ("BTRFS_IOC_SYNC", IOC_SYNC, 0x9408),
            ("BTRFS_IOC_CLONE/FICLONE", IOC_CLONE, 0x40049409),
            (
                "BTRFS_IOC_CLONE_RANGE/FICLONERANGE",
                IOC_CLONE_RANGE,
                0x4020940d,
            ),
            ("BTRFS_IOC_TREE_SEARCH", IOC_TREE_SEARCH, 0xd0009411),
            ("BTRFS_IOC_TREE_SEARCH_V2", IOC_TREE_SEARCH_V2, 0xc0709411),
            ("BTRFS_IOC_INO_LOOKUP", IOC_INO_LOOKUP, 0xd0009412),
            ("BTRFS_IOC_SNAP_CREATE_V2", IOC_SNAP_CREATE_V2, 0x50009417),
            (
                "BTRFS_IOC_SUBVOL_CREATE_V2",
                IOC_SUBVOL_CREATE_V2,
                0x50009418,
            ),
            ("BTRFS_IOC_SUBVOL_GETFLAGS", IOC_SUBVOL_GETFLAGS, 0x80089419),
            ("BTRFS_IOC_SUBVOL_SETFLAGS", IOC_SUBVOL_SETFLAGS, 0x4008941a),
            (
                "BTRFS_IOC_SET_RECEIVED_SUBVOL",
                IOC_SET_RECEIVED_SUBVOL,
                0xc0c89425,
            ),
            ("BTRFS_IOC_SEND", IOC_SEND, 0x40489426),
            ("FIDEDUPERANGE", IOC_FIDEDUPERANGE, 0xc0189436),
            ("BTRFS_IOC_GET_SUBVOL_INFO", IOC_GET_SUBVOL_INFO, 0x81f8943c),
            ("BTRFS_IOC_SNAP_DESTROY_V2", IOC_SNAP_DESTROY_V2, 0x5000943f),
            ("BTRFS_IOC_ENCODED_READ", IOC_ENCODED_READ, 0x80809440),
            ("BTRFS_IOC_ENCODED_WRITE", IOC_ENCODED_WRITE, 0x40809440),
            ("FS_IOC_ENABLE_VERITY", FS_IOC_ENABLE_VERITY, 0x40806685),
        ];
        for &(name, got, want) in table {
            assert_eq!(
                i128::from(got),
                i128::from(want),
                "{name}: {got:#x} != {want:#x}"
            );
        }
    }

    #[test]
    fn struct_sizes_match_kernel_headers() {
        // Duplicates the compile-time checks so they show up in test output.
        let table: &[(&str, usize, usize)] = &[
            ("btrfs_ioctl_timespec", size_of::<IoctlTimespec>(), 16),
            ("btrfs_ioctl_vol_args_v2", size_of::<VolArgsV2>(), 4096),
            (
                "btrfs_ioctl_received_subvol_args",
                size_of::<ReceivedSubvolArgs>(),
                200,
            ),
            ("btrfs_ioctl_send_args", size_of::<SendArgs>(), 72),
            (
                "btrfs_ioctl_get_subvol_info_args",
                size_of::<GetSubvolInfoArgs>(),
                504,
            ),
            (
                "btrfs_ioctl_ino_lookup_args",
                size_of::<InoLookupArgs>(),
                4096,
            ),
            ("btrfs_ioctl_search_key", size_of::<SearchKey>(), 104),
            ("btrfs_ioctl_search_args", size_of::<SearchArgsV1>(), 4096),
            (
                "btrfs_ioctl_search_args_v2 (fixed part)",
                size_of::<SearchArgsV2Head>(),
                112,
            ),
            ("file_clone_range", size_of::<CloneRangeArgs>(), 32),
            ("file_dedupe_range", size_of::<DedupeRange>(), 24),
            ("file_dedupe_range_info", size_of::<DedupeRangeInfo>(), 32),
            (
                "btrfs_ioctl_encoded_io_args",
                size_of::<EncodedIoArgs>(),
                128,
            ),
            ("fsverity_enable_arg", size_of::<FsverityEnableArg>(), 128),
            ("btrfs_ioctl_search_header", SEARCH_HEADER_LEN, 32),
        ];
        for &(name, got, want) in table {
            assert_eq!(got, want, "sizeof(struct {name})");
        }
    }

    #[test]
    fn vol_args_name_and_subvolid() {
        let mut args = VolArgsV2::zeroed();
        assert!(args.set_name(b"abc"));
        assert_eq!(&args.name[..4], b"abc\0");
        assert!(!args.set_name(&[b'x'; VOL_ARGS_V2_NAME_LEN]));
        assert!(args.set_name(&[b'x'; VOL_ARGS_V2_NAME_LEN - 1]));
        assert_eq!(args.name[VOL_ARGS_V2_NAME_LEN - 1], 0);
        args.set_subvolid(0x0102_0304_0506_0708);
        assert_eq!(&args.name[..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert!(args.name[8..].iter().all(|&b| b == 0));
    }
}
