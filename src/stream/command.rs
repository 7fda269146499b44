//! One send-stream command: its number and TLV payload, kept verbatim so that writing it back gives
//! the original bytes, with an index of its attributes and a typed view ([`Op`]).

use super::frame;
use super::proto::{self, attr, cmd};
use std::fmt;

pub use subvol_ioctl::{Timespec, Uuid};

/// What is wrong with a command's attributes (positions are added by the reader).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// A TLV header or value runs past the end of the payload.
    #[error("attribute truncated: {0}")]
    Truncated(&'static str),
    /// Attribute number 0 or above the highest known one.
    #[error("invalid attribute type {0}")]
    InvalidType(u16),
    /// The command needs an attribute it does not carry.
    #[error("{cmd}: attribute {attr} missing")]
    Missing {
        /// Command name.
        cmd: &'static str,
        /// Attribute name.
        attr: &'static str,
    },
    /// A fixed-size attribute has the wrong length.
    #[error("attribute {attr}: expected {expected} bytes, got {got}")]
    Size {
        /// Attribute name.
        attr: &'static str,
        /// Size the type requires.
        expected: usize,
        /// Size found.
        got: usize,
    },
    /// A builder was asked for a value larger than a TLV can carry.
    #[error("attribute {attr}: {len} bytes do not fit in a TLV")]
    TooLong {
        /// Attribute name.
        attr: &'static str,
        /// Requested length.
        len: usize,
    },
}

const NATTR: usize = proto::attr::MAX as usize + 1;

/// One command. The payload bytes are kept exactly as read (or built); attributes are located
/// by an index where, as in btrfs-progs, the last of duplicate attributes wins.
#[derive(Clone)]
pub struct Command {
    cmd: u16,
    version: u32,
    payload: Vec<u8>,
    /// For each attribute number, the value's byte range in `payload` (valid when `present` has the bit).
    index: [(u32, u32); NATTR],
    present: u64,
    /// Attribute numbers in wire order, duplicates included (for JSON and diagnostics).
    order: Vec<u16>,
    /// The frame's CRC32C as read (set by the reader after checking it); None for a built
    /// command, whose CRC is computed when its frame header is asked for.
    crc: Option<u32>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("cmd", &self.name())
            .field("version", &self.version)
            .field("len", &self.payload.len())
            .field("attrs", &self.order)
            .finish()
    }
}

impl PartialEq for Command {
    fn eq(&self, o: &Self) -> bool {
        self.cmd == o.cmd && self.version == o.version && self.payload == o.payload
    }
}
impl Eq for Command {}

impl Default for Command {
    fn default() -> Self {
        Command::empty()
    }
}

impl Command {
    /// An empty command (number 0, no payload) to be filled by a reader.
    #[must_use]
    pub fn empty() -> Command {
        Command {
            cmd: 0,
            version: 1,
            payload: Vec::new(),
            index: [(0, 0); NATTR],
            present: 0,
            order: Vec::new(),
            crc: None,
        }
    }

    /// Builds a command from a payload read off the wire, indexing its attributes.
    ///
    /// # Errors
    /// A malformed TLV. The payload of an unknown command number is checked and indexed the
    /// same way (btrfs-progs parses the TLVs of every command before it looks at the number, then
    /// skips unknown ones), so what this accepts is exactly what progs accepts.
    pub fn from_payload(cmd: u16, version: u32, payload: Vec<u8>) -> Result<Command, AttrError> {
        let mut c = Command::empty();
        c.set_from_payload(cmd, version, payload)?;
        Ok(c)
    }

    /// Replaces this command's contents, reusing its allocations. The payload buffer is taken
    /// from `payload_src` by swapping.
    pub(crate) fn set_from_payload(
        &mut self,
        cmd: u16,
        version: u32,
        payload: Vec<u8>,
    ) -> Result<(), AttrError> {
        self.cmd = cmd;
        self.version = version;
        self.payload = payload;
        self.crc = None;
        self.reindex()
    }

