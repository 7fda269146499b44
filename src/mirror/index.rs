//! The repository index: which versions exist, which stream files turn what into what, signed
//! as a whole with an ed25519 key, with a serial that only grows and an expiry.
//!
//! On disk (`REPO/index.json`) the index is an *envelope*:
//!
//! ```json
//! { "format": "subvol-mirror-index-1", "key_id": "<16 hex>", "signature": "<128 hex>",
//!   "index": "<the index JSON text>" }
//! ```
//!
//! The signature is ed25519 over [`DOMAIN`] followed by the bytes of the `index` string, checked
//! with `verify_strict`. The index text is only parsed after its signature verified. Envelope
//! and signature live in one file so a single `rename` replaces both at once.

use super::MirrorError;
use crate::sign::{KeyId, KeySet, SecretKey, hex_id};
use crate::stream::Uuid;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Name of the index file in the repository.
pub const INDEX_FILE: &str = "index.json";
/// Directory of the stream files in the repository.
pub const STREAMS_DIR: &str = "streams";
/// The envelope's `format`.
pub const INDEX_FORMAT: &str = "subvol-mirror-index-1";
/// Domain separation prefix of the index signature.
pub const DOMAIN: &[u8] = b"subvol mirror index v1\0";
/// Largest index accepted (bytes of the envelope).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The signed envelope around the index text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// [`INDEX_FORMAT`].
    pub format: String,
    /// Key id (16 hex digits) of the signing key.
    pub key_id: String,
    /// ed25519 signature (128 hex digits) over [`DOMAIN`] + `index`.
    pub signature: String,
    /// The index JSON text ([`Index`]).
    pub index: String,
}

/// One published version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Version name: also the subvolume name in a pool.
    pub name: String,
    /// The UUID its streams carry (received UUID in a pool), `8-4-4-4-12` hex.
    pub uuid: String,
    /// When it was published (Unix seconds).
    pub published: u64,
}

/// One stream file: a signed, zstd-compressed send stream, full (`from` = None) or a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFile {
    /// Path relative to the repository root: `streams/<sha256>.zst`.
    pub path: String,
    /// SHA-256 of the file (hex).
    pub sha256: String,
    /// File size in bytes (compressed).
    pub size: u64,
    /// Size of the signed stream inside (decompressed).
    pub stream_bytes: u64,
    /// Version the stream starts from (None: a full stream).
    pub from: Option<String>,
    /// Version the stream produces.
    pub to: String,
}

/// The index proper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Grows by one with every index written; pools refuse an index older than one they saw.
    pub serial: u64,
    /// When this index was written (Unix seconds).
    pub created: u64,
    /// After this time (Unix seconds) pulls refuse the index.
    pub expires: u64,
    /// Versions, oldest first.
    pub versions: Vec<Version>,
    /// Stream files.
    pub streams: Vec<StreamFile>,
}

/// True for a usable version name: 1 to 128 of `A-Z a-z 0-9 . _ + - @ ~`, not starting with
/// `.` or `-` (it becomes a subvolume name and a path component).
#[must_use]
pub fn valid_version_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && !n.starts_with('-')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-@~".contains(&b))
}

fn bad(reason: impl Into<String>) -> MirrorError {
    MirrorError::BadIndex(reason.into())
}

fn unhex(s: &str, out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("x"), 16) {
            Ok(v) => *o = v,
            Err(_) => return false,
        }
    }
    true
}

