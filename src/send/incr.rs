//! Incremental stream from tree OLD to tree NEW.
//!
//! 1. **Match** inodes of OLD and NEW (only of the same type; symlinks with the same target,
//!    devices with the same number): the root with the root; then, top-down, an entry with the
//!    same name in matched parents when it looks unchanged (files: same size and mtime); then
//!    files of equal content (moves and renames); then directories by where most of their
//!    matched children came from (directory moves, bottom-up); then any remaining entry with
//!    the same name in matched parents (changed in place). Any matching gives a correct stream;
//!    a good one gives a small stream.
//! 2. **Free names**: every entry of a kept inode that does not survive (same matched parent,
//!    same name) is unlinked, or, when it is the inode's last, renamed to a temporary name in
//!    the root. Then deleted inodes are removed bottom-up (UNLINK, RMDIR).
//! 3. **Place**: top-down over NEW, every entry that is not a surviving one is made: a kept
//!    inode's temporary name is renamed to it, or a LINK is made, or the new inode is created
//!    (with its contents). Parents are placed before children, so paths always exist; all
//!    names were freed in step 2, so nothing collides, and swaps and cycles resolve themselves.
//! 4. **Update** kept inodes: xattrs, contents (block delta), owner, mode, capability, times;
//!    directory times last, bottom-up, the root at the very end.
//!
//! A model of the receiver's tree (each inode's current names) gives the path of every command.

use super::content::{BLOCK, SourceFile, block_is_data, hash_file};
use super::dedupe::Source;
use super::emit::Emitter;
use super::full::{ContentSender, create_inode, ino_of};
use super::tree::{ACL_DEFAULT, CAPABILITY, Inode, InodeId, Kind, ROOT, Tree, Xattr};
use super::{SendError, SendSummary, TreeSendOptions, subvol_name};
use crate::pipeline::CommandSink;
use crate::stream::proto;
use std::collections::HashMap;

/// OLD bytes always worth reading to index clone sources (see `Incr::index_old`).
const OLD_INDEX_MIN: u64 = 64 << 20;

/// The pairing of OLD and NEW inodes.
struct Matching {
    old_to_new: Vec<Option<InodeId>>,
    new_to_old: Vec<Option<InodeId>>,
}

/// Whether an OLD inode can become a NEW one in place (no command changes type, symlink
/// target or device number).
fn compatible(o: &Inode, n: &Inode) -> bool {
    o.kind == n.kind
        && match o.kind {
            Kind::Symlink => o.target == n.target,
            Kind::Chr | Kind::Blk => o.rdev == n.rdev,
            _ => true,
        }
}

impl Matching {
    fn pair(&mut self, oi: InodeId, nj: InodeId) {
        self.old_to_new[oi as usize] = Some(nj);
        self.new_to_old[nj as usize] = Some(oi);
    }

    /// Matches entries with the same name under matched parents, top-down over NEW. With
    /// `strict`, files must also have the same size and mtime.
    fn by_name(&mut self, old: &Tree, new: &Tree, strict: bool) {
        let mut stack = vec![ROOT];
        while let Some(nd) = stack.pop() {
            let Some(od) = self.new_to_old[nd as usize] else {
                continue;
            };
            for de in new.children(nd) {
                let nj = de.inode;
                let n = &new.inodes[nj as usize];
                if self.new_to_old[nj as usize].is_none()
                    && let Some(oi) = old.lookup(od, &de.name)
                    && self.old_to_new[oi as usize].is_none()
                {
                    let o = &old.inodes[oi as usize];
                    let unchanged_look =
                        o.kind != Kind::File || (o.size == n.size && o.mtime == n.mtime);
                    if compatible(o, n) && (!strict || unchanged_look) {
                        self.pair(oi, nj);
                    }
                }
                if n.kind == Kind::Dir {
                    stack.push(nj);
                }
            }
        }
    }

