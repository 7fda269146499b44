//! Pools: directories on btrfs holding received versions as read-only subvolumes; subvolume
//! listing, snapshots, deletion, retention, and the loopback-image pool for hosts without btrfs.
//!
//! A pool is any directory on btrfs. `subvol pull` receives version `V` as the read-only
//! subvolume `POOL/V` and keeps its bookkeeping in `POOL/.subvol/`:
//!
//! ```text
//! POOL/.subvol/pool.json    written by `subvol pool init`: the backing image, if any
//! POOL/.subvol/state.json   pull's bookkeeping (see `mirror::state`)
//! POOL/.subvol/cache/       pull's downloads in progress
//! POOL/.subvol/content/     content index files, one per pulled version (see `content::pool`)
//! ```
//!
//! This module knows nothing of mirrors: `mirror` uses it, never the other way round.

use crate::recv::is_staging_name;
use crate::stream::Uuid;
use crate::util::fs::{PathError, write_atomic};
use crate::util::{human_size, nonce, unix_now};
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

/// The content index directory inside [`META_DIR`]: `<received-uuid>.idx` per subvolume.
pub const CONTENT_DIR: &str = "content";

use crate::util::fs::{is_btrfs, is_subvolume};

/// Errors of pool and subvolume management.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A btrfs ioctl failed.
    #[error("{op} {}", path.display())]
    Ioctl {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The ioctl error.
        #[source]
        source: subvol_ioctl::Error,
    },
    /// An external command (mkfs.btrfs, mount, cp) could not be started.
    #[error("cannot run {cmd}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An external command failed.
    #[error("{cmd} failed: {status}: {stderr}")]
    CommandFailed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The path is not a subvolume root.
    #[error("{} is not a btrfs subvolume", .0.display())]
    NotSubvolume(PathBuf),
    /// The path is not on btrfs.
    #[error("{} is not on a btrfs file system", .0.display())]
    NotBtrfs(PathBuf),
    /// A directory to make a pool in is neither on btrfs nor empty.
    #[error("{} is not on btrfs and not empty: give an empty or new directory", .0.display())]
    NotEmpty(PathBuf),
    /// The image size asked for is too small for btrfs.
    #[error("{}: --size {} is too small for a btrfs image: give at least 256M", image.display(), human_size(*size))]
    ImageTooSmall {
        /// The image that would be created.
        image: PathBuf,
        /// The size asked for.
        size: u64,
    },
    /// The destination exists.
    #[error("{} exists", .0.display())]
    Exists(PathBuf),
    /// A tree to store exists already.
    #[error("{} exists already (a tree of an unpublished version?); remove it first", .0.display())]
    TreeExists(PathBuf),
    /// The path has no final component.
    #[error("{}: no final name", .0.display())]
    NoName(PathBuf),
    /// `pool.json` cannot be encoded.
    #[error("encoding {}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl PoolError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> crate::ExitCode {
        use crate::ExitCode;
        match self {
            PoolError::Io(_)
            | PoolError::Ioctl { .. }
            | PoolError::Spawn { .. }
            | PoolError::CommandFailed { .. } => ExitCode::Io,
            PoolError::Encode { .. } => ExitCode::Failure,
            PoolError::NotSubvolume(_)
            | PoolError::NotBtrfs(_)
            | PoolError::NotEmpty(_)
            | PoolError::ImageTooSmall { .. }
            | PoolError::Exists(_)
            | PoolError::TreeExists(_)
            | PoolError::NoName(_) => ExitCode::Failure,
        }
    }

    fn ioctl(op: &'static str, path: impl Into<PathBuf>, source: subvol_ioctl::Error) -> Self {
        PoolError::Ioctl {
            op,
            path: path.into(),
            source,
        }
    }
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> PoolError {
    move |e| PathError::new(op, path, e).into()
}

