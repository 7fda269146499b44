//! The signing filter: passes headers and commands through and interleaves signature blocks.

use super::block::{Block, Kind, SIGNATURE_CMD};
use super::keys::{KeyId, SecretKey};
use super::{MAX_SEGMENT_BYTES, SignError, TARGET_SEGMENT_BYTES};
use crate::Error;
use crate::stream::{Command, Item, Reader, attr, cmd, command_header, end_command, stream_header};
use ed25519_dalek::Signer as _;
use std::io::{Read, Write};

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

/// Signs a stream as it passes: feed it headers and commands in stream order
/// ([`Signer::write_header`], [`Signer::write_command`]), then call [`Signer::finish`].
///
/// The END command is held back until the signer knows what follows it (another stream header,
/// Bytes staged before they are hashed (see `Signer::hash_buf`).
const HASH_BUF: usize = 64 * 1024;

/// or the end of input), so the final block before it can say so.
pub struct Signer<W: Write> {
    out: W,
    key: SecretKey,
    stream_id: [u8; 16],
    hasher: blake3::Hasher,
    /// Covered bytes not hashed yet: BLAKE3 is fast on large inputs (SIMD over many chunks)
    /// and slow when fed one 10-byte header at a time.
    hash_buf: Vec<u8>,
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

    /// A signer with a given stream id (tests; ids must never repeat for one key).
    #[must_use]
    pub fn with_stream_id(out: W, key: SecretKey, stream_id: [u8; 16]) -> Signer<W> {
        Signer {
            out,
            key,
            stream_id,
            hasher: blake3::Hasher::new(),
            hash_buf: Vec::with_capacity(HASH_BUF),
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
        if self.hash_buf.len() + b.len() > HASH_BUF {
            self.hasher.update(&self.hash_buf);
            self.hash_buf.clear();
        }
        if b.len() >= HASH_BUF {
            self.hasher.update(b);
        } else {
            self.hash_buf.extend_from_slice(b);
        }
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

    /// Writes a command; its CRC is computed.
    ///
    /// # Errors
    /// See [`Signer::write_command_crc`].
    pub fn write_command(&mut self, c: &Command) -> Result<(), Error> {
        let h = command_header(c.cmd(), &[c.payload()]);
        self.write_with_header(c, &h)
    }

    /// Writes a command read by a [`Reader`], reusing the CRC it checked
    /// ([`Reader::last_crc`]).
    ///
    /// # Errors
    /// Output errors; a command before the first header or after END; a signature block in the
    /// input (signing a signed stream again is refused).
    pub fn write_command_crc(&mut self, c: &Command, crc: u32) -> Result<(), Error> {
        let mut h = [0u8; 10];
        h[0..4].copy_from_slice(&(c.payload().len() as u32).to_le_bytes());
        h[4..6].copy_from_slice(&c.cmd().to_le_bytes());
        h[6..10].copy_from_slice(&crc.to_le_bytes());
        self.write_with_header(c, &h)
    }

    fn write_with_header(&mut self, c: &Command, h: &[u8; 10]) -> Result<(), Error> {
        if !self.started {
            return Err(SignError::CannotSign("command before the stream header".into()).into());
        }
        if self.pending_end {
            return Err(SignError::CannotSign(
                "command after END without a new stream header".into(),
            )
            .into());
        }
        match c.cmd() {
            SIGNATURE_CMD => {
                return Err(SignError::CannotSign(format!(
                    "the input already carries signature blocks (command {})",
                    self.summary.commands
                ))
                .into());
            }
            cmd::END => {
                if !c.payload().is_empty() {
                    return Err(SignError::CannotSign("END command with a payload".into()).into());
                }
                self.pending_end = true;
                return Ok(());
            }
            _ => {}
        }
        let n = (h.len() + c.payload().len()) as u64;
        let path = c.get(attr::PATH);
        if self.seg_cmds > 0
            && (self.seg_bytes + n > self.max
                || (self.seg_bytes >= self.target
                    && path.is_some_and(|p| p != self.last_path.as_slice())))
        {
            self.close(Kind::Segment)?;
        }
        self.covered(h)?;
        self.covered(c.payload())?;
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
        let end = end_command(1);
        let h = command_header(end.cmd(), &[]);
        self.put(&h)
    }

    /// Closes the current segment with a block of `kind`.
    fn close(&mut self, kind: Kind) -> Result<(), Error> {
        self.hasher.update(&self.hash_buf);
        self.hash_buf.clear();
        let digest: [u8; 32] = *self.hasher.finalize().as_bytes();
        self.hasher.reset();
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

    /// Ends the signed input: writes the final block and the held-back END, and flushes.
    ///
    /// # Errors
    /// Output errors; the input did not end with END.
    pub fn finish(mut self) -> Result<(SignSummary, W), Error> {
        if !self.pending_end {
            return Err(
                SignError::CannotSign("the input does not end with an END command".into()).into(),
            );
        }
        self.close(Kind::EndLast)?;
        self.write_end()?;
        self.out.flush().map_err(Error::output)?;
        Ok((self.summary, self.out))
    }
}

/// Signs everything `reader` yields (one or several concatenated streams) into `signer`.
///
/// # Errors
/// Stream errors of the input, output errors, or an input that is signed already.
pub fn sign_stream<R: Read, W: Write>(
    reader: &mut Reader<R>,
    mut signer: Signer<W>,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<(SignSummary, W), Error> {
    let mut c = Command::empty();
    while let Some(item) = reader.next(&mut c)? {
        match item {
            Item::Header(v) => signer.write_header(v)?,
            Item::Command => {
                signer.write_command_crc(&c, reader.last_crc())?;
                if reader.commands().is_multiple_of(8192) {
                    on_progress(reader.offset(), reader.commands());
                }
            }
        }
    }
    signer.finish()
}
