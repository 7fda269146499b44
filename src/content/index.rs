//! The local content index: block key → (seed file, block number), kept on disk.
//!
//! Built by this host from seed directories ([`ContentIndex::build`]): every regular file
//! beneath each seed is read and each non-zero 4 KiB block hashed. Three anonymous files
//! (`O_TMPFILE`, gone when closed) hold it, so memory stays bounded whatever the seeds hold:
//! - the table: an open-addressing hash table of 24-byte records `key[16] | file+1 u32 |
//!   block u32` (little-endian; `file+1 == 0` marks an empty slot) with 1.5 slots per block
//!   of the files, probed linearly from `key mod slots`; a lookup reads one 4 KiB window
//!   (170 slots) with `pread`, rarely more;
//! - the file table: 24-byte records `seed u32 | path length u32 | path offset u64 | size u64`;
//! - the path bytes, relative to their seed directory.
//!
//! Size: 36 bytes per 4 KiB block of the files (a file's last block counted whole), so 9 MiB
//! per GiB of seed data in large files, more for small ones (one block each), plus 24 bytes
//! and the path per file (bench/results/dedup.md has a measured size).
//!
//! The walk never follows a symlink, never leaves a seed directory (`RESOLVE_BENEATH`, no mount
//! crossings), and records regular files only. What the index says is a hint: a user of a
//! location opens the file again beneath its seed and compares bytes before keeping anything.

use super::{BLOCK, Key, block_key, is_zero};
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

const RECORD: usize = 24;
const FILE_RECORD: usize = 24;
/// Slots read per probe window: one 4 KiB page.
const WINDOW: u64 = 4096 / RECORD as u64;
/// Read buffer while hashing seed files.
const READ_BUF: usize = 1 << 20;

/// Errors of building or reading a content index.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A seed directory cannot be used.
    #[error("seed directory {}: {reason}", dir.display())]
    Seed {
        /// The directory as given.
        dir: PathBuf,
        /// Why.
        reason: String,
        /// The OS error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// Reading a seed or the index files failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file (a seed path, or the scratch directory for the index files).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// More seed files than an index can name.
    #[error("more than {} seed files", u32::MAX - 1)]
    TooManyFiles,
    /// The stop flag was set while indexing.
    #[error("indexing interrupted")]
    Interrupted,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn errno<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> ContentError + 'a {
    move |e| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Where indexed bytes lie: a file of the index and a block number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// File id in the index.
    pub file: u32,
    /// Block number (byte offset / 4096).
    pub block: u32,
}

/// A file of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFile {
    /// Index of its seed directory.
    pub seed: u32,
    /// Path relative to the seed directory.
    pub path: Vec<u8>,
    /// Size when it was indexed.
    pub size: u64,
}

/// A seed directory, opened (the path as given is followed; nothing beneath it is).
#[derive(Debug)]
pub struct Seed {
    path: PathBuf,
    root: OwnedFd,
}

