//! `subvol publish`, `subvol pull`, `subvol pool`, `subvol list|show|snapshot|delete` arguments.

use clap::Args;
use std::path::PathBuf;

/// `subvol publish`.
#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Repository directory
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
}

/// `subvol pull`.
#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// Repository URL or directory
    #[arg(value_name = "URL|DIR")]
    pub source: String,
}

/// `subvol pool`.
#[derive(Debug, Args, Clone)]
pub struct PoolArgs {
    /// Pool directory
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `subvol list`.
#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    /// Pool or any directory on btrfs
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `subvol show`.
#[derive(Debug, Args, Clone)]
pub struct ShowArgs {
    /// Subvolume
    #[arg(value_name = "SUBVOL")]
    pub path: PathBuf,
}

/// `subvol snapshot`.
#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// Source subvolume
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// New snapshot path
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// `subvol delete`.
#[derive(Debug, Args, Clone)]
pub struct DeleteArgs {
    /// Subvolumes to delete
    #[arg(value_name = "SUBVOL", required = true)]
    pub paths: Vec<PathBuf>,
}
