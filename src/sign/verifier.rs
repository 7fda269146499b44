//! The verifying filter: a [`Source`] that releases a segment's commands only after its
//! signature block verified.

use super::block::{Block, Kind, SIGNATURE_CMD};
use super::digest::SegmentHasher;
use super::keys::{KeyId, KeySet, hex};
use super::{Failure, FailureKind, MAX_SEGMENT_BYTES, SignError, show_path};
use crate::Error;
use crate::pipeline::Source;
use crate::stream::{Command, Item, Reader, attr, cmd, stream_header};
use ed25519_dalek::Signature;
use std::collections::VecDeque;
use std::io::Read;

/// Payload buffers of released commands kept for reuse: at most this many...
const SPARE_BUFFERS: usize = 256;
/// ...holding at most this many bytes.
const SPARE_BYTES: usize = MAX_SEGMENT_BYTES as usize;

/// A command of a segment whose block is not checked yet: its frame as read (header fields
/// with the CRC the reader checked, payload bytes as they are). Only the payload buffer is held,
/// not a whole [`Command`] with its attribute index, so that a segment of many tiny commands
/// costs a few words per command beyond its bytes, as the segment byte cap means.
struct Held {
    cmd: u16,
    version: u32,
    crc: u32,
    payload: Vec<u8>,
    /// Input offset where the command ends.
    end: u64,
}

/// What a verification saw (so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments whose block verified.
    pub segments: u64,
    /// The signing key (after the first block verified).
    pub key_id: Option<KeyId>,
    /// The signed stream's id.
    pub stream_id: Option<[u8; 16]>,
    /// True once the final block verified and the input ended cleanly after END.
    pub complete: bool,
}

/// A verifier's state at the end of a verified segment: what it needs to verify the rest of
/// the stream read from there on (the chain of signatures continues from `prev_sig`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifierState {
    /// The next segment's number.
    pub segment: u64,
    /// The last verified block's signature (hex): the next block signs over it.
    pub prev_sig: String,
    /// The signing key (hex id).
    pub key_id: String,
    /// The signed stream's id (hex).
    pub stream_id: String,
    /// Commands released so far.
    pub yielded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Reading (or about to read) a segment.
    Segment,
    /// A final block verified: END must come next.
    ExpectEnd(Kind),
    /// END of the last stream was released: clean end of input must come next.
    Last,
    /// END released and another stream must follow.
    More,
    /// Clean end reached.
    Done,
    /// A check failed.
    Failed,
}

/// What reading one item of a segment gave.
enum SegmentItem {
    /// A command of the segment, ending at this input offset: hold it until the block.
    Hold(u64),
    /// Nothing to hold (the stream header starting the segment); read on.
    Next,
    /// The segment's block verified.
    Verified,
}

/// Verifies a signed stream while passing it on.
///
/// Reads one segment (at most [`MAX_SEGMENT_BYTES`] of stream headers and commands) from the
/// [`Reader`], checks the signature block that closes it, and only then yields the segment's
/// headers and commands; signature blocks themselves are consumed. Nothing of a segment that
/// failed is yielded. END is yielded only after the block before it verified (that block says
/// END follows); the call after END returns `Ok(None)` only if the input then ends as that
/// block said, and an error otherwise. So a consumer that commits at END and checks the
/// following call commits only fully verified input.
///
/// ```no_run
/// use subvol::sign::{KeySet, VerifyingSource};
/// use subvol::pipeline::Source;
/// use subvol::stream::{Command, Item, Reader};
/// # fn main() -> Result<(), subvol::Error> {
/// let keys = KeySet::load(&["vendor.pub".into()])?;
/// let input = std::io::BufReader::new(std::fs::File::open("snap.signed").unwrap());
/// let mut src = VerifyingSource::new(Reader::new(input), keys);
/// let mut c = Command::empty();
/// while let Some(item) = src.next_item(&mut c)? {
///     if let Item::Command = item { /* apply c */ }
/// }
/// # Ok(()) }
/// ```
pub struct VerifyingSource<R: Read> {
    reader: Reader<R>,
    keys: KeySet,
    /// Reads the segment's commands (then their payloads move to `held`).
    scratch: Command,
    /// The current segment's commands as read; released as they are once the block verified.
    held: VecDeque<Held>,
    /// Payload buffers of released commands, reused for reading.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
    hasher: SegmentHasher,
    /// Covered bytes of the current segment.
    seg_bytes: u64,
    /// The segment began with a stream header: its version and where it ends.
    seg_header: Option<(u32, u64)>,
    seg_cmds: u64,
    seg_first_index: Option<u64>,
    seg_paths: Option<(Vec<u8>, Vec<u8>)>,
    /// The verified segment is being released.
    releasing: bool,
    /// Input offset after the last item released.
    rel_offset: u64,
    after: After,
    segment: u64,
    prev_sig: [u8; 64],
    yielded: u64,
    max_segment: u64,
    report: VerifyReport,
}

