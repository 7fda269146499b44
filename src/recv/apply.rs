//! Applying commands beneath a root directory: one function per command kind, as btrfs-progs
//! has one `process_*` per command. A [`Tree`] works on any directory handle, so every command
//! can be tested on a plain temporary directory; only encoded writes, clones and fs-verity need
//! btrfs (or a file system with the same ioctls).
//!
//! Every path is resolved beneath the root without following symlinks ([`beneath`]); files are
//! written only after checking they are regular files; FALLOCATE modes are whitelisted; decoded
//! extents are capped ([`decompress`]).

use super::beneath::{self, PathRefusal};
use super::decompress::{self, DecodeError};
use super::handles::{DirCache, FileCache};
use super::{Failure, dir_err, os, regular, show};
use crate::stream::{Op, Timespec};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// What a create command makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create<'a> {
    /// MKFILE.
    File,
    /// MKDIR.
    Dir,
    /// MKNOD with the stream's mode (file type included) and kernel-encoded device number.
    Node {
        /// Mode with the file type bits.
        mode: u64,
        /// `new_encode_dev` device number.
        rdev: u64,
    },
    /// MKFIFO.
    Fifo,
    /// MKSOCK.
    Sock,
    /// SYMLINK with its target.
    Symlink(&'a [u8]),
}

impl<'a> Create<'a> {
    /// What a create command makes (None for other commands).
    #[must_use]
    pub fn of(op: &Op<'a>) -> Option<Create<'a>> {
        Some(match *op {
            Op::Mkfile { .. } => Create::File,
            Op::Mkdir { .. } => Create::Dir,
            Op::Mknod { mode, rdev, .. } => Create::Node { mode, rdev },
            Op::Mkfifo { .. } => Create::Fifo,
            Op::Mksock { .. } => Create::Sock,
            Op::Symlink { target, .. } => Create::Symlink(target),
            _ => return None,
        })
    }
}

/// The main path a command concerns, for error messages.
#[must_use]
pub fn path_of<'a>(op: &Op<'a>) -> Option<&'a [u8]> {
    Some(match *op {
        Op::Rename { from, .. } => from,
        Op::Mkfile { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Mknod { path, .. }
        | Op::Mkfifo { path, .. }
        | Op::Mksock { path, .. }
        | Op::Symlink { path, .. }
        | Op::Link { path, .. }
        | Op::Unlink { path }
        | Op::Rmdir { path }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. }
        | Op::Write { path, .. }
        | Op::Clone { path, .. }
        | Op::Truncate { path, .. }
        | Op::Chmod { path, .. }
        | Op::Chown { path, .. }
        | Op::Utimes { path, .. }
        | Op::UpdateExtent { path, .. }
        | Op::Fallocate { path, .. }
        | Op::Fileattr { path, .. }
        | Op::EncodedWrite { path, .. }
        | Op::EnableVerity { path, .. } => path,
        _ => return None,
    })
}

/// Splits a stream path into parent and name, refusing the root itself (no command but the
/// metadata ones may name it).
fn entry(path: &[u8]) -> Result<(Option<&[u8]>, &[u8]), Failure> {
    beneath::split(path)?.ok_or(Failure::Path(PathRefusal::Root))
}

/// Opens the directory `rel` beneath `root` without the cache (for a second parent while the
/// cache holds the first).
fn open_uncached(root: BorrowedFd<'_>, rel: Option<&[u8]>) -> Result<Option<OwnedFd>, Failure> {
    rel.map(|d| beneath::open_dir(root, d).map_err(dir_err("open parent directory")))
        .transpose()
}

/// The object of a metadata command (see [`Tree::target`]).
enum Target<'a> {
    /// An open handle: the root or the cached file.
    Fd(BorrowedFd<'a>),
    /// A name in a directory beneath the root (never followed).
    Name(BorrowedFd<'a>, &'a [u8]),
}

