//! Kernel send: drives `BTRFS_IOC_SEND` on a read-only subvolume and copies the stream to the
//! output, with the same ioctl arguments `btrfs send` (progs v6.2) uses, so the output is byte
//! for byte what `btrfs send` writes with the same options.
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

/// Sends the read-only subvolume `subvol` through the kernel into `out`. Returns the number of
/// bytes written. `progress` is called with the bytes copied so far.
///
/// # Errors
/// The subvolume or a parent/clone source cannot be opened, the ioctl fails (with its errno:
/// EPERM for a writable subvolume or no privileges, EPROTO for an unsupported version, ...), or
/// the output cannot be written.
pub fn send_kernel<W: Write>(
    subvol: &Path,
    opts: &KernelSendOptions,
    mut out: W,
    mut progress: Option<&mut dyn FnMut(u64)>,
) -> Result<u64, SendError> {
    with_kernel_stream(subvol, opts, |reader| {
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

/// Sends `subvol` through the kernel and pumps the stream's commands into `sink` (a signer,
/// a checker): the kernel's bytes are read back as commands by a [`Reader`]. For plain output
/// [`send_kernel`] copies the bytes without parsing them.
///
/// # Errors
/// As [`send_kernel`]; a sink error or an invalid kernel stream as [`SendError::Sink`].
pub fn send_kernel_into<K: CommandSink + ?Sized>(
    subvol: &Path,
    opts: &KernelSendOptions,
    sink: &mut K,
    hook: &mut Hook<'_>,
) -> Result<Totals, SendError> {
    with_kernel_stream(subvol, opts, |reader| {
        let mut src = Reader::new(io::BufReader::with_capacity(1 << 20, reader));
        pump(&mut src, sink, hook).map_err(|e| match e {
            crate::Error::Output(io) => SendError::Output(io),
            other => SendError::Sink(Box::new(other)),
        })
    })
}

/// Runs the send ioctl on a helper thread writing into a pipe, and `consume` on the pipe's read
/// end here.
fn with_kernel_stream<T>(
    subvol: &Path,
    opts: &KernelSendOptions,
    consume: impl FnOnce(&mut io::PipeReader) -> Result<T, SendError>,
) -> Result<T, SendError> {
    let sub = open_subvol(subvol)?;
    let (flags, version) = flags_and_version(opts)?;
    let mut clone_sources = Vec::new();
    let mut parent_root = 0;
    if let Some(p) = &opts.parent {
        let f = open_subvol(p)?;
        parent_root = root_id(&f, p)?;
    }
    for c in &opts.clone_sources {
        let f = open_subvol(c)?;
        clone_sources.push(root_id(&f, c)?);
    }
    // progs adds the parent to the clone sources.
    if parent_root != 0 && !clone_sources.contains(&parent_root) {
        clone_sources.push(parent_root);
    }
    let (mut reader, writer) = io::pipe().map_err(|source| {
        SendError::Io(PathError::new("create pipe", subvol.to_path_buf(), source))
    })?;
    // A larger pipe means fewer wake-ups; progs does the same.
    crate::util::pipe::enlarge_pipe(&writer);
    let args = subvol_ioctl::SendArgs {
        parent_root,
        clone_sources: &clone_sources,
        flags,
        version,
    };
    std::thread::scope(|s| {
        let kernel = s.spawn(move || {
            let r = subvol_ioctl::send(&sub, &writer, &args);
            drop(writer);
            r
        });
        let consumed = consume(&mut reader);
        // Closing the read end makes a still-running ioctl fail with EPIPE instead of blocking.
        drop(reader);
        let sent = kernel
            .join()
            .map_err(|_| SendError::Invalid("the send thread panicked".into()))?
            .map_err(|source| SendError::Kernel {
                op: "send",
                path: subvol.to_path_buf(),
                source,
            });
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
