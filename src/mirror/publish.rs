//! `subvol publish`: adds a version to a repository directory.
//!
//! 1. Lock the repository (`flock` on the directory), read its index.
//! 2. Copy SOURCE into the tree store (`TREES/<version>`: a read-only subvolume when the store
//!    is on btrfs, else a directory; `cp -a --reflink=auto`), and check the copy has the same
//!    tree UUID as SOURCE. Streams are made from the copy, which nothing changes afterwards.
//! 3. Write a full stream and deltas from the versions 1, 2, 4, 8, ... positions back (those
//!    whose tree is still in the store; none with `--no-deltas`): tree send → sign → zstd →
//!    `streams/<sha256>.zst` (temporary name, fsync, rename). The full stream is compressed as
//!    independent zstd frames cut along its file data ([`FramingWriter`]), described by a
//!    content map `streams/<sha256>.map` that the index lists with it: pulls can fetch only
//!    the frames whose data they lack. Deltas are one multi-threaded-mode zstd frame.
//!    The streams are made in parallel (one thread per core, [`PublishOptions::threads`]), and
//!    each is compressed on all of them: the full stream's frames by a pool of workers, the
//!    deltas by zstd's own workers.
//!
//! Publishing is reproducible: the same trees, key and settings give byte-identical stream and
//! map files, whatever the number of threads. The signed streams' ids are derived from the key
//! and the stream's identity ([`stream_identity`]) instead of drawn at random; the streams carry
//! mtimes as atimes and ctimes ([`TreeSendOptions::mtime_only`]: the stored copy's ctimes are
//! when it was made, atimes change when a tree is read); zstd's multi-threaded mode gives the same frame for any number of workers (at
//! least one), and the full stream's frames are independent.
//! 4. Retire versions beyond `--prune N` (their index entries, streams from and to them, their
//!    trees).
//! 5. Write the index with serial + 1 and a new expiry atomically; only then delete stream
//!    and map files referenced neither by the new index nor by the previous one (a mirror
//!    client that read the previous index can still fetch what it names).

use super::MirrorError;
use super::index::{
    INDEX_FILE, Index, MapFile, STREAMS_DIR, Sha256Digest, StreamFile, Version, valid_version_name,
};
use super::plan::delta_sources;
use crate::Error;
use crate::content::{ContentMap, FramingWriter, ReuseFrames};
use crate::pipeline::{Hook, Totals};
use crate::send::{TreeSendOptions, Uuid, send_tree, tree_uuid};
use crate::sign::{SecretKey, Signer, derived_stream_id};
use crate::util::fs::{DirLock, lock_dir, sync_dir, write_atomic};
use crate::util::{nonce, unix_now};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// What to publish.
#[derive(Debug)]
pub struct PublishOptions {
    /// Repository directory (created if missing).
    pub repo: PathBuf,
    /// Signing key.
    pub key: SecretKey,
    /// The tree to publish (None: only prune and/or re-sign the index).
    pub source: Option<PathBuf>,
    /// Version name (default: one more than the highest numeric version name, or 1).
    pub version: Option<String>,
    /// Tree store (default: `REPO.trees` next to the repository).
    pub trees: Option<PathBuf>,
    /// Keep only the newest N versions.
    pub prune_keep: Option<usize>,
    /// Seconds until the index expires.
    pub valid_for: u64,
    /// zstd level.
    pub level: i32,
    /// Send stream protocol version (1 or 2).
    pub proto: u32,
    /// Write deltas too (false: the full stream only).
    pub deltas: bool,
    /// Threads making and compressing streams (0: one per core). Output does not depend on it.
    pub threads: usize,
    /// Release keys signing `release/<serial>.json` in a repository with trust metadata
    /// (`root/N.json`, see [`crate::trust`]); none: `key`, when the root lists it as one.
    pub release_keys: Vec<SecretKey>,
    /// The timestamp key: also writes `timestamp.json` naming the new release.
    pub timestamp_key: Option<SecretKey>,
    /// Seconds the timestamp stays valid.
    pub timestamp_valid_for: u64,
}

