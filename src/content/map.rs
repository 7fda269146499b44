//! The content map of a published full stream file: how the file's independent zstd frames
//! tile the signed stream, with a digest of each compressed frame and, for the frames holding
//! file data, the [`Key`] of every 4 KiB piece. A puller that holds some of those pieces fetches
//! only the other frames (byte ranges of the stream file) and rebuilds the exact stream.
//!
//! File format (`streams/<sha256>.map`): the whole file is one zstd frame around
//!
//! ```text
//! magic "subvolCM" | format version u32 | stream_bytes u64 | comp_bytes u64 | frame count u64
//! per frame: kind u8 (0 literal, 1 data, 2 window) | stream_len u32 | comp_len u32 | digest [16]
//!            | data frames: ceil(stream_len / 4096) keys [16]
//!            | window frames: one key [16]
//! ```
//!
//! A *window* frame (format 2) is a data frame whose data starts at a file offset that is a
//! multiple of [`DATA_WINDOW`]: one key names its whole data, which is exactly what the pool's
//! content index records for each such window of its files. A piece key per 4 KiB block made
//! the map ~16 bytes per 4 KiB of data (1.3 MiB of keys for a 340 MB tree, fetched by every
//! seeded pull); one key per 64 KiB window makes it 1/16 of that. Format 1 maps (no window
//! frames) are still read.
//!
//! All integers little-endian, fixed width (zstd takes out the zero bytes). Offsets are not
//! stored: frames tile the stream and the compressed file in order, and [`ContentMap::decode`]
//! checks they do so exactly against the sizes the signed index gives.

use super::{BLOCK, DATA_WINDOW, Key};
use std::io::Read;

/// First bytes of a (decompressed) map.
pub const MAGIC: &[u8; 8] = b"subvolCM";
/// The format version this code writes (it reads this one and [`FORMAT_V1`]).
pub const FORMAT_VERSION: u32 = 2;
/// The first format: no window frames.
pub const FORMAT_V1: u32 = 1;
/// Longest frame (stream bytes) a map may describe. Writers cut far below it (one WRITE's data,
/// 1 MiB of literal bytes); the cap bounds what a reader of the map ever buffers per frame.
pub const MAX_FRAME_STREAM_LEN: u64 = 8 << 20;
/// Longest compressed frame a map may describe: zstd's bound for [`MAX_FRAME_STREAM_LEN`]
/// bytes, rounded up.
pub const MAX_FRAME_COMP_LEN: u64 = 9 << 20;
/// Shortest possible zstd frame: magic (4), frame header (at least 2), one block header (3).
/// It bounds how many frames a compressed file of a given size can hold.
pub const MIN_COMP_FRAME: u64 = 9;

const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
const ENTRY_LEN: usize = 1 + 4 + 4 + 16;
const KEY_LEN: usize = 16;
/// zstd level of the map file (its bytes are mostly keys, which do not compress anyway).
const MAP_LEVEL: i32 = 3;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Stream bytes that are not file data worth naming: headers, attributes, signature
    /// blocks, small or unaligned data.
    Literal,
    /// The block-aligned part of one WRITE's data, and nothing else; named by the keys of its
    /// 4 KiB pieces.
    Data,
    /// Like [`FrameKind::Data`], starting at a file offset that is a multiple of
    /// [`DATA_WINDOW`] (so at most one window long); named by one key of its whole data.
    Window,
}

impl FrameKind {
    /// File data (a data or window frame).
    #[must_use]
    pub fn is_data(self) -> bool {
        self != FrameKind::Literal
    }

    fn byte(self) -> u8 {
        match self {
            FrameKind::Literal => 0,
            FrameKind::Data => 1,
            FrameKind::Window => 2,
        }
    }

    /// How many keys name a frame of this kind with `stream_len` bytes.
    #[must_use]
    pub fn key_count(self, stream_len: u64) -> u64 {
        match self {
            FrameKind::Literal => 0,
            FrameKind::Data => stream_len.div_ceil(BLOCK),
            FrameKind::Window => 1,
        }
    }
}

