//! The receiver: turns a command stream into a read-only subvolume under a destination
//! directory — faithfully (the same tree `btrfs receive` makes), safely (nothing outside the new
//! subvolume is ever touched, whatever the stream says) and atomically: all or nothing for the
//! whole input. Each subvolume is sealed at its END (received UUID set, then read-only) under
//! its staging name; only once the whole input was read and applied (and, with a verifying
//! source, verified) are the sealed subvolumes renamed to their final names. Any failure
//! removes every subvolume of the input.
//!
//! The receiver is a [`CommandSink`] ([`Receiver`]) split by job:
//! - [`dest`]: the destination directory, its mount, subvolumes found by UUID;
//! - [`staging`]: the staging subvolume's name, lock, commit sequence and stale cleanup;
//! - [`apply`]: one function per command, on any root directory handle;
//! - [`handles`]: the cached parent-directory and open-file handles;
//! - [`clones`]: which subvolume a CLONE may read from;
//! - [`fuse`]: the filter that creates an inode directly at the name its next RENAME gives it;
//! - [`dedup`]: the filter that turns WRITE data found in seed directories into clones.
//!
//! Staging: each subvolume is received as `.subvol-recv-staging.<pid>.<nonce>` inside DEST,
//! guarded by a lock file beside it that is locked before it appears. On any error or signal
//! the staging subvolume is deleted; after a kill -9 or power loss, the next receive into the
//! same DEST finds staging subvolumes whose lock is free and deletes them (reporting each).
//! Staging subvolumes are never parents or clone sources. With checkpoints
//! ([`Options::checkpoint_bytes`], [`resume`]), an interruption that is not the stream's fault
//! keeps the last checkpoint instead, and so does the cleanup (for 7 days), for a later
//! receive of the same stream to resume from ([`Options::resume`]).
//!
//! Confinement ([`beneath`]): every path is resolved beneath the staging root without following
//! symlinks; files are written only after checking they are regular files; clone sources are the
//! subvolume being received, its parent, earlier subvolumes of the input, or a committed
//! subvolume on DEST's file system whose received UUID the stream names (by its own UUID only
//! with [`Options::clone_from_any`]), and the source path is resolved beneath that subvolume's
//! root; FALLOCATE modes are whitelisted;
//! decoded extents are capped.

pub mod apply;
pub mod beneath;
mod clones;
pub mod decompress;
mod dedup;
mod dest;
mod fuse;
mod handles;
pub mod mounts;
pub mod resume;
mod staging;

pub use resume::{
    DEFAULT_CHECKPOINT_BYTES, Incomplete, KEEP_FOR_SECS, SkipError, Skipped, StreamStart,
    drop_incomplete, list_incomplete, peek_start, skip_checked,
};

use crate::pipeline::{self, CommandSink, Hook, Position, ResumeState, Source, Totals};
use crate::stream::{AttrError, Command, Op, Uuid, proto};
use crate::{Error, ExitCode};
use apply::Tree;
use beneath::{OpenRegularError, PathRefusal};
use decompress::DecodeError;
pub use dedup::DedupStats;
use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Name prefix of staging subvolumes inside DEST.
pub const STAGING_PREFIX: &str = staging::PREFIX;

/// The stream sent a command that needs a subvolume before SUBVOL or SNAPSHOT.
const NO_SUBVOLUME: &str = "command before SUBVOL or SNAPSHOT";

/// Printable form of a stream path for messages (control characters escaped).
fn show(p: &[u8]) -> String {
    crate::util::escape(p)
}