    /// Mutable access to the payload buffer for a reader that fills it in place (forgets the
    /// CRC: the reader sets it again once it checked the new bytes).
    pub(crate) fn payload_buf(&mut self) -> &mut Vec<u8> {
        self.crc = None;
        &mut self.payload
    }

    /// Records the CRC a reader checked against this command's frame.
    pub(crate) fn set_crc(&mut self, crc: u32) {
        self.crc = Some(crc);
    }

    /// The frame's CRC32C: as read, or computed over the header and payload.
    #[must_use]
    pub fn crc(&self) -> u32 {
        let h = self.frame_header();
        u32::from_le_bytes([h[6], h[7], h[8], h[9]])
    }

    /// The 10-byte frame header of this command (length, number, CRC32C), exactly as it is on
    /// the wire: a command read from bytes keeps the CRC that was checked, a built one gets it
    /// computed. Header and payload together are the command's bytes, hashed as they are by
    /// the signing and verifying filters.
    #[must_use]
    pub fn frame_header(&self) -> [u8; proto::CMD_HEADER_LEN] {
        match self.crc {
            Some(crc) => frame::header(self.cmd, self.payload.len(), crc),
            None => frame::command_header(self.cmd, &[&self.payload]),
        }
    }

    /// Bytes of this command on the wire (frame header and payload).
    #[must_use]
    pub fn frame_len(&self) -> u64 {
        (proto::CMD_HEADER_LEN + self.payload.len()) as u64
    }

    /// Sets number and version after the payload buffer was filled, then indexes.
    pub(crate) fn finish_read(&mut self, cmd: u16, version: u32) -> Result<(), AttrError> {
        self.cmd = cmd;
        self.version = version;
        self.reindex()
    }

    fn reindex(&mut self) -> Result<(), AttrError> {
        self.present = 0;
        self.order.clear();
        let p = &self.payload;
        let mut pos = 0usize;
        while pos < p.len() {
            if p.len() - pos < 2 {
                return Err(AttrError::Truncated("TLV header"));
            }
            let ty = u16::from_le_bytes([p[pos], p[pos + 1]]);
            if ty == 0 || ty > attr::MAX {
                return Err(AttrError::InvalidType(ty));
            }
            let (start, end);
            if ty == attr::DATA && self.version >= 2 {
                // v2+: DATA has no length and runs to the end of the command.
                start = pos + 2;
                end = p.len();
            } else {
                if p.len() - pos < proto::TLV_HEADER_LEN {
                    return Err(AttrError::Truncated("TLV header"));
                }
                let len = usize::from(u16::from_le_bytes([p[pos + 2], p[pos + 3]]));
                start = pos + proto::TLV_HEADER_LEN;
                end = start + len;
                if end > p.len() {
                    return Err(AttrError::Truncated("TLV value"));
                }
            }
            // Payloads are capped far below 4 GiB, so the offsets fit.
            self.index[usize::from(ty)] = (start as u32, end as u32);
            self.present |= 1 << ty;
            self.order.push(ty);
            pos = end;
        }
        Ok(())
    }

    /// The command number.
    #[must_use]
    pub fn cmd(&self) -> u16 {
        self.cmd
    }

