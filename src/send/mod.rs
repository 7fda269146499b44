//! Stream sources: the kernel send ioctl ([`kernel`]) and the directory-tree sources (full and
//! incremental) that make a standard send stream from plain directories on any file system.
//!
//! # Tree streams
//!
//! [`send_tree`] walks SOURCE (metadata only, state per file), then writes:
//!
//! * **full**: `SUBVOL`, the root's owner and mode, then every entry in depth-first name order,
//!   created directly under its final name, with the kernel's per-inode command order (create,
//!   extra hard links as LINK when reached, xattrs, data, TRUNCATE, CHOWN, CHMOD,
//!   `security.capability`, UTIMES; directory UTIMES once their contents are complete, the root
//!   last). Data ranges come from SEEK_DATA/SEEK_HOLE, holes are never written. Files of equal
//!   size are hashed, and a file whose content and hole layout equal an already sent file's is
//!   sent as one CLONE of the whole file (so the only unaligned part is the tail at EOF).
//!   Otherwise content is deduplicated block by block: a 4 KiB block at an aligned offset (or
//!   a tail at EOF) whose content an already sent file holds at an aligned offset is cloned
//!   from there, adjacent blocks merged into one CLONE (see `dedupe.rs`: a bounded index of
//!   block hashes, every candidate verified byte for byte before it is used).
//! * **incremental** (with a parent tree OLD): `SNAPSHOT` of OLD, then the operations turning
//!   OLD into NEW. Inodes of OLD and NEW are matched (same path and type; equal content for
//!   moved files; most children in common for moved directories); unmatched OLD inodes are
//!   deleted, unmatched NEW inodes created, matched ones moved and updated. Entries that must
//!   move first go to a temporary name in the root (`o<ino>-<n>-0`, as the kernel's orphans),
//!   which makes swaps and cycles (parent/child inversions) safe. Contents of matched files are
//!   compared block by block: equal blocks are not sent, new holes punched (v2 FALLOCATE; v1
//!   truncates to the first new hole and rewrites the rest), sizes truncated or extended, and
//!   changed blocks cloned when OLD (from the parent snapshot) or NEW (a file already sent)
//!   holds their content at an aligned offset, else written. New files whose content equals a
//!   file of OLD, or one already sent, are cloned from it whole; other new files block by block
//!   like changed ones. Blocks of OLD files are indexed before the first command (the likeliest
//!   sources first, within a read budget proportional to what is to be sent).
//!
//! Files that change while they are read (size, mtime or ctime differ from the walk) fail the
//! send with [`SendError::FileChanged`] naming the path.
//!
//! ## The tree UUID rule
//!
//! A tree has no UUID of its own, but receivers record the SUBVOL/SNAPSHOT UUID as the received
//! UUID and find the parent of an incremental stream by it. So the UUID must be a function of
//! the tree: it is **the first 16 bytes of a SHA-256 over the tree's metadata listing** (every
//! entry's name, type, mode, owner, size, mtime, device number, symlink target, xattrs and
//! hard-link structure, in name order), marked as an RFC 9562 version-8 UUID. Sending the same
//! unchanged tree twice gives the same UUID; the incremental stream from OLD names OLD's UUID
//! by the same rule, which is what the receiver of OLD's full stream recorded. `--uuid` and
//! `--parent-uuid` override the rule (for example to chain onto a kernel-made snapshot). The
//! stream's CTRANSID is the tree's newest mtime in seconds, by the same reasoning.

use crate::ExitCode;
use crate::pipeline::{CommandSink, Hook, Totals};
use crate::util::fs::PathError;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;

mod content;
mod dedupe;
mod emit;
mod full;
mod incr;
pub mod kernel;
mod tree;

pub use crate::stream::Uuid;

/// Errors of the stream sources. Each names the operation and the path where it applies.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A file-system operation on a source path failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A file changed between the walk and the end of reading it.
    #[error("{}: file changed while being sent ({what} differs from the walk)", path.display())]
    FileChanged {
        /// The source path.
        path: PathBuf,
        /// What differed.
        what: &'static str,
    },
    /// An entry the stream format cannot carry.
    #[error("{}: {what}", path.display())]
    Unsupported {
        /// The source path.
        path: PathBuf,
        /// What is not supported.
        what: &'static str,
    },
    /// A command could not be encoded (a path or value longer than a TLV can carry).
    #[error("encoding {}", path.display())]
    Encode {
        /// The stream path.
        path: PathBuf,
        /// The encoding problem.
        #[source]
        source: crate::stream::AttrError,
    },
    /// Writing the stream failed.
    #[error("writing the stream")]
    Output(#[source] io::Error),
    /// The kernel send ioctl (or a lookup it needs) failed.
    #[error("{op} {}", path.display())]
    Kernel {
        /// What was being done.
        op: &'static str,
        /// The subvolume.
        path: PathBuf,
        /// The ioctl error (with errno).
        #[source]
        source: subvol_ioctl::Error,
    },
    /// The request itself is not valid (bad option combination, unsupported protocol).
    #[error("{0}")]
    Invalid(String),
    /// `-c` without `-p`: no clone source can be the parent of this subvolume (it is not a
    /// snapshot of a clone source, and no clone source is a snapshot of its source). btrfs
    /// send fails the same way ("parent determination failed").
    #[error(
        "{}: no parent among the clone sources (neither its snapshot source nor a snapshot of that source is one of them); give -p PARENT",
        path.display()
    )]
    NoParent {
        /// The subvolume to send.
        path: PathBuf,
    },
    /// The sink the commands went to failed (a signer refusing its input, a receiver), or
    /// the send was cancelled ([`crate::Error::Interrupted`]).
    #[error(transparent)]
    Sink(Box<crate::Error>),
}