/// What went wrong applying one command. Each kind says whose fault it is: the stream's
/// (malformed, out of place, or refused as unsafe), the host's (a system call, a missing mount
/// or subvolume), or the receiver's own (a bug).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A system call failed (host).
    #[error("{op}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A btrfs ioctl failed (host).
    #[error(transparent)]
    Ioctl(#[from] subvol_ioctl::Error),
    /// The stream asks for something unsafe or unsupported (stream).
    #[error("refused: {0}")]
    Refused(String),
    /// A path that is not a plain path beneath the subvolume (stream).
    #[error("refused path")]
    Path(#[from] PathRefusal),
    /// A malformed command (stream).
    #[error(transparent)]
    Attr(#[from] AttrError),
    /// An encoded extent that cannot be decoded (stream).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A command where the stream may not have one: data before SUBVOL, a new stream header
    /// before END (stream).
    #[error("{0}")]
    OutOfPlace(&'static str),
    /// No btrfs mount shows DEST's file system (host).
    #[error("no btrfs mount found for {}", dest.display())]
    NoMount {
        /// DEST.
        dest: PathBuf,
    },
    /// The parent or a clone source is not on this host's file system (host).
    #[error("cannot find {what} subvolume {uuid}")]
    MissingSubvolume {
        /// "parent" or "clone source".
        what: &'static str,
        /// The UUID the stream names.
        uuid: Uuid,
    },
    /// A state the receiver should never reach (receiver).
    #[error("internal error: {0}")]
    Bug(&'static str),
}

impl Failure {
    /// True when the stream is at fault (malformed, out of place, or refused as unsafe).
    #[must_use]
    pub fn is_stream_fault(&self) -> bool {
        match self {
            Failure::Refused(_)
            | Failure::Path(_)
            | Failure::Attr(_)
            | Failure::Decode(_)
            | Failure::OutOfPlace(_) => true,
            Failure::Os { .. }
            | Failure::Ioctl(_)
            | Failure::NoMount { .. }
            | Failure::MissingSubvolume { .. }
            | Failure::Bug(_) => false,
        }
    }

    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Os { .. } | Failure::Ioctl(_) | Failure::NoMount { .. } => ExitCode::Io,
            Failure::Refused(_) | Failure::Path(_) | Failure::Decode(DecodeError::Geometry(_)) => {
                ExitCode::Refused
            }
            Failure::Attr(_) | Failure::Decode(_) | Failure::OutOfPlace(_) => {
                ExitCode::InvalidStream
            }
            Failure::MissingSubvolume { .. } | Failure::Bug(_) => ExitCode::Failure,
        }
    }
}

fn os(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> Failure {
    move |e| Failure::Os {
        op,
        source: e.into(),
    }
}

/// Errors of resolving a directory beneath the root: a symlink on the way or an escape is a
/// refusal, anything else an OS error.
fn dir_err(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> Failure {
    move |e| match e {
        rustix::io::Errno::LOOP => Failure::Refused(format!("{op}: a path component is a symlink")),
        rustix::io::Errno::XDEV => Failure::Refused(format!("{op}: path leaves the subvolume")),
        other => Failure::Os {
            op,
            source: other.into(),
        },
    }
}

fn regular(op: &'static str) -> impl FnOnce(OpenRegularError) -> Failure {
    move |e| match e {
        OpenRegularError::Os(e) => Failure::Os {
            op,
            source: e.into(),
        },
        OpenRegularError::NotRegular => Failure::Refused(format!("{op}: not a regular file")),
    }
}

/// Errors of the receiver.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The destination cannot be used.
    #[error("{}: {reason}", dest.display())]
    Dest {
        /// DEST.
        dest: PathBuf,
        /// Why.
        reason: String,
        /// The OS error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// A command could not be applied; the staging subvolume was removed.
    #[error("command {index} ({cmd}) at byte {offset}{}", path.as_ref().map(|p| format!(", path '{p}'")).unwrap_or_default())]
    Command {
        /// Command index (0-based over the whole input).
        index: u64,
        /// Byte offset where the command starts.
        offset: u64,
        /// Command name.
        cmd: &'static str,
        /// The stream path concerned (escaped).
        path: Option<String>,
        /// What failed.
        #[source]
        failure: Failure,
    },
    /// Committing a received subvolume failed; it was removed.
    #[error("committing subvolume '{name}'")]
    Commit {
        /// Final name.
        name: String,
        /// What failed.
        #[source]
        failure: Failure,
    },
    /// SIGINT or SIGTERM arrived; the staging subvolume was removed.
    #[error("interrupted by a signal")]
    Interrupted,
    /// With [`Tolerance::max_errors`] other than 1, commands failed and were skipped (each was
    /// reported to [`receive_tolerant`]'s `on_skip`); the input was read to its end.
    #[error("{errors} command(s) failed and were skipped; {}", if *kept { "the subvolumes were committed anyway, incomplete (keep-incomplete)" } else { "nothing was committed" })]
    Incomplete {
        /// How many commands failed.
        errors: u64,
        /// Whether the subvolumes were committed all the same.
        kept: bool,
        /// The exit code of the first failure.
        code: ExitCode,
    },
    /// A `--dedup-from` seed directory cannot be used, or its index cannot be read.
    #[error(transparent)]
    Seed(crate::content::ContentError),
}

impl RecvError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RecvError::Interrupted => ExitCode::Interrupted,
            RecvError::Incomplete { code, .. } => *code,
            RecvError::Dest { .. } | RecvError::Seed(_) => ExitCode::Io,
            RecvError::Command { failure, .. } | RecvError::Commit { failure, .. } => {
                failure.exit_code()
            }
        }
    }

    /// True only when the input stream is at fault (malformed, out of place, or asking for
    /// something refused as unsafe); false for faults of this host (destination, mounts,
    /// missing parent, I/O), interruption and internal errors.
    #[must_use]
    pub fn is_stream_fault(&self) -> bool {
        match self {
            RecvError::Command { failure, .. } | RecvError::Commit { failure, .. } => {
                failure.is_stream_fault()
            }
            RecvError::Dest { .. }
            | RecvError::Seed(_)
            | RecvError::Interrupted
            | RecvError::Incomplete { .. } => false,
        }
    }
}

/// How to receive.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Directory (on btrfs) where subvolumes are created.
    pub dest: PathBuf,
    /// Mount point of DEST's file system (found in mountinfo if None).
    pub root_mount: Option<PathBuf>,
    /// Stop after the first END.
    pub stop_at_end: bool,
    /// Never use encoded writes.
    pub force_decompress: bool,
    /// Set by a signal handler: stop, clean up, return [`RecvError::Interrupted`].
    pub interrupted: Option<Arc<AtomicBool>>,
    /// Let CLONE read from any committed subvolume on DEST's file system that the stream names
    /// by its own UUID, not only from subvolumes received from the same sender.
    pub clone_from_any: bool,
    /// Seed directories (on DEST's mount): WRITE data found in their files is cloned from
    /// there, checked, instead of written.
    pub dedup_from: Vec<PathBuf>,
    /// A content index built beforehand (for example a pool's, see
    /// [`crate::content::pool_index`]), used for dedup like `dedup_from`'s (both when both are
    /// given). Its seeds must be reachable through DEST's mount for clones to happen; a
    /// refused clone is written instead.
    pub dedup_index: Option<crate::content::ContentIndex>,
    /// Take a checkpoint of the subvolume being received at the first point to restart from
    /// after this many input bytes since the last one (see [`resume`]); an interrupted
    /// receive then keeps its last checkpoint for a later resume. None (or 0): no
    /// checkpoints. Only the first subvolume of an input is checkpointed, and not with a
    /// tolerance of failed commands (dedup is fine: it holds nothing back). The source must offer points to restart
    /// from: a [`crate::stream::Reader`] made [`crate::stream::Reader::with_prefix_digest`]
    /// (also beneath a verifying source).
    pub checkpoint_bytes: Option<u64>,
    /// Skip a checkpoint that would bring the time spent taking checkpoints above this share
    /// of the receive's time so far (the next one is assumed to cost what the last did); None:
    /// no limit. A checkpoint commits a btrfs transaction, some tens of milliseconds.
    pub checkpoint_max_share: Option<f64>,
    /// Take up this interrupted receive (from [`list_incomplete`]) instead of starting the
    /// first subvolume: the source must yield the input from [`Incomplete::offset`] on
    /// ([`Incomplete::reader`], under a [`crate::sign::VerifyingSource::resume`] for a
    /// signed stream).
    pub resume: Option<Incomplete>,
}

