//! Seeded fulls: a version's full stream rebuilt from the blocks the pool already holds plus
//! the frames of the published file it lacks, fetched by range.
//!
//! A full stream file published with a content map ([`crate::content::map`]) is a sequence of
//! independently compressed zstd frames: DATA frames hold the block-aligned data of one WRITE,
//! LITERAL frames everything else. The map (covered by the signed index through its SHA-256)
//! names each frame's compressed bytes and each 4 KiB piece of a DATA frame's data, or the
//! whole data of a window frame (a DATA frame at a 64 KiB-aligned file offset).
//!
//! * [`plan_seeded`] looks every piece (or window) up in the pool's content index. A DATA frame
//!   all of whose pieces this host holds is *local*; every other frame is fetched. The wanted ranges are
//!   coalesced into a few requests ([`super::ranges::coalesce`]); their bytes (plus the map) are
//!   the plan's cost, compared by the caller with the cheapest delta chain.
//! * [`Rebuilt`] yields the exact stream bytes in order: a fetched frame is checked against its
//!   digest and decompressed; a local frame is read piece by piece from the pool and each piece
//!   is hashed again here (the index is a hint; a file changed since it was indexed makes the
//!   frame fetched instead). The bytes then go through the signature-verifying source exactly
//!   like a downloaded file, so trust is unchanged, and the receive's dedup filter turns the
//!   local data into clones of the pool's files.

use super::MirrorError;
use super::fetch::{FetchError, Remote};
use super::index::{MapFile, StreamFile};
use super::ranges::{coalesce, ranges_per_request};
use crate::content::map::{ContentMap, Frame, FrameKind};
use crate::content::{ContentIndex, Key, Location, block_key};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Requests a seeded plan may use for its ranges (a pull also fetches the index and the map).
pub const MAX_REQUESTS: usize = 60;

/// What a seeded plan fetches and finds locally (for `--dry-run` and `--json`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SeededSummary {
    /// Bytes of the content map.
    pub map_bytes: u64,
    /// Compressed bytes of the stream file to fetch (coalesced ranges).
    pub fetch_bytes: u64,
    /// Ranges to fetch after coalescing.
    pub ranges: usize,
    /// Uncompressed stream bytes found in the pool.
    pub local_bytes: u64,
    /// Uncompressed stream bytes in all.
    pub stream_bytes: u64,
    /// Where the local bytes are: pool entries (subvolume or seed directory) and bytes each.
    pub local_from: Vec<LocalSource>,
}

/// Bytes found in one pool entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LocalSource {
    /// The entry (a subvolume name in the pool, or a seed directory).
    pub name: String,
    /// Uncompressed bytes found there.
    pub bytes: u64,
}

/// A seeded plan, ready to run.
#[derive(Debug)]
pub struct SeededPlan {
    /// The full stream file rebuilt.
    pub file: StreamFile,
    /// Its content map.
    pub map: ContentMap,
    /// Per frame: true when it is to be read from the pool.
    pub local: Vec<bool>,
    /// Compressed ranges to fetch, coalesced, sorted.
    pub ranges: Vec<(u64, u64)>,
    /// Summary.
    pub summary: SeededSummary,
}

impl SeededPlan {
    /// Bytes fetched over the network (map included).
    #[must_use]
    pub fn cost(&self) -> u64 {
        self.summary
            .fetch_bytes
            .saturating_add(self.summary.map_bytes)
    }
}

/// Fetches and checks the map of `file`.
///
/// # Errors
/// A missing map or one that does not match the index ([`FetchError::Missing`] /
/// [`FetchError::Bad`]); reading failed.
pub fn fetch_map(
    remote: &Remote,
    file: &StreamFile,
    map: &MapFile,
) -> Result<ContentMap, FetchError> {
    let bytes = remote.read_small(&map.path).map_err(|e| match e {
        MirrorError::HttpStatus { status: 404, .. } => {
            FetchError::Missing(format!("content map {}: not found", map.path))
        }
        e => FetchError::Missing(format!(
            "content map {}: {}",
            map.path,
            crate::util::error_chain(&e)
        )),
    })?;
    if bytes.len() as u64 != map.size {
        return Err(FetchError::Bad(format!(
            "content map {}: {} bytes, the index says {}",
            map.path,
            bytes.len(),
            map.size
        )));
    }
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if digest != map.sha256.0 {
        return Err(FetchError::Bad(format!(
            "content map {}: SHA-256 differs from the index",
            map.path
        )));
    }
    ContentMap::decode(&bytes, file.stream_bytes, file.size)
        .map_err(|e| FetchError::Bad(format!("content map {}: {e}", map.path)))
}

