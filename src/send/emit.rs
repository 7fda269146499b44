//! Typed command emission: one method per send command, attributes in the kernel's order
//! (reference §2.3), so stock `btrfs receive` and `subvol recv` see what the kernel would send.

use super::SendError;
use crate::Error;
use crate::pipeline::{CommandSink, Position, Totals};
use crate::stream::{Builder, Timespec, Uuid, attr, cmd, proto};
use std::ops::ControlFlow;

/// Called after each command with what was emitted so far; `Break` cancels the send (the
/// tree sender wraps the pipeline's [`crate::pipeline::Hook`] in it).
pub(crate) type Step<'a> = dyn FnMut(&Totals) -> ControlFlow<()> + 'a;

/// A sink's error as a send error (an output error stays one).
fn sink_error(e: Error) -> SendError {
    match e {
        Error::Output(io) => SendError::Output(io),
        Error::Send(s) => s,
        other => SendError::Sink(Box::new(other)),
    }
}

/// Emits commands of one stream version into a [`CommandSink`] (a stream writer, a signer),
/// counting commands and their bytes on the wire.
pub(crate) struct Emitter<'p, W: CommandSink> {
    sink: W,
    pub(crate) version: u32,
    /// Commands and bytes emitted so far (stream header included).
    totals: Totals,
    step: &'p mut Step<'p>,
}

impl<'p, W: CommandSink> Emitter<'p, W> {
    /// Emits the stream header.
    pub(crate) fn new(
        mut sink: W,
        version: u32,
        step: &'p mut Step<'p>,
    ) -> Result<Self, SendError> {
        sink.header(version, Position::default())
            .map_err(sink_error)?;
        Ok(Emitter {
            sink,
            version,
            totals: Totals {
                streams: 1,
                commands: 0,
                bytes: proto::STREAM_HEADER_LEN as u64,
                max_version: version,
            },
            step,
        })
    }

    fn at(&self) -> Position {
        Position {
            offset: self.totals.bytes,
            index: self.totals.commands,
        }
    }

    fn put(&mut self, b: Builder, path: &[u8]) -> Result<(), SendError> {
        let c = b.build().map_err(|source| SendError::Encode {
            path: lossy(path),
            source,
        })?;
        let at = self.at();
        // A producer's sink asks to stop only through errors; ControlFlow is for readers.
        let _ = self.sink.command(&c, at).map_err(sink_error)?;
        self.tick(c.frame_len())
    }

