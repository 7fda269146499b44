//! `subvol send`: from a btrfs subvolume through the kernel, or from a plain directory tree.

use crate::{Error, cli};

/// `subvol send`.
///
/// # Errors
/// Any send failure.
pub fn send(_a: &cli::SendArgs) -> Result<(), Error> {
    Err(Error::Invalid("send is not implemented yet".into()))
}
