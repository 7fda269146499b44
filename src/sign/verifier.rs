//! The verifying filter: a [`Source`] that releases a segment's commands only after its
//! signature block verified.

use super::block::{Block, Kind, SIGNATURE_CMD};
use super::keys::{KeyId, KeySet, hex};
use super::{Failure, FailureKind, MAX_SEGMENT_BYTES, SignError, show_path};
use crate::Error;
use crate::pipeline::Source;
use crate::stream::{Command, Item, Reader, attr, cmd, proto, stream_header};
use ed25519_dalek::Signature;
use std::io::Read;

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
    scratch: Command,
    /// Raw covered bytes of the current segment.
    buf: Vec<u8>,
    /// The segment began with a stream header.
    seg_header: bool,
    seg_cmds: u64,
    seg_first_index: Option<u64>,
    seg_paths: Option<(Vec<u8>, Vec<u8>)>,
    seg_start: u64,
    /// Release position in `buf`; `rel_end` is 0 when nothing is to release.
    rel_pos: usize,
    rel_end: usize,
    rel_header: bool,
    version: u32,
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
            buf: Vec::new(),
            seg_header: false,
            seg_cmds: 0,
            seg_first_index: None,
            seg_paths: None,
            seg_start: 0,
            rel_pos: 0,
            rel_end: 0,
            rel_header: false,
            version: 0,
            after: After::Segment,
            segment: 0,
            prev_sig: [0; 64],
            yielded: 0,
            max_segment: MAX_SEGMENT_BYTES,
            report: VerifyReport::default(),
        }
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
        self.buf.clear();
        self.rel_end = 0;
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

    /// Yields the next buffered item of the verified segment.
    fn release(&mut self, out: &mut Command) -> Result<Item, Error> {
        let pos = self.rel_pos;
        if self.rel_header {
            self.rel_header = false;
            let h = &self.buf[pos..pos + proto::STREAM_HEADER_LEN];
            self.version = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
            self.rel_pos += proto::STREAM_HEADER_LEN;
            self.finish_release();
            return Ok(Item::Header(self.version));
        }
        let h = &self.buf[pos..pos + proto::CMD_HEADER_LEN];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let cmd_no = u16::from_le_bytes([h[4], h[5]]);
        let start = pos + proto::CMD_HEADER_LEN;
        let p = out.payload_buf();
        p.clear();
        p.extend_from_slice(&self.buf[start..start + len]);
        // The reader indexed these very bytes before, so this cannot fail.
        out.finish_read(cmd_no, self.version)
            .map_err(|e| Error::Invalid(format!("re-reading a verified command failed: {e}")))?;
        self.rel_pos = start + len;
        self.yielded += 1;
        self.finish_release();
        Ok(Item::Command)
    }

    fn finish_release(&mut self) {
        if self.rel_pos >= self.rel_end {
            self.rel_pos = 0;
            self.rel_end = 0;
            self.buf.clear();
        }
    }

    fn start_segment(&mut self) {
        self.buf.clear();
        self.seg_header = false;
        self.seg_cmds = 0;
        self.seg_first_index = None;
        self.seg_paths = None;
        self.seg_start = self.reader.offset();
    }

    /// Reads the next segment and its block, and verifies it. `header` is a stream header
    /// already read that starts the segment.
    fn read_segment(&mut self, header: Option<u32>) -> Result<(), Error> {
        self.start_segment();
        if let Some(v) = header {
            self.seg_start -= proto::STREAM_HEADER_LEN as u64;
            self.buf.extend_from_slice(&stream_header(v));
            self.seg_header = true;
        }
        let mut c = std::mem::take(&mut self.scratch);
        let r = self.read_segment_with(&mut c);
        self.scratch = c;
        r
    }

    fn read_segment_with(&mut self, c: &mut Command) -> Result<(), Error> {
        loop {
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
                    return Err(self.fail(at, None, None, k));
                }
                Some(Item::Header(v)) => {
                    // Only possible as the very first item.
                    self.seg_start = at;
                    self.buf.extend_from_slice(&stream_header(v));
                    self.seg_header = true;
                }
                Some(Item::Command) => match c.cmd() {
                    SIGNATURE_CMD => return self.check_block(c, at, index),
                    cmd::END => {
                        let k = self.unsigned_or(
                            FailureKind::UncoveredEnd,
                            "END without a signature block",
                        );
                        return Err(self.fail(at, index, None, k));
                    }
                    n => {
                        let len = c.payload().len();
                        if (self.buf.len() + proto::CMD_HEADER_LEN + len) as u64 > self.max_segment
                        {
                            let k = self.unsigned_or(
                                FailureKind::TooLarge {
                                    max: self.max_segment,
                                },
                                "no signature block within the first segment bound (8 MiB)",
                            );
                            return Err(self.fail(at, index, None, k));
                        }
                        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
                        self.buf.extend_from_slice(&n.to_le_bytes());
                        self.buf
                            .extend_from_slice(&self.reader.last_crc().to_le_bytes());
                        self.buf.extend_from_slice(c.payload());
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
                    }
                },
            }
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
        if b.bytes != self.buf.len() as u64 || b.commands != self.seg_cmds {
            let k = FailureKind::Count {
                bytes: self.buf.len() as u64,
                commands: self.seg_cmds,
                want_bytes: b.bytes,
                want_commands: b.commands,
            };
            return Err(self.fail(at, index, kid, k));
        }
        let digest: [u8; 32] = *blake3::hash(&self.buf).as_bytes();
        if digest != b.digest {
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
        self.rel_pos = 0;
        self.rel_end = self.buf.len();
        self.rel_header = self.seg_header;
        if self.rel_end == 0 {
            self.buf.clear();
        }
        if b.kind != Kind::Segment {
            self.after = After::ExpectEnd(b.kind);
        }
        Ok(())
    }

    fn step(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        loop {
            if self.rel_end > 0 {
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
        if self.rel_end > 0 {
            self.seg_start + self.rel_pos as u64
        } else {
            self.reader.offset()
        }
    }

    /// Commands yielded (signature blocks are not counted).
    fn commands(&self) -> u64 {
        self.yielded
    }
}
