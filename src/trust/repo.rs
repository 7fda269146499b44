//! The repository side, offline: a first root, rotations, signatures added from files, release
//! metadata (written by publish), and the timestamp (the online job).

use super::metadata::{
    ReleaseMeta, ReleaseRef, Repository, Role, RoleKeys, Roles, Root, Signed, Timestamp, decode,
    parse_signed, sign_value, verify_role,
};
use super::{RELEASE_DIR, ROOT_DIR, TIMESTAMP_FILE, TrustError};
use crate::mirror::index::{INDEX_FILE, Index, Sha256Digest};
use crate::sign::{PublicKey, SecretKey};
use crate::util::fs::{PathError, write_atomic};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// New keys (and threshold) for one role of a root.
#[derive(Clone, Debug)]
pub struct RoleChange {
    /// The role.
    pub role: Role,
    /// Its keys (empty: keep the current ones).
    pub keys: Vec<PublicKey>,
    /// Its threshold (None: keep the current one, or 1 for a new root).
    pub threshold: Option<usize>,
}

/// What a first root holds.
#[derive(Clone, Debug)]
pub struct RootSpec {
    /// The repository's name.
    pub name: String,
    /// Keys of every role.
    pub roles: Vec<RoleChange>,
    /// Seconds until it expires.
    pub valid_for: u64,
}

fn io_err(op: &'static str, p: &Path, e: io::Error) -> TrustError {
    TrustError::Io(PathError::new(op, p, e))
}

/// `REPO/root/N.json`.
#[must_use]
pub fn root_path(repo: &Path, version: u64) -> PathBuf {
    repo.join(ROOT_DIR).join(format!("{version}.json"))
}

/// `REPO/release/<serial>.json`.
#[must_use]
pub fn release_path(repo: &Path, serial: u64) -> PathBuf {
    repo.join(RELEASE_DIR).join(format!("{serial}.json"))
}

/// The numbers `N` of the files `DIR/N.json`.
fn numbered(dir: &Path) -> Result<BTreeSet<u64>, TrustError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_err("read", dir, e)),
    };
    Ok(rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .collect())
}

/// The newest root version in the repository (0: none).
///
/// # Errors
/// The directory cannot be read.
pub fn newest_root_version(repo: &Path) -> Result<u64, TrustError> {
    Ok(numbered(&repo.join(ROOT_DIR))?.last().copied().unwrap_or(0))
}

fn read_signed(path: &Path, kind: &str) -> Result<Signed, TrustError> {
    let b = fs::read(path).map_err(|e| io_err("read", path, e))?;
    parse_signed(&path.display().to_string(), &b, kind)
}

/// The newest root of a repository (the publisher's own files: read, not verified), if any.
///
/// # Errors
/// Unreadable or malformed.
pub fn newest_root(repo: &Path) -> Result<Option<Root>, TrustError> {
    let n = newest_root_version(repo)?;
    if n == 0 {
        return Ok(None);
    }
    let p = root_path(repo, n);
    let root: Root = decode(&p.display().to_string(), &read_signed(&p, "root")?)?;
    Ok(Some(root))
}

