//! Full stream of one tree, and the parts incremental streams share with it: creating an inode
//! with the kernel's per-inode command order, and sending a file's contents (with whole-file
//! clones of identical content).

use super::content::{BLOCK, ContentHasher, MIN_CLONE_SIZE, SourceFile, hash_file};
use super::dedupe::{Dedupe, Source};
use super::emit::Emitter;
use super::tree::{
    ACL_ACCESS, ACL_DEFAULT, CAPABILITY, DentryId, InodeId, Kind, ROOT, Tree, acl_is_extended,
};
use super::{SendError, SendSummary, TreeSendOptions, subvol_name};
use crate::pipeline::CommandSink;
use crate::stream::{Uuid, cmd, proto};
use std::collections::HashMap;

/// Where identical content can be cloned from.
#[derive(Clone, Debug)]
enum CloneSource {
    /// A file already complete in the subvolume being received, at this path.
    Sent(Vec<u8>),
    /// A file of the parent (incremental streams), at this path in the parent.
    Parent(Vec<u8>),
}

/// Sends file contents, remembering content hashes of files whose size another file shares so
/// that identical files are sent once and cloned whole, and indexing blocks so that identical
/// blocks are cloned (see [`super::dedupe`]). State is per file and a bounded block index.
pub(crate) struct ContentSender<'t> {
    buf: Vec<u8>,
    no_data: bool,
    version: u32,
    uuid: Uuid,
    ctransid: u64,
    parent: Option<(&'t Tree, Uuid, u64)>,
    /// Regular files per size (above the clone threshold), in both trees.
    size_count: HashMap<u64, u32>,
    /// Hashed contents per size.
    known: HashMap<u64, Vec<([u8; 32], CloneSource)>>,
    /// Parent files of this size not hashed yet (hashed on first need).
    parent_pending: HashMap<u64, Vec<InodeId>>,
    /// Files sent as clones, and bytes those clones saved.
    pub(crate) clones: u64,
    /// Block-level dedupe.
    pub(crate) dedupe: Dedupe<'t>,
}

impl<'t> ContentSender<'t> {
    pub(crate) fn new(
        new: &'t Tree,
        opts: &TreeSendOptions,
        uuid: Uuid,
        ctransid: u64,
        parent: Option<(&'t Tree, Uuid, u64)>,
    ) -> ContentSender<'t> {
        let mut size_count: HashMap<u64, u32> = HashMap::new();
        let mut parent_pending: HashMap<u64, Vec<InodeId>> = HashMap::new();
        for i in &new.inodes {
            if i.kind == Kind::File && i.size >= MIN_CLONE_SIZE {
                *size_count.entry(i.size).or_default() += 1;
            }
        }
        if let Some((old, _, _)) = parent {
            for (id, i) in old.inodes.iter().enumerate() {
                // Only sizes that occur in the new tree can ever be clone sources.
                if i.kind == Kind::File
                    && i.size >= MIN_CLONE_SIZE
                    && size_count.contains_key(&i.size)
                {
                    *size_count.entry(i.size).or_default() += 1;
                    parent_pending
                        .entry(i.size)
                        .or_default()
                        .push(id as InodeId);
                }
            }
        }
        ContentSender {
            buf: Vec::new(),
            no_data: opts.no_data,
            version: opts.version,
            uuid,
            ctransid,
            parent,
            size_count,
            known: HashMap::new(),
            parent_pending,
            clones: 0,
            dedupe: Dedupe::new(new, uuid, ctransid, parent),
        }
    }

    /// Hashes the parent's files of `size` that are not hashed yet.
    fn hash_parent_files(&mut self, size: u64) -> Result<(), SendError> {
        let (Some(pending), Some((old, _, _))) = (self.parent_pending.remove(&size), self.parent)
        else {
            return Ok(());
        };
        for id in pending {
            let rel = old.inode_path(id);
            let sf = SourceFile::open(old.abs(&rel), &old.inodes[id as usize])?;
            let h = hash_file(&sf, &mut self.buf)?;
            self.known
                .entry(size)
                .or_default()
                .push((h, CloneSource::Parent(rel)));
        }
        Ok(())
    }

