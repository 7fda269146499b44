//! Stream sources: the kernel send ioctl and the directory-tree walker/differ.

use crate::ExitCode;

/// Errors of the stream sources.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Placeholder until the sources exist.
    #[error("{0}")]
    Other(String),
}

impl SendError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}