impl Index {
    /// The position of version `name`.
    #[must_use]
    pub fn position(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.name == name)
    }

    /// The version with this UUID.
    #[must_use]
    pub fn by_uuid(&self, uuid: &Uuid) -> Option<usize> {
        let s = uuid.to_string();
        self.versions.iter().position(|v| v.uuid == s)
    }

    /// The newest version.
    #[must_use]
    pub fn newest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// Checks the index is consistent: names valid and unique, UUIDs valid and unique, every
    /// stream between known versions with a well-formed content name.
    ///
    /// # Errors
    /// What is inconsistent.
    pub fn validate(&self) -> Result<(), MirrorError> {
        let mut names = HashSet::new();
        let mut uuids = HashSet::new();
        for v in &self.versions {
            if !valid_version_name(&v.name) {
                return Err(bad(format!("invalid version name {:?}", v.name)));
            }
            if !names.insert(v.name.as_str()) {
                return Err(bad(format!("version {} listed twice", v.name)));
            }
            let u = Uuid::parse(&v.uuid)
                .ok_or_else(|| bad(format!("version {}: invalid UUID {:?}", v.name, v.uuid)))?;
            if u.is_nil() || !uuids.insert(u) {
                return Err(bad(format!("version {}: UUID nil or repeated", v.name)));
            }
        }
        let mut paths = HashSet::new();
        for s in &self.streams {
            let mut h = [0u8; 32];
            if !unhex(&s.sha256, &mut h) || s.sha256.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(bad(format!("stream {:?}: invalid sha256", s.path)));
            }
            if s.path != format!("{STREAMS_DIR}/{}.zst", s.sha256) {
                return Err(bad(format!(
                    "stream {:?} is not named by its content",
                    s.path
                )));
            }
            if !paths.insert(s.path.as_str()) {
                return Err(bad(format!("stream {:?} listed twice", s.path)));
            }
            if !names.contains(s.to.as_str()) {
                return Err(bad(format!("stream {:?} to unknown version", s.path)));
            }
            if let Some(f) = &s.from
                && (!names.contains(f.as_str()) || *f == s.to)
            {
                return Err(bad(format!("stream {:?}: bad from-version {f:?}", s.path)));
            }
        }
        Ok(())
    }

    /// Signs the index: the envelope's JSON text.
    ///
    /// # Errors
    /// Serialization failure (never for valid data).
    pub fn sign(&self, key: &SecretKey) -> Result<String, MirrorError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(text.as_bytes());
        let sig = key.signing_key().sign(&msg);
        let env = Envelope {
            format: INDEX_FORMAT.into(),
            key_id: key.public().id().to_string(),
            signature: hex_id(&sig.to_bytes()),
            index: text,
        };
        let mut out = serde_json::to_string_pretty(&env).map_err(|e| bad(e.to_string()))?;
        out.push('\n');
        Ok(out)
    }

    /// Parses an envelope and checks its signature against `keys`; returns the index and the
    /// key id that signed it. Expiry and serial are the caller's business.
    ///
    /// # Errors
    /// [`MirrorError::BadSignature`] for an unknown key or a signature that does not verify,
    /// [`MirrorError::BadIndex`] for malformed content.
    pub fn open(bytes: &[u8], keys: &KeySet) -> Result<(Index, KeyId), MirrorError> {
        let env: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not an index envelope: {e}")))?;
        if env.format != INDEX_FORMAT {
            return Err(bad(format!("unknown index format {:?}", env.format)));
        }
        let mut id = [0u8; 8];
        if !unhex(&env.key_id, &mut id) {
            return Err(bad("malformed key_id"));
        }
        let id = KeyId(id);
        let key = keys.get(id).ok_or_else(|| {
            MirrorError::BadSignature(format!(
                "index signed by key {id}, which is not an accepted key (accepted: {})",
                keys.ids()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let mut sig = [0u8; 64];
        if !unhex(&env.signature, &mut sig) {
            return Err(bad("malformed signature"));
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(env.index.as_bytes());
        key.key().verify_strict(&msg, &sig).map_err(|_| {
            MirrorError::BadSignature(format!(
                "index signature by key {id} does not verify: the index was altered"
            ))
        })?;
        let index: Index =
            serde_json::from_str(&env.index).map_err(|e| bad(format!("signed index text: {e}")))?;
        index.validate()?;
        Ok((index, id))
    }

    /// Parses an envelope without checking the signature (the publisher reading its own
    /// repository).
    ///
    /// # Errors
    /// Malformed content.
    pub fn open_unverified(bytes: &[u8]) -> Result<Index, MirrorError> {
        let env: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not an index envelope: {e}")))?;
        let index: Index =
            serde_json::from_str(&env.index).map_err(|e| bad(format!("index text: {e}")))?;
        index.validate()?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index {
            serial: 3,
            created: 10,
            expires: 20,
            versions: vec![Version {
                name: "1".into(),
                uuid: "01234567-89ab-8def-8123-456789abcdef".into(),
                published: 10,
            }],
            streams: vec![StreamFile {
                path: format!("streams/{}.zst", "ab".repeat(32)),
                sha256: "ab".repeat(32),
                size: 5,
                stream_bytes: 9,
                from: None,
                to: "1".into(),
            }],
        }
    }

    #[test]
    fn sign_and_open() {
        let key = SecretKey::from_seed(&[7; 32]);
        let mut keys = KeySet::new();
        keys.add(key.public().clone());
        let text = sample().sign(&key).unwrap();
        let (idx, id) = Index::open(text.as_bytes(), &keys).unwrap();
        assert_eq!(idx, sample());
        assert_eq!(id, key.public().id());
        // Any change to the signed text is caught.
        let tampered = text.replace("\\\"serial\\\": 3", "\\\"serial\\\": 4");
        assert_ne!(tampered, text);
        assert!(matches!(
            Index::open(tampered.as_bytes(), &keys),
            Err(MirrorError::BadSignature(_))
        ));
        // Another key is refused.
        let mut other = KeySet::new();
        other.add(SecretKey::from_seed(&[8; 32]).public().clone());
        assert!(matches!(
            Index::open(text.as_bytes(), &other),
            Err(MirrorError::BadSignature(_))
        ));
    }

    #[test]
    fn names() {
        assert!(valid_version_name("2026.11.25-1"));
        assert!(!valid_version_name(".hidden"));
        assert!(!valid_version_name("a/b"));
        assert!(!valid_version_name(""));
        assert!(!valid_version_name("-x"));
    }
}
