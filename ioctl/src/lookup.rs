//! Lookups: inode paths (`BTRFS_IOC_INO_LOOKUP`), subvolumes by UUID (UUID
//! tree), subvolume paths and the subvolume list (root tree).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{Error, Result};
use crate::search::{
    self, KeyRange, ROOT_BACKREF_KEY, ROOT_ITEM_KEY, ROOT_TREE_OBJECTID, RootItem, RootRef,
    UUID_KEY_RECEIVED_SUBVOL, UUID_KEY_SUBVOL, UUID_TREE_OBJECTID,
};
use crate::sys::{self, InoLookupArgs};
use crate::{
    FIRST_FREE_OBJECTID, FS_TREE_OBJECTID, LAST_FREE_OBJECTID, ROOT_SUBVOL_RDONLY, Timespec, Uuid,
};

const OP_INO_LOOKUP: &str = "BTRFS_IOC_INO_LOOKUP";

/// Upper bound on the nesting depth followed by [`subvol_path`]; only a
/// corrupted (cyclic) root tree can exceed it.
const MAX_SUBVOL_DEPTH: usize = 4096;

/// Resolves inode `objectid` of tree `treeid` (0 = the subvolume containing
/// `fd`) to its path relative to that subvolume's root
/// (`BTRFS_IOC_INO_LOOKUP`). Returns the tree id actually used and the path
/// bytes as the kernel gives them: a directory path *with* a trailing `/`
/// (`b"dir/sub/"`), empty for the root directory (objectid 256).
///
/// Needs `CAP_SYS_ADMIN` unless `objectid` is 256.
///
/// # Errors
///
/// `ENOENT` if the tree or inode does not exist, `EPERM` without privileges.
pub fn ino_lookup(fd: impl AsFd, treeid: u64, objectid: u64) -> Result<(u64, Vec<u8>)> {
    let mut args = InoLookupArgs::new(treeid, objectid);
    sys::ino_lookup(fd.as_fd(), &mut args).map_err(|e| Error::sys(OP_INO_LOOKUP, e))?;
    let len = args
        .name
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::malformed(OP_INO_LOOKUP, "path is not NUL-terminated"))?;
    Ok((args.treeid, args.name[..len].to_vec()))
}

/// Returns the id of the subvolume containing `fd` (`BTRFS_IOC_INO_LOOKUP`
/// with treeid 0 and objectid 256; no privileges needed).
///
/// # Errors
///
/// `ENOTTY` if `fd` is not on btrfs.
pub fn subvol_id(fd: impl AsFd) -> Result<u64> {
    Ok(ino_lookup(fd, 0, FIRST_FREE_OBJECTID)?.0)
}

