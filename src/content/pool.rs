//! A pool's content index: one saved index per read-only received subvolume directly in the
//! pool, `POOL/.subvol/content/<received-uuid>.idx`, its paths relative to the subvolume.
//! `subvol pull` writes one after each receive and, when it starts, drops files of subvolumes
//! that are gone and indexes subvolumes that lack one ([`refresh`]); [`pool_index`] opens them
//! all as one [`ContentIndex`] for dedup and planning.
//!
//! A received UUID names one version's content, so a file stays valid as long as a read-only
//! subvolume with that received UUID is in the pool (when several are, the first by name is
//! the seed). A file that is no index or not whole is treated as absent (and rebuilt by
//! [`refresh`]); nothing found through the index is used before its bytes are compared.

use super::{ContentError, ContentIndex, Seed};
use crate::pool::{CONTENT_DIR, META_DIR, received_in};
use crate::stream::Uuid;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// True when `dir` is a pool (it has `POOL/.subvol`, made by `subvol pool init` or a pull):
/// receives into it dedup against its content index and add to it.
#[must_use]
pub fn is_pool(dir: &Path) -> bool {
    dir.join(META_DIR).is_dir()
}

/// `POOL/.subvol/content`.
#[must_use]
pub fn index_dir(pool: &Path) -> PathBuf {
    pool.join(META_DIR).join(CONTENT_DIR)
}

/// The index file of the subvolume received as `received_uuid`.
#[must_use]
pub fn index_file(pool: &Path, received_uuid: &Uuid) -> PathBuf {
    index_dir(pool).join(format!("{received_uuid}.idx"))
}

/// The subvolumes a pool's index covers: read-only received subvolumes directly in the pool,
/// by received UUID (the first name when several share one).
fn covered(pool: &Path) -> Result<BTreeMap<Uuid, String>, ContentError> {
    let mut out = BTreeMap::new();
    for (name, uuid, ro) in received_in(pool)? {
        if ro {
            out.entry(uuid).or_insert(name);
        }
    }
    Ok(out)
}

/// A subvolume just indexed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Indexed {
    /// Its name in the pool.
    pub name: String,
    /// Its received UUID (the index file's name).
    pub uuid: Uuid,
    /// Regular files indexed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Size of the index file.
    pub index_bytes: u64,
}

/// Indexes the subvolume `POOL/name` (received as `received_uuid`) and saves its index file,
/// replacing one there. Index files being written are anonymous files in the index directory.
///
/// # Errors
/// The subvolume or the index directory cannot be read or written;
/// [`ContentError::Interrupted`] once `stop` is set.
pub fn index_subvolume(
    pool: &Path,
    name: &str,
    received_uuid: &Uuid,
    stop: Option<&AtomicBool>,
) -> Result<Indexed, ContentError> {
    let dir = index_dir(pool);
    fs::create_dir_all(&dir).map_err(|source| ContentError::Io {
        op: "create",
        path: dir.clone(),
        source,
    })?;
    let seed = Seed::open(&pool.join(name))?;
    let index = ContentIndex::build(vec![seed], &dir, &|_| false, stop)?;
    index.save(&index_file(pool, received_uuid))?;
    Ok(Indexed {
        name: name.to_owned(),
        uuid: *received_uuid,
        files: index.files(),
        bytes: index.bytes(),
        index_bytes: index.disk_bytes(),
    })
}

/// Removes the index file of `received_uuid`, if any.
///
/// # Errors
/// Removing it failed (other than it being absent).
pub fn remove_index(pool: &Path, received_uuid: &Uuid) -> Result<(), ContentError> {
    let path = index_file(pool, received_uuid);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContentError::Io {
            op: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// What [`refresh`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Refreshed {
    /// Index files removed: their subvolume is gone (file names).
    pub dropped: Vec<String>,
    /// Index files found corrupt (then built again): the file name and why.
    pub corrupt: Vec<(String, String)>,
    /// Subvolumes indexed now (they had no usable index file).
    pub indexed: Vec<Indexed>,
}

/// Brings the pool's index up to date: removes index files whose subvolume is gone (or whose
/// name is no received UUID), and indexes every covered subvolume without a usable one (pulled
/// by an older subvol, or its file corrupt). `on_indexed` hears of each subvolume indexed.
///
/// # Errors
/// The pool or its index directory cannot be read or written; a subvolume cannot be read;
/// [`ContentError::Interrupted`].
pub fn refresh(
    pool: &Path,
    stop: Option<&AtomicBool>,
    on_indexed: &mut dyn FnMut(&Indexed),
) -> Result<Refreshed, ContentError> {
    let subvolumes = covered(pool)?;
    let dir = index_dir(pool);
    let mut out = Refreshed::default();
    match fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|source| ContentError::Io {
                    op: "read directory",
                    path: dir.clone(),
                    source,
                })?;
                let file_name = e.file_name();
                let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".idx")) else {
                    continue;
                };
                if stem
                    .parse::<Uuid>()
                    .is_ok_and(|u| subvolumes.contains_key(&u))
                {
                    continue;
                }
                let path = e.path();
                fs::remove_file(&path).map_err(|source| ContentError::Io {
                    op: "remove",
                    path,
                    source,
                })?;
                out.dropped.push(file_name.to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ContentError::Io {
                op: "read directory",
                path: dir,
                source,
            });
        }
    }
    for (uuid, name) in &subvolumes {
        let path = index_file(pool, uuid);
        if path.symlink_metadata().is_ok() {
            match ContentIndex::open(&path, vec![Seed::open(&pool.join(name))?]) {
                Ok(_) => continue,
                Err(ContentError::Corrupt { reason, .. }) => {
                    out.corrupt.push((format!("{uuid}.idx"), reason));
                }
                Err(e) => return Err(e),
            }
        }
        let done = index_subvolume(pool, name, uuid, stop)?;
        on_indexed(&done);
        out.indexed.push(done);
    }
    Ok(out)
}

/// The pool's index: every usable index file of a covered subvolume, as one index; None when
/// there is none. Corrupt files are left out (as if absent).
///
/// # Errors
/// The pool cannot be listed; an index file or subvolume cannot be opened (other than being
/// absent or corrupt).
pub fn pool_index(pool: &Path) -> Result<Option<ContentIndex>, ContentError> {
    let mut parts = Vec::new();
    for (uuid, name) in covered(pool)? {
        let path = index_file(pool, &uuid);
        if path.symlink_metadata().is_err() {
            continue;
        }
        match ContentIndex::open(&path, vec![Seed::open(&pool.join(&name))?]) {
            Ok(i) => parts.push(i),
            Err(ContentError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    ContentIndex::join(&parts).map(Some)
}