/// A directory tree being written by a stream: its root handle and the cached handles below it.
pub struct Tree {
    root: OwnedFd,
    dirs: DirCache,
    file: FileCache,
    force_decompress: bool,
    /// Reused buffer for decoded extents.
    decode_buf: Vec<u8>,
    /// A read handle on the inode last read back ([`Tree::read_at`]), by (device, inode): an
    /// open handle keeps its inode, so the number cannot name another file meanwhile.
    reader: Option<((u64, u64), std::fs::File)>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Tree {
    /// A tree rooted at the directory `root`. With `force_decompress`, encoded writes are always
    /// decoded here instead of being passed to btrfs.
    #[must_use]
    pub fn new(root: OwnedFd, force_decompress: bool) -> Tree {
        Tree {
            root,
            dirs: DirCache::default(),
            file: FileCache::default(),
            force_decompress,
            decode_buf: Vec::new(),
            reader: None,
        }
    }

    /// The root directory handle.
    #[must_use]
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Closes every cached handle and returns the root handle.
    #[must_use]
    pub fn into_root(self) -> OwnedFd {
        self.root
    }

    /// Applies one command. SUBVOL, SNAPSHOT and END belong to the receiver, CLONE needs its
    /// source subvolume: see [`Tree::clone_range`].
    ///
    /// # Errors
    /// [`Failure`]: refused paths or operations, OS errors.
    pub fn apply(&mut self, op: &Op<'_>) -> Result<(), Failure> {
        if let Some(what) = Create::of(op) {
            let path = path_of(op).ok_or(Failure::Bug("create without a path"))?;
            return self.create(path, &what, false).map(|_| ());
        }
        match *op {
            Op::Rename { from, to } => self.rename(from, to),
            Op::Link { path, target } => self.link(path, target),
            Op::Unlink { path } => self.unlink(path),
            Op::Rmdir { path } => self.rmdir(path),
            Op::SetXattr { path, name, data } => self.set_xattr(path, name, data),
            Op::RemoveXattr { path, name } => self.remove_xattr(path, name),
            Op::Write { path, offset, data } => self.write(path, offset, data),
            Op::Truncate { path, size } => self.truncate(path, size),
            Op::Chmod { path, mode } => self.chmod(path, mode),
            Op::Chown { path, uid, gid } => self.chown(path, uid, gid),
            Op::Utimes {
                path, atime, mtime, ..
            } => self.utimes(path, atime, mtime),
            // Extent layout and file attributes are not reproduced (as btrfs receive).
            Op::UpdateExtent { .. } | Op::Fileattr { .. } | Op::Unknown(_) => Ok(()),
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => self.fallocate(path, mode, offset, len),
            Op::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => self.encoded_write(
                path,
                offset,
                &subvol_ioctl::EncodedWrite {
                    offset,
                    len: unencoded_file_len,
                    unencoded_len,
                    unencoded_offset,
                    compression,
                    encryption,
                },
                data,
            ),
            Op::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => self.enable_verity(path, algorithm, block_size, salt, sig),
            Op::Clone { .. } => Err(Failure::Bug("CLONE needs its source: use clone_range")),
            Op::Subvol { .. }
            | Op::Snapshot { .. }
            | Op::End
            | Op::Mkfile { .. }
            | Op::Mkdir { .. }
            | Op::Mknod { .. }
            | Op::Mkfifo { .. }
            | Op::Mksock { .. }
            | Op::Symlink { .. } => Err(Failure::Bug("handled by the receiver")),
        }
    }

    /// MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK: creates an inode at `path` (owner-only
    /// mode until CHMOD). With `try_only`, an existing name is not an error: it returns false
    /// so the caller falls back to the stream's own create-then-rename.
    ///
    /// # Errors
    /// Refused file types or symlink targets, refused paths, OS errors.
    pub fn create(
        &mut self,
        path: &[u8],
        what: &Create<'_>,
        try_only: bool,
    ) -> Result<bool, Failure> {
        let (dir, name) = entry(path)?;
        let parent = self.dirs.get(self.root.as_fd(), dir)?;
        let owner = Mode::from_raw_mode(0o600);
        let result = match *what {
            Create::File => rfs::openat(
                parent,
                name,
                rfs::OFlags::CREATE
                    | rfs::OFlags::EXCL
                    | rfs::OFlags::WRONLY
                    | rfs::OFlags::NOFOLLOW
                    | rfs::OFlags::CLOEXEC,
                owner,
            )
            .map(|fd| self.file.set(path, fd)),
            Create::Dir => rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)),
            Create::Node { mode, rdev } => {
                let ft = FileType::from_raw_mode((mode & 0o170000) as rfs::RawMode);
                if !matches!(
                    ft,
                    FileType::CharacterDevice
                        | FileType::BlockDevice
                        | FileType::Fifo
                        | FileType::Socket
                ) {
                    return Err(Failure::Refused(format!(
                        "mknod with file type {:o}",
                        mode & 0o170000
                    )));
                }
                // RDEV is the kernel's new_encode_dev, not glibc's dev_t.
                let major = ((rdev >> 8) & 0xfff) as u32;
                let minor = ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32;
                rfs::mknodat(parent, name, ft, owner, rfs::makedev(major, minor))
            }
            Create::Fifo => rfs::mknodat(parent, name, FileType::Fifo, owner, 0),
            Create::Sock => rfs::mknodat(parent, name, FileType::Socket, owner, 0),
            Create::Symlink(target) => {
                if target.contains(&0) {
                    return Err(Failure::Refused("NUL byte in symlink target".into()));
                }
                rfs::symlinkat(target, parent, name)
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) if try_only => Ok(false),
            Err(e) => Err(os("create")(e)),
        }
    }

    /// RENAME.
    ///
    /// # Errors
    /// Refused paths, OS errors.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Failure> {
        let (from_dir, from_name) = entry(from)?;
        let (to_dir, to_name) = entry(to)?;
        let root = self.root.as_fd();
        // Two parents may be needed at once: the cache holds one, open the other.
        let from_parent = open_uncached(root, from_dir)?;
        let fp = from_parent.as_ref().map_or(root, AsFd::as_fd);
        let tp = self.dirs.get(root, to_dir)?;
        rfs::renameat(fp, from_name, tp, to_name).map_err(os("rename"))?;
        self.file.renamed(from, to);
        self.dirs.forget_within(from);
        self.dirs.forget_within(to);
        Ok(())
    }

    /// LINK: a new name `path` for the inode at `target` (a symlink is linked itself).
    ///
    /// # Errors
    /// Refused paths, OS errors.
    pub fn link(&mut self, path: &[u8], target: &[u8]) -> Result<(), Failure> {
        let (target_dir, target_name) = entry(target)?;
        let (new_dir, new_name) = entry(path)?;
        let root = self.root.as_fd();
        let target_parent = open_uncached(root, target_dir)?;
        let tp = target_parent.as_ref().map_or(root, AsFd::as_fd);
        let np = self.dirs.get(root, new_dir)?;
        // No AT_SYMLINK_FOLLOW: a symlink is linked itself, never its target.
        rfs::linkat(tp, target_name, np, new_name, AtFlags::empty()).map_err(os("link"))
    }

    /// UNLINK.
    ///
    /// # Errors
    /// Refused paths, OS errors.
    pub fn unlink(&mut self, path: &[u8]) -> Result<(), Failure> {
        let (d, name) = entry(path)?;
        let parent = self.dirs.get(self.root.as_fd(), d)?;
        rfs::unlinkat(parent, name, AtFlags::empty()).map_err(os("unlink"))?;
        self.file.removed(path);
        Ok(())
    }

    /// RMDIR.
    ///
    /// # Errors
    /// Refused paths, OS errors.
    pub fn rmdir(&mut self, path: &[u8]) -> Result<(), Failure> {
        let (d, name) = entry(path)?;
        let parent = self.dirs.get(self.root.as_fd(), d)?;
        rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(os("rmdir"))?;
        self.file.removed(path);
        self.dirs.forget_within(path);
        Ok(())
    }

    /// SET_XATTR.
    ///
    /// # Errors
    /// Refused names or paths, OS errors.
    pub fn set_xattr(&mut self, path: &[u8], name: &[u8], value: &[u8]) -> Result<(), Failure> {
        self.xattr(path, name, Some(value))
    }

    /// REMOVE_XATTR.
    ///
    /// # Errors
    /// Refused names or paths, OS errors.
    pub fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), Failure> {
        self.xattr(path, name, None)
    }

    fn xattr(&mut self, path: &[u8], name: &[u8], value: Option<&[u8]>) -> Result<(), Failure> {
        if name.is_empty() || name.len() > 255 || name.contains(&0) {
            return Err(Failure::Refused(format!(
                "invalid xattr name '{}'",
                show(name)
            )));
        }
        let flags = rfs::XattrFlags::empty();
        let on_fd = |fd: BorrowedFd<'_>| match value {
            Some(v) => rfs::fsetxattr(fd, name, v, flags),
            None => rfs::fremovexattr(fd, name),
        };
        match self.target(path)? {
            Target::Fd(fd) => on_fd(fd),
            Target::Name(parent, fname) => {
                // /proc/self/fd/<parent>/<name> with the l* calls: the last component is never
                // followed, and special files are never opened.
                let p = beneath::proc_fd_child(parent, fname);
                match value {
                    Some(v) => rfs::lsetxattr(p.as_slice(), name, v, flags),
                    None => rfs::lremovexattr(p.as_slice(), name),
                }
            }
        }
        .map_err(os("xattr"))
    }

    /// WRITE.
    ///
    /// # Errors
    /// Not a regular file, offset out of range, OS errors.
    pub fn write(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), Failure> {
        let fd = self.writable(path)?;
        pwrite_all(fd, data, offset)
    }

    /// CLONE: `len` bytes at `clone_offset` of `clone_path` in the subvolume `source` (None:
    /// this tree) into `path` at `offset`.
    ///
    /// # Errors
    /// Refused paths, a source in a nested subvolume, ioctl errors.
    pub fn clone_range(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        source: Option<BorrowedFd<'_>>,
        clone_path: &[u8],
        clone_offset: u64,
    ) -> Result<(), Failure> {
        let (sd, sname) = entry(clone_path)?;
        let src_root = source.unwrap_or(self.root.as_fd());
        let src_dir = sd
            .map(|d| beneath::open_dir(src_root, d).map_err(dir_err("open clone source directory")))
            .transpose()?;
        let src =
            beneath::open_regular(src_dir.as_ref().map_or(src_root, AsFd::as_fd), sname, false)
                .map_err(regular("open clone source"))?;
        // A nested subvolume below the source root is another subvolume: not an allowed source.
        let (a, b) = (
            rfs::fstat(&src).map_err(os("stat clone source"))?,
            rfs::fstat(src_root).map_err(os("stat clone source"))?,
        );
        if a.st_dev != b.st_dev {
            return Err(Failure::Refused(
                "clone source lies in a nested subvolume".into(),
            ));
        }
        let dst = self.writable(path)?;
        subvol_ioctl::clone_range(dst, &src, clone_offset, len, offset)?;
        Ok(())
    }

    /// Clones `len` bytes of the open regular file `src` at `src_offset` into `path` at
    /// `offset` (a dedup seed: `src` was opened and checked by the caller).
    ///
    /// # Errors
    /// Refused paths, ioctl errors (the caller may write the data instead).
    pub fn clone_from_file(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        src: BorrowedFd<'_>,
        src_offset: u64,
    ) -> Result<(), Failure> {
        let dst = self.writable(path)?;
        subvol_ioctl::clone_range(dst, src, src_offset, len, offset)?;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of the regular file `path` (to check what a clone
    /// put there).
    ///
    /// # Errors
    /// Refused paths, OS errors, a file shorter than asked.
    pub fn read_at(&mut self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
        use std::os::unix::fs::FileExt;
        let cached = self.reader.take();
        let fd = self.writable(path)?;
        let st = rfs::fstat(fd).map_err(os("stat"))?;
        let id = (st.st_dev, st.st_ino);
        let file = match cached {
            Some((k, f)) if k == id => f,
            _ => std::fs::File::from(
                beneath::reopen_regular(fd, false).map_err(regular("reopen for reading"))?,
            ),
        };
        let read = file.read_exact_at(buf, offset);
        self.reader = Some((id, file));
        read.map_err(|e| Failure::Os {
            op: "read back",
            source: e,
        })
    }

    /// TRUNCATE.
    ///
    /// # Errors
    /// Not a regular file, OS errors.
    pub fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), Failure> {
        let fd = self.writable(path)?;
        rfs::ftruncate(fd, size).map_err(os("truncate"))
    }

    /// CHMOD (permission bits only; a symlink's mode is never changed).
    ///
    /// # Errors
    /// Refused paths or symlinks, OS errors.
    pub fn chmod(&mut self, path: &[u8], mode: u64) -> Result<(), Failure> {
        let mode = Mode::from_raw_mode((mode & 0o7777) as rfs::RawMode);
        match self.target(path)? {
            Target::Fd(fd) => rfs::fchmod(fd, mode).map_err(os("chmod")),
            Target::Name(parent, name) => {
                let handle = beneath::open_path(parent, name).map_err(os("chmod"))?;
                let st = rfs::fstat(&handle).map_err(os("chmod"))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    return Err(Failure::Refused(
                        "chmod of a symlink (it would change its target)".into(),
                    ));
                }
                rfs::chmod(beneath::proc_fd_path(handle.as_fd()).as_str(), mode)
                    .map_err(os("chmod"))
            }
        }
    }

    /// CHOWN (of the name itself, never a symlink's target).
    ///
    /// # Errors
    /// Ids out of range or -1, refused paths, OS errors.
    pub fn chown(&mut self, path: &[u8], uid: u64, gid: u64) -> Result<(), Failure> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(Failure::Refused(format!(
                "uid {uid} / gid {gid} out of range"
            )));
        };
        if uid == u32::MAX || gid == u32::MAX {
            return Err(Failure::Refused("uid or gid -1".into()));
        }
        let (u, g) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
        match self.target(path)? {
            Target::Fd(fd) => rfs::fchown(fd, Some(u), Some(g)),
            Target::Name(dir, name) => {
                rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(os("chown"))
    }

    /// UTIMES (access and modification times; ctime is the kernel's).
    ///
    /// # Errors
    /// Refused paths, OS errors.
    pub fn utimes(&mut self, path: &[u8], atime: Timespec, mtime: Timespec) -> Result<(), Failure> {
        let times = rfs::Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        };
        match self.target(path)? {
            Target::Fd(fd) => rfs::futimens(fd, &times),
            Target::Name(dir, name) => rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW),
        }
        .map_err(os("utimes"))
    }

    /// FALLOCATE: allocate, keep-size, punch-hole (what the kernel sends) and zero-range only.
    ///
    /// # Errors
    /// Other modes are refused; not a regular file; OS errors.
    pub fn fallocate(
        &mut self,
        path: &[u8],
        mode: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), Failure> {
        const ALLOWED: [u32; 5] = [0, 0x1, 0x3, 0x10, 0x11];
        if !ALLOWED.contains(&mode) {
            return Err(Failure::Refused(format!("fallocate mode {mode:#x}")));
        }
        let flags = rfs::FallocateFlags::from_bits_retain(mode);
        let fd = self.writable(path)?;
        rfs::fallocate(fd, flags, offset, len).map_err(os("fallocate"))
    }

    /// ENCODED_WRITE: passed to btrfs as is when it can take it, else decoded here and written
    /// plain (always with `force_decompress`).
    ///
    /// # Errors
    /// Encrypted or undecodable extents, bad geometry, OS and ioctl errors.
    pub fn encoded_write(
        &mut self,
        path: &[u8],
        offset: u64,
        args: &subvol_ioctl::EncodedWrite,
        data: &[u8],
    ) -> Result<(), Failure> {
        if args.encryption != 0 {
            return Err(DecodeError::Encrypted(args.encryption).into());
        }
        decompress::check_geometry(args.unencoded_len, args.unencoded_offset, args.len)?;
        let force = self.force_decompress;
        let mut buf = std::mem::take(&mut self.decode_buf);
        let result = (|| {
            let fd = self.writable(path)?;
            if !force {
                match subvol_ioctl::encoded_write(fd, data, args) {
                    Ok(_) => return Ok(()),
                    Err(e) if [libc::ENOSPC, libc::ENOTTY, libc::EINVAL].contains(&e.errno()) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            buf.clear();
            buf.resize(args.unencoded_len as usize, 0);
            decompress::decode(args.compression, data, &mut buf)?;
            let start = args.unencoded_offset as usize;
            pwrite_all(fd, &buf[start..start + args.len as usize], offset)
        })();
        self.decode_buf = buf;
        result
    }

    /// ENABLE_VERITY.
    ///
    /// # Errors
    /// Not a regular file, refused paths, ioctl errors.
    pub fn enable_verity(
        &mut self,
        path: &[u8],
        algorithm: u8,
        block_size: u32,
        salt: &[u8],
        sig: &[u8],
    ) -> Result<(), Failure> {
        self.file.clear(); // verity needs no writers
        let (d, name) = entry(path)?;
        let parent = self.dirs.get(self.root.as_fd(), d)?;
        let fd = beneath::open_regular(parent, name, false).map_err(regular("enable verity"))?;
        subvol_ioctl::enable_verity(&fd, u32::from(algorithm), block_size, salt, sig)?;
        Ok(())
    }

    /// The write handle for a regular file at `path` (cached).
    fn writable(&mut self, path: &[u8]) -> Result<BorrowedFd<'_>, Failure> {
        if self.file.hit(path).is_none() {
            let (d, name) = entry(path)?;
            let parent = self.dirs.get(self.root.as_fd(), d)?;
            let fd =
                beneath::open_regular(parent, name, true).map_err(regular("open for writing"))?;
            self.file.set(path, fd);
        }
        self.file.hit(path).ok_or(Failure::Bug("file cache"))
    }

    /// What a metadata command applies to: an open handle (the root or the cached file), or a
    /// name in a parent directory resolved beneath the root.
    fn target<'a>(&'a mut self, path: &'a [u8]) -> Result<Target<'a>, Failure> {
        if let Some(fd) = self.file.hit(path) {
            return Ok(Target::Fd(fd));
        }
        let root = self.root.as_fd();
        Ok(match beneath::split(path)? {
            None => Target::Fd(root),
            Some((d, name)) => Target::Name(self.dirs.get(root, d)?, name),
        })
    }
}