/// One zstd frame of the stream file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it holds.
    pub kind: FrameKind,
    /// Where its bytes start in the (decompressed) signed stream.
    pub stream_offset: u64,
    /// How many stream bytes it decompresses to.
    pub stream_len: u64,
    /// Where it starts in the stream file.
    pub comp_offset: u64,
    /// Its length in the stream file.
    pub comp_len: u64,
    /// [`super::block_key`] of its compressed bytes (checks a fetched range before it is
    /// decompressed).
    pub digest: Key,
    /// Index into [`ContentMap::keys`] of its first key (data and window frames; for literal
    /// frames the number of keys before it).
    pub first_key: usize,
}

/// The frames of one stream file, in order, and the piece keys of its data frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentMap {
    /// Size of the signed stream (decompressed).
    pub stream_bytes: u64,
    /// Size of the stream file (compressed).
    pub comp_bytes: u64,
    /// Frames, tiling both.
    pub frames: Vec<Frame>,
    /// Keys of the 4 KiB pieces of all data frames and the one key of each window frame, frame
    /// after frame.
    pub keys: Vec<Key>,
}

/// Why a map was refused.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file is not a zstd frame (or is cut short).
    #[error("content map is not valid zstd data")]
    Decompress(#[source] std::io::Error),
    /// Decompressed, it is larger than any map of a stream this size can be.
    #[error(
        "content map decompresses to more than {cap} bytes, the most a map of this stream can take"
    )]
    TooLarge {
        /// The cap.
        cap: u64,
    },
    /// Wrong magic.
    #[error("not a content map (bad magic)")]
    BadMagic,
    /// A format version this code does not read.
    #[error(
        "content map format version {0} is not supported (this reader knows {FORMAT_V1} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// The bytes end inside a field.
    #[error("content map truncated at byte {at}, inside {what}")]
    Truncated {
        /// Offset in the decompressed map.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// Bytes after the last frame.
    #[error("content map has {extra} bytes after its last frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The map describes a stream or file of another size than the index lists.
    #[error("content map is for {what} of {map} bytes, the index lists {listed}")]
    SizeMismatch {
        /// "a stream" or "a stream file".
        what: &'static str,
        /// Size in the map.
        map: u64,
        /// Size in the index.
        listed: u64,
    },
    /// More frames than the sizes allow.
    #[error("content map lists {count} frames, more than the {max} a file of this size can hold")]
    TooManyFrames {
        /// Frames listed.
        count: u64,
        /// Most possible.
        max: u64,
    },
    /// An unknown frame kind.
    #[error("content map frame {frame}: unknown kind {kind}")]
    BadKind {
        /// Frame index.
        frame: usize,
        /// The kind byte.
        kind: u8,
    },
    /// A frame length out of bounds.
    #[error(
        "content map frame {frame} (stream offset {offset}): {what} length {len} is not in 1..={max}"
    )]
    BadFrameLen {
        /// Frame index.
        frame: usize,
        /// Its stream offset.
        offset: u64,
        /// "stream" or "compressed".
        what: &'static str,
        /// The length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// Frames run past the end of the stream or the file.
    #[error("content map frame {frame} (stream offset {offset}) ends past the end of the {what}")]
    Overrun {
        /// Frame index.
        frame: usize,
        /// Its stream offset.
        offset: u64,
        /// "stream" or "stream file".
        what: &'static str,
    },
    /// Frames end before the end of the stream or the file.
    #[error("content map frames cover {covered} bytes of the {what}, which has {total}")]
    Uncovered {
        /// "stream" or "stream file".
        what: &'static str,
        /// Bytes covered.
        covered: u64,
        /// Its size.
        total: u64,
    },
}

impl ContentMap {
    /// The keys of a frame of this map: of each 4 KiB piece of a data frame (the last may
    /// cover a shorter piece), the one key of a window frame; empty for a literal frame or a
    /// frame of another map.
    #[must_use]
    pub fn keys_of(&self, f: &Frame) -> &[Key] {
        let n = f.kind.key_count(f.stream_len);
        usize::try_from(n)
            .ok()
            .and_then(|n| self.keys.get(f.first_key..f.first_key.checked_add(n)?))
            .unwrap_or(&[])
    }

