//! The three roles' metadata, the signed envelope, canonical bytes and threshold checks.

use super::{DOMAIN, TrustError};
use crate::mirror::index::{Index, Sha256Digest};
use crate::sign::{KeySet, PublicKey, SecretKey};
use crate::stream::Uuid;
use crate::util::hex;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The roles a root delegates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Signs root versions (offline keys).
    Root,
    /// Signs release metadata (the list of versions and stream files).
    Release,
    /// Signs the timestamp (online key, short expiry).
    Timestamp,
    /// Signs the stream files' signature blocks.
    Streams,
}

impl Role {
    /// Its name in metadata and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Release => "release",
            Role::Timestamp => "timestamp",
            Role::Streams => "streams",
        }
    }
}

/// One signature of a metadata file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Key id, 16 hex digits.
    pub keyid: String,
    /// ed25519 signature, 128 hex digits.
    pub sig: String,
}

/// A metadata file: the signed value and its signatures.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The signed content (a [`Root`], [`ReleaseMeta`] or [`Timestamp`]).
    pub signed: Value,
    /// Its signatures.
    pub signatures: Vec<Signature>,
}

impl Signed {
    /// The file's text.
    ///
    /// # Errors
    /// Never for a parsed value (serde_json encodes any `Value`).
    pub fn to_text(&self) -> Result<String, TrustError> {
        let mut s = serde_json::to_string_pretty(self)
            .map_err(|e| TrustError::Usage(format!("encoding metadata: {e}")))?;
        s.push('\n');
        Ok(s)
    }

    /// The file's text without white space (release metadata: the biggest file, read by
    /// programs only).
    ///
    /// # Errors
    /// Never for a parsed value.
    pub fn to_compact_text(&self) -> Result<String, TrustError> {
        let mut s = serde_json::to_string(self)
            .map_err(|e| TrustError::Usage(format!("encoding metadata: {e}")))?;
        s.push('\n');
        Ok(s)
    }

    /// The role named by `signed.type`.
    #[must_use]
    pub fn kind(&self) -> Option<&str> {
        self.signed.get("type").and_then(Value::as_str)
    }
}

/// Keys and threshold of one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// Key ids (16 hex digits), each listed in [`Root::keys`].
    pub keyids: Vec<String>,
    /// How many of them must sign.
    pub threshold: usize,
}

/// The roles of a root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Root keys.
    pub root: RoleKeys,
    /// Release keys.
    pub release: RoleKeys,
    /// Timestamp keys.
    pub timestamp: RoleKeys,
    /// Stream keys (any one of them signs a stream file; the threshold is 1).
    pub streams: RoleKeys,
}

impl Roles {
    /// The keys of `role`.
    #[must_use]
    pub fn get(&self, role: Role) -> &RoleKeys {
        match role {
            Role::Root => &self.root,
            Role::Release => &self.release,
            Role::Timestamp => &self.timestamp,
            Role::Streams => &self.streams,
        }
    }

    /// The keys of `role`, to change.
    pub fn get_mut(&mut self, role: Role) -> &mut RoleKeys {
        match role {
            Role::Root => &mut self.root,
            Role::Release => &mut self.release,
            Role::Timestamp => &mut self.timestamp,
            Role::Streams => &mut self.streams,
        }
    }
}

/// The repository's identity: bound into every metadata file, pinned by pools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// The repository UUID (the legacy index's `repository`).
    pub uuid: Uuid,
    /// A name for people ("example-os stable").
    pub name: String,
}

/// Root metadata (`root/N.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// "root".
    #[serde(rename = "type")]
    pub kind: String,
    /// 1, 2, 3, ...: each version is signed by the root keys of the previous one and its own.
    pub version: u64,
    /// After this (Unix seconds) the root is refused as the newest one.
    pub expires: u64,
    /// The repository.
    pub repository: Repository,
    /// Public keys (64 hex digits) by key id.
    pub keys: BTreeMap<String, String>,
    /// Who signs what.
    pub roles: Roles,
}

