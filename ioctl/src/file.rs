//! File-level ioctls: reflink clone and dedupe, encoded (compressed) I/O,
//! fs-verity, and filesystem sync.

use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::sys::{self, EncodedMeta};

/// `BTRFS_ENCODED_IO_COMPRESSION_NONE` (only seen in encoded reads).
pub const COMPRESSION_NONE: u32 = 0;
/// `BTRFS_ENCODED_IO_COMPRESSION_ZLIB`: one zlib stream (with header).
pub const COMPRESSION_ZLIB: u32 = 1;
/// `BTRFS_ENCODED_IO_COMPRESSION_ZSTD`: one zstd frame (window ≤ 128 KiB).
pub const COMPRESSION_ZSTD: u32 = 2;
/// `BTRFS_ENCODED_IO_COMPRESSION_LZO_4K`: btrfs-framed LZO, 4 KiB sectors.
pub const COMPRESSION_LZO_4K: u32 = 3;
/// `BTRFS_ENCODED_IO_COMPRESSION_LZO_8K`.
pub const COMPRESSION_LZO_8K: u32 = 4;
/// `BTRFS_ENCODED_IO_COMPRESSION_LZO_16K`.
pub const COMPRESSION_LZO_16K: u32 = 5;
/// `BTRFS_ENCODED_IO_COMPRESSION_LZO_32K`.
pub const COMPRESSION_LZO_32K: u32 = 6;
/// `BTRFS_ENCODED_IO_COMPRESSION_LZO_64K`.
pub const COMPRESSION_LZO_64K: u32 = 7;

/// `FS_VERITY_HASH_ALG_SHA256`.
pub const FS_VERITY_HASH_ALG_SHA256: u32 = 1;
/// `FS_VERITY_HASH_ALG_SHA512`.
pub const FS_VERITY_HASH_ALG_SHA512: u32 = 2;

const OP_CLONE: &str = "FICLONE";
const OP_CLONE_RANGE: &str = "FICLONERANGE";
const OP_DEDUPE: &str = "FIDEDUPERANGE";
const OP_ENCODED_WRITE: &str = "BTRFS_IOC_ENCODED_WRITE";
const OP_ENCODED_READ: &str = "BTRFS_IOC_ENCODED_READ";
const OP_ENABLE_VERITY: &str = "FS_IOC_ENABLE_VERITY";
const OP_SYNC: &str = "BTRFS_IOC_SYNC";

/// Reflinks `len` bytes of `src` at `src_offset` into `dst` at `dst_offset`
/// (`FICLONERANGE`, = `BTRFS_IOC_CLONE_RANGE`). `len` 0 means "to the end
/// of `src`". Offsets and length must be block-aligned, except that the
/// range may end at the end of `src`.
///
/// # Errors
///
/// `EINVAL` for unaligned ranges, `EXDEV` across filesystems, `EBADF` if
/// `dst` is not open for writing.
pub fn clone_range(
    dst: impl AsFd,
    src: impl AsFd,
    src_offset: u64,
    len: u64,
    dst_offset: u64,
) -> Result<()> {
    sys::ficlonerange(dst.as_fd(), src.as_fd(), src_offset, len, dst_offset)
        .map_err(|e| Error::sys(OP_CLONE_RANGE, e))
}

/// Reflinks the whole of `src` into `dst` (`FICLONE`, = `BTRFS_IOC_CLONE`).
///
/// # Errors
///
/// As for [`clone_range`].
pub fn clone_file(dst: impl AsFd, src: impl AsFd) -> Result<()> {
    sys::ficlone(dst.as_fd(), src.as_fd()).map_err(|e| Error::sys(OP_CLONE, e))
}

/// Shares the extents of `dst` at `dst_offset` with those of `src` at
/// `src_offset` for `len` bytes if the data is identical (`FIDEDUPERANGE`
/// with one destination). Returns the number of bytes deduplicated (the
/// kernel may do less than `len`, e.g. at most 16 MiB per call).
///
/// # Errors
///
/// [`Error::DedupeDiffers`] if the ranges differ; [`Error::Ioctl`] with the
/// per-destination status errno (e.g. `EINVAL` for unaligned ranges) or the
/// ioctl's own errno.
pub fn dedupe_range(
    src: impl AsFd,
    src_offset: u64,
    len: u64,
    dst: impl AsFd,
    dst_offset: u64,
) -> Result<u64> {
    let info = sys::fideduperange_one(src.as_fd(), src_offset, len, dst.as_fd(), dst_offset)
        .map_err(|e| Error::sys(OP_DEDUPE, e))?;
    match info.status {
        0 => Ok(info.bytes_deduped),
        1 => Err(Error::DedupeDiffers { op: OP_DEDUPE }),
        s if s < 0 => Err(Error::sys(
            OP_DEDUPE,
            nix::errno::Errno::from_raw(s.saturating_neg()),
        )),
        s => Err(Error::malformed(OP_DEDUPE, format!("unknown status {s}"))),
    }
}