fn ts(t: Timespec) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec) as _,
    }
}

fn pwrite_all(fd: BorrowedFd<'_>, mut data: &[u8], mut offset: u64) -> Result<(), Failure> {
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|e| e > i64::MAX as u64)
    {
        return Err(Failure::Refused(format!(
            "write at offset {offset} out of range"
        )));
    }
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => {
                return Err(Failure::Os {
                    op: "write",
                    source: io::ErrorKind::WriteZero.into(),
                });
            }
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(os("write")(e)),
        }
    }
    Ok(())
}

/// Every command on a plain temporary directory: no btrfs, no root.
#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::Path;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let root = rfs::open(
            dir.path(),
            rfs::OFlags::RDONLY | rfs::OFlags::DIRECTORY | rfs::OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (dir, Tree::new(root, false))
    }

    fn refused(r: Result<impl std::fmt::Debug, Failure>) {
        match r {
            Err(f) if f.is_stream_fault() => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn make(t: &mut Tree, path: &[u8], what: Create<'_>) {
        assert!(t.create(path, &what, false).unwrap());
    }

    #[test]
    fn creates_every_kind_of_inode() {
        let (d, mut t) = tree();
        make(&mut t, b"f", Create::File);
        make(&mut t, b"dir", Create::Dir);
        make(&mut t, b"dir/fifo", Create::Fifo);
        make(&mut t, b"dir/sock", Create::Sock);
        make(
            &mut t,
            b"dir/node",
            Create::Node {
                mode: 0o010_644,
                rdev: 0,
            },
        );
        make(&mut t, b"dir/link", Create::Symlink(b"../f"));
        let meta = |p: &str| fs::symlink_metadata(d.path().join(p)).unwrap();
        assert!(meta("f").is_file());
        assert_eq!(meta("f").mode() & 0o7777, 0o600);
        assert!(meta("dir").is_dir());
        assert!(meta("dir/fifo").file_type().is_fifo());
        assert!(meta("dir/sock").file_type().is_socket());
        assert!(meta("dir/node").file_type().is_fifo());
        assert_eq!(
            fs::read_link(d.path().join("dir/link")).unwrap(),
            Path::new("../f")
        );
        // An existing name: an error, or `false` when only trying (create+rename fusion).
        assert!(!t.create(b"f", &Create::Dir, true).unwrap());
        assert!(matches!(
            t.create(b"f", &Create::Dir, false),
            Err(Failure::Os { .. })
        ));
    }

    #[test]
    fn refuses_unsafe_creates() {
        let (d, mut t) = tree();
        let regular = Create::Node {
            mode: 0o100_644,
            rdev: 0,
        };
        refused(t.create(b"n", &regular, false));
        refused(t.create(b"s", &Create::Symlink(b"a\0b"), false));
        for p in [&b"../x"[..], b"/tmp/x", b"a/../x", b"", b"./x", b"a//b"] {
            refused(t.create(p, &Create::File, false));
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), b"keep").unwrap();
        let (d, mut t) = tree();
        std::os::unix::fs::symlink(outside.path(), d.path().join("esc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), d.path().join("ln")).unwrap();
        refused(t.create(b"esc/new", &Create::File, false));
        refused(t.write(b"esc/victim", 0, b"evil"));
        refused(t.write(b"ln", 0, b"evil"));
        refused(t.truncate(b"ln", 0));
        refused(t.chmod(b"ln", 0o777));
        refused(t.rename(b"esc/victim", b"stolen"));
        refused(t.unlink(b"esc/victim"));
        refused(t.link(b"hard", b"esc/victim"));
        // CHOWN and UTIMES of a symlink change the link itself.
        let uid = u64::from(fs::metadata(d.path()).unwrap().uid());
        let gid = u64::from(fs::metadata(d.path()).unwrap().gid());
        t.chown(b"ln", uid, gid).unwrap();
        t.utimes(
            b"ln",
            Timespec { sec: 5, nsec: 0 },
            Timespec { sec: 6, nsec: 0 },
        )
        .unwrap();
        assert_eq!(
            fs::symlink_metadata(d.path().join("ln")).unwrap().mtime(),
            6
        );
        assert_ne!(
            fs::metadata(outside.path().join("victim")).unwrap().mtime(),
            6
        );
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"keep");
        assert!(!outside.path().join("new").exists());
        assert!(!d.path().join("stolen").exists());
    }

    #[test]
    fn writes_truncates_and_allocates() {
        let (d, mut t) = tree();
        make(&mut t, b"f", Create::File);
        t.write(b"f", 0, b"hello world").unwrap();
        t.write(b"f", 6, b"there").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"hello there");
        // Reading back what landed (dedup checks clones this way), also after a new write.
        let mut back = [0u8; 5];
        t.read_at(b"f", 6, &mut back).unwrap();
        assert_eq!(&back, b"there");
        t.write(b"f", 6, b"THERE").unwrap();
        t.read_at(b"f", 6, &mut back).unwrap();
        assert_eq!(&back, b"THERE");
        assert!(t.read_at(b"f", 8, &mut back).is_err());
        t.truncate(b"f", 5).unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"hello");
        // Keep-size allocation beyond the end, then punch a hole.
        t.fallocate(b"f", 0x1, 0, 8192).unwrap();
        assert_eq!(fs::metadata(d.path().join("f")).unwrap().len(), 5);
        t.fallocate(b"f", 0x3, 1, 2).unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"h\0\0lo");
        // Collapse-range and insert-range would move data: refused.
        refused(t.fallocate(b"f", 0x8, 0, 4096));
        refused(t.fallocate(b"f", 0x20, 0, 4096));
        refused(t.write(b"f", i64::MAX as u64, b"x"));
        // Writing a directory or FIFO is refused, never opened.
        make(&mut t, b"fifo", Create::Fifo);
        refused(t.write(b"fifo", 0, b"x"));
        make(&mut t, b"dir", Create::Dir);
        refused(t.write(b"dir", 0, b"x"));
    }

    #[test]
    fn renames_links_and_removes() {
        let (d, mut t) = tree();
        make(&mut t, b"a", Create::Dir);
        make(&mut t, b"a/b", Create::Dir);
        make(&mut t, b"a/b/f", Create::File);
        t.write(b"a/b/f", 0, b"one").unwrap();
        // The open file follows the rename of a directory above it.
        t.rename(b"a/b", b"c").unwrap();
        t.write(b"c/f", 3, b"two").unwrap();
        assert_eq!(fs::read(d.path().join("c/f")).unwrap(), b"onetwo");
        assert!(!d.path().join("a/b").exists());
        t.link(b"a/hard", b"c/f").unwrap();
        assert_eq!(fs::metadata(d.path().join("c/f")).unwrap().nlink(), 2);
        // A symlink is linked itself.
        make(&mut t, b"sl", Create::Symlink(b"c/f"));
        t.link(b"sl2", b"sl").unwrap();
        assert!(
            fs::symlink_metadata(d.path().join("sl2"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        t.unlink(b"c/f").unwrap();
        t.unlink(b"sl").unwrap();
        refused(t.unlink(b""));
        t.rmdir(b"c").unwrap();
        assert!(matches!(t.rmdir(b"a"), Err(Failure::Os { .. }))); // not empty
        assert_eq!(fs::read(d.path().join("a/hard")).unwrap(), b"onetwo");
        // A directory renamed away and another made under its old name: no stale handle.
        make(&mut t, b"a/x", Create::File);
        t.rename(b"a", b"z").unwrap();
        make(&mut t, b"a", Create::Dir);
        make(&mut t, b"a/y", Create::File);
        assert!(d.path().join("a/y").exists() && d.path().join("z/x").exists());
    }

    #[test]
    fn sets_metadata() {
        let (d, mut t) = tree();
        make(&mut t, b"f", Create::File);
        make(&mut t, b"dir", Create::Dir);
        make(&mut t, b"dir/g", Create::File);
        t.chmod(b"f", 0o104_755).unwrap();
        t.chmod(b"dir/g", 0o640).unwrap();
        t.chmod(b"", 0o751).unwrap();
        let mode = |p: &str| fs::metadata(d.path().join(p)).unwrap().permissions().mode();
        assert_eq!(mode("f") & 0o7777, 0o4755);
        assert_eq!(mode("dir/g") & 0o7777, 0o640);
        assert_eq!(mode("") & 0o7777, 0o751);
        let m = fs::metadata(d.path()).unwrap();
        let (uid, gid) = (u64::from(m.uid()), u64::from(m.gid()));
        t.chown(b"dir/g", uid, gid).unwrap();
        refused(t.chown(b"dir/g", u64::from(u32::MAX), gid));
        refused(t.chown(b"dir/g", 1 << 32, gid));
        t.utimes(
            b"dir/g",
            Timespec {
                sec: 1_000_000,
                nsec: 5,
            },
            Timespec {
                sec: 2_000_000,
                nsec: 7,
            },
        )
        .unwrap();
        let g = fs::metadata(d.path().join("dir/g")).unwrap();
        assert_eq!(
            (g.atime(), g.mtime(), g.mtime_nsec()),
            (1_000_000, 2_000_000, 7)
        );
        // Commands the receiver does not reproduce are accepted.
        t.apply(&Op::UpdateExtent {
            path: b"f",
            offset: 0,
            len: 4096,
        })
        .unwrap();
        t.apply(&Op::Fileattr {
            path: b"f",
            attr: 0,
        })
        .unwrap();
    }

    #[test]
    fn sets_and_removes_xattrs() {
        let (d, mut t) = tree();
        make(&mut t, b"dir", Create::Dir);
        make(&mut t, b"dir/f", Create::File);
        match t.set_xattr(b"dir/f", b"user.test", b"value") {
            Err(Failure::Os { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return; // no user xattrs here
            }
            other => other.unwrap(),
        }
        t.set_xattr(b"", b"user.root", b"r").unwrap();
        let get = |p: &Path, n: &str| {
            let mut buf = [0u8; 64];
            rfs::lgetxattr(p, n, &mut buf).map(|len| buf[..len].to_vec())
        };
        assert_eq!(get(&d.path().join("dir/f"), "user.test").unwrap(), b"value");
        assert_eq!(get(d.path(), "user.root").unwrap(), b"r");
        t.remove_xattr(b"dir/f", b"user.test").unwrap();
        assert!(get(&d.path().join("dir/f"), "user.test").is_err());
        refused(t.set_xattr(b"dir/f", b"", b"v"));
        refused(t.set_xattr(b"dir/f", b"user.a\0b", b"v"));
        refused(t.set_xattr(b"../f", b"user.x", b"v"));
    }

    #[test]
    fn clones_within_the_tree() {
        let (d, mut t) = tree();
        make(&mut t, b"src", Create::File);
        t.write(b"src", 0, &[7u8; 8192]).unwrap();
        make(&mut t, b"dst", Create::File);
        refused(t.clone_range(b"dst", 0, 4096, None, b"../src", 0));
        refused(t.clone_range(b"dst", 0, 4096, None, b"", 0));
        make(&mut t, b"fifo", Create::Fifo);
        refused(t.clone_range(b"dst", 0, 4096, None, b"fifo", 0));
        // Reflinks need btrfs (or XFS): elsewhere the ioctl fails, and nothing is written.
        match t.clone_range(b"dst", 0, 4096, None, b"src", 4096) {
            Ok(()) => assert_eq!(fs::read(d.path().join("dst")).unwrap(), vec![7u8; 4096]),
            Err(Failure::Ioctl(_)) => {
                assert_eq!(fs::metadata(d.path().join("dst")).unwrap().len(), 0);
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn encoded_writes_are_checked_then_decoded() {
        let (d, mut t) = tree();
        t.force_decompress = true;
        make(&mut t, b"f", Create::File);
        let args = |compression, encryption, unencoded_len| subvol_ioctl::EncodedWrite {
            offset: 0,
            len: 4,
            unencoded_len,
            unencoded_offset: 0,
            compression,
            encryption,
        };
        refused(t.encoded_write(b"f", 0, &args(0, 1, 4096), b"x"));
        refused(t.encoded_write(b"f", 0, &args(1, 0, u64::MAX), b"x"));
        // zlib (1) of 4 KiB of 'a', decoded here and written plain.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &[b'a'; 4096]).unwrap();
        let z = z.finish().unwrap();
        t.encoded_write(b"f", 0, &args(1, 0, 4096), &z).unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"aaaa");
    }
}
