//! Pools: directories on btrfs holding received versions as read-only subvolumes; subvolume
//! listing, snapshots, deletion, retention, and the loopback-image pool for hosts without btrfs.
//!
//! A pool is any directory on btrfs. `subvol pull` receives version `V` as the read-only
//! subvolume `POOL/V` and keeps its bookkeeping in `POOL/.subvol/`:
//!
//! ```text
//! POOL/.subvol/state.json   newest index serial seen per signing key, versions pulled
//! POOL/.subvol/pool.json    written by `subvol pool init`: the backing image, if any
//! POOL/.subvol/cache/       downloads in progress (`<sha256>.part`, resumed with Range)
//! ```
//!
//! A running pull holds an exclusive `flock` on `POOL/.subvol`.

use crate::Error;
use crate::mirror::{MirrorError, nonce, write_atomic};
use crate::stream::Uuid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bookkeeping directory inside a pool.
pub const META_DIR: &str = ".subvol";
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// True when `path` is on a btrfs file system.
#[must_use]
pub fn is_btrfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == BTRFS_SUPER_MAGIC
    })
}

/// True when `path` is the root directory of a btrfs subvolume.
#[must_use]
pub fn is_subvolume(path: &Path) -> bool {
    is_btrfs(path) && fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

fn run(cmd: &mut Command) -> Result<String, MirrorError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| MirrorError::Command {
        cmd: line.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(MirrorError::Command {
            cmd: line,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn open_dir(p: &Path) -> Result<File, MirrorError> {
    File::open(p).map_err(|e| MirrorError::io("open", p, e))
}

fn split(path: &Path) -> Result<(PathBuf, &OsStr), MirrorError> {
    let name = path
        .file_name()
        .ok_or_else(|| MirrorError::Invalid(format!("{}: no final name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Copies `source` into `trees/name` for later deltas: a read-only subvolume when `trees` is on
/// btrfs (cheap to delete, shares extents with reflinks), else a directory. Made under a
/// temporary name and renamed when complete.
///
/// # Errors
/// `cp` or subvolume errors; nothing is left under the final name.
pub fn store_tree(source: &Path, trees: &Path, name: &str) -> Result<PathBuf, MirrorError> {
    let fin = trees.join(name);
    if fin.symlink_metadata().is_ok() {
        return Err(MirrorError::Invalid(format!(
            "{} exists already (a tree of an unpublished version?); remove it first",
            fin.display()
        )));
    }
    let tmp_name = format!(".tmp-{name}-{}", nonce());
    let tmp = trees.join(&tmp_name);
    let btrfs = is_btrfs(trees);
    if btrfs {
        subvol_ioctl::subvol_create(open_dir(trees)?, OsStr::new(&tmp_name))
            .map_err(|e| MirrorError::ioctl("create subvolume", &tmp, e))?;
    } else {
        fs::create_dir(&tmp).map_err(|e| MirrorError::io("create", &tmp, e))?;
    }
    let r = (|| {
        let mut src = source.as_os_str().to_owned();
        src.push("/.");
        run(Command::new("cp")
            .args(["-a", "--reflink=auto", "--sparse=auto", "--"])
            .arg(&src)
            .arg(&tmp))?;
        if btrfs {
            subvol_ioctl::subvol_set_readonly(open_dir(&tmp)?, true)
                .map_err(|e| MirrorError::ioctl("make read-only", &tmp, e))?;
        }
        fs::rename(&tmp, &fin).map_err(|e| MirrorError::io("rename", &fin, e))
    })();
    if let Err(e) = r {
        let _ = remove_tree(trees, &tmp_name);
        return Err(e);
    }
    Ok(fin)
}

/// Removes `trees/name` (a subvolume or a directory).
///
/// # Errors
/// I/O or ioctl errors.
pub fn remove_tree(trees: &Path, name: &str) -> Result<(), MirrorError> {
    let p = trees.join(name);
    if p.symlink_metadata().is_err() {
        return Ok(());
    }
    if is_subvolume(&p) {
        subvol_ioctl::subvol_destroy(open_dir(trees)?, OsStr::new(name))
            .map_err(|e| MirrorError::ioctl("delete subvolume", &p, e))
    } else {
        fs::remove_dir_all(&p).map_err(|e| MirrorError::io("remove", &p, e))
    }
}

/// One subvolume as `subvol list` / `show` report it.
#[derive(Clone, Debug, Serialize)]
pub struct SubvolEntry {
    /// Path (as found under the listed directory).
    pub path: PathBuf,
    /// Name (last component).
    pub name: String,
    /// Subvolume id.
    pub id: u64,
    /// UUID.
    pub uuid: String,
    /// UUID of the subvolume it is a snapshot of.
    pub parent_uuid: Option<String>,
    /// Name of that subvolume when it is in the same listing (or on the same file system for
    /// `show`).
    pub parent: Option<String>,
    /// UUID it was received from (a mirror version's UUID for pulled versions).
    pub received_uuid: Option<String>,
    /// Read-only?
    pub readonly: bool,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Creation time, Unix seconds.
    pub created_unix: i64,
    /// Generation (transaction of the last change).
    pub generation: u64,
    /// ctransid.
    pub ctransid: u64,
    /// The mirror version this pool recorded for it, if pulled.
    pub version: Option<String>,
}

fn opt_uuid(u: Uuid) -> Option<String> {
    (!u.is_nil()).then(|| u.to_string())
}

fn rfc3339(sec: i64) -> String {
    jiff::Timestamp::from_second(sec)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Reads a subvolume's identity.
///
/// # Errors
/// Not a subvolume, or the ioctl fails.
pub fn entry(path: &Path) -> Result<SubvolEntry, MirrorError> {
    if !is_subvolume(path) {
        return Err(MirrorError::NotFound(format!(
            "{} is not a btrfs subvolume",
            path.display()
        )));
    }
    let f = open_dir(path)?;
    let i = subvol_ioctl::subvol_info(&f).map_err(|e| MirrorError::ioctl("read", path, e))?;
    let created = i.otime.sec;
    Ok(SubvolEntry {
        path: path.to_path_buf(),
        name: String::from_utf8_lossy(&i.name).into_owned(),
        id: i.id,
        uuid: i.uuid.to_string(),
        parent_uuid: opt_uuid(i.parent_uuid),
        parent: None,
        received_uuid: opt_uuid(i.received_uuid),
        readonly: i.is_readonly(),
        created: rfc3339(created),
        created_unix: created,
        generation: i.generation,
        ctransid: i.ctransid,
        version: None,
    })
}

/// Lists the subvolumes under `dir` (recursively, not into `.subvol`), sorted by path; fills
/// `parent` from the listing and `version` from the pool state when `dir` is a pool.
///
/// # Errors
/// `dir` is not on btrfs, or cannot be read.
pub fn list(dir: &Path) -> Result<Vec<SubvolEntry>, MirrorError> {
    if !is_btrfs(dir) {
        return Err(MirrorError::Invalid(format!(
            "{} is not on a btrfs file system",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|e| MirrorError::io("read directory", &d, e))?;
        for e in rd.flatten() {
            let p = e.path();
            if depth == 0 && e.file_name() == META_DIR {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !m.is_dir() {
                continue;
            }
            if m.ino() == 256
                && let Ok(en) = entry(&p)
            {
                out.push(en);
            }
            if depth < 8 {
                stack.push((p, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let by_uuid: BTreeMap<String, String> = out
        .iter()
        .map(|e| (e.uuid.clone(), e.name.clone()))
        .collect();
    let state = PoolState::load(dir).unwrap_or_default();
    for e in &mut out {
        e.parent = e.parent_uuid.as_ref().and_then(|u| by_uuid.get(u).cloned());
        e.version = e.received_uuid.as_ref().and_then(|r| {
            state
                .versions
                .iter()
                .find(|v| &v.uuid == r)
                .map(|v| v.name.clone())
        });
    }
    Ok(out)
}

/// `show`: one subvolume, with its parent's path when found on the same file system and its
/// snapshots' paths.
#[derive(Clone, Debug, Serialize)]
pub struct SubvolDetail {
    /// The subvolume.
    #[serde(flatten)]
    pub entry: SubvolEntry,
    /// Path within the file system (from the top level).
    pub fs_path: String,
    /// Subvolumes that are snapshots of it (paths within the file system).
    pub snapshots: Vec<String>,
    /// Receive time, RFC 3339 UTC (received subvolumes).
    pub received: Option<String>,
}

/// Reads one subvolume's details.
///
/// # Errors
/// Not a subvolume; ioctl errors.
pub fn show(path: &Path) -> Result<SubvolDetail, MirrorError> {
    let mut entry = entry(path)?;
    let f = open_dir(path)?;
    let info = subvol_ioctl::subvol_info(&f).map_err(|e| MirrorError::ioctl("read", path, e))?;
    let fs_path = subvol_ioctl::subvol_path(&f, entry.id)
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    let mut snapshots = Vec::new();
    if let Ok(all) = subvol_ioctl::list_subvolumes(&f) {
        for r in &all {
            if !r.parent_uuid.is_nil() && r.parent_uuid == info.uuid {
                snapshots.push(
                    subvol_ioctl::subvol_path(&f, r.id)
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .unwrap_or_else(|_| String::from_utf8_lossy(&r.name).into_owned()),
                );
            }
            if !info.parent_uuid.is_nil() && r.uuid == info.parent_uuid {
                entry.parent = Some(
                    subvol_ioctl::subvol_path(&f, r.id)
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .unwrap_or_else(|_| String::from_utf8_lossy(&r.name).into_owned()),
                );
            }
        }
    }
    let received = (info.rtransid != 0).then(|| rfc3339(info.rtime.sec));
    Ok(SubvolDetail {
        entry,
        fs_path,
        snapshots,
        received,
    })
}

/// Snapshots subvolume `source` as `dest` (read-only if asked).
///
/// # Errors
/// `source` is not a subvolume, `dest` exists, ioctl errors.
pub fn snapshot(source: &Path, dest: &Path, readonly: bool) -> Result<SubvolEntry, MirrorError> {
    if !is_subvolume(source) {
        return Err(MirrorError::NotFound(format!(
            "{} is not a btrfs subvolume",
            source.display()
        )));
    }
    let (parent, name) = split(dest)?;
    if dest.symlink_metadata().is_ok() {
        return Err(MirrorError::Invalid(format!("{} exists", dest.display())));
    }
    subvol_ioctl::snapshot_create(open_dir(&parent)?, open_dir(source)?, name, readonly)
        .map_err(|e| MirrorError::ioctl("snapshot to", dest, e))?;
    entry(dest)
}

/// Deletes the subvolume `path`.
///
/// # Errors
/// Not a subvolume, contains subvolumes, ioctl errors.
pub fn delete(path: &Path) -> Result<SubvolEntry, MirrorError> {
    let e = entry(path)?;
    let (parent, name) = split(path)?;
    subvol_ioctl::subvol_destroy(open_dir(&parent)?, name)
        .map_err(|er| MirrorError::ioctl("delete subvolume", path, er))?;
    Ok(e)
}

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
    pub uuid: String,
    /// When (Unix seconds).
    pub pulled: u64,
}

/// `POOL/.subvol/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PoolState {
    /// Newest index serial seen, per signing key id (16 hex digits).
    #[serde(default)]
    pub indexes: BTreeMap<String, SeenIndex>,
    /// Versions pulled (retention only ever deletes these).
    #[serde(default)]
    pub versions: Vec<PulledVersion>,
}

impl PoolState {
    /// Reads the state of `pool` (default when there is none).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(pool: &Path) -> Result<PoolState, MirrorError> {
        let p = pool.join(META_DIR).join("state.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| MirrorError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PoolState::default()),
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
        let text =
            serde_json::to_string_pretty(self).map_err(|e| MirrorError::Invalid(e.to_string()))?;
        write_atomic(&dir, "state.json", text.as_bytes())
    }
}

/// `POOL/.subvol/pool.json`, written by `pool init`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PoolInfo {
    /// The backing image (None: the directory was on btrfs already).
    pub image: Option<PathBuf>,
    /// Image size in bytes.
    pub size: Option<u64>,
    /// When the pool was initialized (Unix seconds).
    pub created: u64,
}

/// What `pool init` did.
#[derive(Clone, Debug, Serialize)]
pub struct InitReport {
    /// The pool directory.
    pub path: PathBuf,
    /// Backing image, if any.
    pub image: Option<PathBuf>,
    /// A new image was created (mkfs.btrfs).
    pub created_image: bool,
    /// The image was mounted now.
    pub mounted: bool,
    /// Image size.
    pub size: Option<u64>,
}

/// The default image path for a pool at `path`: `PATH.img` next to it.
#[must_use]
pub fn default_image(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".img");
    PathBuf::from(s)
}

/// `subvol pool init PATH [--size] [--image]`: makes PATH a pool. When PATH is on btrfs
/// already, only the bookkeeping directory is made. Otherwise a sparse image file of `size`
/// bytes is created (if missing) and formatted with mkfs.btrfs, and loop-mounted on PATH.
/// Idempotent: a mounted pool is left alone; an unmounted one (after a reboot) is mounted again.
///
/// # Errors
/// PATH is a non-empty directory not on btrfs; image, mkfs or mount failures.
pub fn init(path: &Path, size: u64, image: Option<&Path>) -> Result<InitReport, Error> {
    fs::create_dir_all(path).map_err(|e| MirrorError::io("create", path, e))?;
    let path = fs::canonicalize(path).map_err(|e| MirrorError::io("resolve", path, e))?;
    let meta = path.join(META_DIR);
    let info_path = meta.join("pool.json");
    if is_btrfs(&path) {
        let known: Option<PoolInfo> = fs::read(&info_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if known.is_none() {
            fs::create_dir_all(&meta).map_err(|e| MirrorError::io("create", &meta, e))?;
            let info = PoolInfo {
                image: None,
                size: None,
                created: crate::mirror::now(),
            };
            let text = serde_json::to_string_pretty(&info)
                .map_err(|e| MirrorError::Invalid(e.to_string()))?;
            write_atomic(&meta, "pool.json", text.as_bytes())?;
        }
        let known = known.unwrap_or_default();
        return Ok(InitReport {
            path,
            image: known.image,
            created_image: false,
            mounted: false,
            size: known.size,
        });
    }
    let image = image.map_or_else(|| default_image(&path), Path::to_path_buf);
    let mut created_image = false;
    if image.symlink_metadata().is_err() {
        if fs::read_dir(&path)
            .map_err(|e| MirrorError::io("read directory", &path, e))?
            .next()
            .is_some()
        {
            return Err(MirrorError::Invalid(format!(
                "{} is not on btrfs and not empty: give an empty or new directory",
                path.display()
            ))
            .into());
        }
        if size < (256 << 20) {
            return Err(MirrorError::Invalid("--size must be at least 256M".into()).into());
        }
        if let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| MirrorError::io("create", dir, e))?;
        }
        let r = (|| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&image)
                .map_err(|e| MirrorError::io("create", &image, e))?;
            f.set_len(size)
                .map_err(|e| MirrorError::io("size", &image, e))?;
            drop(f);
            run(Command::new("mkfs.btrfs")
                .args(["-q", "-L", "subvol-pool"])
                .arg(&image))
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&image);
            return Err(e.into());
        }
        created_image = true;
    }
    run(Command::new("mount")
        .args(["-t", "btrfs", "-o", "loop"])
        .arg(&image)
        .arg(&path))?;
    let image = fs::canonicalize(&image).unwrap_or(image);
    let size = fs::metadata(&image).ok().map(|m| m.len());
    fs::create_dir_all(&meta).map_err(|e| MirrorError::io("create", &meta, e))?;
    let info = PoolInfo {
        image: Some(image.clone()),
        size,
        created: crate::mirror::now(),
    };
    if !info_path.exists() {
        let text =
            serde_json::to_string_pretty(&info).map_err(|e| MirrorError::Invalid(e.to_string()))?;
        write_atomic(&meta, "pool.json", text.as_bytes())?;
    }
    Ok(InitReport {
        path,
        image: Some(image),
        created_image,
        mounted: true,
        size,
    })
}

/// Subvolumes directly in `pool` whose received UUID is set: (name, received UUID, read-only).
///
/// # Errors
/// The pool cannot be read.
pub fn received_in(pool: &Path) -> Result<Vec<(String, Uuid, bool)>, MirrorError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(pool).map_err(|e| MirrorError::io("read directory", pool, e))?;
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.is_dir() || m.ino() != 256 || e.file_name() == META_DIR {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        let Ok(i) = subvol_ioctl::subvol_info(&f) else {
            continue;
        };
        let r = i.received_uuid;
        if !r.is_nil() {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                r,
                i.is_readonly(),
            ));
        }
    }
    out.sort();
    Ok(out)
}
