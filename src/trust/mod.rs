//! Trust metadata of a mirror repository, after The Update Framework (TUF), on a dumb mirror:
//! three signed roles, k-of-n thresholds, key rotation inside the channel, a repository
//! identity, and short-lived freshness from an online key that cannot publish software.
//!
//! ```text
//! REPO/root/N.json              root, version N: keys and thresholds of every role, expiry,
//!                               repository identity (UUID + name); signed by the root keys
//! REPO/release/<serial>.json    release: the index (versions, stream files) + serial + expiry
//!                               + repository UUID; signed by the release keys
//! REPO/timestamp.json           timestamp: "the current release is release/<serial>.json
//!                               with this SHA-256 and size", short expiry; the online key
//! REPO/index.json               the legacy single-key index, still written for older clients
//! ```
//!
//! Everything but `timestamp.json` is written once under a versioned name (consistent
//! snapshots: caches may keep them forever, and a client never pairs files of two publishes).
//!
//! Every metadata file is `{"signed": {...}, "signatures": [{"keyid", "sig"}, ...]}`. A
//! signature is ed25519 (`verify_strict`) over [`DOMAIN`], the role name, a NUL byte and the
//! canonical JSON of `signed` (object keys sorted, no white space: serde_json's own encoding of
//! a parsed value), so a file can be re-indented without breaking it and signed on another
//! machine from the file alone ([`sign_file`]). A role is satisfied by `threshold` valid
//! signatures of distinct keys the root lists for it; other signatures are ignored.
//!
//! The client ([`update`]) starts from a root it trusts (a file the user gave, or the one the
//! pool pinned), walks `root/N+1.json`, `root/N+2.json`, ... (each signed by a threshold of the
//! previous root's root keys and of its own), then checks timestamp → release. The stream keys
//! of the newest root verify the stream files.

mod client;
mod metadata;
mod repo;

pub use client::{Fetch, RepoTrust, Verified, update, verify_trusted_root};
pub use metadata::{
    ReleaseMeta, ReleaseRef, Repository, Role, RoleKeys, Roles, Root, Signature, Signed, Timestamp,
    canonical_bytes, parse_signed, sign_value,
};
pub use repo::{
    RoleChange, RootSpec, init, newest_root, newest_root_version, release_path, root_path, rotate,
    sign_file, write_release, write_timestamp,
};

use crate::ExitCode;
use crate::util::fs::PathError;

/// Directory of the root versions.
pub const ROOT_DIR: &str = "root";
/// Directory of the release metadata files.
pub const RELEASE_DIR: &str = "release";
/// The timestamp file: the only metadata file replaced in place.
pub const TIMESTAMP_FILE: &str = "timestamp.json";
/// Largest timestamp accepted: it is fetched on every pull, and bounded before anything else.
pub const MAX_TIMESTAMP_BYTES: u64 = 8 << 10;
/// Largest root file accepted.
pub const MAX_ROOT_BYTES: u64 = 256 << 10;
/// Largest release file accepted (besides having exactly the size the timestamp names).
pub const MAX_RELEASE_BYTES: u64 = crate::mirror::index::MAX_INDEX_BYTES;
/// Most root versions walked in one update (a mirror serving endless root files is refused).
pub const MAX_ROOT_STEPS: u64 = 1024;
/// Domain separation prefix of every metadata signature.
pub const DOMAIN: &[u8] = b"subvol trust metadata v1\0";

/// Why metadata was refused, or an offline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Not metadata of the expected shape, or inconsistent.
    #[error("{file}: invalid metadata: {reason}")]
    Malformed {
        /// The file (URL, path or repository name).
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Fewer valid signatures than the role's threshold.
    #[error("{file}: signed by {valid} of the {role} keys, {threshold} needed{detail}")]
    Threshold {
        /// The file.
        file: String,
        /// The role whose keys count.
        role: &'static str,
        /// Distinct role keys whose signature verified.
        valid: usize,
        /// The threshold.
        threshold: usize,
        /// Signatures that did not count, and why.
        detail: String,
    },
    /// The metadata expired.
    #[error("{file}: expired at {expires} (Unix time; now {now}); {hint}")]
    Expired {
        /// The file.
        file: String,
        /// Its expiry.
        expires: u64,
        /// Now.
        now: u64,
        /// Who must do what.
        hint: &'static str,
    },
    /// Older than what this pool already saw.
    #[error(
        "{file}: {what} {got} is older than {what} {seen} this pool already saw (a rolled-back or stale mirror)"
    )]
    Rollback {
        /// The file.
        file: String,
        /// "timestamp version", "release serial".
        what: &'static str,
        /// Its number.
        got: u64,
        /// The newest seen.
        seen: u64,
    },
    /// Metadata of another repository.
    #[error("{file}: belongs to repository {got}, not to {want}{why}")]
    WrongRepository {
        /// The file.
        file: String,
        /// Its repository.
        got: String,
        /// The repository expected.
        want: String,
        /// Where the expectation comes from.
        why: String,
    },
    /// A file is larger than accepted.
    #[error("{file}: larger than the {max} bytes accepted")]
    TooLarge {
        /// The file.
        file: String,
        /// The limit.
        max: u64,
    },
    /// A file does not match what the metadata that names it says.
    #[error("{file}: {reason}")]
    Mismatch {
        /// The file.
        file: String,
        /// What differs.
        reason: String,
    },
    /// A root version is missing between the trusted one and the one the timestamp names.
    #[error(
        "root chain gap: {missing} is missing but {named_by} names root version {newest}; refusing to skip a root version"
    )]
    RootGap {
        /// The first missing file.
        missing: String,
        /// The file that names a newer version.
        named_by: String,
        /// The version it names.
        newest: u64,
    },
    /// A file the metadata needs is not in the repository.
    #[error("{0}: missing from the repository")]
    Missing(String),
    /// A key given to an offline command cannot be used.
    #[error("{0}")]
    Usage(String),
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

impl TrustError {
    /// The exit code: verification failures are [`ExitCode::Verification`].
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TrustError::Io(_) => ExitCode::Io,
            TrustError::Usage(_) => ExitCode::Failure,
            _ => ExitCode::Verification,
        }
    }

    /// True when the repository's metadata is at fault.
    #[must_use]
    pub fn is_stream_fault(&self) -> bool {
        self.exit_code() == ExitCode::Verification
    }

    pub(crate) fn malformed(file: &str, reason: impl Into<String>) -> TrustError {
        TrustError::Malformed {
            file: file.to_string(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests;