    /// Matches unmatched NEW files to unmatched OLD files of equal content (moves/renames).
    /// Only sizes present on both sides are hashed.
    fn by_content(&mut self, old: &Tree, new: &Tree, buf: &mut Vec<u8>) -> Result<(), SendError> {
        let mut old_by_size: HashMap<u64, Vec<InodeId>> = HashMap::new();
        for (id, o) in old.inodes.iter().enumerate() {
            if o.kind == Kind::File && o.size > 0 && self.old_to_new[id].is_none() {
                old_by_size.entry(o.size).or_default().push(id as InodeId);
            }
        }
        if old_by_size.is_empty() {
            return Ok(());
        }
        let mut old_hash: HashMap<InodeId, [u8; 32]> = HashMap::new();
        for (nj, n) in new.inodes.iter().enumerate() {
            if n.kind != Kind::File || self.new_to_old[nj].is_some() {
                continue;
            }
            let Some(cands) = old_by_size.get(&n.size) else {
                continue;
            };
            let sf = SourceFile::open(new.abs(&new.inode_path(nj as InodeId)), n)?;
            let h = hash_file(&sf, buf)?;
            let name = new.dentries[n.links[0] as usize].name.clone();
            let mut best: Option<InodeId> = None;
            for &oi in cands {
                if self.old_to_new[oi as usize].is_some() {
                    continue;
                }
                let oh = match old_hash.get(&oi) {
                    Some(h) => *h,
                    None => {
                        let o = &old.inodes[oi as usize];
                        let osf = SourceFile::open(old.abs(&old.inode_path(oi)), o)?;
                        let oh = hash_file(&osf, buf)?;
                        old_hash.insert(oi, oh);
                        oh
                    }
                };
                if oh == h {
                    let same_name = old.inodes[oi as usize]
                        .links
                        .iter()
                        .any(|&d| old.dentries[d as usize].name == name);
                    if best.is_none() || same_name {
                        best = Some(oi);
                    }
                    if same_name {
                        break;
                    }
                }
            }
            if let Some(oi) = best {
                self.pair(oi, nj as InodeId);
            }
        }
        Ok(())
    }

    /// Matches unmatched NEW directories to the unmatched OLD directory most of their matched
    /// children came from, bottom-up (so moved subdirectories vote for their parents).
    fn dirs_by_children(&mut self, old: &Tree, new: &Tree) {
        // Post-order: collect directories top-down, then visit in reverse.
        let mut order = Vec::new();
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            order.push(d);
            for de in new.children(d) {
                if new.inodes[de.inode as usize].kind == Kind::Dir {
                    stack.push(de.inode);
                }
            }
        }
        for &nd in order.iter().rev() {
            if self.new_to_old[nd as usize].is_some() {
                continue;
            }
            let mut votes: HashMap<InodeId, u32> = HashMap::new();
            for de in new.children(nd) {
                let Some(oc) = self.new_to_old[de.inode as usize] else {
                    continue;
                };
                for &od in &old.inodes[oc as usize].links {
                    let op = old.dentries[od as usize].parent;
                    if self.old_to_new[op as usize].is_none() {
                        *votes.entry(op).or_default() += 1;
                    }
                }
            }
            let name = new.inodes[nd as usize]
                .links
                .first()
                .map(|&d| &new.dentries[d as usize].name);
            let best = votes.into_iter().max_by_key(|&(op, v)| {
                let same_name = old.inodes[op as usize]
                    .links
                    .first()
                    .map(|&d| &old.dentries[d as usize].name)
                    == name;
                (v, same_name, std::cmp::Reverse(op))
            });
            if let Some((op, _)) = best {
                self.pair(op, nd);
            }
        }
    }

    fn compute(old: &Tree, new: &Tree, buf: &mut Vec<u8>) -> Result<Matching, SendError> {
        let mut m = Matching {
            old_to_new: vec![None; old.inodes.len()],
            new_to_old: vec![None; new.inodes.len()],
        };
        m.pair(ROOT, ROOT);
        m.by_name(old, new, true);
        m.by_content(old, new, buf)?;
        m.dirs_by_children(old, new);
        m.by_name(old, new, false);
        Ok(m)
    }
}

/// The receiver's tree as the stream changes it: every inode's current names. Inodes are
/// "live ids": OLD inode ids, and `old.len() + j` for NEW inode `j` that has no OLD match.
struct Live {
    names: Vec<Vec<(u32, Box<[u8]>)>>,
    /// Directories whose entries changed (their mtime must be sent again).
    touched: Vec<bool>,
    /// Inodes whose only name is a temporary one in the root.
    orphan: Vec<bool>,
}