/// How many failed commands a receive goes past (`btrfs receive -E N`), and what it does with
/// the subvolumes they leave incomplete. Kept apart from [`Options`]: only the command line
/// sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    /// Stop at the Nth failed command (1, the default: at the first; 0: never). Only commands
    /// that fail with an OS error count; an invalid, refused or unverified stream, a failed
    /// SUBVOL/SNAPSHOT or commit, and an interruption always stop at once.
    pub max_errors: u64,
    /// Commit the subvolumes of an input read to its end even though commands failed (what
    /// btrfs receive leaves behind). Otherwise nothing of such an input is committed.
    pub keep_incomplete: bool,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            max_errors: 1,
            keep_incomplete: false,
        }
    }
}

/// Something a caller may want to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stale staging subvolume from a killed receive was deleted.
    StaleRemoved(&'a OsStr),
    /// A subvolume (`snapshot == false`) or snapshot started.
    Started {
        /// Final name.
        name: &'a OsStr,
        /// Incremental?
        snapshot: bool,
    },
    /// Input consumed so far.
    Progress {
        /// Bytes.
        bytes: u64,
        /// Commands.
        commands: u64,
    },
    /// The `--dedup-from` seeds were indexed (before the first command).
    SeedsIndexed {
        /// Regular files indexed.
        files: u64,
        /// Their bytes.
        bytes: u64,
        /// Size of the index on disk.
        index_bytes: u64,
    },
    /// What dedup did (after the input, whether or not it succeeded).
    Deduped(DedupStats),
    /// A checkpoint was taken: a resume restarts at this input offset.
    Checkpoint {
        /// Input offset.
        offset: u64,
        /// How long it took (snapshot, which commits a transaction, and record).
        took: std::time::Duration,
    },
    /// An interrupted receive was taken up again at its checkpoint.
    Resumed {
        /// Final name.
        name: &'a OsStr,
        /// Input offset the receive continues at.
        offset: u64,
    },
    /// An interrupted receive of the same final name was removed (this input starts over).
    IncompleteDropped(&'a str),
    /// The receive failed where it can be resumed: its last checkpoint is kept.
    Kept {
        /// Final name.
        name: &'a OsStr,
        /// Input offset a resume restarts at.
        offset: u64,
    },
}

/// True if a receive that failed with `e` can be taken up again from its last checkpoint: an
/// interruption, an input that ended early or could not be read, a host error (I/O, a full
/// file system). Not for a stream at fault (malformed, refused, failed verification).
#[must_use]
pub fn is_resumable_failure(e: &Error) -> bool {
    use crate::stream::StreamErrorKind as K;
    // A full file system is not resumed: the checkpoint would keep holding the space.
    let full = |errno: Option<i32>| {
        errno.is_some_and(|e| {
            e == rustix::io::Errno::NOSPC.raw_os_error()
                || e == rustix::io::Errno::DQUOT.raw_os_error()
        })
    };
    match e {
        Error::Interrupted | Error::Recv(RecvError::Interrupted) => true,
        Error::Io { source, .. } => !full(source.raw_os_error()),
        Error::Stream(se) => match &se.kind {
            K::Io(e) => !full(e.raw_os_error()),
            K::Truncated { .. } | K::MissingEnd => true,
            _ => false,
        },
        Error::Recv(RecvError::Command { failure, .. }) => match failure {
            Failure::Os { source, .. } => !full(source.raw_os_error()),
            Failure::Ioctl(e) => !full(Some(e.errno())),
            _ => false,
        },
        _ => false,
    }
}

/// Passes the source's points to restart from to the receiver (same thread, item by item).
struct Tap<'s> {
    inner: &'s mut dyn Source,
    cell: Rc<RefCell<Option<ResumeState>>>,
}

