//! The segment digest (BLAKE3) of the signing and verifying filters.

/// Bytes staged before they are hashed.
const STAGE: usize = 64 * 1024;

/// BLAKE3 over a segment's covered bytes, fed frame by frame. BLAKE3 is fast on large inputs
/// (SIMD over many chunks) and slow when fed one 10-byte header at a time, so small pieces are
/// staged and hashed together; large ones are hashed in place.
pub(crate) struct SegmentHasher {
    hasher: blake3::Hasher,
    stage: Vec<u8>,
}

impl SegmentHasher {
    pub(crate) fn new() -> SegmentHasher {
        SegmentHasher {
            hasher: blake3::Hasher::new(),
            stage: Vec::with_capacity(STAGE),
        }
    }

    /// Adds `b` to the segment.
    pub(crate) fn update(&mut self, b: &[u8]) {
        if self.stage.len() + b.len() > STAGE {
            self.hasher.update(&self.stage);
            self.stage.clear();
        }
        if b.len() >= STAGE {
            self.hasher.update(b);
        } else {
            self.stage.extend_from_slice(b);
        }
    }

    /// The segment's digest; starts the next segment.
    pub(crate) fn finish_segment(&mut self) -> [u8; 32] {
        self.hasher.update(&self.stage);
        self.stage.clear();
        let d = *self.hasher.finalize().as_bytes();
        self.hasher.reset();
        d
    }

    /// Forgets the segment so far.
    pub(crate) fn reset(&mut self) {
        self.stage.clear();
        self.hasher.reset();
    }
}
