//! The local content index: block key → (seed file, block number), kept on disk.
//!
//! Built by this host from seed directories ([`ContentIndex::build`]): every regular file
//! beneath each seed is read and each non-zero 4 KiB block hashed, and each non-zero
//! [`DATA_WINDOW`] at a multiple of it (the last one up to the end of the file), which a
//! content map names by one key (see [`super::map`]); its location is its first block. Three anonymous files
//! (`O_TMPFILE`, gone when closed) hold it, so memory stays bounded whatever the seeds hold:
//! - the table: an open-addressing hash table of 24-byte records `key[16] | file+1 u32 |
//!   block u32` (little-endian; `file+1 == 0` marks an empty slot) with 1.5 slots per block
//!   of the files, probed linearly from `key mod slots`; a lookup reads one 4 KiB window
//!   (170 slots) with `pread`, rarely more;
//! - the file table: 24-byte records `seed u32 | path length u32 | path offset u64 | size u64`;
//! - the path bytes, relative to their seed directory.
//!
//! Size: 36 bytes per 4 KiB block of the files (a file's last block counted whole) and per
//! 64 KiB window, so 9.6 MiB per GiB of seed data in large files, more for small ones (one
//! block and one window each), plus 24 bytes and the path per file (bench/results/dedup.md has a measured size).
//!
//! Saved ([`ContentIndex::save`]), an index is one file: an 80-byte header (magic
//! `SVCIDX\r\n`, format version u32, seed count u32, slots u64, files u32, 4 zero bytes, path
//! bytes u64, file bytes u64, blocks u64, the first 16 bytes of a BLAKE3 of the rest, 8 zero
//! bytes; little-endian), then the table, the file table and the paths. Opened again
//! ([`ContentIndex::open`]) with the seed directories its paths are relative to, it is read in
//! place with `pread`; the header must describe the file's length exactly, [`ContentIndex::verify`]
//! checks the digest. Saved indexes of several trees are used as one with
//! [`ContentIndex::join`] (file ids run on from part to part).
//!
//! The walk never follows a symlink, never leaves a seed directory (`RESOLVE_BENEATH`, no mount
//! crossings), and records regular files only. What the index says is a hint: a user of a
//! location opens the file again beneath its seed and compares bytes before keeping anything.

use super::{BLOCK, DATA_WINDOW, Key, block_key, is_zero};
use crate::util::fs::{AtomicFile, PathError};
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const RECORD: usize = 24;
const FILE_RECORD: usize = 24;
/// Slots read per probe window: one 4 KiB page.
const WINDOW: u64 = 4096 / RECORD as u64;
/// Read buffer while hashing seed files.
const READ_BUF: usize = 1 << 20;
/// Largest table built in memory (64 MiB: 1.7 million blocks, 7 GiB of data); larger ones are
/// built in their file.
const MEM_TABLE_MAX: usize = 64 << 20;

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
    /// A saved index file is not one, or not whole: it must not be used (build it again).
    #[error("content index {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only an index of one part (one build, or one saved file) can be saved.
    #[error("a joined content index cannot be saved")]
    ManyParts,
    /// Listing a pool's subvolumes failed.
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
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

fn path_err(e: PathError) -> ContentError {
    ContentError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
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
        self.blocks += size.div_ceil(BLOCK) + size.div_ceil(DATA_WINDOW);
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

/// A stretch of a file holding one section of an index: a whole scratch file, or a section of
/// a saved index file. Reads beyond its length are refused (a saved file may be corrupt).
#[derive(Debug)]
struct Section {
    file: Arc<File>,
    base: u64,
    len: u64,
}

impl Section {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::ErrorKind::InvalidData.into());
        }
        self.file.read_exact_at(buf, self.base + offset)
    }
}

/// One index: its seeds and its three sections (see the module documentation).
#[derive(Debug)]
struct Part {
    seeds: Vec<Seed>,
    /// The saved file, or the scratch directory (for messages).
    path: PathBuf,
    table: Section,
    files: Section,
    paths: Section,
    slots: u64,
    nfiles: u32,
    bytes: u64,
    blocks: u64,
    /// A saved file's digest of its sections.
    digest: Option<[u8; 16]>,
    /// While [`ContentIndex::build`] fills a table small enough to hold in memory, the table
    /// (written to `table` once full): two system calls per block otherwise cost more than
    /// hashing it.
    building: Option<Vec<u8>>,
}