impl Source for Tap<'_> {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<crate::stream::Item>, Error> {
        let item = self.inner.next_item(out)?;
        *self.cell.borrow_mut() = if item.is_some() {
            self.inner.resume_state()
        } else {
            None
        };
        Ok(item)
    }
    fn offset(&self) -> u64 {
        self.inner.offset()
    }
    fn commands(&self) -> u64 {
        self.inner.commands()
    }
}

/// A committed subvolume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its name in DEST.
    pub name: OsString,
    /// Its full path.
    pub path: PathBuf,
    /// Received UUID (the sender's UUID).
    pub uuid: Uuid,
    /// Sender's ctransid (stored as stransid).
    pub ctransid: u64,
    /// The parent's UUID for incremental streams.
    pub parent_uuid: Option<Uuid>,
}

/// Receives every subvolume in `source` into `opts.dest`: the receiver sink behind the
/// create+rename fusion filter, pumped once. Returns the committed subvolumes.
///
/// # Errors
/// A destination, stream, command or commit error; every subvolume of the input is removed
/// (nothing is committed unless the whole input succeeded). [`RecvError::Interrupted`] once
/// `opts.interrupted` was set.
pub fn receive(
    source: &mut dyn Source,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Received>, Error> {
    receive_tolerant(source, opts, Tolerance::default(), &mut |_| {}, on_event)
}

/// [`receive`], going past failed commands as `tolerance` says; each skipped command's error
/// goes to `on_skip` as it happens.
///
/// # Errors
/// As [`receive`]; [`RecvError::Incomplete`] when commands failed and were skipped.
pub fn receive_tolerant(
    source: &mut dyn Source,
    opts: &Options,
    tolerance: Tolerance,
    on_skip: &mut dyn FnMut(&Error),
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Received>, Error> {
    // The sink reports subvolumes, the hook progress: both go to the one callback.
    let events = RefCell::new(on_event);
    let mut sink_events = |ev: Event<'_>| (*events.borrow_mut())(ev);
    let mut on_progress = |t: &Totals| {
        (*events.borrow_mut())(Event::Progress {
            bytes: t.bytes,
            commands: t.commands,
        });
    };
    let interrupted = opts.interrupted.as_deref();
    let mut stats = None;
    let cell = Rc::new(RefCell::new(None));
    let mut tap = Tap {
        inner: source,
        cell: Rc::clone(&cell),
    };
    let source = &mut tap;
    let result = Receiver::new(opts, &mut sink_events).and_then(|mut rx| {
        rx.tolerance = tolerance;
        rx.on_skip = Some(on_skip);
        // Dedup holds nothing back (a WRITE is written or cloned before the next command) and
        // reports WRITEs it applied in parts (`SeedTarget::applied`): checkpoints work behind it.
        if tolerance.max_errors == 1 {
            rx.checkpoint_every = opts.checkpoint_bytes.filter(|&b| b > 0);
            rx.resume_cell = cell;
        }
        let mut hook = Hook::none().progress(&mut on_progress);
        if let Some(flag) = interrupted {
            hook = hook.cancel(flag);
        }
        let (pumped, rx) = if opts.dedup_from.is_empty() && opts.dedup_index.is_none() {
            let mut sink = fuse::Fuse::new(rx);
            let pumped = pipeline::pump(source, &mut sink, &mut hook);
            (pumped, sink.into_inner())
        } else {
            let seeds = if opts.dedup_from.is_empty() {
                None
            } else {
                let index = dedup::index_seeds(rx.dest.path(), &opts.dedup_from, interrupted)?;
                (*events.borrow_mut())(Event::SeedsIndexed {
                    files: index.files(),
                    bytes: index.bytes(),
                    index_bytes: index.disk_bytes(),
                });
                Some(index)
            };
            let index =
                crate::content::ContentIndex::join(seeds.iter().chain(opts.dedup_index.as_ref()))
                    .map_err(RecvError::Seed)?;
            let mut sink = fuse::Fuse::new(dedup::Dedup::new(rx, index));
            let pumped = pipeline::pump(source, &mut sink, &mut hook);
            let (rx, s) = sink.into_inner().into_parts();
            stats = Some(s);
            (pumped, rx)
        };
        // Dropping the receiver removes an uncommitted staging subvolume before we return,
        // unless it can be resumed.
        let mut rx = rx;
        if let Err(e) = &pumped
            && (is_resumable_failure(e) || interrupted.is_some_and(|f| f.load(Ordering::Relaxed)))
        {
            rx.keep_for_resume();
        }
        let received = rx.into_received();
        pumped.map(|_| received)
    });
    if let Some(s) = stats {
        (*events.borrow_mut())(Event::Deduped(s));
    }
    // However the input ended (the reader thread also stops on the flag), a set flag means
    // the user asked to stop (nothing was committed unless the whole input was).
    if result.is_err() && interrupted.is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Err(RecvError::Interrupted.into());
    }
    result
}

/// The receiver as a [`CommandSink`]: SUBVOL/SNAPSHOT start a staging subvolume, commands are
/// applied beneath its root, END seals it, [`CommandSink::finish`] commits every sealed one.
/// Dropping it (or [`CommandSink::abort`]) removes every uncommitted staging subvolume.
pub struct Receiver<'a> {
    dest: dest::Dest,
    stop_at_end: bool,
    force_decompress: bool,
    clone_from_any: bool,
    interrupted: Option<Arc<AtomicBool>>,
    current: Option<Current>,
    /// Sealed subvolumes of this input, committed together at the end.
    staged: Vec<staging::Staging>,
    /// A stream header not (yet) followed by any command: where it starts.
    bare_header: Option<u64>,
    done: Vec<Received>,
    /// Where the last command ended (for a stream that stops without END).
    end_offset: u64,
    tolerance: Tolerance,
    /// Commands that failed and were skipped, and the first one's exit code.
    skipped: Option<(u64, ExitCode)>,
    on_skip: Option<&'a mut dyn FnMut(&Error)>,
    on_event: &'a mut dyn FnMut(Event<'_>),
    /// Checkpoint every this many input bytes (None: never).
    checkpoint_every: Option<u64>,
    /// Input offset of the last checkpoint (or of the resume).
    last_checkpoint: u64,
    /// See [`Options::checkpoint_max_share`]; when the receive started, the time spent in
    /// checkpoints, and the last one's.
    checkpoint_share: Option<f64>,
    started: std::time::Instant,
    checkpoint_spent: std::time::Duration,
    checkpoint_last: std::time::Duration,
    /// Where the input could restart after the item last read (see [`Tap`]).
    resume_cell: Rc<RefCell<Option<ResumeState>>>,
    /// The subvolume being received when the input failed: removed when the receiver is
    /// dropped, or kept for resume ([`Receiver::keep_for_resume`]).
    aborted: Option<Current>,
}

