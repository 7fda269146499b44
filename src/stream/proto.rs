//! Wire constants of the btrfs send stream: magic, versions, command and attribute numbers, size caps.

/// The 13-byte magic at the start of every stream, NUL included.
pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";
/// Stream header: magic plus a little-endian u32 version.
pub const STREAM_HEADER_LEN: usize = 17;
/// Command header: le32 payload length, le16 command, le32 CRC32C.
pub const CMD_HEADER_LEN: usize = 10;
/// TLV header: le16 type, le16 length.
pub const TLV_HEADER_LEN: usize = 4;
/// Highest stream version this codec reads and writes.
pub const MAX_VERSION: u32 = 3;

/// Largest command payload accepted in a v0/v1 stream: the kernel's v1 buffer is 64 KiB, header included.
pub const MAX_PAYLOAD_V1: u32 = 64 * 1024 - CMD_HEADER_LEN as u32;
/// Largest command payload accepted in a v2/v3 stream. The kernel's buffer is
/// `ALIGN(16 KiB + 128 KiB, PAGE_SIZE)`: 144 KiB on 4 KiB pages, 192 KiB on 64 KiB pages.
/// 512 KiB leaves room for other writers while bounding memory.
pub const MAX_PAYLOAD_V2: u32 = 512 * 1024;

/// The payload cap for a stream version (no allocation is ever sized beyond it).
#[must_use]
pub const fn max_payload(version: u32) -> u32 {
    if version >= 2 {
        MAX_PAYLOAD_V2
    } else {
        MAX_PAYLOAD_V1
    }
}

/// Most file data one WRITE command carries, as the kernel sends it.
#[must_use]
pub const fn max_write_chunk(version: u32) -> usize {
    if version >= 2 { 128 * 1024 } else { 48 * 1024 }
}

macro_rules! numbered {
    ($(#[$meta:meta])* $modname:ident, $max:ident, { $($name:ident = $num:expr, $text:expr;)* }) => {
        $(#[$meta])*
        pub mod $modname {
            $(
                #[doc = concat!("`", $text, "`")]
                pub const $name: u16 = $num;
            )*
            /// The lowercase name btrfs-progs uses for a number, if it has one.
            #[must_use]
            pub fn name(n: u16) -> Option<&'static str> {
                match n {
                    $($num => Some($text),)*
                    _ => None,
                }
            }
            /// Largest known number.
            pub const $max: u16 = { let mut m = 0; $( if $num > m { m = $num; } )* m };
        }
    };
}

numbered!(
    /// Command numbers (`BTRFS_SEND_C_*`).
    cmd, MAX, {
    SUBVOL = 1, "subvol";
    SNAPSHOT = 2, "snapshot";
    MKFILE = 3, "mkfile";
    MKDIR = 4, "mkdir";
    MKNOD = 5, "mknod";
    MKFIFO = 6, "mkfifo";
    MKSOCK = 7, "mksock";
    SYMLINK = 8, "symlink";
    RENAME = 9, "rename";
    LINK = 10, "link";
    UNLINK = 11, "unlink";
    RMDIR = 12, "rmdir";
    SET_XATTR = 13, "set_xattr";
    REMOVE_XATTR = 14, "remove_xattr";
    WRITE = 15, "write";
    CLONE = 16, "clone";
    TRUNCATE = 17, "truncate";
    CHMOD = 18, "chmod";
    CHOWN = 19, "chown";
    UTIMES = 20, "utimes";
    END = 21, "end";
    UPDATE_EXTENT = 22, "update_extent";
    FALLOCATE = 23, "fallocate";
    FILEATTR = 24, "fileattr";
    ENCODED_WRITE = 25, "encoded_write";
    ENABLE_VERITY = 26, "enable_verity";
});

numbered!(
    /// Attribute numbers (`BTRFS_SEND_A_*`).
    attr, MAX, {
    UUID = 1, "uuid";
    CTRANSID = 2, "ctransid";
    INO = 3, "ino";
    SIZE = 4, "size";
    MODE = 5, "mode";
    UID = 6, "uid";
    GID = 7, "gid";
    RDEV = 8, "rdev";
    CTIME = 9, "ctime";
    MTIME = 10, "mtime";
    ATIME = 11, "atime";
    OTIME = 12, "otime";
    XATTR_NAME = 13, "xattr_name";
    XATTR_DATA = 14, "xattr_data";
    PATH = 15, "path";
    PATH_TO = 16, "path_to";
    PATH_LINK = 17, "path_link";
    FILE_OFFSET = 18, "file_offset";
    DATA = 19, "data";
    CLONE_UUID = 20, "clone_uuid";
    CLONE_CTRANSID = 21, "clone_ctransid";
    CLONE_PATH = 22, "clone_path";
    CLONE_OFFSET = 23, "clone_offset";
    CLONE_LEN = 24, "clone_len";
    FALLOCATE_MODE = 25, "fallocate_mode";
    FILEATTR = 26, "fileattr";
    UNENCODED_FILE_LEN = 27, "unencoded_file_len";
    UNENCODED_LEN = 28, "unencoded_len";
    UNENCODED_OFFSET = 29, "unencoded_offset";
    COMPRESSION = 30, "compression";
    ENCRYPTION = 31, "encryption";
    VERITY_ALGORITHM = 32, "verity_algorithm";
    VERITY_BLOCK_SIZE = 33, "verity_block_size";
    VERITY_SALT_DATA = 34, "verity_salt_data";
    VERITY_SIG_DATA = 35, "verity_sig_data";
});

/// How an attribute's value is typed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// Fixed-width little-endian integer of this many bytes.
    Int(usize),
    /// 16 raw bytes.
    Uuid,
    /// le64 seconds + le32 nanoseconds.
    Timespec,
    /// Byte string (a name or path; never required to be UTF-8).
    String,
    /// Opaque bytes.
    Binary,
}