/// The trust metadata a publish wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrustPublished {
    /// The release metadata file.
    pub release: crate::trust::ReleaseRef,
    /// Whether its signatures meet the release threshold (else add more with
    /// `subvol trust sign`, then write the timestamp).
    pub threshold_met: bool,
    /// The timestamp written, if a timestamp key was given.
    pub timestamp: Option<crate::trust::Timestamp>,
}

/// Progress of a publish.
#[derive(Debug)]
pub enum PublishEvent<'a> {
    /// The tree copy is being made.
    StoringTree {
        /// Where.
        path: &'a Path,
    },
    /// A stream is being written.
    Stream {
        /// From version (None: full).
        from: Option<&'a str>,
        /// To version.
        to: &'a str,
        /// Stream bytes so far.
        bytes: u64,
    },
    /// A stream file was written.
    StreamDone(&'a StreamFile),
    /// A delta could not be made because the old version's tree is not in the store.
    MissingTree {
        /// The version.
        version: &'a str,
        /// Expected path.
        path: &'a Path,
    },
}

/// What a publish did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PublishReport {
    /// The repository.
    pub repo: PathBuf,
    /// The new index serial.
    pub serial: u64,
    /// Its expiry (Unix seconds).
    pub expires: u64,
    /// The version added, if any.
    pub version: Option<Version>,
    /// Stream files written.
    pub streams: Vec<StreamFile>,
    /// Versions retired.
    pub pruned: Vec<String>,
    /// Stream files deleted.
    pub removed_files: Vec<String>,
    /// The tree store.
    pub trees: PathBuf,
    /// Total size of the stream and map files the index lists.
    pub repo_bytes: u64,
    /// Versions now listed.
    pub versions: usize,
    /// Trust metadata written (a repository with a root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustPublished>,
}

/// Where the tree store is by default: `REPO.trees` next to the repository.
#[must_use]
pub fn default_trees(repo: &Path) -> PathBuf {
    let canon = fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let name = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".into());
    canon
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}.trees"))
}

/// A random (version 4) UUID: a new repository's identity.
pub(crate) fn random_uuid() -> Result<Uuid, MirrorError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        MirrorError::io(
            "read randomness for",
            "getrandom",
            io::Error::other(e.to_string()),
        )
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(Uuid::from(b))
}