impl std::fmt::Debug for Receiver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("dest", &self.dest.path())
            .field("receiving", &self.current.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The subvolume being received. Field order matters: the tree's and clone sources' handles
/// are closed before the staging subvolume is removed on drop.
struct Current {
    tree: Tree,
    clones: clones::CloneSources,
    staging: staging::Staging,
}

impl<'a> Receiver<'a> {
    /// Opens `opts.dest` (which must be on btrfs) and removes stale staging subvolumes there
    /// (reporting each to `on_event`). Cancel through the pump's [`Hook`]; `opts.interrupted`,
    /// if set, only keeps [`CommandSink::finish`] from committing.
    ///
    /// # Errors
    /// [`RecvError::Dest`].
    pub fn new(
        opts: &Options,
        on_event: &'a mut dyn FnMut(Event<'_>),
    ) -> Result<Receiver<'a>, Error> {
        let mut dest = dest::Dest::open(&opts.dest, opts.root_mount.clone())?;
        staging::remove_stale(&dest, on_event)?;
        let mut current = None;
        let mut last_checkpoint = 0;
        if let Some(inc) = &opts.resume {
            let (staging, root) = staging::Staging::adopt(&dest, inc)?;
            let parent = match inc.parent_uuid {
                Some(p) => {
                    let fd = dest.open_subvol_by_uuid(&p, "parent", true).map_err(|f| {
                        RecvError::Dest {
                            dest: opts.dest.clone(),
                            reason: format!("resuming {}: {f}", inc.name),
                            source: None,
                        }
                    })?;
                    Some((p, fd))
                }
                None => None,
            };
            current = Some(Current {
                tree: Tree::new(root, opts.force_decompress),
                clones: clones::CloneSources::new(inc.uuid, parent, opts.clone_from_any),
                staging,
            });
            last_checkpoint = inc.offset;
            on_event(Event::Resumed {
                name: OsStr::new(&inc.name),
                offset: inc.offset,
            });
        }
        Ok(Receiver {
            dest,
            stop_at_end: opts.stop_at_end,
            force_decompress: opts.force_decompress,
            clone_from_any: opts.clone_from_any,
            interrupted: opts.interrupted.clone(),
            current,
            staged: Vec::new(),
            bare_header: None,
            done: Vec::new(),
            end_offset: last_checkpoint,
            tolerance: Tolerance::default(),
            skipped: None,
            on_skip: None,
            on_event,
            checkpoint_every: None,
            last_checkpoint,
            checkpoint_share: opts.checkpoint_max_share,
            started: std::time::Instant::now(),
            checkpoint_spent: std::time::Duration::ZERO,
            // Until one was taken: what one costs on an idle SSD, give or take.
            checkpoint_last: std::time::Duration::from_millis(50),
            resume_cell: Rc::default(),
            aborted: None,
        })
    }

    /// The input failed where it can be resumed: keeps the last checkpoint of the subvolume
    /// being received (if one was taken) when the receiver is dropped.
    pub fn keep_for_resume(&mut self) {
        if let Some(cur) = self.aborted.as_mut()
            && cur.staging.keep_for_resume()
        {
            (self.on_event)(Event::Kept {
                name: cur.staging.name(),
                offset: self.last_checkpoint,
            });
        }
    }

    /// After the command before index `next_index` was applied: takes a checkpoint if the
    /// source offered a point to restart from right there and enough input passed.
    fn maybe_checkpoint(&mut self, next_index: u64) -> Result<(), Error> {
        let Some(every) = self.checkpoint_every else {
            return Ok(());
        };
        let offset = match self.resume_cell.borrow().as_ref() {
            Some(s) if s.index == next_index => s.reader.offset,
            _ => return Ok(()),
        };
        if offset.saturating_sub(self.last_checkpoint) < every
            || !self.staged.is_empty()
            || self.skipped.is_some()
        {
            return Ok(());
        }
        if let Some(share) = self.checkpoint_share {
            let next = (self.checkpoint_spent + self.checkpoint_last).as_secs_f64();
            if next > share * self.started.elapsed().as_secs_f64() {
                return Ok(());
            }
        }
        let Some(state) = self.resume_cell.borrow_mut().take() else {
            return Ok(());
        };
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let t = std::time::Instant::now();
        cur.staging.checkpoint(&self.dest, cur.tree.root(), state)?;
        let took = t.elapsed();
        self.checkpoint_last = took;
        self.checkpoint_spent += took;
        self.last_checkpoint = offset;
        (self.on_event)(Event::Checkpoint { offset, took });
        Ok(())
    }

    /// The subvolumes committed so far; an uncommitted one is removed.
    #[must_use]
    pub fn into_received(mut self) -> Vec<Received> {
        std::mem::take(&mut self.done)
    }

    fn current(&mut self) -> Result<&mut Current, Failure> {
        self.current
            .as_mut()
            .ok_or(Failure::OutOfPlace(NO_SUBVOLUME))
    }

    /// Starts a staging subvolume (empty, or a writable snapshot of `parent`).
    fn start(
        &mut self,
        path: &[u8],
        uuid: Uuid,
        ctransid: u64,
        parent: Option<Uuid>,
    ) -> Result<OsString, Failure> {
        // An interrupted receive of the same name is not this one's (or it would have been
        // resumed): this input starts over.
        let dropped =
            resume::drop_where(&self.dest, |b| b.name.as_bytes() == path).map_err(|e| {
                Failure::Os {
                    op: "remove an interrupted receive of the same name",
                    source: io::Error::other(e.to_string()),
                }
            })?;
        for name in &dropped {
            (self.on_event)(Event::IncompleteDropped(name));
        }
        // An earlier subvolume of this input (sealed, not yet committed), else a committed one.
        let parent = match parent {
            Some(p) => {
                let sealed = self
                    .staged
                    .iter()
                    .rev()
                    .find(|s| s.uuid() == p)
                    .and_then(staging::Staging::sealed_root);
                let fd = match sealed {
                    Some(root) => root.try_clone_to_owned().map_err(|e| Failure::Os {
                        op: "dup",
                        source: e,
                    })?,
                    None => self.dest.open_subvol_by_uuid(&p, "parent", true)?,
                };
                Some((p, fd))
            }
            None => None,
        };
        let (staging, root) = staging::Staging::create(
            &self.dest,
            path,
            uuid,
            ctransid,
            parent.as_ref().map(|(u, fd)| (*u, fd.as_fd())),
        )?;
        let name = staging.name().to_os_string();
        self.current = Some(Current {
            tree: Tree::new(root, self.force_decompress),
            clones: clones::CloneSources::new(uuid, parent, self.clone_from_any),
            staging,
        });
        Ok(name)
    }

    /// END (or a new SUBVOL in a `send -e` stream): seals the subvolume being received (received
    /// UUID, read-only) and keeps it staged until the whole input succeeded.
    fn seal_current(&mut self) -> Result<(), Error> {
        let Some(Current {
            tree,
            clones,
            mut staging,
        }) = self.current.take()
        else {
            return Ok(());
        };
        drop(clones);
        staging
            .seal(tree.into_root())
            .map_err(|failure| RecvError::Commit {
                name: show(staging.name().as_bytes()),
                failure,
            })?;
        self.staged.push(staging);
        Ok(())
    }

    /// The whole input succeeded: renames every sealed subvolume to its final name. If one
    /// cannot be, those already renamed are taken back and all are removed.
    fn commit_staged(&mut self) -> Result<(), Error> {
        for i in 0..self.staged.len() {
            match self.staged[i].commit(&self.dest) {
                Ok(received) => self.done.push(received),
                Err(failure) => {
                    let name = show(self.staged[i].name().as_bytes());
                    for s in &mut self.staged[..i] {
                        s.uncommit();
                    }
                    self.done.clear();
                    self.staged.clear();
                    return Err(RecvError::Commit { name, failure }.into());
                }
            }
        }
        // Committed: dropping them removes only their lock files.
        self.staged.clear();
        Ok(())
    }

    /// A command failed with an OS error: skips it (reporting it) while the tolerance allows,
    /// as btrfs receive does with -E; the Nth failure stops.
    fn skip(&mut self, e: Error) -> Result<ControlFlow<()>, Error> {
        let max = self.tolerance.max_errors;
        let (errors, _) = self.skipped.get_or_insert((0, e.exit_code()));
        *errors += 1;
        if max > 0 && *errors >= max {
            return Err(e);
        }
        if let Some(f) = self.on_skip.as_mut() {
            f(&e);
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Notes a command applied outside [`CommandSink::command`] (by a filter, in parts).
    fn seen(&mut self, c: &Command, at: Position) {
        self.bare_header = None;
        self.end_offset = at.offset + (proto::CMD_HEADER_LEN + c.payload().len()) as u64;
    }

    /// Applies a command that is not SUBVOL, SNAPSHOT or END.
    fn apply(&mut self, op: &Op<'_>) -> Result<(), Failure> {
        let cur = self
            .current
            .as_mut()
            .ok_or(Failure::OutOfPlace(NO_SUBVOLUME))?;
        if let Op::Clone {
            path,
            offset,
            len,
            clone_uuid,
            clone_path,
            clone_offset,
            ..
        } = *op
        {
            let Current { tree, clones, .. } = cur;
            let source = clones.root_for(clone_uuid, &mut self.dest, &self.staged)?;
            return tree.clone_range(path, offset, len, source, clone_path, clone_offset);
        }
        cur.tree.apply(op)
    }
}

impl Drop for Receiver<'_> {
    fn drop(&mut self) {
        // Close the tree's handles before the staging subvolume goes (see `Current`).
        self.current = None;
        self.aborted = None;
        self.staged.clear();
    }
}

