//! `subvol-recv -v`/`-vv`: the per-command lines `btrfs receive` (btrfs-progs 6.2) prints on
//! stderr at higher verbosity, with the same text, so scripts and test suites reading them see
//! no difference. Names are escaped as everywhere else in subvol (control characters as octal
//! escapes), which leaves ordinary names as progs prints them.
//!
//! progs' levels: 1 is the default (`At subvol`), `-v` is 2, `-vv` is 3, `-q` is 0.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use subvol::Error;
use subvol::pipeline::Source;
use subvol::stream::{Command, Item, Op, Uuid};
use subvol::util::escape;

/// The `-v` level where progs prints the subvolume, WRITE and CLONE lines.
pub const WRITES: u8 = 2;
/// The `-vv` level where progs prints a line for every other command it applies.
pub const EVERY_COMMAND: u8 = 3;

/// A source that prints progs' trace line of each command as the receiver takes it (so a
/// command's line comes before the error it causes, as in progs).
pub struct ProgsTrace<S> {
    inner: S,
    level: u8,
    /// The `receiving subvol|snapshot ...` line, printed after `At subvol|snapshot NAME` by the
    /// receiver's start event (progs prints it second).
    pub pending: Rc<RefCell<Option<String>>>,
    /// The received UUID and stransid of the subvolume being received.
    current: Option<(Uuid, u64)>,
}

impl<S> ProgsTrace<S> {
    /// Traces at progs' verbosity `level`.
    pub fn new(inner: S, level: u8) -> ProgsTrace<S> {
        ProgsTrace {
            inner,
            level,
            pending: Rc::default(),
            current: None,
        }
    }
}

impl<S: Source> Source for ProgsTrace<S> {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        let item = self.inner.next_item(out)?;
        if item == Some(Item::Command) && self.level >= WRITES {
            // A command without its attributes is the receiver's to report.
            if let Ok(op) = out.op() {
                match op {
                    Op::Subvol { uuid, ctransid, .. } | Op::Snapshot { uuid, ctransid, .. } => {
                        self.current = Some((uuid, ctransid));
                        *self.pending.borrow_mut() = line(&op, self.level);
                    }
                    Op::End => {
                        if let Some((uuid, stransid)) = self.current.take() {
                            print(&format!(
                                "BTRFS_IOC_SET_RECEIVED_SUBVOL uuid={uuid}, stransid={stransid}"
                            ));
                        }
                    }
                    _ => {
                        if let Some(l) = line(&op, self.level) {
                            print(&l);
                        }
                    }
                }
            }
        }
        Ok(item)
    }
    fn resume_state(&mut self) -> Option<subvol::pipeline::ResumeState> {
        self.inner.resume_state()
    }
    fn offset(&self) -> u64 {
        self.inner.offset()
    }
    fn commands(&self) -> u64 {
        self.inner.commands()
    }
}

/// One line on stderr; a failed write to stderr is ignored, as progs ignores it.
pub fn print(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// progs' `%.*s` of xattr data: the bytes up to the first NUL.
fn c_string(data: &[u8]) -> &[u8] {
    data.split(|&b| b == 0).next().unwrap_or_default()
}

/// The line progs prints for `op` at verbosity `level`, if any.
#[must_use]
pub fn line(op: &Op<'_>, level: u8) -> Option<String> {
    let e = escape;
    let l = match *op {
        Op::Subvol {
            path,
            uuid,
            ctransid,
        } if level >= WRITES => {
            format!(
                "receiving subvol {} uuid={uuid}, stransid={ctransid}",
                e(path)
            )
        }
        Op::Snapshot {
            path,
            uuid,
            ctransid,
            clone_uuid,
            clone_ctransid,
        } if level >= WRITES => format!(
            "receiving snapshot {} uuid={uuid}, ctransid={ctransid} parent_uuid={clone_uuid}, parent_ctransid={clone_ctransid}",
            e(path)
        ),
        Op::Write { path, offset, data } if level >= WRITES => {
            format!("write {} - offset={offset} length={}", e(path), data.len())
        }
        Op::Clone {
            path,
            offset,
            len,
            clone_path,
            clone_offset,
            ..
        } if level >= WRITES => format!(
            "clone {} - source={} source offset={clone_offset} offset={offset} length={len}",
            e(path),
            e(clone_path)
        ),
        _ if level < EVERY_COMMAND => return None,
        Op::Mkfile { path, .. } => format!("mkfile {}", e(path)),
        Op::Mkdir { path, .. } => format!("mkdir {}", e(path)),
        Op::Mknod {
            path, mode, rdev, ..
        } => format!("mknod {} mode={mode}, dev={rdev}", e(path)),
        Op::Mkfifo { path, .. } => format!("mkfifo {}", e(path)),
        Op::Mksock { path, .. } => format!("mksock {}", e(path)),
        Op::Symlink { path, target, .. } => format!("symlink {} -> {}", e(path), e(target)),
        Op::Rename { from, to } => format!("rename {} -> {}", e(from), e(to)),
        Op::Link { path, target } => format!("link {} -> {}", e(path), e(target)),
        Op::Unlink { path } => format!("unlink {}", e(path)),
        Op::Rmdir { path } => format!("rmdir {}", e(path)),
        Op::SetXattr { path, name, data } => format!(
            "set_xattr {} - name={} data_len={} data={}",
            e(path),
            e(name),
            data.len(),
            e(c_string(data))
        ),
        Op::RemoveXattr { path, name } => {
            format!("remove_xattr {} - name={}", e(path), e(name))
        }
        Op::Truncate { path, size } => format!("truncate {} size={size}", e(path)),
        // progs prints the mode as a C int.
        Op::Chmod { path, mode } => {
            format!("chmod {} - mode=0{:o}", e(path), mode & 0xffff_ffff)
        }
        Op::Chown { path, uid, gid } => format!("chown {} - uid={uid}, gid={gid}", e(path)),
        Op::Utimes { path, .. } => format!("utimes {}", e(path)),
        Op::UpdateExtent { path, offset, len } => {
            format!("update_extent {}: offset={offset}, len={len}", e(path))
        }
        Op::EncodedWrite {
            path,
            offset,
            unencoded_file_len,
            unencoded_len,
            unencoded_offset,
            compression,
            encryption,
            data,
        } => format!(
            "encoded_write {} - offset={offset}, len={}, unencoded_offset={unencoded_offset}, unencoded_file_len={unencoded_file_len}, unencoded_len={unencoded_len}, compression={compression}, encryption={encryption}",
            e(path),
            data.len()
        ),
        Op::Fallocate {
            path,
            mode,
            offset,
            len,
        } => format!(
            "fallocate {} - offset={offset}, len={len}, mode={mode}",
            e(path)
        ),
        // progs prints nothing for these (and END is the received-subvolume line).
        _ => return None,
    };
    Some(l)
}
