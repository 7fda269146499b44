//! `subvol publish`, `subvol pull`, `subvol pool`, `subvol list|show|snapshot|delete` arguments.

use clap::{Args, Subcommand};
use std::path::PathBuf;

fn duration(s: &str) -> Result<u64, String> {
    subvol::mirror::parse_duration(s)
}

fn size(s: &str) -> Result<u64, String> {
    subvol::mirror::parse_size(s)
}

/// `subvol publish`: add a version to a mirror repository (a directory of plain files that any
/// static web server or rsync mirror can serve).
///
/// Writes a signed, zstd-compressed full stream of SOURCE and signed deltas from the versions
/// published 1, 2, 4, 8, ... versions earlier (so any old version reaches the newest in about
/// log2(n) steps while the repository keeps O(n log n) deltas), each one file named by its
/// SHA-256, then replaces the signed index (serial + 1, new expiry) in one rename.
///
/// The full stream file is a series of independent zstd frames cut along its file data, with a
/// content map (`streams/<sha256>.map`, listed in the index) naming each frame's 4 KiB blocks,
/// so a pull can fetch only the byte ranges holding data its pool lacks.
///
/// SOURCE is a directory tree on any file system, or a read-only subvolume (read as a tree).
/// Deltas need the earlier trees: each published version is kept in the tree store
/// (--trees, default REPO.trees next to the repository) as a read-only subvolume when the
/// store is on btrfs, else as a directory copy (`cp -a --reflink=auto`). Without SOURCE,
/// publish only re-signs the index (new serial and expiry) and applies --prune.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "\
Examples:
  subvol keygen -o vendor.key
  subvol publish --repo /srv/repo --key vendor.key ./build-1 --version 1.0
  subvol publish --repo /srv/repo --key vendor.key ./build-2 --version 1.1 --prune 20
  subvol publish --repo /srv/repo --key vendor.key            # re-sign before it expires

Repository layout: REPO/index.json (signed index), REPO/streams/<sha256>.zst (stream files)
and REPO/streams/<sha256>.map (content maps of full streams).
See docs/mirrors.md.",
    disable_version_flag = true
)]
pub struct PublishArgs {
    /// Repository directory (created if missing)
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Secret signing key (from `subvol keygen`)
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
    /// The tree to publish (a directory or read-only subvolume); omit to only re-sign/prune
    #[arg(value_name = "SOURCE")]
    pub source: Option<PathBuf>,
    /// Version name (default: one more than the highest numeric version, or 1); it becomes the
    /// subvolume name in pools
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Tree store holding each published version's tree for later deltas
    /// [default: REPO.trees]
    #[arg(long, value_name = "DIR")]
    pub trees: Option<PathBuf>,
    /// Retire all but the newest N versions (their streams, deltas from and to them, and
    /// their stored trees)
    #[arg(long, value_name = "N")]
    pub prune: Option<usize>,
    /// How long the index stays valid (pulls refuse an expired index): 3600, 90m, 12h, 30d, 2w
    #[arg(long = "valid-for", value_name = "DURATION", default_value = "30d", value_parser = duration)]
    pub valid_for: u64,
    /// zstd compression level (1-19)
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Send stream protocol version of the streams (1 or 2)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub proto: u32,
    /// Write only the full stream (and its content map) of SOURCE, no deltas: pulls then
    /// fetch the parts of the full stream whose data the pool lacks
    #[arg(long = "no-deltas")]
    pub no_deltas: bool,
    /// Threads making streams and compressing them (default: one per core); the files written
    /// are the same for any number
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Secret release key signing release/SERIAL.json in a repository with trust metadata
    /// (repeatable) [default: --key, when the root lists it as a release key]
    #[arg(long = "release-key", value_name = "SECRET")]
    pub release_keys: Vec<PathBuf>,
    /// Secret timestamp key: also write timestamp.json naming the new release
    #[arg(long = "timestamp-key", value_name = "SECRET")]
    pub timestamp_key: Option<PathBuf>,
    /// How long the timestamp written with --timestamp-key stays valid
    #[arg(long = "timestamp-valid-for", value_name = "DURATION", default_value = "1d", value_parser = duration)]
    pub timestamp_valid_for: u64,
    /// Then push the repository to this OCI registry (oci://HOST[:PORT]/NAME[:CHANNEL],
    /// oci+http:// for plain HTTP) as `subvol push` does (repeatable): the directory stays the
    /// repository of record (its tree store makes the next deltas)
    #[arg(long = "push", value_name = "REFERENCE")]
    pub push: Vec<String>,
    /// For --push: trust the PEM certificates in FILE instead of the bundled Mozilla roots
    #[arg(long, value_name = "FILE", requires = "push")]
    pub ca: Option<PathBuf>,
}

