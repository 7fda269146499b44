//! Streaming reader: stream headers and commands from any `Read`, CRC-checked, memory bounded.

use super::command::{AttrError, Command};
use super::frame;
use super::proto::{self, cmd};
use std::io::{self, Read};

/// What went wrong while reading a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamErrorKind {
    /// Reading the input failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The input is empty.
    #[error("empty stream is not valid")]
    Empty,
    /// The first bytes are not `btrfs-stream\0`.
    #[error("bad magic: not a btrfs send stream")]
    BadMagic,
    /// Bytes after an END that do not start a new stream.
    #[error("trailing garbage after END (not a stream header)")]
    TrailingGarbage,
    /// A stream version this codec does not know.
    #[error("stream version {0} not supported (this reader knows 0 to {max})", max = proto::MAX_VERSION)]
    UnsupportedVersion(u32),
    /// The input ends in the middle of a header, command or stream header.
    #[error("stream truncated inside {what}: {got} of {need} bytes")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes available.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The input ends at a command boundary without END.
    #[error("stream ends without an END command")]
    MissingEnd,
    /// The payload length is over the cap for the stream's version.
    #[error("command length {len} exceeds the limit of {max} bytes for stream version {version}")]
    TooLarge {
        /// Length field.
        len: u32,
        /// Cap.
        max: u32,
        /// Stream version.
        version: u32,
    },
    /// The CRC32C in the header does not match the bytes.
    #[error("crc32c mismatch: header says {expected:#010x}, bytes give {computed:#010x}")]
    BadCrc {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A malformed attribute.
    #[error(transparent)]
    Attr(#[from] AttrError),
}

/// A stream error with its position: the byte offset where the offending header or command
/// starts, and the 0-based command index (counted over the whole input, stream headers excluded).
///
/// The message says where; the source (`kind`) says what, so a reporter that prints the chain
/// shows each once.
#[derive(Debug, thiserror::Error)]
pub struct StreamError {
    /// Byte offset of the start of the header or command.
    pub offset: u64,
    /// Command index, if the problem is in a command.
    pub index: Option<u64>,
    /// Command name if known.
    pub cmd_name: Option<&'static str>,
    /// The problem.
    #[source]
    pub kind: StreamErrorKind,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A failed read is not a malformed stream; say which it is.
        match self.kind {
            StreamErrorKind::Io(_) => f.write_str("reading the stream")?,
            _ => f.write_str("invalid stream")?,
        }
        if let Some(i) = self.index {
            write!(f, ": command {i} ({})", self.cmd_name.unwrap_or("?"))?;
        }
        write!(f, " at byte {}", self.offset)
    }
}

/// One step of reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A stream header with this version was read (the first, or one after an END).
    Header(u32),
    /// A command was read into the caller's [`Command`].
    Command,
}

/// Reads send streams, including several concatenated ones.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    offset: u64,
    /// Version of the stream being read, or None between streams.
    version: Option<u32>,
    streams: u64,
    commands: u64,
    max_payload: Option<u32>,
    check_crc: bool,
    /// BLAKE3 of every byte consumed since the last link of `links` (from offset 0 if none),
    /// kept for resumable receives.
    prefix: Option<Box<blake3::Hasher>>,
    /// Earlier parts of the input, each hashed on its own (see [`ReaderState::links`]).
    links: Vec<DigestLink>,
    /// Offset of the last [`ResumePoint`] offered through `pipeline::Source`.
    last_offered: u64,
}

/// Where a [`Reader`] stands between two items, enough to start another reader there on the
/// rest of the input: the byte offset, the counts and the stream version, and the BLAKE3
/// digest of every byte before the offset (so that a resumed receive can check that the bytes
/// it skips are the ones that were applied).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReaderState {
    /// Bytes consumed.
    pub offset: u64,
    /// Commands read (over all streams).
    pub commands: u64,
    /// Stream headers read.
    pub streams: u64,
    /// Version of the stream being read, None between streams.
    pub version: Option<u32>,
    /// BLAKE3 of the bytes from the end of the last link (0 if none) to `offset`.
    #[serde(with = "hex_digest")]
    pub prefix_digest: [u8; 32],
    /// The bytes before that, as consecutive parts each with its own digest: a receive resumed
    /// from a stream that starts at an offset (whose earlier bytes it never sees) goes on with
    /// a new part there.
    #[serde(default)]
    pub links: Vec<DigestLink>,
}