/// Counts and hashes what passes.
struct HashWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Publishes (see the module docs).
///
/// # Errors
/// Key, tree, send, signing and I/O errors; nothing is half-visible: stream files appear under
/// their final names only complete, and the index is replaced in one rename.
pub fn publish(
    o: &PublishOptions,
    on_event: &mut dyn FnMut(PublishEvent<'_>),
) -> Result<PublishReport, Error> {
    let repo = &o.repo;
    // Inputs first: a failed publish must not leave a new repository directory behind.
    if let Some(source) = &o.source
        && !source.is_dir()
    {
        return Err(MirrorError::SourceNotDirectory(source.clone()).into());
    }
    if let Some(v) = &o.version
        && !valid_version_name(v)
    {
        return Err(MirrorError::InvalidVersionName(v.clone()).into());
    }
    fs::create_dir_all(repo.join(STREAMS_DIR))
        .map_err(|e| MirrorError::io("create", repo.join(STREAMS_DIR), e))?;
    let _lock: DirLock = lock_dir(repo).map_err(|e| MirrorError::lock(e, "publish"))?;
    let index_path = repo.join(INDEX_FILE);
    let previous = match fs::read(&index_path) {
        Ok(b) => Some(Index::open_unverified(&b)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(MirrorError::io("read", &index_path, e).into()),
    };
    // A repository with trust metadata: its root says who signs releases and streams; check
    // the keys before anything is written.
    let root = crate::trust::newest_root(repo).map_err(MirrorError::Trust)?;
    let release_keys: Vec<&SecretKey> = match &root {
        None => Vec::new(),
        Some(root) => {
            let stream_id = o.key.public().id().to_string();
            if !root.roles.streams.keyids.contains(&stream_id) {
                return Err(MirrorError::Trust(crate::trust::TrustError::Usage(format!(
                    "key {stream_id} is not a stream key of {}: pulls would refuse its streams",
                    crate::trust::root_path(repo, root.version).display()
                )))
                .into());
            }
            if o.release_keys.is_empty() {
                if root.roles.release.keyids.contains(&stream_id) {
                    vec![&o.key]
                } else {
                    return Err(MirrorError::Trust(crate::trust::TrustError::Usage(format!(
                        "{} has trust metadata: give the release key(s) (--release-key)",
                        repo.display()
                    )))
                    .into());
                }
            } else {
                o.release_keys.iter().collect()
            }
        }
    };
    let mut index = previous.clone().unwrap_or(Index {
        repository: None,
        serial: 0,
        created: 0,
        expires: 0,
        versions: Vec::new(),
        streams: Vec::new(),
    });
    let trees = o.trees.clone().unwrap_or_else(|| default_trees(repo));
    let mut written = Vec::new();
    let mut added = None;

    if let Some(source) = &o.source {
        if !source.is_dir() {
            return Err(MirrorError::SourceNotDirectory(source.clone()).into());
        }
        let name = match &o.version {
            Some(v) => v.clone(),
            None => {
                let max = index
                    .versions
                    .iter()
                    .filter_map(|v| v.name.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0);
                (max + 1).to_string()
            }
        };
        if !valid_version_name(&name) {
            return Err(MirrorError::InvalidVersionName(name).into());
        }
        if index.position(&name).is_some() {
            return Err(MirrorError::AlreadyPublished {
                version: name,
                repo: repo.clone(),
            }
            .into());
        }
        let uuid = tree_uuid(source)?;
        if let Some(p) = index.by_uuid(&uuid) {
            return Err(MirrorError::AlreadyPublishedTree {
                tree: source.clone(),
                version: index.versions[p].name.clone(),
                uuid,
            }
            .into());
        }
        fs::create_dir_all(&trees).map_err(|e| MirrorError::io("create", &trees, e))?;
        let stored = trees.join(&name);
        // A tree under this name that the index does not list is left over from a publish
        // that failed before writing its index.
        let _ = fs::remove_file(trees.join(frames_note(&name)));
        crate::pool::remove_tree(&trees, &name)?;
        on_event(PublishEvent::StoringTree { path: &stored });
        crate::pool::store_tree(source, &trees, &name)?;
        let stored_uuid = tree_uuid(&stored)?;
        if stored_uuid != uuid {
            let _ = crate::pool::remove_tree(&trees, &name);
            return Err(MirrorError::CopyDiffers {
                copy: stored,
                tree: source.clone(),
                copy_uuid: stored_uuid,
                uuid,
            }
            .into());
        }
        let n = index.versions.len();
        let version = Version {
            name: name.clone(),
            uuid,
            published: unix_now(),
        };
        // The full stream first, then the deltas from the versions 1, 2, 4, ... back.
        let mut jobs: Vec<Option<(PathBuf, Uuid, &str)>> = vec![None];
        let sources = if o.deltas {
            delta_sources(n)
        } else {
            Vec::new()
        };
        for s in sources {
            let old = &index.versions[s];
            let old_tree = trees.join(&old.name);
            if !old_tree.is_dir() {
                on_event(PublishEvent::MissingTree {
                    version: &old.name,
                    path: &old_tree,
                });
                continue;
            }
            jobs.push(Some((old_tree, old.uuid, old.name.as_str())));
        }
        let reuse = previous_frames(o, &index, &trees);
        let r = write_streams(o, &jobs, &stored, uuid, &name, reuse, on_event);
        written = r.written;
        let r = match r.error {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let Err(e) = r {
            // The index never named them: remove what was written and the stored tree.
            for f in &written {
                for p in files_of(f) {
                    let _ = fs::remove_file(repo.join(p));
                }
            }
            let _ = crate::pool::remove_tree(&trees, &name);
            return Err(e);
        }
        index.versions.push(version.clone());
        index.streams.extend(written.iter().cloned());
        added = Some(version);
    }

    let mut pruned = Vec::new();
    if let Some(keep) = o.prune_keep {
        let keep = keep.max(1);
        if index.versions.len() > keep {
            let cut = index.versions.len() - keep;
            pruned = index
                .versions
                .drain(..cut)
                .map(|v| v.name)
                .collect::<Vec<_>>();
            let gone: HashSet<&str> = pruned.iter().map(String::as_str).collect();
            index.streams.retain(|s| {
                !gone.contains(s.to.as_str())
                    && !s.from.as_deref().is_some_and(|f| gone.contains(f))
            });
        }
    }

    if let Some(root) = &root {
        match index.repository {
            None => index.repository = Some(root.repository.uuid),
            Some(u) if u != root.repository.uuid => {
                return Err(MirrorError::Trust(crate::trust::TrustError::Usage(format!(
                    "index.json names repository {u}, the root {}",
                    root.repository.uuid
                )))
                .into());
            }
            Some(_) => {}
        }
    }
    if index.repository.is_none() {
        index.repository = Some(random_uuid()?);
    }
    let t = unix_now();
    index.serial = previous.as_ref().map_or(0, |p| p.serial) + 1;
    index.created = t;
    index.expires = t.saturating_add(o.valid_for);
    index.validate()?;
    let text = index.sign(&o.key)?;
    // Release metadata and timestamp first: the legacy index, for older clients, last.
    let trust = match &root {
        None => None,
        Some(_) => {
            let (release, threshold_met) = crate::trust::write_release(repo, &index, &release_keys)
                .map_err(MirrorError::Trust)?;
            let timestamp = match (&o.timestamp_key, threshold_met) {
                (Some(k), true) => Some(
                    crate::trust::write_timestamp(repo, k, o.timestamp_valid_for, t)
                        .map_err(MirrorError::Trust)?,
                ),
                _ => None,
            };
            Some(TrustPublished {
                release,
                threshold_met,
                timestamp,
            })
        }
    };
    write_atomic(repo, INDEX_FILE, text.as_bytes())?;
    if let Some(v) = &added {
        // Without it the next publish compresses all of its full stream (no error).
        let _ = fs::write(trees.join(frames_note(&v.name)), compression_note(o.level));
    }

    // Garbage: files named by neither the new nor the previous index, and stale temporaries.
    let mut keep: HashSet<&str> = index.streams.iter().flat_map(files_of).collect();
    if let Some(p) = &previous {
        keep.extend(p.streams.iter().flat_map(files_of));
    }
    let mut removed_files = Vec::new();
    let dir = repo.join(STREAMS_DIR);
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{STREAMS_DIR}/{name}");
            if keep.contains(rel.as_str()) {
                continue;
            }
            if fs::remove_file(e.path()).is_ok() && !name.starts_with('.') {
                removed_files.push(rel);
            }
        }
    }
    for v in &pruned {
        let _ = crate::pool::remove_tree(&trees, v);
        let _ = fs::remove_file(trees.join(frames_note(v)));
    }
    Ok(PublishReport {
        repo: repo.clone(),
        serial: index.serial,
        expires: index.expires,
        version: added,
        streams: written,
        pruned,
        removed_files,
        trees,
        repo_bytes: index
            .streams
            .iter()
            .map(|s| s.size + s.map.as_ref().map_or(0, |m| m.size))
            .sum(),
        versions: index.versions.len(),
        trust,
    })
}

/// The repository files of a stream: the stream file and its map.
fn files_of(s: &StreamFile) -> impl Iterator<Item = &str> {
    std::iter::once(s.path.as_str()).chain(s.map.as_ref().map(|m| m.path.as_str()))
}

/// What [`write_streams`] did: the files written, in the order of the jobs, and the first
/// error (the others were stopped).
struct Written {
    written: Vec<StreamFile>,
    error: Option<Error>,
}

/// A worker's report to the thread that calls `on_event`.
enum StreamMsg {
    /// Stream bytes so far of job `.0`.
    Progress(usize, u64),
    /// Job `.0` ended.
    Done(usize, Result<StreamFile, Error>),
}

/// Threads to use: [`PublishOptions::threads`], or one per core.
fn thread_count(o: &PublishOptions) -> usize {
    match o.threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    }
}

