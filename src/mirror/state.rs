//! Pull's bookkeeping in a pool, `POOL/.subvol/state.json`: the newest index serial seen
//! (rollback protection) and the versions pulled (retention deletes only these).
//!
//! A serial is remembered under every name the index answers to: its repository (the index's
//! `repository` UUID), where it came from (the source, which is all that identifies a
//! repository whose index predates the UUID), and the key that signed it. An index is refused
//! when it is older than any of these: a key rotation, where the new key signs newer indexes
//! of the same repository, leaves the old key's records behind, but not the repository's.

use super::MirrorError;
use crate::pool::META_DIR;
use crate::stream::Uuid;
use crate::util::fs::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The newest index seen under one name (repository, source or signing key).
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
    /// Where it was pulled from (URL or directory; absent in records of older pulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `POOL/.subvol/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PullState {
    /// Newest index serial seen, per signing key id (16 hex digits).
    #[serde(default)]
    pub indexes: BTreeMap<String, SeenIndex>,
    /// Newest index serial seen, per repository: `repository:<UUID>` for an index that names
    /// its repository, `source:<URL or canonical directory>` for every index.
    #[serde(default)]
    pub repositories: BTreeMap<String, SeenIndex>,
    /// Versions pulled (retention only ever deletes these).
    #[serde(default)]
    pub versions: Vec<PulledVersion>,
    /// Repositories followed through trust metadata, by repository UUID: what their metadata
    /// was at the last pull (the root itself is `POOL/.subvol/trust/<UUID>.root.json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trust: BTreeMap<String, crate::trust::RepoTrust>,
    /// The repository each source was first pulled from with trust metadata: pinned, another
    /// repository's metadata from that source is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trust_sources: BTreeMap<String, Uuid>,
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

    /// The newest serial seen for an index of `repository` (if it names one) from `source`
    /// signed by `key`: the highest serial remembered under any of these names.
    #[must_use]
    pub fn newest_serial(&self, repository: Option<&Uuid>, source: &str, key: &str) -> Option<u64> {
        repository_names(repository, source)
            .iter()
            .filter_map(|n| self.repositories.get(n))
            .chain(self.indexes.get(key))
            .map(|s| s.serial)
            .max()
    }

    /// Remembers `serial` under every name of [`PullState::newest_serial`] (never lowering a
    /// serial already remembered).
    pub fn record_serial(
        &mut self,
        repository: Option<&Uuid>,
        source: &str,
        key: &str,
        serial: u64,
        now: u64,
    ) {
        let seen = || SeenIndex {
            serial,
            source: source.to_string(),
            seen: now,
        };
        let raise = |map: &mut BTreeMap<String, SeenIndex>, name: String| {
            let e = map.entry(name).or_insert_with(seen);
            if e.serial <= serial {
                *e = seen();
            }
        };
        for n in repository_names(repository, source) {
            raise(&mut self.repositories, n);
        }
        raise(&mut self.indexes, key.to_string());
    }

    /// The repository this pool pinned for `source`: the one its trust metadata named, or the
    /// one the legacy index named when it was last pulled from there.
    #[must_use]
    pub fn pinned_repository(&self, source: &str) -> Option<Uuid> {
        self.trust_sources.get(source).copied().or_else(|| {
            self.repositories.iter().find_map(|(name, seen)| {
                name.strip_prefix("repository:")
                    .filter(|_| seen.source == source)
                    .and_then(|u| u.parse().ok())
            })
        })
    }

    /// The newest legacy index serial seen of `repository`.
    #[must_use]
    pub fn legacy_serial(&self, repository: &Uuid) -> Option<u64> {
        self.repositories
            .get(&format!("repository:{repository}"))
            .map(|s| s.serial)
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

/// The names a repository's serials are remembered under (see the module docs).
fn repository_names(repository: Option<&Uuid>, source: &str) -> Vec<String> {
    let mut names = vec![format!("source:{source}")];
    if let Some(r) = repository {
        names.push(format!("repository:{r}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_counts_for_the_repository_whatever_key_signed_it() {
        let repo: Uuid = "01234567-89ab-4def-8123-456789abcdef".parse().unwrap();
        let mut state = PullState::default();
        state.record_serial(Some(&repo), "http://a/", "oldkey", 5, 1);
        state.record_serial(Some(&repo), "http://a/", "newkey", 6, 2);
        // The old key's index of serial 5, from another mirror: the repository saw 6.
        assert_eq!(
            state.newest_serial(Some(&repo), "http://b/", "oldkey"),
            Some(6)
        );
        // An index without a repository UUID from the same source: the source saw 6.
        assert_eq!(state.newest_serial(None, "http://a/", "oldkey"), Some(6));
        // Another repository, another source, another key: nothing seen.
        let other: Uuid = "11234567-89ab-4def-8123-456789abcdef".parse().unwrap();
        assert_eq!(state.newest_serial(Some(&other), "http://c/", "k3"), None);
        // Recording an older serial never lowers what was seen.
        state.record_serial(Some(&repo), "http://a/", "oldkey", 3, 3);
        assert_eq!(state.newest_serial(Some(&repo), "http://a/", "x"), Some(6));
        assert_eq!(state.newest_serial(None, "http://z/", "oldkey"), Some(5));
    }

    #[test]
    fn uuids_are_parsed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = PullState::default();
        let uuid: Uuid = "01234567-89ab-8def-8123-456789abcdef".parse().unwrap();
        state.versions.push(PulledVersion {
            name: "1".into(),
            uuid,
            pulled: 5,
            source: None,
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