impl Part {
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
        let at = slot * RECORD as u64;
        match &self.building {
            Some(mem) => {
                let src = usize::try_from(at)
                    .ok()
                    .and_then(|a| mem.get(a..a + n * RECORD))
                    .ok_or_else(|| ContentError::Io {
                        op: "read index",
                        path: self.path.clone(),
                        source: io::ErrorKind::InvalidData.into(),
                    })?;
                buf[..n * RECORD].copy_from_slice(src);
            }
            None => self
                .table
                .read_at(&mut buf[..n * RECORD], at)
                .map_err(io_err("read index", &self.path))?,
        }
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
                    let at = (slot + i as u64) * RECORD as u64;
                    match &mut self.building {
                        Some(mem) => {
                            let at = usize::try_from(at).unwrap_or(usize::MAX);
                            if let Some(dst) = mem.get_mut(at..at + RECORD) {
                                dst.copy_from_slice(&r);
                            }
                        }
                        None => self
                            .table
                            .file
                            .write_all_at(&r, at)
                            .map_err(io_err("write index in", &self.path))?,
                    }
                    self.blocks += 1;
                    return Ok(());
                }
            }
            slot = (slot + n as u64) % self.slots;
        }
    }

    /// Appends the locations of `key` in this part, file ids offset by `base`.
    fn lookup(&self, key: &Key, base: u32, out: &mut Vec<Location>) -> Result<(), ContentError> {
        let mut buf = [0u8; RECORD * WINDOW as usize];
        let mut slot = self.home(key);
        // A saved table may be corrupt (no empty slot): never probe more than all of it.
        let mut left = self.slots;
        while left > 0 {
            let n = self.window(slot, &mut buf)?;
            for i in 0..n {
                let rec = &buf[i * RECORD..(i + 1) * RECORD];
                let file = u32::from_le_bytes([rec[16], rec[17], rec[18], rec[19]]);
                if file == 0 {
                    return Ok(());
                }
                if rec[..16] == key[..]
                    && let Some(id) = base.checked_add(file - 1)
                {
                    out.push(Location {
                        file: id,
                        block: u32::from_le_bytes([rec[20], rec[21], rec[22], rec[23]]),
                    });
                }
            }
            left = left.saturating_sub(n as u64);
            slot = (slot + n as u64) % self.slots;
        }
        Ok(())
    }

    /// File `id` of this part (its seed number local to the part).
    fn file(&self, id: u32) -> Result<SeedFile, ContentError> {
        let bad = || ContentError::Io {
            op: "read index",
            path: self.path.clone(),
            source: io::ErrorKind::InvalidData.into(),
        };
        if id >= self.nfiles {
            return Err(bad());
        }
        let mut rec = [0u8; FILE_RECORD];
        self.files
            .read_at(&mut rec, u64::from(id) * FILE_RECORD as u64)
            .map_err(io_err("read index", &self.path))?;
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
            .read_at(&mut path, word(8..16))
            .map_err(io_err("read index", &self.path))?;
        Ok(SeedFile {
            seed: u32::try_from(word(0..4)).map_err(|_| bad())?,
            path,
            size: word(16..24),
        })
    }

    fn disk_bytes(&self) -> u64 {
        self.table.len + self.files.len + self.paths.len
    }
}

/// The index: see the module documentation. One or more parts (built here, or saved files
/// opened with [`ContentIndex::open`] and put together with [`ContentIndex::join`]); file ids
/// and seed numbers run on across the parts, so a user sees one index.
#[derive(Debug, Clone)]
pub struct ContentIndex {
    parts: Vec<Arc<Part>>,
    /// The first file id of each part.
    file_base: Vec<u32>,
    /// The first seed number of each part.
    seed_base: Vec<u32>,
}

/// The saved file's header: magic, format version, counts, and a BLAKE3 of the sections.
const MAGIC: &[u8; 8] = b"SVCIDX\r\n";
/// 2: windows are named too (format 1 files are rebuilt).
const FORMAT: u32 = 2;
const HEADER: usize = 80;

