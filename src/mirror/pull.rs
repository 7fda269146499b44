//! `subvol pull`: brings a pool to a version along the cheapest verified chain.
//!
//! 1. Read the index (of every mirror: `source` and `mirrors`, keeping the newest valid one,
//!    see [`Mirrors`]); refuse it unless signed by an accepted key, unexpired, and with a serial
//!    no older than the newest this pool saw for that repository, from that source or by that
//!    key (`POOL/.subvol/state.json`, see [`super::state`]).
//! 2. Remove stale staging subvolumes of killed receives (keeping those with a valid
//!    checkpoint, see [`crate::recv::resume`]), then find the versions the pool
//!    holds: read-only subvolumes directly in the pool (never staging ones) whose received UUID
//!    is a version's UUID.
//! 3. Plan the cheapest chain ([`super::plan`]) and, when the target's full stream has a
//!    content map, a seeded full ([`super::seeded`]: the frames the pool lacks fetched by
//!    range, the rest read from the pool); take the one with fewer bytes to fetch (or the one
//!    `--plan` names). Check, before any stream byte is fetched, that what its steps write
//!    and the cache's peak fit in the space the pool's file system can spare
//!    ([`SpaceEstimate`]), then receive step by step through [`VerifyingSource`] over a zstd
//!    decoder while each file downloads ([`super::flow`]: checked against size and SHA-256
//!    before its END can complete; stalled transfers are given up, see [`StallLimits`]):
//!    nothing of a segment is applied before its signature verified, and each version appears
//!    under its name only after its END verified.
//! 4. Each file comes from the first mirror that serves it correctly ([`Mirrors::fetch`]).
//!    A missing or bad file (wrong hash, failed signature, refused stream) is left out and the
//!    chain planned again from what the pool holds now; versions received as steps stay valid.
//!    Each receive dedups against the pool's content index ([`crate::content::pool`]): WRITE
//!    data found in any pool subvolume becomes verified clones. The index is brought up to
//!    date when a pull starts and extended after each version it keeps.
//!    Each receive takes checkpoints ([`PullOptions::checkpoint_bytes`]); an interrupted pull
//!    keeps the step's last one with its partial download, and the next pull of that stream
//!    reads the bytes before the checkpoint from the cache, checks them against the record,
//!    and applies only the rest ([`PullEvent::ApplyResumed`]).
//! 5. Intermediate versions received only as steps are deleted; `--keep N` deletes the oldest
//!    pulled versions beyond N (the target and the versions deployments use always stay, see
//!    [`crate::deploy::pinned_versions`]; subvolumes not pulled are never touched).

use super::MirrorError;
use super::fetch::{
    FetchError, Mirrors, Progress, Remote, StallLimits, all_failed, drop_others, spare_space,
};
use super::flow::{Flow, Gate, SpaceEstimate, step_writes};
use super::index::StreamFile;
use super::oci::Reference;
use super::plan::{Plan, Step, plan};
use super::seeded::{RebuildStats, Rebuilt, SeededPlan, fetch_map, plan_seeded};
use super::state::{PullState, PulledVersion};
use crate::Error;
use crate::content::pool::{self as content_pool, Indexed};
use crate::pool::{META_DIR, received_in};
use crate::recv::{self, Event};
use crate::sign::{KeyId, KeySet, VerifyingSource};
use crate::stream::Reader;
use crate::trust::{self, MAX_ROOT_BYTES, TrustError, verify_trusted_root};
use crate::util::fs::{is_btrfs, lock_dir, write_atomic};
use crate::util::{error_chain, unix_now};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What to pull.
#[derive(Debug)]
pub struct PullOptions {
    /// `http(s)://...`, `oci://...` or a directory.
    pub source: String,
    /// More mirrors of the same repository, tried after `source` in this order (metadata is
    /// read from all of them and the newest valid index wins; see [`Mirrors`]).
    pub mirrors: Vec<String>,
    /// The pool (a directory on btrfs).
    pub pool: PathBuf,
    /// Accepted signing keys (index and streams) of a repository without trust metadata.
    pub keys: KeySet,
    /// A trusted root file (`root/N.json` from the publisher): verify through the trust
    /// metadata ([`crate::trust`]) instead of `keys`. Without it and without `keys`, the root
    /// this pool pinned for the source.
    pub root: Option<PathBuf>,
    /// Target version (default: the newest).
    pub version: Option<String>,
    /// Keep at most N pulled versions.
    pub keep: Option<usize>,
    /// Plan only.
    pub dry_run: bool,
    /// Set by a signal handler.
    pub interrupted: Option<Arc<AtomicBool>>,
    /// When an HTTP transfer is given up.
    pub stall: StallLimits,
    /// Chains, seeded fulls, or the cheaper of both.
    pub plan: PlanChoice,
    /// TLS roots for HTTPS and registries instead of the bundled ones (`--ca`).
    pub ca: Option<PathBuf>,
    /// Download every file of a chain before receiving any (`--no-stream`; for comparison).
    pub no_stream: bool,
    /// Each step's receive takes a checkpoint after this many stream bytes (at the end of a
    /// signed segment; see [`recv::Options::checkpoint_bytes`]), and takes up the checkpoint
    /// of an interrupted pull of the same stream. None or 0: neither.
    pub checkpoint_bytes: Option<u64>,
    /// See [`recv::Options::checkpoint_max_share`].
    pub checkpoint_max_share: Option<f64>,
}

/// How a pull may reach its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlanChoice {
    /// The fewest bytes to fetch: a chain or a seeded full.
    #[default]
    Auto,
    /// Stream files fetched whole (delta chains, fulls).
    Chain,
    /// The target's full stream rebuilt from the pool and fetched ranges.
    Seeded,
}

