//! The signing filter: passes headers and commands through and interleaves signature blocks.

use super::block::{Block, Kind, SIGNATURE_CMD};
use super::digest::SegmentHasher;
use super::keys::{KeyId, SecretKey};
use super::{MAX_SEGMENT_BYTES, SignError, TARGET_SEGMENT_BYTES};
use crate::Error;
use crate::pipeline::{CommandSink, Hook, Position, Source, pump};
use crate::stream::{Command, attr, cmd, command_header, stream_header};
use ed25519_dalek::Signer as _;
use std::io::Write;
use std::ops::ControlFlow;

/// Context string of the key [`derived_stream_id`] hashes with (BLAKE3 `derive_key`).
const STREAM_ID_CONTEXT: &str = "subvol signed send stream id v1";

/// A stream id derived from the secret key and `identity`, a description of the stream's
/// content (for publish: the tree UUIDs, protocol, name and sender version): the same content
/// signed again gives the same id, so the same signed bytes (reproducible publishing). It is a
/// keyed BLAKE3 hash (key derived from the secret seed), so it reveals nothing about the key
/// and nobody without the key can tell which identity an id stands for.
#[must_use]
pub fn derived_stream_id(key: &SecretKey, identity: &[u8]) -> [u8; 16] {
    let k = blake3::derive_key(STREAM_ID_CONTEXT, key.signing_key().as_bytes());
    let h = blake3::keyed_hash(&k, identity);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.as_bytes()[..16]);
    id
}

/// What signing produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignSummary {
    /// Stream headers signed.
    pub streams: u64,
    /// Commands signed (END included, blocks excluded).
    pub commands: u64,
    /// Signature blocks written.
    pub segments: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The signing filter, a [`CommandSink`]: headers and commands in stream order in, the signed
/// stream (the same bytes with signature blocks interleaved) out to `W`. [`CommandSink::finish`]
/// writes the final block and END; then [`Signer::summary`] and [`Signer::into_inner`].
///
/// Each command is hashed as its frame is on the wire ([`Command::frame_header`] and payload):
/// nothing is re-encoded. The END command is held back until the signer knows what follows it
/// (another stream header, or the end of input), so the final block before it can say so.
pub struct Signer<W: Write> {
    out: W,
    key: SecretKey,
    stream_id: [u8; 16],
    hasher: SegmentHasher,
    segment: u64,
    seg_bytes: u64,
    seg_cmds: u64,
    prev_sig: [u8; 64],
    last_path: Vec<u8>,
    pending_end: bool,
    started: bool,
    target: u64,
    max: u64,
    summary: SignSummary,
}