    /// The stream version this payload is encoded for (it decides how DATA is framed).
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The command's progs name, or `unknown`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        cmd::name(self.cmd).unwrap_or("unknown")
    }

    /// Bytes allocated for the payload buffer (what a queue of commands really holds).
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.payload.capacity()
    }

    /// The raw TLV payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Attribute numbers in wire order, duplicates included.
    #[must_use]
    pub fn attr_order(&self) -> &[u16] {
        &self.order
    }

    /// The value bytes of an attribute, if present.
    #[must_use]
    pub fn get(&self, a: u16) -> Option<&[u8]> {
        if a as usize >= NATTR || self.present & (1 << a) == 0 {
            return None;
        }
        let (s, e) = self.index[a as usize];
        Some(&self.payload[s as usize..e as usize])
    }

    /// The byte offset of an attribute's value within the payload.
    #[must_use]
    pub fn value_offset(&self, a: u16) -> Option<usize> {
        if a as usize >= NATTR || self.present & (1 << a) == 0 {
            return None;
        }
        Some(self.index[a as usize].0 as usize)
    }

    fn require(&self, a: u16) -> Result<&[u8], AttrError> {
        self.get(a).ok_or(AttrError::Missing {
            cmd: self.name(),
            attr: attr::name(a).unwrap_or("?"),
        })
    }

    fn fixed<const N: usize>(&self, a: u16) -> Result<[u8; N], AttrError> {
        let v = self.require(a)?;
        v.try_into().map_err(|_| AttrError::Size {
            attr: attr::name(a).unwrap_or("?"),
            expected: N,
            got: v.len(),
        })
    }

    /// A u64 attribute.
    ///
    /// # Errors
    /// Missing or not 8 bytes.
    pub fn u64(&self, a: u16) -> Result<u64, AttrError> {
        self.fixed::<8>(a).map(u64::from_le_bytes)
    }

    /// A u32 attribute.
    ///
    /// # Errors
    /// Missing or not 4 bytes.
    pub fn u32(&self, a: u16) -> Result<u32, AttrError> {
        self.fixed::<4>(a).map(u32::from_le_bytes)
    }

    /// A u8 attribute.
    ///
    /// # Errors
    /// Missing or not 1 byte.
    pub fn u8(&self, a: u16) -> Result<u8, AttrError> {
        self.fixed::<1>(a).map(|b| b[0])
    }

    /// A UUID attribute.
    ///
    /// # Errors
    /// Missing or not 16 bytes.
    pub fn uuid(&self, a: u16) -> Result<Uuid, AttrError> {
        self.fixed::<16>(a).map(Uuid)
    }

    /// A timespec attribute.
    ///
    /// # Errors
    /// Missing or not 12 bytes.
    pub fn timespec(&self, a: u16) -> Result<Timespec, AttrError> {
        let b = self.fixed::<12>(a)?;
        let mut sec = [0u8; 8];
        sec.copy_from_slice(&b[..8]);
        let mut nsec = [0u8; 4];
        nsec.copy_from_slice(&b[8..]);
        Ok(Timespec {
            sec: i64::from_le_bytes(sec),
            nsec: u32::from_le_bytes(nsec),
        })
    }

    /// A string or binary attribute.
    ///
    /// # Errors
    /// Missing.
    pub fn bytes(&self, a: u16) -> Result<&[u8], AttrError> {
        self.require(a)
    }

    /// The typed view of this command, checking that every attribute progs requires is present
    /// with the right size.
    ///
    /// # Errors
    /// A missing or wrongly sized attribute.
    pub fn op(&self) -> Result<Op<'_>, AttrError> {
        use attr as a;
        let path = || self.bytes(a::PATH);
        Ok(match self.cmd {
            cmd::SUBVOL => Op::Subvol {
                path: path()?,
                uuid: self.uuid(a::UUID)?,
                ctransid: self.u64(a::CTRANSID)?,
            },
            cmd::SNAPSHOT => Op::Snapshot {
                path: path()?,
                uuid: self.uuid(a::UUID)?,
                ctransid: self.u64(a::CTRANSID)?,
                clone_uuid: self.uuid(a::CLONE_UUID)?,
                clone_ctransid: self.u64(a::CLONE_CTRANSID)?,
            },
            cmd::MKFILE => Op::Mkfile {
                path: path()?,
                ino: self.u64(a::INO)?,
            },
            cmd::MKDIR => Op::Mkdir {
                path: path()?,
                ino: self.u64(a::INO)?,
            },
            cmd::MKNOD => Op::Mknod {
                path: path()?,
                ino: self.u64(a::INO)?,
                mode: self.u64(a::MODE)?,
                rdev: self.u64(a::RDEV)?,
            },
            cmd::MKFIFO => Op::Mkfifo {
                path: path()?,
                ino: self.u64(a::INO)?,
            },
            cmd::MKSOCK => Op::Mksock {
                path: path()?,
                ino: self.u64(a::INO)?,
            },
            cmd::SYMLINK => Op::Symlink {
                path: path()?,
                ino: self.u64(a::INO)?,
                target: self.bytes(a::PATH_LINK)?,
            },
            cmd::RENAME => Op::Rename {
                from: path()?,
                to: self.bytes(a::PATH_TO)?,
            },
            cmd::LINK => Op::Link {
                path: path()?,
                target: self.bytes(a::PATH_LINK)?,
            },
            cmd::UNLINK => Op::Unlink { path: path()? },
            cmd::RMDIR => Op::Rmdir { path: path()? },
            cmd::SET_XATTR => Op::SetXattr {
                path: path()?,
                name: self.bytes(a::XATTR_NAME)?,
                data: self.bytes(a::XATTR_DATA)?,
            },
            cmd::REMOVE_XATTR => Op::RemoveXattr {
                path: path()?,
                name: self.bytes(a::XATTR_NAME)?,
            },
            cmd::WRITE => Op::Write {
                path: path()?,
                offset: self.u64(a::FILE_OFFSET)?,
                data: self.bytes(a::DATA)?,
            },
            cmd::CLONE => Op::Clone {
                path: path()?,
                offset: self.u64(a::FILE_OFFSET)?,
                len: self.u64(a::CLONE_LEN)?,
                clone_uuid: self.uuid(a::CLONE_UUID)?,
                clone_ctransid: self.u64(a::CLONE_CTRANSID)?,
                clone_path: self.bytes(a::CLONE_PATH)?,
                clone_offset: self.u64(a::CLONE_OFFSET)?,
            },
            cmd::TRUNCATE => Op::Truncate {
                path: path()?,
                size: self.u64(a::SIZE)?,
            },
            cmd::CHMOD => Op::Chmod {
                path: path()?,
                mode: self.u64(a::MODE)?,
            },
            cmd::CHOWN => Op::Chown {
                path: path()?,
                uid: self.u64(a::UID)?,
                gid: self.u64(a::GID)?,
            },
            cmd::UTIMES => Op::Utimes {
                path: path()?,
                atime: self.timespec(a::ATIME)?,
                mtime: self.timespec(a::MTIME)?,
                ctime: self.timespec(a::CTIME)?,
            },
            cmd::END => Op::End,
            cmd::UPDATE_EXTENT => Op::UpdateExtent {
                path: path()?,
                offset: self.u64(a::FILE_OFFSET)?,
                len: self.u64(a::SIZE)?,
            },
            cmd::FALLOCATE => Op::Fallocate {
                path: path()?,
                mode: self.u32(a::FALLOCATE_MODE)?,
                offset: self.u64(a::FILE_OFFSET)?,
                len: self.u64(a::SIZE)?,
            },
            cmd::FILEATTR => Op::Fileattr {
                path: path()?,
                attr: self.u64(a::FILEATTR)?,
            },
            cmd::ENCODED_WRITE => Op::EncodedWrite {
                path: path()?,
                offset: self.u64(a::FILE_OFFSET)?,
                unencoded_file_len: self.u64(a::UNENCODED_FILE_LEN)?,
                unencoded_len: self.u64(a::UNENCODED_LEN)?,
                unencoded_offset: self.u64(a::UNENCODED_OFFSET)?,
                compression: if self.get(a::COMPRESSION).is_some() {
                    self.u32(a::COMPRESSION)?
                } else {
                    0
                },
                encryption: if self.get(a::ENCRYPTION).is_some() {
                    self.u32(a::ENCRYPTION)?
                } else {
                    0
                },
                data: self.bytes(a::DATA)?,
            },
            cmd::ENABLE_VERITY => Op::EnableVerity {
                path: path()?,
                algorithm: self.u8(a::VERITY_ALGORITHM)?,
                block_size: self.u32(a::VERITY_BLOCK_SIZE)?,
                salt: self.bytes(a::VERITY_SALT_DATA)?,
                sig: self.bytes(a::VERITY_SIG_DATA)?,
            },
            other => Op::Unknown(other),
        })
    }

    /// Checks every present fixed-size attribute has the size its type requires (progs checks
    /// this when the command reads them; verification checks them all).
    ///
    /// # Errors
    /// The first wrongly sized attribute.
    pub fn check_sizes(&self) -> Result<(), AttrError> {
        for &a in &self.order {
            if let (Some(want), Some(v)) = (proto::attr_fixed_len(a), self.get(a))
                && v.len() != want
            {
                return Err(AttrError::Size {
                    attr: attr::name(a).unwrap_or("?"),
                    expected: want,
                    got: v.len(),
                });
            }
        }
        Ok(())
    }
}