impl Live {
    fn path(&self, id: u32) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let Some((p, n)) = self.names[cur as usize].first() else {
                break;
            };
            parts.push(n);
            cur = *p;
        }
        join(&parts)
    }

    fn child_path(&self, dir: u32, name: &[u8]) -> Vec<u8> {
        let mut p = self.path(dir);
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }

    fn remove_name(&mut self, id: u32, dir: u32, name: &[u8]) {
        let v = &mut self.names[id as usize];
        if let Some(i) = v.iter().position(|(p, n)| *p == dir && **n == *name) {
            v.remove(i);
        }
        self.touched[dir as usize] = true;
    }

    fn add_name(&mut self, id: u32, dir: u32, name: &[u8]) {
        self.names[id as usize].push((dir, name.into()));
        self.touched[dir as usize] = true;
    }
}

fn join(parts_rev: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts_rev.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts_rev.iter().rev().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    out
}

struct Incr<'a, 'p, W: CommandSink> {
    old: &'a Tree,
    new: &'a Tree,
    m: Matching,
    live: Live,
    em: Emitter<'p, W>,
    data: ContentSender<'a>,
    created: Vec<bool>,
    temp_counter: u64,
    version: u32,
    no_data: bool,
    buf_old: Vec<u8>,
    buf_new: Vec<u8>,
}

impl<W: CommandSink> Incr<'_, '_, W> {
    fn live_of_new(&self, nj: InodeId) -> u32 {
        match self.m.new_to_old[nj as usize] {
            Some(oi) => oi,
            None => self.old.inodes.len() as u32 + nj,
        }
    }

    /// Whether OLD entry (parent `od`, `name`) → `oi` still exists in NEW.
    fn old_entry_survives(&self, od: InodeId, name: &[u8], oi: InodeId) -> bool {
        match (
            self.m.old_to_new[od as usize],
            self.m.old_to_new[oi as usize],
        ) {
            (Some(nd), Some(nj)) => self.new.lookup(nd, name) == Some(nj),
            _ => false,
        }
    }

    /// Whether NEW entry (parent `nd`, `name`) → `nj` exists in OLD.
    fn new_entry_survives(&self, nd: InodeId, name: &[u8], nj: InodeId) -> bool {
        match (
            self.m.new_to_old[nd as usize],
            self.m.new_to_old[nj as usize],
        ) {
            (Some(od), Some(oi)) => self.old.lookup(od, name) == Some(oi),
            _ => false,
        }
    }

    /// A name in the root that exists in neither tree nor among earlier temporary names.
    fn temp_name(&mut self, id: u32) -> Vec<u8> {
        loop {
            let name = format!("o{}-{}-0", ino_of(id), self.temp_counter).into_bytes();
            self.temp_counter += 1;
            if self.old.lookup(ROOT, &name).is_none() && self.new.lookup(ROOT, &name).is_none() {
                return name;
            }
        }
    }

    /// Step 2a: frees the names kept inodes lose.
    fn free_names(&mut self) -> Result<(), SendError> {
        for oi in 1..self.old.inodes.len() as InodeId {
            if self.m.old_to_new[oi as usize].is_none() {
                continue;
            }
            let links = &self.old.inodes[oi as usize].links;
            let (mut keep, mut gone) = (Vec::new(), Vec::new());
            for &de in links {
                let d = &self.old.dentries[de as usize];
                if self.old_entry_survives(d.parent, &d.name, oi) {
                    keep.push(de);
                } else {
                    gone.push(de);
                }
            }
            let mut gone = gone.into_iter();
            if keep.is_empty()
                && let Some(de) = gone.next()
            {
                let d = &self.old.dentries[de as usize];
                let from = self.live.child_path(d.parent, &d.name);
                let tmp = self.temp_name(oi);
                self.em.rename(&from, &tmp)?;
                self.live.remove_name(oi, d.parent, &d.name);
                self.live.add_name(oi, ROOT, &tmp);
                self.live.orphan[oi as usize] = true;
            }
            for de in gone {
                let d = &self.old.dentries[de as usize];
                let p = self.live.child_path(d.parent, &d.name);
                self.em.unlink(&p)?;
                self.live.remove_name(oi, d.parent, &d.name);
            }
        }
        Ok(())
    }