/// What a saved file's header says.
struct Header {
    seeds: u32,
    slots: u64,
    nfiles: u32,
    path_bytes: u64,
    bytes: u64,
    blocks: u64,
    digest: [u8; 16],
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[12..16].copy_from_slice(&self.seeds.to_le_bytes());
        h[16..24].copy_from_slice(&self.slots.to_le_bytes());
        h[24..28].copy_from_slice(&self.nfiles.to_le_bytes());
        h[32..40].copy_from_slice(&self.path_bytes.to_le_bytes());
        h[40..48].copy_from_slice(&self.bytes.to_le_bytes());
        h[48..56].copy_from_slice(&self.blocks.to_le_bytes());
        h[56..72].copy_from_slice(&self.digest);
        h
    }

    /// Checks the header against the file's length: the sections it names must tile the file
    /// exactly.
    fn decode(h: &[u8; HEADER], file_len: u64) -> Result<Header, String> {
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if &h[0..8] != MAGIC {
            return Err("not a content index (bad magic)".into());
        }
        let version = u32_at(8);
        if version != FORMAT {
            return Err(format!("format version {version}, not {FORMAT}"));
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&h[56..72]);
        let hd = Header {
            seeds: u32_at(12),
            slots: u64_at(16),
            nfiles: u32_at(24),
            path_bytes: u64_at(32),
            bytes: u64_at(40),
            blocks: u64_at(48),
            digest,
        };
        if hd.slots == 0 || hd.blocks > hd.slots || hd.nfiles == u32::MAX {
            return Err("inconsistent counts".into());
        }
        let want = hd
            .slots
            .checked_mul(RECORD as u64)
            .and_then(|t| t.checked_add(u64::from(hd.nfiles) * FILE_RECORD as u64))
            .and_then(|t| t.checked_add(hd.path_bytes))
            .and_then(|t| t.checked_add(HEADER as u64));
        if want != Some(file_len) {
            return Err(format!(
                "{file_len} bytes, its header describes {}",
                want.map_or_else(|| "more than 2^64".into(), |w| w.to_string())
            ));
        }
        Ok(hd)
    }
}

