//! Mirrors: publishing versions as signed full streams and log-distance deltas with a signed
//! index on plain static files, and pulling the cheapest verified chain into a pool.
//!
//! A repository is a directory of plain files (see `docs/mirrors.md`):
//!
//! ```text
//! REPO/index.json                 signed index (envelope, see [`index`])
//! REPO/streams/<sha256>.zst       one signed, zstd-compressed send stream per file
//! ```
//!
//! * [`publish()`] adds a version: a full stream and deltas from the versions 1, 2, 4, 8, ...
//!   positions back, then rewrites the index atomically (temp file, fsync, rename).
//! * [`pull()`] verifies the index (signature, expiry, serial), finds the versions a pool holds
//!   by received UUID, plans the cheapest chain ([`plan`]), downloads (HTTP(S) with Range
//!   resume, or a directory), checks each file's SHA-256, and receives each step through the
//!   signature-verifying source, atomically.
//! * [`ranges`] fetches scattered byte ranges of one repository file in few requests
//!   (multi-range HTTP, with fallbacks for servers without it).

pub mod fetch;
pub mod flow;
pub mod index;
pub mod oci;
pub mod plan;
pub mod publish;
pub mod pull;
pub mod ranges;
pub mod remotes;
pub mod seeded;
pub mod state;

pub use fetch::{Mirrors, StallLimits};
pub use flow::SpaceEstimate;
pub use index::{Index, MapFile, Sha256Digest, StreamFile, Version};
pub use plan::{Plan, Step};
pub use publish::{PublishEvent, PublishOptions, PublishReport, TrustPublished, publish};
pub use pull::{
    FlowProgress, PlanChoice, PullEvent, PullOptions, PullReport, ResumedStep, TrustReport, pull,
};
pub use ranges::{RangeFetch, coalesce};
pub use state::{PullState, PulledVersion, SeenIndex};

use crate::ExitCode;
use crate::pool::PoolError;
use crate::stream::Uuid;
use crate::util::fs::{LockError, PathError};
use crate::util::human_size;
use std::io;
use std::path::PathBuf;

