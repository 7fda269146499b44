//! A canonical digest of a directory tree, used to check that a received subvolume reproduces
//! its source exactly.
//!
//! One line per entry (the root directory included, as `.`), sorted by path bytes:
//!
//! ```text
//! <path>\t<type>\tmode=<octal incl. setuid/setgid/sticky>\tuid=<n>\tgid=<n>[\tsize=<n>]
//!   [\tsha256=<hex>\tdata=<start>-<end>,...]   regular files: content hash and SEEK_DATA ranges
//!   [\ttarget=<escaped>]                        symlinks
//!   [\trdev=<major>:<minor>]                    character and block devices
//!   [\txattr=<name>=<hex value>]...             every xattr, security.capability included
//!   [\tlink=<first path>]                       hard-link group: the first path of the inode
//!   [\tmtime=<sec>.<nsec>][\tatime=<sec>.<nsec>]
//! ```
//!
//! Paths escape bytes outside printable ASCII, `\` and `=` as `\xHH`. Directory sizes are left
//! out (they depend on the file system). atime is left out by default because merely reading a
//! tree changes it on `relatime` mounts; the digest itself opens files with `O_NOATIME`.
//!
//! [`TreeDigest::sha256`] is a SHA-256 over all lines, so two trees are equal when their hashes
//! are; [`TreeDigest::diff`] lists the differing lines for a readable test failure.

use crate::Error;
use crate::util::fsread::{data_ranges, open_noatime, xattrs};
use crate::util::hex::encode as hex;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What goes into a digest besides the always-present fields.
#[derive(Clone, Copy, Debug)]
pub struct DigestOptions {
    /// Include modification times (default true).
    pub mtime: bool,
    /// Include access times (default false: reading a tree changes them).
    pub atime: bool,
}

impl Default for DigestOptions {
    fn default() -> Self {
        DigestOptions {
            mtime: true,
            atime: false,
        }
    }
}

/// The digest of one tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    /// One line per entry, sorted by path bytes.
    pub lines: Vec<String>,
    /// SHA-256 over the lines, each followed by `\n`.
    pub sha256: [u8; 32],
}

impl TreeDigest {
    /// The hash as lowercase hex.
    #[must_use]
    pub fn hex(&self) -> String {
        hex(self.sha256)
    }

    /// A readable difference: lines only in `self` prefixed `-`, only in `other` prefixed `+`
    /// (at most `max` lines), empty when equal.
    #[must_use]
    pub fn diff(&self, other: &TreeDigest, max: usize) -> String {
        let a: std::collections::BTreeSet<&String> = self.lines.iter().collect();
        let b: std::collections::BTreeSet<&String> = other.lines.iter().collect();
        let mut out = String::new();
        let mut n = 0;
        for l in a.difference(&b) {
            if n < max {
                let _ = writeln!(out, "- {l}");
            }
            n += 1;
        }
        for l in b.difference(&a) {
            if n < max {
                let _ = writeln!(out, "+ {l}");
            }
            n += 1;
        }
        if n > max {
            let _ = writeln!(out, "... {} more differing lines", n - max);
        }
        out
    }
}

/// Escapes a byte string for a digest line.
fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' && c != b'=' || c == b' ' {
            s.push(c as char);
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s
}

/// Computes the digest of the tree at `root`.
///
/// # Errors
/// Any file that cannot be read, with its path.
pub fn digest_tree(root: &Path, opts: &DigestOptions) -> Result<TreeDigest, Error> {
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut stack = vec![(Vec::new(), root.to_path_buf())];
    while let Some((rel, abs)) = stack.pop() {
        let md = fs::symlink_metadata(&abs).map_err(|e| Error::io("stat", &abs, e))?;
        if md.is_dir() {
            for ent in fs::read_dir(&abs).map_err(|e| Error::io("read directory", &abs, e))? {
                let ent = ent.map_err(|e| Error::io("read directory", &abs, e))?;
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(ent.file_name().as_bytes());
                stack.push((r, ent.path()));
            }
        }
        entries.push((rel, abs));
    }
    entries.sort();
    let mut stats = Vec::with_capacity(entries.len());
    // Hard-link groups: the first path (in sorted order) of each inode seen more than once.
    let mut first_path: HashMap<(u64, u64), (Vec<u8>, u32)> = HashMap::new();
    for (rel, abs) in &entries {
        let md = fs::symlink_metadata(abs).map_err(|e| Error::io("stat", abs, e))?;
        if !md.is_dir() && md.nlink() > 1 {
            first_path
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| (rel.clone(), 0))
                .1 += 1;
        }
        stats.push(md);
    }
    let mut lines = Vec::with_capacity(entries.len());
    let mut buf = vec![0u8; 1 << 20];
    for ((rel, abs), md) in entries.iter().zip(stats) {
        let ft = md.file_type();
        let ty = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "chr"
        } else {
            "blk"
        };
        let shown = if rel.is_empty() {
            ".".to_string()
        } else {
            escape(rel)
        };
        let mut line = format!(
            "{shown}\t{ty}\tmode={:o}\tuid={}\tgid={}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        if !ft.is_dir() {
            let _ = write!(line, "\tsize={}", md.size());
        }
        if ft.is_file() {
            let f = open_noatime(abs).map_err(|e| Error::io("open", abs, e))?;
            let ranges = data_ranges(&f, md.size()).map_err(|e| Error::io("seek", abs, e))?;
            let mut h = Sha256::new();
            let mut f = f;
            // data_ranges moved the offset with SEEK_DATA/SEEK_HOLE: hash from the start.
            io::Seek::seek(&mut f, io::SeekFrom::Start(0))
                .map_err(|e| Error::io("seek", abs, e))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io("read", abs, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let _ = write!(line, "\tsha256={}\tdata=", hex(h.finalize()));
            for (i, (s, e)) in ranges.iter().enumerate() {
                let _ = write!(line, "{}{s}-{e}", if i > 0 { "," } else { "" });
            }
        } else if ft.is_symlink() {
            let t = fs::read_link(abs).map_err(|e| Error::io("readlink", abs, e))?;
            let _ = write!(line, "\ttarget={}", escape(t.as_os_str().as_bytes()));
        } else if ft.is_char_device() || ft.is_block_device() {
            let r = md.rdev();
            let _ = write!(line, "\trdev={}:{}", libc::major(r), libc::minor(r));
        }
        for (name, value) in xattrs(abs).map_err(|e| Error::io("read xattrs", abs, e))? {
            let _ = write!(line, "\txattr={}={}", escape(&name), hex(&value));
        }
        if let Some((first, count)) = first_path.get(&(md.dev(), md.ino()))
            && *count > 1
            && !ft.is_dir()
        {
            let _ = write!(line, "\tlink={}", escape(first));
        }
        if opts.mtime {
            let _ = write!(line, "\tmtime={}.{:09}", md.mtime(), md.mtime_nsec());
        }
        if opts.atime {
            let _ = write!(line, "\tatime={}.{:09}", md.atime(), md.atime_nsec());
        }
        lines.push(line);
    }
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    Ok(TreeDigest {
        lines,
        sha256: h.finalize().into(),
    })
}