    /// Step 2b: removes deleted inodes, children before their directory.
    fn delete(&mut self, od: InodeId) -> Result<(), SendError> {
        for de in self.old.child_ids(od) {
            let d = &self.old.dentries[de as usize];
            let ci = d.inode;
            let deleted = self.m.old_to_new[ci as usize].is_none();
            if self.old.inodes[ci as usize].kind == Kind::Dir {
                self.delete(ci)?;
                if deleted {
                    let p = self.live.path(ci);
                    self.em.rmdir(&p)?;
                    self.live.remove_name(ci, od, &d.name);
                }
            } else if deleted {
                let p = self.live.child_path(od, &d.name);
                self.em.unlink(&p)?;
                self.live.remove_name(ci, od, &d.name);
            }
        }
        Ok(())
    }

    /// Step 3: makes every NEW entry that is not a surviving OLD one, parents first.
    fn place(&mut self, nd: InodeId) -> Result<(), SendError> {
        let dir_live = self.live_of_new(nd);
        for de in self.new.child_ids(nd) {
            let d = &self.new.dentries[de as usize];
            let nj = d.inode;
            let lid = self.live_of_new(nj);
            let is_dir = self.new.inodes[nj as usize].kind == Kind::Dir;
            if !self.new_entry_survives(nd, &d.name, nj) {
                let to = self.live.child_path(dir_live, &d.name);
                if self.m.new_to_old[nj as usize].is_some() {
                    if self.live.orphan[lid as usize] {
                        let from = self.live.path(lid);
                        self.em.rename(&from, &to)?;
                        let (p, n) = self.live.names[lid as usize][0].clone();
                        self.live.remove_name(lid, p, &n);
                        self.live.orphan[lid as usize] = false;
                    } else {
                        let existing = self.live.path(lid);
                        self.em.link(&to, &existing)?;
                    }
                } else if self.created[nj as usize] {
                    let existing = self.live.path(lid);
                    self.em.link(&to, &existing)?;
                } else {
                    // A kept directory still has OLD's xattrs (step 4 updates them); a new
                    // one got NEW's when it was made.
                    let parent_default = match self.m.new_to_old[nd as usize] {
                        Some(od) => self.old.inodes[od as usize].xattr(ACL_DEFAULT),
                        None => self.new.inodes[nd as usize].xattr(ACL_DEFAULT),
                    };
                    create_inode(
                        &mut self.em,
                        &mut self.data,
                        self.new,
                        de,
                        ino_of(lid),
                        &to,
                        parent_default,
                    )?;
                    self.created[nj as usize] = true;
                }
                self.live.add_name(lid, dir_live, &d.name);
            }
            if is_dir {
                self.place(nj)?;
                if self.m.new_to_old[nj as usize].is_none() {
                    let i = &self.new.inodes[nj as usize];
                    let p = self.live.path(lid);
                    self.em.utimes(&p, i.atime, i.mtime, i.ctime)?;
                }
            }
        }
        Ok(())
    }

