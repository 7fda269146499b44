//! Walking a directory tree into an in-memory table of inodes and directory entries.
//!
//! The table holds metadata only (state per file, never per byte): type, mode, owner, size,
//! times, device number, symlink target, xattrs, and the entries that name each inode (several
//! for hard links). Contents are read later, while the stream is written. The walk stays on
//! the source's file system: a mount point below it is sent as an empty directory.
//!
//! While walking, a SHA-256 over the metadata is computed in a fixed order (names sorted by
//! bytes); it yields the tree's UUID (see the module docs of [`crate::send`]).

use super::SendError;
use crate::stream::{Timespec, Uuid};
use crate::util::fs::PathError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Index of an inode in [`Tree::inodes`]; the root directory is 0.
pub(crate) type InodeId = u32;
/// Index of an entry in [`Tree::dentries`].
pub(crate) type DentryId = u32;

/// The root directory's inode id.
pub(crate) const ROOT: InodeId = 0;

/// File types that a send stream can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Chr,
    Blk,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Symlink => b'l',
            Kind::Fifo => b'p',
            Kind::Socket => b's',
            Kind::Chr => b'c',
            Kind::Blk => b'b',
        }
    }

    /// The `S_IFMT` bits of the type.
    pub(crate) fn ifmt(self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File => 0o100000,
            Kind::Symlink => 0o120000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
            Kind::Chr => 0o020000,
            Kind::Blk => 0o060000,
        }
    }
}

/// One inode of the tree.
#[derive(Debug)]
pub(crate) struct Inode {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Device number in the kernel's `new_encode_dev` form (what MKNOD carries).
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Extended attributes sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Symlink target.
    pub target: Box<[u8]>,
    /// The entries naming this inode (one for directories, none for the root).
    pub links: Vec<DentryId>,
    /// For directories: the range of their entries in [`Tree::dentries`], sorted by name.
    pub children: (u32, u32),
}

/// An extended attribute: name and value.
pub(crate) type Xattr = (Box<[u8]>, Box<[u8]>);

/// One directory entry.
#[derive(Debug)]
pub(crate) struct Dentry {
    pub parent: InodeId,
    pub name: Box<[u8]>,
    pub inode: InodeId,
}

/// A walked tree.
#[derive(Debug)]
pub(crate) struct Tree {
    /// The source directory as given.
    pub root: PathBuf,
    pub inodes: Vec<Inode>,
    pub dentries: Vec<Dentry>,
    /// SHA-256 of the metadata listing (the input of the derived UUID).
    pub meta_hash: [u8; 32],
    /// Newest mtime (seconds) in the tree: used as the stream's CTRANSID.
    pub newest_mtime: u64,
}

/// The xattr that `chown` clears, so it is always sent after CHOWN/CHMOD.
pub(crate) const CAPABILITY: &[u8] = b"security.capability";

/// An inode's access ACL.
pub(crate) const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// A directory's default ACL: what the kernel gives inodes created in it.
pub(crate) const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

impl Inode {
    /// The value of xattr `name`.
    pub(crate) fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.xattrs[i].1)
    }
}

/// Whether an inode created in a directory with default ACL `acl` gets an access ACL from it.
/// The kernel (`posix_acl_create`) stores one only when the ACL has entries the mode cannot
/// express: named users or groups, or a mask. The xattr is a 4-byte version, then 8-byte
/// entries starting with a 16-bit tag (`ACL_USER` 2, `ACL_GROUP` 8, `ACL_MASK` 0x10).
pub(crate) fn acl_is_extended(acl: &[u8]) -> bool {
    acl.get(4..).unwrap_or_default().chunks_exact(8).any(|e| {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        matches!(tag, 0x02 | 0x08 | 0x10)
    })
}

/// `new_encode_dev` as the kernel puts it in MKNOD's RDEV.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u64 {
    u64::from((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12))
}

fn ts(sec: i64, nsec: u64) -> Timespec {
    Timespec {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    }
}

fn io_err(op: &'static str, path: &Path, e: rustix::io::Errno) -> SendError {
    SendError::Io(PathError::new(op, path.to_path_buf(), e.into()))
}

/// Opens a directory for reading without updating its atime.
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd, SendError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(path, flags, Mode::empty()),
        r => r,
    }
    .map_err(|e| io_err("open directory", path, e))
}

