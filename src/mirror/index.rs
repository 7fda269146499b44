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
use crate::sign::{KeyId, KeySet, SecretKey};
use crate::stream::Uuid;
use crate::util::hex;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

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
    /// The UUID its streams carry (received UUID in a pool), `8-4-4-4-12` hex in JSON.
    pub uuid: Uuid,
    /// When it was published (Unix seconds).
    pub published: u64,
}

/// A SHA-256 digest; in JSON and file names 64 lowercase hex digits (the canonical form, so a
/// content name has exactly one spelling).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

/// A string that is not 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest (expected 64 lowercase hex digits)")]
pub struct ParseDigestError(String);

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Sha256Digest, ParseDigestError> {
        hex::decode_array(s, true)
            .map(Sha256Digest)
            .ok_or_else(|| ParseDigestError(s.to_string()))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One stream file: a signed, zstd-compressed send stream, full (`from` = None) or a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFile {
    /// Path relative to the repository root: `streams/<sha256>.zst`.
    pub path: String,
    /// SHA-256 of the file (lowercase hex in JSON).
    pub sha256: Sha256Digest,
    /// File size in bytes (compressed).
    pub size: u64,
    /// Size of the signed stream inside (decompressed).
    pub stream_bytes: u64,
    /// Version the stream starts from (None: a full stream).
    pub from: Option<String>,
    /// Version the stream produces.
    pub to: String,
    /// The content map of a full stream file, whose zstd frames follow its file data (see
    /// [`crate::content::map`]); None for deltas and for files published before maps existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapFile>,
}

/// A content map file: `streams/<sha256>.map`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFile {
    /// Path relative to the repository root: `streams/<sha256>.map`.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
    /// File size in bytes.
    pub size: u64,
}

/// The index proper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The repository's identity, a random UUID chosen by its first publish and kept by every
    /// later one: pools track the newest serial per repository whatever key signed it.
    /// Indexes written before it existed carry none (then pools use the source instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Uuid>,
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

