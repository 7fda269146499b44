//! Resumable receives: durable checkpoints of the subvolume being received, kept when a
//! receive is interrupted, and taken up again by the next receive of the same stream.
//!
//! A checkpoint is a read-only snapshot of the staging subvolume, `<staging>.ckpt-<n>`, taken
//! at a point where every command before a known input offset is applied and nothing else is
//! (the create+rename filter holds nothing back; for a signed stream: the end of a verified
//! segment). Creating a snapshot commits a btrfs transaction after flushing the subvolume's
//! dirty data, so the snapshot is on disk when the ioctl returns. Only then is the record
//! `<staging>.resume` written (temporary file, fsync, rename, fsync of DEST): what the stream
//! is (final name, sender's UUID, ctransid, parent), the input offset where the next command
//! starts with the BLAKE3 digest of every byte before it, a signed stream's verifier state,
//! the snapshot's name and its own UUID (which the kernel makes when it creates the snapshot:
//! the proof that ties the record to the file-system state), and a checksum of all that. The
//! previous checkpoint snapshot is deleted after the record names the new one.
//!
//! On resume the working subvolume (which may hold commands applied after the checkpoint) is
//! deleted and a writable snapshot of the checkpoint takes its name; the input is read from
//! the checkpoint's offset. A record whose checksum, format or checkpoint UUID does not match
//! is never used: that receive starts from the beginning.

use super::dest::Dest;
use super::staging::{self, PREFIX};
use super::{RecvError, show};
use crate::Error;
use crate::pipeline::ResumeState;
use crate::stream::{Command, Item, Op, Reader, Uuid};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Suffix of a checkpoint record beside its staging subvolume.
pub const RECORD_SUFFIX: &str = ".resume";
/// Infix of checkpoint snapshots: `<staging>.ckpt-<n>`.
const CKPT_INFIX: &str = ".ckpt-";
/// How long an interrupted receive is kept for resume after its last checkpoint.
pub const KEEP_FOR_SECS: u64 = 7 * 24 * 3600;
/// A checkpoint is taken at the first point to restart from after this many input bytes
/// since the last one (the default of [`super::Options::checkpoint_bytes`]).
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 64 << 20;
/// Format of the record.
const FORMAT: u32 = 1;

/// What a checkpoint record says (its checksum covers exactly this, serialized).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Body {
    format: u32,
    /// Final name of the subvolume.
    pub(super) name: String,
    /// The sender's UUID and ctransid, and the parent's UUID (incremental streams).
    uuid: Uuid,
    ctransid: u64,
    parent_uuid: Option<Uuid>,
    /// Where to take the input up again.
    resume: ResumeState,
    /// Name of the checkpoint snapshot beside the staging subvolume, its number, its UUID.
    checkpoint: String,
    seq: u64,
    checkpoint_uuid: Uuid,
    /// Unix times: the receive's first checkpoint, and this one.
    started: u64,
    updated: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    body: Body,
    /// BLAKE3 (hex) of `body` serialized as JSON.
    checksum: String,
}

fn checksum(body: &Body) -> Result<String, serde_json::Error> {
    Ok(blake3::hash(&serde_json::to_vec(body)?)
        .to_hex()
        .to_string())
}

/// An interrupted receive kept for resume (see [`list_incomplete`]).
#[derive(Clone, Debug, Serialize)]
pub struct Incomplete {
    /// The staging name (in DEST) that identifies it.
    pub staging: String,
    /// The final name of the subvolume.
    pub name: String,
    /// The sender's UUID of the subvolume.
    pub uuid: Uuid,
    /// The sender's ctransid.
    pub ctransid: u64,
    /// The parent's UUID (incremental streams).
    pub parent_uuid: Option<Uuid>,
    /// Input offset to take the stream up again at.
    pub offset: u64,
    /// Whether the stream is signed (resuming it needs the same keys).
    pub signed: bool,
    /// Unix time of the last checkpoint.
    pub updated: u64,
    /// Unix time after which a receive into DEST removes it.
    pub expires: u64,
    #[serde(skip)]
    body: Body,
}

impl Incomplete {
    fn new(staging: String, body: Body) -> Incomplete {
        Incomplete {
            staging,
            name: body.name.clone(),
            uuid: body.uuid,
            ctransid: body.ctransid,
            parent_uuid: body.parent_uuid,
            offset: body.resume.reader.offset,
            signed: body.resume.verifier.is_some(),
            updated: body.updated,
            expires: body.updated.saturating_add(KEEP_FOR_SECS),
            body,
        }
    }

