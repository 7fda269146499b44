//! Signed streams: keys, signature blocks, the signing and verifying filters.
//!
//! A signed stream is an ordinary send stream with extra *signature block* commands
//! ([`SIGNATURE_CMD`]) interleaved. Stock `btrfs receive` skips them (unknown command number,
//! known attribute types) and builds the same tree. Each block closes a *segment*: every byte
//! since the previous block (stream headers, command headers with their CRC, payloads) is hashed
//! with BLAKE3, and the block signs that digest together with the stream's id (random, or
//! derived from the key and the stream's identity: [`derived_stream_id`]), the
//! segment number, the segment's byte and command counts, what follows the block (more
//! commands, or END and then end of input, or END and another stream) and the previous block's
//! signature. The full description is `docs/signed-streams.md`.
//!
//! * [`Signer`] is the signing filter (a [`crate::pipeline::CommandSink`] that writes the signed
//!   stream); [`sign_stream`] pumps a [`crate::pipeline::Source`] into it, and a producer (the
//!   tree sender) emits into it directly.
//! * [`VerifyingSource`] is the verifying filter: a [`crate::pipeline::Source`] that buffers one
//!   segment (at most [`MAX_SEGMENT_BYTES`]), checks its block and only then yields its
//!   commands.
//! * [`KeySet`], [`PublicKey`], [`SecretKey`], [`keygen`]: key files.

mod block;
mod digest;
mod keys;
mod signer;
mod verifier;

pub use block::{Block, FORMAT_VERSION, Kind, SIGNATURE_CMD};
pub use keys::{KeyId, KeySet, PublicKey, SecretKey, hex as hex_id, keygen, pub_path};
pub use signer::{SignSummary, Signer, derived_stream_id, sign_stream};
pub use verifier::{VerifierState, VerifyReport, VerifyingSource};

use crate::ExitCode;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Hard bound on the bytes one segment covers. The signer closes a segment before it would grow
/// past it; the verifier rejects a segment that does, so it never buffers more.
pub const MAX_SEGMENT_BYTES: u64 = 8 << 20;
/// The signer closes a segment when the stream moves on to another path and the segment has at
/// least this many bytes (small files are grouped).
pub const TARGET_SEGMENT_BYTES: u64 = 1 << 20;

/// Errors of signing and verification.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file is malformed or not acceptable.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A public key file where a secret key is needed.
    #[error("{} is a public key; a secret key is needed", .0.display())]
    PublicKeyGiven(PathBuf),
    /// keygen does not overwrite a key file.
    #[error("key file {} already exists (refusing to overwrite a key)", .0.display())]
    KeyExists(PathBuf),
    /// A key file cannot be read or written.
    #[error("key file {}", path.display())]
    KeyIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The OS random source failed.
    #[error("random number source failed: {0}")]
    Random(String),
    /// The input cannot be signed (for example it is signed already).
    #[error("cannot sign: {0}")]
    CannotSign(String),
    /// A signature check failed.
    #[error(transparent)]
    Verify(#[from] Box<Failure>),
}

impl SignError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SignError::KeyIo { .. } => ExitCode::Io,
            SignError::KeyExists(_) | SignError::Random(_) | SignError::CannotSign(_) => {
                ExitCode::Failure
            }
            // A key that cannot be used is a failed key check, as documented for exit 4.
            SignError::KeyFile { .. } | SignError::PublicKeyGiven(_) | SignError::Verify(_) => {
                ExitCode::Verification
            }
        }
    }

    pub(crate) fn key_io(path: &Path, source: io::Error) -> SignError {
        SignError::KeyIo {
            path: path.into(),
            source,
        }
    }
}

/// A failed signature check, with where it happened.
#[derive(Debug)]
pub struct Failure {
    /// Byte offset of the signature block (or of the command) where the check failed.
    pub offset: u64,
    /// Index of that command in the input (every command counts, signature blocks included).
    pub index: Option<u64>,
    /// The segment being checked.
    pub segment: u64,
    /// The key id the block names, if a block was read.
    pub key_id: Option<KeyId>,
    /// Input command indexes of the segment's first and last command, if it has any.
    pub commands: Option<(u64, u64)>,
    /// The segment's first and last path (PATH attribute), escaped for display.
    pub paths: Option<(String, String)>,
    /// What failed.
    pub kind: FailureKind,
}

