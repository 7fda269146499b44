//! Kernel send: drives `BTRFS_IOC_SEND` on read-only subvolumes and copies the stream to the
//! output, with the same ioctl arguments `btrfs send` (progs v6.2) uses, so the output is byte
//! for byte what `btrfs send` writes with the same options and subvolumes.
//!
//! As `btrfs send A B ...`: each subvolume gets its own ioctl, in order, into the one output.
//! Without `-p` but with `-c`, each subvolume's parent is picked among the clone sources (its
//! snapshot source if that is one, else the clone source that is a sibling snapshot whose
//! ctransid is nearest to the common source's), and every subvolume sent is a clone source for
//! the ones after it. The streams are concatenated whole (header to END) unless
//! [`KernelSendOptions::one_stream`] (`-e`) asks for a single header and END around them all.
//!
//! The ioctl writes the whole stream from inside the call, so it runs on a helper thread writing
//! into a pipe while this thread drains the pipe into the output. If the output fails (for
//! example the reader of a pipe went away), the pipe is closed and the kernel stops with EPIPE.

use super::SendError;
use crate::pipeline::{CommandSink, Hook, Totals, pump};
use crate::stream::Reader;
use crate::util::fs::PathError;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use subvol_ioctl::Uuid;

/// What `btrfs send` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct KernelSendOptions {
    /// Parent subvolume of an incremental send (`-p`).
    pub parent: Option<PathBuf>,
    /// Extra clone sources (`-c`).
    pub clone_sources: Vec<PathBuf>,
    /// Protocol version (`--proto`; 0 = highest the kernel supports). None: 1, or 2 with
    /// `compressed`.
    pub proto: Option<u32>,
    /// Send compressed extents as ENCODED_WRITE (`--compressed-data`).
    pub compressed: bool,
    /// No file data: UPDATE_EXTENT instead of WRITE (`--no-data`).
    pub no_data: bool,
    /// Several subvolumes as one stream (`-e`): the header before the first only, END after
    /// the last only. Otherwise each subvolume's stream is whole.
    pub one_stream: bool,
}

/// What parent determination needs of a subvolume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RootIds {
    id: u64,
    uuid: Uuid,
    parent_uuid: Uuid,
    ctransid: u64,
}

/// The parent btrfs-progs picks for subvolume `root` among `clone_roots` when `-c` is given
/// without `-p`: `root`'s snapshot source if it is a clone source; otherwise, of the clone
/// sources that are snapshots of that same source, the one whose ctransid is nearest to the
/// source's (the first of equals). None when `root` has no (existing) snapshot source or no
/// clone source qualifies; progs then fails the send.
fn good_parent(roots: &[RootIds], root: u64, clone_roots: &[u64]) -> Option<u64> {
    let by_id = |id: u64| roots.iter().find(|r| r.id == id);
    let source_of = |r: &RootIds| {
        (!r.parent_uuid.is_nil())
            .then(|| roots.iter().find(|p| p.uuid == r.parent_uuid))
            .flatten()
    };
    let source = source_of(by_id(root)?)?;
    if clone_roots.contains(&source.id) {
        return Some(source.id);
    }
    let mut best: Option<(u64, u64)> = None;
    for &c in clone_roots {
        let Some(clone) = by_id(c) else { continue };
        if source_of(clone).map(|p| p.id) != Some(source.id) {
            continue;
        }
        let diff = clone.ctransid.abs_diff(source.ctransid);
        if best.is_none_or(|(_, d)| diff < d) {
            best = Some((c, diff));
        }
    }
    best.map(|(id, _)| id)
}

/// Every subvolume of the file system `fs` is on, as parent determination needs them.
fn list_roots(fs: &File, p: &Path) -> Result<Vec<RootIds>, SendError> {
    let list = subvol_ioctl::list_subvolumes(fs).map_err(|source| SendError::Kernel {
        op: "list the subvolumes (to pick a parent among the clone sources) of",
        path: p.to_path_buf(),
        source,
    })?;
    Ok(list
        .into_iter()
        .map(|e| RootIds {
            id: e.id,
            uuid: e.uuid,
            parent_uuid: e.parent_uuid,
            ctransid: e.ctransid,
        })
        .collect())
}

/// One ioctl of a send: the subvolume and its arguments.
struct KernelSend {
    subvol: PathBuf,
    file: File,
    parent_root: u64,
    clone_roots: Vec<u64>,
    flags: u64,
}