/// Where the timestamp says the current release is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    /// `release/<serial>.json`.
    pub path: String,
    /// Its serial.
    pub serial: u64,
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// Timestamp metadata (`timestamp.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// "timestamp".
    #[serde(rename = "type")]
    pub kind: String,
    /// Grows with every timestamp written.
    pub version: u64,
    /// Short expiry (Unix seconds): a mirror cannot freeze a pool for longer.
    pub expires: u64,
    /// The repository UUID.
    pub repository: Uuid,
    /// The newest root version: a client that cannot walk to it refuses (a gap).
    pub root_version: u64,
    /// The current release.
    pub release: ReleaseRef,
}

/// Release metadata (`release/<serial>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseMeta {
    /// "release".
    #[serde(rename = "type")]
    pub kind: String,
    /// The serial (the index's).
    pub serial: u64,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// The repository UUID.
    pub repository: Uuid,
    /// Versions and stream files.
    pub index: Index,
}

/// The canonical bytes of a value: serde_json's compact encoding, object keys sorted.
///
/// # Errors
/// Never for a `Value`.
pub fn canonical_bytes(v: &Value) -> Result<Vec<u8>, TrustError> {
    serde_json::to_vec(v).map_err(|e| TrustError::Usage(format!("encoding metadata: {e}")))
}

fn message(role: &str, v: &Value) -> Result<Vec<u8>, TrustError> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(role.as_bytes());
    m.push(0);
    m.extend_from_slice(&canonical_bytes(v)?);
    Ok(m)
}

/// Signs `signed` (a role's value, its `type` names the role) with `keys`, replacing earlier
/// signatures of the same keys.
///
/// # Errors
/// The value names no role.
pub fn sign_value(env: &mut Signed, keys: &[&SecretKey]) -> Result<(), TrustError> {
    let role = env
        .kind()
        .ok_or_else(|| TrustError::Usage("metadata without a type".into()))?
        .to_string();
    let msg = message(&role, &env.signed)?;
    for k in keys {
        let id = k.public().id().to_string();
        env.signatures.retain(|s| s.keyid != id);
        env.signatures.push(Signature {
            keyid: id,
            sig: hex::encode(k.signing_key().sign(&msg).to_bytes()),
        });
    }
    env.signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    Ok(())
}

/// Parses a metadata file of role `kind` (signatures not checked yet).
///
/// # Errors
/// Not JSON of the envelope's shape, or another role.
pub fn parse_signed(file: &str, bytes: &[u8], kind: &str) -> Result<Signed, TrustError> {
    let env: Signed = serde_json::from_slice(bytes)
        .map_err(|e| TrustError::malformed(file, format!("not a metadata file: {e}")))?;
    match env.kind() {
        Some(k) if k == kind => Ok(env),
        Some(k) => Err(TrustError::malformed(
            file,
            format!("{k} metadata where {kind} metadata was expected"),
        )),
        None => Err(TrustError::malformed(file, "no `type`")),
    }
}

/// Decodes the signed value of an envelope (after its signatures verified).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    file: &str,
    env: &Signed,
) -> Result<T, TrustError> {
    T::deserialize(&env.signed).map_err(|e| TrustError::malformed(file, e.to_string()))
}

