//! The client side: from a trusted root to verified release metadata.

use super::metadata::{
    ReleaseMeta, Role, Root, Signed, Timestamp, decode, parse_signed, verify_role,
};
use super::{
    MAX_RELEASE_BYTES, MAX_ROOT_BYTES, MAX_ROOT_STEPS, MAX_TIMESTAMP_BYTES, RELEASE_DIR, ROOT_DIR,
    TIMESTAMP_FILE, TrustError,
};
use crate::mirror::MirrorError;
use crate::sign::KeySet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Fetches repository metadata files.
pub trait Fetch {
    /// The file `rel` (relative to the repository), reading at most `max + 1` bytes (so a
    /// longer file shows as longer than `max`); `None` when the repository does not have it.
    ///
    /// # Errors
    /// Network or I/O failures.
    fn fetch(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, MirrorError>;
    /// The file's location for messages (URL or path).
    fn location(&self, rel: &str) -> String;
}

/// What a pool remembers of a repository it follows (in `POOL/.subvol/state.json`); the root
/// itself is kept beside it (`POOL/.subvol/trust/<uuid>.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoTrust {
    /// The repository's name.
    pub name: String,
    /// Version of the newest root verified.
    pub root_version: u64,
    /// Newest timestamp version seen (reset when the timestamp keys rotate).
    pub timestamp_version: u64,
    /// Newest release serial seen (reset when the release keys rotate).
    pub release_serial: u64,
    /// Timestamp key ids of that root (sorted).
    pub timestamp_keys: Vec<String>,
    /// Release key ids of that root (sorted).
    pub release_keys: Vec<String>,
}

/// The outcome of [`update`].
#[derive(Debug)]
pub struct Verified {
    /// The newest root.
    pub root: Root,
    /// Its file, as fetched (the pool pins it).
    pub root_text: Vec<u8>,
    /// Root versions walked past the trusted one.
    pub rotations: u64,
    /// The timestamp.
    pub timestamp: Timestamp,
    /// The release metadata (its index lists versions and stream files).
    pub release: ReleaseMeta,
    /// Its file (the pool keeps it: the next update fetches only the timestamp when nothing
    /// changed).
    pub release_text: Vec<u8>,
    /// The stream keys the root delegates.
    pub stream_keys: KeySet,
    /// What the pool should remember now.
    pub record: RepoTrust,
    /// Bytes of metadata fetched.
    pub bytes: u64,
}

fn too_large(file: String, max: u64) -> MirrorError {
    TrustError::TooLarge { file, max }.into()
}

/// Parses and checks a root the user or the pool trusts: consistent and signed by its own
/// root threshold (a damaged or hand-edited file is refused before anything is fetched).
///
/// # Errors
/// Malformed or under-signed.
pub fn verify_trusted_root(file: &str, bytes: &[u8]) -> Result<Root, TrustError> {
    if bytes.len() as u64 > MAX_ROOT_BYTES {
        return Err(TrustError::TooLarge {
            file: file.to_string(),
            max: MAX_ROOT_BYTES,
        });
    }
    let env = parse_signed(file, bytes, "root")?;
    let root: Root = decode(file, &env)?;
    root.validate(file)?;
    verify_role(file, &env, &root, Role::Root)?;
    Ok(root)
}

