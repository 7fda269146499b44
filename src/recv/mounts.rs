//! Finding the btrfs mount that holds a directory, from `/proc/self/mountinfo`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One mount: where it is, which directory of the file system it shows, and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Mount point.
    pub target: PathBuf,
    /// Path inside the file system shown at the mount point (`/` unless mounted with `subvol=`).
    pub root: Vec<u8>,
    /// File-system type.
    pub fstype: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Parses mountinfo text.
#[must_use]
pub fn parse(text: &[u8]) -> Vec<Mount> {
    let mut v = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if fields.len() < 5 || sep + 1 >= fields.len() {
            continue;
        }
        v.push(Mount {
            target: PathBuf::from(OsStr::from_bytes(&unescape(fields[4]))),
            root: unescape(fields[3]),
            fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        });
    }
    v
}

/// The mount whose target is the longest prefix of `path` (which must be absolute and
/// canonical). Later mounts on the same target win, as they hide earlier ones.
#[must_use]
pub fn containing(mounts: &[Mount], path: &Path) -> Option<Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.target)
            && best.is_none_or(|b| m.target.as_os_str().len() >= b.target.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best.cloned()
}

/// Reads `/proc/self/mountinfo` and returns the mount holding `path`.
///
/// # Errors
/// mountinfo cannot be read.
pub fn mount_of(path: &Path) -> std::io::Result<Option<Mount>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(containing(&parse(&text), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
        40 22 7:0 / /mnt/a\\040b rw,relatime shared:2 - btrfs /dev/loop0 rw,subvolid=5\n\
        41 22 7:1 /@home /home rw - btrfs /dev/loop1 rw,subvol=/@home\n";

    #[test]
    fn finds_longest_prefix() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 3);
        let x = containing(&m, Path::new("/mnt/a b/dest")).unwrap();
        assert_eq!(x.fstype, "btrfs");
        assert_eq!(x.target, Path::new("/mnt/a b"));
        let h = containing(&m, Path::new("/home/u")).unwrap();
        assert_eq!(h.root, b"/@home");
        assert_eq!(containing(&m, Path::new("/mnt/ab")).unwrap().fstype, "ext4");
    }
}