    /// The map file's bytes.
    ///
    /// # Panics
    /// Never for a map built by [`super::FramingWriter`] or [`ContentMap::decode`] (frame
    /// lengths fit in u32; zstd compression of an in-memory buffer does not fail).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(
            HEADER_LEN + self.frames.len() * ENTRY_LEN + self.keys.len() * KEY_LEN,
        );
        raw.extend_from_slice(MAGIC);
        raw.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        raw.extend_from_slice(&self.stream_bytes.to_le_bytes());
        raw.extend_from_slice(&self.comp_bytes.to_le_bytes());
        raw.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        for f in &self.frames {
            raw.push(f.kind.byte());
            let len32 =
                |v: u64| u32::try_from(v).expect("frame lengths are capped far below 4 GiB");
            raw.extend_from_slice(&len32(f.stream_len).to_le_bytes());
            raw.extend_from_slice(&len32(f.comp_len).to_le_bytes());
            raw.extend_from_slice(&f.digest);
            for k in self.keys_of(f) {
                raw.extend_from_slice(k);
            }
        }
        zstd::bulk::compress(&raw, MAP_LEVEL).expect("zstd compresses any buffer")
    }

    /// The most bytes a valid map of a stream of `stream_bytes` in a file of `comp_bytes` can
    /// decompress to.
    fn max_raw_len(stream_bytes: u64, comp_bytes: u64) -> u64 {
        let frames = Self::max_frames(stream_bytes, comp_bytes);
        let keys = stream_bytes.div_ceil(BLOCK).saturating_add(frames);
        (HEADER_LEN as u64)
            .saturating_add(frames.saturating_mul(ENTRY_LEN as u64))
            .saturating_add(keys.saturating_mul(KEY_LEN as u64))
    }

    /// Every frame holds at least one stream byte and one zstd frame.
    fn max_frames(stream_bytes: u64, comp_bytes: u64) -> u64 {
        stream_bytes.min(comp_bytes / MIN_COMP_FRAME)
    }

    /// Reads a map file, checking it against the stream size and file size the (signed) index
    /// lists for its stream file: every frame 1 byte to its cap on both sides, the frames tiling
    /// the stream and the file exactly, one key per 4 KiB piece of each data frame.
    ///
    /// # Errors
    /// What is wrong, with the frame index and its stream offset where there is one.
    pub fn decode(
        bytes: &[u8],
        stream_bytes: u64,
        comp_bytes: u64,
    ) -> Result<ContentMap, MapError> {
        let cap = Self::max_raw_len(stream_bytes, comp_bytes);
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(bytes)
            .map_err(MapError::Decompress)?
            .take(cap.saturating_add(1))
            .read_to_end(&mut raw)
            .map_err(MapError::Decompress)?;
        if raw.len() as u64 > cap {
            return Err(MapError::TooLarge { cap });
        }
        let mut c = Cursor { b: &raw, at: 0 };
        if c.take(MAGIC.len(), "the magic")? != MAGIC {
            return Err(MapError::BadMagic);
        }
        let version = c.u32("the format version")?;
        if version != FORMAT_VERSION && version != FORMAT_V1 {
            return Err(MapError::UnsupportedVersion(version));
        }
        for (what, listed) in [("a stream", stream_bytes), ("a stream file", comp_bytes)] {
            let map = c.u64("the sizes")?;
            if map != listed {
                return Err(MapError::SizeMismatch { what, map, listed });
            }
        }
        let count = c.u64("the frame count")?;
        let max = Self::max_frames(stream_bytes, comp_bytes);
        if count > max {
            return Err(MapError::TooManyFrames { count, max });
        }
        // Capacity from a validated count, and still bounded: the Vecs grow with what is read.
        let mut map = ContentMap {
            stream_bytes,
            comp_bytes,
            frames: Vec::with_capacity(count.min(1 << 12) as usize),
            keys: Vec::new(),
        };
        let (mut so, mut co) = (0u64, 0u64);
        for frame in 0..count as usize {
            let kind = match c.u8("a frame kind")? {
                0 => FrameKind::Literal,
                1 => FrameKind::Data,
                2 if version >= 2 => FrameKind::Window,
                kind => return Err(MapError::BadKind { frame, kind }),
            };
            let stream_len = u64::from(c.u32("a frame's stream length")?);
            let comp_len = u64::from(c.u32("a frame's compressed length")?);
            for (what, len, max) in [
                ("stream", stream_len, MAX_FRAME_STREAM_LEN),
                ("compressed", comp_len, MAX_FRAME_COMP_LEN),
            ] {
                if len == 0 || len > max {
                    return Err(MapError::BadFrameLen {
                        frame,
                        offset: so,
                        what,
                        len,
                        max,
                    });
                }
            }
            let overrun = |what| MapError::Overrun {
                frame,
                offset: so,
                what,
            };
            let s_end = so
                .checked_add(stream_len)
                .filter(|&e| e <= stream_bytes)
                .ok_or_else(|| overrun("stream"))?;
            let c_end = co
                .checked_add(comp_len)
                .filter(|&e| e <= comp_bytes)
                .ok_or_else(|| overrun("stream file"))?;
            let mut digest = [0u8; 16];
            digest.copy_from_slice(c.take(16, "a frame digest")?);
            if kind == FrameKind::Window && stream_len > DATA_WINDOW {
                return Err(MapError::BadFrameLen {
                    frame,
                    offset: so,
                    what: "window",
                    len: stream_len,
                    max: DATA_WINDOW,
                });
            }
            let first_key = map.keys.len();
            for _ in 0..kind.key_count(stream_len) {
                let mut k = [0u8; 16];
                k.copy_from_slice(c.take(KEY_LEN, "a frame key")?);
                map.keys.push(k);
            }
            map.frames.push(Frame {
                kind,
                stream_offset: so,
                stream_len,
                comp_offset: co,
                comp_len,
                digest,
                first_key,
            });
            so = s_end;
            co = c_end;
        }
        if c.at != raw.len() {
            return Err(MapError::TrailingBytes {
                extra: raw.len() - c.at,
            });
        }
        for (what, covered, total) in [
            ("stream", so, stream_bytes),
            ("stream file", co, comp_bytes),
        ] {
            if covered != total {
                return Err(MapError::Uncovered {
                    what,
                    covered,
                    total,
                });
            }
        }
        Ok(map)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MapError> {
        let v = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or(MapError::Truncated { at: self.at, what })?;
        self.at += n;
        Ok(v)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MapError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MapError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, MapError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::block_key;

    /// A map of three frames: literal 100 → 40, data 10000 → 3000 (3 keys), literal 7 → 16.
    fn sample() -> ContentMap {
        let mut m = ContentMap {
            stream_bytes: 10_107,
            comp_bytes: 3056,
            frames: Vec::new(),
            keys: vec![block_key(b"a"), block_key(b"b"), block_key(b"c")],
        };
        let mut so = 0;
        let mut co = 0;
        for (i, (kind, sl, cl, fk)) in [
            (FrameKind::Literal, 100, 40, 0),
            (FrameKind::Data, 10_000, 3000, 0),
            (FrameKind::Literal, 7, 16, 3),
        ]
        .into_iter()
        .enumerate()
        {
            m.frames.push(Frame {
                kind,
                stream_offset: so,
                stream_len: sl,
                comp_offset: co,
                comp_len: cl,
                digest: block_key(&[i as u8]),
                first_key: fk,
            });
            so += sl;
            co += cl;
        }
        m
    }

    fn raw_of(m: &ContentMap) -> Vec<u8> {
        zstd::stream::decode_all(&m.encode()[..]).unwrap()
    }

    fn decode_raw(raw: &[u8], s: u64, c: u64) -> Result<ContentMap, MapError> {
        ContentMap::decode(&zstd::bulk::compress(raw, 1).unwrap(), s, c)
    }

    #[test]
    fn round_trip_and_keys_of() {
        let m = sample();
        let d = ContentMap::decode(&m.encode(), m.stream_bytes, m.comp_bytes).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.keys_of(&d.frames[1]), &m.keys[..]);
        assert!(d.keys_of(&d.frames[0]).is_empty());
        // A frame that is not this map's finds no keys rather than panicking.
        let mut stray = d.frames[1].clone();
        stray.first_key = usize::MAX - 1;
        assert!(d.keys_of(&stray).is_empty());
        // Deterministic bytes.
        assert_eq!(m.encode(), d.encode());
        // The empty map of an empty stream.
        let e = ContentMap::default();
        assert_eq!(ContentMap::decode(&e.encode(), 0, 0).unwrap(), e);
    }

    /// A map with a window frame (literal 10 → 9, window 65536 → 900, literal 5 → 12).
    fn with_window() -> ContentMap {
        let digest = block_key(b"w");
        let frame = |kind, stream_offset, stream_len, comp_offset, comp_len, first_key| Frame {
            kind,
            stream_offset,
            stream_len,
            comp_offset,
            comp_len,
            digest,
            first_key,
        };
        ContentMap {
            stream_bytes: 10 + 65_536 + 5,
            comp_bytes: 9 + 900 + 12,
            frames: vec![
                frame(FrameKind::Literal, 0, 10, 0, 9, 0),
                frame(FrameKind::Window, 10, 65_536, 9, 900, 0),
                frame(FrameKind::Literal, 65_546, 5, 909, 12, 1),
            ],
            keys: vec![block_key(b"window")],
        }
    }

    #[test]
    fn a_window_frame_has_one_key_and_at_most_a_window() {
        let m = with_window();
        let d = ContentMap::decode(&m.encode(), m.stream_bytes, m.comp_bytes).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.keys_of(&d.frames[1]), &[block_key(b"window")]);
        // Longer than a window: refused with the frame named.
        let mut raw = raw_of(&m);
        let entry = HEADER_LEN + ENTRY_LEN; // past the first (literal, keyless) frame
        assert_eq!(raw[entry], 2);
        raw[entry + 1..entry + 5].copy_from_slice(&65_537u32.to_le_bytes());
        raw[12..20].copy_from_slice(&(m.stream_bytes + 1).to_le_bytes());
        let e = decode_raw(&raw, m.stream_bytes + 1, m.comp_bytes).unwrap_err();
        assert!(
            matches!(
                e,
                MapError::BadFrameLen {
                    frame: 1,
                    what: "window",
                    len: 65_537,
                    ..
                }
            ),
            "{e}"
        );
        // A format 1 map has no window frames.
        let mut raw = raw_of(&m);
        raw[8..12].copy_from_slice(&FORMAT_V1.to_le_bytes());
        let e = decode_raw(&raw, m.stream_bytes, m.comp_bytes).unwrap_err();
        assert!(matches!(e, MapError::BadKind { frame: 1, kind: 2 }), "{e}");
    }

    #[test]
    fn format_1_maps_are_still_read() {
        let m = sample();
        let mut raw = raw_of(&m);
        raw[8..12].copy_from_slice(&FORMAT_V1.to_le_bytes());
        assert_eq!(decode_raw(&raw, m.stream_bytes, m.comp_bytes).unwrap(), m);
    }

    #[test]
    fn every_truncation_is_refused() {
        let m = sample();
        let raw = raw_of(&m);
        for n in 0..raw.len() {
            let e = decode_raw(&raw[..n], m.stream_bytes, m.comp_bytes).unwrap_err();
            assert!(matches!(e, MapError::Truncated { .. }), "cut at {n}: {e}");
        }
        // And a cut compressed file.
        let enc = m.encode();
        for n in 0..enc.len() {
            assert!(ContentMap::decode(&enc[..n], m.stream_bytes, m.comp_bytes).is_err());
        }
    }

    #[test]
    fn corruptions_are_refused_with_the_frame_named() {
        let m = sample();
        let raw = raw_of(&m);
        let (s, c) = (m.stream_bytes, m.comp_bytes);
        let with = |at: usize, v: &[u8]| {
            let mut r = raw.clone();
            r[at..at + v.len()].copy_from_slice(v);
            decode_raw(&r, s, c).unwrap_err()
        };
        assert!(matches!(with(0, b"X"), MapError::BadMagic));
        assert!(matches!(
            with(8, &3u32.to_le_bytes()),
            MapError::UnsupportedVersion(3)
        ));
        // Sizes other than the index's.
        assert!(matches!(
            decode_raw(&raw, s + 1, c).unwrap_err(),
            MapError::SizeMismatch {
                what: "a stream",
                ..
            }
        ));
        assert!(matches!(
            decode_raw(&raw, s, c - 1).unwrap_err(),
            MapError::SizeMismatch {
                what: "a stream file",
                ..
            }
        ));
        // Frame counts beyond what the sizes allow, and a frame short.
        let e = with(28, &u64::MAX.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::TooManyFrames {
                    count: u64::MAX,
                    ..
                }
            ),
            "{e}"
        );
        let e = with(28, &2u64.to_le_bytes());
        assert!(matches!(e, MapError::TrailingBytes { .. }), "{e}");
        // Frame 1 starts at HEADER_LEN + ENTRY_LEN.
        let f1 = HEADER_LEN + ENTRY_LEN;
        let e = with(f1, &[7]);
        assert!(matches!(e, MapError::BadKind { frame: 1, kind: 7 }), "{e}");
        assert!(e.to_string().contains("frame 1"), "{e}");
        let e = with(f1 + 1, &0u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::BadFrameLen {
                    frame: 1,
                    offset: 100,
                    what: "stream",
                    ..
                }
            ),
            "{e}"
        );
        let e = with(f1 + 1, &(9u32 << 20).to_le_bytes());
        assert!(matches!(e, MapError::BadFrameLen { .. }), "{e}");
        let e = with(f1 + 5, &0u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::BadFrameLen {
                    what: "compressed",
                    ..
                }
            ),
            "{e}"
        );
        // Data frame one byte longer: still 3 keys, but the last frame overruns the stream.
        let e = with(f1 + 1, &10_001u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::Overrun {
                    frame: 2,
                    offset: 10_101,
                    what: "stream"
                }
            ),
            "{e}"
        );
        // Data frame 4097 bytes longer needs one more key than there is: the keys are misread.
        let e = with(f1 + 1, &14_097u32.to_le_bytes());
        assert!(matches!(e, MapError::Overrun { .. }), "{e}");
        // Shorter: frames do not reach the end.
        let e = with(f1 + 1, &9_999u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::Uncovered {
                    what: "stream",
                    covered: 10_106,
                    total: 10_107
                }
            ),
            "{e}"
        );
        let e = with(f1 + 5, &2_999u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::Uncovered {
                    what: "stream file",
                    ..
                }
            ),
            "{e}"
        );
        let e = with(f1 + 5, &3_001u32.to_le_bytes());
        assert!(
            matches!(
                e,
                MapError::Overrun {
                    what: "stream file",
                    ..
                }
            ),
            "{e}"
        );
        // Trailing bytes, and not zstd at all.
        let mut r = raw.clone();
        r.push(0);
        assert!(matches!(
            decode_raw(&r, s, c).unwrap_err(),
            MapError::TrailingBytes { extra: 1 }
        ));
        assert!(matches!(
            ContentMap::decode(b"not zstd", s, c).unwrap_err(),
            MapError::Decompress(_)
        ));
    }

    #[test]
    fn a_decompression_bomb_is_cut_off() {
        // 64 MiB of zeros after a valid header, for a 100-byte stream.
        let mut raw = raw_of(&ContentMap {
            stream_bytes: 100,
            comp_bytes: 20,
            frames: vec![Frame {
                kind: FrameKind::Literal,
                stream_offset: 0,
                stream_len: 100,
                comp_offset: 0,
                comp_len: 20,
                digest: [0; 16],
                first_key: 0,
            }],
            keys: Vec::new(),
        });
        raw.resize(64 << 20, 0);
        assert!(matches!(
            decode_raw(&raw, 100, 20).unwrap_err(),
            MapError::TooLarge { .. }
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let m = sample();
        let raw = raw_of(&m);
        // Every single-byte change of the raw map, at both sizes.
        for at in 0..raw.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut r = raw.clone();
                r[at] = v;
                let _ = decode_raw(&r, m.stream_bytes, m.comp_bytes);
            }
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            let _ = decode_raw(&bytes, x % 100_000, (x >> 20) % 100_000);
            let _ = ContentMap::decode(&bytes, x % 100_000, (x >> 20) % 100_000);
        }
    }
}