fn run(cmd: &mut Command) -> Result<String, PoolError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| PoolError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(PoolError::CommandFailed {
            cmd: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the OS error ("No such file or directory", ...) when `path` cannot be reached:
/// checked first, so a missing path is not reported as "not on btrfs" or "not a subvolume".
fn must_exist(path: &Path) -> Result<(), PoolError> {
    fs::metadata(path).map(drop).map_err(io_err("open", path))
}

fn open_dir(p: &Path) -> Result<File, PoolError> {
    File::open(p).map_err(io_err("open", p))
}

fn split(path: &Path) -> Result<(PathBuf, &OsStr), PoolError> {
    let name = path
        .file_name()
        .ok_or_else(|| PoolError::NoName(path.to_path_buf()))?;
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
pub fn store_tree(source: &Path, trees: &Path, name: &str) -> Result<PathBuf, PoolError> {
    let fin = trees.join(name);
    if fin.symlink_metadata().is_ok() {
        return Err(PoolError::TreeExists(fin));
    }
    let tmp_name = format!(".tmp-{name}-{}", nonce());
    let tmp = trees.join(&tmp_name);
    let btrfs = is_btrfs(trees);
    if btrfs {
        subvol_ioctl::subvol_create(open_dir(trees)?, OsStr::new(&tmp_name))
            .map_err(|e| PoolError::ioctl("create subvolume", &tmp, e))?;
    } else {
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
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
                .map_err(|e| PoolError::ioctl("make read-only", &tmp, e))?;
        }
        fs::rename(&tmp, &fin).map_err(io_err("rename", &fin))
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
pub fn remove_tree(trees: &Path, name: &str) -> Result<(), PoolError> {
    let p = trees.join(name);
    if p.symlink_metadata().is_err() {
        return Ok(());
    }
    if is_subvolume(&p) {
        subvol_ioctl::subvol_destroy(open_dir(trees)?, OsStr::new(name))
            .map_err(|e| PoolError::ioctl("delete subvolume", &p, e))
    } else {
        fs::remove_dir_all(&p).map_err(io_err("remove", &p))
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
    pub uuid: Uuid,
    /// UUID of the subvolume it is a snapshot of.
    pub parent_uuid: Option<Uuid>,
    /// Name of that subvolume when it is in the same listing (or on the same file system for
    /// `show`).
    pub parent: Option<String>,
    /// UUID it was received from (a mirror version's UUID for pulled versions).
    pub received_uuid: Option<Uuid>,
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
    /// The mirror version pulled as this subvolume, if pulled (filled by the caller from
    /// `mirror::PullState`; [`entry`] and [`list`] leave it empty).
    pub version: Option<String>,
}

fn opt_uuid(u: Uuid) -> Option<Uuid> {
    (!u.is_nil()).then_some(u)
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
pub fn entry(path: &Path) -> Result<SubvolEntry, PoolError> {
    must_exist(path)?;
    if !is_subvolume(path) {
        return Err(PoolError::NotSubvolume(path.to_path_buf()));
    }
    let f = open_dir(path)?;
    let i = subvol_ioctl::subvol_info(&f).map_err(|e| PoolError::ioctl("read", path, e))?;
    let created = i.otime.sec;
    Ok(SubvolEntry {
        path: path.to_path_buf(),
        name: String::from_utf8_lossy(&i.name).into_owned(),
        id: i.id,
        uuid: i.uuid,
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

/// Lists the subvolumes under `dir` (recursively, not into `.subvol` nor into receives' staging
/// subvolumes), sorted by path; fills
/// `parent` from the listing (`version` is left for the caller that knows pull's records).
///
/// # Errors
/// `dir` is not on btrfs, or cannot be read.
pub fn list(dir: &Path) -> Result<Vec<SubvolEntry>, PoolError> {
    must_exist(dir)?;
    if !is_btrfs(dir) {
        return Err(PoolError::NotBtrfs(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(io_err("read directory", &d))?;
        for e in rd.flatten() {
            let p = e.path();
            if depth == 0 && e.file_name() == META_DIR {
                continue;
            }
            // A receive's staging subvolume (in progress, or left by a kill) is not a version.
            if is_staging_name(Path::new(&e.file_name())) {
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
    let by_uuid: BTreeMap<Uuid, String> = out.iter().map(|e| (e.uuid, e.name.clone())).collect();
    for e in &mut out {
        e.parent = e.parent_uuid.as_ref().and_then(|u| by_uuid.get(u).cloned());
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
pub fn show(path: &Path) -> Result<SubvolDetail, PoolError> {
    let mut entry = entry(path)?;
    let f = open_dir(path)?;
    let info = subvol_ioctl::subvol_info(&f).map_err(|e| PoolError::ioctl("read", path, e))?;
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
pub fn snapshot(source: &Path, dest: &Path, readonly: bool) -> Result<SubvolEntry, PoolError> {
    must_exist(source)?;
    if !is_subvolume(source) {
        return Err(PoolError::NotSubvolume(source.to_path_buf()));
    }
    let (parent, name) = split(dest)?;
    if dest.symlink_metadata().is_ok() {
        return Err(PoolError::Exists(dest.to_path_buf()));
    }
    subvol_ioctl::snapshot_create(open_dir(&parent)?, open_dir(source)?, name, readonly)
        .map_err(|e| PoolError::ioctl("snapshot to", dest, e))?;
    entry(dest)
}

/// Deletes the subvolume `path`, and its content index file when it is in a pool.
///
/// # Errors
/// Not a subvolume, contains subvolumes, ioctl errors.
pub fn delete(path: &Path) -> Result<SubvolEntry, PoolError> {
    let e = entry(path)?;
    let (parent, name) = split(path)?;
    subvol_ioctl::subvol_destroy(open_dir(&parent)?, name)
        .map_err(|er| PoolError::ioctl("delete subvolume", path, er))?;
    if let Some(uuid) = e.received_uuid {
        // Another subvolume received as the same UUID may still be there: the next pull
        // indexes it again.
        let idx = parent
            .join(META_DIR)
            .join(CONTENT_DIR)
            .join(format!("{uuid}.idx"));
        // Left behind only if removal fails: the next pull drops it.
        let _ = fs::remove_file(&idx);
    }
    Ok(e)
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
pub fn init(path: &Path, size: u64, image: Option<&Path>) -> Result<InitReport, PoolError> {
    // Inputs first: a size too small for a new image is refused before PATH is created.
    let image_path = image.map_or_else(|| default_image(path), Path::to_path_buf);
    let on_btrfs = path
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .is_some_and(is_btrfs);
    if !on_btrfs && image_path.symlink_metadata().is_err() && size < MIN_IMAGE_SIZE {
        return Err(PoolError::ImageTooSmall {
            image: image_path,
            size,
        });
    }
    let created = path.symlink_metadata().is_err();
    fs::create_dir_all(path).map_err(io_err("create", path))?;
    let r = init_in(path, size, image);
    if r.is_err() && created {
        // Leave no trace of a failed init: PATH did not exist before (remove_dir fails, and
        // keeps it, if anything was put in it or is mounted on it).
        let _ = fs::remove_dir(path);
    }
    r
}

/// Smallest image `pool init` makes (mkfs.btrfs needs about 114 MiB; leave room for data).
pub const MIN_IMAGE_SIZE: u64 = 256 << 20;

fn init_in(path: &Path, size: u64, image: Option<&Path>) -> Result<InitReport, PoolError> {
    let path = fs::canonicalize(path).map_err(io_err("resolve", path))?;
    let meta = path.join(META_DIR);
    let info_path = meta.join("pool.json");
    if is_btrfs(&path) {
        let known: Option<PoolInfo> = fs::read(&info_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if known.is_none() {
            fs::create_dir_all(&meta).map_err(io_err("create", &meta))?;
            let info = PoolInfo {
                image: None,
                size: None,
                created: unix_now(),
            };
            let text = serde_json::to_string_pretty(&info).map_err(|source| PoolError::Encode {
                path: info_path.clone(),
                source,
            })?;
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
            .map_err(io_err("read directory", &path))?
            .next()
            .is_some()
        {
            return Err(PoolError::NotEmpty(path));
        }
        if size < MIN_IMAGE_SIZE {
            return Err(PoolError::ImageTooSmall { image, size });
        }
        if let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let r = (|| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&image)
                .map_err(io_err("create", &image))?;
            f.set_len(size).map_err(io_err("size", &image))?;
            drop(f);
            run(Command::new("mkfs.btrfs")
                .args(["-q", "-L", "subvol-pool"])
                .arg(&image))
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&image);
            return Err(e);
        }
        created_image = true;
    }
    if let Err(e) = run(Command::new("mount")
        .args(["-t", "btrfs", "-o", "loop"])
        .arg(&image)
        .arg(&path))
    {
        if created_image {
            let _ = fs::remove_file(&image);
        }
        return Err(e);
    }
    let image = fs::canonicalize(&image).unwrap_or(image);
    let size = fs::metadata(&image).ok().map(|m| m.len());
    fs::create_dir_all(&meta).map_err(io_err("create", &meta))?;
    let info = PoolInfo {
        image: Some(image.clone()),
        size,
        created: unix_now(),
    };
    if !info_path.exists() {
        let text = serde_json::to_string_pretty(&info).map_err(|source| PoolError::Encode {
            path: info_path.clone(),
            source,
        })?;
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
/// Staging subvolumes of receives (`recv::STAGING_PREFIX`) are never listed.
///
/// # Errors
/// The pool cannot be read.
pub fn received_in(pool: &Path) -> Result<Vec<(String, Uuid, bool)>, PoolError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(pool).map_err(io_err("read directory", pool))?;
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        // A staging subvolume left by a kill between the commit steps may be read-only with
        // its received UUID set, yet it is no version: it has not been renamed into place.
        if !m.is_dir()
            || m.ino() != 256
            || e.file_name() == META_DIR
            || is_staging_name(Path::new(&e.file_name()))
        {
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
