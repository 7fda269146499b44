//! `subvol sign` and `subvol keygen`.

use crate::{Error, cli};

/// `subvol sign`.
///
/// # Errors
/// Any signing failure.
pub fn sign(_a: &cli::SignArgs) -> Result<(), Error> {
    Err(Error::Invalid("sign is not implemented yet".into()))
}

/// `subvol keygen`.
///
/// # Errors
/// Any key generation failure.
pub fn keygen(_a: &cli::KeygenArgs) -> Result<(), Error> {
    Err(Error::Invalid("keygen is not implemented yet".into()))
}