/// Feeds `len` bytes of `section` from its start to `hasher` and, if given, to `out`.
fn copy_section(
    section: &Section,
    hasher: &mut blake3::Hasher,
    mut out: Option<&mut dyn Write>,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut at = 0;
    while at < section.len {
        let n = buf
            .len()
            .min(usize::try_from(section.len - at).unwrap_or(usize::MAX));
        section.read_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        if let Some(o) = out.as_mut() {
            o.write_all(&buf[..n])?;
        }
        at += n as u64;
    }
    Ok(())
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
        Self::build_with(seeds, scratch, skip, stop, MEM_TABLE_MAX)
    }

    /// [`ContentIndex::build`], with the table built in memory when it is at most `mem_max`
    /// bytes.
    fn build_with(
        seeds: Vec<Seed>,
        scratch: &Path,
        skip: &dyn Fn(&[u8]) -> bool,
        stop: Option<&AtomicBool>,
        mem_max: usize,
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
        let whole = |file: File, len: u64| Section {
            file: Arc::new(file),
            base: 0,
            len,
        };
        let mut part = Part {
            seeds,
            path: scratch.to_path_buf(),
            table: whole(table, slots * RECORD as u64),
            files: whole(files, u64::from(w.count) * FILE_RECORD as u64),
            paths: whole(paths, w.path_bytes),
            slots,
            nfiles: w.count,
            bytes: w.bytes,
            blocks: 0,
            digest: None,
            building: usize::try_from(slots * RECORD as u64)
                .ok()
                .filter(|&n| n <= mem_max)
                .map(|n| vec![0u8; n]),
        };
        let mut buf = vec![0u8; READ_BUF];
        for id in 0..part.nfiles {
            if stopped(stop) {
                return Err(ContentError::Interrupted);
            }
            hash_file(&mut part, id, &mut buf)?;
        }
        if let Some(mem) = part.building.take() {
            part.table
                .file
                .write_all_at(&mem, 0)
                .map_err(io_err("write index in", scratch))?;
        }
        Ok(ContentIndex {
            parts: vec![Arc::new(part)],
            file_base: vec![0],
            seed_base: vec![0],
        })
    }

    /// Saves this index (of one part) as the file `path`, atomically: a header (magic, format
    /// version, counts, a BLAKE3 of what follows), then the table, the file table and the
    /// paths. Open it again with [`ContentIndex::open`] and the same seeds.
    ///
    /// # Errors
    /// [`ContentError::ManyParts`] for a joined index; I/O errors (the file is then not made).
    pub fn save(&self, path: &Path) -> Result<(), ContentError> {
        let [part] = self.parts.as_slice() else {
            return Err(ContentError::ManyParts);
        };
        let mut out = AtomicFile::create(path, 0o644).map_err(path_err)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; READ_BUF];
        // The header goes last, when the digest is known; its place is kept.
        out.write_all(&[0u8; HEADER])
            .map_err(io_err("write", path))?;
        for s in [&part.table, &part.files, &part.paths] {
            copy_section(s, &mut hasher, Some(&mut out), &mut buf)
                .map_err(io_err("write", path))?;
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        let header = Header {
            seeds: u32::try_from(part.seeds.len()).map_err(|_| ContentError::TooManyFiles)?,
            slots: part.slots,
            nfiles: part.nfiles,
            path_bytes: part.paths.len,
            bytes: part.bytes,
            blocks: part.blocks,
            digest,
        };
        out.file()
            .write_all_at(&header.encode(), 0)
            .map_err(io_err("write", path))?;
        out.commit().map_err(path_err)
    }

    /// Opens a saved index read-only; lookups read it with `pread`. `seeds` are the
    /// directories its paths are relative to, in the order given to [`ContentIndex::build`].
    /// The header is checked against the file's length; the sections are not read (see
    /// [`ContentIndex::verify`]): what a location says is checked by its user anyway.
    ///
    /// # Errors
    /// [`ContentError::Corrupt`] for a file that is no index, truncated or inconsistent, or
    /// saved with another number of seeds; I/O errors.
    pub fn open(path: &Path, seeds: Vec<Seed>) -> Result<ContentIndex, ContentError> {
        let corrupt = |reason: String| ContentError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(errno("open", path))?;
        let st = rfs::fstat(&fd).map_err(errno("stat", path))?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
            return Err(corrupt("not a regular file".into()));
        }
        let file = Arc::new(File::from(fd));
        let len = u64::try_from(st.st_size).unwrap_or(0);
        let mut h = [0u8; HEADER];
        if len < HEADER as u64 {
            return Err(corrupt(format!("{len} bytes, shorter than its header")));
        }
        file.read_exact_at(&mut h, 0)
            .map_err(io_err("read", path))?;
        let hd = Header::decode(&h, len).map_err(corrupt)?;
        if u64::from(hd.seeds) != seeds.len() as u64 {
            return Err(corrupt(format!(
                "saved with {} seed directories, opened with {}",
                hd.seeds,
                seeds.len()
            )));
        }
        let table_len = hd.slots * RECORD as u64;
        let files_len = u64::from(hd.nfiles) * FILE_RECORD as u64;
        let section = |base: u64, len: u64| Section {
            file: Arc::clone(&file),
            base,
            len,
        };
        let part = Part {
            seeds,
            path: path.to_path_buf(),
            table: section(HEADER as u64, table_len),
            files: section(HEADER as u64 + table_len, files_len),
            paths: section(HEADER as u64 + table_len + files_len, hd.path_bytes),
            slots: hd.slots,
            nfiles: hd.nfiles,
            bytes: hd.bytes,
            blocks: hd.blocks,
            digest: Some(hd.digest),
            building: None,
        };
        let index = ContentIndex {
            parts: vec![Arc::new(part)],
            file_base: vec![0],
            seed_base: vec![0],
        };
        Ok(index)
    }

    /// Reads every saved part whole and checks it against the digest in its header (parts
    /// built here have none to check).
    ///
    /// # Errors
    /// [`ContentError::Corrupt`] when a part's sections differ from what was saved; I/O errors.
    pub fn verify(&self) -> Result<(), ContentError> {
        let mut buf = vec![0u8; READ_BUF];
        for part in &self.parts {
            let Some(want) = part.digest else { continue };
            let mut hasher = blake3::Hasher::new();
            for s in [&part.table, &part.files, &part.paths] {
                copy_section(s, &mut hasher, None, &mut buf).map_err(io_err("read", &part.path))?;
            }
            if hasher.finalize().as_bytes()[..16] != want {
                return Err(ContentError::Corrupt {
                    path: part.path.clone(),
                    reason: "its contents differ from what was saved (digest mismatch)".into(),
                });
            }
        }
        Ok(())
    }

    /// One index over the parts of all of `indexes` (their files stay shared, nothing is
    /// copied): a lookup finds locations in any of them.
    ///
    /// # Errors
    /// [`ContentError::TooManyFiles`] when the parts hold more files or seeds than a `u32`
    /// numbers.
    pub fn join<'a>(
        indexes: impl IntoIterator<Item = &'a ContentIndex>,
    ) -> Result<ContentIndex, ContentError> {
        let mut out = ContentIndex {
            parts: Vec::new(),
            file_base: Vec::new(),
            seed_base: Vec::new(),
        };
        let (mut files, mut seeds) = (0u32, 0u32);
        for part in indexes.into_iter().flat_map(|i| i.parts.iter()) {
            out.parts.push(Arc::clone(part));
            out.file_base.push(files);
            out.seed_base.push(seeds);
            files = files
                .checked_add(part.nfiles)
                .filter(|&n| n < u32::MAX)
                .ok_or(ContentError::TooManyFiles)?;
            seeds = u32::try_from(part.seeds.len())
                .ok()
                .and_then(|n| seeds.checked_add(n))
                .ok_or(ContentError::TooManyFiles)?;
        }
        Ok(out)
    }

    /// Every location recorded for `key` in any part, into `out` (cleared first).
    ///
    /// # Errors
    /// Reading a table failed.
    pub fn lookup(&self, key: &Key, out: &mut Vec<Location>) -> Result<(), ContentError> {
        out.clear();
        for (part, &base) in self.parts.iter().zip(&self.file_base) {
            part.lookup(key, base, out)?;
        }
        Ok(())
    }

    /// The part holding file `id`, with its local id and the part's first seed number.
    fn part_of(&self, id: u32) -> Option<(&Part, u32, u32)> {
        let i = self
            .file_base
            .partition_point(|&b| b <= id)
            .checked_sub(1)?;
        let part = &self.parts[i];
        let local = id - self.file_base[i];
        (local < part.nfiles).then_some((&**part, local, self.seed_base[i]))
    }

    /// File `id` of the index (its seed numbered across all parts).
    ///
    /// # Errors
    /// Reading the file table failed, or `id` is not in it.
    pub fn file(&self, id: u32) -> Result<SeedFile, ContentError> {
        let Some((part, local, seed_base)) = self.part_of(id) else {
            return Err(ContentError::Io {
                op: "read index",
                path: self
                    .parts
                    .first()
                    .map(|p| p.path.clone())
                    .unwrap_or_default(),
                source: io::ErrorKind::InvalidData.into(),
            });
        };
        let mut f = part.file(local)?;
        f.seed = f.seed.saturating_add(seed_base);
        Ok(f)
    }

    /// Opens file `id` for reading, again beneath its seed directory and without following
    /// symlinks, with its size now. None when it is gone or no longer a regular file.
    ///
    /// # Errors
    /// Reading the index or opening the file failed otherwise.
    pub fn open_file(&self, id: u32) -> Result<Option<(File, u64)>, ContentError> {
        let Some((part, local, _)) = self.part_of(id) else {
            return Ok(None);
        };
        let f = part.file(local)?;
        let Some(seed) = part.seeds.get(f.seed as usize) else {
            return Ok(None);
        };
        open_regular_beneath(seed.root(), &f.path).map_err(io_err("open", seed.path()))
    }

    /// The seed directories of all parts, in seed-number order.
    pub fn seeds(&self) -> impl Iterator<Item = &Seed> {
        self.parts.iter().flat_map(|p| p.seeds.iter())
    }

    /// Number of parts (saved files or builds) joined.
    #[must_use]
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Files indexed.
    #[must_use]
    pub fn files(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.nfiles)).sum()
    }

    /// Bytes of the files indexed.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    /// Keys recorded: non-zero blocks, and non-zero windows longer than a block.
    #[must_use]
    pub fn blocks(&self) -> u64 {
        self.parts.iter().map(|p| p.blocks).sum()
    }

    /// Bytes the index occupies on disk (tables, file tables, paths; headers not counted).
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.disk_bytes()).sum()
    }
}