/// The ioctls `btrfs send` makes for `subvols` with `opts`, in order (see the module text).
/// Also returns the protocol version, the same for all.
fn plan(
    subvols: &[PathBuf],
    opts: &KernelSendOptions,
) -> Result<(Vec<KernelSend>, u32), SendError> {
    let (flags, version) = flags_and_version(opts)?;
    let mut clone_roots = Vec::new();
    for c in &opts.clone_sources {
        let f = open_subvol(c)?;
        clone_roots.push(root_id(&f, c)?);
    }
    let mut parent_root = 0;
    if let Some(p) = &opts.parent {
        let f = open_subvol(p)?;
        parent_root = root_id(&f, p)?;
        // progs adds the parent to the clone sources.
        if !clone_roots.contains(&parent_root) {
            clone_roots.push(parent_root);
        }
    }
    let pick_parent = opts.parent.is_none() && !opts.clone_sources.is_empty();
    let mut roots = None;
    let mut steps = Vec::with_capacity(subvols.len());
    for (i, s) in subvols.iter().enumerate() {
        let file = open_subvol(s)?;
        let id = root_id(&file, s)?;
        if pick_parent {
            let roots = match &roots {
                Some(r) => r,
                None => roots.insert(list_roots(&file, s)?),
            };
            parent_root = good_parent(roots, id, &clone_roots)
                .ok_or_else(|| SendError::NoParent { path: s.clone() })?;
        }
        let mut flags = flags;
        if opts.one_stream && i > 0 {
            flags |= subvol_ioctl::SEND_FLAG_OMIT_STREAM_HEADER;
        }
        if opts.one_stream && i + 1 < subvols.len() {
            flags |= subvol_ioctl::SEND_FLAG_OMIT_END_CMD;
        }
        steps.push(KernelSend {
            subvol: s.clone(),
            file,
            parent_root,
            clone_roots: clone_roots.clone(),
            flags,
        });
        // progs: with a picked parent, each subvolume sent is a clone source for the next.
        if pick_parent && !clone_roots.contains(&id) {
            clone_roots.push(id);
        }
    }
    Ok((steps, version))
}

/// The highest stream version the running kernel offers (1 when sysfs does not say).
#[must_use]
pub fn kernel_stream_version() -> u32 {
    std::fs::read_to_string("/sys/fs/btrfs/features/send_stream_version")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

fn open_subvol(p: &Path) -> Result<File, SendError> {
    File::open(p)
        .map_err(|source| SendError::Io(PathError::new("open subvolume", p.to_path_buf(), source)))
}

fn root_id(f: &File, p: &Path) -> Result<u64, SendError> {
    subvol_ioctl::subvol_id(f).map_err(|source| SendError::Kernel {
        op: "find subvolume id of",
        path: p.to_path_buf(),
        source,
    })
}

/// The ioctl flags and version for the options, as progs computes them.
fn flags_and_version(o: &KernelSendOptions) -> Result<(u64, u32), SendError> {
    let mut flags = 0;
    if o.no_data {
        flags |= subvol_ioctl::SEND_FLAG_NO_FILE_DATA;
    }
    if o.compressed {
        flags |= subvol_ioctl::SEND_FLAG_COMPRESSED;
    }
    // progs: default 1; --compressed-data without --proto implies 2.
    let proto = o.proto.unwrap_or(if o.compressed { 2 } else { 1 });
    let supported = kernel_stream_version();
    if supported > 1 {
        flags |= subvol_ioctl::SEND_FLAG_VERSION;
    } else if proto != 1 {
        return Err(SendError::Invalid(format!(
            "protocol version {proto} requested, but the kernel supports only version 1"
        )));
    }
    Ok((flags, proto))
}

/// Sends the read-only subvolumes `subvols` through the kernel into `out`, as `btrfs send`
/// does. Returns the number of bytes written. `progress` is called with the bytes copied so
/// far.
///
/// # Errors
/// The subvolume or a parent/clone source cannot be opened, the ioctl fails (with its errno:
/// EPERM for a writable subvolume or no privileges, EPROTO for an unsupported version, ...), or
/// the output cannot be written; [`SendError::NoParent`] when `-c` without `-p` finds no parent.
pub fn send_kernel<W: Write>(
    subvols: &[PathBuf],
    opts: &KernelSendOptions,
    mut out: W,
    mut progress: Option<&mut dyn FnMut(u64)>,
) -> Result<u64, SendError> {
    with_kernel_stream(subvols, opts, |reader, subvol| {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(SendError::Io(PathError::new(
                        "read the kernel's stream",
                        subvol.to_path_buf(),
                        source,
                    )));
                }
            };
            out.write_all(&buf[..n]).map_err(SendError::Output)?;
            total += n as u64;
            if let Some(p) = progress.as_mut() {
                p(total);
            }
        }
        out.flush().map_err(SendError::Output)?;
        Ok(total)
    })
}

/// Sends `subvols` through the kernel and pumps the stream's commands into `sink` (a signer,
/// a checker): the kernel's bytes are read back as commands by a [`Reader`]. For plain output
/// [`send_kernel`] copies the bytes without parsing them.
///
/// # Errors
/// As [`send_kernel`]; a sink error or an invalid kernel stream as [`SendError::Sink`].
pub fn send_kernel_into<K: CommandSink + ?Sized>(
    subvols: &[PathBuf],
    opts: &KernelSendOptions,
    sink: &mut K,
    hook: &mut Hook<'_>,
) -> Result<Totals, SendError> {
    with_kernel_stream(subvols, opts, |reader, _| {
        let mut src = Reader::new(io::BufReader::with_capacity(1 << 20, reader));
        pump(&mut src, sink, hook).map_err(|e| match e {
            crate::Error::Output(io) => SendError::Output(io),
            other => SendError::Sink(Box::new(other)),
        })
    })
}