    /// Step 4: updates kept inodes (all but directory times).
    fn update(&mut self) -> Result<(), SendError> {
        for nj in 0..self.new.inodes.len() as InodeId {
            let Some(oi) = self.m.new_to_old[nj as usize] else {
                continue;
            };
            let (o, n) = (&self.old.inodes[oi as usize], &self.new.inodes[nj as usize]);
            let path = self.live.path(oi);
            let is_cap = |name: &[u8]| name == CAPABILITY;
            let find = |x: &[Xattr], name: &[u8]| -> Option<Box<[u8]>> {
                x.binary_search_by(|(k, _)| (**k).cmp(name))
                    .ok()
                    .map(|i| x[i].1.clone())
            };
            for (name, _) in &o.xattrs {
                if find(&n.xattrs, name).is_none() {
                    self.em.remove_xattr(&path, name)?;
                }
            }
            for (name, v) in &n.xattrs {
                if !is_cap(name) && find(&o.xattrs, name).as_deref() != Some(&**v) {
                    self.em.set_xattr(&path, name, v)?;
                }
            }
            let content_changed = n.kind == Kind::File && self.update_content(oi, nj, &path)?;
            let chowned = o.uid != n.uid || o.gid != n.gid;
            if chowned {
                self.em.chown(&path, n.uid, n.gid)?;
            }
            // CHOWN and writes clear setuid/setgid (and capabilities) on the receiver.
            let privs_cleared = (chowned || content_changed) && n.kind != Kind::Dir;
            if n.kind != Kind::Symlink
                && (o.mode != n.mode || (privs_cleared && n.mode & 0o6000 != 0))
            {
                self.em.chmod(&path, n.mode)?;
            }
            if let Some(cap) = find(&n.xattrs, CAPABILITY)
                && (privs_cleared || find(&o.xattrs, CAPABILITY).as_deref() != Some(&*cap))
            {
                self.em.set_xattr(&path, CAPABILITY, &cap)?;
            }
            if n.kind != Kind::Dir && (content_changed || o.mtime != n.mtime || o.atime != n.atime)
            {
                self.em.utimes(&path, n.atime, n.mtime, n.ctime)?;
            }
        }
        Ok(())
    }

    /// Step 4, last: times of kept directories, bottom-up, the root last.
    fn dir_times(&mut self, nd: InodeId) -> Result<(), SendError> {
        for de in self.new.child_ids(nd) {
            let c = self.new.dentries[de as usize].inode;
            if self.new.inodes[c as usize].kind == Kind::Dir {
                self.dir_times(c)?;
            }
        }
        if let Some(od) = self.m.new_to_old[nd as usize] {
            let (o, n) = (&self.old.inodes[od as usize], &self.new.inodes[nd as usize]);
            if self.live.touched[od as usize] || o.mtime != n.mtime || o.atime != n.atime {
                let p = self.live.path(od);
                self.em.utimes(&p, n.atime, n.mtime, n.ctime)?;
            }
        }
        Ok(())
    }

