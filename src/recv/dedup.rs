//! Dedup on receive, a filter in front of the receiver: WRITE data whose aligned blocks are
//! found in a content index of seed directories (`--dedup-from`) becomes a clone of the seed
//! file's range, so unrelated subvolumes share the extents of their common data.
//!
//! Nothing the index says is trusted: a found range is cloned into the file being received,
//! the bytes that landed are read back and compared with the WRITE's data, and on any
//! difference (a seed changed after it was indexed) or refusal of the clone the data is written
//! as the stream says. The received tree is the same either way. The head of a WRITE before its
//! first block boundary, zero blocks and blocks not found are written; consecutive found
//! blocks of one seed file become one clone. Seeds must be reachable through DEST's own mount
//! (the kernel refuses clones across mounts, even of one file system).

use super::fuse::CreateRenamed;
use super::{RecvError, show};
use crate::Error;
use crate::content::{self, BLOCK, ContentIndex, Location, Seed};
use crate::pipeline::{CommandSink, Position};
use crate::stream::{Command, Op, cmd};
use rustix::fs::{self as rfs, AtFlags, StatxFlags};
use std::fs::File;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// What the filter did, for a summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// WRITE bytes applied as clones of seed data (checked after cloning).
    pub cloned: u64,
    /// WRITE bytes written.
    pub written: u64,
    /// Clones whose landed bytes differed from the stream's (then written instead).
    pub mismatched: u64,
}

/// A sink that can write, clone from an open file, and read back parts of a WRITE. Errors are
/// reported against the WRITE command `c`.
pub(super) trait SeedTarget: CreateRenamed {
    /// Writes `data` at `offset` of `path`.
    fn write_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error>;
    /// Clones `len` bytes of `src` at `src_offset` to `offset` of `path`; `Ok(false)` when the
    /// file system refused the clone.
    #[allow(clippy::too_many_arguments)]
    fn clone_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        src: BorrowedFd<'_>,
        src_offset: u64,
        len: u64,
    ) -> Result<bool, Error>;
    /// Reads `buf.len()` bytes at `offset` of `path`.
    fn read_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error>;
    /// The WRITE `c` was applied in parts (written and cloned): the receiver may take a
    /// checkpoint after it, as after any command it applied itself.
    fn applied(&mut self, _c: &Command, _at: Position) -> Result<(), Error> {
        Ok(())
    }
}

fn seed_error(dir: &Path, reason: String, source: Option<std::io::Error>) -> Error {
    RecvError::Seed(content::ContentError::Seed {
        dir: dir.to_path_buf(),
        reason,
        source,
    })
    .into()
}

fn mount_id(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    Ok(rfs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?.stx_mnt_id)
}

/// Opens the seed directories, checks each is reachable through DEST's mount, and indexes
/// them (index files are anonymous files in DEST). Staging subvolumes are left out.
///
/// # Errors
/// [`RecvError::Seed`]: a seed that cannot be read, or is not on DEST's mount.
pub(super) fn index_seeds(
    dest: &Path,
    dirs: &[PathBuf],
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<ContentIndex, Error> {
    let dest_dir = rfs::open(
        dest,
        rfs::OFlags::RDONLY | rfs::OFlags::DIRECTORY | rfs::OFlags::CLOEXEC,
        rfs::Mode::empty(),
    )
    .map_err(|e| RecvError::Dest {
        dest: dest.to_path_buf(),
        reason: "cannot open directory".into(),
        source: Some(e.into()),
    })?;
    let dest_mount = mount_id(dest_dir.as_fd()).map_err(|e| RecvError::Dest {
        dest: dest.to_path_buf(),
        reason: "statx".into(),
        source: Some(e.into()),
    })?;
    let mut seeds = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let seed = Seed::open(dir).map_err(RecvError::Seed)?;
        let mount =
            mount_id(seed.root()).map_err(|e| seed_error(dir, "statx".into(), Some(e.into())))?;
        if mount != dest_mount {
            let on_btrfs = subvol_ioctl::is_btrfs(seed.root()).unwrap_or(false);
            let reason = if on_btrfs {
                format!(
                    "is on another mount than {} (btrfs clones need both on the same mount: \
                     give a directory under DEST's mount point)",
                    show(dest.as_os_str().as_encoded_bytes())
                )
            } else {
                format!(
                    "is not on the btrfs file system of {} (clones need the same file system)",
                    show(dest.as_os_str().as_encoded_bytes())
                )
            };
            return Err(seed_error(dir, reason, None));
        }
        seeds.push(seed);
    }
    Ok(
        ContentIndex::build(seeds, dest, &super::staging::is_staging_name, stop)
            .map_err(RecvError::Seed)?,
    )
}