    /// Sends the contents of the new file at `rel` (source path `sf`, known as `me` in the
    /// subvolume being received) into an empty file at the same stream path: a whole-file
    /// CLONE when identical content was seen, else its data ranges (holes skipped) as WRITEs
    /// and CLONEs of blocks seen before, and a TRUNCATE when the data stops short of the size.
    pub(crate) fn send_new_file<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        rel: &[u8],
        sf: &SourceFile,
        me: Source,
    ) -> Result<(), SendError> {
        let size = sf.size;
        if self.no_data {
            for &(s, e) in &sf.ranges {
                em.update_extent(rel, s, e - s)?;
            }
            return finish_size(em, rel, sf);
        }
        let candidate =
            size >= MIN_CLONE_SIZE && self.size_count.get(&size).is_some_and(|&n| n > 1);
        if !candidate {
            return self.write_ranges(em, rel, sf, me, None);
        }
        if self.known.contains_key(&size) || self.parent_pending.contains_key(&size) {
            // Something of this size may be identical: hash first, then clone or send.
            self.hash_parent_files(size)?;
            let h = hash_file(sf, &mut self.buf)?;
            let found = self
                .known
                .get(&size)
                .and_then(|v| v.iter().find(|(k, _)| *k == h))
                .map(|(_, s)| s.clone());
            if let Some(src) = found {
                let (uuid, ctransid, path) = match (&src, self.parent) {
                    (CloneSource::Parent(p), Some((_, u, c))) => (u, c, p),
                    (CloneSource::Sent(p), _) | (CloneSource::Parent(p), None) => {
                        (self.uuid, self.ctransid, p)
                    }
                };
                // The whole file: block-aligned except the tail, which is at EOF of both.
                em.clone_range(rel, 0, size, &uuid, ctransid, path, 0)?;
                self.clones += 1;
                return Ok(());
            }
            self.write_ranges(em, rel, sf, me, None)?;
            self.known
                .entry(size)
                .or_default()
                .push((h, CloneSource::Sent(rel.to_vec())));
            return Ok(());
        }
        // First file of its size: hash while sending, for the ones that follow.
        let mut h = ContentHasher::new(sf);
        self.write_ranges(em, rel, sf, me, Some(&mut h))?;
        self.known
            .entry(size)
            .or_default()
            .push((h.finish(), CloneSource::Sent(rel.to_vec())));
        Ok(())
    }

    /// Sends the data ranges in chunks of at most one WRITE, block by block through the
    /// dedupe (which gathers WRITEs and CLONEs), feeding `hasher` with every byte.
    fn write_ranges<W: CommandSink>(
        &mut self,
        em: &mut Emitter<'_, W>,
        rel: &[u8],
        sf: &SourceFile,
        me: Source,
        mut hasher: Option<&mut ContentHasher>,
    ) -> Result<(), SendError> {
        let chunk = proto::max_write_chunk(self.version) as u64;
        let mut d = self.dedupe.dest(rel, sf, Some(me), 0, false);
        let buf = &mut self.buf;
        for &(s, e) in &sf.ranges {
            let mut off = s;
            while off < e {
                // Chunk ends on block boundaries (chunk is a multiple of the block size).
                let mut end = (off + chunk).min(e);
                if end < e && !end.is_multiple_of(BLOCK) && end / BLOCK * BLOCK > off {
                    end = end / BLOCK * BLOCK;
                }
                let n = (end - off) as usize;
                buf.resize(n, 0);
                sf.read_at(&mut buf[..n], off)?;
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                let mut p = 0usize;
                while p < n {
                    let next = ((off + p as u64) / BLOCK + 1) * BLOCK;
                    let q = ((next - off) as usize).min(n);
                    self.dedupe.piece(em, &mut d, off, &buf[..n], p, q)?;
                    p = q;
                }
                self.dedupe.end_chunk(em, &mut d, off, &buf[..n])?;
                off = end;
            }
            self.dedupe.gap(em, &mut d, off, &[])?;
        }
        self.dedupe.finish(em, &mut d)?;
        sf.finish()?;
        finish_size(em, rel, sf)
    }
}

/// TRUNCATE to the size when the last data range stops short of it (a hole at the end).
fn finish_size<W: CommandSink>(
    em: &mut Emitter<'_, W>,
    rel: &[u8],
    sf: &SourceFile,
) -> Result<(), SendError> {
    let end = sf.ranges.last().map_or(0, |r| r.1);
    if end < sf.size {
        em.truncate(rel, sf.size)?;
    }
    Ok(())
}

/// The INO attribute for an inode (the root is 256, as in btrfs).
pub(crate) fn ino_of(id: InodeId) -> u64 {
    256 + u64::from(id)
}

/// Creates inode `id` of `t` at stream path `rel` with everything but the directory's UTIMES
/// (sent once its contents are complete): MK*, xattrs, data, CHOWN, CHMOD, capability, UTIMES.
/// `parent_default` is the default ACL the directory it is made in has on the receiver at this
/// point of the stream: the ACLs the receiver's kernel derives from it and the source inode
/// lacks are removed.
pub(crate) fn create_inode<W: CommandSink>(
    em: &mut Emitter<'_, W>,
    data: &mut ContentSender<'_>,
    t: &Tree,
    de: DentryId,
    ino: u64,
    rel: &[u8],
    parent_default: Option<&[u8]>,
) -> Result<(), SendError> {
    let id = t.dentries[de as usize].inode;
    let i = &t.inodes[id as usize];
    match i.kind {
        Kind::File => em.mk(cmd::MKFILE, rel, ino)?,
        Kind::Dir => em.mk(cmd::MKDIR, rel, ino)?,
        Kind::Symlink => em.symlink(rel, ino, &i.target)?,
        Kind::Fifo => em.mknod(cmd::MKFIFO, rel, ino, 0, u64::from(i.kind.ifmt() | i.mode))?,
        Kind::Socket => em.mknod(cmd::MKSOCK, rel, ino, 0, u64::from(i.kind.ifmt() | i.mode))?,
        Kind::Chr | Kind::Blk => em.mknod(
            cmd::MKNOD,
            rel,
            ino,
            i.rdev,
            u64::from(i.kind.ifmt() | i.mode),
        )?,
    }
    finish_new_inode(em, data, t, id, Some(de), rel, parent_default)
}