    fn tick(&mut self, frame_len: u64) -> Result<(), SendError> {
        self.totals.commands += 1;
        self.totals.bytes += frame_len;
        match (self.step)(&self.totals) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(SendError::Sink(Box::new(Error::Interrupted))),
        }
    }

    fn b(&self, c: u16) -> Builder {
        Builder::new(c, self.version)
    }

    pub(crate) fn subvol(
        &mut self,
        name: &[u8],
        uuid: &Uuid,
        ctransid: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::SUBVOL)
            .bytes(attr::PATH, name)
            .uuid(attr::UUID, uuid)
            .u64(attr::CTRANSID, ctransid);
        self.put(b, name)
    }

    pub(crate) fn snapshot(
        &mut self,
        name: &[u8],
        uuid: &Uuid,
        ctransid: u64,
        parent: &Uuid,
        parent_ctransid: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::SNAPSHOT)
            .bytes(attr::PATH, name)
            .uuid(attr::UUID, uuid)
            .u64(attr::CTRANSID, ctransid)
            .uuid(attr::CLONE_UUID, parent)
            .u64(attr::CLONE_CTRANSID, parent_ctransid);
        self.put(b, name)
    }

    /// MKFILE or MKDIR (`c` says which).
    pub(crate) fn mk(&mut self, c: u16, path: &[u8], ino: u64) -> Result<(), SendError> {
        let b = self.b(c).bytes(attr::PATH, path).u64(attr::INO, ino);
        self.put(b, path)
    }

    /// MKNOD, MKFIFO or MKSOCK: the kernel sends RDEV and MODE (full st_mode) with all three.
    pub(crate) fn mknod(
        &mut self,
        c: u16,
        path: &[u8],
        ino: u64,
        rdev: u64,
        mode: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(c)
            .bytes(attr::PATH, path)
            .u64(attr::INO, ino)
            .u64(attr::RDEV, rdev)
            .u64(attr::MODE, mode);
        self.put(b, path)
    }

    pub(crate) fn symlink(
        &mut self,
        path: &[u8],
        ino: u64,
        target: &[u8],
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::SYMLINK)
            .bytes(attr::PATH, path)
            .u64(attr::INO, ino)
            .bytes(attr::PATH_LINK, target);
        self.put(b, path)
    }

    pub(crate) fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), SendError> {
        let b = self
            .b(cmd::RENAME)
            .bytes(attr::PATH, from)
            .bytes(attr::PATH_TO, to);
        self.put(b, from)
    }

    /// LINK: creates `path` as a new name of the existing `existing`.
    pub(crate) fn link(&mut self, path: &[u8], existing: &[u8]) -> Result<(), SendError> {
        let b = self
            .b(cmd::LINK)
            .bytes(attr::PATH, path)
            .bytes(attr::PATH_LINK, existing);
        self.put(b, path)
    }

    pub(crate) fn unlink(&mut self, path: &[u8]) -> Result<(), SendError> {
        let b = self.b(cmd::UNLINK).bytes(attr::PATH, path);
        self.put(b, path)
    }

    pub(crate) fn rmdir(&mut self, path: &[u8]) -> Result<(), SendError> {
        let b = self.b(cmd::RMDIR).bytes(attr::PATH, path);
        self.put(b, path)
    }

    pub(crate) fn set_xattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        data: &[u8],
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::SET_XATTR)
            .bytes(attr::PATH, path)
            .bytes(attr::XATTR_NAME, name)
            .bytes(attr::XATTR_DATA, data);
        self.put(b, path)
    }

    pub(crate) fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), SendError> {
        let b = self
            .b(cmd::REMOVE_XATTR)
            .bytes(attr::PATH, path)
            .bytes(attr::XATTR_NAME, name);
        self.put(b, path)
    }

    /// WRITE of `data` (at most one kernel chunk) without copying it into a payload buffer.
    pub(crate) fn write(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), SendError> {
        let prefix = self
            .b(cmd::WRITE)
            .bytes(attr::PATH, path)
            .u64(attr::FILE_OFFSET, offset)
            .build()
            .map_err(|source| SendError::Encode {
                path: lossy(path),
                source,
            })?;
        let mut data_hdr = [0u8; 4];
        data_hdr[..2].copy_from_slice(&attr::DATA.to_le_bytes());
        let hdr: &[u8] = if self.version >= 2 {
            &data_hdr[..2]
        } else {
            // v1: DATA carries a u16 length like every other attribute.
            let len = u16::try_from(data.len()).map_err(|_| SendError::Encode {
                path: lossy(path),
                source: crate::stream::AttrError::TooLong {
                    attr: "data",
                    len: data.len(),
                },
            })?;
            data_hdr[2..].copy_from_slice(&len.to_le_bytes());
            &data_hdr[..]
        };
        let at = self.at();
        let _ = self
            .sink
            .command_split(&prefix, &[hdr, data], at)
            .map_err(sink_error)?;
        self.tick((proto::CMD_HEADER_LEN + prefix.payload().len() + hdr.len() + data.len()) as u64)
    }

    /// CLONE `len` bytes of `clone_path` (in the subvolume `clone_uuid`) at `clone_offset` into
    /// `path` at `offset`; attribute order as the kernel's (offset and length first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn clone_range(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        clone_uuid: &Uuid,
        clone_ctransid: u64,
        clone_path: &[u8],
        clone_offset: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::CLONE)
            .u64(attr::FILE_OFFSET, offset)
            .u64(attr::CLONE_LEN, len)
            .bytes(attr::PATH, path)
            .uuid(attr::CLONE_UUID, clone_uuid)
            .u64(attr::CLONE_CTRANSID, clone_ctransid)
            .bytes(attr::CLONE_PATH, clone_path)
            .u64(attr::CLONE_OFFSET, clone_offset);
        self.put(b, path)
    }

    pub(crate) fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), SendError> {
        let b = self
            .b(cmd::TRUNCATE)
            .bytes(attr::PATH, path)
            .u64(attr::SIZE, size);
        self.put(b, path)
    }

    /// FALLOCATE with mode 3 (KEEP_SIZE | PUNCH_HOLE), the only mode the kernel emits.
    pub(crate) fn punch_hole(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::FALLOCATE)
            .bytes(attr::PATH, path)
            .u32(attr::FALLOCATE_MODE, 3)
            .u64(attr::FILE_OFFSET, offset)
            .u64(attr::SIZE, len);
        self.put(b, path)
    }

    /// UPDATE_EXTENT: the `--no-data` stand-in for WRITE.
    pub(crate) fn update_extent(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let b = self
            .b(cmd::UPDATE_EXTENT)
            .bytes(attr::PATH, path)
            .u64(attr::FILE_OFFSET, offset)
            .u64(attr::SIZE, len);
        self.put(b, path)
    }

    pub(crate) fn chmod(&mut self, path: &[u8], mode: u32) -> Result<(), SendError> {
        let b = self
            .b(cmd::CHMOD)
            .bytes(attr::PATH, path)
            .u64(attr::MODE, u64::from(mode & 0o7777));
        self.put(b, path)
    }

    pub(crate) fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> Result<(), SendError> {
        let b = self
            .b(cmd::CHOWN)
            .bytes(attr::PATH, path)
            .u64(attr::UID, u64::from(uid))
            .u64(attr::GID, u64::from(gid));
        self.put(b, path)
    }

    /// UTIMES; OTIME (v2+) is sent as the ctime, the closest thing a plain tree has.
    pub(crate) fn utimes(
        &mut self,
        path: &[u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
    ) -> Result<(), SendError> {
        let mut b = self
            .b(cmd::UTIMES)
            .bytes(attr::PATH, path)
            .timespec(attr::ATIME, atime)
            .timespec(attr::MTIME, mtime)
            .timespec(attr::CTIME, ctime);
        if self.version >= 2 {
            b = b.timespec(attr::OTIME, ctime);
        }
        self.put(b, path)
    }

    /// END, then finishes the sink (flushes the output; a signer writes its final block).
    /// Returns (bytes, commands) of the stream as emitted.
    pub(crate) fn end(mut self) -> Result<(u64, u64), SendError> {
        let b = self.b(cmd::END);
        self.put(b, b"")?;
        self.sink.finish().map_err(sink_error)?;
        Ok((self.totals.bytes, self.totals.commands))
    }
}

fn lossy(p: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p))
}
