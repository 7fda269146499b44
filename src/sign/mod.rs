//! Signed streams: keys, signature blocks, the signing and verifying filters.

use crate::ExitCode;

/// Errors of signing and verification.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Placeholder until signing exists.
    #[error("{0}")]
    Other(String),
}

impl SignError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Verification
    }
}
