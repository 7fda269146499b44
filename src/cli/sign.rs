//! `subvol sign` and `subvol keygen` arguments.

use clap::Args;
use std::path::PathBuf;

/// `subvol sign`.
#[derive(Debug, Args, Clone)]
pub struct SignArgs {
    /// Secret key file
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
}

/// `subvol keygen`.
#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// Where to write the secret key (the public key goes to PATH.pub)
    #[arg(short = 'o', value_name = "PATH")]
    pub output: PathBuf,
}