    /// Brings a kept file's contents from OLD's to NEW's: a block delta. Returns whether any
    /// command was sent.
    fn update_content(&mut self, oi: InodeId, nj: InodeId, path: &[u8]) -> Result<bool, SendError> {
        let (o, n) = (&self.old.inodes[oi as usize], &self.new.inodes[nj as usize]);
        let os = SourceFile::open(self.old.abs(&self.old.inode_path(oi)), o)?;
        let ns = SourceFile::open(self.new.abs(&self.new.inode_path(nj)), n)?;
        let mut changed = false;
        // Bytes of OLD content still in the receiver's file, and the file's current size.
        let mut old_limit = os.size;
        let mut cur_size = os.size;
        if ns.size < os.size {
            self.em.truncate(path, ns.size)?;
            (old_limit, cur_size, changed) = (ns.size, ns.size, true);
        }
        let eof_block = cur_size / BLOCK * BLOCK;
        if ns.size > cur_size && eof_block < cur_size && !ns.is_data(eof_block) {
            // Growing a file zero-fills its partial EOF block, which would make it data again
            // after a hole is punched there: cut that block off first (NEW has no data in it).
            self.em.truncate(path, eof_block)?;
            (old_limit, cur_size, changed) = (eof_block, eof_block, true);
        }
        let old_ranges: Vec<(u64, u64)> = os
            .ranges
            .iter()
            .filter(|r| r.0 < old_limit)
            .map(|&(s, e)| (s, e.min(old_limit)))
            .collect();
        if self.version < 2 {
            // v1 cannot punch holes: cut the file at the first block that must become a hole
            // and rewrite the rest as a full send would.
            let first_punch = old_ranges.iter().find_map(|&(s, e)| {
                let mut b = s / BLOCK * BLOCK;
                while b < e {
                    if b < ns.size && !ns.is_data(b) {
                        return Some(b);
                    }
                    b += BLOCK;
                }
                None
            });
            if let Some(p) = first_punch {
                self.em.truncate(path, p)?;
                (old_limit, cur_size, changed) = (p, p, true);
            }
        }
        let old_ranges: Vec<(u64, u64)> = old_ranges
            .into_iter()
            .filter(|r| r.0 < old_limit)
            .map(|(s, e)| (s, e.min(old_limit)))
            .collect();
        // Blocks where either side has data, block-aligned, within the new size.
        let mut spans: Vec<(u64, u64)> = old_ranges
            .iter()
            .chain(ns.ranges.iter())
            .map(|&(s, e)| (s / BLOCK * BLOCK, e.div_ceil(BLOCK) * BLOCK))
            .filter(|&(s, _)| s < ns.size)
            .map(|(s, e)| (s, e.min(ns.size)))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let chunk = proto::max_write_chunk(self.version) as u64;
        let mut punch: Option<(u64, u64)> = None;
        // Blocks to send go through the dedupe: WRITE, or CLONE of a block the receiver has.
        let me = Source::New {
            dentry: n.links[0],
            inode: nj,
        };
        let mut d = self
            .data
            .dedupe
            .dest(path, &ns, Some(me), cur_size, self.no_data);
        for (s, e) in merged {
            let mut off = s;
            while off < e {
                let len = (e - off).min(chunk);
                let nlen = usize::try_from(len).unwrap_or(0);
                self.buf_new.resize(nlen, 0);
                ns.read_at(&mut self.buf_new[..nlen], off)?;
                let olen = usize::try_from(old_limit.saturating_sub(off).min(len)).unwrap_or(0);
                self.buf_old.resize(olen, 0);
                os.read_at(&mut self.buf_old[..olen], off)?;
                let mut b = 0usize;
                while b < nlen {
                    let bend = (b + BLOCK as usize).min(nlen);
                    let pos = off + b as u64;
                    let n_data = ns.is_data(pos);
                    let o_data = pos < old_limit && block_is_data(&old_ranges, pos);
                    let oend = bend.min(olen);
                    let same = o_data
                        && b < olen
                        && oend == bend
                        && self.buf_old[b..oend] == self.buf_new[b..bend];
                    let write = n_data && !same;
                    let hole = !n_data && o_data;
                    let chunk_buf = &self.buf_new[..nlen];
                    if write {
                        self.data
                            .dedupe
                            .piece(&mut self.em, &mut d, off, chunk_buf, b, bend)?;
                    } else {
                        self.data.dedupe.gap(&mut self.em, &mut d, off, chunk_buf)?;
                    }
                    if hole {
                        // A hole in the partial block at EOF: punch the whole block (a partial
                        // punch only zeroes).
                        let pe = (off + bend as u64).next_multiple_of(BLOCK);
                        punch = match punch {
                            Some((s0, e0)) if e0 == pos => Some((s0, pe)),
                            Some((s0, e0)) => {
                                self.em.punch_hole(path, s0, e0 - s0)?;
                                Some((pos, pe))
                            }
                            None => Some((pos, pe)),
                        };
                        changed = true;
                    } else if let Some((s0, e0)) = punch.take() {
                        self.em.punch_hole(path, s0, e0 - s0)?;
                    }
                    b = bend;
                }
                self.data
                    .dedupe
                    .end_chunk(&mut self.em, &mut d, off, &self.buf_new[..nlen])?;
                off += len;
            }
            if let Some((s0, e0)) = punch.take() {
                self.em.punch_hole(path, s0, e0 - s0)?;
                changed = true;
            }
        }
        self.data.dedupe.finish(&mut self.em, &mut d)?;
        cur_size = cur_size.max(d.sent_end);
        changed |= d.sent;
        if cur_size != ns.size {
            self.em.truncate(path, ns.size)?;
            changed = true;
        }
        os.finish()?;
        ns.finish()?;
        Ok(changed)
    }