impl Seed {
    /// Opens the directory `path`.
    ///
    /// # Errors
    /// [`ContentError::Seed`] if it cannot be opened as a directory.
    pub fn open(path: &Path) -> Result<Seed, ContentError> {
        let root = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContentError::Seed {
            dir: path.to_path_buf(),
            reason: "cannot open directory".into(),
            source: Some(e.into()),
        })?;
        Ok(Seed {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The directory as given.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its handle.
    #[must_use]
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

fn stopped(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Resolution beneath a seed: no symlink anywhere, no `..` escape, no mount crossing.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Opens a regular file for reading beneath `root`, never following a symlink. Returns it and
/// its current size; None when it is gone or no longer a regular file.
fn open_regular_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<Option<(File, u64)>> {
    let fd = match rfs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        beneath(),
    ) {
        Ok(fd) => fd,
        Err(
            rustix::io::Errno::NOENT
            | rustix::io::Errno::LOOP
            | rustix::io::Errno::XDEV
            | rustix::io::Errno::NOTDIR,
        ) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Ok(None);
    }
    Ok(Some((
        File::from(fd),
        u64::try_from(st.st_size).unwrap_or(0),
    )))
}

/// An anonymous file in `dir`, removed when closed.
fn scratch_file(dir: &Path) -> Result<File, ContentError> {
    let fd = rfs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno("create index file in", dir))?;
    Ok(File::from(fd))
}

/// What the walk found, written to the file table as it goes.
struct FileTableWriter {
    files: BufWriter<File>,
    paths: BufWriter<File>,
    count: u32,
    path_bytes: u64,
    blocks: u64,
    bytes: u64,
}

impl FileTableWriter {
    fn add(&mut self, seed: u32, rel: &[u8], size: u64) -> io::Result<bool> {
        if self.count == u32::MAX - 1 {
            return Ok(false);
        }
        let mut rec = [0u8; FILE_RECORD];
        rec[0..4].copy_from_slice(&seed.to_le_bytes());
        rec[4..8].copy_from_slice(&u32::try_from(rel.len()).unwrap_or(u32::MAX).to_le_bytes());
        rec[8..16].copy_from_slice(&self.path_bytes.to_le_bytes());
        rec[16..24].copy_from_slice(&size.to_le_bytes());
        self.files.write_all(&rec)?;
        self.paths.write_all(rel)?;
        self.path_bytes += rel.len() as u64;
        self.count += 1;
        self.blocks += size.div_ceil(BLOCK);
        self.bytes += size;
        Ok(true)
    }
}

/// Walks one seed depth-first, adding every regular file beneath it.
fn walk(
    seed_no: u32,
    seed: &Seed,
    skip: &dyn Fn(&[u8]) -> bool,
    stop: Option<&AtomicBool>,
    out: &mut FileTableWriter,
) -> Result<(), ContentError> {
    let fail = |op| io_err(op, seed.path());
    // Directories still to read, by path relative to the seed: each is opened when its turn
    // comes (beneath the seed, no symlinks, no mount crossing), so few handles are open at once.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        if stopped(stop) {
            return Err(ContentError::Interrupted);
        }
        let path: &[u8] = if rel.is_empty() { b"." } else { &rel };
        let dir = match rfs::openat2(
            seed.root(),
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        ) {
            Ok(fd) => fd,
            // Gone, replaced by a symlink, or another mount: not part of the seed.
            Err(
                rustix::io::Errno::NOENT
                | rustix::io::Errno::LOOP
                | rustix::io::Errno::XDEV
                | rustix::io::Errno::NOTDIR
                | rustix::io::Errno::ACCESS,
            ) if !rel.is_empty() => continue,
            Err(e) => return Err(fail("open directory")(e.into())),
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut rd = rfs::Dir::read_from(&dir).map_err(|e| fail("read directory")(e.into()))?;
        while let Some(ent) = rd.read() {
            let ent = ent.map_err(|e| fail("read directory")(e.into()))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." && !skip(name) {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            // Longer than PATH_MAX: cannot be opened by its path again.
            if child.len() >= 4096 {
                continue;
            }
            let st = match rfs::statat(&dir, name.as_slice(), rfs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(fail("stat")(e.into())),
            };
            match rfs::FileType::from_raw_mode(st.st_mode) {
                rfs::FileType::Directory => stack.push(child),
                rfs::FileType::RegularFile => {
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    if size > 0
                        && !out
                            .add(seed_no, &child, size)
                            .map_err(fail("write index"))?
                    {
                        return Err(ContentError::TooManyFiles);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The index: see the module documentation.
#[derive(Debug)]
pub struct ContentIndex {
    seeds: Vec<Seed>,
    scratch: PathBuf,
    table: File,
    slots: u64,
    files: File,
    paths: File,
    nfiles: u32,
    /// Bytes of the files indexed, and blocks recorded.
    bytes: u64,
    blocks: u64,
}

impl ContentIndex {
    /// Walks every seed, hashes each non-zero block of each regular file and records it. The
    /// index files are anonymous files in `scratch` (any writable directory; an on-disk one
    /// keeps memory bounded). `skip` names entries to leave out at any depth (for example the
    /// staging subvolumes of a receive in progress). Setting `stop` ends the work early.
    ///
    /// # Errors
    /// A seed or scratch directory that cannot be read or written; [`ContentError::TooManyFiles`];
    /// [`ContentError::Interrupted`].
    pub fn build(
        seeds: Vec<Seed>,
        scratch: &Path,
        skip: &dyn Fn(&[u8]) -> bool,
        stop: Option<&AtomicBool>,
    ) -> Result<ContentIndex, ContentError> {
        let files = scratch_file(scratch)?;
        let paths = scratch_file(scratch)?;
        let mut w = FileTableWriter {
            files: BufWriter::new(files.try_clone().map_err(io_err("dup", scratch))?),
            paths: BufWriter::new(paths.try_clone().map_err(io_err("dup", scratch))?),
            count: 0,
            path_bytes: 0,
            blocks: 0,
            bytes: 0,
        };
        for (i, seed) in seeds.iter().enumerate() {
            let no = u32::try_from(i).map_err(|_| ContentError::TooManyFiles)?;
            walk(no, seed, skip, stop, &mut w)?;
        }
        w.files.flush().map_err(io_err("write index", scratch))?;
        w.paths.flush().map_err(io_err("write index", scratch))?;
        // At most two thirds full (blocks counts every block, zeros included): a lookup of a
        // key not present scans ~6 slots on average, well within one window.
        let slots = w.blocks.saturating_add(w.blocks / 2).max(1024);
        let table = scratch_file(scratch)?;
        table
            .set_len(slots * RECORD as u64)
            .map_err(io_err("size index", scratch))?;
        let mut index = ContentIndex {
            seeds,
            scratch: scratch.to_path_buf(),
            table,
            slots,
            files,
            paths,
            nfiles: w.count,
            bytes: w.bytes,
            blocks: 0,
        };
        let mut buf = vec![0u8; READ_BUF];
        for id in 0..index.nfiles {
            if stopped(stop) {
                return Err(ContentError::Interrupted);
            }
            index.hash_file(id, &mut buf)?;
        }
        Ok(index)
    }

    /// Reads one file of the table and records its blocks (a file changed or gone since the
    /// walk is recorded as read now, or skipped).
    fn hash_file(&mut self, id: u32, buf: &mut [u8]) -> Result<(), ContentError> {
        let f = self.file(id)?;
        let Some(seed) = self.seeds.get(f.seed as usize) else {
            return Ok(());
        };
        let seed_path = seed.path().to_path_buf();
        let Some((mut file, _)) =
            open_regular_beneath(seed.root(), &f.path).map_err(io_err("open", &seed_path))?
        else {
            return Ok(());
        };
        let mut block: u64 = 0;
        loop {
            // Fill the buffer fully (a short read mid-file must not shift block boundaries).
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ContentError::Io {
                            op: "read",
                            path: seed_path.join(std::ffi::OsStr::from_bytes(&f.path)),
                            source: e,
                        });
                    }
                }
            }
            for chunk in buf[..n].chunks(BLOCK as usize) {
                let Ok(b) = u32::try_from(block) else {
                    return Ok(());
                };
                if !is_zero(chunk) {
                    self.insert(&block_key(chunk), id, b)?;
                }
                block += 1;
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    fn home(&self, key: &Key) -> u64 {
        let mut h = [0u8; 8];
        h.copy_from_slice(&key[..8]);
        u64::from_le_bytes(h) % self.slots
    }

    /// Reads the probe window at `slot` (up to the end of the table).
    fn window(
        &self,
        slot: u64,
        buf: &mut [u8; RECORD * WINDOW as usize],
    ) -> Result<usize, ContentError> {
        let n = WINDOW.min(self.slots - slot) as usize;
        self.table
            .read_exact_at(&mut buf[..n * RECORD], slot * RECORD as u64)
            .map_err(io_err("read index in", &self.scratch))?;
        Ok(n)
    }

    fn insert(&mut self, key: &Key, file: u32, block: u32) -> Result<(), ContentError> {
        let mut buf = [0u8; RECORD * WINDOW as usize];
        let mut slot = self.home(key);
        // At most two thirds full, so an empty slot is always found.
        loop {
            let n = self.window(slot, &mut buf)?;
            for i in 0..n {
                let rec = &buf[i * RECORD..(i + 1) * RECORD];
                if rec[16..20] == [0; 4] {
                    let mut r = [0u8; RECORD];
                    r[..16].copy_from_slice(key);
                    r[16..20].copy_from_slice(&(file + 1).to_le_bytes());
                    r[20..24].copy_from_slice(&block.to_le_bytes());
                    self.table
                        .write_all_at(&r, (slot + i as u64) * RECORD as u64)
                        .map_err(io_err("write index in", &self.scratch))?;
                    self.blocks += 1;
                    return Ok(());
                }
            }
            slot = (slot + n as u64) % self.slots;
        }
    }

    /// Every location recorded for `key`, into `out` (cleared first).
    ///
    /// # Errors
    /// Reading the table failed.
    pub fn lookup(&self, key: &Key, out: &mut Vec<Location>) -> Result<(), ContentError> {
        out.clear();
        let mut buf = [0u8; RECORD * WINDOW as usize];
        let mut slot = self.home(key);
        loop {
            let n = self.window(slot, &mut buf)?;
            for i in 0..n {
                let rec = &buf[i * RECORD..(i + 1) * RECORD];
                let file = u32::from_le_bytes([rec[16], rec[17], rec[18], rec[19]]);
                if file == 0 {
                    return Ok(());
                }
                if rec[..16] == key[..] {
                    out.push(Location {
                        file: file - 1,
                        block: u32::from_le_bytes([rec[20], rec[21], rec[22], rec[23]]),
                    });
                }
            }
            slot = (slot + n as u64) % self.slots;
        }
    }

    /// File `id` of the index.
    ///
    /// # Errors
    /// Reading the file table failed, or `id` is not in it.
    pub fn file(&self, id: u32) -> Result<SeedFile, ContentError> {
        let bad = || ContentError::Io {
            op: "read index in",
            path: self.scratch.clone(),
            source: io::ErrorKind::InvalidData.into(),
        };
        if id >= self.nfiles {
            return Err(bad());
        }
        let mut rec = [0u8; FILE_RECORD];
        self.files
            .read_exact_at(&mut rec, u64::from(id) * FILE_RECORD as u64)
            .map_err(io_err("read index in", &self.scratch))?;
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&rec[r]);
            u64::from_le_bytes(b)
        };
        let len = usize::try_from(word(4..8)).map_err(|_| bad())?;
        if len > 4096 {
            return Err(bad());
        }
        let mut path = vec![0u8; len];
        self.paths
            .read_exact_at(&mut path, word(8..16))
            .map_err(io_err("read index in", &self.scratch))?;
        Ok(SeedFile {
            seed: u32::try_from(word(0..4)).map_err(|_| bad())?,
            path,
            size: word(16..24),
        })
    }

    /// Opens file `id` for reading, again beneath its seed directory and without following
    /// symlinks, with its size now. None when it is gone or no longer a regular file.
    ///
    /// # Errors
    /// Reading the index or opening the file failed otherwise.
    pub fn open_file(&self, id: u32) -> Result<Option<(File, u64)>, ContentError> {
        let f = self.file(id)?;
        let Some(seed) = self.seeds.get(f.seed as usize) else {
            return Ok(None);
        };
        open_regular_beneath(seed.root(), &f.path).map_err(io_err("open", seed.path()))
    }

    /// The seed directories.
    #[must_use]
    pub fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    /// Files indexed.
    #[must_use]
    pub fn files(&self) -> u64 {
        u64::from(self.nfiles)
    }

    /// Bytes of the files indexed.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Blocks recorded (non-zero blocks).
    #[must_use]
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Bytes the index occupies on disk (table, file table, paths).
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        let len = |f: &File| f.metadata().map(|m| m.len()).unwrap_or(0);
        len(&self.table) + len(&self.files) + len(&self.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn data(seed: u8, len: usize) -> Vec<u8> {
        let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn build(dir: &Path) -> ContentIndex {
        let scratch = tempfile::tempdir().unwrap();
        let idx = ContentIndex::build(
            vec![Seed::open(dir).unwrap()],
            scratch.path(),
            &|_| false,
            None,
        );
        idx.unwrap()
    }

    #[test]
    fn finds_every_block_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let a = data(1, 3 * 4096 + 100);
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a"), &a).unwrap();
        let mut z = vec![0u8; 8192];
        z.extend_from_slice(&data(2, 4096));
        fs::write(dir.path().join("z"), &z).unwrap();
        fs::write(dir.path().join("empty"), b"").unwrap();
        let idx = build(dir.path());
        assert_eq!(idx.files(), 2);
        // Zero blocks are not recorded.
        assert_eq!(idx.blocks(), 4 + 1);
        let mut out = Vec::new();
        for (i, block) in a.chunks(4096).enumerate() {
            idx.lookup(&block_key(block), &mut out).unwrap();
            assert_eq!(out.len(), 1);
            let f = idx.file(out[0].file).unwrap();
            assert_eq!(f.path, b"sub/a");
            assert_eq!(f.size, a.len() as u64);
            assert_eq!(out[0].block as usize, i);
        }
        idx.lookup(&block_key(&z[8192..]), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].block, 2);
        idx.lookup(&block_key(&[0; 4096]), &mut out).unwrap();
        assert!(out.is_empty());
        idx.lookup(&block_key(b"nothing"), &mut out).unwrap();
        assert!(out.is_empty());
        idx.lookup(&block_key(&a[..4096]), &mut out).unwrap();
        let (mut f, size) = idx.open_file(out[0].file).unwrap().unwrap();
        assert_eq!(size, a.len() as u64);
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn duplicate_blocks_give_every_location() {
        let dir = tempfile::tempdir().unwrap();
        let b = data(3, 4096);
        let mut two = b.clone();
        two.extend_from_slice(&b);
        fs::write(dir.path().join("x"), &two).unwrap();
        fs::write(dir.path().join("y"), &b).unwrap();
        let idx = build(dir.path());
        let mut out = Vec::new();
        idx.lookup(&block_key(&b), &mut out).unwrap();
        out.sort_by_key(|l| (l.file, l.block));
        assert_eq!(
            out,
            [
                Location { file: 0, block: 0 },
                Location { file: 0, block: 1 },
                Location { file: 1, block: 0 }
            ]
        );
    }

    #[test]
    fn many_blocks_fill_the_table_without_losing_any() {
        let dir = tempfile::tempdir().unwrap();
        // 3000 blocks: more than the minimum table's half, so it is sized from the count.
        let a = data(4, 3000 * 4096);
        fs::write(dir.path().join("big"), &a).unwrap();
        let idx = build(dir.path());
        assert_eq!(idx.blocks(), 3000);
        let mut out = Vec::new();
        for (i, block) in a.chunks(4096).enumerate().step_by(37) {
            idx.lookup(&block_key(block), &mut out).unwrap();
            assert!(
                out.contains(&Location {
                    file: 0,
                    block: i as u32
                }),
                "block {i}"
            );
        }
        assert!(idx.disk_bytes() >= 4500 * RECORD as u64);
    }

    #[test]
    fn never_follows_symlinks_or_leaves_the_seed() {
        let outside = tempfile::tempdir().unwrap();
        let secret = data(5, 8192);
        fs::write(outside.path().join("secret"), &secret).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("filelink"))
            .unwrap();
        fs::write(dir.path().join("own"), data(6, 4096)).unwrap();
        let idx = build(dir.path());
        assert_eq!(idx.files(), 1);
        let mut out = Vec::new();
        idx.lookup(&block_key(&secret[..4096]), &mut out).unwrap();
        assert!(out.is_empty());
        // A file replaced by a symlink after indexing is not opened through it.
        fs::remove_file(dir.path().join("own")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("own")).unwrap();
        assert!(idx.open_file(0).unwrap().is_none());
    }

    #[test]
    fn a_set_stop_flag_ends_indexing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), data(9, 4096)).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(true);
        let r = ContentIndex::build(
            vec![Seed::open(dir.path()).unwrap()],
            scratch.path(),
            &|_| false,
            Some(&stop),
        );
        assert!(matches!(r, Err(ContentError::Interrupted)));
    }

    #[test]
    fn skipped_names_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("skipme")).unwrap();
        fs::write(dir.path().join("skipme/f"), data(7, 4096)).unwrap();
        fs::write(dir.path().join("kept"), data(8, 4096)).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let idx = ContentIndex::build(
            vec![Seed::open(dir.path()).unwrap()],
            scratch.path(),
            &|n| n == b"skipme",
            None,
        )
        .unwrap();
        assert_eq!(idx.files(), 1);
        assert_eq!(idx.file(0).unwrap().path, b"kept");
    }
}
