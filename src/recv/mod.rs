//! The receiver: applies a command stream beneath a new subvolume, hardened and atomic.

use crate::ExitCode;

/// Errors of the receiver.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// Placeholder until the receiver exists.
    #[error("{0}")]
    Other(String),
}

impl RecvError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}