/// The wire kind of a known attribute number.
#[must_use]
pub fn attr_kind(a: u16) -> AttrKind {
    use attr::*;
    match a {
        UUID | CLONE_UUID => AttrKind::Uuid,
        CTIME | MTIME | ATIME | OTIME => AttrKind::Timespec,
        XATTR_NAME | PATH | PATH_TO | PATH_LINK | CLONE_PATH => AttrKind::String,
        XATTR_DATA | DATA | VERITY_SALT_DATA | VERITY_SIG_DATA => AttrKind::Binary,
        FALLOCATE_MODE | COMPRESSION | ENCRYPTION | VERITY_BLOCK_SIZE => AttrKind::Int(4),
        VERITY_ALGORITHM => AttrKind::Int(1),
        _ => AttrKind::Int(8),
    }
}

/// Byte length a fixed-size attribute must have, or None for variable ones.
#[must_use]
pub fn attr_fixed_len(a: u16) -> Option<usize> {
    match attr_kind(a) {
        AttrKind::Int(n) => Some(n),
        AttrKind::Uuid => Some(16),
        AttrKind::Timespec => Some(12),
        AttrKind::String | AttrKind::Binary => None,
    }
}

/// Raw CRC32C as the kernel computes it for send streams: seed 0, no final inversion.
/// `prev` chains calls: `crc(crc(0, a), b) == crc(0, a ++ b)`.
#[inline]
#[must_use]
pub fn crc32c_raw(prev: u32, bytes: &[u8]) -> u32 {
    !crc32c::crc32c_append(!prev, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc_check_value() {
        assert_eq!(crc32c_raw(0, b"123456789"), 0x58E3_FA20);
        assert_eq!(crc32c_raw(crc32c_raw(0, b"1234"), b"56789"), 0x58E3_FA20);
    }

    #[test]
    fn end_command_crc() {
        let hdr = [0u8, 0, 0, 0, 0x15, 0, 0, 0, 0, 0];
        assert_eq!(crc32c_raw(0, &hdr), 0x9DC9_6C50);
    }

    #[test]
    fn names_and_maxima() {
        assert_eq!(cmd::MAX, 26);
        assert_eq!(attr::MAX, 35);
        assert_eq!(cmd::name(cmd::ENCODED_WRITE), Some("encoded_write"));
        assert_eq!(attr::name(99), None);
    }
}
