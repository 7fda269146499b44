//! Block-level dedupe for tree streams: a block about to be written whose content the receiver
//! already holds at a block-aligned offset of some file is sent as a CLONE of that range.
//!
//! * **Index**: a 64-bit key of every indexed block's content → (source file, block number), in
//!   an open-addressing table (linear probing, 16-byte slots) that starts small and doubles up
//!   to [`MAX_SLOTS`] (32 MiB). Once the largest table is 3/4 full, a new key overwrites the slot
//!   it hashes to, so the table keeps recent blocks and never grows further: memory is bounded
//!   whatever the tree's size, and only dedupe opportunities are lost. Besides the table, the
//!   state is one [`Source`] (12 bytes) per indexed file.
//! * **What is indexed**: blocks fully inside a data range of files larger than one block (the
//!   tail at EOF too, keyed with its length). All-zero blocks are not: zeros cost nothing in a
//!   compressed stream, and cloning them one block at a time would fragment the receiver's
//!   files (a run that is being cloned anyway still extends over them). Full streams index
//!   every written file as it is sent; incremental streams first index files of OLD (see
//!   `incr.rs` for the budget), then NEW files as they are sent.
//! * **Sources**: a file of the parent ([`Source::Parent`], cloned from the parent snapshot with
//!   CLONE_UUID = the parent's UUID and its OLD path: the parent never changes, so OLD content
//!   is always valid), or a file of NEW already sent into the subvolume being received
//!   ([`Source::New`], CLONE_UUID = the stream's UUID, its path there; its content never
//!   changes after it was sent). The file being sent is a source for its own later blocks.
//! * **Verification**: a key only proposes a candidate. Before a CLONE is emitted, the source
//!   range is read from the source tree and compared byte for byte with the data it replaces,
//!   so a hash collision never corrupts data. Source files are opened with the walk's change
//!   check (size, mtime, ctime) and checked again when closed: a source that changed fails the
//!   send with [`SendError::FileChanged`].
//! * **Kernel rules** (reference §3.2, §8 pitfall 24): clones are block-aligned at both ends,
//!   except a tail that ends exactly at EOF of both source and destination; the unaligned EOF
//!   block is never cloned into the middle of a file; a range of the destination file itself
//!   must end before the range it is cloned to (no overlap) and only covers blocks already sent;
//!   a one-block clone from offset 0 is written instead (the receiver may hold that block
//!   inline), and offset 0 of the destination itself is used only once the receiver's file is
//!   longer than a block. Adjacent cloneable blocks from consecutive source blocks merge into
//!   one CLONE.

use super::SendError;
use super::content::{BLOCK, SourceFile};
use super::emit::Emitter;
use super::tree::{DentryId, InodeId, Tree};
use crate::pipeline::CommandSink;
use crate::stream::Uuid;

/// The largest index: 2^21 slots of 16 bytes (32 MiB), enough for 1.5 million distinct blocks
/// (6 GiB) before it starts forgetting.
pub(crate) const MAX_SLOTS: usize = 1 << 21;
const MIN_SLOTS: usize = 1 << 10;
/// Bytes read ahead from a source while a clone run extends.
const WINDOW: usize = 128 * 1024;
/// Open source files kept for verification.
const OPEN_FILES: usize = 16;

