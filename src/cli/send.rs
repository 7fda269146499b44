//! `subvol send` arguments.

use clap::Args;
use std::path::PathBuf;

/// `subvol send`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// The read-only subvolume or directory tree to send
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// Write the stream to FILE instead of stdout
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}
