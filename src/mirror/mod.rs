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

pub mod fetch;
pub mod index;
pub mod plan;
pub mod publish;
pub mod pull;

pub use index::{Index, StreamFile, Version};
pub use plan::{Plan, Step};
pub use publish::{PublishEvent, PublishOptions, PublishReport, publish};
pub use pull::{PullEvent, PullOptions, PullReport, pull};

use crate::ExitCode;
use std::io;
use std::path::PathBuf;

/// Errors of publishing, pulling and pool management.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A btrfs ioctl failed.
    #[error("{op} {}: {source}", path.display())]
    Ioctl {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The ioctl error.
        #[source]
        source: subvol_ioctl::Error,
    },
    /// An HTTP transfer failed (network, server error).
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The index is malformed.
    #[error("invalid index: {0}")]
    BadIndex(String),
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
    /// Something named does not exist (version, subvolume).
    #[error("{0}")]
    NotFound(String),
    /// An external command (mkfs.btrfs, mount, cp) failed.
    #[error("{cmd} failed: {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its status and stderr.
        reason: String,
    },
    /// Another publish or pull holds the lock.
    #[error("{0}")]
    Busy(String),
    /// Interrupted by SIGINT/SIGTERM.
    #[error("interrupted by a signal")]
    Interrupted,
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
}

impl MirrorError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            MirrorError::Io { .. }
            | MirrorError::Ioctl { .. }
            | MirrorError::Http { .. }
            | MirrorError::Command { .. } => ExitCode::Io,
            MirrorError::BadIndex(_)
            | MirrorError::BadSignature(_)
            | MirrorError::Expired { .. }
            | MirrorError::Rollback { .. } => ExitCode::Verification,
            MirrorError::NoChain { failures, .. } if !failures.is_empty() => ExitCode::Verification,
            MirrorError::Interrupted => ExitCode::Interrupted,
            MirrorError::NoChain { .. }
            | MirrorError::NotFound(_)
            | MirrorError::Busy(_)
            | MirrorError::Invalid(_) => ExitCode::Failure,
        }
    }

    /// An I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> MirrorError {
        MirrorError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An ioctl error on a path.
    pub fn ioctl(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: subvol_ioctl::Error,
    ) -> MirrorError {
        MirrorError::Ioctl {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// Human-readable byte count.
#[must_use]
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A random hex nonce for temporary names.
pub(crate) fn nonce() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    crate::sign::hex_id(&b)
}

/// Writes `data` to `dir/name` atomically: a temporary file in `dir`, fsync, rename, fsync of
/// the directory.
///
/// # Errors
/// I/O errors (the temporary file is removed).
pub fn write_atomic(dir: &std::path::Path, name: &str, data: &[u8]) -> Result<(), MirrorError> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), nonce()));
    let fin = dir.join(name);
    let r = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| MirrorError::io("create", &tmp, e))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(|e| MirrorError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &fin).map_err(|e| MirrorError::io("rename", &fin, e))?;
        sync_dir(dir)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// fsyncs a directory (after a rename into it).
///
/// # Errors
/// I/O errors.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), MirrorError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MirrorError::io("fsync", dir, e))
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