/// A receiver error for command `c` at `at`.
fn command_error(c: &Command, at: Position, path: Option<&[u8]>, failure: Failure) -> Error {
    RecvError::Command {
        index: at.index,
        offset: at.offset,
        cmd: c.name(),
        path: path.map(show),
        failure,
    }
    .into()
}

impl CommandSink for Receiver<'_> {
    fn header(&mut self, _version: u32, at: Position) -> Result<(), Error> {
        self.bare_header = Some(at.offset);
        Ok(())
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        self.bare_header = None;
        self.end_offset = at.offset + (proto::CMD_HEADER_LEN + c.payload().len()) as u64;
        let op = c.op().map_err(|e| command_error(c, at, None, e.into()))?;
        match op {
            Op::Subvol {
                path,
                uuid,
                ctransid,
            } => {
                self.seal_current()?;
                let name = self
                    .start(path, uuid, ctransid, None)
                    .map_err(|f| command_error(c, at, Some(path), f))?;
                (self.on_event)(Event::Started {
                    name: &name,
                    snapshot: false,
                });
            }
            Op::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                ..
            } => {
                self.seal_current()?;
                let name = self
                    .start(path, uuid, ctransid, Some(clone_uuid))
                    .map_err(|f| command_error(c, at, Some(path), f))?;
                (self.on_event)(Event::Started {
                    name: &name,
                    snapshot: true,
                });
            }
            Op::End => {
                self.seal_current()?;
                if self.stop_at_end {
                    return Ok(ControlFlow::Break(()));
                }
            }
            _ => {
                if let Err(f) = self.apply(&op) {
                    let skip = matches!(f, Failure::Os { .. } | Failure::Ioctl(_));
                    let e = command_error(c, at, apply::path_of(&op), f);
                    return if skip { self.skip(e) } else { Err(e) };
                }
                self.maybe_checkpoint(at.index + 1)?;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn finish(&mut self) -> Result<(), Error> {
        // A subvolume without END, or a stream header after END with nothing after it: the
        // input is incomplete, and nothing of it is committed.
        let incomplete = if self.current.is_some() {
            Some(self.end_offset)
        } else {
            self.bare_header
        };
        if let Some(offset) = incomplete {
            self.abort();
            return Err(crate::stream::StreamError {
                offset,
                index: None,
                cmd_name: None,
                kind: crate::stream::StreamErrorKind::MissingEnd,
            }
            .into());
        }
        // A signal may have ended the input early at a command boundary.
        if self
            .interrupted
            .as_deref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            self.abort();
            return Err(RecvError::Interrupted.into());
        }
        if let Some((errors, code)) = self.skipped {
            let kept = self.tolerance.keep_incomplete;
            if kept {
                self.commit_staged()?;
            } else {
                self.abort();
            }
            return Err(RecvError::Incomplete { errors, kept, code }.into());
        }
        self.commit_staged()
    }

    fn abort(&mut self) {
        // Removed when the receiver is dropped, unless kept for resume.
        self.aborted = self.current.take();
        self.staged.clear();
    }
}