/// A run of found blocks: `len` bytes at `at` in the received file, from `loc` on.
#[derive(Clone, Copy, Debug)]
struct Run {
    at: u64,
    len: u64,
    loc: Location,
}

impl Run {
    /// The seed location right after this run.
    fn next(&self) -> Option<Location> {
        let block = u64::from(self.loc.block) + self.len / BLOCK;
        Some(Location {
            file: self.loc.file,
            block: u32::try_from(block).ok()?,
        })
    }
}

/// The filter: forwards everything to `inner`, turning found WRITE data into clones.
pub(super) struct Dedup<K> {
    inner: K,
    index: ContentIndex,
    /// The seed file last opened: id, handle, size.
    open: Option<(u32, File, u64)>,
    found: Vec<Location>,
    runs: Vec<Run>,
    back: Vec<u8>,
    /// Where the last run ended in its seed: the preferred candidate for the next block.
    hint: Option<Location>,
    stats: DedupStats,
}

impl<K: SeedTarget> Dedup<K> {
    pub(super) fn new(inner: K, index: ContentIndex) -> Dedup<K> {
        Dedup {
            inner,
            index,
            open: None,
            found: Vec::new(),
            runs: Vec::new(),
            back: Vec::new(),
            hint: None,
            stats: DedupStats::default(),
        }
    }

    pub(super) fn into_parts(self) -> (K, DedupStats) {
        (self.inner, self.stats)
    }

    /// The runs of `data` (at `offset`) found in the index.
    fn plan(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.runs.clear();
        for (at, len) in content::aligned_blocks(offset, data.len() as u64) {
            // In range: `aligned_blocks` stays within [offset, offset + data.len()).
            let start = usize::try_from(at - offset).map_err(|_| Error::Bug("offset".into()))?;
            let bytes = &data[start..start + len as usize];
            if content::is_zero(bytes) {
                continue;
            }
            self.index
                .lookup(&content::block_key(bytes), &mut self.found)
                .map_err(RecvError::Seed)?;
            if self.found.is_empty() {
                continue;
            }
            if let Some(last) = self.runs.last_mut()
                && last.at + last.len == at
                && last.len.is_multiple_of(BLOCK)
                && last.next().is_some_and(|n| self.found.contains(&n))
            {
                last.len += len;
                continue;
            }
            let loc = match self.hint.filter(|h| self.found.contains(h)) {
                Some(h) => h,
                None => self.found[0],
            };
            self.runs.push(Run { at, len, loc });
        }
        self.hint = self.runs.last().and_then(Run::next);
        Ok(())
    }

