//! `subvol trust` arguments: a repository's trust metadata, offline.

use clap::{Args, Subcommand};
use std::path::PathBuf;

fn duration(s: &str) -> Result<u64, String> {
    subvol::mirror::parse_duration(s)
}

/// `subvol trust`: the repository's trust metadata (roles, thresholds, rotation).
#[derive(Debug, Args, Clone)]
pub struct TrustArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TrustCommand,
}

/// Public keys and thresholds of the four roles (for init and rotate).
#[derive(Debug, Args, Clone)]
pub struct RoleKeyArgs {
    /// Public key file of a root key (repeatable; a file may hold several keys)
    #[arg(long = "root-key", value_name = "PUB")]
    pub root_keys: Vec<PathBuf>,
    /// How many root keys must sign a root version
    #[arg(long = "root-threshold", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub root_threshold: Option<u64>,
    /// Public key file of a release key (repeatable)
    #[arg(long = "release-key", value_name = "PUB")]
    pub release_keys: Vec<PathBuf>,
    /// How many release keys must sign release metadata
    #[arg(long = "release-threshold", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub release_threshold: Option<u64>,
    /// Public key file of a timestamp key (repeatable)
    #[arg(long = "timestamp-key", value_name = "PUB")]
    pub timestamp_keys: Vec<PathBuf>,
    /// How many timestamp keys must sign the timestamp
    #[arg(long = "timestamp-threshold", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub timestamp_threshold: Option<u64>,
    /// Public key file of a stream key: the keys that may sign stream files (repeatable)
    #[arg(long = "stream-key", value_name = "PUB")]
    pub stream_keys: Vec<PathBuf>,
}

/// `subvol trust` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum TrustCommand {
    /// Write the first root (REPO/root/1.json): the keys and thresholds of every role and the
    /// repository's identity
    ///
    /// A repository published before keeps its identity (the UUID of its index.json): pools
    /// that pulled from it with --verify move to the root without downloading anything again.
    #[command(after_help = "\
Examples:
  subvol keygen -o root1.key; subvol keygen -o root2.key     # offline, kept apart
  subvol keygen -o release.key; subvol keygen -o ts.key; subvol keygen -o stream.key
  subvol trust init --repo /srv/repo --name 'example-os stable' \\
      --root-key root1.key.pub --root-key root2.key.pub --root-threshold 2 \\
      --release-key release.key.pub --timestamp-key ts.key.pub --stream-key stream.key.pub \\
      --sign root1.key --sign root2.key
  # give /srv/repo/root/1.json to clients: subvol pull URL --into POOL --root 1.json")]
    Init(TrustInitArgs),
    /// Write the next root version (REPO/root/N+1.json): new keys or thresholds for some roles
    ///
    /// It must be signed by a threshold of the old root keys and of the new ones; sign it with
    /// --sign here, or later on other machines with `subvol trust sign`. Keys no role names any
    /// more are revoked. Rotating the release or timestamp keys also undoes a fast-forward
    /// attack: pools reset the serials they remember for that role.
    #[command(after_help = "\
Examples:
  subvol trust rotate --repo /srv/repo --timestamp-key ts2.key.pub --sign root1.key
  subvol trust sign /srv/repo/root/2.json --key root2.key          # on another machine
  subvol trust timestamp --repo /srv/repo --key ts2.key")]
    Rotate(TrustRotateArgs),
    /// Add signatures to a metadata file (root/N.json, release/N.json, timestamp.json)
    ///
    /// Works offline from the file alone: copy it to the machine holding the key, sign, copy it
    /// back. A signature by the same key replaces the earlier one.
    Sign(TrustSignArgs),
    /// Write REPO/timestamp.json naming the newest release metadata, with a short expiry (the
    /// job to run from cron with the online timestamp key)
    ///
    /// Refuses a release file that lacks its threshold of release signatures.
    #[command(after_help = "\
Examples:
  subvol trust timestamp --repo /srv/repo --key /etc/subvol/ts.key --valid-for 1d
  # cron: 0 */6 * * *  subvol trust timestamp --repo /srv/repo --key /etc/subvol/ts.key")]
    Timestamp(TrustTimestampArgs),
}

/// `subvol trust init`.
#[derive(Debug, Args, Clone)]
pub struct TrustInitArgs {
    /// Repository directory
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The repository's name, for people
    #[arg(long, value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub roles: RoleKeyArgs,
    /// How long the root stays valid
    #[arg(long = "valid-for", value_name = "DURATION", default_value = "365d", value_parser = duration)]
    pub valid_for: u64,
    /// Secret root key to sign with (repeatable)
    #[arg(long = "sign", value_name = "SECRET")]
    pub sign: Vec<PathBuf>,
}

/// `subvol trust rotate`.
#[derive(Debug, Args, Clone)]
pub struct TrustRotateArgs {
    /// Repository directory
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub roles: RoleKeyArgs,
    /// How long the new root stays valid
    #[arg(long = "valid-for", value_name = "DURATION", default_value = "365d", value_parser = duration)]
    pub valid_for: u64,
    /// Secret root key to sign with (repeatable): old and new root keys
    #[arg(long = "sign", value_name = "SECRET")]
    pub sign: Vec<PathBuf>,
}

/// `subvol trust sign`.
#[derive(Debug, Args, Clone)]
pub struct TrustSignArgs {
    /// The metadata file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Secret key to sign with (repeatable)
    #[arg(long = "key", value_name = "SECRET", required = true)]
    pub keys: Vec<PathBuf>,
}

/// `subvol trust timestamp`.
#[derive(Debug, Args, Clone)]
pub struct TrustTimestampArgs {
    /// Repository directory
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Secret timestamp key
    #[arg(long = "key", value_name = "SECRET")]
    pub key: PathBuf,
    /// How long the timestamp stays valid: pools refuse the repository after it (a mirror
    /// cannot freeze them for longer)
    #[arg(long = "valid-for", value_name = "DURATION", default_value = "1d", value_parser = duration)]
    pub valid_for: u64,
}
