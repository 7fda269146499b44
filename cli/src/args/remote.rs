//! `subvol remote` arguments.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `subvol remote`: named mirror lists with their trust, kept as configuration.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)
    #[arg(
        long = "config-dir",
        value_name = "DIR",
        env = "SUBVOL_CONFIG_DIR",
        default_value = "/etc/subvol",
        global = true
    )]
    pub config_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: RemoteCommand,
}

/// `subvol remote` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum RemoteCommand {
    /// Add a remote: a name for one or more mirror URLs of a repository and the trust to pull
    /// from them with
    ///
    /// Writes DIR/remotes.d/NAME.conf and copies each --verify key and the --root file into
    /// DIR/remotes.d/NAME.d/, so the remote does not depend on paths that may vanish. Mirrors are
    /// tried in the order given. Then `subvol pull NAME --into POOL` pulls from them.
    #[command(after_help = "\
Examples:
  subvol remote add vendor https://m1.example/repo https://m2.example/repo --verify vendor.pub
  subvol remote add vendor https://m1.example/repo --root root.json --force
  subvol pull vendor --into /var/lib/pool")]
    Add(RemoteAddArgs),
    /// List the configured remotes
    List(RemoteListArgs),
    /// Show one remote: its mirrors and stored keys
    Show(RemoteShowArgs),
    /// Remove a remote and its stored keys
    Remove(RemoteRemoveArgs),
}

/// `subvol remote add`.
#[derive(Debug, Args, Clone)]
pub struct RemoteAddArgs {
    /// The remote's name: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Mirror URLs (http://, https://, oci://, oci+http://) or absolute directories, in the
    /// order they are tried
    #[arg(value_name = "URL", required = true)]
    pub urls: Vec<String>,
    /// Accepted public key file (repeatable); copied into the configuration
    #[arg(long = "verify", value_name = "PUB", required_unless_present = "root")]
    pub verify: Vec<PathBuf>,
    /// Trusted root metadata file; copied into the configuration
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// Replace a remote of that name
    #[arg(long)]
    pub force: bool,
    /// Print the remote as JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol remote list`.
#[derive(Debug, Args, Clone)]
pub struct RemoteListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol remote show`.
#[derive(Debug, Args, Clone)]
pub struct RemoteShowArgs {
    /// The remote
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol remote remove`.
#[derive(Debug, Args, Clone)]
pub struct RemoteRemoveArgs {
    /// The remote
    #[arg(value_name = "NAME")]
    pub name: String,
}
