//! `subvol deploy`, `subvol rollback`, `subvol status` arguments.

use clap::Args;
use std::path::PathBuf;

/// Commands run around the switch.
#[derive(Debug, Args, Clone)]
pub struct HookArgs {
    /// Run CMD (with sh -c) after the new deployment is made and before the switch; if it
    /// fails, the new deployment is removed and the target is left as it was
    #[arg(long, value_name = "CMD")]
    pub pre: Option<String>,
    /// Run CMD (with sh -c) after the switch (e.g. `systemctl restart app`); if it fails, the
    /// switch stays and the exit status is 1
    #[arg(long, value_name = "CMD")]
    pub post: Option<String>,
}

/// `subvol deploy`.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "\
Examples:
  subvol deploy /var/lib/pool 1.4 --to /var/lib/app/current
  subvol deploy /var/lib/pool 1.4 --to /opt/app --writable --post 'systemctl restart app'

Layout: PATH is a symbolic link to PATH.deployments/<serial>-<VERSION>, a snapshot of
POOL/VERSION; PATH.deployments/deploy.json records the current and previous deployments.
PATH.deployments must be on the pool's btrfs file system. The current and previous
deployments are kept (older ones are deleted), and `subvol pull --keep` never deletes the
pool versions they came from.

Hooks get SUBVOL_ACTION (deploy or rollback), SUBVOL_TARGET, SUBVOL_VERSION,
SUBVOL_DEPLOYMENT (the deployment switched to) and SUBVOL_PREVIOUS_VERSION in their
environment; their output goes to standard error. See docs/deploy.md.",
    disable_version_flag = true
)]
pub struct DeployArgs {
    /// The pool holding the version
    #[arg(value_name = "POOL")]
    pub pool: PathBuf,
    /// The version (subvolume name in the pool)
    #[arg(value_name = "VERSION")]
    pub version: String,
    /// The path to deploy at (a symbolic link subvol manages; must not exist as anything else)
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    /// Make the deployment a writable snapshot (default read-only); nothing is carried over
    /// from the previous deployment
    #[arg(long)]
    pub writable: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub hooks: HookArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol rollback`.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "\
Examples:
  subvol rollback --to /var/lib/app/current --post 'systemctl restart app'

The previous deployment becomes current and the current one previous: a second rollback
undoes the first.",
    disable_version_flag = true
)]
pub struct RollbackArgs {
    /// The deployed path
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub hooks: HookArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol status`.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "\
Examples:
  subvol status --to /var/lib/app/current
  subvol status --to /var/lib/app/current --json | jq .pending

Shows the current and previous deployments (version, snapshot, remote), the versions the pool
holds, and the newest pulled version when it is neither the current nor the previous
deployment's (pending: an update to deploy; a version rolled back from is not pending).",
    disable_version_flag = true
)]
pub struct StatusArgs {
    /// The deployed path
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    /// The pool to list [default: the current deployment's pool]
    #[arg(long, value_name = "POOL")]
    pub pool: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}