/// Walks from the trusted root to the newest one, then verifies timestamp and release (see the
/// module docs of [`super`]). `pinned` is what the pool remembers of this repository (None on
/// first contact); `legacy_serial` the newest legacy index serial the pool saw of it (rollback
/// protection carries over on migration); `cached_release` the release file the pool verified
/// last time (not fetched again when the timestamp names the same bytes). Nothing is written: the caller saves
/// [`Verified::record`] and [`Verified::root_text`] once it decided to go on.
///
/// # Errors
/// [`MirrorError::Trust`] for refused metadata, network and I/O errors.
pub fn update(
    trusted: &[u8],
    trusted_name: &str,
    pinned: Option<&RepoTrust>,
    legacy_serial: Option<u64>,
    cached_release: Option<&[u8]>,
    fetch: &dyn Fetch,
    now: u64,
) -> Result<Verified, MirrorError> {
    let mut root = verify_trusted_root(trusted_name, trusted)?;
    let mut root_text = trusted.to_vec();
    let start = root.version;
    let mut bytes = 0u64;
    // Root versions N+1, N+2, ...: each signed by a threshold of the old and of the new root
    // keys, for the same repository.
    loop {
        let n = root.version + 1;
        let rel = format!("{ROOT_DIR}/{n}.json");
        let loc = fetch.location(&rel);
        if n - start > MAX_ROOT_STEPS {
            return Err(TrustError::malformed(
                &loc,
                format!("more than {MAX_ROOT_STEPS} root versions in one update"),
            )
            .into());
        }
        let got = match fetch.fetch(&rel, MAX_ROOT_BYTES) {
            // Object stores (S3 and its kind) answer 403, not 404, for an object that does not
            // exist: for this probe it is the same answer.
            Err(MirrorError::HttpStatus { status: 403, .. }) => None,
            r => r?,
        };
        let Some(b) = got else {
            break;
        };
        bytes += b.len() as u64;
        if b.len() as u64 > MAX_ROOT_BYTES {
            return Err(too_large(loc, MAX_ROOT_BYTES));
        }
        let env = parse_signed(&loc, &b, "root")?;
        let new: Root = decode(&loc, &env)?;
        new.validate(&loc)?;
        if new.version != n {
            return Err(TrustError::malformed(
                &loc,
                format!("holds root version {}, expected {n}", new.version),
            )
            .into());
        }
        if new.repository.uuid != root.repository.uuid {
            return Err(TrustError::WrongRepository {
                file: loc,
                got: new.repository.uuid.to_string(),
                want: root.repository.uuid.to_string(),
                why: format!(" (root version {} names it)", root.version),
            }
            .into());
        }
        // Old keys first: they are the ones trusted.
        verify_role(&loc, &env, &root, Role::Root)?;
        verify_role(&loc, &env, &new, Role::Root)?;
        root = new;
        root_text = b;
    }
    if now >= root.expires {
        return Err(TrustError::Expired {
            file: fetch.location(&format!("{ROOT_DIR}/{}.json", root.version)),
            expires: root.expires,
            now,
            hint: "the root key holders must sign a new root version (`subvol trust rotate`)",
        }
        .into());
    }
    let uuid = root.repository.uuid;

    // Timestamp: bounded, then checked against the newest root.
    let ts_loc = fetch.location(TIMESTAMP_FILE);
    let b = fetch
        .fetch(TIMESTAMP_FILE, MAX_TIMESTAMP_BYTES)?
        .ok_or_else(|| TrustError::Missing(ts_loc.clone()))?;
    bytes += b.len() as u64;
    if b.len() as u64 > MAX_TIMESTAMP_BYTES {
        return Err(too_large(ts_loc, MAX_TIMESTAMP_BYTES));
    }
    let env: Signed = parse_signed(&ts_loc, &b, "timestamp")?;
    // A timestamp naming a newer root than the chain reached: a gap (refused either way; said
    // before the signature check, which would fail with the unreachable root's keys).
    if let Some(named) = env
        .signed
        .get("root_version")
        .and_then(serde_json::Value::as_u64)
        && named > root.version
    {
        return Err(TrustError::RootGap {
            missing: fetch.location(&format!("{ROOT_DIR}/{}.json", root.version + 1)),
            named_by: ts_loc,
            newest: named,
        }
        .into());
    }
    verify_role(&ts_loc, &env, &root, Role::Timestamp)?;
    let ts: Timestamp = decode(&ts_loc, &env)?;
    if ts.kind != "timestamp" {
        return Err(TrustError::malformed(&ts_loc, "not a timestamp").into());
    }
    if ts.repository != uuid {
        return Err(TrustError::WrongRepository {
            file: ts_loc,
            got: ts.repository.to_string(),
            want: format!("{uuid} ({})", root.repository.name),
            why: " (the trusted root names it)".into(),
        }
        .into());
    }
    // What the pool saw, reset for a role whose keys rotated: a compromised key may have pushed
    // its numbers to the maximum (fast-forward), and rotating it is the recovery.
    let ts_keys = root.role_ids(Role::Timestamp);
    let rel_keys = root.role_ids(Role::Release);
    let mut record = match pinned {
        Some(p) => p.clone(),
        None => RepoTrust {
            release_serial: legacy_serial.unwrap_or(0),
            timestamp_keys: ts_keys.clone(),
            release_keys: rel_keys.clone(),
            ..RepoTrust::default()
        },
    };
    // The root reached must not be older than one this pool verified before (a lost pinned
    // file and an old --root must not roll the trusted keys back).
    if root.version < record.root_version {
        return Err(TrustError::Rollback {
            file: trusted_name.to_string(),
            what: "root version",
            got: root.version,
            seen: record.root_version,
        }
        .into());
    }
    if record.timestamp_keys != ts_keys {
        record.timestamp_version = 0;
    }
    if record.release_keys != rel_keys {
        record.release_serial = 0;
    }
    if ts.version < record.timestamp_version {
        return Err(TrustError::Rollback {
            file: ts_loc,
            what: "timestamp version",
            got: ts.version,
            seen: record.timestamp_version,
        }
        .into());
    }
    if now >= ts.expires {
        return Err(TrustError::Expired {
            file: ts_loc,
            expires: ts.expires,
            now,
            hint: "the timestamp key must re-sign it (`subvol trust timestamp`); a mirror serving an old one freezes updates",
        }
        .into());
    }
    let r = &ts.release;
    if ts.release.serial < record.release_serial {
        return Err(TrustError::Rollback {
            file: ts_loc,
            what: "release serial",
            got: r.serial,
            seen: record.release_serial,
        }
        .into());
    }
    let want_path = format!("{RELEASE_DIR}/{}.json", r.serial);
    if r.path != want_path || r.size > MAX_RELEASE_BYTES {
        return Err(TrustError::malformed(
            &ts_loc,
            format!(
                "names release {:?} of {} bytes (expected {want_path}, at most {MAX_RELEASE_BYTES} bytes)",
                r.path, r.size
            ),
        )
        .into());
    }

    // Release: exactly the bytes the timestamp names (from the pool when it has them).
    let rel_loc = fetch.location(&r.path);
    let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    let b = match cached_release {
        Some(c) if c.len() as u64 == r.size && sha(c) == r.sha256.0 => c.to_vec(),
        _ => {
            let b = fetch
                .fetch(&r.path, r.size)?
                .ok_or_else(|| TrustError::Missing(rel_loc.clone()))?;
            bytes += b.len() as u64;
            b
        }
    };
    if b.len() as u64 != r.size {
        return Err(TrustError::Mismatch {
            file: rel_loc,
            reason: format!(
                "{}{} bytes, but {ts_loc} names {} bytes (metadata of two publishes mixed, or altered)",
                if b.len() as u64 > r.size {
                    "more than "
                } else {
                    ""
                },
                b.len(),
                r.size
            ),
        }
        .into());
    }
    let digest = sha(&b);
    if digest != r.sha256.0 {
        return Err(TrustError::Mismatch {
            file: rel_loc,
            reason: format!(
                "SHA-256 {} differs from {} that {ts_loc} names (metadata of two publishes mixed)",
                crate::util::hex::encode(digest),
                r.sha256
            ),
        }
        .into());
    }
    let env = parse_signed(&rel_loc, &b, "release")?;
    verify_role(&rel_loc, &env, &root, Role::Release)?;
    let release: ReleaseMeta = decode(&rel_loc, &env)?;
    if release.repository != uuid || release.index.repository != Some(uuid) {
        return Err(TrustError::WrongRepository {
            file: rel_loc,
            got: release.repository.to_string(),
            want: format!("{uuid} ({})", root.repository.name),
            why: " (the trusted root names it)".into(),
        }
        .into());
    }
    if release.serial != r.serial || release.index.serial != r.serial {
        return Err(TrustError::malformed(
            &rel_loc,
            format!(
                "holds serial {} (index serial {}), but the timestamp names {}",
                release.serial, release.index.serial, r.serial
            ),
        )
        .into());
    }
    if now >= release.expires {
        return Err(TrustError::Expired {
            file: rel_loc,
            expires: release.expires,
            now,
            hint: "the publisher must publish again (`subvol publish` re-signs it)",
        }
        .into());
    }
    release.index.validate()?;
    let stream_keys = root.key_set(Role::Streams);
    record.name = root.repository.name.clone();
    record.root_version = root.version;
    record.timestamp_version = ts.version;
    record.release_serial = release.serial;
    record.timestamp_keys = ts_keys;
    record.release_keys = rel_keys;
    Ok(Verified {
        rotations: root.version - start,
        root,
        root_text,
        timestamp: ts,
        release,
        release_text: b,
        stream_keys,
        record,
        bytes,
    })
}
