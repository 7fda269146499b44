//! Which subvolume a CLONE may read from: the one being received, its parent, or a subvolume on
//! DEST's file system found by UUID (opened once, kept until the subvolume is committed).

use super::Failure;
use super::dest::Dest;
use crate::stream::Uuid;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The clone sources of the subvolume being received.
pub(super) struct CloneSources {
    /// The received subvolume's own UUID (the sender's).
    own: Uuid,
    parent: Option<(Uuid, OwnedFd)>,
    found: Vec<(Uuid, OwnedFd)>,
}

impl CloneSources {
    pub(super) fn new(own: Uuid, parent: Option<(Uuid, OwnedFd)>) -> CloneSources {
        CloneSources {
            own,
            parent,
            found: Vec::new(),
        }
    }

    pub(super) fn parent_uuid(&self) -> Option<Uuid> {
        self.parent.as_ref().map(|p| p.0)
    }

    /// The root of the subvolume `uuid` names: None for the subvolume being received (the
    /// caller has its root), else the parent's or one found on DEST's file system.
    ///
    /// # Errors
    /// The subvolume is not on this host, not reachable from DEST's mount, or the lookup failed.
    pub(super) fn root_for(
        &mut self,
        uuid: Uuid,
        dest: &mut Dest,
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
                let fd = dest.open_subvol_by_uuid(&uuid, "clone source")?;
                self.found.push((uuid, fd));
                self.found.len() - 1
            }
        };
        Ok(Some(self.found[i].1.as_fd()))
    }
}