    /// Where the input is taken up again: reader and verifier state.
    #[must_use]
    pub fn resume_state(&self) -> &ResumeState {
        &self.body.resume
    }

    /// A reader over `rest`, the input from [`Incomplete::offset`] on. `prefix` is the digest
    /// state of the bytes before it (from [`skip_checked`]); without it (a stream piped from
    /// the offset) the resumed receive takes no further checkpoints.
    pub fn reader<R: Read>(&self, rest: R, prefix: Option<Skipped>) -> Reader<R> {
        Reader::resume(rest, &self.body.resume.reader, prefix.map(|p| p.0))
    }

    /// True if the stream starting with `start` is the one this receive was receiving.
    #[must_use]
    pub fn matches(&self, start: &StreamStart) -> bool {
        self.name.as_bytes() == start.name.as_slice()
            && self.uuid == start.uuid
            && self.ctransid == start.ctransid
            && self.parent_uuid == start.parent_uuid
    }
}

/// The first subvolume a stream makes, from its first command (SUBVOL or SNAPSHOT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// Final name.
    pub name: Vec<u8>,
    /// The sender's UUID.
    pub uuid: Uuid,
    /// The sender's ctransid.
    pub ctransid: u64,
    /// The parent's UUID (SNAPSHOT).
    pub parent_uuid: Option<Uuid>,
}

/// Reads the stream header and the first command of `input` and returns what they say with
/// the bytes read (the caller puts them back in front of the rest: `Cursor::new(bytes).chain(
/// input)`). `start` is None when the input does not begin with a SUBVOL or SNAPSHOT.
///
/// # Errors
/// Read errors (a malformed stream is not an error here: the receive reports it).
pub fn peek_start<R: Read>(input: &mut R) -> io::Result<(Option<StreamStart>, Vec<u8>)> {
    struct Tee<'a, R>(&'a mut R, Vec<u8>);
    impl<R: Read> Read for Tee<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    let mut reader = Reader::new(Tee(input, Vec::new()));
    let mut c = Command::empty();
    let mut start = None;
    let mut err = None;
    for _ in 0..2 {
        match reader.next(&mut c) {
            Ok(Some(Item::Header(_))) => {}
            Ok(Some(Item::Command)) => {
                start = match c.op() {
                    Ok(Op::Subvol {
                        path,
                        uuid,
                        ctransid,
                    }) => Some(StreamStart {
                        name: path.to_vec(),
                        uuid,
                        ctransid,
                        parent_uuid: None,
                    }),
                    Ok(Op::Snapshot {
                        path,
                        uuid,
                        ctransid,
                        clone_uuid,
                        ..
                    }) => Some(StreamStart {
                        name: path.to_vec(),
                        uuid,
                        ctransid,
                        parent_uuid: Some(clone_uuid),
                    }),
                    _ => None,
                };
                break;
            }
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let Tee(_, bytes) = reader.into_inner();
    match err.map(|e| e.kind) {
        Some(crate::stream::StreamErrorKind::Io(e)) => Err(e),
        _ => Ok((start, bytes)),
    }
}

/// The digest state of the bytes [`skip_checked`] read, to continue with.
#[derive(Clone, Debug)]
pub struct Skipped(blake3::Hasher);

/// The skipped bytes are not the ones the checkpoint was taken after.
#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    /// Reading failed.
    #[error("reading the input up to the checkpoint")]
    Io(#[source] io::Error),
    /// The input ends before the checkpoint's offset.
    #[error("the input ends at byte {got}, before the checkpoint at byte {offset}")]
    Short {
        /// Bytes read.
        got: u64,
        /// The checkpoint's offset.
        offset: u64,
    },
    /// The bytes before the offset differ from those the checkpoint was taken after.
    #[error(
        "the first {offset} bytes of the input differ from those the checkpoint was taken after"
    )]
    Digest {
        /// The checkpoint's offset.
        offset: u64,
    },
}