impl fuse::CreateRenamed for Receiver<'_> {
    fn create_renamed(
        &mut self,
        create: &Command,
        rename: &Command,
        rename_at: Position,
    ) -> Result<bool, Error> {
        let (Ok(op), Ok(Op::Rename { to, .. })) = (create.op(), rename.op()) else {
            return Ok(false);
        };
        let Some(what) = apply::Create::of(&op) else {
            return Ok(false);
        };
        let cur = self
            .current()
            .map_err(|f| command_error(rename, rename_at, Some(to), f))?;
        let created = cur
            .tree
            .create(to, &what, true)
            .map_err(|f| command_error(rename, rename_at, Some(to), f))?;
        if created {
            self.maybe_checkpoint(rename_at.index + 1)?;
        }
        Ok(created)
    }
}

impl dedup::SeedTarget for Receiver<'_> {
    fn write_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        self.seen(c, at);
        self.current()
            .and_then(|cur| cur.tree.write(path, offset, data))
            .map_err(|f| command_error(c, at, Some(path), f))
    }

    fn clone_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        src: std::os::fd::BorrowedFd<'_>,
        src_offset: u64,
        len: u64,
    ) -> Result<bool, Error> {
        self.seen(c, at);
        match self
            .current()
            .and_then(|cur| cur.tree.clone_from_file(path, offset, len, src, src_offset))
        {
            Ok(()) => Ok(true),
            // Refused by the file system (alignment, another mount): the caller writes instead.
            Err(Failure::Ioctl(_)) => Ok(false),
            Err(f) => Err(command_error(c, at, Some(path), f)),
        }
    }

    fn read_part(
        &mut self,
        c: &Command,
        at: Position,
        path: &[u8],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        self.current()
            .and_then(|cur| cur.tree.read_at(path, offset, buf))
            .map_err(|f| command_error(c, at, Some(path), f))
    }

    fn applied(&mut self, _c: &Command, at: Position) -> Result<(), Error> {
        self.maybe_checkpoint(at.index + 1)
    }
}