/// Progress of a pull.
#[derive(Debug)]
pub enum PullEvent<'a> {
    /// The index verified.
    Index {
        /// Serial.
        serial: u64,
        /// Expiry.
        expires: u64,
        /// Number of versions.
        versions: usize,
        /// Signing key.
        key: KeyId,
    },
    /// A mirror was skipped: its index (unreachable, refused, stale, another repository's) or
    /// a file it could not serve correctly (the next mirror is tried).
    MirrorSkipped {
        /// The mirror (base URL, registry reference or directory).
        mirror: &'a str,
        /// The file, when it failed for one file.
        file: Option<&'a StreamFile>,
        /// Why.
        reason: &'a str,
    },
    /// The trust metadata verified (instead of [`PullEvent::Index`]).
    Trust {
        /// The repository's name.
        repository: &'a str,
        /// Its UUID.
        uuid: crate::stream::Uuid,
        /// The newest root version.
        root_version: u64,
        /// Root versions walked past the trusted one (rotations).
        rotations: u64,
        /// The timestamp's version.
        timestamp_version: u64,
        /// Its expiry.
        timestamp_expires: u64,
        /// The release serial.
        serial: u64,
        /// Number of versions.
        versions: usize,
    },
    /// Versions the pool holds (names in the pool).
    Held(&'a [String]),
    /// The chain about to be fetched.
    Plan(&'a Plan),
    /// Download progress.
    Download {
        /// Step (1-based).
        step: usize,
        /// Steps.
        steps: usize,
        /// The file.
        file: &'a StreamFile,
        /// Bytes of this file.
        bytes: u64,
        /// Bytes of the whole plan done.
        done: u64,
        /// Bytes of the whole plan.
        total: u64,
    },
    /// A partial download is resumed with a Range request.
    Resume {
        /// The file.
        file: &'a StreamFile,
        /// From this offset.
        offset: u64,
    },
    /// Progress over the whole plan (see [`FlowProgress`]).
    Progress(FlowProgress),
    /// What the plan needs in the pool, and what it has (before anything is fetched).
    Space(&'a SpaceEstimate),
    /// A step's version was committed: what its file took.
    Step {
        /// Step (1-based).
        step: usize,
        /// Steps.
        steps: usize,
        /// The file.
        file: &'a StreamFile,
        /// Bytes fetched for it (network, or read from a directory).
        fetched: u64,
        /// Bytes of it found in the cache, left by an earlier pull.
        reused: u64,
    },
    /// A file was given up; another chain will be tried.
    Refused {
        /// The file.
        file: &'a StreamFile,
        /// Why.
        reason: &'a str,
    },
    /// Receiving progress.
    Receiving {
        /// Step (1-based).
        step: usize,
        /// Steps.
        steps: usize,
        /// The file.
        file: &'a StreamFile,
        /// Stream bytes applied.
        bytes: u64,
    },
    /// A version was committed.
    Received {
        /// Step (1-based).
        step: usize,
        /// Steps.
        steps: usize,
        /// The version.
        version: &'a str,
        /// Its path.
        path: &'a Path,
    },
    /// A subvolume was deleted (intermediate step or retention).
    Removed {
        /// Name in the pool.
        name: &'a str,
        /// Why.
        reason: &'static str,
    },
    /// A stale staging subvolume of an interrupted receive was removed.
    StaleRemoved(&'a OsStr),
    /// A step's receive took up the checkpoint an interrupted pull kept: its stream bytes
    /// before `offset` were read from the cache and checked, not applied again.
    ApplyResumed {
        /// Step (1-based).
        step: usize,
        /// Steps.
        steps: usize,
        /// The file.
        file: &'a StreamFile,
        /// Stream offset the receive continued at (bytes applied before, reused).
        offset: u64,
    },
    /// A step's receive took a checkpoint: an interruption from now on resumes at `offset`.
    Checkpoint {
        /// Step (1-based).
        step: usize,
        /// The file.
        file: &'a StreamFile,
        /// Stream offset a resume continues at.
        offset: u64,
    },
    /// The step's receive was interrupted: its last checkpoint (and the cache file) is kept
    /// for the next pull to resume at `offset`.
    Kept {
        /// Step (1-based).
        step: usize,
        /// The file.
        file: &'a StreamFile,
        /// Stream offset the next pull resumes at.
        offset: u64,
    },
    /// A kept checkpoint of this step's stream was not used (the bytes before its offset are
    /// not those it was taken after): it was removed and the step starts over.
    ResumeRefused {
        /// The file.
        file: &'a StreamFile,
        /// The subvolume's final name.
        name: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// A subvolume's content was indexed (after its receive, or at the start for one without
    /// a usable index file).
    Indexed(&'a Indexed),
    /// Index files of subvolumes no longer in the pool were removed (file names).
    IndexDropped(&'a [String]),
    /// An index file was corrupt; it is built again.
    IndexCorrupt {
        /// The file's name.
        file: &'a str,
        /// What is wrong with it.
        reason: &'a str,
    },
}

/// Progress of a pull over its whole plan, in bytes of the plan's files (a seeded full: of
/// what it fetches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowProgress {
    /// Step being received (1-based).
    pub step: usize,
    /// Steps.
    pub steps: usize,
    /// Bytes of the plan (to fetch, or found in the cache).
    pub total: u64,
    /// Bytes fetched so far (network, or read from a directory repository).
    pub fetched: u64,
    /// Bytes found in the cache from an earlier pull (not fetched).
    pub reused: u64,
    /// Bytes applied: the committed steps' files, and the share of the current one that its
    /// receive has applied. Equals `total` once the last step is committed.
    pub applied: u64,
    /// Of `applied`: bytes an earlier, interrupted pull had applied, taken up from its
    /// checkpoints ([`PullEvent::ApplyResumed`]), not applied by this run.
    pub resumed: u64,
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PullReport {
    /// Target version.
    pub target: String,
    /// Its subvolume.
    pub path: PathBuf,
    /// The index serial.
    pub serial: u64,
    /// The pool held the target already.
    pub already: bool,
    /// Dry run: the plan (nothing fetched).
    pub plan: Option<Plan>,
    /// Files received, in order.
    pub steps: Vec<StreamFile>,
    /// Bytes downloaded (or read from the directory).
    pub bytes: u64,
    /// Bytes of partial downloads found in the cache and used (not downloaded again).
    pub reused: u64,
    /// Dry run: the space the plan needs and what the pool has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<SpaceEstimate>,
    /// Files given up, with reasons.
    pub refused: Vec<String>,
    /// Subvolumes deleted.
    pub removed: Vec<String>,
    /// Subvolumes whose content was indexed (pool content index).
    pub indexed: Vec<String>,
    /// WRITE bytes applied as clones of data already in the pool (verified).
    pub deduped: u64,
    /// Steps whose receive took up the checkpoint of an interrupted pull: the file and the
    /// stream offset it continued at (bytes before it applied by the earlier pull).
    pub resumed: Vec<ResumedStep>,
    /// Set when the target came as a seeded full: what its rebuild read from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded: Option<RebuildStats>,
    /// Mirrors skipped, as `mirror: reason` or `mirror (file): reason`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors_skipped: Vec<String>,
    /// Set when the pull verified trust metadata (`--root`, or the root the pool pinned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustReport>,
}

/// A step whose receive took up an interrupted pull's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResumedStep {
    /// The stream file's path in the repository.
    pub file: String,
    /// The version it leads to.
    pub to: String,
    /// Stream offset the receive continued at.
    pub offset: u64,
}

/// What a pull verified of a repository's trust metadata.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrustReport {
    /// The repository's UUID.
    pub repository: crate::stream::Uuid,
    /// Its name.
    pub name: String,
    /// The newest root version.
    pub root_version: u64,
    /// Root versions walked past the trusted one.
    pub rotations: u64,
    /// The timestamp's version.
    pub timestamp_version: u64,
    /// When the timestamp expires (Unix seconds).
    pub timestamp_expires: u64,
    /// Metadata bytes fetched (roots, timestamp, release).
    pub metadata_bytes: u64,
}

/// Where a pool keeps the roots it pinned and the release metadata it verified last.
pub const TRUST_DIR: &str = "trust";

/// Trust files a pull writes with the pool state's next save.
struct PendingTrust {
    dir: PathBuf,
    uuid: crate::stream::Uuid,
    root: Vec<u8>,
    release: Vec<u8>,
}

/// Writes the pending trust files (`TRUST_DIR/<uuid>.root.json`, `.release.json`), once.
fn persist_trust(pending: &mut Option<PendingTrust>) -> Result<(), MirrorError> {
    if let Some(p) = pending.take() {
        fs::create_dir_all(&p.dir).map_err(|e| MirrorError::io("create", &p.dir, e))?;
        write_atomic(&p.dir, &format!("{}.root.json", p.uuid), &p.root)?;
        write_atomic(&p.dir, &format!("{}.release.json", p.uuid), &p.release)?;
    }
    Ok(())
}

/// Trust metadata files fetched from a [`Remote`].
struct RemoteFetch<'r>(&'r Remote);

impl trust::Fetch for RemoteFetch<'_> {
    fn fetch(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, MirrorError> {
        self.0.read_capped(rel, max)
    }
    fn location(&self, rel: &str) -> String {
        self.0.location(rel)
    }
}

/// The root to start from, and its name for messages: the newer of `--root` and the root this
/// pool pinned for the repository, or the pinned one alone without `--root` (even with keys);
/// None for a pull with `--verify` keys from a source without a pinned root (the legacy
/// index).
fn trusted_root(
    o: &PullOptions,
    state: &PullState,
    source: &str,
    trust_dir: &Path,
) -> Result<Option<(Vec<u8>, String)>, MirrorError> {
    let pinned_uuid = state.pinned_repository(source);
    let pinned = |uuid: &crate::stream::Uuid| {
        let p = trust_dir.join(format!("{uuid}.root.json"));
        let b = fs::read(&p).ok()?;
        let name = p.display().to_string();
        let root = verify_trusted_root(&name, &b).ok()?;
        Some((b, name, root.version))
    };
    if o.root.is_some() && Reference::is_oci(&o.source) {
        return Err(TrustError::Usage(
            "registries (oci://) carry the legacy index only: pull from them with --verify".into(),
        )
        .into());
    }
    let Some(path) = &o.root else {
        // A source whose root this pool pinned is verified through it even when --verify
        // keys are given: the legacy index would bypass the root's revocations.
        return match pinned_uuid.as_ref().and_then(pinned) {
            Some((b, name, _)) => Ok(Some((b, name))),
            None if !o.keys.is_empty() => Ok(None),
            None => Err(MirrorError::NoKeys),
        };
    };
    let name = path.display().to_string();
    let given = File::open(path)
        .and_then(|f| {
            let mut b = Vec::new();
            f.take(MAX_ROOT_BYTES + 1).read_to_end(&mut b).map(|_| b)
        })
        .map_err(|e| MirrorError::io("read", path, e))?;
    let root = verify_trusted_root(&name, &given)?;
    let uuid = root.repository.uuid;
    if let Some(p) = pinned_uuid
        && p != uuid
    {
        return Err(TrustError::WrongRepository {
            file: name,
            got: format!("{uuid} ({})", root.repository.name),
            want: p.to_string(),
            why: format!(", the repository this pool pinned for {source} on first contact"),
        }
        .into());
    }
    Ok(Some(match pinned(&uuid) {
        Some((b, pname, v)) if v > root.version => (b, pname),
        _ => (given, name),
    }))
}

/// Gives file `f` up for `reason`: said, listed among the failures, and left out of the plans
/// that follow.
fn give_up(
    f: &StreamFile,
    reason: &str,
    on_event: &mut dyn FnMut(PullEvent<'_>),
    refused: &mut Vec<String>,
    excluded: &mut HashSet<String>,
) {
    on_event(PullEvent::Refused { file: f, reason });
    refused.push(format!("{}: {reason}", f.path));
    excluded.insert(f.path.clone());
}

/// A stream file's failed download: a missing or bad file is given up (`Ok(true)`: plan
/// another chain); any other failure (this host's, the network's, an interruption) stops the
/// pull.
fn settle_download(
    e: FetchError,
    f: &StreamFile,
    on_event: &mut dyn FnMut(PullEvent<'_>),
    refused: &mut Vec<String>,
    excluded: &mut HashSet<String>,
) -> Result<bool, Error> {
    match e {
        FetchError::Missing(reason) | FetchError::Bad(reason) => {
            give_up(f, &reason, on_event, refused, excluded);
            Ok(true)
        }
        FetchError::Fatal(e) => Err(e.into()),
    }
}

/// Marks the zstd decoder's own errors (corrupt compressed data, which carry no OS error) as
/// [`io::ErrorKind::InvalidData`], so [`Error::is_stream_fault`] tells a corrupt file (give it
/// up, try another chain) from a failing disk (stop).
struct CorruptIsInvalidData<R>(R);

impl<R: Read> Read for CorruptIsInvalidData<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::Other {
                io::Error::new(io::ErrorKind::InvalidData, e)
            } else {
                e
            }
        })
    }
}

/// Why a kept checkpoint could not be taken up.
enum ResumeFailure {
    /// The input before the checkpoint is not what it was taken after (or ends before it):
    /// the interrupted receive's final name, and why.
    Other(String, String),
    /// The input could not be read (a download that failed or stopped).
    Read(io::Error),
}

/// Finds the interrupted receive in `pool` of the stream `input` starts, and reads (checking
/// them) its bytes up to the checkpoint. Returns the input where the receive goes on, and
/// the receive to take up with the digest of the bytes skipped. Pulled streams are signed:
/// only signed checkpoints are candidates.
#[allow(clippy::type_complexity)]
fn find_resume<'r>(
    pool: &Path,
    mut input: Box<dyn Read + 'r>,
) -> Result<
    (
        Box<dyn Read + 'r>,
        Option<(recv::Incomplete, recv::Skipped)>,
    ),
    ResumeFailure,