impl Index {
    /// The position of version `name`.
    #[must_use]
    pub fn position(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.name == name)
    }

    /// The version with this UUID.
    #[must_use]
    pub fn by_uuid(&self, uuid: &Uuid) -> Option<usize> {
        self.versions.iter().position(|v| v.uuid == *uuid)
    }

    /// The version named `name`.
    #[must_use]
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The newest version.
    #[must_use]
    pub fn newest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// Checks the index is consistent: names valid and unique, UUIDs not nil and unique, every
    /// stream between known versions and named by its content. (UUIDs and digests are well
    /// formed by their types.)
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
            if v.uuid.is_nil() || !uuids.insert(v.uuid) {
                return Err(bad(format!("version {}: UUID nil or repeated", v.name)));
            }
        }
        let mut paths = HashSet::new();
        for s in &self.streams {
            if s.path != format!("{STREAMS_DIR}/{}.zst", s.sha256) {
                return Err(bad(format!(
                    "stream {:?} is not named by its content",
                    s.path
                )));
            }
            if !paths.insert(s.path.as_str()) {
                return Err(bad(format!("stream {:?} listed twice", s.path)));
            }
            if let Some(m) = &s.map {
                if m.path != format!("{STREAMS_DIR}/{}.map", m.sha256) {
                    return Err(bad(format!(
                        "stream {:?}: map {:?} is not named by its content",
                        s.path, m.path
                    )));
                }
                if !paths.insert(m.path.as_str()) {
                    return Err(bad(format!("map {:?} listed twice", m.path)));
                }
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
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| MirrorError::Bug(format!("encoding the index: {e}")))?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(text.as_bytes());
        let sig = key.signing_key().sign(&msg);
        let env = Envelope {
            format: INDEX_FORMAT.into(),
            key_id: key.public().id().to_string(),
            signature: hex::encode(sig.to_bytes()),
            index: text,
        };
        let mut out = serde_json::to_string_pretty(&env)
            .map_err(|e| MirrorError::Bug(format!("encoding the index envelope: {e}")))?;
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
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|source| MirrorError::IndexJson {
                what: "not an index envelope",
                source,
            })?;
        if env.format != INDEX_FORMAT {
            return Err(bad(format!("unknown index format {:?}", env.format)));
        }
        let id =
            KeyId(hex::decode_array(&env.key_id, false).ok_or_else(|| bad("malformed key_id"))?);
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
        let sig =
            hex::decode_array(&env.signature, false).ok_or_else(|| bad("malformed signature"))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(env.index.as_bytes());
        key.key().verify_strict(&msg, &sig).map_err(|_| {
            MirrorError::BadSignature(format!(
                "index signature by key {id} does not verify: the index was altered"
            ))
        })?;
        let index: Index =
            serde_json::from_str(&env.index).map_err(|source| MirrorError::IndexJson {
                what: "signed index text",
                source,
            })?;
        index.validate()?;
        Ok((index, id))
    }

    /// Parses an envelope without checking the signature (the publisher reading its own
    /// repository).
    ///
    /// # Errors
    /// Malformed content.
    pub fn open_unverified(bytes: &[u8]) -> Result<Index, MirrorError> {
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|source| MirrorError::IndexJson {
                what: "not an index envelope",
                source,
            })?;
        let index: Index =
            serde_json::from_str(&env.index).map_err(|source| MirrorError::IndexJson {
                what: "index text",
                source,
            })?;
        index.validate()?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index {
            repository: None,
            serial: 3,
            created: 10,
            expires: 20,
            versions: vec![Version {
                name: "1".into(),
                uuid: "01234567-89ab-8def-8123-456789abcdef".parse().unwrap(),
                published: 10,
            }],
            streams: vec![StreamFile {
                path: format!("streams/{}.zst", "ab".repeat(32)),
                sha256: "ab".repeat(32).parse().unwrap(),
                size: 5,
                stream_bytes: 9,
                from: None,
                to: "1".into(),
                map: Some(MapFile {
                    path: format!("streams/{}.map", "cd".repeat(32)),
                    sha256: "cd".repeat(32).parse().unwrap(),
                    size: 3,
                }),
            }],
        }
    }

    #[test]
    fn maps_are_named_by_content_and_optional() {
        let mut i = sample();
        i.validate().unwrap();
        // Misnamed: the other file's digest, or the stream's extension.
        for p in [
            format!("streams/{}.map", "ab".repeat(32)),
            format!("streams/{}.zst", "cd".repeat(32)),
        ] {
            i.streams[0].map.as_mut().unwrap().path = p;
            let e = i.validate().unwrap_err().to_string();
            assert!(e.contains("not named by its content"), "{e}");
        }
        // Absent: not in the JSON at all, and an index without it parses.
        i.streams[0].map = None;
        let text = serde_json::to_string(&i).unwrap();
        assert!(!text.contains("\"map\""), "{text}");
        assert_eq!(serde_json::from_str::<Index>(&text).unwrap(), i);
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
    fn malformed_uuid_and_digest_are_refused_at_load() {
        let key = SecretKey::from_seed(&[7; 32]);
        let mut keys = KeySet::new();
        keys.add(key.public().clone());
        let text = sample().sign(&key).unwrap();
        for (from, to) in [
            (
                "01234567-89ab-8def-8123-456789abcdef",
                "01234567-89ab-8def-8123-456789abcdeg",
            ),
            (&"ab".repeat(32), &"AB".repeat(32)),
        ] {
            let (index, _) = Index::open(text.as_bytes(), &keys).unwrap();
            let bad_text = serde_json::to_string(&index).unwrap().replace(from, to);
            let e = serde_json::from_str::<Index>(&bad_text).unwrap_err();
            assert!(e.to_string().contains(to), "{e}");
        }
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
