//! `subvol recv` and `subvol-recv`.

use super::dump;
use crate::{Error, cli};

/// `subvol recv` / `subvol-recv`.
///
/// # Errors
/// Any receive failure.
pub fn recv(a: &cli::RecvArgs) -> Result<(), Error> {
    if a.dump {
        return dump(&a.input, false, !a.stop_at_end, a.progress);
    }
    Err(Error::Invalid("receiving is not implemented yet".into()))
}