    /// Clones `run` from its seed and checks what landed against `expect`. False when it was
    /// not (or not correctly) cloned: the caller writes the data.
    fn clone_checked(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        run: Run,
        expect: &[u8],
    ) -> Result<bool, Error> {
        if self
            .open
            .as_ref()
            .is_none_or(|(id, ..)| *id != run.loc.file)
        {
            self.open = self
                .index
                .open_file(run.loc.file)
                .map_err(RecvError::Seed)?
                .map(|(f, size)| (run.loc.file, f, size));
        }
        let Some((_, file, size)) = &self.open else {
            return Ok(false);
        };
        let src_offset = u64::from(run.loc.block) * BLOCK;
        let src_end = src_offset + run.len;
        // A short last block can only be the seed file's end.
        if src_end > *size || (!run.len.is_multiple_of(BLOCK) && src_end != *size) {
            return Ok(false);
        }
        let src = file.as_fd();
        if !self
            .inner
            .clone_part(c, at, path, run.at, src, src_offset, run.len)?
        {
            return Ok(false);
        }
        self.back.resize(expect.len(), 0);
        self.inner.read_part(c, at, path, run.at, &mut self.back)?;
        if self.back != expect {
            self.stats.mismatched += 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn write(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<ControlFlow<()>, Error> {
        self.plan(offset, data)?;
        if self.runs.is_empty() {
            self.stats.written += data.len() as u64;
            return self.inner.command(c, at);
        }
        let runs = std::mem::take(&mut self.runs);
        let mut pos = offset;
        let piece = |from: u64, to: u64| -> &[u8] {
            // Both lie within [offset, offset + data.len()].
            &data[(from - offset) as usize..(to - offset) as usize]
        };
        for run in &runs {
            if run.at > pos {
                self.inner
                    .write_part(c, at, path, pos, piece(pos, run.at))?;
                self.stats.written += run.at - pos;
            }
            let bytes = piece(run.at, run.at + run.len);
            if self.clone_checked(c, at, path, *run, bytes)? {
                self.stats.cloned += run.len;
            } else {
                self.inner.write_part(c, at, path, run.at, bytes)?;
                self.stats.written += run.len;
            }
            pos = run.at + run.len;
        }
        let end = offset + data.len() as u64;
        if pos < end {
            self.inner.write_part(c, at, path, pos, piece(pos, end))?;
            self.stats.written += end - pos;
        }
        self.runs = runs;
        self.inner.applied(c, at)?;
        Ok(ControlFlow::Continue(()))
    }
}

impl<K: SeedTarget> CommandSink for Dedup<K> {
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error> {
        self.inner.header(version, at)
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        if c.cmd() == cmd::WRITE
            && let Ok(Op::Write { path, offset, data }) = c.op()
            && offset.checked_add(data.len() as u64).is_some()
        {
            return self.write(c, at, path, offset, data);
        }
        // Anything else (a malformed WRITE included: the receiver reports it).
        self.inner.command(c, at)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.open = None;
        self.inner.finish()
    }

    fn abort(&mut self) {
        self.open = None;
        self.inner.abort();
    }
}

impl<K: SeedTarget> CreateRenamed for Dedup<K> {
    fn create_renamed(
        &mut self,
        create: &Command,
        rename: &Command,
        rename_at: Position,
    ) -> Result<bool, Error> {
        self.inner.create_renamed(create, rename, rename_at)
    }
}

/// The filter's decisions on a plain temporary directory: clones are copies here.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Builder, attr};
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;

    /// Files in memory; a clone copies from the source file, `corrupt` flips a landed byte.
    #[derive(Default)]
    struct Mem {
        files: HashMap<Vec<u8>, Vec<u8>>,
        clones: Vec<(u64, u64, u64)>,
        whole_writes: usize,
        /// WRITEs reported applied in parts.
        applied: usize,
        corrupt: bool,
    }

    fn put(f: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
    }

    impl CommandSink for Mem {
        fn header(&mut self, _: u32, _: Position) -> Result<(), Error> {
            Ok(())
        }
        fn command(&mut self, c: &Command, _: Position) -> Result<ControlFlow<()>, Error> {
            if let Ok(Op::Write { path, offset, data }) = c.op() {
                self.whole_writes += 1;
                put(self.files.entry(path.to_vec()).or_default(), offset, data);
            }
            Ok(ControlFlow::Continue(()))
        }
        fn finish(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    impl CreateRenamed for Mem {
        fn create_renamed(&mut self, _: &Command, _: &Command, _: Position) -> Result<bool, Error> {
            Ok(false)
        }
    }

    impl SeedTarget for Mem {
        fn write_part(
            &mut self,
            _: &Command,
            _: Position,
            path: &[u8],
            offset: u64,
            data: &[u8],
        ) -> Result<(), Error> {
            put(self.files.entry(path.to_vec()).or_default(), offset, data);
            Ok(())
        }
        fn clone_part(
            &mut self,
            _: &Command,
            _: Position,
            path: &[u8],
            offset: u64,
            src: BorrowedFd<'_>,
            src_offset: u64,
            len: u64,
        ) -> Result<bool, Error> {
            let mut buf = vec![0u8; len as usize];
            File::from(src.try_clone_to_owned().unwrap())
                .read_exact_at(&mut buf, src_offset)
                .unwrap();
            if self.corrupt {
                buf[0] ^= 1;
            }
            put(self.files.entry(path.to_vec()).or_default(), offset, &buf);
            self.clones.push((offset, src_offset, len));
            Ok(true)
        }
        fn read_part(
            &mut self,
            _: &Command,
            _: Position,
            path: &[u8],
            offset: u64,
            buf: &mut [u8],
        ) -> Result<(), Error> {
            let f = &self.files[path];
            buf.copy_from_slice(&f[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn applied(&mut self, _: &Command, _: Position) -> Result<(), Error> {
            self.applied += 1;
            Ok(())
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 16) as u8
            })
            .collect()
    }

    fn write(offset: u64, data: &[u8]) -> Command {
        Builder::new(cmd::WRITE, 1)
            .bytes(attr::PATH, b"f")
            .u64(attr::FILE_OFFSET, offset)
            .bytes(attr::DATA, data)
            .build()
            .unwrap()
    }

    /// A seed directory holding `seed` as file "s", and a filter over `Mem`.
    fn filter(seed: &[u8], mem: Mem) -> (tempfile::TempDir, tempfile::TempDir, Dedup<Mem>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), seed).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let index = ContentIndex::build(
            vec![Seed::open(dir.path()).unwrap()],
            scratch.path(),
            &|_| false,
            None,
        )
        .unwrap();
        (dir, scratch, Dedup::new(mem, index))
    }

    fn run(d: &mut Dedup<Mem>, cmds: &[Command]) {
        for c in cmds {
            assert!(d.command(c, Position::default()).unwrap().is_continue());
        }
    }

    /// Every WRITE reaches the receiver once as applied: whole (`command`, after which it may
    /// checkpoint) or in parts (`applied`, the same point to checkpoint at).
    #[test]
    fn every_write_is_reported_applied_once_whole_or_in_parts() {
        let seed = bytes(6, 4 * 4096);
        let (_d, _s, mut d) = filter(&seed, Mem::default());
        run(
            &mut d,
            &[write(0, &seed), write(1 << 20, &bytes(7, 3 * 4096))],
        );
        let (mem, _) = d.into_parts();
        assert_eq!(mem.clones.len(), 1);
        assert_eq!((mem.applied, mem.whole_writes), (1, 1));
    }

    #[test]
    fn a_whole_seed_file_is_one_clone_tail_included() {
        let seed = bytes(1, 5 * 4096 + 100);
        let (_d, _s, mut d) = filter(&seed, Mem::default());
        run(&mut d, &[write(0, &seed)]);
        let (mem, stats) = d.into_parts();
        assert_eq!(mem.clones, [(0, 0, seed.len() as u64)]);
        assert_eq!(mem.files[&b"f"[..]], seed);
        assert_eq!(stats.cloned, seed.len() as u64);
        assert_eq!(stats.written, 0);
    }

    #[test]
    fn the_unaligned_head_is_written_and_the_next_write_continues_in_the_same_seed() {
        let seed = bytes(2, 8 * 4096);
        let (_d, _s, mut d) = filter(&seed, Mem::default());
        // File offset 100: its blocks start at 4096, where the seed's block 1 is placed.
        let mut first = bytes(3, 3996);
        first.extend_from_slice(&seed[4096..3 * 4096]);
        let second = &seed[3 * 4096..5 * 4096];
        run(&mut d, &[write(100, &first), write(3 * 4096, second)]);
        let (mem, stats) = d.into_parts();
        assert_eq!(mem.clones, [(4096, 4096, 8192), (3 * 4096, 3 * 4096, 8192)]);
        assert_eq!(stats.cloned, 4 * 4096);
        assert_eq!(stats.written, 3996);
        let f = &mem.files[&b"f"[..]];
        assert_eq!(&f[100..4096], &first[..3996]);
        assert_eq!(&f[4096..5 * 4096], &seed[4096..5 * 4096]);
    }

    #[test]
    fn a_clone_that_lands_other_bytes_is_overwritten_with_the_data() {
        let seed = bytes(4, 4 * 4096);
        let mem = Mem {
            corrupt: true,
            ..Mem::default()
        };
        let (_d, _s, mut d) = filter(&seed, mem);
        run(&mut d, &[write(0, &seed)]);
        let (mem, stats) = d.into_parts();
        assert_eq!(mem.files[&b"f"[..]], seed);
        assert_eq!(stats.cloned, 0);
        assert_eq!(stats.written, seed.len() as u64);
        assert_eq!(stats.mismatched, 1);
    }

    #[test]
    fn data_not_found_passes_unchanged_and_zeros_are_never_cloned() {
        let mut seed = bytes(5, 4096);
        seed.extend_from_slice(&[0; 8192]);
        let (_d, _s, mut d) = filter(&seed, Mem::default());
        run(&mut d, &[write(0, &bytes(6, 10_000)), write(0, &[0; 8192])]);
        let (mem, stats) = d.into_parts();
        assert!(mem.clones.is_empty());
        assert_eq!(mem.whole_writes, 2);
        assert_eq!(stats.written, 10_000 + 8192);
    }

    #[test]
    fn a_short_block_matches_only_a_seed_file_end() {
        // The seed's last 100 bytes as the short last block of a write: cloned up to the
        // seed's end (btrfs allows an unaligned clone length only there).
        let seed = bytes(7, 4096 + 100);
        let (_d, _s, mut d) = filter(&seed, Mem::default());
        run(&mut d, &[write(4096, &seed[4096..])]);
        let (mem, stats) = d.into_parts();
        assert_eq!(mem.clones, [(4096, 4096, 100)]);
        assert_eq!(stats.cloned, 100);
    }
}