> {
    let candidates: Vec<_> = match recv::list_incomplete(pool) {
        Ok(list) => list.into_iter().filter(|c| c.signed).collect(),
        // Unreadable records are not resumable; the receive's cleanup deals with them.
        Err(_) => Vec::new(),
    };
    if candidates.is_empty() {
        return Ok((input, None));
    }
    let (start, head) = recv::peek_start(&mut input).map_err(ResumeFailure::Read)?;
    let mut rest: Box<dyn Read + 'r> = Box::new(io::Cursor::new(head).chain(input));
    let Some(inc) = start.and_then(|s| candidates.into_iter().find(|c| c.matches(&s))) else {
        return Ok((rest, None));
    };
    match recv::skip_checked(&mut rest, &inc) {
        Ok(skipped) => Ok((rest, Some((inc, skipped)))),
        Err(recv::SkipError::Io(e)) => Err(ResumeFailure::Read(e)),
        Err(e) => Err(ResumeFailure::Other(inc.name, e.to_string())),
    }
}

/// Counts the bytes read through it (what the receiver parsed of a stream).
struct Counted<'c, R> {
    inner: R,
    count: &'c Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// The largest file a stream of `stream_bytes` can be compressed into: zstd's bound
/// (`n + n/256` plus a little) with room for frame headers.
fn max_file_size(stream_bytes: u64) -> u64 {
    stream_bytes
        .saturating_add(stream_bytes / 128)
        .saturating_add(64 << 10)
}