/// Re-exported for callers that only need to know the staging naming rule.
#[must_use]
pub fn is_staging_name(name: &Path) -> bool {
    name.as_os_str()
        .as_bytes()
        .starts_with(STAGING_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_failure(failure: Failure) -> RecvError {
        RecvError::Command {
            index: 0,
            offset: 0,
            cmd: "write",
            path: None,
            failure,
        }
    }

    #[test]
    fn faults_are_classified_by_whose_they_are() {
        let stream = [
            Failure::Refused("x".into()),
            Failure::Path(PathRefusal::DotDot),
            Failure::OutOfPlace(NO_SUBVOLUME),
        ];
        for f in stream {
            let code = f.exit_code();
            let e = command_failure(f);
            assert!(e.is_stream_fault(), "{e}");
            assert!(matches!(code, ExitCode::Refused | ExitCode::InvalidStream));
        }
        let host = [
            (Failure::NoMount { dest: "/d".into() }, ExitCode::Io),
            (
                Failure::MissingSubvolume {
                    what: "parent",
                    uuid: Uuid::default(),
                },
                ExitCode::Failure,
            ),
            (Failure::Bug("x"), ExitCode::Failure),
            (
                Failure::Os {
                    op: "write",
                    source: io::ErrorKind::StorageFull.into(),
                },
                ExitCode::Io,
            ),
        ];
        for (f, code) in host {
            let e = command_failure(f);
            assert!(!e.is_stream_fault(), "{e}");
            assert_eq!(e.exit_code(), code, "{e}");
        }
        assert!(!RecvError::Interrupted.is_stream_fault());
        assert_eq!(RecvError::Interrupted.exit_code(), ExitCode::Interrupted);
    }

    #[test]
    fn paths_are_escaped_as_btrfs_progs_prints_them() {
        assert_eq!(show(b"a b\\c\n\x01\xff"), "a b\\\\c\\012\\001\\377");
    }
}