/// Everything after MK* for a new inode made at entry `de` (also used for the root of a full
/// stream, whose directory exists already).
fn finish_new_inode<W: CommandSink>(
    em: &mut Emitter<'_, W>,
    data: &mut ContentSender<'_>,
    t: &Tree,
    id: InodeId,
    de: Option<DentryId>,
    rel: &[u8],
    parent_default: Option<&[u8]>,
) -> Result<(), SendError> {
    let i = &t.inodes[id as usize];
    for (n, v) in &i.xattrs {
        if **n != *CAPABILITY {
            em.set_xattr(rel, n, v)?;
        }
    }
    // Symlinks get no ACLs; other inodes inherit them from the directory's default ACL
    // (whatever order the source's ACLs were set in): drop what the source does not have.
    if let Some(dacl) = parent_default
        && i.kind != Kind::Symlink
    {
        if i.xattr(ACL_ACCESS).is_none() && acl_is_extended(dacl) {
            em.remove_xattr(rel, ACL_ACCESS)?;
        }
        if i.kind == Kind::Dir && i.xattr(ACL_DEFAULT).is_none() {
            em.remove_xattr(rel, ACL_DEFAULT)?;
        }
    }
    if i.kind == Kind::File
        && let Some(dentry) = de
    {
        let sf = SourceFile::open(t.abs(rel), i)?;
        data.send_new_file(em, rel, &sf, Source::New { dentry, inode: id })?;
    }
    em.chown(rel, i.uid, i.gid)?;
    if i.kind != Kind::Symlink {
        em.chmod(rel, i.mode)?;
    }
    if let Some((n, v)) = i.xattrs.iter().find(|(n, _)| **n == *CAPABILITY) {
        em.set_xattr(rel, n, v)?;
    }
    if i.kind != Kind::Dir {
        em.utimes(rel, i.atime, i.mtime, i.ctime)?;
    }
    Ok(())
}

/// A full stream of `t`.
pub(crate) fn send_full<W: CommandSink>(
    t: &Tree,
    opts: &TreeSendOptions,
    sink: W,
    step: &mut super::emit::Step<'_>,
) -> Result<SendSummary, SendError> {
    let uuid = opts.uuid.unwrap_or_else(|| t.derived_uuid());
    let ctransid = t.newest_mtime;
    let mut em = Emitter::new(sink, opts.version, step)?;
    em.mtime_as_ctime = opts.mtime_only;
    em.subvol(&subvol_name(t, opts), &uuid, ctransid)?;
    let mut data = ContentSender::new(t, opts, uuid, ctransid, None);
    // The root exists already: the kernel sends its CHOWN and CHMOD first.
    finish_new_inode(&mut em, &mut data, t, ROOT, None, b"", None)?;
    let mut first_path: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut path = Vec::new();
    walk(&mut em, &mut data, t, ROOT, &mut path, &mut first_path)?;
    let r = &t.inodes[ROOT as usize];
    em.utimes(b"", r.atime, r.mtime, r.ctime)?;
    data.dedupe.close()?;
    let (bytes, commands) = em.end()?;
    Ok(SendSummary {
        bytes,
        commands,
        uuid,
        parent_uuid: None,
    })
}

/// Depth-first creation of directory `dir`'s entries; `path` is the directory's stream path.
fn walk<W: CommandSink>(
    em: &mut Emitter<'_, W>,
    data: &mut ContentSender<'_>,
    t: &Tree,
    dir: InodeId,
    path: &mut Vec<u8>,
    first_path: &mut HashMap<InodeId, Vec<u8>>,
) -> Result<(), SendError> {
    let base = path.len();
    for de_id in t.child_ids(dir) {
        let de = &t.dentries[de_id as usize];
        path.truncate(base);
        if base > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(&de.name);
        let i = &t.inodes[de.inode as usize];
        if let Some(existing) = first_path.get(&de.inode) {
            em.link(path, existing)?;
            continue;
        }
        // The directory's default ACL was sent with it (before its entries).
        let parent_default = t.inodes[dir as usize].xattr(ACL_DEFAULT);
        create_inode(em, data, t, de_id, ino_of(de.inode), path, parent_default)?;
        if i.links.len() > 1 {
            first_path.insert(de.inode, path.clone());
        }
        if i.kind == Kind::Dir {
            walk(em, data, t, de.inode, path, first_path)?;
            em.utimes(path, i.atime, i.mtime, i.ctime)?;
        }
    }
    path.truncate(base);
    Ok(())
}