/// Checks that `role`'s threshold of distinct keys of `root` signed `env`.
///
/// # Errors
/// [`TrustError::Threshold`] naming the signatures that did not count.
pub(crate) fn verify_role(
    file: &str,
    env: &Signed,
    root: &Root,
    role: Role,
) -> Result<(), TrustError> {
    let rk = root.roles.get(role);
    let msg = message(env.kind().unwrap_or(""), &env.signed)?;
    let allowed: BTreeSet<&str> = rk.keyids.iter().map(String::as_str).collect();
    let mut good: BTreeSet<&str> = BTreeSet::new();
    let mut notes = Vec::new();
    for s in &env.signatures {
        if !allowed.contains(s.keyid.as_str()) {
            notes.push(format!("key {} is not a {} key", s.keyid, role.name()));
            continue;
        }
        let Some(key) = root.public_key(&s.keyid) else {
            notes.push(format!("key {} is not listed", s.keyid));
            continue;
        };
        let ok = hex::decode_array::<64>(&s.sig, false)
            .map(|b| ed25519_dalek::Signature::from_bytes(&b))
            .is_some_and(|sig| key.key().verify_strict(&msg, &sig).is_ok());
        if ok {
            good.insert(s.keyid.as_str());
        } else {
            notes.push(format!("signature by key {} does not verify", s.keyid));
        }
    }
    if good.len() >= rk.threshold {
        return Ok(());
    }
    Err(TrustError::Threshold {
        file: file.to_string(),
        role: role.name(),
        valid: good.len(),
        threshold: rk.threshold,
        detail: if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        },
    })
}

impl Root {
    /// The public key with this id, if listed and valid.
    #[must_use]
    pub fn public_key(&self, keyid: &str) -> Option<PublicKey> {
        let b = hex::decode_array::<32>(self.keys.get(keyid)?, false)?;
        let k = PublicKey::from_bytes(&b).ok()?;
        (k.id().to_string() == keyid).then_some(k)
    }

    /// The keys of `role` as a key set (the stream keys verify stream files).
    #[must_use]
    pub fn key_set(&self, role: Role) -> KeySet {
        let mut set = KeySet::new();
        for id in &self.roles.get(role).keyids {
            if let Some(k) = self.public_key(id) {
                set.add(k);
            }
        }
        set
    }

    /// Adds a public key to [`Root::keys`]; returns its id.
    pub fn add_key(&mut self, k: &PublicKey) -> String {
        let id = k.id().to_string();
        self.keys
            .insert(id.clone(), hex::encode(k.key().as_bytes()));
        id
    }

    /// Checks the root is consistent: type, name, every role's keys listed and valid,
    /// thresholds between 1 and the number of keys.
    ///
    /// # Errors
    /// What is inconsistent.
    pub fn validate(&self, file: &str) -> Result<(), TrustError> {
        let bad = |r: String| Err(TrustError::malformed(file, r));
        if self.kind != "root" {
            return bad(format!("type {:?}, expected \"root\"", self.kind));
        }
        if self.version == 0 {
            return bad("root version 0 (versions start at 1)".into());
        }
        let name = &self.repository.name;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return bad(
                "repository name empty, longer than 128 bytes or with control characters".into(),
            );
        }
        if self.repository.uuid.is_nil() {
            return bad("nil repository UUID".into());
        }
        for id in self.keys.keys() {
            if self.public_key(id).is_none() {
                return bad(format!("key {id} is not a valid ed25519 key with that id"));
            }
        }
        for role in [Role::Root, Role::Release, Role::Timestamp, Role::Streams] {
            let rk = self.roles.get(role);
            let distinct: BTreeSet<&String> = rk.keyids.iter().collect();
            if distinct.len() != rk.keyids.len() {
                return bad(format!("{} role lists a key twice", role.name()));
            }
            if let Some(id) = rk.keyids.iter().find(|id| !self.keys.contains_key(*id)) {
                return bad(format!("{} role names unlisted key {id}", role.name()));
            }
            if rk.threshold == 0 || rk.threshold > rk.keyids.len() {
                return bad(format!(
                    "{} threshold {} with {} key(s)",
                    role.name(),
                    rk.threshold,
                    rk.keyids.len()
                ));
            }
        }
        Ok(())
    }

    /// The sorted key ids of `role` (to tell a rotation of it).
    #[must_use]
    pub fn role_ids(&self, role: Role) -> Vec<String> {
        let mut v = self.roles.get(role).keyids.clone();
        v.sort();
        v
    }
}