impl SendError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SendError::Io(_) | SendError::FileChanged { .. } | SendError::Output(_) => ExitCode::Io,
            SendError::Kernel { .. } => ExitCode::Io,
            SendError::Unsupported { .. }
            | SendError::Encode { .. }
            | SendError::Invalid(_)
            | SendError::NoParent { .. } => ExitCode::Failure,
            SendError::Sink(e) => e.exit_code(),
        }
    }

    /// True when the stream's reader went away (`subvol send ... | head`).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            SendError::Output(e) => e.kind() == io::ErrorKind::BrokenPipe,
            SendError::Sink(e) => e.is_broken_pipe(),
            _ => false,
        }
    }
}

/// Options of a tree send.
#[derive(Clone, Debug, Default)]
pub struct TreeSendOptions {
    /// Stream protocol version: 1 or 2.
    pub version: u32,
    /// Send UPDATE_EXTENT instead of WRITE (metadata-only stream, like `--no-data`).
    pub no_data: bool,
    /// The new tree's UUID instead of the derived one.
    pub uuid: Option<Uuid>,
    /// The parent tree's UUID instead of the derived one.
    pub parent_uuid: Option<Uuid>,
    /// Subvolume name in SUBVOL/SNAPSHOT (default: the source directory's name).
    pub name: Option<Vec<u8>>,
    /// Send each inode's mtime as its ATIME, CTIME and OTIME too (and compare only mtimes in
    /// incremental sends): a copy's ctimes are when it was made and atimes change when a tree
    /// is read (`cp` of it, for one), so streams of the same tree would differ from copy to
    /// copy. Publish sends from its copy in the tree store; receivers cannot set ctime or
    /// otime anyway.
    pub mtime_only: bool,
}

/// What a send produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendSummary {
    /// Bytes of stream written.
    pub bytes: u64,
    /// Commands written (END included).
    pub commands: u64,
    /// The UUID in SUBVOL/SNAPSHOT.
    pub uuid: Uuid,
    /// The parent UUID (CLONE_UUID of SNAPSHOT) of an incremental stream.
    pub parent_uuid: Option<Uuid>,
}

/// Makes a send stream from the directory tree `source`, full or incremental from `parent`,
/// and emits its commands into `sink`: a [`crate::stream::Writer`] for plain output, a
/// [`crate::sign::Signer`] to sign while sending. The sink is finished at the end (aborted on
/// an error). `hook` gets the progress (bytes and commands of the stream as emitted, signature
/// blocks not counted) and may cancel.
///
/// # Errors
/// A source file that cannot be read or changes while being read, or a sink error
/// ([`SendError::Output`] for an output error).
pub fn send_tree<K: CommandSink>(
    source: &std::path::Path,
    parent: Option<&std::path::Path>,
    opts: &TreeSendOptions,
    mut sink: K,
    hook: &mut Hook<'_>,
) -> Result<SendSummary, SendError> {
    let mut step = |t: &Totals| {
        if hook.cancelled() {
            return ControlFlow::Break(());
        }
        hook.tick(t, false);
        ControlFlow::Continue(())
    };
    let r = send_tree_into(source, parent, opts, &mut sink, &mut step);
    match &r {
        Ok(s) => hook.tick(
            &Totals {
                streams: 1,
                commands: s.commands,
                bytes: s.bytes,
                max_version: opts.version,
            },
            true,
        ),
        Err(_) => sink.abort(),
    }
    r
}

fn send_tree_into<K: CommandSink>(
    source: &std::path::Path,
    parent: Option<&std::path::Path>,
    opts: &TreeSendOptions,
    sink: &mut K,
    step: &mut emit::Step<'_>,
) -> Result<SendSummary, SendError> {
    if !(1..=2).contains(&opts.version) {
        return Err(SendError::Invalid(format!(
            "protocol version {} is not supported for tree sends (use 1 or 2)",
            opts.version
        )));
    }
    let scan = |p| {
        let mut t = tree::Tree::scan(p)?;
        if opts.mtime_only {
            for i in &mut t.inodes {
                i.atime = i.mtime;
            }
        }
        Ok::<_, SendError>(t)
    };
    let new = scan(source)?;
    match parent {
        None => full::send_full(&new, opts, sink, step),
        Some(p) => {
            let old = scan(p)?;
            incr::send_incremental(&old, &new, opts, sink, step)
        }
    }
}

/// The UUID a tree send of `source` would use by the documented rule (see the module docs).
///
/// # Errors
/// The tree cannot be walked.
pub fn tree_uuid(source: &std::path::Path) -> Result<Uuid, SendError> {
    Ok(tree::Tree::scan(source)?.derived_uuid())
}

/// The subvolume name for SUBVOL/SNAPSHOT: the option, else the source's last component.
fn subvol_name(t: &tree::Tree, opts: &TreeSendOptions) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(n) = &opts.name {
        return n.clone();
    }
    let canon = std::fs::canonicalize(&t.root).unwrap_or_else(|_| t.root.clone());
    canon
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| b"root".to_vec())
}
