//! Mirrors: publishing versions as signed full streams and log-distance deltas with a signed
//! index on plain static files, and pulling the cheapest verified chain into a pool.

use crate::ExitCode;

/// Errors of publishing and pulling.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Placeholder until mirrors exist.
    #[error("{0}")]
    Other(String),
}

impl MirrorError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}