/// Typed, borrowed view of a command. Paths and names are raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // field names are the attribute names
pub enum Op<'a> {
    Subvol {
        path: &'a [u8],
        uuid: Uuid,
        ctransid: u64,
    },
    Snapshot {
        path: &'a [u8],
        uuid: Uuid,
        ctransid: u64,
        clone_uuid: Uuid,
        clone_ctransid: u64,
    },
    Mkfile {
        path: &'a [u8],
        ino: u64,
    },
    Mkdir {
        path: &'a [u8],
        ino: u64,
    },
    Mknod {
        path: &'a [u8],
        ino: u64,
        mode: u64,
        rdev: u64,
    },
    Mkfifo {
        path: &'a [u8],
        ino: u64,
    },
    Mksock {
        path: &'a [u8],
        ino: u64,
    },
    Symlink {
        path: &'a [u8],
        ino: u64,
        target: &'a [u8],
    },
    Rename {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// `path` is the new name; `target` the existing file.
    Link {
        path: &'a [u8],
        target: &'a [u8],
    },
    Unlink {
        path: &'a [u8],
    },
    Rmdir {
        path: &'a [u8],
    },
    SetXattr {
        path: &'a [u8],
        name: &'a [u8],
        data: &'a [u8],
    },
    RemoveXattr {
        path: &'a [u8],
        name: &'a [u8],
    },
    Write {
        path: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    /// Clone `len` bytes from `clone_path` at `clone_offset` into `path` at `offset`.
    Clone {
        path: &'a [u8],
        offset: u64,
        len: u64,
        clone_uuid: Uuid,
        clone_ctransid: u64,
        clone_path: &'a [u8],
        clone_offset: u64,
    },
    Truncate {
        path: &'a [u8],
        size: u64,
    },
    Chmod {
        path: &'a [u8],
        mode: u64,
    },
    Chown {
        path: &'a [u8],
        uid: u64,
        gid: u64,
    },
    Utimes {
        path: &'a [u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
    },
    End,
    UpdateExtent {
        path: &'a [u8],
        offset: u64,
        len: u64,
    },
    Fallocate {
        path: &'a [u8],
        mode: u32,
        offset: u64,
        len: u64,
    },
    Fileattr {
        path: &'a [u8],
        attr: u64,
    },
    EncodedWrite {
        path: &'a [u8],
        offset: u64,
        unencoded_file_len: u64,
        unencoded_len: u64,
        unencoded_offset: u64,
        compression: u32,
        encryption: u32,
        data: &'a [u8],
    },
    EnableVerity {
        path: &'a [u8],
        algorithm: u8,
        block_size: u32,
        salt: &'a [u8],
        sig: &'a [u8],
    },
    /// A command number progs does not know; skipped by receivers.
    Unknown(u16),
}

/// Appends TLVs in order to build a command for a given stream version.
#[derive(Debug)]
pub struct Builder {
    cmd: u16,
    version: u32,
    payload: Vec<u8>,
    err: Option<AttrError>,
}

impl Builder {
    /// Starts a command.
    #[must_use]
    pub fn new(cmd: u16, version: u32) -> Builder {
        Builder {
            cmd,
            version,
            payload: Vec::with_capacity(64),
            err: None,
        }
    }

    /// Appends a TLV with a u16 length.
    #[must_use]
    pub fn bytes(mut self, a: u16, v: &[u8]) -> Builder {
        match u16::try_from(v.len()) {
            Ok(len) => {
                self.payload.extend_from_slice(&a.to_le_bytes());
                self.payload.extend_from_slice(&len.to_le_bytes());
                self.payload.extend_from_slice(v);
            }
            Err(_) => {
                self.err.get_or_insert(AttrError::TooLong {
                    attr: attr::name(a).unwrap_or("?"),
                    len: v.len(),
                });
            }
        }
        self
    }

    /// Appends a u64.
    #[must_use]
    pub fn u64(self, a: u16, v: u64) -> Builder {
        self.bytes(a, &v.to_le_bytes())
    }

    /// Appends a u32.
    #[must_use]
    pub fn u32(self, a: u16, v: u32) -> Builder {
        self.bytes(a, &v.to_le_bytes())
    }

    /// Appends a u8.
    #[must_use]
    pub fn u8(self, a: u16, v: u8) -> Builder {
        self.bytes(a, &[v])
    }

    /// Appends a UUID.
    #[must_use]
    pub fn uuid(self, a: u16, v: &Uuid) -> Builder {
        self.bytes(a, &v.0)
    }

    /// Appends a timespec.
    #[must_use]
    pub fn timespec(self, a: u16, t: Timespec) -> Builder {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&t.sec.to_le_bytes());
        b[8..].copy_from_slice(&t.nsec.to_le_bytes());
        self.bytes(a, &b)
    }

    /// Appends the DATA attribute: without a length in v2+ (then it must be last).
    #[must_use]
    pub fn data(mut self, v: &[u8]) -> Builder {
        if self.version >= 2 {
            self.payload.extend_from_slice(&attr::DATA.to_le_bytes());
            self.payload.extend_from_slice(v);
            self
        } else {
            self.bytes(attr::DATA, v)
        }
    }

    /// Finishes the command.
    ///
    /// # Errors
    /// An attribute was too long for its TLV.
    pub fn build(self) -> Result<Command, AttrError> {
        if let Some(e) = self.err {
            return Err(e);
        }
        Command::from_payload(self.cmd, self.version, self.payload)
    }
}

/// The END command for any version.
#[must_use]
pub fn end_command(version: u32) -> Command {
    Command {
        cmd: cmd::END,
        version,
        ..Command::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Reader, Writer, command_header};

    #[test]
    fn frame_header_keeps_the_crc_read_and_computes_one_for_a_built_command() {
        let built = Builder::new(cmd::UNLINK, 1)
            .bytes(attr::PATH, b"x")
            .build()
            .unwrap();
        assert_eq!(
            built.frame_header(),
            command_header(cmd::UNLINK, &[built.payload()])
        );
        let mut w = Writer::new(Vec::new());
        w.write_header(1).unwrap();
        w.write_command(&built).unwrap();
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes[..]);
        let mut c = Command::empty();
        r.next(&mut c).unwrap();
        r.next(&mut c).unwrap();
        assert_eq!(c.crc(), built.crc());
        assert_eq!(&c.frame_header()[..], &bytes[17..27]);
        assert_eq!(c.frame_len(), (bytes.len() - 17) as u64);
    }
}
