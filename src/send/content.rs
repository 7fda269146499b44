//! Reading file contents for the tree sources: open with a change check, data ranges from
//! SEEK_DATA/SEEK_HOLE, chunked streaming (never a whole file in memory), content hashes.

use super::SendError;
use super::tree::Inode;
use crate::stream::Timespec;
use crate::util::fs::PathError;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Block size used for clone alignment and block deltas (the btrfs sector size on 4 KiB pages).
pub(crate) const BLOCK: u64 = 4096;

/// Files at most this large are never cloned: they may be inline extents on the receiver,
/// and a clone costs about as much as a write (the kernel makes the same call for one sector).
pub(crate) const MIN_CLONE_SIZE: u64 = BLOCK + 1;

/// A source file opened for reading, checked against the metadata of the walk.
pub(crate) struct SourceFile {
    pub file: File,
    pub path: PathBuf,
    pub size: u64,
    /// Data ranges (start, end), clamped to `size`; everything else is a hole.
    pub ranges: Vec<(u64, u64)>,
    mtime: Timespec,
    ctime: Timespec,
}

fn changed(path: &Path, what: &'static str) -> SendError {
    SendError::FileChanged {
        path: path.to_path_buf(),
        what,
    }
}

fn stat_times(f: &File, path: &Path) -> Result<(u64, Timespec, Timespec), SendError> {
    let st = rustix::fs::fstat(f)
        .map_err(|e| SendError::Io(PathError::new("stat", path.to_path_buf(), e.into())))?;
    Ok((
        u64::try_from(st.st_size).unwrap_or(0),
        Timespec {
            sec: st.st_mtime,
            nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        },
        Timespec {
            sec: st.st_ctime,
            nsec: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
        },
    ))
}

impl SourceFile {
    /// Opens `path` (not following symlinks, without touching atime) and checks it still has
    /// the size, mtime and ctime the walk saw.
    pub(crate) fn open(path: PathBuf, inode: &Inode) -> Result<SourceFile, SendError> {
        let file = crate::util::fsread::open_noatime(&path)
            .map_err(|source| SendError::Io(PathError::new("open", path.clone(), source)))?;
        let (size, mtime, ctime) = stat_times(&file, &path)?;
        if size != inode.size {
            return Err(changed(&path, "size"));
        }
        if mtime != inode.mtime || ctime != inode.ctime {
            return Err(changed(&path, "modification time"));
        }
        let ranges = crate::util::fsread::data_ranges(&file, size)
            .map_err(|source| SendError::Io(PathError::new("seek", path.clone(), source)))?;
        Ok(SourceFile {
            file,
            path,
            size,
            ranges,
            mtime,
            ctime,
        })
    }

    /// Checks, after reading, that the file did not change meanwhile.
    pub(crate) fn finish(&self) -> Result<(), SendError> {
        let (size, mtime, ctime) = stat_times(&self.file, &self.path)?;
        if size != self.size {
            return Err(changed(&self.path, "size"));
        }
        if mtime != self.mtime || ctime != self.ctime {
            return Err(changed(&self.path, "modification time"));
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `off`; a short read means the file shrank.
    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), SendError> {
        match self.file.read_exact_at(buf, off) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(changed(&self.path, "size")),
            Err(source) => Err(SendError::Io(PathError::new(
                "read",
                self.path.clone(),
                source,
            ))),
        }
    }

    /// Calls `f(offset, bytes)` for every data range in chunks of at most `chunk` bytes (split
    /// per range, as the kernel splits per extent).
    pub(crate) fn for_each_chunk(
        &self,
        chunk: usize,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        buf.resize(chunk, 0);
        for &(start, end) in &self.ranges {
            let mut off = start;
            while off < end {
                let n = usize::try_from((end - off).min(chunk as u64)).unwrap_or(chunk);
                self.read_at(&mut buf[..n], off)?;
                f(off, &buf[..n])?;
                off += n as u64;
            }
        }
        Ok(())
    }

    /// True when the block starting at `off` holds data (overlaps a data range).
    pub(crate) fn is_data(&self, off: u64) -> bool {
        block_is_data(&self.ranges, off)
    }
}

/// True when `[off, off + BLOCK)` overlaps one of `ranges` (sorted, disjoint).
pub(crate) fn block_is_data(ranges: &[(u64, u64)], off: u64) -> bool {
    let end = off + BLOCK;
    let i = ranges.partition_point(|&(_, e)| e <= off);
    i < ranges.len() && ranges[i].0 < end
}

/// Incremental content hash: the data-range layout and the bytes, so two files with the same
/// hash can be cloned one from the other with holes in the same places.
pub(crate) struct ContentHasher(Sha256);

impl ContentHasher {
    pub(crate) fn new(sf: &SourceFile) -> ContentHasher {
        let mut h = Sha256::new();
        h.update(sf.size.to_le_bytes());
        for (s, e) in &sf.ranges {
            h.update(s.to_le_bytes());
            h.update(e.to_le_bytes());
        }
        ContentHasher(h)
    }

    pub(crate) fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Hashes a whole file (layout and bytes).
pub(crate) fn hash_file(sf: &SourceFile, buf: &mut Vec<u8>) -> Result<[u8; 32], SendError> {
    let mut h = ContentHasher::new(sf);
    sf.for_each_chunk(1 << 20, buf, |_, b| {
        h.update(b);
        Ok(())
    })?;
    sf.finish()?;
    Ok(h.finish())
}