/// Reads the first [`Incomplete::offset`] bytes of `input` (the whole input from its start)
/// and checks their digests (each part's, see [`crate::stream::ReaderState::links`]) against
/// the checkpoint's; returns the digest state to continue with ([`Incomplete::reader`]).
/// `input` is then at the offset.
///
/// # Errors
/// [`SkipError`]: then the checkpoint must not be used.
pub fn skip_checked<R: Read>(input: &mut R, inc: &Incomplete) -> Result<Skipped, SkipError> {
    let state = &inc.body.resume.reader;
    let offset = inc.offset;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let parts = state
        .links
        .iter()
        .map(|l| (l.end, l.digest))
        .chain(std::iter::once((offset, state.prefix_digest)));
    let mut last = blake3::Hasher::new();
    for (end, digest) in parts {
        let mut h = blake3::Hasher::new();
        if end < got {
            return Err(SkipError::Digest { offset });
        }
        while got < end {
            let want = usize::try_from((end - got).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match input.read(&mut buf[..want]) {
                Ok(0) => return Err(SkipError::Short { got, offset }),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SkipError::Io(e)),
            };
            h.update(&buf[..n]);
            got += n as u64;
        }
        if *h.finalize().as_bytes() != digest {
            return Err(SkipError::Digest { offset });
        }
        last = h;
    }
    Ok(Skipped(last))
}

/// Name of the record of staging subvolume `base`.
pub(super) fn record_name(base: &OsStr) -> OsString {
    let mut n = base.to_os_string();
    n.push(RECORD_SUFFIX);
    n
}

/// Name of checkpoint snapshot `seq` of staging subvolume `base`.
pub(super) fn ckpt_name(base: &OsStr, seq: u64) -> OsString {
    let mut n = base.to_os_string();
    n.push(format!("{CKPT_INFIX}{seq}"));
    n
}

/// The staging subvolume a record or checkpoint snapshot (or a record's temporary file)
/// belongs to, or None for other names.
pub(super) fn owner_of(name: &[u8]) -> Option<&[u8]> {
    if !name.starts_with(PREFIX.as_bytes()) {
        return None;
    }
    if let Some(base) = name.strip_suffix(RECORD_SUFFIX.as_bytes()) {
        return Some(base);
    }
    let infix = CKPT_INFIX.as_bytes();
    let at = name.windows(infix.len()).rposition(|w| w == infix)?;
    name[at + infix.len()..]
        .iter()
        .all(u8::is_ascii_digit)
        .then_some(&name[..at])
}

