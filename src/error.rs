//! The library's one error type, and the documented exit codes the binaries map it to.

use crate::stream::StreamError;
use std::io;
use std::path::PathBuf;

/// Documented exit codes of `subvol` and `subvol-recv` (also listed in the man pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Any failure not listed below.
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The input is not a valid send stream (framing, version, CRC, attributes, truncation).
    InvalidStream = 3,
    /// A signature or key check failed.
    Verification = 4,
    /// The stream asks for something the receiver refuses (path escape, unsafe clone source,
    /// unsupported operation).
    Refused = 5,
    /// An I/O or file-system error (including a full disk).
    Io = 6,
    /// Interrupted by SIGINT or SIGTERM (cleanup done).
    Interrupted = 130,
}

/// Any error of the library. Variants carry the operation, the path and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input stream is malformed (the message says where, the source what).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// An I/O operation on a named file failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("open", "read", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the output (stdout or `-o FILE`) failed.
    #[error("writing output")]
    Output(#[source] io::Error),
    /// A dump could not format a command (for example a path longer than PATH_MAX).
    #[error("command {index} ({cmd}): {reason}")]
    Dump {
        /// Command index.
        index: u64,
        /// Command name.
        cmd: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A stream source (kernel send, tree walker) failed.
    #[error(transparent)]
    Send(#[from] crate::send::SendError),
    /// Signing or signature verification failed.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// Receiving failed.
    #[error(transparent)]
    Recv(#[from] crate::recv::RecvError),
    /// Publishing or pulling failed.
    #[error(transparent)]
    Mirror(#[from] crate::mirror::MirrorError),
    /// Pool or subvolume management failed.
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    /// Deploying, rolling back or reading a deployment failed.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    /// Stopped by SIGINT or SIGTERM (partial work removed).
    #[error("interrupted")]
    Interrupted,
    /// Something the caller asked for is not valid.
    #[error("{0}")]
    Invalid(String),
    /// An internal invariant broke: a bug in subvol, not a fault of the input or the host.
    #[error("internal error (a bug in subvol): {0}")]
    Bug(String),
}

impl From<crate::util::fs::PathError> for Error {
    fn from(e: crate::util::fs::PathError) -> Error {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl Error {
    /// Wraps an output error (lets callers treat a closed pipe as success, see [`Error::is_broken_pipe`]).
    #[must_use]
    pub fn output(e: io::Error) -> Error {
        Error::Output(e)
    }

    /// An I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the output pipe was closed by the reader (`subvol dump | head`): not a failure.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Output(e) => e.kind() == io::ErrorKind::BrokenPipe,
            Error::Send(e) => e.is_broken_pipe(),
            _ => false,
        }
    }

    /// True only when the input stream itself is at fault: malformed framing, CRC or
    /// attributes, data that cannot be decoded (an I/O error of kind `InvalidData`), a failed
    /// signature check, a stream refused as hostile, or a repository's
    /// malformed or refused index. False for faults of this host (local I/O, no btrfs mount,
    /// a full disk, a parent missing here), for interruptions and for bugs. A pull gives up a
    /// downloaded stream file only for a stream fault.
    #[must_use]
    pub fn is_stream_fault(&self) -> bool {
        match self {
            // Reading failed: the host's fault, unless the data could not be decoded.
            Error::Stream(e) => match &e.kind {
                crate::stream::StreamErrorKind::Io(io) => io.kind() == io::ErrorKind::InvalidData,
                _ => true,
            },
            Error::Dump { .. } => true,
            Error::Sign(e) => matches!(e, crate::sign::SignError::Verify(_)),
            Error::Recv(e) => e.is_stream_fault(),
            Error::Mirror(e) => e.is_stream_fault(),
            Error::Io { .. }
            | Error::Output(_)
            | Error::Send(_)
            | Error::Pool(_)
            | Error::Deploy(_)
            | Error::Interrupted
            | Error::Invalid(_)
            | Error::Bug(_) => false,
        }
    }

    /// The exit code a binary should use for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Stream(e) => match e.kind {
                crate::stream::StreamErrorKind::Io(_) => ExitCode::Io,
                _ => ExitCode::InvalidStream,
            },
            Error::Dump { .. } => ExitCode::InvalidStream,
            Error::Io { .. } | Error::Output(_) => ExitCode::Io,
            Error::Send(e) => e.exit_code(),
            Error::Sign(e) => e.exit_code(),
            Error::Recv(e) => e.exit_code(),
            Error::Mirror(e) => e.exit_code(),
            Error::Pool(e) => e.exit_code(),
            Error::Deploy(e) => e.exit_code(),
            Error::Invalid(_) | Error::Bug(_) => ExitCode::Failure,
            Error::Interrupted => ExitCode::Interrupted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamErrorKind;

    fn stream(kind: StreamErrorKind) -> Error {
        Error::Stream(StreamError {
            offset: 17,
            index: Some(1),
            cmd_name: Some("write"),
            kind,
        })
    }

    #[test]
    fn stream_faults_are_the_input_s_only() {
        assert!(
            stream(StreamErrorKind::BadCrc {
                expected: 1,
                computed: 2
            })
            .is_stream_fault()
        );
        assert!(stream(StreamErrorKind::MissingEnd).is_stream_fault());
        // A read error is this host's (or the transport's) fault, not the stream's.
        assert!(!stream(StreamErrorKind::Io(io::Error::other("disk"))).is_stream_fault());
        let corrupt = io::Error::new(io::ErrorKind::InvalidData, "corrupt zstd frame");
        assert!(stream(StreamErrorKind::Io(corrupt)).is_stream_fault());
        assert!(!Error::io("open", "/x", io::Error::other("gone")).is_stream_fault());
        assert!(!Error::Bug("invariant".into()).is_stream_fault());
        assert!(!Error::Interrupted.is_stream_fault());
        let no_btrfs = crate::pool::PoolError::NotBtrfs("/x".into());
        assert!(!Error::from(no_btrfs).is_stream_fault());
        assert!(
            Error::from(crate::mirror::MirrorError::BadSignature("x".into())).is_stream_fault()
        );
        assert!(!Error::from(crate::mirror::MirrorError::NoKeys).is_stream_fault());
        assert_eq!(Error::Bug("x".into()).exit_code(), ExitCode::Failure);
    }

    #[test]
    fn messages_name_the_cause_once() {
        let e = Error::io("open", "/x", io::Error::other("gone"));
        assert_eq!(e.to_string(), "open /x");
        assert_eq!(crate::util::error_chain(&e), "open /x: gone");
    }
}