/// A 64-bit key of a block's content and length (an xxHash64-style hash: four lanes of
/// multiply-rotate rounds, then an avalanche). Never 0 (the empty-slot marker).
pub(crate) fn block_key(b: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    fn word(c: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    }
    fn round(acc: u64, w: u64) -> u64 {
        acc.wrapping_add(w.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    let len = b.len() as u64;
    let mut acc = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
    let mut chunks = b.chunks_exact(32);
    for c in &mut chunks {
        acc[0] = round(acc[0], word(&c[0..8]));
        acc[1] = round(acc[1], word(&c[8..16]));
        acc[2] = round(acc[2], word(&c[16..24]));
        acc[3] = round(acc[3], word(&c[24..32]));
    }
    let mut h = acc[0]
        .rotate_left(1)
        .wrapping_add(acc[1].rotate_left(7))
        .wrapping_add(acc[2].rotate_left(12))
        .wrapping_add(acc[3].rotate_left(18));
    for a in acc {
        h = (h ^ round(0, a)).wrapping_mul(P1).wrapping_add(P3);
    }
    h = h.wrapping_add(len);
    for c in chunks.remainder().chunks(8) {
        h = (h ^ round(0, word(c)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h.max(1)
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    src: u32,
    block: u32,
}

/// Key → (source, block number); bounded (see the module docs).
struct BlockIndex {
    slots: Vec<Slot>,
    len: usize,
    max_slots: usize,
}

impl BlockIndex {
    fn new(max_slots: usize) -> BlockIndex {
        BlockIndex {
            slots: Vec::new(),
            len: 0,
            max_slots: max_slots.next_power_of_two().max(MIN_SLOTS),
        }
    }

    fn home(&self, key: u64) -> usize {
        // The low bits of the key are well mixed; the table size is a power of two.
        (key as usize) & (self.slots.len() - 1)
    }

    fn get(&self, key: u64) -> Option<(u32, u32)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if s.key == key {
                return Some((s.src, s.block));
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key` unless present: the first source of a content stays its source, except that
    /// a block at offset 0 gives way to one elsewhere (a one-block clone from offset 0 is
    /// written instead, see the module docs).
    fn insert(&mut self, key: u64, src: u32, block: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            if self.slots.len() < self.max_slots {
                self.grow();
            } else {
                // Full: the key takes its home slot (probe chains stay intact, as no slot
                // becomes empty), forgetting that slot's older block.
                let i = self.home(key);
                if self.get(key).is_none() {
                    self.slots[i] = Slot { key, src, block };
                }
                return;
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let s = &mut self.slots[i];
            if s.key == key {
                if s.block == 0 && block != 0 {
                    *s = Slot { key, src, block };
                }
                return;
            }
            if s.key == 0 {
                *s = Slot { key, src, block };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).clamp(MIN_SLOTS, self.max_slots);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n]);
        let mask = n - 1;
        for s in old.into_iter().filter(|s| s.key != 0) {
            let mut i = (s.key as usize) & mask;
            while self.slots[i].key != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }
}

/// A file whose blocks can be cloned.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A file of the parent tree, cloned from the parent snapshot at its OLD path.
    Parent(InodeId),
    /// A file of the new tree already in the subvolume being received, at the path of `dentry`.
    New { dentry: DentryId, inode: InodeId },
}

/// A run of blocks being cloned from consecutive blocks of one source.
#[derive(Clone, Copy, Debug)]
struct Run {
    dst: u64,
    len: u64,
    src: u32,
    src_off: u64,
}

/// Bytes of a source read for verification (the last read, kept while a run extends).
struct Window {
    src: u32,
    off: u64,
    /// The source's size.
    size: u64,
    data: Vec<u8>,
}

/// One file being sent: its stream path and contents, and the WRITE or CLONE being gathered.
pub(crate) struct Dest<'a> {
    path: &'a [u8],
    sf: &'a SourceFile,
    /// Its own source id, when its blocks are indexed.
    me: Option<u32>,
    /// Whether blocks may be cloned (never with `--no-data`).
    dedupe: bool,
    /// UPDATE_EXTENT instead of WRITE.
    no_data: bool,
    /// Pending WRITE (absolute range, inside the caller's current chunk).
    write: Option<(u64, u64)>,
    run: Option<Run>,
    /// The receiver's file size before this send of contents.
    start_size: u64,
    /// End of the furthest range sent so far (0 if none).
    pub(crate) sent_end: u64,
    /// Whether any WRITE or CLONE was sent.
    pub(crate) sent: bool,
}

impl Dest<'_> {
    /// The receiver's file size as the commands sent so far (and the pending ones) leave it.
    fn recv_size(&self) -> u64 {
        let pending = self
            .write
            .map_or(0, |w| w.1)
            .max(self.run.map_or(0, |r| r.dst + r.len));
        self.start_size.max(self.sent_end).max(pending)
    }
}

/// The block index, its sources, and the open source files used to verify candidates.
pub(crate) struct Dedupe<'t> {
    new: &'t Tree,
    uuid: Uuid,
    ctransid: u64,
    parent: Option<(&'t Tree, Uuid, u64)>,
    index: BlockIndex,
    sources: Vec<Source>,
    open: Vec<(u32, SourceFile)>,
    evict: usize,
    window: Window,
    zero_key: u64,
    buf: Vec<u8>,
}

/// True when `[s, e)` lies inside one of `ranges` (sorted, disjoint, maximal).
fn range_is_data(ranges: &[(u64, u64)], s: u64, e: u64) -> bool {
    let i = ranges.partition_point(|&(_, re)| re <= s);
    i < ranges.len() && ranges[i].0 <= s && e <= ranges[i].1
}

impl<'t> Dedupe<'t> {
    pub(crate) fn new(
        new: &'t Tree,
        uuid: Uuid,
        ctransid: u64,
        parent: Option<(&'t Tree, Uuid, u64)>,
    ) -> Dedupe<'t> {
        Dedupe {
            new,
            uuid,
            ctransid,
            parent,
            index: BlockIndex::new(MAX_SLOTS),
            sources: Vec::new(),
            open: Vec::new(),
            evict: 0,
            window: Window {
                src: u32::MAX,
                off: 0,
                size: 0,
                data: Vec::new(),
            },
            zero_key: block_key(&[0u8; BLOCK as usize]),
            buf: Vec::new(),
        }
    }

    fn register(&mut self, s: Source) -> Option<u32> {
        let id = u32::try_from(self.sources.len()).ok()?;
        self.sources.push(s);
        Some(id)
    }

    fn is_zero(&self, key: u64, b: &[u8]) -> bool {
        (key == self.zero_key || b.len() < BLOCK as usize) && b.iter().all(|&x| x == 0)
    }

    /// Indexes every block of the (unchanged, closed) file `sf`, known as `src`.
    pub(crate) fn index_file(&mut self, src: Source, sf: &SourceFile) -> Result<(), SendError> {
        if sf.size <= BLOCK {
            return Ok(());
        }
        let Some(id) = self.register(src) else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.buf);
        let size = sf.size;
        let r = sf.for_each_chunk(1 << 20, &mut buf, |off, b| {
            let mut p = 0usize;
            while p < b.len() {
                let pos = off + p as u64;
                let next = ((pos / BLOCK + 1) * BLOCK).min(off + b.len() as u64);
                let e = (next - off) as usize;
                let piece = &b[p..e];
                let indexable =
                    pos.is_multiple_of(BLOCK) && (piece.len() == BLOCK as usize || next == size);
                if indexable && let Ok(blk) = u32::try_from(pos / BLOCK) {
                    let key = block_key(piece);
                    if !self.is_zero(key, piece) {
                        self.index.insert(key, id, blk);
                    }
                }
                p = e;
            }
            Ok(())
        });
        self.buf = buf;
        r?;
        sf.finish()
    }

    /// Starts sending the contents of `sf` to stream path `path`, whose file on the receiver
    /// is `start_size` long. With `me`, the file's blocks become clone sources as they are
    /// sent (it must then be the file's identity in the subvolume being received).
    pub(crate) fn dest<'a>(
        &mut self,
        path: &'a [u8],
        sf: &'a SourceFile,
        me: Option<Source>,
        start_size: u64,
        no_data: bool,
    ) -> Dest<'a> {
        let dedupe = !no_data && sf.size >= BLOCK;
        let me = if dedupe && sf.size > BLOCK {
            me.and_then(|s| self.register(s))
        } else {
            None
        };
        Dest {
            path,
            sf,
            me,
            dedupe,
            no_data,
            write: None,
            run: None,
            start_size,
            sent_end: 0,
            sent: false,
        }
    }

    /// The source file `src`, opened (and checked against the walk) if it is not yet.
    fn source_file(&mut self, src: u32) -> Result<usize, SendError> {
        if let Some(i) = self.open.iter().position(|(s, _)| *s == src) {
            return Ok(i);
        }
        let sf = match self.sources[src as usize] {
            Source::Parent(oi) => {
                let Some((old, _, _)) = self.parent else {
                    return Err(SendError::Invalid(
                        "clone source in a missing parent".into(),
                    ));
                };
                SourceFile::open(old.abs(&old.inode_path(oi)), &old.inodes[oi as usize])?
            }
            Source::New { dentry, inode } => SourceFile::open(
                self.new.abs(&self.new.dentry_path(dentry)),
                &self.new.inodes[inode as usize],
            )?,
        };
        if self.open.len() < OPEN_FILES {
            self.open.push((src, sf));
            return Ok(self.open.len() - 1);
        }
        let i = self.evict % OPEN_FILES;
        self.evict += 1;
        let (_, old) = std::mem::replace(&mut self.open[i], (src, sf));
        old.finish()?;
        Ok(i)
    }

    /// Whether `src`'s bytes at `so` equal `want`, and that range can be cloned from (inside
    /// the source's data, whole blocks or the tail at the source's EOF). Reads up to `ahead`
    /// bytes so that a run extending over the next blocks needs no further reads.
    fn verify(
        &mut self,
        d: &Dest<'_>,
        src: u32,
        so: u64,
        want: &[u8],
        ahead: usize,
    ) -> Result<bool, SendError> {
        let len = want.len() as u64;
        let w = &self.window;
        if w.src == src && so >= w.off && so + len <= w.off + w.data.len() as u64 {
            // The window lies inside one data range of the source and within its size.
            let at = (so - w.off) as usize;
            return Ok(w.data[at..at + want.len()] == *want && (len == BLOCK || so + len == w.size));
        }
        let sf: &SourceFile = if Some(src) == d.me {
            d.sf
        } else {
            let i = self.source_file(src)?;
            &self.open[i].1
        };
        let ok_range = so + len <= sf.size
            && (len == BLOCK || so + len == sf.size)
            && range_is_data(&sf.ranges, so, so + len);
        if !ok_range {
            return Ok(false);
        }
        // Read ahead, within the same data range.
        let i = sf.ranges.partition_point(|&(_, re)| re <= so);
        let range_end = sf.ranges[i].1;
        let n = (ahead.max(want.len()).min(WINDOW.max(want.len())) as u64).min(range_end - so);
        let n = usize::try_from(n).unwrap_or(want.len());
        self.window.src = u32::MAX;
        self.window.data.resize(n, 0);
        sf.read_at(&mut self.window.data[..n], so)?;
        self.window.src = src;
        self.window.off = so;
        self.window.size = sf.size;
        Ok(self.window.data[..want.len()] == *want)
    }

    /// Sends the piece `[b, e)` of `buf`, which holds the file's bytes from offset `off`. A
    /// piece is a whole aligned block, the tail at EOF, or a part of a block; pieces come in
    /// increasing offsets, and [`Dedupe::end_chunk`] must be called before `buf` changes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn piece<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
        off: u64,
        buf: &[u8],
        b: usize,
        e: usize,
    ) -> Result<(), SendError> {
        let pos = off + b as u64;
        let bytes = &buf[b..e];
        let len = bytes.len() as u64;
        let aligned = pos.is_multiple_of(BLOCK);
        let tail = aligned && len < BLOCK && pos + len == d.sf.size;
        if d.dedupe && aligned && (len == BLOCK || tail) {
            let ahead = buf.len() - b;
            // 1. The next block of the run being cloned.
            if let Some(r) = d.run
                && r.dst + r.len == pos
                && r.len.is_multiple_of(BLOCK)
            {
                let so = r.src_off + r.len;
                let self_ok = Some(r.src) != d.me || (so + len <= r.dst && !tail);
                if self_ok && self.verify(d, r.src, so, bytes, ahead)? {
                    if let Some(run) = d.run.as_mut() {
                        run.len += len;
                    }
                    return Ok(());
                }
            }
            // 2. A block of the index.
            let key = block_key(bytes);
            let zero = self.is_zero(key, bytes);
            if !zero && let Some((src, blk)) = self.index.get(key) {
                let so = u64::from(blk) * BLOCK;
                let self_ok = Some(src) != d.me
                    || (so + len <= pos && !tail && (so > 0 || d.recv_size() > BLOCK));
                if self_ok && self.verify(d, src, so, bytes, ahead)? {
                    self.flush_write(em, d, off, buf)?;
                    self.flush_run(em, d)?;
                    d.run = Some(Run {
                        dst: pos,
                        len,
                        src,
                        src_off: so,
                    });
                    return Ok(());
                }
            }
            // 3. Written: a source for what follows.
            if !zero
                && let Some(me) = d.me
                && let Ok(blk) = u32::try_from(pos / BLOCK)
            {
                self.index.insert(key, me, blk);
            }
        }
        self.flush_run(em, d)?;
        match d.write.as_mut() {
            Some(w) if w.1 == pos => w.1 = pos + len,
            _ => {
                self.flush_write(em, d, off, buf)?;
                d.write = Some((pos, pos + len));
            }
        }
        Ok(())
    }

    /// Nothing is sent at the current position: sends what is pending.
    pub(crate) fn gap<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
        off: u64,
        buf: &[u8],
    ) -> Result<(), SendError> {
        self.flush_write(em, d, off, buf)?;
        self.flush_run(em, d)
    }

    /// The caller's chunk `buf` (at `off`) is about to be reused: sends the pending WRITE.
    pub(crate) fn end_chunk<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
        off: u64,
        buf: &[u8],
    ) -> Result<(), SendError> {
        self.flush_write(em, d, off, buf)
    }

    /// Sends everything pending (after the last chunk's [`Dedupe::end_chunk`]).
    pub(crate) fn finish<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
    ) -> Result<(), SendError> {
        debug_assert!(d.write.is_none(), "end_chunk not called");
        self.flush_run(em, d)
    }

    fn flush_write<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
        off: u64,
        buf: &[u8],
    ) -> Result<(), SendError> {
        let Some((s, e)) = d.write.take() else {
            return Ok(());
        };
        if d.no_data {
            em.update_extent(d.path, s, e - s)?;
        } else {
            em.write(d.path, s, &buf[(s - off) as usize..(e - off) as usize])?;
        }
        d.sent_end = d.sent_end.max(e);
        d.sent = true;
        Ok(())
    }

    fn flush_run<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        d: &mut Dest<'_>,
    ) -> Result<(), SendError> {
        let Some(r) = d.run.take() else {
            return Ok(());
        };
        d.sent_end = d.sent_end.max(r.dst + r.len);
        d.sent = true;
        if r.src_off == 0 && r.len == BLOCK {
            // As the kernel: the receiver may hold a file's only first block inline.
            let mut b = std::mem::take(&mut self.buf);
            b.resize(BLOCK as usize, 0);
            d.sf.read_at(&mut b, r.dst)?;
            let res = em.write(d.path, r.dst, &b);
            self.buf = b;
            return res;
        }
        let (uuid, ctransid, path) = match self.sources[r.src as usize] {
            Source::Parent(oi) => match self.parent {
                Some((old, u, c)) => (u, c, old.inode_path(oi)),
                None => {
                    return Err(SendError::Invalid(
                        "clone source in a missing parent".into(),
                    ));
                }
            },
            Source::New { dentry, .. } => (self.uuid, self.ctransid, self.new.dentry_path(dentry)),
        };
        em.clone_range(d.path, r.dst, r.len, &uuid, ctransid, &path, r.src_off)
    }

    /// Closes the open source files, checking that none changed while the stream was made.
    pub(crate) fn close(&mut self) -> Result<(), SendError> {
        for (_, sf) in self.open.drain(..) {
            sf.finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_content_and_length() {
        let a = vec![7u8; 4096];
        let mut b = a.clone();
        b[4095] = 8;
        assert_ne!(block_key(&a), block_key(&b));
        assert_ne!(block_key(&a[..100]), block_key(&a[..101]));
        assert_ne!(block_key(&[]), 0);
    }

    #[test]
    fn index_is_bounded_and_first_wins() {
        let mut ix = BlockIndex::new(MIN_SLOTS);
        for k in 1..=10_000u64 {
            ix.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 0, k as u32);
        }
        assert_eq!(ix.slots.len(), MIN_SLOTS);
        assert!(ix.len * 4 <= MIN_SLOTS * 3);
        let mut ix = BlockIndex::new(1 << 16);
        ix.insert(42, 1, 1);
        ix.insert(42, 2, 2);
        assert_eq!(ix.get(42), Some((1, 1)));
        assert_eq!(ix.get(43), None);
        // Growth keeps every key.
        for k in 100..5000u64 {
            ix.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 3, k as u32);
        }
        for k in 100..5000u64 {
            assert_eq!(
                ix.get(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
                Some((3, k as u32))
            );
        }
    }

    #[test]
    fn data_range_containment() {
        let r = [(0, 8192), (16384, 20000)];
        assert!(range_is_data(&r, 0, 4096));
        assert!(range_is_data(&r, 4096, 8192));
        assert!(!range_is_data(&r, 8192, 12288));
        assert!(!range_is_data(&r, 4096, 12288));
        assert!(range_is_data(&r, 16384, 20000));
        assert!(!range_is_data(&r, 16384, 20480));
    }
}