/// `subvol pull`: bring a pool to a version from a mirror repository.
///
/// Reads the index and refuses it when its signature does not verify with a --verify key, when
/// it expired, or when its serial is older than one this pool already saw. Finds the versions
/// the pool holds (by received UUID), plans the cheapest chain of files to the target (fewest
/// bytes, then fewest steps), and refuses it, before fetching anything, when what its steps
/// write plus the download cache do not fit in the pool's free space. Then it receives each
/// step through the signature-verifying receiver while the file downloads (HTTP(S) and
/// registries, resuming partial downloads with Range requests; a directory's files are read in
/// place), with the next file read ahead as long as the cache holds no more than the largest
/// file of the plan; each file's SHA-256 is checked before its version is committed, and each
/// cache file is deleted once it is. Each version appears as POOL/VERSION only once complete
/// and verified. A missing or bad file makes it try another chain.
///
/// Progress: one bar over the plan (bytes to fetch, fetched, applied, rate, ETA) when stderr is
/// a terminal (or with --progress); -v prints a line per step. With --json, stderr carries one
/// JSON object per line for each event ("event": "plan", "space", "progress", "resume",
/// "refused", "step", "received", "removed"; "progress" at most 4 times a second and after each
/// step, with "total", "fetched", "reused", "applied") and stdout the final report.
#[derive(Debug, Args, Clone)]
#[command(
    after_help = "\
Examples:
  subvol pull https://mirror.example/repo --into /var/lib/pool --verify vendor.key.pub
  subvol pull /mnt/usb/repo --into /var/lib/pool --verify vendor.key.pub --version 1.0
  subvol pull http://127.0.0.1:8080/ --into /pool --verify k.pub --dry-run
  subvol pull URL --into /pool --verify k.pub --keep 2
  subvol pull https://m1.example/repo --mirror https://m2.example/repo --into /pool --verify k.pub
  subvol pull vendor --into /var/lib/pool          # a remote (subvol remote add)

Versions received only as intermediate steps are deleted afterwards. --keep N deletes the
oldest versions this pool pulled beyond N (never the target, never other subvolumes).",
    disable_version_flag = true
)]
pub struct PullArgs {
    /// Repository URL (http:// or https://), registry (oci://HOST[:PORT]/NAME[:TAG], or
    /// oci+http:// for plain HTTP), directory, or the name of a remote (`subvol remote add`;
    /// a name without '/' that is a configured remote is that remote: write ./DIR for a
    /// directory of that name)
    #[arg(value_name = "URL|DIR|REMOTE")]
    pub source: String,
    /// The pool: a directory on btrfs (see `subvol pool init`)
    #[arg(long, value_name = "POOL")]
    pub into: PathBuf,
    /// Accepted public key for the index and the streams (repeatable), for a repository
    /// without trust metadata (required unless --root is given or the source is a remote,
    /// whose keys are added to these)
    #[arg(long = "verify", value_name = "PUB", conflicts_with = "root")]
    pub verify: Vec<PathBuf>,
    /// Trusted root of the repository (root/N.json from its publisher): first contact; later
    /// pulls use the newest root this pool verified (POOL/.subvol/trust/)
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// Another mirror of the repository, tried after the source (and a remote's mirrors) in
    /// the order given (repeatable): the newest valid index of all of them is used, and each
    /// file comes from the first mirror that serves it correctly
    #[arg(long = "mirror", value_name = "URL")]
    pub mirror: Vec<String>,
    /// Configuration directory of remotes (DIR/remotes.d; also $SUBVOL_CONFIG_DIR)
    #[arg(
        long = "config-dir",
        value_name = "DIR",
        env = "SUBVOL_CONFIG_DIR",
        default_value = "/etc/subvol"
    )]
    pub config_dir: PathBuf,
    /// Target version (default: the newest)
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Keep at most N pulled versions in the pool
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// Print the plan (steps and sizes) and change nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// How to reach the target: the cheaper of both (auto), a chain of stream files (chain), or
    /// the target's full stream rebuilt from data the pool holds plus ranges fetched (seeded)
    #[arg(long, value_name = "HOW", value_enum, default_value_t = PlanChoice::Auto)]
    pub plan: PlanChoice,
    /// Give an HTTP transfer up after this long without a byte (also connecting, and waiting
    /// for the response)
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = duration)]
    pub timeout: u64,
    /// Give an HTTP transfer up when it moves fewer bytes per second than this over
    /// --rate-window (0: no minimum)
    #[arg(long = "min-rate", value_name = "SIZE", default_value = "1K", value_parser = size)]
    pub min_rate: u64,
    /// The window --min-rate is measured over
    #[arg(long = "rate-window", value_name = "DURATION", default_value = "60", value_parser = duration)]
    pub rate_window: u64,
    /// Move at most RATE bytes per second over HTTP (10M, 500k; 0: no limit)
    #[arg(long = "limit-rate", value_name = "RATE", default_value = "0", value_parser = size)]
    pub limit_rate: u64,
    /// Download every file of a chain before receiving any (the way pulls worked before
    /// streaming; needs space for the whole chain in the cache)
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Take a checkpoint of each step's receive every BYTES of its stream (0: never)
    ///
    /// As `subvol recv --checkpoint-every` (at the end of a verified signature segment). A
    /// pull that is interrupted (a signal, kill -9, a cut network, an I/O error) keeps the
    /// step's last checkpoint and its partial download in POOL/.subvol/cache; the next pull
    /// of the same stream reads the bytes before the checkpoint from the cache, checks them,
    /// and applies only the rest. See docs/resume.md.
    #[arg(long = "checkpoint-every", value_name = "BYTES",
          default_value_t = subvol::recv::DEFAULT_CHECKPOINT_BYTES)]
    pub checkpoint_every: u64,
    /// Skip checkpoints that would take more than PERCENT of the step's receive time so far
    /// (100: take every one)
    #[arg(long = "checkpoint-overhead", value_name = "PERCENT", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub checkpoint_overhead: u8,
    /// Trust the PEM certificates in FILE for HTTPS and registries instead of the bundled
    /// Mozilla roots
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Show progress on stderr even when it is not a terminal
    #[arg(long)]
    pub progress: bool,
    /// Print a line per step (bytes fetched, reused from an earlier pull, time)
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Print the result as JSON on stdout, and progress events as JSON lines on stderr
    #[arg(long)]
    pub json: bool,
}

