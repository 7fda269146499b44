//! Which subvolume a CLONE may read from: the one being received, its parent, an earlier
//! subvolume of the same input, or a committed subvolume on DEST's file system whose *received*
//! UUID the stream names (data that came from the same sender). A subvolume found only by its
//! own UUID is refused unless the caller allows it (`--clone-from-any`). Each is opened once
//! and kept until the subvolume is sealed.

use super::Failure;
use super::dest::Dest;
use super::staging::Staging;
use crate::stream::Uuid;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The clone sources of the subvolume being received.
pub(super) struct CloneSources {
    /// The received subvolume's own UUID (the sender's).
    own: Uuid,
    parent: Option<(Uuid, OwnedFd)>,
    found: Vec<(Uuid, OwnedFd)>,
    /// Also accept subvolumes found by their own UUID.
    any: bool,
}

impl CloneSources {
    pub(super) fn new(own: Uuid, parent: Option<(Uuid, OwnedFd)>, any: bool) -> CloneSources {
        CloneSources {
            own,
            parent,
            found: Vec::new(),
            any,
        }
    }

    /// The root of the subvolume `uuid` names: None for the subvolume being received (the
    /// caller has its root), else the parent's, a sealed one of this input (`staged`), or one
    /// found on DEST's file system.
    ///
    /// # Errors
    /// The subvolume is not on this host, not allowed, not reachable from DEST's mount, or the
    /// lookup failed.
    pub(super) fn root_for(
        &mut self,
        uuid: Uuid,
        dest: &mut Dest,
        staged: &[Staging],
    ) -> Result<Option<BorrowedFd<'_>>, Failure> {
        if uuid == self.own {
            return Ok(None);
        }
        if let Some((_, fd)) = self.parent.as_ref().filter(|p| p.0 == uuid) {
            return Ok(Some(fd.as_fd()));
        }
        let i = match self.found.iter().position(|(u, _)| *u == uuid) {
            Some(i) => i,
            None => {
                let sealed = staged
                    .iter()
                    .rev()
                    .find(|s| s.uuid() == uuid)
                    .and_then(Staging::sealed_root);
                let fd = match sealed {
                    Some(root) => root.try_clone_to_owned().map_err(|e| Failure::Os {
                        op: "dup",
                        source: e,
                    })?,
                    None => dest.open_subvol_by_uuid(&uuid, "clone source", self.any)?,
                };
                self.found.push((uuid, fd));
                self.found.len() - 1
            }
        };
        Ok(Some(self.found[i].1.as_fd()))
    }
}
