//! `BTRFS_IOC_TREE_SEARCH_V2` iteration and parsing of the on-disk items it
//! returns (UUID tree entries, `ROOT_ITEM`, `ROOT_BACKREF`).
//!
//! Everything here is safe code operating on the kernel's result buffer with
//! explicit bounds checks: a truncated or inconsistent buffer yields
//! [`Error::Malformed`], never a panic.

use std::ops::ControlFlow;
use std::os::fd::BorrowedFd;

use crate::error::{Error, Result};
use crate::sys::{self, SEARCH_HEADER_LEN, SearchArgsV2, SearchKey};
use crate::{Timespec, Uuid};

const OP: &str = "BTRFS_IOC_TREE_SEARCH_V2";

/// One item of a search result: its key and its (little-endian, on-disk) data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    pub(crate) objectid: u64,
    pub(crate) item_type: u32,
    pub(crate) offset: u64,
    pub(crate) data: &'a [u8],
}

/// An inclusive key range `(objectid, type, offset)` in one tree. Note that
/// the kernel compares keys lexicographically, so items whose type or offset
/// lies outside the per-field bounds are returned too when their objectid is
/// strictly inside; callers filter by type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyRange {
    pub(crate) tree_id: u64,
    pub(crate) min: (u64, u32, u64),
    pub(crate) max: (u64, u32, u64),
}