/// Parameters of an encoded write; the field meanings follow the send
/// stream's ENCODED_WRITE command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodedWrite {
    /// File offset to write at; must be sector-aligned.
    pub offset: u64,
    /// Number of bytes of file data the extent covers (`UNENCODED_FILE_LEN`).
    pub len: u64,
    /// Length of the data once decoded (`UNENCODED_LEN`, ≤ 128 KiB).
    pub unencoded_len: u64,
    /// Offset into the decoded data where the file data starts.
    pub unencoded_offset: u64,
    /// One of the `COMPRESSION_*` constants (not [`COMPRESSION_NONE`]).
    pub compression: u32,
    /// Encryption type; must be 0.
    pub encryption: u32,
}

/// Writes already-compressed `data` as one extent (`BTRFS_IOC_ENCODED_WRITE`
/// with a single iovec). `file` must be open for writing. Needs
/// `CAP_SYS_ADMIN`. Returns the kernel's result: the number of *encoded*
/// bytes consumed, i.e. `data.len()` (not the `len` of file data covered).
///
/// # Errors
///
/// `EINVAL` for unaligned offsets, sizes over the limits (encoded data ≤
/// 128 KiB and ≤ `unencoded_len`), or data the kernel cannot decode; `ENOTTY`
/// on kernels without encoded I/O; `ENOSPC`. btrfs-progs falls back to
/// decompressing and writing normally on `EINVAL`, `ENOTTY` and `ENOSPC`.
pub fn encoded_write(file: impl AsFd, data: &[u8], args: &EncodedWrite) -> Result<usize> {
    let offset = i64::try_from(args.offset)
        .map_err(|_| Error::invalid(OP_ENCODED_WRITE, "offset does not fit in i64"))?;
    let meta = EncodedMeta {
        offset,
        len: args.len,
        unencoded_len: args.unencoded_len,
        unencoded_offset: args.unencoded_offset,
        compression: args.compression,
        encryption: args.encryption,
    };
    sys::encoded_write(file.as_fd(), data, &meta).map_err(|e| Error::sys(OP_ENCODED_WRITE, e))
}

/// Result of [`encoded_read`]: the metadata of the extent and how many
/// encoded bytes were stored in the caller's buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodedRead {
    /// Number of encoded bytes written into the buffer.
    pub bytes: usize,
    /// File offset the returned data starts at.
    pub offset: u64,
    /// Number of bytes of file data covered.
    pub len: u64,
    /// Length of the decoded extent.
    pub unencoded_len: u64,
    /// Offset of the file data within the decoded extent.
    pub unencoded_offset: u64,
    /// `COMPRESSION_*` type of the returned data.
    pub compression: u32,
    /// Encryption type.
    pub encryption: u32,
}

/// Reads the extent at file offset `offset` in its on-disk (possibly
/// compressed) form into `buf` (`BTRFS_IOC_ENCODED_READ`). Needs
/// `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// `ENOBUFS` if `buf` is too small for the encoded extent, `EINVAL` for bad
/// arguments, `ENOTTY` on kernels without encoded I/O.
pub fn encoded_read(file: impl AsFd, offset: u64, buf: &mut [u8]) -> Result<EncodedRead> {
    let offset_i64 = i64::try_from(offset)
        .map_err(|_| Error::invalid(OP_ENCODED_READ, "offset does not fit in i64"))?;
    let (bytes, meta) = sys::encoded_read(file.as_fd(), offset_i64, buf)
        .map_err(|e| Error::sys(OP_ENCODED_READ, e))?;
    Ok(EncodedRead {
        bytes,
        offset: u64::try_from(meta.offset).unwrap_or(offset),
        len: meta.len,
        unencoded_len: meta.unencoded_len,
        unencoded_offset: meta.unencoded_offset,
        compression: meta.compression,
        encryption: meta.encryption,
    })
}

/// Enables fs-verity on `file` (`FS_IOC_ENABLE_VERITY`, version 1), which
/// must be open read-only and not open for writing anywhere. `salt` (≤ 32
/// bytes) and `sig` (a PKCS#7 signature, usually empty) may be empty.
///
/// # Errors
///
/// `EOPNOTSUPP` if the kernel or filesystem lacks fs-verity support,
/// `ENOTTY` on kernels without the ioctl, `EEXIST` if verity is already
/// enabled, `ETXTBSY` if the file is open for writing, `EINVAL` for bad
/// parameters (including a salt or signature longer than `u32::MAX`).
pub fn enable_verity(
    file: impl AsFd,
    hash_algorithm: u32,
    block_size: u32,
    salt: &[u8],
    sig: &[u8],
) -> Result<()> {
    if u32::try_from(salt.len()).is_err() || u32::try_from(sig.len()).is_err() {
        return Err(Error::invalid(
            OP_ENABLE_VERITY,
            "salt or signature too long",
        ));
    }
    sys::enable_verity(file.as_fd(), hash_algorithm, block_size, salt, sig)
        .map_err(|e| Error::sys(OP_ENABLE_VERITY, e))
}

/// Commits the current transaction of the filesystem containing `fd`
/// (`BTRFS_IOC_SYNC`), so that everything written so far is on disk and
/// visible to tree searches.
///
/// # Errors
///
/// `ENOTTY` if `fd` is not on btrfs; I/O errors.
pub fn fs_sync(fd: impl AsFd) -> Result<()> {
    sys::btrfs_sync(fd.as_fd()).map_err(|e| Error::sys(OP_SYNC, e))
}
