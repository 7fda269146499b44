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
    /// UTIMES carries the mtime as CTIME and OTIME ([`super::TreeSendOptions::mtime_only`]).
    pub(crate) mtime_as_ctime: bool,
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
            mtime_as_ctime: false,
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

    /// Emits command `c` with `attrs` in the order given. Each method below lists its
    /// command's attributes in the kernel's order: that list is the command's schema.
    /// `path` names the command in errors.
    fn emit(&mut self, c: u16, path: &[u8], attrs: &[(u16, Value<'_>)]) -> Result<(), SendError> {
        let mut b = self.b(c);
        for &(a, v) in attrs {
            b = match v {
                Value::Bytes(v) => b.bytes(a, v),
                Value::U64(v) => b.u64(a, v),
                Value::U32(v) => b.u32(a, v),
                Value::Uuid(v) => b.uuid(a, v),
                Value::Time(v) => b.timespec(a, v),
            };
        }
        self.put(b, path)
    }

    pub(crate) fn subvol(
        &mut self,
        name: &[u8],
        uuid: &Uuid,
        ctransid: u64,
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(name)),
            (attr::UUID, Value::Uuid(uuid)),
            (attr::CTRANSID, U64(ctransid)),
        ];
        self.emit(cmd::SUBVOL, name, &attrs)
    }

    pub(crate) fn snapshot(
        &mut self,
        name: &[u8],
        uuid: &Uuid,
        ctransid: u64,
        parent: &Uuid,
        parent_ctransid: u64,
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(name)),
            (attr::UUID, Value::Uuid(uuid)),
            (attr::CTRANSID, U64(ctransid)),
            (attr::CLONE_UUID, Value::Uuid(parent)),
            (attr::CLONE_CTRANSID, U64(parent_ctransid)),
        ];
        self.emit(cmd::SNAPSHOT, name, &attrs)
    }

    /// MKFILE or MKDIR (`c` says which).
    pub(crate) fn mk(&mut self, c: u16, path: &[u8], ino: u64) -> Result<(), SendError> {
        self.emit(c, path, &[(attr::PATH, Bytes(path)), (attr::INO, U64(ino))])
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
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::INO, U64(ino)),
            (attr::RDEV, U64(rdev)),
            (attr::MODE, U64(mode)),
        ];
        self.emit(c, path, &attrs)
    }

    pub(crate) fn symlink(
        &mut self,
        path: &[u8],
        ino: u64,
        target: &[u8],
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::INO, U64(ino)),
            (attr::PATH_LINK, Bytes(target)),
        ];
        self.emit(cmd::SYMLINK, path, &attrs)
    }

    pub(crate) fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), SendError> {
        self.emit(
            cmd::RENAME,
            from,
            &[(attr::PATH, Bytes(from)), (attr::PATH_TO, Bytes(to))],
        )
    }

    /// LINK: creates `path` as a new name of the existing `existing`.
    pub(crate) fn link(&mut self, path: &[u8], existing: &[u8]) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::PATH_LINK, Bytes(existing)),
        ];
        self.emit(cmd::LINK, path, &attrs)
    }

    pub(crate) fn unlink(&mut self, path: &[u8]) -> Result<(), SendError> {
        self.emit(cmd::UNLINK, path, &[(attr::PATH, Bytes(path))])
    }

    pub(crate) fn rmdir(&mut self, path: &[u8]) -> Result<(), SendError> {
        self.emit(cmd::RMDIR, path, &[(attr::PATH, Bytes(path))])
    }

    pub(crate) fn set_xattr(
        &mut self,
        path: &[u8],
        name: &[u8],
        data: &[u8],
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::XATTR_NAME, Bytes(name)),
            (attr::XATTR_DATA, Bytes(data)),
        ];
        self.emit(cmd::SET_XATTR, path, &attrs)
    }

    pub(crate) fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), SendError> {
        let attrs = [(attr::PATH, Bytes(path)), (attr::XATTR_NAME, Bytes(name))];
        self.emit(cmd::REMOVE_XATTR, path, &attrs)
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
        let attrs = [
            (attr::FILE_OFFSET, U64(offset)),
            (attr::CLONE_LEN, U64(len)),
            (attr::PATH, Bytes(path)),
            (attr::CLONE_UUID, Value::Uuid(clone_uuid)),
            (attr::CLONE_CTRANSID, U64(clone_ctransid)),
            (attr::CLONE_PATH, Bytes(clone_path)),
            (attr::CLONE_OFFSET, U64(clone_offset)),
        ];
        self.emit(cmd::CLONE, path, &attrs)
    }

    pub(crate) fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), SendError> {
        self.emit(
            cmd::TRUNCATE,
            path,
            &[(attr::PATH, Bytes(path)), (attr::SIZE, U64(size))],
        )
    }

    /// FALLOCATE with mode 3 (KEEP_SIZE | PUNCH_HOLE), the only mode the kernel emits.
    pub(crate) fn punch_hole(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::FALLOCATE_MODE, U32(3)),
            (attr::FILE_OFFSET, U64(offset)),
            (attr::SIZE, U64(len)),
        ];
        self.emit(cmd::FALLOCATE, path, &attrs)
    }

    /// UPDATE_EXTENT: the `--no-data` stand-in for WRITE.
    pub(crate) fn update_extent(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::FILE_OFFSET, U64(offset)),
            (attr::SIZE, U64(len)),
        ];
        self.emit(cmd::UPDATE_EXTENT, path, &attrs)
    }

    pub(crate) fn chmod(&mut self, path: &[u8], mode: u32) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::MODE, U64(u64::from(mode & 0o7777))),
        ];
        self.emit(cmd::CHMOD, path, &attrs)
    }

    pub(crate) fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> Result<(), SendError> {
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::UID, U64(u64::from(uid))),
            (attr::GID, U64(u64::from(gid))),
        ];
        self.emit(cmd::CHOWN, path, &attrs)
    }

    /// UTIMES; OTIME (v2+) is sent as the ctime, the closest thing a plain tree has.
    pub(crate) fn utimes(
        &mut self,
        path: &[u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
    ) -> Result<(), SendError> {
        let ctime = if self.mtime_as_ctime { mtime } else { ctime };
        let attrs = [
            (attr::PATH, Bytes(path)),
            (attr::ATIME, Time(atime)),
            (attr::MTIME, Time(mtime)),
            (attr::CTIME, Time(ctime)),
            (attr::OTIME, Time(ctime)),
        ];
        let n = if self.version >= 2 { 5 } else { 4 };
        self.emit(cmd::UTIMES, path, &attrs[..n])
    }

    /// END, then finishes the sink (flushes the output; a signer writes its final block).
    /// Returns (bytes, commands) of the stream as emitted.
    pub(crate) fn end(mut self) -> Result<(u64, u64), SendError> {
        self.emit(cmd::END, b"", &[])?;
        self.sink.finish().map_err(sink_error)?;
        Ok((self.totals.bytes, self.totals.commands))
    }
}

/// An attribute value as the emitter's schema lists give it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Bytes(&'a [u8]),
    U64(u64),
    U32(u32),
    Uuid(&'a Uuid),
    Time(Timespec),
}
use Value::{Bytes, Time, U32, U64};

fn lossy(p: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p))
}