/// Reads one file of the part's table and records its blocks (a file changed or gone since
/// the walk is recorded as read now, or skipped).
fn hash_file(part: &mut Part, id: u32, buf: &mut [u8]) -> Result<(), ContentError> {
    let f = part.file(id)?;
    let Some(seed) = part.seeds.get(f.seed as usize) else {
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
        // READ_BUF is a multiple of the window: a short window is the end of the file.
        for window in buf[..n].chunks(DATA_WINDOW as usize) {
            let Ok(first) = u32::try_from(block) else {
                return Ok(());
            };
            if is_zero(window) {
                block += window.len().div_ceil(BLOCK as usize) as u64;
                continue;
            }
            // A window of one block or less has the key of that block.
            if window.len() > BLOCK as usize {
                part.insert(&block_key(window), id, first)?;
            }
            for chunk in window.chunks(BLOCK as usize) {
                let Ok(b) = u32::try_from(block) else {
                    return Ok(());
                };
                if !is_zero(chunk) {
                    part.insert(&block_key(chunk), id, b)?;
                }
                block += 1;
            }
        }
        if n < buf.len() {
            return Ok(());
        }
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
        // Zero blocks are not recorded; windows longer than a block are (a: 4 blocks and a
        // window; z: one block and its window, not zero as a whole).
        assert_eq!(idx.blocks(), 4 + 1 + 1 + 1);
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
    fn windows_are_found_at_their_first_block() {
        let dir = tempfile::tempdir().unwrap();
        // Two full windows, then a partial one of 3 blocks and 100 bytes up to the end.
        let a = data(7, 2 * 65_536 + 3 * 4096 + 100);
        fs::write(dir.path().join("a"), &a).unwrap();
        let idx = build(dir.path());
        let mut out = Vec::new();
        for (i, w) in a.chunks(65_536).enumerate() {
            idx.lookup(&block_key(w), &mut out).unwrap();
            assert_eq!(out.len(), 1, "window {i}");
            assert_eq!(out[0].block as usize, i * 16);
        }
        // A window not at a multiple of 64 KiB is not named.
        idx.lookup(&block_key(&a[4096..4096 + 65_536]), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn many_blocks_fill_the_table_without_losing_any() {
        let dir = tempfile::tempdir().unwrap();
        // 3000 blocks: more than the minimum table's half, so it is sized from the count.
        let a = data(4, 3000 * 4096);
        fs::write(dir.path().join("big"), &a).unwrap();
        let idx = build(dir.path());
        // And 188 windows.
        assert_eq!(idx.blocks(), 3000 + 188);
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

    /// A table built in memory and one built in its file are the same bytes.
    #[test]
    fn tables_built_in_memory_and_in_a_file_are_equal() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20u64 {
            fs::write(
                dir.path().join(format!("f{i}")),
                data(i as u8, 4096 * (i as usize % 7) + 13),
            )
            .unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let saved = |mem_max: usize, name: &str| {
            let seeds = vec![Seed::open(dir.path()).unwrap()];
            let idx =
                ContentIndex::build_with(seeds, dir.path(), &|_| false, None, mem_max).unwrap();
            let p = out.path().join(name);
            idx.save(&p).unwrap();
            fs::read(p).unwrap()
        };
        let (mem, file) = (saved(MEM_TABLE_MAX, "mem"), saved(0, "file"));
        assert!(mem.len() > 80 + 1024 * RECORD);
        assert!(mem == file, "the two tables differ");
    }

    #[test]
    fn a_saved_index_opens_with_its_seed_and_finds_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a = data(10, 5 * 4096 + 7);
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/a"), &a).unwrap();
        let built = build(dir.path());
        let out_dir = tempfile::tempdir().unwrap();
        let saved = out_dir.path().join("x.idx");
        built.save(&saved).unwrap();
        let idx = ContentIndex::open(&saved, vec![Seed::open(dir.path()).unwrap()]).unwrap();
        idx.verify().unwrap();
        assert_eq!(
            (idx.files(), idx.blocks(), idx.bytes()),
            (1, 7, a.len() as u64)
        );
        let mut out = Vec::new();
        for (i, block) in a.chunks(4096).enumerate() {
            idx.lookup(&block_key(block), &mut out).unwrap();
            assert_eq!(
                out,
                [Location {
                    file: 0,
                    block: i as u32
                }]
            );
        }
        let (mut f, size) = idx.open_file(0).unwrap().unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!((back, size), (a.clone(), a.len() as u64));
        // Saved with one seed: opened with two is refused.
        let two = vec![
            Seed::open(dir.path()).unwrap(),
            Seed::open(dir.path()).unwrap(),
        ];
        assert!(matches!(
            ContentIndex::open(&saved, two),
            Err(ContentError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncated_or_altered_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), data(11, 3 * 4096)).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let saved = out_dir.path().join("x.idx");
        build(dir.path()).save(&saved).unwrap();
        let good = fs::read(&saved).unwrap();
        let seed = || vec![Seed::open(dir.path()).unwrap()];
        let corrupt = |bytes: &[u8]| {
            fs::write(&saved, bytes).unwrap();
            ContentIndex::open(&saved, seed()).and_then(|i| i.verify())
        };
        for bad in [&good[..good.len() - 1], &good[..40], &[][..]] {
            assert!(matches!(corrupt(bad), Err(ContentError::Corrupt { .. })));
        }
        let mut flipped = good.clone();
        flipped[HEADER + 100] ^= 1;
        let e = corrupt(&flipped).unwrap_err();
        assert!(e.to_string().contains("digest"), "{e}");
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(corrupt(&magic), Err(ContentError::Corrupt { .. })));
        // Counts that claim more than the file holds.
        let mut counts = good.clone();
        counts[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            corrupt(&counts),
            Err(ContentError::Corrupt { .. })
        ));
        assert!(corrupt(&good).is_ok());
    }

    #[test]
    fn a_table_without_empty_slots_ends_lookups() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), data(12, 4096)).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let saved = out_dir.path().join("x.idx");
        build(dir.path()).save(&saved).unwrap();
        let mut bytes = fs::read(&saved).unwrap();
        // Every slot taken (file 1 of 1): the header still matches the length.
        let slots = 1024;
        for s in 0..slots {
            let at = HEADER + s * RECORD;
            bytes[at + 16..at + 20].copy_from_slice(&1u32.to_le_bytes());
        }
        fs::write(&saved, &bytes).unwrap();
        let idx = ContentIndex::open(&saved, vec![Seed::open(dir.path()).unwrap()]).unwrap();
        let mut out = Vec::new();
        idx.lookup(&block_key(b"absent"), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_joined_index_numbers_files_and_seeds_across_parts() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let (a, b) = (data(13, 2 * 4096), data(14, 4096));
        fs::write(one.path().join("a"), &a).unwrap();
        fs::write(one.path().join("a2"), data(15, 4096)).unwrap();
        fs::write(two.path().join("b"), &b).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let (p1, p2) = (out_dir.path().join("1.idx"), out_dir.path().join("2.idx"));
        build(one.path()).save(&p1).unwrap();
        build(two.path()).save(&p2).unwrap();
        let i1 = ContentIndex::open(&p1, vec![Seed::open(one.path()).unwrap()]).unwrap();
        let i2 = ContentIndex::open(&p2, vec![Seed::open(two.path()).unwrap()]).unwrap();
        let idx = ContentIndex::join([&i1, &i2]).unwrap();
        assert_eq!((idx.parts(), idx.files(), idx.seeds().count()), (2, 3, 2));
        let mut out = Vec::new();
        idx.lookup(&block_key(&b), &mut out).unwrap();
        assert_eq!(out, [Location { file: 2, block: 0 }]);
        let f = idx.file(2).unwrap();
        assert_eq!((f.seed, f.path.as_slice()), (1, &b"b"[..]));
        let (mut file, _) = idx.open_file(2).unwrap().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, b);
        idx.lookup(&block_key(&a[4096..]), &mut out).unwrap();
        assert_eq!(out, [Location { file: 0, block: 1 }]);
        assert!(idx.open_file(3).unwrap().is_none());
        assert!(matches!(idx.save(&p1), Err(ContentError::ManyParts)));
    }
}