/// Errors of publishing and pulling.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Pool or subvolume management failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// An HTTP request failed (connection, TLS, protocol).
    #[error("{url}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading an HTTP response body failed.
    #[error("{url}: reading the response")]
    HttpBody {
        /// The URL.
        url: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{url}: HTTP status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A transfer stalled: no byte within the time-out, or below the minimum rate.
    #[error("{url}: transfer given up: {reason}")]
    Stalled {
        /// The URL.
        url: String,
        /// What was too slow.
        reason: String,
    },
    /// The plan does not fit in the space the pool's file system can spare (checked before
    /// anything is fetched).
    #[error(
        "not enough space in {}: the pull needs {} ({} written by its steps, {} of downloads \
         in the cache) but {} is free (keeping {} in reserve)",
        pool.display(), human_size(*need), human_size(*writes), human_size(*cache),
        human_size(*free), human_size(*reserve)
    )]
    NoSpace {
        /// The pool.
        pool: PathBuf,
        /// Bytes needed: `writes + cache`.
        need: u64,
        /// Bytes the steps write into the pool (estimated).
        writes: u64,
        /// Bytes the cache holds at its peak.
        cache: u64,
        /// Bytes free for this user.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// A download was cut off more times than it is retried.
    #[error(
        "{url}: download interrupted ({last}); the partial file is kept and the next pull resumes it"
    )]
    DownloadInterrupted {
        /// The URL.
        url: String,
        /// The last attempt's failure.
        last: String,
    },
    /// The index is malformed.
    #[error("invalid index: {0}")]
    BadIndex(String),
    /// The index (or its envelope) is not valid JSON of the expected shape.
    #[error("invalid index: {what}")]
    IndexJson {
        /// Which part ("envelope", "signed index text").
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The index file is larger than accepted.
    #[error("invalid index: {location} is larger than {max} bytes")]
    IndexTooLarge {
        /// URL or path.
        location: String,
        /// The limit.
        max: u64,
    },
    /// The index signature is missing, by an unaccepted key, or does not verify.
    #[error("index refused: {0}")]
    BadSignature(String),
    /// The index expired.
    #[error(
        "index refused: it expired at {expires} (Unix time; now {now}); the publisher must refresh it (`subvol publish --repo DIR --key KEY` re-signs it)"
    )]
    Expired {
        /// Expiry.
        expires: u64,
        /// Now.
        now: u64,
    },
    /// The index is older than one this pool already saw (rollback or a stale mirror).
    #[error(
        "index refused: serial {serial} is older than serial {seen} this pool already saw (a rolled-back or stale mirror)"
    )]
    Rollback {
        /// The index's serial.
        serial: u64,
        /// The newest serial seen.
        seen: u64,
    },
    /// No chain of usable stream files reaches the target.
    #[error("no usable chain of streams reaches version {target}{}", if failures.is_empty() { String::new() } else { format!("; files refused: {}", failures.join("; ")) })]
    NoChain {
        /// The target version.
        target: String,
        /// Why files were given up (path: reason).
        failures: Vec<String>,
    },
    /// The version asked for is not in the index.
    #[error("version {version} is not in the index (versions: {})", known.join(", "))]
    UnknownVersion {
        /// The version asked for.
        version: String,
        /// The versions the index lists.
        known: Vec<String>,
    },
    /// The repository lists no versions.
    #[error("the repository has no versions")]
    NoVersions,
    /// The pool directory is not on btrfs.
    #[error("{path} is not on btrfs; make it a pool with `subvol pool init {path}`", path = .0.display())]
    PoolNotBtrfs(PathBuf),
    /// A pull was asked for without a key to verify with.
    #[error(
        "no --verify key or --root given, and this pool has no trusted root for the source (first contact needs --root FILE)"
    )]
    NoKeys,
    /// Another publish or pull holds the lock.
    #[error("{} is busy: another {what} is running", path.display())]
    Busy {
        /// The locked directory.
        path: PathBuf,
        /// What holds it ("publish", "pull into this pool").
        what: &'static str,
    },
    /// The pool's pull bookkeeping cannot be parsed.
    #[error("{}: invalid pull state", path.display())]
    State {
        /// `POOL/.subvol/state.json`.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The tree to publish is not a directory.
    #[error("{} is not a directory", .0.display())]
    SourceNotDirectory(PathBuf),
    /// The version name cannot be used.
    #[error(
        "invalid version name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ + - @ ~, not starting with . or -"
    )]
    InvalidVersionName(String),
    /// The version name is taken.
    #[error("version {version} is already published in {}", repo.display())]
    AlreadyPublished {
        /// The version.
        version: String,
        /// The repository.
        repo: PathBuf,
    },
    /// The tree is identical to a published version.
    #[error("{} is identical to the published version {version} (same tree UUID {uuid}): nothing to publish", tree.display())]
    AlreadyPublishedTree {
        /// The tree.
        tree: PathBuf,
        /// The version it equals.
        version: String,
        /// Their tree UUID.
        uuid: Uuid,
    },
    /// The stored copy of the tree differs from the tree (it changed while being copied).
    #[error("the copy {} of {} differs in metadata (tree UUID {copy_uuid} vs {uuid}); was SOURCE modified during publish?", copy.display(), tree.display())]
    CopyDiffers {
        /// The copy in the tree store.
        copy: PathBuf,
        /// The tree.
        tree: PathBuf,
        /// The copy's tree UUID.
        copy_uuid: Uuid,
        /// The tree's tree UUID.
        uuid: Uuid,
    },
    /// Interrupted by SIGINT/SIGTERM.
    #[error("interrupted by a signal")]
    Interrupted,
    /// The pool's content index cannot be read or written.
    #[error(transparent)]
    Content(crate::content::ContentError),
    /// An OCI registry refused or failed (see [`oci`]).
    #[error(transparent)]
    Registry(#[from] oci::OciError),
    /// Every mirror failed; `kind` is the failure that decides the exit code.
    #[error("every mirror failed: {}", failures.join("; "))]
    AllMirrorsFailed {
        /// `mirror: reason`, in the order they were tried.
        failures: Vec<String>,
        /// The failure whose kind the pull reports (a refusal of the data before a network
        /// failure).
        kind: Box<MirrorError>,
    },
    /// The remote name cannot be used.
    #[error(
        "invalid remote name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    InvalidRemoteName(String),
    /// A mirror URL cannot be used.
    #[error("invalid mirror URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `remote add` without a URL.
    #[error("remote {0}: no mirror URL given")]
    RemoteNoUrl(String),
    /// `remote add` without a key or root file.
    #[error(
        "remote {0}: give the keys to trust (--verify PUB) or a trusted root file (--root FILE)"
    )]
    RemoteNoTrust(String),
    /// A key file given to `remote add`, or stored for a remote, is unusable.
    #[error(transparent)]
    RemoteKey(Box<crate::sign::SignError>),
    /// A root file given to `remote add` is unusable.
    #[error("{}: {reason}", path.display())]
    RemoteRoot {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A remote of that name exists (`remote add` without `--force`).
    #[error("remote {name} exists ({}); use --force to replace it", file.display())]
    RemoteExists {
        /// The name.
        name: String,
        /// Its file.
        file: PathBuf,
    },
    /// No remote of that name.
    #[error("no remote named {name} in {}", dir.display())]
    NoSuchRemote {
        /// The name.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },
    /// A remote's file is malformed.
    #[error("{}{}: {reason}", file.display(), if *line > 0 { format!(" line {line}") } else { String::new() })]
    RemoteFile {
        /// The `.conf` file.
        file: PathBuf,
        /// The line (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Trust metadata (root, timestamp, release) was refused (see [`crate::trust`]).
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// An internal invariant broke (a value that cannot fail to encode did).
    #[error("internal error: {0}")]
    Bug(String),
}

impl MirrorError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            MirrorError::Io(_)
            | MirrorError::Http { .. }
            | MirrorError::HttpBody { .. }
            | MirrorError::HttpStatus { .. }
            | MirrorError::Stalled { .. }
            | MirrorError::NoSpace { .. }
            | MirrorError::DownloadInterrupted { .. } => ExitCode::Io,
            MirrorError::Pool(e) => e.exit_code(),
            MirrorError::Registry(oci::OciError::Manifest { .. }) => ExitCode::Verification,
            MirrorError::Registry(
                oci::OciError::Protocol { .. }
                | oci::OciError::AuthFile { .. }
                | oci::OciError::NoManifest(_),
            ) => ExitCode::Io,
            MirrorError::Registry(_) => ExitCode::Failure,
            MirrorError::Content(_) => ExitCode::Io,
            MirrorError::Trust(e) => e.exit_code(),
            MirrorError::BadIndex(_)
            | MirrorError::IndexJson { .. }
            | MirrorError::IndexTooLarge { .. }
            | MirrorError::BadSignature(_)
            | MirrorError::Expired { .. }
            | MirrorError::Rollback { .. } => ExitCode::Verification,
            MirrorError::NoChain { failures, .. } if !failures.is_empty() => ExitCode::Verification,
            MirrorError::Interrupted => ExitCode::Interrupted,
            MirrorError::AllMirrorsFailed { kind, .. } => kind.exit_code(),
            MirrorError::RemoteKey(e) => e.exit_code(),
            MirrorError::InvalidRemoteName(_)
            | MirrorError::InvalidUrl { .. }
            | MirrorError::RemoteNoUrl(_)
            | MirrorError::RemoteNoTrust(_)
            | MirrorError::RemoteRoot { .. }
            | MirrorError::RemoteExists { .. }
            | MirrorError::NoSuchRemote { .. }
            | MirrorError::RemoteFile { .. } => ExitCode::Failure,
            MirrorError::NoChain { .. }
            | MirrorError::UnknownVersion { .. }
            | MirrorError::NoVersions
            | MirrorError::PoolNotBtrfs(_)
            | MirrorError::NoKeys
            | MirrorError::Busy { .. }
            | MirrorError::State { .. }
            | MirrorError::SourceNotDirectory(_)
            | MirrorError::InvalidVersionName(_)
            | MirrorError::AlreadyPublished { .. }
            | MirrorError::AlreadyPublishedTree { .. }
            | MirrorError::CopyDiffers { .. }
            | MirrorError::Bug(_) => ExitCode::Failure,
        }
    }

    /// True when the repository's data is at fault (a malformed, unsigned, expired or
    /// rolled-back index), false for network, local and usage faults.
    #[must_use]
    pub fn is_stream_fault(&self) -> bool {
        if let MirrorError::AllMirrorsFailed { kind, .. } = self {
            return kind.is_stream_fault();
        }
        if let MirrorError::Trust(e) = self {
            return e.is_stream_fault();
        }
        matches!(
            self,
            MirrorError::BadIndex(_)
                | MirrorError::IndexJson { .. }
                | MirrorError::IndexTooLarge { .. }
                | MirrorError::BadSignature(_)
                | MirrorError::Expired { .. }
                | MirrorError::Rollback { .. }
        )
    }

    /// A content index error (an interrupted indexing is [`MirrorError::Interrupted`]).
    pub(crate) fn content(e: crate::content::ContentError) -> MirrorError {
        match e {
            crate::content::ContentError::Interrupted => MirrorError::Interrupted,
            e => MirrorError::Content(e),
        }
    }

    /// An I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> MirrorError {
        MirrorError::Io(PathError::new(op, path, source))
    }

    /// A failed [`crate::util::fs::lock_dir`]: `what` names the holder for the message.
    pub(crate) fn lock(e: LockError, what: &'static str) -> MirrorError {
        match e {
            LockError::Busy(path) => MirrorError::Busy { path, what },
            LockError::Io(e) => MirrorError::Io(e),
        }
    }
}

/// Parses a duration: a number with an optional unit `s`, `m`, `h`, `d`, `w` (default seconds).
///
/// # Errors
/// Not a duration.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        Some((i, 'w')) => (&s[..i], 7 * 86400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a duration (like 3600, 90m, 12h, 30d, 2w)"))
}

/// Parses a size: a number with an optional unit `K`, `M`, `G`, `T` (powers of 1024).
///
/// # Errors
/// Not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i']);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (like 512M, 8G)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2w"), Ok(14 * 86400));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
    }
}