/// One part of an input's bytes, from the end of the previous part (or 0) to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestLink {
    /// Offset where the part ends.
    pub end: u64,
    /// BLAKE3 of its bytes.
    #[serde(with = "hex_digest")]
    pub digest: [u8; 32],
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// A [`Reader`] offers a resume point (through `pipeline::Source::resume_state`) at most this
/// often: finishing a BLAKE3 digest costs a few compressions, not worth paying per command.
pub const RESUME_OFFER_BYTES: u64 = 64 << 10;

impl<R: Read> Reader<R> {
    /// A reader over `inner` (wrap files in a `BufReader` of generous size).
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            offset: 0,
            version: None,
            streams: 0,
            commands: 0,
            max_payload: None,
            check_crc: true,
            prefix: None,
            links: Vec::new(),
            last_offered: 0,
        }
    }

    /// Also keeps a BLAKE3 digest of every byte read, so that [`Reader::state`] can say where
    /// a resumed receive restarts and what the bytes before it were.
    #[must_use]
    pub fn with_prefix_digest(mut self) -> Reader<R> {
        self.prefix = Some(Box::new(blake3::Hasher::new()));
        self
    }

    /// A reader over `inner`, the rest of an input whose first `state.offset` bytes were read
    /// before (by a reader that was then at `state`), keeping a digest as
    /// [`Reader::with_prefix_digest`] does. `prefix` is the digest state of the bytes since
    /// `state`'s last link, when the caller read them again (and checked them); without it
    /// the part up to `state.offset` becomes a link and a new part starts there.
    pub fn resume(inner: R, state: &ReaderState, prefix: Option<blake3::Hasher>) -> Reader<R> {
        let mut links = state.links.clone();
        let prefix = prefix.unwrap_or_else(|| {
            links.push(DigestLink {
                end: state.offset,
                digest: state.prefix_digest,
            });
            blake3::Hasher::new()
        });
        Reader {
            inner,
            offset: state.offset,
            version: state.version,
            streams: state.streams,
            commands: state.commands,
            max_payload: None,
            check_crc: true,
            prefix: Some(Box::new(prefix)),
            links,
            last_offered: state.offset,
        }
    }

    /// Where this reader stands, if it keeps a digest (see [`Reader::with_prefix_digest`]).
    #[must_use]
    pub fn state(&self) -> Option<ReaderState> {
        let h = self.prefix.as_ref()?;
        Some(ReaderState {
            offset: self.offset,
            commands: self.commands,
            streams: self.streams,
            version: self.version,
            prefix_digest: *h.finalize().as_bytes(),
            links: self.links.clone(),
        })
    }

    /// [`Reader::state`], but only once [`RESUME_OFFER_BYTES`] passed since the last one
    /// offered (and never inside a stream header's bytes, which the reader never stops in).
    pub(crate) fn offer_state(&mut self) -> Option<ReaderState> {
        if self.prefix.is_none() || self.offset - self.last_offered < RESUME_OFFER_BYTES {
            return None;
        }
        self.last_offered = self.offset;
        self.state()
    }

    /// Overrides the per-version payload cap (never raise it for untrusted input).
    #[must_use]
    pub fn with_max_payload(mut self, max: u32) -> Reader<R> {
        self.max_payload = Some(max);
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Commands read so far (over all streams).
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// Stream headers read so far.
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// Version of the current stream, if inside one.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn err(&self, at: u64, index: Option<u64>, kind: StreamErrorKind) -> StreamError {
        StreamError {
            offset: at,
            index,
            cmd_name: None,
            kind,
        }
    }

    /// Reads up to `buf.len()` bytes; returns how many (less only at EOF).
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += got as u64;
        if let Some(h) = self.prefix.as_mut() {
            h.update(&buf[..got]);
        }
        Ok(got)
    }

    /// Reads the next header or command. Returns `Ok(None)` at a clean end of input (after an
    /// END, or between concatenated streams).
    ///
    /// # Errors
    /// Any framing, version, size, CRC or attribute problem, with its position.
    pub fn next(&mut self, out: &mut Command) -> Result<Option<Item>, StreamError> {
        let at = self.offset;
        let Some(version) = self.version else {
            return self.read_stream_header(at);
        };
        let index = self.commands;
        let mut hdr = [0u8; proto::CMD_HEADER_LEN];
        let got = self
            .fill(&mut hdr)
            .map_err(|e| self.err(at, Some(index), e.into()))?;
        if got == 0 {
            return Err(self.err(at, None, StreamErrorKind::MissingEnd));
        }
        if got < hdr.len() {
            return Err(self.err(
                at,
                Some(index),
                StreamErrorKind::Truncated {
                    what: "command header",
                    got,
                    need: hdr.len(),
                },
            ));
        }
        let (len, cmd_no, crc) = frame::parse_header(&hdr);
        let named = |mut e: StreamError| {
            e.cmd_name = Some(cmd::name(cmd_no).unwrap_or("unknown"));
            e
        };
        let max = self.max_payload.unwrap_or(proto::max_payload(version));
        if len > max {
            return Err(named(self.err(
                at,
                Some(index),
                StreamErrorKind::TooLarge { len, max, version },
            )));
        }
        let buf = out.payload_buf();
        // The buffer is reused from command to command: only growth is zero-filled (the bytes
        // are overwritten by the read below), so a stream of large WRITEs costs no memset.
        if buf.len() > len as usize {
            buf.truncate(len as usize);
        } else {
            buf.resize(len as usize, 0);
        }
        let mut payload = std::mem::take(buf);
        let got = self.fill(&mut payload);
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                *out.payload_buf() = payload;
                return Err(named(self.err(at, Some(index), e.into())));
            }
        };
        if got < len as usize {
            *out.payload_buf() = payload;
            return Err(named(self.err(
                at,
                Some(index),
                StreamErrorKind::Truncated {
                    what: "command payload",
                    got,
                    need: len as usize,
                },
            )));
        }
        if self.check_crc {
            let computed = frame::crc(cmd_no, &[&payload]);
            if computed != crc {
                *out.payload_buf() = payload;
                return Err(named(self.err(
                    at,
                    Some(index),
                    StreamErrorKind::BadCrc {
                        expected: crc,
                        computed,
                    },
                )));
            }
        }
        *out.payload_buf() = payload;
        out.finish_read(cmd_no, version)
            .map_err(|e| named(self.err(at, Some(index), e.into())))?;
        if self.check_crc {
            out.set_crc(crc);
        }
        self.commands += 1;
        if cmd_no == cmd::END {
            self.version = None;
        }
        Ok(Some(Item::Command))
    }

    fn read_stream_header(&mut self, at: u64) -> Result<Option<Item>, StreamError> {
        let mut hdr = [0u8; proto::STREAM_HEADER_LEN];
        let got = self
            .fill(&mut hdr)
            .map_err(|e| self.err(at, None, e.into()))?;
        if got == 0 {
            return if self.streams == 0 {
                Err(self.err(at, None, StreamErrorKind::Empty))
            } else {
                Ok(None)
            };
        }
        let magic_ok = hdr[..got.min(13)] == proto::MAGIC[..got.min(13)];
        if !magic_ok {
            let kind = if self.streams == 0 {
                StreamErrorKind::BadMagic
            } else {
                StreamErrorKind::TrailingGarbage
            };
            return Err(self.err(at, None, kind));
        }
        if got < hdr.len() {
            return Err(self.err(
                at,
                None,
                StreamErrorKind::Truncated {
                    what: "stream header",
                    got,
                    need: hdr.len(),
                },
            ));
        }
        let version = u32::from_le_bytes([hdr[13], hdr[14], hdr[15], hdr[16]]);
        if version > proto::MAX_VERSION {
            return Err(self.err(at, None, StreamErrorKind::UnsupportedVersion(version)));
        }
        self.version = Some(version);
        self.streams += 1;
        Ok(Some(Item::Header(version)))
    }
}