impl<R: Read> std::fmt::Debug for VerifyingSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingSource")
            .field("segment", &self.segment)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<R: Read> VerifyingSource<R> {
    /// Verifies what `reader` reads against `keys` (any of them may have signed the stream).
    #[must_use]
    pub fn new(reader: Reader<R>, keys: KeySet) -> VerifyingSource<R> {
        VerifyingSource {
            reader,
            keys,
            scratch: Command::empty(),
            held: VecDeque::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            hasher: SegmentHasher::new(),
            seg_bytes: 0,
            seg_header: None,
            seg_cmds: 0,
            seg_first_index: None,
            seg_paths: None,
            releasing: false,
            rel_offset: 0,
            after: After::Segment,
            segment: 0,
            prev_sig: [0; 64],
            yielded: 0,
            max_segment: MAX_SEGMENT_BYTES,
            report: VerifyReport::default(),
        }
    }

    /// Continues verifying a stream at a segment boundary: `reader` reads the input from the
    /// offset where `state` was taken (see [`crate::pipeline::Source::resume_state`]). The key
    /// must be one of `keys`.
    ///
    /// # Errors
    /// A state that does not parse, or whose key is not in `keys`.
    pub fn resume(
        reader: Reader<R>,
        keys: KeySet,
        state: &VerifierState,
    ) -> Result<VerifyingSource<R>, Error> {
        let bad = |what: &str| Error::Invalid(format!("resume state: bad {what}"));
        let mut prev_sig = [0u8; 64];
        ::hex::decode_to_slice(&state.prev_sig, &mut prev_sig).map_err(|_| bad("signature"))?;
        let mut key = [0u8; 8];
        ::hex::decode_to_slice(&state.key_id, &mut key).map_err(|_| bad("key id"))?;
        let mut stream_id = [0u8; 16];
        ::hex::decode_to_slice(&state.stream_id, &mut stream_id).map_err(|_| bad("stream id"))?;
        let key_id = KeyId(key);
        if keys.get(key_id).is_none() {
            return Err(Error::Invalid(format!(
                "resume state: the stream was signed by key {}, which is not among the keys given",
                hex(&key)
            )));
        }
        let mut v = VerifyingSource::new(reader, keys);
        v.segment = state.segment;
        v.prev_sig = prev_sig;
        v.yielded = state.yielded;
        v.report = VerifyReport {
            segments: state.segment,
            key_id: Some(key_id),
            stream_id: Some(stream_id),
            complete: false,
        };
        Ok(v)
    }

    /// What was verified so far.
    #[must_use]
    pub fn report(&self) -> VerifyReport {
        self.report
    }

    /// Stream headers read so far.
    #[must_use]
    pub fn streams(&self) -> u64 {
        self.reader.streams()
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> Reader<R> {
        self.reader
    }

    fn fail(
        &mut self,
        offset: u64,
        index: Option<u64>,
        key_id: Option<KeyId>,
        kind: FailureKind,
    ) -> Error {
        self.after = After::Failed;
        self.discard_segment();
        let commands = self
            .seg_first_index
            .map(|a| (a, a + self.seg_cmds.saturating_sub(1)));
        let paths = self
            .seg_paths
            .as_ref()
            .map(|(a, b)| (show_path(a), show_path(b)));
        Error::Sign(SignError::Verify(Box::new(Failure {
            offset,
            index,
            segment: self.segment,
            key_id,
            commands: if self.seg_cmds > 0 { commands } else { None },
            paths,
            kind,
        })))
    }

    fn unsigned_or(&self, k: FailureKind, what: &'static str) -> FailureKind {
        if self.report.key_id.is_none() {
            FailureKind::Unsigned(what)
        } else {
            k
        }
    }

    /// Yields the next item of the verified segment.
    fn release(&mut self, out: &mut Command) -> Result<Item, Error> {
        if let Some((version, end)) = self.seg_header.take() {
            self.rel_offset = end;
            self.finish_release();
            return Ok(Item::Header(version));
        }
        // `releasing` is set only with items held.
        if let Some(h) = self.held.pop_front() {
            // The payload moves to `out` as read; indexing it again is a walk over its TLV
            // headers (no copy, no CRC), cheaper than holding every command's index.
            let old = std::mem::replace(out.payload_buf(), h.payload);
            self.recycle(old);
            out.finish_read(h.cmd, h.version).map_err(|e| {
                Error::Invalid(format!("indexing a verified command again failed: {e}"))
            })?;
            out.set_crc(h.crc);
            self.rel_offset = h.end;
            self.yielded += 1;
        }
        self.finish_release();
        Ok(Item::Command)
    }

    fn finish_release(&mut self) {
        if self.held.is_empty() && self.seg_header.is_none() {
            self.releasing = false;
        }
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && self.spare.len() < SPARE_BUFFERS && self.spare_bytes + cap <= SPARE_BYTES {
            buf.clear();
            self.spare_bytes += cap;
            self.spare.push(buf);
        }
    }

    fn spare_buffer(&mut self) -> Vec<u8> {
        let b = self.spare.pop().unwrap_or_default();
        self.spare_bytes -= b.capacity();
        b
    }

    fn discard_segment(&mut self) {
        while let Some(h) = self.held.pop_front() {
            self.recycle(h.payload);
        }
        self.seg_header = None;
        self.releasing = false;
        self.hasher.reset();
        self.seg_bytes = 0;
    }

    fn start_segment(&mut self) {
        self.discard_segment();
        self.seg_cmds = 0;
        self.seg_first_index = None;
        self.seg_paths = None;
    }

    fn hold_header(&mut self, version: u32) {
        let h = stream_header(version);
        self.hasher.update(&h);
        self.seg_bytes += h.len() as u64;
        self.seg_header = Some((version, self.reader.offset()));
    }

    /// Reads the next segment and its block, and verifies it. `header` is a stream header
    /// already read that starts the segment.
    fn read_segment(&mut self, header: Option<u32>) -> Result<(), Error> {
        self.start_segment();
        if let Some(v) = header {
            self.hold_header(v);
        }
        let mut c = std::mem::take(&mut self.scratch);
        let r = loop {
            if c.payload().is_empty() {
                *c.payload_buf() = self.spare_buffer();
            }
            match self.read_segment_item(&mut c) {
                Ok(SegmentItem::Hold(end)) => {
                    let (cmd, version, crc) = (c.cmd(), c.version(), c.crc());
                    let payload = std::mem::take(c.payload_buf());
                    self.held.push_back(Held {
                        cmd,
                        version,
                        crc,
                        payload,
                        end,
                    });
                }
                Ok(SegmentItem::Next) => {}
                Ok(SegmentItem::Verified) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.scratch = c;
        r
    }

    /// Reads one item of a segment into `c` and says what to do with it.
    fn read_segment_item(&mut self, c: &mut Command) -> Result<SegmentItem, Error> {
        let at = self.reader.offset();
        let item = match self.reader.next(c) {
            Ok(i) => i,
            Err(e) => {
                self.after = After::Failed;
                return Err(e.into());
            }
        };
        let index = self.reader.commands().checked_sub(1);
        match item {
            None => {
                // The reader returns a clean end only between streams, and we never leave
                // a segment open across END.
                let k = self.unsigned_or(
                    FailureKind::MissingStream,
                    "input ends without a signature block",
                );
                Err(self.fail(at, None, None, k))
            }
            Some(Item::Header(v)) => {
                // Only possible as the very first item.
                self.hold_header(v);
                Ok(SegmentItem::Next)
            }
            Some(Item::Command) => match c.cmd() {
                SIGNATURE_CMD => self
                    .check_block(c, at, index)
                    .map(|()| SegmentItem::Verified),
                cmd::END => {
                    let k = self
                        .unsigned_or(FailureKind::UncoveredEnd, "END without a signature block");
                    Err(self.fail(at, index, None, k))
                }
                _ => {
                    if self.seg_bytes + c.frame_len() > self.max_segment {
                        let k = self.unsigned_or(
                            FailureKind::TooLarge {
                                max: self.max_segment,
                            },
                            "no signature block within the first segment bound (8 MiB)",
                        );
                        return Err(self.fail(at, index, None, k));
                    }
                    // The frame as read: header with the CRC the reader checked, then payload.
                    self.hasher.update(&c.frame_header());
                    self.hasher.update(c.payload());
                    self.seg_bytes += c.frame_len();
                    self.seg_cmds += 1;
                    self.seg_first_index.get_or_insert(index.unwrap_or(0));
                    if let Some(p) = c.get(attr::PATH) {
                        match &mut self.seg_paths {
                            None => self.seg_paths = Some((p.to_vec(), p.to_vec())),
                            Some((_, last)) => {
                                if last.as_slice() != p {
                                    last.clear();
                                    last.extend_from_slice(p);
                                }
                            }
                        }
                    }
                    Ok(SegmentItem::Hold(self.reader.offset()))
                }
            },
        }
    }

    fn check_block(&mut self, c: &Command, at: u64, index: Option<u64>) -> Result<(), Error> {
        let b = match Block::decode(c.payload()) {
            Ok(b) => b,
            Err(e) => return Err(self.fail(at, index, None, FailureKind::Malformed(e))),
        };
        let kid = Some(b.key_id);
        let Some(key) = self.keys.get(b.key_id).cloned() else {
            let k = FailureKind::UnknownKey {
                found: b.key_id,
                accepted: self.keys.ids(),
            };
            return Err(self.fail(at, index, kid, k));
        };
        if let (Some(first), Some(sid)) = (self.report.key_id, self.report.stream_id) {
            if first != b.key_id {
                return Err(self.fail(
                    at,
                    index,
                    kid,
                    FailureKind::KeyChanged {
                        found: b.key_id,
                        first,
                    },
                ));
            }
            if sid != b.stream_id {
                let k = FailureKind::WrongStream {
                    found: hex(&b.stream_id),
                    expected: hex(&sid),
                };
                return Err(self.fail(at, index, kid, k));
            }
        }
        if b.segment != self.segment {
            let k = FailureKind::Sequence {
                found: b.segment,
                expected: self.segment,
            };
            return Err(self.fail(at, index, kid, k));
        }
        if b.bytes != self.seg_bytes || b.commands != self.seg_cmds {
            let k = FailureKind::Count {
                bytes: self.seg_bytes,
                commands: self.seg_cmds,
                want_bytes: b.bytes,
                want_commands: b.commands,
            };
            return Err(self.fail(at, index, kid, k));
        }
        if self.hasher.finish_segment() != b.digest {
            return Err(self.fail(at, index, kid, FailureKind::Digest));
        }
        let sig = Signature::from_bytes(&b.signature);
        if key
            .key()
            .verify_strict(&b.message(&self.prev_sig), &sig)
            .is_err()
        {
            return Err(self.fail(at, index, kid, FailureKind::BadSignature));
        }
        // Verified.
        self.prev_sig = b.signature;
        self.segment += 1;
        self.report.segments += 1;
        self.report.key_id = Some(b.key_id);
        self.report.stream_id = Some(b.stream_id);
        self.releasing = !self.held.is_empty() || self.seg_header.is_some();
        if b.kind != Kind::Segment {
            self.after = After::ExpectEnd(b.kind);
        }
        Ok(())
    }

    fn step(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        loop {
            if self.releasing {
                return self.release(out).map(Some);
            }
            match self.after {
                After::Failed => {
                    let at = self.reader.offset();
                    return Err(self.fail(
                        at,
                        None,
                        self.report.key_id,
                        FailureKind::AlreadyFailed,
                    ));
                }
                After::Done => return Ok(None),
                After::Segment => self.read_segment(None)?,
                After::ExpectEnd(kind) => {
                    let at = self.reader.offset();
                    let item = self
                        .reader
                        .next(out)
                        .inspect_err(|_| self.after = After::Failed)?;
                    let index = self.reader.commands().checked_sub(1);
                    if item == Some(Item::Command)
                        && out.cmd() == cmd::END
                        && out.payload().is_empty()
                    {
                        self.after = if kind == Kind::EndLast {
                            After::Last
                        } else {
                            After::More
                        };
                        self.yielded += 1;
                        return Ok(Some(Item::Command));
                    }
                    let found = if item.is_some() {
                        out.name()
                    } else {
                        "the end of input"
                    };
                    let found = if out.cmd() == SIGNATURE_CMD {
                        "a signature block"
                    } else {
                        found
                    };
                    return Err(self.fail(
                        at,
                        index,
                        self.report.key_id,
                        FailureKind::ExpectedEnd { found },
                    ));
                }
                After::Last => {
                    let at = self.reader.offset();
                    match self.reader.next(out) {
                        Ok(None) => {
                            self.after = After::Done;
                            self.report.complete = true;
                            return Ok(None);
                        }
                        Err(e) if matches!(e.kind, crate::stream::StreamErrorKind::Io(_)) => {
                            self.after = After::Failed;
                            return Err(e.into());
                        }
                        Ok(Some(_)) | Err(_) => {
                            return Err(self.fail(
                                at,
                                None,
                                self.report.key_id,
                                FailureKind::TrailingData,
                            ));
                        }
                    }
                }
                After::More => {
                    let at = self.reader.offset();
                    match self
                        .reader
                        .next(out)
                        .inspect_err(|_| self.after = After::Failed)?
                    {
                        Some(Item::Header(v)) => {
                            self.after = After::Segment;
                            self.read_segment(Some(v))?;
                        }
                        _ => {
                            return Err(self.fail(
                                at,
                                None,
                                self.report.key_id,
                                FailureKind::MissingStream,
                            ));
                        }
                    }
                }
            }
        }
    }
}

impl<R: Read> Source for VerifyingSource<R> {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        self.step(out)
    }

    /// Input bytes up to the end of the last item yielded (or of the last block checked).
    fn offset(&self) -> u64 {
        if self.releasing {
            self.rel_offset
        } else {
            self.reader.offset()
        }
    }

    /// Commands yielded (signature blocks are not counted).
    fn commands(&self) -> u64 {
        self.yielded
    }

    /// Only right after the last item of a verified segment (before the next is read), and
    /// only where more segments follow (not before END), if the reader keeps a digest.
    fn resume_state(&mut self) -> Option<crate::pipeline::ResumeState> {
        if self.releasing || self.after != After::Segment {
            return None;
        }
        let (Some(key_id), Some(stream_id)) = (self.report.key_id, self.report.stream_id) else {
            return None;
        };
        let reader = self.reader.state()?;
        Some(crate::pipeline::ResumeState {
            index: self.yielded,
            reader,
            verifier: Some(VerifierState {
                segment: self.segment,
                prev_sig: ::hex::encode(self.prev_sig),
                key_id: ::hex::encode(key_id.0),
                stream_id: ::hex::encode(stream_id),
                yielded: self.yielded,
            }),
        })
    }
}