/// Checkpoint snapshots of `base` present in `dir`.
pub(super) fn ckpts_of(dir: &Path, base: &OsStr) -> Vec<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            n.as_bytes().starts_with(base.as_bytes())
                && n.as_bytes().len() > base.as_bytes().len()
                && owner_of(n.as_bytes()) == Some(base.as_bytes())
                && !n.as_bytes().ends_with(RECORD_SUFFIX.as_bytes())
        })
        .collect()
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name.as_bytes(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Reads and checks the record of `base` in `dest`: checksum, format, and that the checkpoint
/// snapshot it names is there with the UUID it says. None if there is none or it is not
/// usable.
pub(super) fn read_record(dest: &Dest, base: &OsStr) -> Option<Body> {
    let bytes = std::fs::read(dest.path().join(record_name(base))).ok()?;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    if record.body.format != FORMAT || checksum(&record.body).ok()? != record.checksum {
        return None;
    }
    let ckpt = OsStr::new(&record.body.checkpoint);
    if ckpt_name(base, record.body.seq) != ckpt {
        return None;
    }
    let fd = open_dir(dest.dir(), ckpt).ok()?;
    let info = subvol_ioctl::subvol_info(&fd).ok()?;
    (info.uuid == record.body.checkpoint_uuid && info.is_readonly()).then_some(record.body)
}

/// True if the interrupted receive `base` (whose lock the caller holds) is kept for resume:
/// its record is usable, younger than [`KEEP_FOR_SECS`], and its final name is still free.
pub(super) fn keep_for_resume(dest: &Dest, base: &OsStr) -> bool {
    read_record(dest, base).is_some_and(|b| {
        crate::util::unix_now().saturating_sub(b.updated) <= KEEP_FOR_SECS
            && rfs::statat(dest.dir(), b.name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).is_err()
    })
}

/// The checkpoint state of a staging subvolume while it is received.
#[derive(Debug)]
pub(super) struct Checkpoints {
    pub(super) seq: u64,
    pub(super) current: Option<OsString>,
    pub(super) started: u64,
}

/// Takes a checkpoint of the subvolume received under `base` (root `root`, in `dest`), valid
/// for `state`: snapshot, record, then removal of the previous snapshot.
///
/// # Errors
/// ioctl and I/O errors (the previous checkpoint stays valid).
#[allow(clippy::too_many_arguments)]
pub(super) fn checkpoint(
    dest: &Dest,
    base: &OsStr,
    root: BorrowedFd<'_>,
    cp: &mut Checkpoints,
    name: &OsStr,
    uuid: Uuid,
    ctransid: u64,
    parent_uuid: Option<Uuid>,
    state: ResumeState,
) -> Result<(), Error> {
    let io_err = |op: &'static str, e: io::Error| Error::Io {
        op,
        path: dest.path().join(base),
        source: e,
    };
    let Some(name) = name.to_str() else {
        return Ok(()); // not representable in the record: no checkpoints
    };
    let seq = cp.seq + 1;
    let ckpt = ckpt_name(base, seq);
    // Commits a transaction after flushing the subvolume's data: durable on return.
    subvol_ioctl::snapshot_create(dest.dir(), root, &ckpt, true).map_err(|e| {
        io_err(
            "snapshot for a checkpoint",
            io::Error::from_raw_os_error(e.errno()),
        )
    })?;
    let info = open_dir(dest.dir(), &ckpt)
        .map_err(|e| io_err("open checkpoint", e.into()))
        .and_then(|fd| {
            subvol_ioctl::subvol_info(&fd).map_err(|e| {
                io_err(
                    "read checkpoint info",
                    io::Error::from_raw_os_error(e.errno()),
                )
            })
        });
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            let _ = subvol_ioctl::subvol_destroy(dest.dir(), &ckpt);
            return Err(e);
        }
    };
    let now = crate::util::unix_now();
    if cp.started == 0 {
        cp.started = now;
    }
    let body = Body {
        format: FORMAT,
        name: name.to_string(),
        uuid,
        ctransid,
        parent_uuid,
        resume: state,
        checkpoint: ckpt.to_string_lossy().into_owned(),
        seq,
        checkpoint_uuid: info.uuid,
        started: cp.started,
        updated: now,
    };
    let record = checksum(&body)
        .and_then(|checksum| serde_json::to_vec_pretty(&Record { body, checksum }))
        .map_err(|e| io_err("encode checkpoint record", io::Error::other(e)))?;
    let rec_name = record_name(base);
    if let Err(e) = crate::util::fs::write_atomic(dest.path(), &rec_name.to_string_lossy(), &record)
    {
        let _ = subvol_ioctl::subvol_destroy(dest.dir(), &ckpt);
        return Err(e.into());
    }
    if let Some(old) = cp.current.replace(ckpt) {
        let _ = subvol_ioctl::subvol_destroy(dest.dir(), &old);
    }
    cp.seq = seq;
    Ok(())
}

/// Lists the interrupted receives kept for resume in `dest` (those of live receives are not
/// listed).
///
/// # Errors
/// DEST cannot be opened or listed.
pub fn list_incomplete(dest: &Path) -> Result<Vec<Incomplete>, Error> {
    let dest = Dest::open(dest, None)?;
    let mut out = Vec::new();
    for base in staging::locked_bases(&dest)? {
        let Some(lock) = staging::try_lock(&dest, &base) else {
            continue; // a live receive
        };
        if let Some(body) = read_record(&dest, &base) {
            out.push(Incomplete::new(base.to_string_lossy().into_owned(), body));
        }
        drop(lock);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.staging.cmp(&b.staging)));
    Ok(out)
}

/// Removes the interrupted receives in `dest` (all, or those whose final name is `name`),
/// with their checkpoints. Returns the final names of those removed.
///
/// # Errors
/// DEST cannot be opened or listed; a removal failed.
pub fn drop_incomplete(dest: &Path, name: Option<&str>) -> Result<Vec<String>, Error> {
    let dest = Dest::open(dest, None)?;
    drop_where(&dest, |b| name.is_none_or(|n| b.name == n))
}

/// Removes interrupted receives whose record satisfies `pred` (or that have no usable record
/// when `pred` accepts any). Returns their final names.
pub(super) fn drop_where(dest: &Dest, pred: impl Fn(&Body) -> bool) -> Result<Vec<String>, Error> {
    let mut dropped = Vec::new();
    for base in staging::locked_bases(dest)? {
        let Some(lock) = staging::try_lock(dest, &base) else {
            continue;
        };
        let Some(body) = read_record(dest, &base) else {
            continue; // not resumable: the next receive's stale cleanup removes it
        };
        if !pred(&body) {
            continue;
        }
        staging::remove_set(dest, &base, &lock).map_err(|e| RecvError::Dest {
            dest: dest.path().to_path_buf(),
            reason: format!("cannot remove incomplete receive {}", show(base.as_bytes())),
            source: Some(e),
        })?;
        dropped.push(body.name);
    }
    Ok(dropped)
}