impl Tree {
    /// The entries of directory `d`.
    pub(crate) fn children(&self, d: InodeId) -> &[Dentry] {
        let (s, n) = self.inodes[d as usize].children;
        &self.dentries[s as usize..(s + n) as usize]
    }

    /// The entry ids of directory `d`.
    pub(crate) fn child_ids(&self, d: InodeId) -> std::ops::Range<u32> {
        let (s, n) = self.inodes[d as usize].children;
        s..s + n
    }

    /// Finds the entry `name` in directory `d` (entries are sorted by name).
    pub(crate) fn lookup(&self, d: InodeId, name: &[u8]) -> Option<InodeId> {
        let c = self.children(d);
        c.binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| c[i].inode)
    }

    /// The path of entry `de` relative to the root, as stream paths are.
    pub(crate) fn dentry_path(&self, de: DentryId) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = &self.dentries[de as usize];
        loop {
            parts.push(&cur.name);
            let p = &self.inodes[cur.parent as usize];
            match p.links.first() {
                Some(&up) => cur = &self.dentries[up as usize],
                None => break,
            }
        }
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(p);
        }
        out
    }

    /// The first path of an inode ("" for the root).
    pub(crate) fn inode_path(&self, i: InodeId) -> Vec<u8> {
        match self.inodes[i as usize].links.first() {
            Some(&de) => self.dentry_path(de),
            None => Vec::new(),
        }
    }

    /// The absolute source path of a relative stream path.
    pub(crate) fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Walks the tree at `root`.
    ///
    /// # Errors
    /// A directory, xattr or symlink that cannot be read, with its path.
    pub(crate) fn scan(root: &Path) -> Result<Tree, SendError> {
        let root_fd = open_dir(root)?;
        let st = rustix::fs::fstat(&root_fd).map_err(|e| io_err("stat", root, e))?;
        let root_dev = st.st_dev;
        let mut t = Tree {
            root: root.to_path_buf(),
            inodes: Vec::new(),
            dentries: Vec::new(),
            meta_hash: [0; 32],
            newest_mtime: 0,
        };
        let mut hasher = Sha256::new();
        hasher.update(b"subvol-tree-uuid-v1\0");
        let root_inode = t.make_inode(&st, root, None, &mut hasher)?;
        t.inodes.push(root_inode);
        let mut hardlinks: HashMap<(u64, u64), InodeId> = HashMap::new();
        // Directories still to read: (inode, absolute path, fd if already open).
        let mut stack: Vec<(InodeId, PathBuf, Option<OwnedFd>)> =
            vec![(ROOT, root.to_path_buf(), Some(root_fd))];
        let mut names: Vec<Vec<u8>> = Vec::new();
        while let Some((dir, dir_path, fd)) = stack.pop() {
            let fd = match fd {
                Some(fd) => fd,
                None => open_dir(&dir_path)?,
            };
            names.clear();
            let rd = rustix::fs::Dir::read_from(&fd)
                .map_err(|e| io_err("read directory", &dir_path, e))?;
            for ent in rd {
                let ent = ent.map_err(|e| io_err("read directory", &dir_path, e))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names.sort_unstable();
            let start = t.dentries.len() as u32;
            hasher.update(b"D");
            hasher.update(dir.to_le_bytes());
            let mut subdirs = Vec::new();
            for name in names.drain(..) {
                let path = dir_path.join(OsStr::from_bytes(&name));
                let st = rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err("stat", &path, e))?;
                let de = t.dentries.len() as DentryId;
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                let key = (st.st_dev, st.st_ino);
                hasher.update((name.len() as u32).to_le_bytes());
                hasher.update(&name);
                let existing = if !is_dir && st.st_nlink > 1 {
                    hardlinks.get(&key).copied()
                } else {
                    None
                };
                let ino = match existing {
                    Some(i) => {
                        hasher.update(b"L");
                        hasher.update(i.to_le_bytes());
                        i
                    }
                    None => {
                        let inode = t.make_inode(&st, &path, Some(&fd), &mut hasher)?;
                        let i = t.inodes.len() as InodeId;
                        t.inodes.push(inode);
                        if !is_dir && st.st_nlink > 1 {
                            hardlinks.insert(key, i);
                        }
                        if is_dir && st.st_dev == root_dev {
                            subdirs.push((i, path));
                        }
                        i
                    }
                };
                t.inodes[ino as usize].links.push(de);
                t.dentries.push(Dentry {
                    parent: dir,
                    name: name.into_boxed_slice(),
                    inode: ino,
                });
            }
            t.inodes[dir as usize].children = (start, t.dentries.len() as u32 - start);
            // Reversed so that the walk visits subdirectories in name order.
            for (i, p) in subdirs.into_iter().rev() {
                stack.push((i, p, None));
            }
        }
        t.meta_hash = hasher.finalize().into();
        Ok(t)
    }

    fn make_inode(
        &mut self,
        st: &rustix::fs::Stat,
        path: &Path,
        dirfd: Option<&OwnedFd>,
        hasher: &mut Sha256,
    ) -> Result<Inode, SendError> {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::Chr,
            FileType::BlockDevice => Kind::Blk,
            FileType::Unknown => {
                return Err(SendError::Unsupported {
                    path: path.to_path_buf(),
                    what: "unknown file type",
                });
            }
        };
        let target: Box<[u8]> = if kind == Kind::Symlink {
            let name = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
            let t = match dirfd {
                Some(fd) => rustix::fs::readlinkat(fd, name, Vec::new()),
                None => rustix::fs::readlinkat(rustix::fs::CWD, path, Vec::new()),
            }
            .map_err(|e| io_err("readlink", path, e))?;
            t.into_bytes().into_boxed_slice()
        } else {
            Box::default()
        };
        let xattrs = crate::util::fsread::xattrs(path)
            .map_err(|source| {
                SendError::Io(PathError::new("read xattrs", path.to_path_buf(), source))
            })?
            .into_iter()
            .map(|(n, v)| (n.into_boxed_slice(), v.into_boxed_slice()))
            .collect::<Vec<_>>();
        let rdev = if matches!(kind, Kind::Chr | Kind::Blk) {
            encode_dev(rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))
        } else {
            0
        };
        let inode = Inode {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if kind == Kind::Dir {
                0
            } else {
                u64::try_from(st.st_size).unwrap_or(0)
            },
            rdev,
            atime: ts(st.st_atime, st.st_atime_nsec),
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            xattrs,
            target,
            links: Vec::new(),
            children: (0, 0),
        };
        self.newest_mtime = self
            .newest_mtime
            .max(u64::try_from(inode.mtime.sec).unwrap_or(0));
        hasher.update([kind.tag()]);
        for v in [
            u64::from(inode.mode),
            u64::from(inode.uid),
            u64::from(inode.gid),
            inode.size,
            rdev,
        ] {
            hasher.update(v.to_le_bytes());
        }
        hasher.update(inode.mtime.sec.to_le_bytes());
        hasher.update(inode.mtime.nsec.to_le_bytes());
        hasher.update((inode.target.len() as u32).to_le_bytes());
        hasher.update(&inode.target);
        for (n, v) in &inode.xattrs {
            hasher.update((n.len() as u32).to_le_bytes());
            hasher.update(n);
            hasher.update((v.len() as u32).to_le_bytes());
            hasher.update(v);
        }
        Ok(inode)
    }

    /// The tree's UUID by the documented rule: the first 16 bytes of the metadata hash, marked
    /// as an RFC 9562 version-8 (custom) UUID.
    pub(crate) fn derived_uuid(&self) -> Uuid {
        let mut u = [0u8; 16];
        u.copy_from_slice(&self.meta_hash[..16]);
        u[6] = (u[6] & 0x0f) | 0x80;
        u[8] = (u[8] & 0x3f) | 0x80;
        Uuid(u)
    }
}

#[cfg(test)]
mod tests {
    use super::acl_is_extended;

    fn acl(tags: &[u16]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &t in tags {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&7u16.to_le_bytes());
            v.extend_from_slice(&1000u32.to_le_bytes());
        }
        v
    }

    #[test]
    fn only_named_entries_or_a_mask_make_an_acl_extended() {
        assert!(!acl_is_extended(&acl(&[0x01, 0x04, 0x20])));
        assert!(acl_is_extended(&acl(&[0x01, 0x02, 0x04, 0x10, 0x20])));
        assert!(acl_is_extended(&acl(&[0x01, 0x04, 0x08, 0x10, 0x20])));
        assert!(acl_is_extended(&acl(&[0x01, 0x04, 0x10, 0x20])));
        assert!(!acl_is_extended(b""));
    }
}
