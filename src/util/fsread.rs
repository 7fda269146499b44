//! Reading a local tree as it is: files opened without touching atime, xattrs, and the data
//! ranges of sparse files. Used by the tree sender and by the tree digest.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens a file for reading without touching its atime (falls back when not permitted), not
/// following a final symlink.
///
/// # Errors
/// open failures.
pub fn open_noatime(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path),
        r => r,
    }
}

/// The xattrs of `path` (not following a final symlink), sorted by name.
///
/// # Errors
/// listxattr/getxattr failures other than "not supported".
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need =
                    rustix::fs::llistxattr(path, &mut [0u8; 0][..]).map_err(io::Error::from)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut [0u8; 0][..])
                        .map_err(io::Error::from)?;
                    val.resize(need.max(val.len() * 2), 0);
                }
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e.into()),
            }
        };
        if len != usize::MAX {
            val.truncate(len);
            out.push((name.to_vec(), val));
        }
    }
    out.sort();
    Ok(out)
}

/// The data ranges of an open file, as `SEEK_DATA`/`SEEK_HOLE` report them, clamped to `size`.
/// A file system without SEEK_DATA support reports the whole file as data.
///
/// # Errors
/// lseek failures other than ENXIO (no more data).
pub fn data_ranges(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if pos == 0 => {
                out.push((0, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match seek(f, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}