/// Resumes the interrupted receive `inc` in `dest`: takes its lock, checks its record again,
/// deletes the working subvolume and makes a writable snapshot of the checkpoint in its place.
/// Returns the lock, the staging name, the root, and the checkpoint state to continue with.
pub(super) fn adopt(
    dest: &Dest,
    inc: &Incomplete,
) -> Result<(OwnedFd, OsString, OwnedFd, Checkpoints), Error> {
    let base = OsString::from(&inc.staging);
    let fail = |reason: String, e: Option<io::Error>| -> Error {
        RecvError::Dest {
            dest: dest.path().to_path_buf(),
            reason,
            source: e,
        }
        .into()
    };
    if !staging::is_staging_name(base.as_bytes()) || owner_of(base.as_bytes()).is_some() {
        return Err(fail(
            format!("{} is not a staging name", show(base.as_bytes())),
            None,
        ));
    }
    let lock = staging::try_lock(dest, &base).ok_or_else(|| {
        fail(
            format!(
                "the interrupted receive {} is in use by another receive",
                show(base.as_bytes())
            ),
            None,
        )
    })?;
    let body = read_record(dest, &base)
        .filter(|b| *b == inc.body)
        .ok_or_else(|| {
            fail(
                format!("the checkpoint of {} changed", show(base.as_bytes())),
                None,
            )
        })?;
    // Commands after the checkpoint may have been applied to the working subvolume.
    staging::destroy_subvol(dest, &base)
        .map_err(|e| fail(format!("cannot remove {}", show(base.as_bytes())), Some(e)))?;
    let ckpt = OsString::from(&body.checkpoint);
    // Other checkpoint snapshots (a crash between a new one and the record) are left over.
    for other in ckpts_of(dest.path(), &base) {
        if other != ckpt {
            let _ = staging::destroy_subvol(dest, &other);
        }
    }
    let ckpt_fd = open_dir(dest.dir(), &ckpt)
        .map_err(|e| fail("cannot open the checkpoint".into(), Some(e.into())))?;
    subvol_ioctl::snapshot_create(dest.dir(), &ckpt_fd, &base, false).map_err(|e| {
        fail(
            "cannot restore the checkpoint".into(),
            Some(io::Error::other(e)),
        )
    })?;
    let root = open_dir(dest.dir(), &base)
        .map_err(|e| fail("cannot open the restored subvolume".into(), Some(e.into())))?;
    rfs::flock(&root, rfs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| fail("cannot lock the restored subvolume".into(), Some(e.into())))?;
    Ok((
        lock,
        base,
        root,
        Checkpoints {
            seq: body.seq,
            current: Some(ckpt),
            started: body.started,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ReaderState;

    #[test]
    fn names_of_a_set_belong_to_their_staging_subvolume() {
        let base = ".subvol-recv-staging.12.00ab";
        assert_eq!(
            owner_of(format!("{base}.resume").as_bytes()),
            Some(base.as_bytes())
        );
        assert_eq!(
            owner_of(format!("{base}.ckpt-17").as_bytes()),
            Some(base.as_bytes())
        );
        assert_eq!(owner_of(base.as_bytes()), None);
        assert_eq!(owner_of(format!("{base}.lock").as_bytes()), None);
        assert_eq!(owner_of(b"x.ckpt-1"), None);
        assert_eq!(owner_of(format!("{base}.ckpt-x").as_bytes()), None);
    }

    #[test]
    fn a_changed_record_fails_its_checksum() {
        let state = ResumeState {
            index: 3,
            reader: ReaderState {
                offset: 100,
                commands: 3,
                streams: 1,
                version: Some(2),
                prefix_digest: [7; 32],
                links: Vec::new(),
            },
            verifier: None,
        };
        let body = Body {
            format: FORMAT,
            name: "snap".into(),
            uuid: Uuid::default(),
            ctransid: 5,
            parent_uuid: None,
            resume: state,
            checkpoint: "x.ckpt-1".into(),
            seq: 1,
            checkpoint_uuid: Uuid::default(),
            started: 1,
            updated: 2,
        };
        let sum = checksum(&body).unwrap();
        let mut changed = body.clone();
        changed.resume.reader.offset = 101;
        assert_ne!(checksum(&changed).unwrap(), sum);
        assert_eq!(checksum(&body).unwrap(), sum);
    }
}