/// Plans rebuilding `file` (a full stream with map `map`) from what `pool` holds. `name_of`
/// names the pool entry a location lies in (for the summary).
///
/// # Errors
/// Reading the pool's index failed.
pub fn plan_seeded(
    file: &StreamFile,
    map: ContentMap,
    map_bytes: u64,
    pool: Option<&ContentIndex>,
) -> Result<SeededPlan, crate::content::ContentError> {
    let mut local = Vec::with_capacity(map.frames.len());
    let mut wanted = Vec::new();
    let mut local_bytes = 0u64;
    let mut from: BTreeMap<String, u64> = BTreeMap::new();
    let mut found = Vec::new();
    for f in &map.frames {
        let mut here = f.kind.is_data() && pool.is_some();
        let mut first = None;
        if let (true, Some(pool)) = (here, pool) {
            for k in map.keys_of(f) {
                pool.lookup(k, &mut found)?;
                match found.first() {
                    Some(l) => {
                        first.get_or_insert(*l);
                    }
                    None => {
                        here = false;
                        break;
                    }
                }
            }
        }
        local.push(here);
        if here {
            local_bytes = local_bytes.saturating_add(f.stream_len);
            if let Some(name) = first.zip(pool).and_then(|(l, p)| entry_name(p, l)) {
                *from.entry(name).or_default() += f.stream_len;
            }
        } else {
            wanted.push((f.comp_offset, f.comp_len));
        }
    }
    let ranges = coalesce(&wanted, MAX_REQUESTS, ranges_per_request(file.size));
    let fetch_bytes = ranges.iter().fold(0u64, |s, r| s.saturating_add(r.1));
    let mut local_from: Vec<LocalSource> = from
        .into_iter()
        .map(|(name, bytes)| LocalSource { name, bytes })
        .collect();
    local_from.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let summary = SeededSummary {
        map_bytes,
        fetch_bytes,
        ranges: ranges.len(),
        local_bytes,
        stream_bytes: map.stream_bytes,
        local_from,
    };
    Ok(SeededPlan {
        file: file.clone(),
        map,
        local,
        ranges,
        summary,
    })
}

/// The pool entry (subvolume or seed directory name) holding location `l`.
fn entry_name(pool: &ContentIndex, l: Location) -> Option<String> {
    let seed = pool.file(l.file).ok()?.seed;
    let seed = pool.seeds().nth(usize::try_from(seed).ok()?)?;
    Some(seed.path().file_name()?.to_string_lossy().into_owned())
}

/// What rebuilding found on the way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RebuildStats {
    /// Uncompressed bytes read from the pool (and checked).
    pub local_bytes: u64,
    /// Frames planned as local whose pool bytes no longer matched, fetched instead.
    pub refetched_frames: u64,
    /// Bytes of those late fetches.
    pub refetched_bytes: u64,
}