impl<W: Write> std::fmt::Debug for Signer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.public().id())
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Signer<W> {
    /// A signer writing to `out` (wrap it in a `BufWriter`) with a random stream id.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn new(out: W, key: SecretKey) -> Result<Signer<W>, SignError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| SignError::Random(e.to_string()))?;
        Ok(Signer::with_stream_id(out, key, id))
    }

    /// A signer with a given stream id: from [`derived_stream_id`] (reproducible signing), or
    /// fixed in tests. Ids must not repeat for one key for different streams.
    #[must_use]
    pub fn with_stream_id(out: W, key: SecretKey, stream_id: [u8; 16]) -> Signer<W> {
        Signer {
            out,
            key,
            stream_id,
            hasher: SegmentHasher::new(),
            segment: 0,
            seg_bytes: 0,
            seg_cmds: 0,
            prev_sig: [0; 64],
            last_path: Vec::new(),
            pending_end: false,
            started: false,
            target: TARGET_SEGMENT_BYTES,
            max: MAX_SEGMENT_BYTES,
            summary: SignSummary::default(),
        }
    }

    /// Changes the segment sizes (tests; `max` is capped at [`MAX_SEGMENT_BYTES`]).
    #[must_use]
    pub fn with_segment_sizes(mut self, target: u64, max: u64) -> Signer<W> {
        self.max = max.clamp(1, MAX_SEGMENT_BYTES);
        self.target = target.min(self.max);
        self
    }

    /// The signing key's id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key.public().id()
    }

    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.out.write_all(b).map_err(Error::output)?;
        self.summary.bytes += b.len() as u64;
        Ok(())
    }

    fn covered(&mut self, b: &[u8]) -> Result<(), Error> {
        self.hasher.update(b);
        self.seg_bytes += b.len() as u64;
        self.put(b)
    }

    /// Writes a stream header (the first, or one after END).
    ///
    /// # Errors
    /// Output errors; a header in the middle of a stream.
    pub fn write_header(&mut self, version: u32) -> Result<(), Error> {
        if self.pending_end {
            self.close(Kind::EndMore)?;
            self.write_end()?;
        } else if self.started {
            return Err(SignError::CannotSign(
                "stream header inside a stream (no END before it)".into(),
            )
            .into());
        }
        self.started = true;
        self.summary.streams += 1;
        self.covered(&stream_header(version))
    }

    /// Writes a command (its frame header as [`Command::frame_header`] gives it).
    ///
    /// # Errors
    /// Output errors; a command before the first header or after END; a signature block in the
    /// input (signing a signed stream again is refused).
    pub fn write_command(&mut self, c: &Command) -> Result<(), Error> {
        self.write_frame(c, &c.frame_header(), &[])
    }

    /// Writes the command `head` with `tail` appended to its payload, without assembling it.
    fn write_frame(&mut self, head: &Command, h: &[u8; 10], tail: &[&[u8]]) -> Result<(), Error> {
        if !self.started {
            return Err(SignError::CannotSign("command before the stream header".into()).into());
        }
        if self.pending_end {
            return Err(SignError::CannotSign(
                "command after END without a new stream header".into(),
            )
            .into());
        }
        let payload_len = head.payload().len() + tail.iter().map(|t| t.len()).sum::<usize>();
        match head.cmd() {
            SIGNATURE_CMD => {
                return Err(SignError::CannotSign(format!(
                    "the input already carries signature blocks (command {})",
                    self.summary.commands
                ))
                .into());
            }
            cmd::END => {
                if payload_len != 0 {
                    return Err(SignError::CannotSign("END command with a payload".into()).into());
                }
                self.pending_end = true;
                return Ok(());
            }
            _ => {}
        }
        let n = (h.len() + payload_len) as u64;
        let path = head.get(attr::PATH);
        if self.seg_cmds > 0
            && (self.seg_bytes + n > self.max
                || (self.seg_bytes >= self.target
                    && path.is_some_and(|p| p != self.last_path.as_slice())))
        {
            self.close(Kind::Segment)?;
        }
        self.covered(h)?;
        self.covered(head.payload())?;
        for t in tail {
            self.covered(t)?;
        }
        self.seg_cmds += 1;
        self.summary.commands += 1;
        if let Some(p) = path
            && p != self.last_path.as_slice()
        {
            self.last_path.clear();
            self.last_path.extend_from_slice(p);
        }
        Ok(())
    }

    fn write_end(&mut self) -> Result<(), Error> {
        self.pending_end = false;
        self.summary.commands += 1;
        self.put(&command_header(cmd::END, &[]))
    }

    /// Closes the current segment with a block of `kind`.
    fn close(&mut self, kind: Kind) -> Result<(), Error> {
        let digest = self.hasher.finish_segment();
        let mut b = Block {
            kind,
            key_id: self.key.public().id(),
            stream_id: self.stream_id,
            segment: self.segment,
            bytes: self.seg_bytes,
            commands: self.seg_cmds,
            digest,
            signature: [0; 64],
        };
        b.signature = self
            .key
            .signing_key()
            .sign(&b.message(&self.prev_sig))
            .to_bytes();
        let payload = b.encode();
        let h = command_header(SIGNATURE_CMD, &[&payload]);
        self.put(&h)?;
        self.put(&payload)?;
        self.prev_sig = b.signature;
        self.segment += 1;
        self.seg_bytes = 0;
        self.seg_cmds = 0;
        self.summary.segments += 1;
        Ok(())
    }

    /// What was signed so far.
    #[must_use]
    pub fn summary(&self) -> SignSummary {
        self.summary
    }

    /// The output writer (after [`CommandSink::finish`]).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> CommandSink for Signer<W> {
    fn header(&mut self, version: u32, _: Position) -> Result<(), Error> {
        self.write_header(version)
    }

    fn command(&mut self, c: &Command, _: Position) -> Result<ControlFlow<()>, Error> {
        self.write_command(c)?;
        Ok(ControlFlow::Continue(()))
    }

    fn command_split(
        &mut self,
        head: &Command,
        tail: &[&[u8]],
        _: Position,
    ) -> Result<ControlFlow<()>, Error> {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + tail.len());
        parts.push(head.payload());
        parts.extend_from_slice(tail);
        let h = command_header(head.cmd(), &parts);
        self.write_frame(head, &h, tail)?;
        Ok(ControlFlow::Continue(()))
    }

    /// Ends the signed input: writes the final block and the held-back END, and flushes.
    ///
    /// # Errors
    /// Output errors; the input did not end with END.
    fn finish(&mut self) -> Result<(), Error> {
        if !self.pending_end {
            return Err(
                SignError::CannotSign("the input does not end with an END command".into()).into(),
            );
        }
        self.close(Kind::EndLast)?;
        self.write_end()?;
        self.out.flush().map_err(Error::output)
    }
}

/// Signs everything `src` yields (one or several concatenated streams) through `signer`.
///
/// # Errors
/// Stream errors of the input, output errors, or an input that is signed already.
pub fn sign_stream<S: Source + ?Sized, W: Write>(
    src: &mut S,
    mut signer: Signer<W>,
    hook: &mut Hook<'_>,
) -> Result<(SignSummary, W), Error> {
    pump(src, &mut signer, hook)?;
    Ok((signer.summary(), signer.into_inner()))
}