/// Writes the streams of `jobs` (None: the full stream, Some: a delta from that tree, UUID and
/// version) on up to [`thread_count`] threads. A failure stops the other streams at their next
/// progress tick; the files already written are returned with the error (for removal).
fn write_streams(
    o: &PublishOptions,
    jobs: &[Option<(PathBuf, Uuid, &str)>],
    source: &Path,
    uuid: Uuid,
    name: &str,
    reuse: Option<ReuseFrames>,
    on_event: &mut dyn FnMut(PublishEvent<'_>),
) -> Written {
    // For the full stream (job 0), taken by the worker that makes it.
    let reuse = std::sync::Mutex::new(reuse);
    let threads = thread_count(o);
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let mut done: Vec<Option<StreamFile>> = jobs.iter().map(|_| None).collect();
    let mut error = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads.min(jobs.len()) {
            let tx = tx.clone();
            let (next, cancel, reuse) = (&next, &cancel, &reuse);
            scope.spawn(move || {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs.len() || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let parent = jobs[j].as_ref().map(|(p, u, n)| (p.as_path(), *u, *n));
                    let mut tick = |bytes| {
                        let _ = tx.send(StreamMsg::Progress(j, bytes));
                    };
                    let reuse = match parent {
                        None => reuse
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take(),
                        Some(_) => None,
                    };
                    let r = write_stream(
                        o, parent, source, uuid, name, threads, reuse, cancel, &mut tick,
                    );
                    let failed = r.is_err();
                    // Sent before the others are cancelled: the first error received is this
                    // one, not a cancellation it caused.
                    let _ = tx.send(StreamMsg::Done(j, r));
                    if failed {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(tx);
        for m in rx {
            match m {
                StreamMsg::Progress(j, bytes) => on_event(PublishEvent::Stream {
                    from: jobs[j].as_ref().map(|p| p.2),
                    to: name,
                    bytes,
                }),
                StreamMsg::Done(j, Ok(f)) => {
                    on_event(PublishEvent::StreamDone(&f));
                    done[j] = Some(f);
                }
                StreamMsg::Done(_, Err(e)) => {
                    error.get_or_insert(e);
                }
            }
        }
    });
    Written {
        written: done.into_iter().flatten().collect(),
        error,
    }
}

/// The note next to a stored tree saying how its full stream's frames were compressed.
fn frames_note(version: &str) -> String {
    format!(".{version}.frames")
}

/// What [`frames_note`] says: frames are copied only between files of the same zstd version
/// and level, which compress the same data to the same bytes.
fn compression_note(level: i32) -> String {
    format!("zstd {} level {level}\n", zstd::zstd_safe::version_number())
}

/// The full stream of the newest listed version, to copy unchanged DATA frames from ([`ReuseFrames`]
/// checks each), if its note says it was compressed as this publish compresses.
fn previous_frames(o: &PublishOptions, index: &Index, trees: &Path) -> Option<ReuseFrames> {
    let last = index.versions.last()?;
    let note = fs::read_to_string(trees.join(frames_note(&last.name))).ok()?;
    if note != compression_note(o.level) {
        return None;
    }
    let s = index
        .streams
        .iter()
        .find(|s| s.from.is_none() && s.to == last.name)?;
    let map = fs::read(o.repo.join(&s.map.as_ref()?.path)).ok()?;
    let map = ContentMap::decode(&map, s.stream_bytes, s.size).ok()?;
    let file = File::open(o.repo.join(&s.path)).ok()?;
    Some(ReuseFrames::new(file, map))
}

/// What a signed stream of publish is, for its derived stream id ([`derived_stream_id`]):
/// the protocol version, the tree UUID, the parent's (deltas), the subvolume name and this
/// sender's version. The tree UUIDs are digests of the trees' metadata, so the same identity
/// means the same stream except for trees whose metadata is the same but some file's bytes
/// differ (publish refuses a tree whose UUID a repository already lists); the id's own rule
/// (docs/signed-streams.md) explains why even then no splice verifies.
fn stream_identity(proto: u32, uuid: Uuid, parent: Option<Uuid>, name: &str) -> Vec<u8> {
    let mut id = b"subvol publish stream\0".to_vec();
    id.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    id.push(0);
    id.extend_from_slice(&proto.to_le_bytes());
    id.extend_from_slice(&uuid.0);
    match parent {
        None => id.push(0),
        Some(p) => {
            id.push(1);
            id.extend_from_slice(&p.0);
        }
    }
    id.extend_from_slice(name.as_bytes());
    id
}

/// Tree send (full, or incremental from `parent`) → sign → zstd → `streams/<sha256>.zst`, and
/// for a full stream its map `streams/<sha256>.map`. Compression uses `threads` workers.
#[allow(clippy::too_many_arguments)]
fn write_stream(
    o: &PublishOptions,
    parent: Option<(&Path, Uuid, &str)>,
    source: &Path,
    uuid: Uuid,
    name: &str,
    threads: usize,
    reuse: Option<ReuseFrames>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<StreamFile, Error> {
    let dir = o.repo.join(STREAMS_DIR);
    let tmp = dir.join(format!(".tmp-{}-{}.zst", std::process::id(), nonce()));
    let r = write_stream_to(
        o, parent, source, uuid, name, &tmp, threads, reuse, cancel, progress,
    );
    let written = r.and_then(|(sha, size, stream_bytes, map)| {
        // The map goes first: a stream file under its final name always has its map.
        let map = map.map(|m| write_map(&dir, &m)).transpose()?;
        let rel = format!("{STREAMS_DIR}/{sha}.zst");
        let fin = o.repo.join(&rel);
        if let Err(e) = fs::rename(&tmp, &fin) {
            if let Some(m) = &map {
                let _ = fs::remove_file(o.repo.join(&m.path));
            }
            return Err(MirrorError::io("rename", &fin, e).into());
        }
        Ok(StreamFile {
            path: rel,
            sha256: sha,
            size,
            stream_bytes,
            from: parent.map(|p| p.2.to_string()),
            to: name.to_string(),
            map,
        })
    });
    match written {
        Ok(f) => {
            sync_dir(&dir)?;
            Ok(f)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes a map as `streams/<sha256>.map` (atomically, fsynced).
fn write_map(dir: &Path, map: &ContentMap) -> Result<MapFile, Error> {
    let bytes = map.encode();
    let sha = Sha256Digest(Sha256::digest(&bytes).into());
    let name = format!("{sha}.map");
    write_atomic(dir, &name, &bytes)?;
    Ok(MapFile {
        path: format!("{STREAMS_DIR}/{name}"),
        sha256: sha,
        size: bytes.len() as u64,
    })
}

/// Writes the stream file under `tmp`; returns its SHA-256, size, stream bytes and (full
/// streams) content map.
#[allow(clippy::too_many_arguments)]
fn write_stream_to(
    o: &PublishOptions,
    parent: Option<(&Path, Uuid, &str)>,
    source: &Path,
    uuid: Uuid,
    name: &str,
    tmp: &Path,
    threads: usize,
    reuse: Option<ReuseFrames>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(Sha256Digest, u64, u64, Option<ContentMap>), Error> {
    let file = File::create(tmp).map_err(|e| MirrorError::io("create", tmp, e))?;
    let hw = HashWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let compress_err = |e| MirrorError::io("compress into", tmp, e);
    let (hw, stream_bytes, map) = if parent.is_none() {
        let fw = FramingWriter::with_workers(hw, o.level, threads, reuse)
            .map_err(|e| MirrorError::io("start zstd for", tmp, e))?;
        let (fw, stream_bytes) = sign_into(o, parent, source, uuid, name, fw, cancel, progress)?;
        let (hw, map) = fw.finish().map_err(compress_err)?;
        if map.stream_bytes != stream_bytes || map.comp_bytes != hw.bytes {
            return Err(MirrorError::Bug(format!(
                "content map of {} covers {} stream and {} file bytes, not {stream_bytes} and {}",
                tmp.display(),
                map.stream_bytes,
                map.comp_bytes,
                hw.bytes
            ))
            .into());
        }
        (hw, stream_bytes, Some(map))
    } else {
        // zstd's multi-threaded mode, even with one worker: its output is the same for any
        // number of workers (single-threaded mode's is not the same as it).
        let workers = u32::try_from(threads).unwrap_or(u32::MAX);
        let mut enc = zstd::stream::write::Encoder::new(hw, o.level)
            .map_err(|e| MirrorError::io("start zstd for", tmp, e))?;
        enc.multithread(workers.max(1))
            .map_err(|e| MirrorError::io("start zstd workers for", tmp, e))?;
        let (enc, stream_bytes) = sign_into(o, parent, source, uuid, name, enc, cancel, progress)?;
        (enc.finish().map_err(compress_err)?, stream_bytes, None)
    };
    let sha = Sha256Digest(hw.hasher.finalize().into());
    let size = hw.bytes;
    let file = hw
        .inner
        .into_inner()
        .map_err(|e| MirrorError::io("write", tmp, e.into_error()))?;
    file.sync_all()
        .map_err(|e| MirrorError::io("fsync", tmp, e))?;
    Ok((sha, size, stream_bytes, map))
}

/// Tree send → sign into `out`; returns `out` and the signed stream's size.
#[allow(clippy::too_many_arguments)]
fn sign_into<W: Write>(
    o: &PublishOptions,
    parent: Option<(&Path, Uuid, &str)>,
    source: &Path,
    uuid: Uuid,
    name: &str,
    out: W,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, u64), Error> {
    let key = SecretKey::from_seed(&o.key.signing_key().to_bytes());
    let opts = TreeSendOptions {
        version: o.proto,
        no_data: false,
        uuid: Some(uuid),
        parent_uuid: parent.map(|p| p.1),
        name: Some(name.as_bytes().to_vec()),
        mtime_only: true,
    };
    let id = derived_stream_id(
        &key,
        &stream_identity(o.proto, uuid, parent.map(|p| p.1), name),
    );
    let mut signer = Signer::with_stream_id(out, key, id);
    let mut tick = |t: &Totals| progress(t.bytes);
    // The signer is the sink the tree sender emits into.
    send_tree(
        source,
        parent.map(|p| p.0),
        &opts,
        &mut signer,
        &mut Hook::none().progress(&mut tick).cancel(cancel),
    )?;
    let stream_bytes = signer.summary().bytes;
    Ok((signer.into_inner(), stream_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::derived_stream_id;

    fn pseudo(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half compressible, half not.
                if (i >> 16) % 2 == 0 {
                    (i % 61) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    }

    /// What publish's deltas rely on: zstd's multi-threaded mode gives the same bytes for any
    /// number of workers and any write sizes (here over several of its jobs).
    #[test]
    fn multithreaded_zstd_output_does_not_depend_on_workers_or_writes() {
        let input = pseudo(20 << 20);
        let compress = |workers: u32, chunk: usize| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.multithread(workers).unwrap();
            for c in input.chunks(chunk) {
                enc.write_all(c).unwrap();
            }
            enc.flush().unwrap();
            enc.finish().unwrap()
        };
        let want = compress(1, 1 << 20);
        assert_eq!(zstd::stream::decode_all(&want[..]).unwrap(), input);
        for (workers, chunk) in [(2, 1 << 20), (3, 4093), (8, 3 << 20)] {
            assert!(
                compress(workers, chunk) == want,
                "{workers} workers, writes of {chunk}"
            );
        }
    }

    #[test]
    fn stream_identities_differ_for_different_streams() {
        let (a, b) = (Uuid::from([1; 16]), Uuid::from([2; 16]));
        let ids = [
            stream_identity(2, a, None, "1"),
            stream_identity(1, a, None, "1"),
            stream_identity(2, b, None, "1"),
            stream_identity(2, a, None, "2"),
            stream_identity(2, b, Some(a), "1"),
            stream_identity(2, b, Some(b), "1"),
        ];
        let key = SecretKey::from_seed(&[5; 32]);
        let derived: HashSet<[u8; 16]> = ids.iter().map(|i| derived_stream_id(&key, i)).collect();
        assert_eq!(derived.len(), ids.len());
        assert_eq!(
            derived_stream_id(&key, &stream_identity(2, b, Some(a), "1")),
            derived_stream_id(&key, &ids[4])
        );
    }
}