/// The stream bytes of a seeded plan, rebuilt in order (see the module documentation). Errors
/// of the rebuilt bytes (a fetched frame that does not match its digest or does not decompress
/// to its length) are [`io::ErrorKind::InvalidData`], which the pull treats as a fault of the
/// stream: the seeded plan is given up and the file fetched whole or another chain taken.
pub struct Rebuilt<'a> {
    plan: &'a SeededPlan,
    pool: Option<&'a ContentIndex>,
    remote: &'a Remote,
    /// The sparse cache file holding the fetched ranges at their offsets.
    cache: &'a File,
    stop: &'a dyn Fn() -> bool,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    comp: Vec<u8>,
    piece: Vec<u8>,
    found: Vec<Location>,
    /// The pool file read last (pieces of one frame usually come from one file).
    open: Option<(u32, File)>,
    dec: zstd::bulk::Decompressor<'static>,
    stats: &'a Cell<RebuildStats>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a> Rebuilt<'a> {
    /// Starts rebuilding; the ranges of `plan` must already be in `cache`.
    ///
    /// # Errors
    /// zstd could not start.
    pub fn new(
        plan: &'a SeededPlan,
        pool: Option<&'a ContentIndex>,
        remote: &'a Remote,
        cache: &'a File,
        stop: &'a dyn Fn() -> bool,
        stats: &'a Cell<RebuildStats>,
    ) -> io::Result<Rebuilt<'a>> {
        Ok(Rebuilt {
            plan,
            pool,
            remote,
            cache,
            stop,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            comp: Vec::new(),
            piece: Vec::new(),
            found: Vec::new(),
            open: None,
            dec: zstd::bulk::Decompressor::new()?,
            stats,
        })
    }

    /// The frame's bytes from the pool, each piece (or the whole window) hashed here; false
    /// when they are no longer there as indexed.
    fn fill_local(&mut self, f: &Frame) -> io::Result<bool> {
        self.buf.clear();
        let Some(pool) = self.pool else {
            return Ok(false);
        };
        let keys: &[Key] = self.plan.map.keys_of(f);
        if f.kind == FrameKind::Window {
            let (Some(key), Ok(len)) = (keys.first(), usize::try_from(f.stream_len)) else {
                return Ok(false);
            };
            pool.lookup(key, &mut self.found)
                .map_err(io::Error::other)?;
            for l in std::mem::take(&mut self.found) {
                if self.read_piece(pool, l, len)? && block_key(&self.piece) == *key {
                    std::mem::swap(&mut self.buf, &mut self.piece);
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let mut left = f.stream_len;
        for key in keys {
            let n = left.min(crate::content::BLOCK);
            left -= n;
            let Ok(len) = usize::try_from(n) else {
                return Ok(false);
            };
            pool.lookup(key, &mut self.found)
                .map_err(io::Error::other)?;
            let mut got = false;
            for l in std::mem::take(&mut self.found) {
                if self.read_piece(pool, l, len)? && block_key(&self.piece) == *key {
                    got = true;
                    break;
                }
            }
            if !got {
                return Ok(false);
            }
            self.buf.extend_from_slice(&self.piece);
        }
        Ok(self.buf.len() as u64 == f.stream_len)
    }

    /// Reads `len` bytes of block `l` into `self.piece`; false when the file is gone or short.
    fn read_piece(&mut self, pool: &ContentIndex, l: Location, len: usize) -> io::Result<bool> {
        if self.open.as_ref().is_none_or(|(id, _)| *id != l.file) {
            self.open = match pool.open_file(l.file).map_err(io::Error::other)? {
                Some((file, _size)) => Some((l.file, file)),
                None => return Ok(false),
            };
        }
        let Some((_, file)) = &self.open else {
            return Ok(false);
        };
        self.piece.resize(len, 0);
        let at = u64::from(l.block) * crate::content::BLOCK;
        match file.read_exact_at(&mut self.piece, at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The frame's bytes from the cache file, checked and decompressed.
    fn fill_fetched(&mut self, i: usize, f: &Frame) -> io::Result<()> {
        let len =
            usize::try_from(f.comp_len).map_err(|_| invalid(format!("frame {i}: too long")))?;
        self.comp.resize(len, 0);
        self.cache.read_exact_at(&mut self.comp, f.comp_offset)?;
        if block_key(&self.comp) != f.digest {
            return Err(invalid(format!(
                "{}: the bytes served at {}..{} (frame {i}) do not match the content map",
                self.plan.file.path,
                f.comp_offset,
                f.comp_offset.saturating_add(f.comp_len)
            )));
        }
        let cap =
            usize::try_from(f.stream_len).map_err(|_| invalid(format!("frame {i}: too long")))?;
        self.buf = self.dec.decompress(&self.comp, cap).map_err(|e| {
            invalid(format!(
                "{}: frame {i} does not decompress: {e}",
                self.plan.file.path
            ))
        })?;
        if self.buf.len() as u64 != f.stream_len {
            return Err(invalid(format!(
                "{}: frame {i} decompresses to {} bytes, the content map says {}",
                self.plan.file.path,
                self.buf.len(),
                f.stream_len
            )));
        }
        Ok(())
    }

    fn fill(&mut self) -> io::Result<bool> {
        let Some(f) = self.plan.map.frames.get(self.next).cloned() else {
            return Ok(false);
        };
        let i = self.next;
        self.next += 1;
        self.pos = 0;
        if self.plan.local.get(i).copied().unwrap_or(false) {
            let mut st = self.stats.get();
            if self.fill_local(&f)? {
                st.local_bytes = st.local_bytes.saturating_add(f.stream_len);
                self.stats.set(st);
                return Ok(true);
            }
            // Changed since it was indexed: fetch this frame after all.
            if (self.stop)() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            self.remote
                .fetch_ranges(
                    &self.plan.file.path,
                    self.plan.file.size,
                    &[(f.comp_offset, f.comp_len)],
                    self.cache,
                    &mut |_| {},
                    self.stop,
                )
                .map_err(|e| match e {
                    FetchError::Fatal(e) => io::Error::other(crate::util::error_chain(&e)),
                    FetchError::Missing(m) | FetchError::Bad(m) => invalid(m),
                })?;
            st.refetched_frames += 1;
            st.refetched_bytes = st.refetched_bytes.saturating_add(f.comp_len);
            self.stats.set(st);
        }
        self.fill_fetched(i, &f)?;
        Ok(true)
    }
}

impl Read for Rebuilt<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