/// Looks `uuid` up in the UUID tree under `key_type` and returns the first
/// subvolume id stored there.
fn uuid_tree_lookup(fd: BorrowedFd<'_>, uuid: &Uuid, key_type: u32) -> Result<Option<u64>> {
    let (hi, lo) = uuid.0.split_at(8);
    let objectid = search::read_u64_le(hi, 0).unwrap_or(0);
    let offset = search::read_u64_le(lo, 0).unwrap_or(0);
    let key = (objectid, key_type, offset);
    let range = KeyRange {
        tree_id: UUID_TREE_OBJECTID,
        min: key,
        max: key,
    };
    let mut found = None;
    let res = search::for_each_item(fd, range, |item| {
        if (item.objectid, item.item_type, item.offset) != key {
            return Ok(ControlFlow::Continue(()));
        }
        found = search::parse_uuid_item(item.data)?.first().copied();
        Ok(ControlFlow::Break(()))
    });
    match res {
        Ok(()) => Ok(found),
        // Filesystems that never had a UUID tree: nothing can be found.
        Err(e) if e.errno() == libc::ENOENT && e.raw_os_error().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds the subvolume whose own UUID is `uuid` (UUID tree key type 251,
/// `BTRFS_UUID_KEY_SUBVOL`). `fs_fd` is any fd on the filesystem. Needs
/// `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// `EPERM` without privileges; [`Error::Malformed`] for a corrupt item.
pub fn find_subvol_by_uuid(fs_fd: impl AsFd, uuid: &Uuid) -> Result<Option<u64>> {
    uuid_tree_lookup(fs_fd.as_fd(), uuid, UUID_KEY_SUBVOL)
}

/// Finds the (first) subvolume whose *received* UUID is `uuid` (UUID tree
/// key type 252, `BTRFS_UUID_KEY_RECEIVED_SUBVOL`), i.e. a subvolume that
/// was received from the sent subvolume with that UUID. Needs `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// As for [`find_subvol_by_uuid`].
pub fn find_subvol_by_received_uuid(fs_fd: impl AsFd, uuid: &Uuid) -> Result<Option<u64>> {
    uuid_tree_lookup(fs_fd.as_fd(), uuid, UUID_KEY_RECEIVED_SUBVOL)
}

/// Reads the `ROOT_BACKREF` of subvolume `id`: its parent subvolume id and
/// its directory entry (`dirid` and name) in that parent.
fn root_backref(fd: BorrowedFd<'_>, id: u64) -> Result<Option<(u64, RootRef)>> {
    let range = KeyRange {
        tree_id: ROOT_TREE_OBJECTID,
        min: (id, ROOT_BACKREF_KEY, 0),
        max: (id, ROOT_BACKREF_KEY, u64::MAX),
    };
    let mut found = None;
    search::for_each_item(fd, range, |item| {
        if item.objectid != id || item.item_type != ROOT_BACKREF_KEY {
            return Ok(ControlFlow::Continue(()));
        }
        found = Some((item.offset, search::parse_root_ref(item.data)?));
        Ok(ControlFlow::Break(()))
    })?;
    Ok(found)
}

/// Returns the path of subvolume `subvol_id` relative to the top-level
/// subvolume (id 5), e.g. `b"dir/sub/nested"`, built from `ROOT_BACKREF`
/// items of the root tree and `BTRFS_IOC_INO_LOOKUP` for subvolumes that
/// are not directly in their parent's root directory. Empty for id 5.
/// `fs_fd` is any fd on the filesystem; the result does not depend on which
/// subvolume is mounted. Needs `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// [`Error::SubvolNotFound`] if the subvolume (or an ancestor) has no back
/// reference (never existed, or is being deleted).
pub fn subvol_path(fs_fd: impl AsFd, subvol_id: u64) -> Result<Vec<u8>> {
    const OP: &str = "subvol_path";
    let fd = fs_fd.as_fd();
    // Components from the leaf upwards, each like `dir/sub/name`.
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut id = subvol_id;
    while id != FS_TREE_OBJECTID {
        if parts.len() >= MAX_SUBVOL_DEPTH {
            return Err(Error::malformed(
                OP,
                "subvolume back references form a cycle",
            ));
        }
        let (parent, rref) = root_backref(fd, id)?.ok_or(Error::SubvolNotFound { op: OP, id })?;
        let mut part = if rref.dirid == FIRST_FREE_OBJECTID {
            Vec::new()
        } else {
            let (_, dir) = ino_lookup(fd, parent, rref.dirid)?;
            dir
        };
        if !part.is_empty() && !part.ends_with(b"/") {
            part.push(b'/');
        }
        part.extend_from_slice(&rref.name);
        parts.push(part);
        id = parent;
    }
    parts.reverse();
    Ok(parts.join(&b'/'))
}

/// One subvolume of the filesystem, from its `ROOT_ITEM` and `ROOT_BACKREF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootEntry {
    /// Subvolume id.
    pub id: u64,
    /// Id of the subvolume containing it.
    pub parent_id: u64,
    /// Inode number of the directory (in `parent_id`) containing it.
    pub dirid: u64,
    /// Its name in that directory (not the full path: see [`subvol_path`]).
    pub name: Vec<u8>,
    /// Latest transaction that changed it.
    pub generation: u64,
    /// Raw on-disk root item flags.
    pub flags: u64,
    /// Whether it is read-only ([`ROOT_SUBVOL_RDONLY`] in `flags`).
    pub readonly: bool,
    /// Its UUID (zero for root items from before kernel 3.6).
    pub uuid: Uuid,
    /// UUID of its snapshot source (zero if none).
    pub parent_uuid: Uuid,
    /// UUID it was received from (zero if none).
    pub received_uuid: Uuid,
    /// Transaction of the last change.
    pub ctransid: u64,
    /// Transaction of creation.
    pub otransid: u64,
    /// Transaction of the sent subvolume.
    pub stransid: u64,
    /// Transaction of receive.
    pub rtransid: u64,
    /// Time of the last change.
    pub ctime: Timespec,
    /// Creation time.
    pub otime: Timespec,
    /// Send time.
    pub stime: Timespec,
    /// Receive time.
    pub rtime: Timespec,
}

impl RootEntry {
    fn new(id: u64, parent_id: u64, rref: RootRef, item: RootItem) -> Self {
        RootEntry {
            id,
            parent_id,
            dirid: rref.dirid,
            name: rref.name,
            generation: item.generation,
            flags: item.flags,
            readonly: item.flags & ROOT_SUBVOL_RDONLY != 0,
            uuid: item.uuid,
            parent_uuid: item.parent_uuid,
            received_uuid: item.received_uuid,
            ctransid: item.ctransid,
            otransid: item.otransid,
            stransid: item.stransid,
            rtransid: item.rtransid,
            ctime: item.ctime,
            otime: item.otime,
            stime: item.stime,
            rtime: item.rtime,
        }
    }
}

/// Lists every subvolume of the filesystem (ids 256 ..=
/// [`LAST_FREE_OBJECTID`]; the top level, id 5, is not included), sorted by
/// id. Subvolumes without a back reference (deleted, awaiting cleanup) are
/// skipped. `fs_fd` is any fd on the filesystem. Needs `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// `EPERM` without privileges; [`Error::Malformed`] for corrupt items.
pub fn list_subvolumes(fs_fd: impl AsFd) -> Result<Vec<RootEntry>> {
    let range = KeyRange {
        tree_id: ROOT_TREE_OBJECTID,
        min: (FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0),
        max: (LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, u64::MAX),
    };
    let mut items: BTreeMap<u64, RootItem> = BTreeMap::new();
    let mut backrefs: BTreeMap<u64, (u64, RootRef)> = BTreeMap::new();
    search::for_each_item(fs_fd.as_fd(), range, |item| {
        match item.item_type {
            // Several root items can exist for one id while an old copy
            // awaits cleanup; keys are sorted, so the last one wins.
            ROOT_ITEM_KEY => {
                items.insert(item.objectid, search::parse_root_item(item.data)?);
            }
            ROOT_BACKREF_KEY => {
                backrefs
                    .entry(item.objectid)
                    .or_insert((item.offset, search::parse_root_ref(item.data)?));
            }
            // ROOT_REF (156) and other items between the bounds.
            _ => {}
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(items
        .into_iter()
        .filter_map(|(id, item)| {
            let (parent, rref) = backrefs.remove(&id)?;
            Some(RootEntry::new(id, parent, rref, item))
        })
        .collect())
}