    /// Indexes blocks of OLD files as clone sources (from the parent snapshot), the likeliest
    /// first: files deleted or changed in NEW, then unchanged files in directories where NEW
    /// has new or changed files, then the rest; while the bytes read stay within
    /// max([`OLD_INDEX_MIN`], 2 × the size of the NEW files to send). Nothing when there is
    /// nothing to send.
    fn index_old(&mut self) -> Result<(), SendError> {
        if self.no_data {
            return Ok(());
        }
        let (old, new) = (self.old, self.new);
        let m = &self.m;
        let changed = |oi: InodeId, nj: InodeId| {
            let (o, n) = (&old.inodes[oi as usize], &new.inodes[nj as usize]);
            o.size != n.size || o.mtime != n.mtime
        };
        let mut to_send = 0u64;
        let mut hot = vec![false; old.inodes.len()];
        for (nj, n) in new.inodes.iter().enumerate() {
            if n.kind != Kind::File || n.size < BLOCK {
                continue;
            }
            if m.new_to_old[nj].is_none_or(|oi| changed(oi, nj as InodeId)) {
                to_send = to_send.saturating_add(n.size);
                for &de in &n.links {
                    if let Some(od) = m.new_to_old[new.dentries[de as usize].parent as usize] {
                        hot[od as usize] = true;
                    }
                }
            }
        }
        if to_send == 0 {
            return Ok(());
        }
        let budget = OLD_INDEX_MIN.max(to_send.saturating_mul(2));
        let mut tiers: [Vec<InodeId>; 3] = Default::default();
        for (oi, o) in old.inodes.iter().enumerate() {
            if o.kind != Kind::File || o.size <= BLOCK {
                continue;
            }
            let tier = match m.old_to_new[oi] {
                Some(nj) if !changed(oi as InodeId, nj) => {
                    if o.links
                        .iter()
                        .any(|&de| hot[old.dentries[de as usize].parent as usize])
                    {
                        1
                    } else {
                        2
                    }
                }
                _ => 0,
            };
            tiers[tier].push(oi as InodeId);
        }
        let mut used = 0u64;
        for oi in tiers.into_iter().flatten() {
            let o = &old.inodes[oi as usize];
            if used.saturating_add(o.size) > budget {
                continue;
            }
            used += o.size;
            let sf = SourceFile::open(old.abs(&old.inode_path(oi)), o)?;
            self.data.dedupe.index_file(Source::Parent(oi), &sf)?;
        }
        Ok(())
    }
}

/// An incremental stream from `old` to `new`.
pub(crate) fn send_incremental<W: CommandSink>(
    old: &Tree,
    new: &Tree,
    opts: &TreeSendOptions,
    sink: W,
    step: &mut super::emit::Step<'_>,
) -> Result<SendSummary, SendError> {
    let uuid = opts.uuid.unwrap_or_else(|| new.derived_uuid());
    let parent_uuid = opts.parent_uuid.unwrap_or_else(|| old.derived_uuid());
    let mut buf = Vec::new();
    let m = Matching::compute(old, new, &mut buf)?;
    let mut em = Emitter::new(sink, opts.version, step)?;
    em.mtime_as_ctime = opts.mtime_only;
    em.snapshot(
        &subvol_name(new, opts),
        &uuid,
        new.newest_mtime,
        &parent_uuid,
        old.newest_mtime,
    )?;
    let nlive = old.inodes.len() + new.inodes.len();
    let mut names = vec![Vec::new(); nlive];
    for d in &old.dentries {
        names[d.inode as usize].push((d.parent, d.name.clone()));
    }
    let data = ContentSender::new(
        new,
        opts,
        uuid,
        new.newest_mtime,
        Some((old, parent_uuid, old.newest_mtime)),
    );
    let mut s = Incr {
        old,
        new,
        m,
        live: Live {
            names,
            touched: vec![false; nlive],
            orphan: vec![false; nlive],
        },
        em,
        data,
        created: vec![false; new.inodes.len()],
        temp_counter: 0,
        version: opts.version,
        no_data: opts.no_data,
        buf_old: Vec::new(),
        buf_new: buf,
    };
    s.index_old()?;
    s.free_names()?;
    s.delete(ROOT)?;
    s.place(ROOT)?;
    s.update()?;
    s.dir_times(ROOT)?;
    s.data.dedupe.close()?;
    let (bytes, commands) = s.em.end()?;
    Ok(SendSummary {
        bytes,
        commands,
        uuid,
        parent_uuid: Some(parent_uuid),
    })
}