impl std::error::Error for Failure {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature check failed in segment {}", self.segment)?;
        if let Some(k) = self.key_id {
            write!(f, " (key {k})")?;
        }
        match self.index {
            Some(i) => write!(f, " at command {i}, byte {}", self.offset)?,
            None => write!(f, " at byte {}", self.offset)?,
        }
        if let Some((a, b)) = self.commands {
            write!(f, ", segment commands {a}..={b}")?;
        }
        if let Some((a, b)) = &self.paths {
            if a == b {
                write!(f, ", path \"{a}\"")?;
            } else {
                write!(f, ", paths \"{a}\" .. \"{b}\"")?;
            }
        }
        write!(f, ": {}", self.kind)
    }
}

/// What a signature check found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// No signature block where one must be.
    #[error("the stream is not signed: {0}")]
    Unsigned(&'static str),
    /// The block names a key that is not accepted.
    #[error("signed by key {found}, which is not an accepted key (accepted: {})", list(.accepted))]
    UnknownKey {
        /// The key id in the block.
        found: KeyId,
        /// The accepted key ids.
        accepted: Vec<KeyId>,
    },
    /// A block names another key than the stream's first block.
    #[error("block signed by key {found}, but the stream's first block by key {first}")]
    KeyChanged {
        /// The key id in this block.
        found: KeyId,
        /// The key id of the first block.
        first: KeyId,
    },
    /// The block belongs to another signed stream.
    #[error(
        "block belongs to another signed stream (id {found}, this stream is {expected}): segments spliced in"
    )]
    WrongStream {
        /// Stream id in the block (hex).
        found: String,
        /// Stream id of this stream (hex).
        expected: String,
    },
    /// The block is for another segment number.
    #[error(
        "block for segment {found} where segment {expected} was due: segments dropped, duplicated or reordered"
    )]
    Sequence {
        /// Segment number in the block.
        found: u64,
        /// Expected number.
        expected: u64,
    },
    /// The segment's size differs from what the block says.
    #[error(
        "segment has {bytes} bytes in {commands} commands, the block says {want_bytes} bytes in {want_commands} commands: commands added or removed"
    )]
    Count {
        /// Bytes read.
        bytes: u64,
        /// Commands read.
        commands: u64,
        /// Bytes signed.
        want_bytes: u64,
        /// Commands signed.
        want_commands: u64,
    },
    /// The segment's bytes do not hash to the signed digest.
    #[error("segment content does not match its signed digest: commands were altered")]
    Digest,
    /// The ed25519 signature does not verify.
    #[error("ed25519 signature does not verify")]
    BadSignature,
    /// The segment grows past the bound without a block.
    #[error("segment exceeds {max} bytes without a signature block")]
    TooLarge {
        /// The bound.
        max: u64,
    },
    /// An END without a final block right before it.
    #[error("END command is not covered: no final signature block right before it")]
    UncoveredEnd,
    /// A final block is not followed by END.
    #[error("a final signature block must be followed by END, found {found}")]
    ExpectedEnd {
        /// Name of the command found.
        found: &'static str,
    },
    /// More input after the signed stream's last END.
    #[error(
        "data after the end of the signed stream (the last block says the input ends after END)"
    )]
    TrailingData,
    /// The last block announced another stream but the input ends.
    #[error("input ends after END, but the signature block announced another stream: truncated")]
    MissingStream,
    /// A malformed signature block.
    #[error("{0}")]
    Malformed(String),
    /// `next_item` was called again after a failure.
    #[error("verification already failed")]
    AlreadyFailed,
}

fn list(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes a stream path for messages.
pub(crate) fn show_path(p: &[u8]) -> String {
    String::from_utf8_lossy(p).escape_debug().to_string()
}

#[cfg(test)]
mod tests;