/// Space the plan `p` needs in the pool: what its steps write ([`step_writes`]; a seeded full:
/// its full stream) and the cache's peak (nothing for a directory; the largest file still to
/// download when streaming, since each file goes once applied; every file with `no_stream`;
/// a seeded full's fetched ranges).
fn estimate_space(
    p: &Plan,
    seeded: Option<&SeededPlan>,
    remote: &Remote,
    cache: &Path,
    pool: &Path,
    no_stream: bool,
) -> Result<SpaceEstimate, Error> {
    let writes = p.steps.iter().fold(0u64, |sum, s| {
        sum.saturating_add(step_writes(s.file.stream_bytes))
    });
    let cache_bytes = match seeded {
        Some(s) => s.summary.fetch_bytes,
        None if no_stream => remote.bytes_to_download(p.steps.iter().map(|s| &s.file), cache),
        None => p
            .steps
            .iter()
            .map(|s| remote.bytes_to_download([&s.file], cache))
            .max()
            .unwrap_or(0),
    };
    let (free, reserve) = spare_space(pool)?;
    Ok(SpaceEstimate {
        writes,
        cache: cache_bytes,
        need: writes.saturating_add(cache_bytes),
        free,
        reserve,
    })
}

/// Pulls (see the module docs).
///
/// # Errors
/// Refused index, no usable chain, network/I/O/receive errors. Versions committed before an
/// error stay (each is complete and verified); a partial download stays in the cache.
pub fn pull(o: &PullOptions, on_event: &mut dyn FnMut(PullEvent<'_>)) -> Result<PullReport, Error> {
    let pool = fs::canonicalize(&o.pool).map_err(|e| MirrorError::io("open pool", &o.pool, e))?;
    if !is_btrfs(&pool) {
        return Err(MirrorError::PoolNotBtrfs(pool).into());
    }
    let stop = || {
        o.interrupted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    let meta = pool.join(META_DIR);
    let cache = meta.join("cache");
    let _lock = if o.dry_run {
        None
    } else {
        fs::create_dir_all(&cache).map_err(|e| MirrorError::io("create", &cache, e))?;
        Some(lock_dir(&meta).map_err(|e| MirrorError::lock(e, "pull into this pool"))?)
    };

    if !o.dry_run {
        // Stale staging subvolumes of a killed receive (whose lock is free) go before the pool
        // is looked at: the receiver's own cleanup, run without receiving anything.
        let opts = recv::Options {
            dest: pool.clone(),
            ..recv::Options::default()
        };
        let mut on_recv = |ev: Event<'_>| {
            if let Event::StaleRemoved(n) = ev {
                on_event(PullEvent::StaleRemoved(n));
            }
        };
        drop(recv::Receiver::new(&opts, &mut on_recv)?);
    }
    let stop_flag = o.interrupted.as_deref();
    let mut indexed: Vec<String> = Vec::new();
    if !o.dry_run {
        // The pool's content index: files of subvolumes gone are dropped, subvolumes without
        // a usable one (pulled by an older subvol, or corrupt) are indexed.
        let r = content_pool::refresh(&pool, stop_flag, &mut |i| on_event(PullEvent::Indexed(i)))
            .map_err(MirrorError::content)?;
        if !r.dropped.is_empty() {
            on_event(PullEvent::IndexDropped(&r.dropped));
        }
        for (file, reason) in &r.corrupt {
            on_event(PullEvent::IndexCorrupt { file, reason });
        }
        indexed.extend(r.indexed.into_iter().map(|i| i.name));
    }

    let t = unix_now();
    let mut mirrors_skipped: Vec<String> = Vec::new();
    let sources: Vec<String> = std::iter::once(o.source.clone())
        .chain(o.mirrors.iter().cloned())
        .collect();
    let mut state = PullState::load(&pool)?;
    // Pinned roots and serials are remembered per repository and per source: the first one.
    let source_name = if Reference::is_oci(&o.source) {
        Reference::parse(&o.source)
            .map_err(MirrorError::Registry)?
            .display()
    } else {
        Remote::new(&o.source, o.stall).identity()
    };
    let trust_dir = meta.join(TRUST_DIR);
    let mut pending_trust: Option<PendingTrust> = None;
    let mut trust_report: Option<TrustReport> = None;
    let (mirrors, index, keys) = match trusted_root(o, &state, &source_name, &trust_dir)? {
        Some((root_bytes, root_name)) => {
            let start = verify_trusted_root(&root_name, &root_bytes).map_err(MirrorError::Trust)?;
            let uuid = start.repository.uuid;
            let cached = fs::read(trust_dir.join(format!("{uuid}.release.json"))).ok();
            // The trust metadata of every mirror (in parallel: a silent one costs one
            // --timeout), and the newest that verifies: a stale mirror cannot hold the pool
            // back while another serves the new release. The others serve files.
            let pinned = state.trust.get(&uuid.to_string());
            let legacy = state.legacy_serial(&uuid);
            let verify = |src: &String| {
                Remote::open(src, o.stall, o.ca.as_deref()).and_then(|remote| {
                    let v = trust::update(
                        &root_bytes,
                        &root_name,
                        pinned,
                        legacy,
                        cached.as_deref(),
                        &RemoteFetch(&remote),
                        t,
                    )?;
                    Ok((remote, v))
                })
            };
            let results: Vec<Result<_, MirrorError>> = if sources.len() > 1 {
                std::thread::scope(|sc| {
                    let handles: Vec<_> = sources.iter().map(|s| sc.spawn(|| verify(s))).collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(MirrorError::Bug("verifying a mirror panicked".into()))
                            })
                        })
                        .collect()
                })
            } else {
                sources.iter().map(verify).collect()
            };
            let mut failures: Vec<(String, MirrorError)> = Vec::new();
            let mut valid = Vec::new();
            for (src, r) in sources.iter().zip(results) {
                match r {
                    Ok(x) => valid.push((src, x)),
                    Err(MirrorError::Interrupted) => return Err(MirrorError::Interrupted.into()),
                    Err(e) => failures.push((src.clone(), e)),
                }
            }
            let newest = valid
                .iter()
                .map(|(_, (_, v))| (v.timestamp.version, v.release.serial))
                .max();
            let mut verified = None;
            for (src, (remote, v)) in valid {
                let here = Some((v.timestamp.version, v.release.serial));
                if here == newest {
                    if verified.is_none() {
                        verified = Some((remote, v));
                    }
                } else {
                    let why = format!(
                        "its timestamp version {} (release serial {}) is older than another mirror's",
                        v.timestamp.version, v.release.serial
                    );
                    mirrors_skipped.push(format!("{src}: {why}"));
                    on_event(PullEvent::MirrorSkipped {
                        mirror: src,
                        file: None,
                        reason: &why,
                    });
                }
            }
            if sources.len() > 1 {
                for (src, e) in &failures {
                    let reason = error_chain(e);
                    mirrors_skipped.push(format!("{src}: {reason}"));
                    on_event(PullEvent::MirrorSkipped {
                        mirror: src,
                        file: None,
                        reason: &reason,
                    });
                }
            }
            let Some((first, v)) = verified else {
                return Err(all_failed(failures).into());
            };
            if !o.dry_run {
                // Verified: the newest root is pinned, the release kept (the next pull fetches
                // only the timestamp when nothing changed) and the numbers remembered, all
                // with the pool state's next save: a pull refused later (a stream by a
                // revoked key) leaves the pool as it was.
                state.trust.insert(uuid.to_string(), v.record.clone());
                state.trust_sources.insert(source_name.clone(), uuid);
                pending_trust = Some(PendingTrust {
                    dir: trust_dir.clone(),
                    uuid,
                    root: v.root_text.clone(),
                    release: v.release_text.clone(),
                });
            }
            trust_report = Some(TrustReport {
                repository: uuid,
                name: v.root.repository.name.clone(),
                root_version: v.root.version,
                rotations: v.rotations,
                timestamp_version: v.timestamp.version,
                timestamp_expires: v.timestamp.expires,
                metadata_bytes: v.bytes,
            });
            on_event(PullEvent::Trust {
                repository: &v.root.repository.name,
                uuid,
                root_version: v.root.version,
                rotations: v.rotations,
                timestamp_version: v.timestamp.version,
                timestamp_expires: v.timestamp.expires,
                serial: v.release.serial,
                versions: v.release.index.versions.len(),
            });
            let mirrors = Mirrors::with_first(first, &sources, o.stall, o.ca.as_deref())?;
            (mirrors, v.release.index, v.stream_keys)
        }
        None => {
            if o.keys.is_empty() {
                return Err(MirrorError::NoKeys.into());
            }
            let (mirrors, index, key) = Mirrors::open_newest(
                &sources,
                o.stall,
                o.ca.as_deref(),
                &o.keys,
                t,
                &mut |(mirror, reason)| {
                    mirrors_skipped.push(format!("{mirror}: {reason}"));
                    on_event(PullEvent::MirrorSkipped {
                        mirror,
                        file: None,
                        reason,
                    });
                },
            )?;
            let key_hex = key.to_string();
            if let Some(seen) =
                state.newest_serial(index.repository.as_ref(), &source_name, &key_hex)
                && index.serial < seen
            {
                return Err(MirrorError::Rollback {
                    serial: index.serial,
                    seen,
                }
                .into());
            }
            if !o.dry_run {
                state.record_serial(
                    index.repository.as_ref(),
                    &source_name,
                    &key_hex,
                    index.serial,
                    t,
                );
                state.save(&pool)?;
            }
            on_event(PullEvent::Index {
                serial: index.serial,
                expires: index.expires,
                versions: index.versions.len(),
                key,
            });
            (mirrors, index, o.keys.clone())
        }
    };
    let remote = mirrors.primary();
    let target = match &o.version {
        Some(v) => index
            .position(v)
            .ok_or_else(|| MirrorError::UnknownVersion {
                version: v.clone(),
                known: index.versions.iter().map(|v| v.name.clone()).collect(),
            })?,
        None => index
            .versions
            .len()
            .checked_sub(1)
            .ok_or(MirrorError::NoVersions)?,
    };
    let target_name = index.versions[target].name.clone();

    let held_at_start: HashSet<String> = received_in(&pool)?.into_iter().map(|h| h.0).collect();
    let mut excluded: HashSet<String> = HashSet::new();
    let mut refused: Vec<String> = Vec::new();
    // The ceiling on any download: no more than zstd can make of the stream inside. A file
    // listed larger is inconsistent and never planned.
    for f in &index.streams {
        if f.size > max_file_size(f.stream_bytes) {
            let reason = format!(
                "listed as {} bytes, more than zstd makes of its {}-byte stream",
                f.size, f.stream_bytes
            );
            give_up(f, &reason, on_event, &mut refused, &mut excluded);
        }
    }
    let mut received_files: Vec<StreamFile> = Vec::new();
    let mut received_names: Vec<String> = Vec::new();
    let mut downloaded = 0u64;
    let mut reused = 0u64;
    let mut deduped = 0u64;
    let mut resumed_steps: Vec<ResumedStep> = Vec::new();
    let mut first = true;
    let mut seeded_given_up = false;
    let mut seeded_outcome: Option<RebuildStats> = None;

    let already = loop {
        if stop() {
            return Err(MirrorError::Interrupted.into());
        }
        // What the pool holds now, by received UUID (read-only subvolumes only).
        let held_list = received_in(&pool)?;
        let mut held = HashSet::new();
        let mut held_names = Vec::new();
        for (name, uuid, ro) in &held_list {
            if let Some(p) = index.by_uuid(uuid)
                && *ro
            {
                held.insert(p);
                held_names.push(name.clone());
            }
        }
        if first {
            on_event(PullEvent::Held(&held_names));
        }
        if held.contains(&target) {
            break first;
        }
        let chain = if o.plan == PlanChoice::Seeded {
            None
        } else {
            plan(&index, &held, target, &excluded)
        };
        // The target's full stream seeded from the pool, when it has a content map and was
        // not given up on; fetched and planned anew each round (the pool may have grown).
        let mut seeded: Option<SeededPlan> = None;
        let pool_index = content_pool::pool_index(&pool).map_err(MirrorError::content)?;
        // With nothing indexed in the pool a seeded full is the full file plus its map: only
        // worth planning when asked for.
        let worth_seeding = match o.plan {
            PlanChoice::Auto => pool_index.is_some(),
            PlanChoice::Seeded => true,
            PlanChoice::Chain => false,
        };
        if worth_seeding && !seeded_given_up {
            let full = index
                .streams
                .iter()
                .find(|s| s.from.is_none() && s.to == target_name && !excluded.contains(&s.path));
            if let Some((f, m)) = full.and_then(|f| f.map.as_ref().map(|m| (f, m))) {
                match fetch_map(remote, f, m) {
                    Ok(map) => {
                        seeded = Some(
                            plan_seeded(f, map, m.size, pool_index.as_ref())
                                .map_err(MirrorError::content)?,
                        );
                    }
                    Err(FetchError::Missing(reason) | FetchError::Bad(reason)) => {
                        on_event(PullEvent::Refused {
                            file: f,
                            reason: &reason,
                        });
                        refused.push(format!("{}: {reason}", m.path));
                        seeded_given_up = true;
                    }
                    Err(FetchError::Fatal(e)) => return Err(e.into()),
                }
            } else if o.plan == PlanChoice::Seeded {
                refused.push(format!(
                    "version {target_name}: no full stream with a content map to seed"
                ));
            }
        }
        let seeded = match (seeded, &chain) {
            (Some(s), Some(c)) if s.cost() >= c.bytes => None,
            (s, _) => s,
        };
        let p = match (&seeded, chain) {
            (Some(s), _) => Plan {
                target: target_name.clone(),
                start: None,
                steps: vec![Step {
                    file: s.file.clone(),
                }],
                bytes: s.cost(),
                seeded: Some(s.summary.clone()),
            },
            (None, Some(c)) => c,
            (None, None) => {
                // Versions received as steps of chains that failed further on lead nowhere
                // now (received as they downloaded, before a later file was found bad).
                for n in &received_names {
                    if !held_at_start.contains(n) && crate::pool::delete(&pool.join(n)).is_ok() {
                        on_event(PullEvent::Removed {
                            name: n,
                            reason: "intermediate step of a chain that failed",
                        });
                    }
                }
                return Err(MirrorError::NoChain {
                    target: target_name,
                    failures: refused,
                }
                .into());
            }
        };
        // Space before bytes: what the steps write into the pool and the cache's peak must
        // fit in what its file system can spare, before any stream byte is fetched.
        if !o.dry_run && remote.is_http() {
            // Leftovers of other chains cannot be resumed by this one and only take space.
            drop_others(&cache, p.steps.iter().map(|s| &s.file));
        }
        let space = estimate_space(&p, seeded.as_ref(), remote, &cache, &pool, o.no_stream)?;
        if o.dry_run {
            return Ok(PullReport {
                target: target_name,
                path: pool.join(&index.versions[target].name),
                serial: index.serial,
                already: false,
                plan: Some(p),
                space: Some(space),
                steps: Vec::new(),
                bytes: 0,
                reused: 0,
                refused,
                removed: Vec::new(),
                indexed,
                deduped: 0,
                resumed: Vec::new(),
                seeded: None,
                mirrors_skipped,
                trust: trust_report,
            });
        }
        first = false;
        on_event(PullEvent::Plan(&p));
        on_event(PullEvent::Space(&space));
        if !space.fits() {
            return Err(MirrorError::NoSpace {
                pool: pool.clone(),
                need: space.need,
                writes: space.writes,
                cache: space.cache,
                free: space.free,
                reserve: space.reserve,
            }
            .into());
        }
        let steps = p.steps.len();
        // A seeded full fetches its ranges into a sparse file and rebuilds the stream from it
        // before it is received.
        let seeded_cache = match &seeded {
            Some(s) => {
                let path = cache.join(format!("{}.seeded", s.file.sha256));
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .and_then(|f| f.set_len(s.file.size).map(|()| f))
                    .map_err(|e| MirrorError::io("create", &path, e))?;
                // The name goes now; the open file stays until the rebuild is done.
                let _ = fs::remove_file(&path);
                Some(file)
            }
            None => None,
        };
        let rebuild_stats = Cell::new(RebuildStats::default());
        let mut seeded_input: Option<Box<dyn Read + '_>> = None;
        // Bytes fetched that no Flow counts: a seeded full's ranges and map, directory reads.
        let fetched_here = Cell::new(0u64);
        if let (Some(s), Some(cache_file)) = (&seeded, &seeded_cache) {
            let f = &s.file;
            let r = remote.fetch_ranges(
                &f.path,
                f.size,
                &s.ranges,
                cache_file,
                &mut |b| {
                    on_event(PullEvent::Download {
                        step: 1,
                        steps: 1,
                        file: f,
                        bytes: b,
                        done: b,
                        total: s.summary.fetch_bytes,
                    });
                },
                &stop,
            );
            match r {
                Ok(got) => {
                    fetched_here.set(got.bytes.saturating_add(s.summary.map_bytes));
                    let rebuilt = Rebuilt::new(
                        s,
                        pool_index.as_ref(),
                        remote,
                        cache_file,
                        &stop,
                        &rebuild_stats,
                    )
                    .map_err(|e| MirrorError::io("start zstd for", remote.location(&f.path), e))?;
                    seeded_input = Some(Box::new(rebuilt));
                }
                Err(FetchError::Missing(reason) | FetchError::Bad(reason)) => {
                    on_event(PullEvent::Refused {
                        file: f,
                        reason: &reason,
                    });
                    refused.push(format!("{} (ranges): {reason}", f.path));
                    seeded_given_up = true;
                    continue;
                }
                Err(FetchError::Fatal(e)) => return Err(e.into()),
            }
        }
        // Stream files over HTTP or from a registry are downloaded on a thread while they are
        // received (see [`super::flow`]); a directory's files are read in place.
        let streaming = seeded.is_none() && remote.is_http();
        let flow = Flow::new(
            p.steps.iter().map(|s| &s.file).collect(),
            &cache,
            o.no_stream,
        );
        let stop_sync = || stop_flag.is_some_and(|f| f.load(Ordering::Relaxed));
        // What one step weighs on the plan's bar: its file (a seeded full: all it fetches).
        let weight = |f: &StreamFile| if seeded.is_some() { p.bytes } else { f.size };
        let events = RefCell::new(&mut *on_event);
        // (step index, applied of the current step) and the weight of the steps committed.
        let current = Cell::new((0usize, 0u64));
        let applied_before = Cell::new(0u64);
        // Applied bytes taken up from checkpoints of an earlier, interrupted pull (in `applied`,
        // not work of this run).
        let resumed = Cell::new(0u64);
        // Stream bytes of the current step the receiver has parsed (a signature segment at
        // most ahead of what it applied).
        let parsed = Cell::new(0u64);
        // Mirrors that failed a file (the downloader's notes, said as they come).
        let skipped_here: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let report = || {
            let c = flow.counts();
            let (i, received) = current.get();
            let cur = p.steps.get(i).map_or(received, |s| {
                let w = weight(&s.file);
                let share = u128::from(w) * u128::from(parsed.get())
                    / u128::from(s.file.stream_bytes.max(1));
                u64::try_from(share).unwrap_or(w).clamp(received, w)
            });
            (*events.borrow_mut())(PullEvent::Progress(FlowProgress {
                step: i + 1,
                steps,
                total: p.bytes,
                fetched: c.fetched.saturating_add(fetched_here.get()),
                reused: c.reused,
                applied: applied_before.get().saturating_add(cur),
                resumed: resumed.get(),
            }));
            for (j, offset) in flow.take_resumes() {
                (*events.borrow_mut())(PullEvent::Resume {
                    file: &p.steps[j].file,
                    offset,
                });
            }
            for (j, mirror, reason) in flow.take_skips() {
                let file = &p.steps[j].file;
                skipped_here
                    .borrow_mut()
                    .push(format!("{mirror} ({}): {reason}", file.path));
                (*events.borrow_mut())(PullEvent::MirrorSkipped {
                    mirror: &mirror,
                    file: Some(file),
                    reason: &reason,
                });
            }
        };
        let outcome: Result<bool, Error> = std::thread::scope(|sc| {
            if streaming {
                let (flow, mirrors, stop_sync) = (&flow, &mirrors, &stop_sync);
                sc.spawn(move || flow.download(mirrors, stop_sync));
            }
            let r = (|| -> Result<bool, Error> {
                for (i, s) in p.steps.iter().enumerate() {
                    let f = &s.file;
                    if stop() {
                        return Err(MirrorError::Interrupted.into());
                    }
                    current.set((i, 0));
                    parsed.set(0);
                    let input: Box<dyn Read + '_> = if let Some(input) = seeded_input.take() {
                        input
                    } else if streaming {
                        if o.no_stream {
                            flow.wait_all(&stop);
                        }
                        let tail = flow.reader(i, &stop, &report);
                        let dec = zstd::stream::read::Decoder::new(tail).map_err(|e| {
                            MirrorError::io("start zstd for", remote.location(&f.path), e)
                        })?;
                        Box::new(Gate::new(
                            CorruptIsInvalidData(dec),
                            &flow,
                            i,
                            f.stream_bytes,
                            &stop,
                        ))
                    } else {
                        let before = fetched_here.get();
                        let r = mirrors.fetch(
                            f,
                            &cache,
                            &mut |pr| {
                                if let Progress::MirrorSkipped { mirror, reason } = &pr {
                                    skipped_here
                                        .borrow_mut()
                                        .push(format!("{mirror} ({}): {reason}", f.path));
                                    (*events.borrow_mut())(PullEvent::MirrorSkipped {
                                        mirror,
                                        file: Some(f),
                                        reason,
                                    });
                                }
                                if let Progress::Bytes(b) = pr {
                                    fetched_here.set(before.saturating_add(b));
                                    (*events.borrow_mut())(PullEvent::Download {
                                        step: i + 1,
                                        steps,
                                        file: f,
                                        bytes: b,
                                        done: applied_before.get().saturating_add(b),
                                        total: p.bytes,
                                    });
                                }
                            },
                            &stop,
                        );
                        match r {
                            Ok(file) => {
                                let dec = zstd::stream::read::Decoder::new(file).map_err(|e| {
                                    MirrorError::io("start zstd for", remote.location(&f.path), e)
                                })?;
                                Box::new(CorruptIsInvalidData(dec))
                            }
                            Err(e) => {
                                return settle_download(
                                    e,
                                    f,
                                    &mut **events.borrow_mut(),
                                    &mut refused,
                                    &mut excluded,
                                );
                            }
                        }
                    };
                    // An interrupted receive of this step's stream (a killed pull kept its
                    // checkpoint) is taken up where it stopped: its bytes up to there are
                    // read from the cache file and checked, not applied again.
                    let checkpoints = o.checkpoint_bytes.is_some_and(|b| b > 0);
                    let (input, resume) = if checkpoints {
                        match find_resume(&pool, input) {
                            Ok(found) => found,
                            Err(ResumeFailure::Other(inc, reason)) => {
                                // Not the bytes it was taken after: this step starts over
                                // (a round of its own, reading the file from its start).
                                recv::drop_incomplete(&pool, Some(&inc))?;
                                (*events.borrow_mut())(PullEvent::ResumeRefused {
                                    file: f,
                                    name: &inc,
                                    reason: &reason,
                                });
                                return Ok(true);
                            }
                            Err(ResumeFailure::Read(e)) => {
                                if stop() {
                                    return Err(MirrorError::Interrupted.into());
                                }
                                if streaming && let Some(e) = flow.failure(i) {
                                    return settle_download(
                                        e,
                                        f,
                                        &mut **events.borrow_mut(),
                                        &mut refused,
                                        &mut excluded,
                                    );
                                }
                                return Err(MirrorError::io("read", &cache, e).into());
                            }
                        }
                    } else {
                        (input, None)
                    };
                    let resumed_at = resume.as_ref().map_or(0, |(inc, _)| inc.offset);
                    parsed.set(resumed_at);
                    let counted = Counted {
                        inner: BufReader::with_capacity(
                            1 << 20,
                            input.take(f.stream_bytes.saturating_sub(resumed_at)),
                        ),
                        count: &parsed,
                    };
                    let (mut source, resume) = match resume {
                        Some((inc, skipped)) => {
                            let reader = inc.reader(counted, Some(skipped));
                            let state = inc.resume_state().verifier.as_ref().ok_or_else(|| {
                                Error::Bug(format!(
                                    "signed checkpoint of {} without state",
                                    inc.name
                                ))
                            })?;
                            // The chain of signatures continues from the checkpoint's.
                            (
                                VerifyingSource::resume(reader, keys.clone(), state)?,
                                Some(inc),
                            )
                        }
                        None if checkpoints => (
                            VerifyingSource::new(
                                Reader::new(counted).with_prefix_digest(),
                                keys.clone(),
                            ),
                            None,
                        ),
                        None => (
                            VerifyingSource::new(Reader::new(counted), keys.clone()),
                            None,
                        ),
                    };
                    // Pulled streams come from one signed sender: the default clone-source
                    // rule holds. WRITE data already in the pool (any subvolume) becomes
                    // verified clones. Checkpoints as `subvol recv` takes them.
                    let opts = recv::Options {
                        dest: pool.clone(),
                        interrupted: o.interrupted.clone(),
                        dedup_index: pool_index.clone(),
                        checkpoint_bytes: o.checkpoint_bytes,
                        checkpoint_max_share: o.checkpoint_max_share,
                        resume,
                        ..recv::Options::default()
                    };
                    let w = weight(f);
                    let kept = Cell::new(false);
                    let r = recv::receive(&mut source, &opts, &mut |ev| match ev {
                        Event::StaleRemoved(n) => {
                            (*events.borrow_mut())(PullEvent::StaleRemoved(n));
                        }
                        Event::Progress { bytes, .. } => {
                            (*events.borrow_mut())(PullEvent::Receiving {
                                step: i + 1,
                                steps,
                                file: f,
                                bytes,
                            });
                            // Applied, in the file's bytes: the stream's share of its weight.
                            let share = u128::from(w) * u128::from(bytes)
                                / u128::from(f.stream_bytes.max(1));
                            current.set((i, u64::try_from(share).unwrap_or(w).min(w)));
                            report();
                        }
                        Event::Deduped(s) => deduped = deduped.saturating_add(s.cloned),
                        Event::Resumed { offset, .. } => {
                            let share = u128::from(w) * u128::from(offset)
                                / u128::from(f.stream_bytes.max(1));
                            let share = u64::try_from(share).unwrap_or(w).min(w);
                            resumed.set(resumed.get().saturating_add(share));
                            resumed_steps.push(ResumedStep {
                                file: f.path.clone(),
                                to: f.to.clone(),
                                offset,
                            });
                            current.set((i, share));
                            (*events.borrow_mut())(PullEvent::ApplyResumed {
                                step: i + 1,
                                steps,
                                file: f,
                                offset,
                            });
                            report();
                        }
                        Event::Checkpoint { offset, .. } => {
                            (*events.borrow_mut())(PullEvent::Checkpoint {
                                step: i + 1,
                                file: f,
                                offset,
                            });
                        }
                        Event::Kept { offset, .. } => {
                            kept.set(true);
                            (*events.borrow_mut())(PullEvent::Kept {
                                step: i + 1,
                                file: f,
                                offset,
                            });
                        }
                        Event::Started { .. }
                        | Event::SeedsIndexed { .. }
                        | Event::IncompleteDropped(_) => {}
                    });
                    drop(source);
                    // A file given up takes the checkpoint its receive kept with it (its
                    // reading failed: not the stream's fault to the receiver); an
                    // interruption or a fault of this host keeps it for the next pull.
                    let drop_kept = || {
                        if kept.get() {
                            let _ = recv::drop_incomplete(&pool, Some(&f.to));
                        }
                    };
                    // A download that failed makes the receive fail: its reason is the
                    // download's (a fault of the file, or of the network).
                    if streaming
                        && r.is_err()
                        && let Some(e) = flow.failure(i)
                    {
                        if !matches!(e, FetchError::Fatal(_)) {
                            drop_kept();
                        }
                        return settle_download(
                            e,
                            f,
                            &mut **events.borrow_mut(),
                            &mut refused,
                            &mut excluded,
                        );
                    }
                    if r.is_err() && stop() {
                        return Err(MirrorError::Interrupted.into());
                    }
                    let got = match r {
                        Ok(got) => got,
                        // Only the stream's own faults give the file up; a fault of this host
                        // (disk full, no mount, a parent missing here) stops the pull with the
                        // file kept. A seeded full that fails is given up as a method (the file
                        // itself may be good: the next round may fetch it whole).
                        Err(e) if e.is_stream_fault() => {
                            // While streaming, the file may still be arriving: its verdict
                            // tells a damaged file (size, SHA-256) from a bad stream, and is
                            // the reason given.
                            if streaming {
                                match flow.outcome(i, &stop) {
                                    // The bytes read came (in part) from a mirror that then
                                    // failed the file; the verified file is in the cache now:
                                    // receive it again from there.
                                    Ok(()) if flow.mirror_failed(i) => return Ok(true),
                                    Ok(()) => {}
                                    Err(Some(e)) => {
                                        if !matches!(e, FetchError::Fatal(_)) {
                                            drop_kept();
                                        }
                                        return settle_download(
                                            e,
                                            f,
                                            &mut **events.borrow_mut(),
                                            &mut refused,
                                            &mut excluded,
                                        );
                                    }
                                    Err(None) => return Err(MirrorError::Interrupted.into()),
                                }
                            }
                            drop_kept();
                            let reason = error_chain(&e);
                            (*events.borrow_mut())(PullEvent::Refused {
                                file: f,
                                reason: &reason,
                            });
                            if p.seeded.is_some() {
                                refused.push(format!("{} (seeded): {reason}", f.path));
                                seeded_given_up = true;
                            } else {
                                refused.push(format!("{}: {reason}", f.path));
                                excluded.insert(f.path.clone());
                            }
                            return Ok(true);
                        }
                        Err(e) => return Err(e),
                    };
                    // A stream that ended before its file did (the index's stream_bytes too
                    // small) was committed before the file verified: the file decides.
                    if streaming && let Err(e) = flow.outcome(i, &stop) {
                        for g in &got {
                            let _ = crate::pool::delete(&g.path);
                        }
                        return match e {
                            Some(e) => settle_download(
                                e,
                                f,
                                &mut **events.borrow_mut(),
                                &mut refused,
                                &mut excluded,
                            ),
                            None => Err(MirrorError::Interrupted.into()),
                        };
                    }
                    // The index validated that every stream leads to a listed version.
                    let want = index.version(&f.to).map(|v| v.uuid).ok_or_else(|| {
                        Error::Bug(format!("stream {} to unlisted version", f.path))
                    })?;
                    let ok =
                        got.len() == 1 && got[0].uuid == want && got[0].name == OsStr::new(&f.to);
                    if !ok {
                        // Signed and hashed, yet not what the index says: the publisher's
                        // mistake.
                        for g in &got {
                            let _ = crate::pool::delete(&g.path);
                        }
                        let reason = format!(
                            "the stream does not produce version {} (UUID {want}) as the index says",
                            f.to
                        );
                        give_up(
                            f,
                            &reason,
                            &mut **events.borrow_mut(),
                            &mut refused,
                            &mut excluded,
                        );
                        return Ok(true);
                    }
                    // Committed: its cache file goes, the next may be read ahead.
                    flow.committed(i);
                    state.versions.retain(|v| v.name != f.to);
                    state.versions.push(PulledVersion {
                        name: f.to.clone(),
                        uuid: want,
                        pulled: unix_now(),
                        source: Some(o.source.clone()),
                    });
                    persist_trust(&mut pending_trust)?;
                    state.save(&pool)?;
                    applied_before.set(applied_before.get().saturating_add(w));
                    current.set((i, 0));
                    parsed.set(0);
                    report();
                    let c = flow.step_counts(i);
                    (*events.borrow_mut())(PullEvent::Step {
                        step: i + 1,
                        steps,
                        file: f,
                        fetched: if streaming {
                            c.fetched
                        } else {
                            fetched_here.get()
                        },
                        reused: c.reused,
                    });
                    // Hashed right after the receive, while its data is still in the page
                    // cache; an intermediate step (deleted below) is not worth it.
                    if f.to == target_name || held_at_start.contains(&f.to) {
                        let done = content_pool::index_subvolume(&pool, &f.to, &want, stop_flag)
                            .map_err(MirrorError::content)?;
                        (*events.borrow_mut())(PullEvent::Indexed(&done));
                        indexed.push(done.name);
                    }
                    if p.seeded.is_some() {
                        seeded_outcome = Some(rebuild_stats.get());
                    }
                    received_files.push(f.clone());
                    received_names.push(f.to.clone());
                    (*events.borrow_mut())(PullEvent::Received {
                        step: i + 1,
                        steps,
                        version: &f.to,
                        path: &got[0].path,
                    });
                }
                Ok(false)
            })();
            flow.cancel();
            r
        });
        for (j, mirror, reason) in flow.take_skips() {
            let Some(s) = p.steps.get(j) else { continue };
            skipped_here
                .borrow_mut()
                .push(format!("{mirror} ({}): {reason}", s.file.path));
            (*events.borrow_mut())(PullEvent::MirrorSkipped {
                mirror: &mirror,
                file: Some(&s.file),
                reason: &reason,
            });
        }
        mirrors_skipped.extend(skipped_here.into_inner());
        let c = flow.counts();
        downloaded = downloaded
            .saturating_add(c.fetched)
            .saturating_add(fetched_here.get());
        reused = reused.saturating_add(c.reused);
        if outcome? {
            continue;
        }
    };

    // Intermediate versions received only as steps.
    let mut removed = Vec::new();
    for n in &received_names {
        if *n != target_name
            && !held_at_start.contains(n)
            && crate::pool::delete(&pool.join(n)).is_ok()
        {
            on_event(PullEvent::Removed {
                name: n,
                reason: "intermediate step",
            });
            removed.push(n.clone());
        }
    }
    // Retention: never a version a deployment uses (current, previous).
    if let Some(keep) = o.keep {
        let pinned = crate::deploy::pinned_versions(&pool)?;
        let present = received_in(&pool)?;
        let mut pulled: Vec<(usize, u64, String)> = Vec::new();
        for (name, uuid, _) in &present {
            let Some(rec) = state
                .versions
                .iter()
                .find(|v| &v.name == name && v.uuid == *uuid)
            else {
                continue;
            };
            // Order: position in the index (versions no longer listed count as oldest), then
            // pull time.
            let pos = index.by_uuid(uuid).map_or(0, |p| p + 1);
            pulled.push((pos, rec.pulled, name.clone()));
        }
        pulled.sort();
        let keep = keep.max(1);
        let mut excess = pulled.len().saturating_sub(keep);
        for (_, _, name) in &pulled {
            if excess == 0 {
                break;
            }
            if *name == target_name || pinned.contains(name) {
                continue;
            }
            crate::pool::delete(&pool.join(name))?;
            on_event(PullEvent::Removed {
                name,
                reason: "retention (--keep)",
            });
            removed.push(name.clone());
            excess -= 1;
        }
    }
    let live: HashSet<String> = received_in(&pool)?.into_iter().map(|h| h.0).collect();
    state.versions.retain(|v| live.contains(&v.name));
    persist_trust(&mut pending_trust)?;
    state.save(&pool)?;
    // The cache holds nothing useful once the target is in.
    if let Ok(rd) = fs::read_dir(&cache) {
        for e in rd.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(PullReport {
        path: pool.join(&target_name),
        target: target_name,
        serial: index.serial,
        already,
        plan: None,
        space: None,
        steps: received_files,
        bytes: downloaded,
        reused,
        refused,
        removed,
        indexed,
        deduped,
        resumed: resumed_steps,
        seeded: seeded_outcome,
        mirrors_skipped,
        trust: trust_report,
    })
}