/// Runs the send ioctls one after the other on a helper thread writing into one pipe, and
/// `consume` on the pipe's read end here (with the first subvolume, to name in errors).
fn with_kernel_stream<T>(
    subvols: &[PathBuf],
    opts: &KernelSendOptions,
    consume: impl FnOnce(&mut io::PipeReader, &Path) -> Result<T, SendError>,
) -> Result<T, SendError> {
    let first = subvols
        .first()
        .ok_or_else(|| SendError::Invalid("no subvolume to send".into()))?;
    let (steps, version) = plan(subvols, opts)?;
    let (mut reader, writer) = io::pipe().map_err(|source| {
        SendError::Io(PathError::new("create pipe", first.to_path_buf(), source))
    })?;
    // A larger pipe means fewer wake-ups; progs does the same.
    crate::util::pipe::enlarge_pipe(&writer);
    std::thread::scope(|s| {
        let kernel = s.spawn(move || {
            for step in &steps {
                let args = subvol_ioctl::SendArgs {
                    parent_root: step.parent_root,
                    clone_sources: &step.clone_roots,
                    flags: step.flags,
                    version,
                };
                subvol_ioctl::send(&step.file, &writer, &args).map_err(|source| {
                    SendError::Kernel {
                        op: "send",
                        path: step.subvol.clone(),
                        source,
                    }
                })?;
            }
            // The writer drops here (and on an error above), ending the reader's input.
            Ok(())
        });
        let consumed = consume(&mut reader, first);
        // Closing the read end makes a still-running ioctl fail with EPIPE instead of blocking.
        drop(reader);
        let sent = kernel
            .join()
            .map_err(|_| SendError::Invalid("the send thread panicked".into()))?;
        match (consumed, sent) {
            // A failed ioctl explains a truncated stream better than the reader does.
            (Err(SendError::Sink(e)), Err(k)) if matches!(*e, crate::Error::Stream(_)) => Err(k),
            (Err(e), _) => Err(e),
            (Ok(_), Err(k)) => Err(k),
            (Ok(t), Ok(())) => Ok(t),
        }
    })
}

/// True when `p` is the root directory of a btrfs subvolume. Unlike
/// [`crate::util::fs::is_subvolume`] a final symlink is followed: `subvol send LINK` sends what
/// the link names, as `btrfs send` does.
#[must_use]
pub fn is_subvolume(p: &Path) -> bool {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .is_ok_and(|fd| subvol_ioctl::is_subvol_root(&fd).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(id: u64, uuid: u8, parent_uuid: u8, ctransid: u64) -> RootIds {
        RootIds {
            id,
            uuid: Uuid([uuid; 16]),
            parent_uuid: Uuid([parent_uuid; 16]),
            ctransid,
        }
    }

    /// 256 is the live subvolume; 257..260 are snapshots of it taken at ctransid 10, 20, 30,
    /// 40; 261 is a snapshot of 258; 262 is a subvolume of its own.
    fn roots() -> Vec<RootIds> {
        vec![
            root(256, 1, 0, 50),
            root(257, 2, 1, 10),
            root(258, 3, 1, 20),
            root(259, 4, 1, 30),
            root(260, 5, 1, 40),
            root(261, 6, 3, 20),
            root(262, 7, 0, 5),
        ]
    }

    #[test]
    fn snapshot_source_among_clone_sources_is_the_parent() {
        assert_eq!(good_parent(&roots(), 261, &[257, 258]), Some(258));
        assert_eq!(good_parent(&roots(), 257, &[262, 256]), Some(256));
    }

    #[test]
    fn sibling_nearest_the_source_ctransid_is_the_parent() {
        // Source 256 has ctransid 50: 260 (40) is nearest, whatever the order.
        assert_eq!(good_parent(&roots(), 259, &[257, 260, 258]), Some(260));
        assert_eq!(good_parent(&roots(), 259, &[257, 258]), Some(258));
        // Equal distances: the first wins.
        let mut r = roots();
        r[1].ctransid = 40;
        assert_eq!(good_parent(&r, 259, &[257, 260]), Some(257));
        assert_eq!(good_parent(&r, 259, &[260, 257]), Some(260));
    }

    #[test]
    fn no_parent_without_a_related_clone_source() {
        // Not a snapshot at all.
        assert_eq!(good_parent(&roots(), 262, &[257]), None);
        // Its source (258) is not a clone source and nothing else is a snapshot of 258.
        assert_eq!(good_parent(&roots(), 261, &[257, 262]), None);
        // Its source is gone.
        let r: Vec<_> = roots().into_iter().filter(|r| r.id != 256).collect();
        assert_eq!(good_parent(&r, 259, &[257, 258]), None);
        // Unknown subvolume.
        assert_eq!(good_parent(&roots(), 999, &[257]), None);
    }
}
