//! Pull's bookkeeping in a pool, `POOL/.subvol/state.json`: the newest index serial seen per
//! signing key (rollback protection) and the versions pulled (retention deletes only these).

use super::MirrorError;
use crate::pool::META_DIR;
use crate::stream::Uuid;
use crate::util::fs::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The newest index seen from one signing key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeenIndex {
    /// Its serial.
    pub serial: u64,
    /// Where it came from.
    pub source: String,
    /// When (Unix seconds).
    pub seen: u64,
}

/// A version this pool pulled.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PulledVersion {
    /// Version (= subvolume) name.
    pub name: String,
    /// Its UUID (the subvolume's received UUID).
    pub uuid: Uuid,
    /// When (Unix seconds).
    pub pulled: u64,
}

/// `POOL/.subvol/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PullState {
    /// Newest index serial seen, per signing key id (16 hex digits).
    #[serde(default)]
    pub indexes: BTreeMap<String, SeenIndex>,
    /// Versions pulled (retention only ever deletes these).
    #[serde(default)]
    pub versions: Vec<PulledVersion>,
}

fn state_path(pool: &Path) -> PathBuf {
    pool.join(META_DIR).join("state.json")
}

impl PullState {
    /// Reads the state of `pool` (default when there is none).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(pool: &Path) -> Result<PullState, MirrorError> {
        let p = state_path(pool);
        match fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| MirrorError::State { path: p, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PullState::default()),
            Err(e) => Err(MirrorError::io("read", p, e)),
        }
    }

    /// Writes it atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, pool: &Path) -> Result<(), MirrorError> {
        let dir = pool.join(META_DIR);
        fs::create_dir_all(&dir).map_err(|e| MirrorError::io("create", &dir, e))?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| MirrorError::Bug(format!("encoding the pull state: {e}")))?;
        Ok(write_atomic(&dir, "state.json", text.as_bytes())?)
    }

    /// The version pulled as the subvolume with received UUID `uuid`, if any.
    #[must_use]
    pub fn version_of(&self, uuid: &Uuid) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.uuid == *uuid)
            .map(|v| v.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_parsed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = PullState::default();
        let uuid: Uuid = "01234567-89ab-8def-8123-456789abcdef".parse().unwrap();
        state.versions.push(PulledVersion {
            name: "1".into(),
            uuid,
            pulled: 5,
        });
        state.save(dir.path()).unwrap();
        assert_eq!(
            PullState::load(dir.path()).unwrap().version_of(&uuid),
            Some("1")
        );
        let p = dir.path().join(META_DIR).join("state.json");
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"01234567-89ab-8def-8123-456789abcdef\""),
            "{text}"
        );
        fs::write(&p, text.replace("abcdef\"", "abcdeg\"")).unwrap();
        let e = PullState::load(dir.path()).unwrap_err();
        assert!(matches!(e, MirrorError::State { .. }), "{e}");
        assert!(crate::util::error_chain(&e).contains("not a UUID"), "{e}");
    }
}