fn read_u64_ne(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_u32_ne(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u64_le(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u32_le(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u16_le(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn read_uuid(buf: &[u8], at: usize) -> Option<Uuid> {
    Some(Uuid(buf.get(at..at.checked_add(16)?)?.try_into().ok()?))
}

/// Parses `nr_items` records (32-byte native-endian search header followed by
/// `len` bytes of item data) from a search result buffer.
pub(crate) fn parse_items(buf: &[u8], nr_items: u32) -> Result<Vec<Item<'_>>> {
    let mut items = Vec::with_capacity(nr_items.min(4096) as usize);
    let mut pos = 0usize;
    for i in 0..nr_items {
        let truncated = || {
            Error::malformed(
                OP,
                format!("item {i} of {nr_items} overruns the result buffer"),
            )
        };
        let header = buf
            .get(pos..pos + SEARCH_HEADER_LEN)
            .ok_or_else(truncated)?;
        // Bytes 0..8 hold the transid of the leaf, which no caller needs.
        let objectid = read_u64_ne(header, 8).ok_or_else(truncated)?;
        let offset = read_u64_ne(header, 16).ok_or_else(truncated)?;
        let item_type = read_u32_ne(header, 24).ok_or_else(truncated)?;
        let len = read_u32_ne(header, 28).ok_or_else(truncated)? as usize;
        let start = pos + SEARCH_HEADER_LEN;
        let end = start.checked_add(len).ok_or_else(truncated)?;
        let data = buf.get(start..end).ok_or_else(truncated)?;
        items.push(Item {
            objectid,
            item_type,
            offset,
            data,
        });
        pos = end;
    }
    Ok(items)
}

/// The smallest key strictly greater than `key`, or `None` at the very end
/// of the key space. Key types are 8 bits on disk.
fn next_key((objectid, item_type, offset): (u64, u32, u64)) -> Option<(u64, u32, u64)> {
    if let Some(offset) = offset.checked_add(1) {
        return Some((objectid, item_type, offset));
    }
    if item_type < 255 {
        return Some((objectid, item_type + 1, 0));
    }
    objectid.checked_add(1).map(|objectid| (objectid, 0, 0))
}

/// Calls `visit` for every item in `range`, in key order, issuing as many
/// searches as needed. `visit` can stop the iteration early.
pub(crate) fn for_each_item(
    fd: BorrowedFd<'_>,
    range: KeyRange,
    mut visit: impl FnMut(&Item<'_>) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let mut args = SearchArgsV2::new_boxed();
    let mut min = range.min;
    loop {
        if min > range.max {
            return Ok(());
        }
        *args.key_mut() = SearchKey {
            tree_id: range.tree_id,
            min_objectid: min.0,
            max_objectid: range.max.0,
            min_type: min.1,
            max_type: range.max.1,
            min_offset: min.2,
            max_offset: range.max.2,
            min_transid: 0,
            max_transid: u64::MAX,
            nr_items: u32::MAX,
            ..SearchKey::default()
        };
        sys::tree_search_v2(fd, &mut args).map_err(|e| Error::sys(OP, e))?;
        let nr = args.key().nr_items;
        if nr == 0 {
            return Ok(());
        }
        let items = parse_items(args.buf(), nr)?;
        let mut last = min;
        for item in &items {
            let key = (item.objectid, item.item_type, item.offset);
            if key < min {
                return Err(Error::malformed(
                    OP,
                    "search returned a key below the minimum",
                ));
            }
            last = key;
            if key > range.max {
                return Ok(());
            }
            if visit(item)?.is_break() {
                return Ok(());
            }
        }
        match next_key(last) {
            Some(next) => min = next,
            None => return Ok(()),
        }
    }
}

/// `BTRFS_ROOT_TREE_OBJECTID`.
pub(crate) const ROOT_TREE_OBJECTID: u64 = 1;
/// `BTRFS_UUID_TREE_OBJECTID`.
pub(crate) const UUID_TREE_OBJECTID: u64 = 9;
/// `BTRFS_ROOT_ITEM_KEY`.
pub(crate) const ROOT_ITEM_KEY: u32 = 132;
/// `BTRFS_ROOT_BACKREF_KEY`.
pub(crate) const ROOT_BACKREF_KEY: u32 = 144;
/// `BTRFS_UUID_KEY_SUBVOL`.
pub(crate) const UUID_KEY_SUBVOL: u32 = 251;
/// `BTRFS_UUID_KEY_RECEIVED_SUBVOL`.
pub(crate) const UUID_KEY_RECEIVED_SUBVOL: u32 = 252;

/// Fields of an on-disk `btrfs_root_item` (little-endian, packed, 439 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RootItem {
    pub(crate) generation: u64,
    pub(crate) flags: u64,
    pub(crate) uuid: Uuid,
    pub(crate) parent_uuid: Uuid,
    pub(crate) received_uuid: Uuid,
    pub(crate) ctransid: u64,
    pub(crate) otransid: u64,
    pub(crate) stransid: u64,
    pub(crate) rtransid: u64,
    pub(crate) ctime: Timespec,
    pub(crate) otime: Timespec,
    pub(crate) stime: Timespec,
    pub(crate) rtime: Timespec,
}

/// Size of the current `btrfs_root_item`.
pub(crate) const ROOT_ITEM_LEN: usize = 439;

fn read_timespec(buf: &[u8], at: usize) -> Option<Timespec> {
    Some(Timespec {
        sec: read_u64_le(buf, at)?.cast_signed(),
        nsec: read_u32_le(buf, at + 8)?,
    })
}

/// Parses a `ROOT_ITEM`. Items from before the v2 extension (shorter than
/// [`ROOT_ITEM_LEN`] or with `generation != generation_v2`) report zero
/// UUIDs, transids and times, as btrfs-progs does.
pub(crate) fn parse_root_item(data: &[u8]) -> Result<RootItem> {
    const OP: &str = "ROOT_ITEM";
    let short = || Error::malformed(OP, format!("root item is only {} bytes", data.len()));
    let generation = read_u64_le(data, 160).ok_or_else(short)?;
    let flags = read_u64_le(data, 208).ok_or_else(short)?;
    let mut item = RootItem {
        generation,
        flags,
        ..RootItem::default()
    };
    if data.len() < ROOT_ITEM_LEN || read_u64_le(data, 239) != Some(generation) {
        return Ok(item);
    }
    let v2 = || -> Option<RootItem> {
        Some(RootItem {
            uuid: read_uuid(data, 247)?,
            parent_uuid: read_uuid(data, 263)?,
            received_uuid: read_uuid(data, 279)?,
            ctransid: read_u64_le(data, 295)?,
            otransid: read_u64_le(data, 303)?,
            stransid: read_u64_le(data, 311)?,
            rtransid: read_u64_le(data, 319)?,
            ctime: read_timespec(data, 327)?,
            otime: read_timespec(data, 339)?,
            stime: read_timespec(data, 351)?,
            rtime: read_timespec(data, 363)?,
            generation,
            flags,
        })
    };
    item = v2().ok_or_else(short)?;
    Ok(item)
}

/// A parsed `btrfs_root_ref` (the data of `ROOT_BACKREF`/`ROOT_REF` items).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RootRef {
    pub(crate) dirid: u64,
    pub(crate) name: Vec<u8>,
}

/// Parses `le64 dirid, le64 sequence, le16 name_len, name` (the sequence,
/// the directory index of the entry, is not needed and skipped).
pub(crate) fn parse_root_ref(data: &[u8]) -> Result<RootRef> {
    const OP: &str = "ROOT_BACKREF";
    let short = || Error::malformed(OP, format!("root ref of {} bytes is truncated", data.len()));
    let dirid = read_u64_le(data, 0).ok_or_else(short)?;
    let name_len = read_u16_le(data, 16).ok_or_else(short)? as usize;
    let name = data.get(18..18 + name_len).ok_or_else(short)?.to_vec();
    Ok(RootRef { dirid, name })
}

/// Parses a UUID tree item: a non-empty array of le64 subvolume ids.
pub(crate) fn parse_uuid_item(data: &[u8]) -> Result<Vec<u64>> {
    if data.is_empty() || !data.len().is_multiple_of(8) {
        return Err(Error::malformed(
            "UUID tree",
            format!("item size {} is not a non-zero multiple of 8", data.len()),
        ));
    }
    Ok(data
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(objectid: u64, item_type: u32, offset: u64, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&7u64.to_ne_bytes());
        v.extend_from_slice(&objectid.to_ne_bytes());
        v.extend_from_slice(&offset.to_ne_bytes());
        v.extend_from_slice(&item_type.to_ne_bytes());
        v.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parse_items_ok_and_truncated() {
        let mut buf = record(256, 132, 0, b"abc");
        buf.extend(record(256, 144, 5, b""));
        let items = parse_items(&buf, 2).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].data, b"abc");
        assert_eq!(
            (items[1].objectid, items[1].item_type, items[1].offset),
            (256, 144, 5)
        );
        // Asking for more items than present, or a cut buffer, is an error.
        assert!(matches!(parse_items(&buf, 3), Err(Error::Malformed { .. })));
        assert!(matches!(
            parse_items(&buf[..buf.len() - 1], 2),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            parse_items(&buf[..20], 1),
            Err(Error::Malformed { .. })
        ));
        // A huge length must not overflow.
        let mut bad = record(1, 1, 1, b"");
        bad[28..32].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_items(&bad, 1).is_err());
        assert!(parse_items(&[], 0).unwrap().is_empty());
    }

    #[test]
    fn next_key_carries() {
        assert_eq!(next_key((1, 2, 3)), Some((1, 2, 4)));
        assert_eq!(next_key((1, 2, u64::MAX)), Some((1, 3, 0)));
        assert_eq!(next_key((1, 255, u64::MAX)), Some((2, 0, 0)));
        assert_eq!(next_key((u64::MAX, 255, u64::MAX)), None);
    }

    #[test]
    fn root_item_parsing() {
        let mut data = vec![0u8; ROOT_ITEM_LEN];
        data[160..168].copy_from_slice(&9u64.to_le_bytes());
        data[208..216].copy_from_slice(&1u64.to_le_bytes());
        data[239..247].copy_from_slice(&9u64.to_le_bytes());
        data[247..263].copy_from_slice(&[1; 16]);
        data[263..279].copy_from_slice(&[2; 16]);
        data[279..295].copy_from_slice(&[3; 16]);
        data[295..303].copy_from_slice(&11u64.to_le_bytes());
        data[319..327].copy_from_slice(&14u64.to_le_bytes());
        data[363..371].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        data[371..375].copy_from_slice(&5u32.to_le_bytes());
        let item = parse_root_item(&data).unwrap();
        assert_eq!(item.generation, 9);
        assert_eq!(item.flags, 1);
        assert_eq!(item.uuid, Uuid([1; 16]));
        assert_eq!(item.parent_uuid, Uuid([2; 16]));
        assert_eq!(item.received_uuid, Uuid([3; 16]));
        assert_eq!(item.ctransid, 11);
        assert_eq!(item.rtransid, 14);
        assert_eq!(
            item.rtime,
            Timespec {
                sec: 1_700_000_000,
                nsec: 5
            }
        );

        // generation_v2 mismatch: the v2 fields are not trusted.
        data[239..247].copy_from_slice(&8u64.to_le_bytes());
        let old = parse_root_item(&data).unwrap();
        assert_eq!(old.uuid, Uuid::NIL);
        assert_eq!(old.generation, 9);
        // Short (pre-v2) item.
        let old = parse_root_item(&data[..239]).unwrap();
        assert_eq!(old.flags, 1);
        assert_eq!(old.ctransid, 0);
        // Too short to hold even the flags.
        assert!(parse_root_item(&data[..100]).is_err());
    }

    #[test]
    fn root_ref_parsing() {
        let mut data = Vec::new();
        data.extend_from_slice(&257u64.to_le_bytes());
        data.extend_from_slice(&3u64.to_le_bytes());
        data.extend_from_slice(&4u16.to_le_bytes());
        data.extend_from_slice(b"snap");
        let r = parse_root_ref(&data).unwrap();
        assert_eq!(r.dirid, 257);
        assert_eq!(r.name, b"snap");
        assert!(parse_root_ref(&data[..data.len() - 1]).is_err());
        assert!(parse_root_ref(&data[..10]).is_err());
    }

    #[test]
    fn uuid_item_parsing() {
        let mut data = 300u64.to_le_bytes().to_vec();
        data.extend_from_slice(&301u64.to_le_bytes());
        assert_eq!(parse_uuid_item(&data).unwrap(), vec![300, 301]);
        assert!(parse_uuid_item(&data[..9]).is_err());
        assert!(parse_uuid_item(&[]).is_err());
    }
}
