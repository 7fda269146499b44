//! File data by content: fixed 4 KiB blocks at block-aligned file offsets, each named by a
//! strong hash, and an on-disk index from that name to where this host holds the bytes.
//!
//! Why 4 KiB blocks at file offsets: a btrfs clone (reflink) needs block-aligned offsets on
//! both sides (only a range ending at the source's EOF may be shorter), so a chunk that may
//! become a clone must start on a block boundary in the seed file *and* in the received file.
//! Indexing every block lets any aligned piece of any WRITE match, whatever size the sender cut
//! its WRITEs (48 KiB for kernel streams), and consecutive matching blocks of one seed file are
//! cloned as one range, so extents stay large. The cost is 1.5 table slots of 24 bytes per
//! block (and per 64 KiB window): 9.6 MiB per GiB of seed data (see [`index`]).

mod framing;
pub mod index;
pub mod map;
pub mod pool;

pub use framing::{DATA_FRAME_MAX, FramingWriter, LITERAL_MAX, MIN_DATA_FRAME, ReuseFrames};
pub use index::{ContentError, ContentIndex, Location, Seed, SeedFile};
pub use map::{ContentMap, Frame, FrameKind, MapError};
pub use pool::pool_index;

/// The block size of chunking and of btrfs clones.
pub const BLOCK: u64 = 4096;

/// The window of file data a published DATA frame holds at most, at file offsets that are a
/// multiple of it: the content index also names each such window of its files (and the
/// partial one a file ends with) by one key, so a content map needs one key per window instead
/// of one per block.
pub const DATA_WINDOW: u64 = 64 << 10;

/// The name of a block's bytes: the first 16 bytes of their BLAKE3 hash. A name only finds
/// candidates; bytes are compared before anything found is kept (see `recv::dedup`).
pub type Key = [u8; 16];

/// The key of `data` (one block, or a shorter last block of a file).
#[must_use]
pub fn block_key(data: &[u8]) -> Key {
    let h = blake3::hash(data);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// True when every byte is zero. Zero blocks are neither indexed nor cloned: they match
/// everywhere (one arbitrary location would break up clone runs) and cost little as data.
#[must_use]
pub fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    words.all(|w| w == [0u8; 8]) && words.remainder().iter().all(|&b| b == 0)
}

/// The blocks of a file range `[offset, offset + len)` that can take part in clones: from the
/// first block boundary at or after `offset` to the end, cut at block boundaries. The last
/// piece may be shorter than a block (it can match only the end of a seed file). Returns
/// (file offset, length) pairs; the head before the first boundary is not included.
pub fn aligned_blocks(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset.saturating_add(len);
    let first = offset.div_ceil(BLOCK).saturating_mul(BLOCK);
    let mut at = first;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let n = (end - at).min(BLOCK);
        let piece = (at, n);
        at += n;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_on_boundaries_and_end_at_the_range_end() {
        let v: Vec<_> = aligned_blocks(0, 10_000).collect();
        assert_eq!(v, [(0, 4096), (4096, 4096), (8192, 1808)]);
        let v: Vec<_> = aligned_blocks(100, 8192).collect();
        assert_eq!(v, [(4096, 4096), (8192, 100)]);
        assert_eq!(aligned_blocks(100, 3000).count(), 0);
        assert_eq!(aligned_blocks(4096, 0).count(), 0);
        let v: Vec<_> = aligned_blocks(4096, 4096).collect();
        assert_eq!(v, [(4096, 4096)]);
    }

    #[test]
    fn zero_blocks_and_keys() {
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&[0; 13]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
        assert_ne!(block_key(b"a"), block_key(b"b"));
        assert_eq!(block_key(b"abc"), block_key(b"abc"));
    }
}
