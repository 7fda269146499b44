//! Resolving stream paths strictly beneath a subvolume's root directory.
//!
//! A path from a stream is data, not a path: it is split into components, and any empty, `.` or
//! `..` component, absolute path, or NUL byte is refused. The parent directory is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so no
//! symlink is ever followed and nothing outside the root is ever reached; the last component is
//! then used only with `*at` calls that do not follow it either. Files are opened for writing
//! through an `O_PATH` handle that is checked to be a regular file first, so a stream can never
//! make the receiver open a device, FIFO or symlink target.

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Longest path the kernel sends (PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Longest file name component.
pub const NAME_MAX: usize = 255;

/// Why a stream path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    /// Absolute path.
    #[error("absolute path")]
    Absolute,
    /// `..` component.
    #[error("'..' component")]
    DotDot,
    /// `.` component.
    #[error("'.' component")]
    Dot,
    /// Empty component (`a//b`, trailing `/`).
    #[error("empty path component")]
    EmptyComponent,
    /// NUL byte inside a path.
    #[error("NUL byte in path")]
    Nul,
    /// Too long.
    #[error("path or name too long")]
    TooLong,
    /// The subvolume root cannot be the object of this command.
    #[error("operation not allowed on the subvolume root")]
    Root,
}

/// A path split into its parent directory (None for the subvolume root) and last component.
pub type ParentAndName<'a> = (Option<&'a [u8]>, &'a [u8]);

/// Checks a stream path; `Ok(None)` is the subvolume root (empty path), otherwise the parent
/// part (None for the root directory) and the last component.
///
/// # Errors
/// The path is not a plain relative path of safe components.
pub fn split(path: &[u8]) -> Result<Option<ParentAndName<'_>>, PathRefusal> {
    if path.is_empty() {
        return Ok(None);
    }
    if path.len() >= PATH_MAX {
        return Err(PathRefusal::TooLong);
    }
    if path[0] == b'/' {
        return Err(PathRefusal::Absolute);
    }
    if path.contains(&0) {
        return Err(PathRefusal::Nul);
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return Err(PathRefusal::EmptyComponent),
            b"." => return Err(PathRefusal::Dot),
            b".." => return Err(PathRefusal::DotDot),
            c if c.len() > NAME_MAX => return Err(PathRefusal::TooLong),
            _ => {}
        }
    }
    Ok(Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (Some(&path[..i]), &path[i + 1..]),
        None => (None, path),
    }))
}

/// True when `path` is `prefix` or lies inside it.
#[must_use]
pub fn is_within(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix
        || (path.len() > prefix.len() && path.starts_with(prefix) && path[prefix.len()] == b'/')
}

/// Resolution flags for every lookup beneath a root.
pub fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Opens a directory (as an `O_PATH` handle) beneath `root`.
///
/// # Errors
/// The OS error (ELOOP for a symlink on the way, EXDEV for an escape, ENOTDIR, ENOENT...).
pub fn open_dir(root: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a symlink anywhere, the last component
    // included, and reports it as ELOOP (O_NOFOLLOW would turn it into ENOTDIR).
    rfs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
}

/// An `O_PATH` handle on `name` in `dir` (never following it).
///
/// # Errors
/// The OS error.
pub fn open_path(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `/proc/self/fd/N`: names the inode behind an `O_PATH` handle for the calls that have no fd form.
#[must_use]
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `/proc/self/fd/N/name`: a name inside a directory handle, for xattr calls on special files
/// (the last component is not followed by the `l*xattr` calls).
#[must_use]
pub fn proc_fd_child(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = proc_fd_path(dir).into_bytes();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// What `open_regular` found instead of a regular file.
#[derive(Debug)]
pub enum OpenRegularError {
    /// The OS error.
    Os(rustix::io::Errno),
    /// Not a regular file (a symlink, device, FIFO, socket or directory).
    NotRegular,
}

/// Opens `name` in `dir` for reading or writing only if it is a regular file: first an `O_PATH`
/// handle that pins the inode, then its type is checked, then it is reopened through
/// `/proc/self/fd`. A device node or FIFO is never opened.
///
/// # Errors
/// [`OpenRegularError`].
pub fn open_regular(
    dir: BorrowedFd<'_>,
    name: &[u8],
    write: bool,
) -> Result<OwnedFd, OpenRegularError> {
    let handle = open_path(dir, name).map_err(OpenRegularError::Os)?;
    reopen_regular(handle.as_fd(), write)
}

/// Reopens an `O_PATH` handle for I/O after checking it is a regular file.
///
/// # Errors
/// [`OpenRegularError`].
pub fn reopen_regular(handle: BorrowedFd<'_>, write: bool) -> Result<OwnedFd, OpenRegularError> {
    let st = rfs::fstat(handle).map_err(OpenRegularError::Os)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(OpenRegularError::NotRegular);
    }
    let flags = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    rfs::open(
        proc_fd_path(handle).as_str(),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(OpenRegularError::Os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_accepts_plain_paths() {
        assert_eq!(split(b"").unwrap(), None);
        assert_eq!(split(b"a").unwrap(), Some((None, &b"a"[..])));
        assert_eq!(
            split(b"a/b/c").unwrap(),
            Some((Some(&b"a/b"[..]), &b"c"[..]))
        );
        assert_eq!(split(b"o257-7-0").unwrap(), Some((None, &b"o257-7-0"[..])));
        assert_eq!(split(b"...").unwrap(), Some((None, &b"..."[..])));
    }

    #[test]
    fn split_refuses_escapes() {
        for (p, why) in [
            (&b"/etc/passwd"[..], PathRefusal::Absolute),
            (b"..", PathRefusal::DotDot),
            (b"a/../../x", PathRefusal::DotDot),
            (b"a/..", PathRefusal::DotDot),
            (b"./a", PathRefusal::Dot),
            (b"a//b", PathRefusal::EmptyComponent),
            (b"a/", PathRefusal::EmptyComponent),
            (b"a\0b", PathRefusal::Nul),
        ] {
            assert_eq!(split(p).unwrap_err(), why, "{}", String::from_utf8_lossy(p));
        }
        assert_eq!(split(&[b'x'; 256]).unwrap_err(), PathRefusal::TooLong);
        assert_eq!(split(&[b'x'; 4096]).unwrap_err(), PathRefusal::TooLong);
    }

    #[test]
    fn within() {
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(!is_within(b"a", b"a/b"));
    }
}