fn write_new(path: &Path, text: &str) -> Result<(), TrustError> {
    if path.exists() {
        return Err(TrustError::Usage(format!(
            "{} exists already (metadata files are written once)",
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TrustError::Usage(format!("bad file name {}", path.display())))?;
    Ok(write_atomic(dir, name, text.as_bytes())?)
}

fn apply(root: &mut Root, changes: &[RoleChange]) {
    for c in changes {
        let rk = root.roles.get_mut(c.role);
        if !c.keys.is_empty() {
            rk.keyids = c.keys.iter().map(|k| k.id().to_string()).collect();
            for k in &c.keys {
                let id = k.id().to_string();
                root.keys
                    .insert(id, crate::util::hex::encode(k.key().as_bytes()));
            }
        }
        if let Some(t) = c.threshold {
            root.roles.get_mut(c.role).threshold = t;
        }
    }
    // Keys no role names any more are revoked: drop them.
    let used: BTreeSet<String> = [Role::Root, Role::Release, Role::Timestamp, Role::Streams]
        .iter()
        .flat_map(|r| root.roles.get(*r).keyids.clone())
        .collect();
    root.keys.retain(|id, _| used.contains(id));
}

fn envelope<T: serde::Serialize>(v: &T) -> Result<Signed, TrustError> {
    Ok(Signed {
        signed: serde_json::to_value(v)
            .map_err(|e| TrustError::Usage(format!("encoding metadata: {e}")))?,
        signatures: Vec::new(),
    })
}

/// How many `role` signatures of `env` count under `root`, and the threshold.
fn status(env: &Signed, root: &Root, role: Role) -> (bool, usize) {
    (
        verify_role("", env, root, role).is_ok(),
        root.roles.get(role).threshold,
    )
}

/// Writes the first root, `REPO/root/1.json`, signed by `signers`. The repository keeps the
/// identity its legacy index has (migration), or gets a new random one.
///
/// # Errors
/// A root exists already, a role has no keys, or I/O errors.
pub fn init(
    repo: &Path,
    spec: &RootSpec,
    signers: &[&SecretKey],
    now: u64,
) -> Result<(PathBuf, bool), TrustError> {
    if newest_root_version(repo)? != 0 {
        return Err(TrustError::Usage(format!(
            "{} has a root already; change it with `subvol trust rotate`",
            repo.join(ROOT_DIR).display()
        )));
    }
    let uuid = match fs::read(repo.join(INDEX_FILE)) {
        Ok(b) => {
            Index::open_unverified(&b)
                .map_err(|e| {
                    TrustError::Usage(format!("{}: {e}", repo.join(INDEX_FILE).display()))
                })?
                .repository
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", &repo.join(INDEX_FILE), e)),
    };
    let uuid = match uuid {
        Some(u) => u,
        None => {
            crate::mirror::publish::random_uuid().map_err(|e| TrustError::Usage(e.to_string()))?
        }
    };
    let empty = RoleKeys {
        keyids: Vec::new(),
        threshold: 1,
    };
    let mut root = Root {
        kind: "root".into(),
        version: 1,
        expires: now.saturating_add(spec.valid_for),
        repository: Repository {
            uuid,
            name: spec.name.clone(),
        },
        keys: BTreeMap::new(),
        roles: Roles {
            root: empty.clone(),
            release: empty.clone(),
            timestamp: empty.clone(),
            streams: empty,
        },
    };
    apply(&mut root, &spec.roles);
    let path = root_path(repo, 1);
    root.validate(&path.display().to_string())
        .map_err(|e| TrustError::Usage(e.to_string()))?;
    let mut env = envelope(&root)?;
    sign_value(&mut env, signers)?;
    write_new(&path, &env.to_text()?)?;
    Ok((path, status(&env, &root, Role::Root).0))
}

/// Writes root version N+1 with `changes` applied, signed by `signers` (it needs a threshold
/// of the old root keys and of the new; more signatures can be added with [`sign_file`]).
/// Returns the path and whether each threshold (old, new) is met.
///
/// # Errors
/// No root yet, an inconsistent result, or I/O errors.
pub fn rotate(
    repo: &Path,
    changes: &[RoleChange],
    valid_for: u64,
    signers: &[&SecretKey],
    now: u64,
) -> Result<(PathBuf, bool, bool), TrustError> {
    let old = newest_root(repo)?.ok_or_else(|| {
        TrustError::Usage(format!(
            "{} has no root yet; start with `subvol trust init`",
            repo.display()
        ))
    })?;
    let mut new = old.clone();
    new.version = old.version + 1;
    new.expires = now.saturating_add(valid_for);
    apply(&mut new, changes);
    let path = root_path(repo, new.version);
    new.validate(&path.display().to_string())
        .map_err(|e| TrustError::Usage(e.to_string()))?;
    let mut env = envelope(&new)?;
    sign_value(&mut env, signers)?;
    write_new(&path, &env.to_text()?)?;
    Ok((
        path,
        status(&env, &old, Role::Root).0,
        status(&env, &new, Role::Root).0,
    ))
}

/// Adds the signatures of `keys` to a metadata file (offline; any role), in place.
///
/// # Errors
/// Not a metadata file, or I/O errors.
pub fn sign_file(path: &Path, keys: &[&SecretKey]) -> Result<String, TrustError> {
    let b = fs::read(path).map_err(|e| io_err("read", path, e))?;
    let file = path.display().to_string();
    let mut env: Signed = serde_json::from_slice(&b)
        .map_err(|e| TrustError::malformed(&file, format!("not a metadata file: {e}")))?;
    let kind = env
        .kind()
        .ok_or_else(|| TrustError::malformed(&file, "no `type`"))?
        .to_string();
    sign_value(&mut env, keys)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TrustError::Usage(format!("bad file name {file}")))?;
    write_atomic(dir, name, env.to_text()?.as_bytes())?;
    Ok(kind)
}

/// Writes `REPO/release/<serial>.json` for `index` (whose repository must be the root's),
/// signed by `signers`; deletes release files older than the previous serial. Returns where
/// it is and whether the release threshold is met.
///
/// # Errors
/// No root, another repository, keys that are not release keys, or I/O errors.
pub fn write_release(
    repo: &Path,
    index: &Index,
    signers: &[&SecretKey],
) -> Result<(ReleaseRef, bool), TrustError> {
    let root = newest_root(repo)?
        .ok_or_else(|| TrustError::Usage(format!("{} has no root", repo.display())))?;
    for k in signers {
        let id = k.public().id().to_string();
        if !root.roles.release.keyids.contains(&id) {
            return Err(TrustError::Usage(format!(
                "key {id} is not a release key of root version {}",
                root.version
            )));
        }
    }
    if index.repository != Some(root.repository.uuid) {
        return Err(TrustError::Usage(format!(
            "the index belongs to repository {:?}, the root to {}",
            index.repository, root.repository.uuid
        )));
    }
    let meta = ReleaseMeta {
        kind: "release".into(),
        serial: index.serial,
        expires: index.expires,
        repository: root.repository.uuid,
        index: index.clone(),
    };
    let mut env = envelope(&meta)?;
    sign_value(&mut env, signers)?;
    let text = env.to_compact_text()?;
    let dir = repo.join(RELEASE_DIR);
    fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
    write_atomic(&dir, &format!("{}.json", index.serial), text.as_bytes())?;
    for old in numbered(&dir)? {
        if old + 1 < index.serial {
            let _ = fs::remove_file(release_path(repo, old));
        }
    }
    Ok((
        release_ref(index.serial, text.as_bytes()),
        status(&env, &root, Role::Release).0,
    ))
}

fn release_ref(serial: u64, bytes: &[u8]) -> ReleaseRef {
    ReleaseRef {
        path: format!("{RELEASE_DIR}/{serial}.json"),
        serial,
        sha256: Sha256Digest(Sha256::digest(bytes).into()),
        size: bytes.len() as u64,
    }
}

/// Writes `REPO/timestamp.json` naming the newest release file (version + 1, expiring in
/// `valid_for`), signed by `key`. Refuses a key that is not a timestamp key and a release that
/// lacks its threshold of signatures.
///
/// # Errors
/// No root or release, a wrong key, an under-signed release, or I/O errors.
pub fn write_timestamp(
    repo: &Path,
    key: &SecretKey,
    valid_for: u64,
    now: u64,
) -> Result<Timestamp, TrustError> {
    let root = newest_root(repo)?
        .ok_or_else(|| TrustError::Usage(format!("{} has no root", repo.display())))?;
    let id = key.public().id().to_string();
    if !root.roles.timestamp.keyids.contains(&id) {
        return Err(TrustError::Usage(format!(
            "key {id} is not a timestamp key of root version {}",
            root.version
        )));
    }
    let serial = numbered(&repo.join(RELEASE_DIR))?
        .last()
        .copied()
        .ok_or_else(|| {
            TrustError::Usage(format!(
                "{} has no release metadata yet (`subvol publish` writes it)",
                repo.display()
            ))
        })?;
    let rp = release_path(repo, serial);
    let bytes = fs::read(&rp).map_err(|e| io_err("read", &rp, e))?;
    let file = rp.display().to_string();
    let env = parse_signed(&file, &bytes, "release")?;
    verify_role(&file, &env, &root, Role::Release).map_err(|e| {
        TrustError::Usage(format!(
            "{e}; add signatures with `subvol trust sign {file} --key KEY`"
        ))
    })?;
    let tsp = repo.join(TIMESTAMP_FILE);
    let version = match fs::read(&tsp) {
        Ok(b) => parse_signed(&tsp.display().to_string(), &b, "timestamp")?
            .signed
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("read", &tsp, e)),
    };
    let ts = Timestamp {
        kind: "timestamp".into(),
        version: version + 1,
        expires: now.saturating_add(valid_for),
        repository: root.repository.uuid,
        root_version: root.version,
        release: release_ref(serial, &bytes),
    };
    let mut env = envelope(&ts)?;
    sign_value(&mut env, &[key])?;
    write_atomic(repo, TIMESTAMP_FILE, env.to_text()?.as_bytes())?;
    Ok(ts)
}