/// `subvol push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The directory repository (as written by `subvol publish`)
    #[arg(value_name = "DIR")]
    pub repo: PathBuf,
    /// The registry repository: oci://HOST[:PORT]/NAME[:CHANNEL] (oci+http:// for plain HTTP)
    #[arg(value_name = "REFERENCE")]
    pub dest: String,
    /// Trust the PEM certificates in FILE instead of the bundled Mozilla roots
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Give a request up after this long without a byte
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = duration)]
    pub timeout: u64,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol pull --plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanChoice {
    /// The fewest bytes to fetch of both
    Auto,
    /// Stream files only, whole (today's delta chains and fulls)
    Chain,
    /// The target's full stream, seeded from the pool (fails when it has no content map)
    Seeded,
}

/// `subvol pool`: manage pools.
#[derive(Debug, Args, Clone)]
pub struct PoolArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PoolCommand,
}

/// `subvol pool` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum PoolCommand {
    /// Make PATH a pool; when PATH is not on btrfs, create a btrfs image file and loop-mount it
    /// on PATH (the default for hosts without a btrfs partition)
    #[command(after_help = "\
Examples:
  subvol pool init /var/lib/pool                 # image /var/lib/pool.img, 8 GiB sparse
  subvol pool init /var/lib/pool --size 2G --image /data/pool.img

Idempotent: an initialized pool is left alone; after a reboot it mounts the image again.
The image is sparse and grows as data is written. The mount does not persist across reboots
by itself: run `subvol pool init` again at boot, or add to /etc/fstab
  /var/lib/pool.img  /var/lib/pool  btrfs  loop  0 0
To remove the pool: umount /var/lib/pool && rm /var/lib/pool.img")]
    Init(PoolInitArgs),
}

/// `subvol pool init`.
#[derive(Debug, Args, Clone)]
pub struct PoolInitArgs {
    /// Pool directory
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Size of a new image (sparse): 512M, 8G, ...
    #[arg(long, value_name = "SIZE", default_value = "8G", value_parser = size)]
    pub size: u64,
    /// Image file [default: PATH.img]
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol list`.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Columns: name, read-only (ro/rw), creation time, UUID, received UUID, parent (snapshot source)
and the mirror version for pulled subvolumes. --json prints one array of objects.")]
pub struct ListArgs {
    /// Pool or any directory on btrfs
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol show`.
#[derive(Debug, Args, Clone)]
pub struct ShowArgs {
    /// Subvolume
    #[arg(value_name = "SUBVOL")]
    pub path: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
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
    /// Make the snapshot read-only
    #[arg(short = 'r', long = "readonly")]
    pub readonly: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `subvol delete`.
#[derive(Debug, Args, Clone)]
pub struct DeleteArgs {
    /// Subvolumes to delete
    #[arg(value_name = "SUBVOL", required = true)]
    pub paths: Vec<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl PoolArgs {
    /// The `pool init` arguments, if that is the subcommand (lets `cmd` reach them without
    /// naming the subcommand enum, which `cli` does not re-export).
    #[must_use]
    pub fn init(&self) -> Option<&PoolInitArgs> {
        match &self.command {
            PoolCommand::Init(a) => Some(a),
        }
    }
}
