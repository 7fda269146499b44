//! clap definitions only: parsed by the binaries, rendered into man pages and completions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod deploy;
mod mirror;
mod remote;
mod send;
mod sign;
mod trust;

pub use deploy::{DeployArgs, HookArgs, RollbackArgs, StatusArgs};
pub use mirror::{
    DeleteArgs, ListArgs, PlanChoice, PoolArgs, PublishArgs, PullArgs, PushArgs, ShowArgs,
    SnapshotArgs,
};
pub use remote::{
    RemoteAddArgs, RemoteArgs, RemoteCommand, RemoteListArgs, RemoteRemoveArgs, RemoteShowArgs,
};
pub use send::SendArgs;
pub use sign::{KeygenArgs, SignArgs};
pub use trust::{
    RoleKeyArgs, TrustArgs, TrustCommand, TrustInitArgs, TrustRotateArgs, TrustSignArgs,
    TrustTimestampArgs,
};

/// The exit codes' text, as a literal (for `concat!`).
macro_rules! exit_codes {
    () => {
        "\
Exit status:
  0    success
  1    failure not listed below
  2    bad command line
  3    invalid send stream (framing, version, CRC, attributes, truncation)
  4    signature or key verification failed
  5    stream refused by the receiver (path escape, clone source outside the allowed set, unsafe operation)
  6    I/O or file-system error (including a full disk)
  130  interrupted by SIGINT or SIGTERM (partial work removed)"
    };
}

/// Exit codes, shown in `--help` and the man pages.
pub const EXIT_CODES: &str = exit_codes!();

/// `subvol-recv --help`: the exit codes, and how its output and codes compare with
/// `btrfs receive`'s.
pub const RECV_AFTER_HELP: &str = concat!(
    exit_codes!(),
    "

Output as btrfs receive: subvol-recv prints an error as one line, ERROR: MESSAGE, on standard \
error, as btrfs receive does (scripts match ^ERROR: ), with subvol's detail in MESSAGE (the \
command, its index and byte offset, the path, the OS error); subvol recv prints subvol: error: \
MESSAGE instead. With -v, subvol-recv prints btrfs receive's line for each subvolume started \
and received, each WRITE and each CLONE; with -vv also one for every other command, with the \
text of btrfs-progs 6.2 (control characters in names escaped as \\ooo). subvol recv -v prints \
subvol's own summary of each received subvolume.

Exit status compared with btrfs receive: btrfs receive exits 1 on every failure; subvol-recv \
exits with the codes above, so that a caller can tell a damaged stream (3) or a refused one (5) \
from an I/O error (6) or an interruption (130). Every failure is non-zero for both, so tests \
such as `if subvol-recv ...` or `set -e` behave the same; a script that compares the status with \
1 sees a difference for codes 3 to 6 and 130, and for a bad command line (2, where btrfs \
receive exits 1).

Resume: an interrupted receive keeps its last checkpoint (a snapshot beside the staging \
subvolume, see --checkpoint-every) for 7 days; receiving the same stream into DEST again \
continues from it, after checking the bytes it skips. For a stream sent from elsewhere: \
N=$(subvol-recv --resume-offset DEST); ssh host \"tail -c +$((N + 1)) FILE\" | subvol-recv \
--resume-from $N DEST. --list-incomplete and --drop-incomplete show and remove them. See \
docs/resume.md."
);

/// btrfs-native subvolume manager: send-stream codec, hardened atomic receive, signed streams.
#[derive(Debug, Parser)]
#[command(name = "subvol", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a send stream's commands as `btrfs receive --dump` does (or as JSON lines)
    ///
    /// The text is byte for byte what `btrfs receive --dump` prints, names included: by default
    /// that of btrfs-progs 6.2 to 6.9 (Debian 12 ships 6.2), with --format progs-6.10 that of
    /// btrfs-progs 6.9.1, 6.10 and later, which also escapes xattr names and values and clone
    /// sources, prints an xattr's value without `data=` and `encoded_write` without commas.
    /// It does not sanitize control characters beyond what btrfs-progs does: in the 6.2 text
    /// xattr names and values and clone sources are printed raw, so a hostile stream can put
    /// terminal escapes into it. Pipe it through `cat -v` to look at an untrusted stream, or
    /// use --format progs-6.10, or --json, where every name is escaped (and given as hex when
    /// it is not UTF-8).
    #[command(
        after_help = "Examples:\n  btrfs send /mnt/snap | subvol dump\n  subvol dump -f snap.stream --json | jq .command\n  subvol dump --format progs-6.10 -f snap.stream\n\nWithout --all, printing stops at the first END, as btrfs receive --dump does."
    )]
    Dump(DumpArgs),
    /// Check a send stream's framing, versions, CRCs and attributes without applying it
    #[command(
        after_help = "Examples:\n  subvol verify -f snap.stream\n  btrfs send /mnt/snap | subvol verify\n\nPrints a one-line summary and exits 0, or names the byte offset, command index and reason\nof the first problem and exits 3."
    )]
    Verify(VerifyArgs),
    /// Receive a send stream into a new read-only subvolume under DEST (hardened, atomic)
    Recv(RecvArgs),
    /// Make a send stream from a read-only btrfs subvolume (kernel) or from a plain directory tree
    Send(SendArgs),
    /// Add ed25519 signature blocks to a send stream
    ///
    /// The output is still an ordinary send stream: `btrfs receive` skips the blocks and builds
    /// the same tree, while `subvol verify --key` and `subvol recv --verify` check every byte and
    /// apply nothing that did not verify. Concatenated streams (`btrfs send A B`) are signed as
    /// one chain. A stream that already carries signature blocks is refused.
    Sign(SignArgs),
    /// Generate an ed25519 key pair for signing streams
    ///
    /// Writes the secret key to PATH (mode 0600) and the public key to PATH.pub, and prints the
    /// key id (the first 8 bytes of SHA-256 of the public key, as 16 hex digits), which every
    /// signature block names. Existing files are never overwritten.
    Keygen(KeygenArgs),
    /// Manage a repository's trust metadata: roles, thresholds, key rotation, the timestamp
    ///
    /// A repository with a root (REPO/root/N.json) is pulled with --root instead of --verify:
    /// offline root keys list who signs releases (k of n), the online timestamp key, and the
    /// stream keys; new root versions rotate and revoke keys inside the channel.
    Trust(TrustArgs),
    /// Print a canonical digest of a directory tree (types, modes, owners, contents, xattrs,
    /// hard links, holes, times) to compare received trees
    #[command(
        after_help = "Examples:\n  subvol digest /mnt/pool/v2\n  diff <(subvol digest --lines a) <(subvol digest --lines b)"
    )]
    Digest(DigestArgs),
    /// Publish a version to a mirror repository of plain files
    ///
    /// Writes a signed, zstd-compressed full stream of SOURCE and signed deltas from the versions
    /// published 1, 2, 4, 8, ... versions earlier (so any old version reaches the newest in about
    /// log2(n) steps while the repository keeps O(n log n) deltas), each one file named by its
    /// SHA-256, then replaces the signed index (serial + 1, new expiry) in one rename. Any static
    /// web server or rsync mirror can serve the repository.
    ///
    /// SOURCE is a directory tree on any file system, or a read-only subvolume (read as a tree).
    /// Deltas need the earlier trees: each published version is kept in the tree store
    /// (--trees, default REPO.trees next to the repository) as a read-only subvolume when the
    /// store is on btrfs, else as a directory copy (`cp -a --reflink=auto`). Without SOURCE,
    /// publish only re-signs the index (new serial and expiry) and applies --prune.
    Publish(PublishArgs),
    /// Bring a pool to a version from a mirror along the cheapest verified chain of streams
    ///
    /// Reads the index and refuses it when its signature does not verify with a --verify key,
    /// when it expired, or when its serial is older than one this pool already saw. Finds the
    /// versions the pool holds (by received UUID), plans the cheapest chain of files to the
    /// target (fewest bytes, then fewest steps), downloads it (HTTP(S), resuming partial
    /// downloads with Range requests, or from a directory), checks every file's SHA-256, and
    /// receives each step through the signature-verifying receiver: each version appears as
    /// POOL/VERSION only once complete and verified. A missing or bad file makes it try another
    /// chain.
    Pull(PullArgs),
    /// Mirror a directory repository to an OCI registry (oci://HOST[:PORT]/NAME[:CHANNEL])
    ///
    /// Uploads every stream and map file the index names as a blob (named by its SHA-256; blobs
    /// the registry has are skipped), the index as a blob, then an OCI manifest of artifact type
    /// application/vnd.subvol.repository.v1 listing all of them, tagged serial-N (never moved)
    /// and then with the channel tag (default latest): no tag ever names a manifest whose blobs
    /// are missing. The directory stays the repository of record; run push after each publish.
    /// Credentials come from $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
    /// ~/.config/containers/auth.json or ~/.docker/config.json (auths.HOST.auth, base64
    /// user:password, or a docker-credential-NAME helper named by credHelpers or credsStore),
    /// never from the command line. oci+http:// talks plain HTTP (a registry on 127.0.0.1).
    Push(PushArgs),
    /// Manage remotes: named lists of mirror URLs with the keys to trust, kept as configuration
    ///
    /// One file per remote, DIR/remotes.d/NAME.conf (DIR: /etc/subvol, --config-dir or
    /// $SUBVOL_CONFIG_DIR), with the keys and root file given at `remote add` copied next to it.
    /// `subvol pull NAME --into POOL` then pulls from the remote's mirrors with its keys.
    Remote(RemoteArgs),
    /// Manage pools (directories on btrfs holding received versions)
    Pool(PoolArgs),
    /// List the subvolumes under a directory on btrfs
    List(ListArgs),
    /// Show one subvolume's identity and state
    Show(ShowArgs),
    /// Snapshot a subvolume
    Snapshot(SnapshotArgs),
    /// Delete subvolumes
    Delete(DeleteArgs),
    /// Make a version of a pool the current one at a path, switched atomically
    ///
    /// Snapshots POOL/VERSION (read-only, or writable with --writable) into PATH.deployments,
    /// runs the --pre hook, then points the symbolic link PATH at the new snapshot in one
    /// rename: a program opening files under PATH sees the old tree or the new one, never a mix.
    /// The deployment it replaces stays as the previous one (`subvol rollback`).
    Deploy(DeployArgs),
    /// Switch a deployed path back to its previous deployment
    Rollback(RollbackArgs),
    /// Show what is deployed at a path, the previous deployment, and the pool's versions
    Status(StatusArgs),
}

/// Where a stream comes from.
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// Read the stream from FILE instead of stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `subvol dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input: InputArgs,
    /// Print one JSON object per header and command instead of text
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Whose text to print: btrfs-progs 6.2 to 6.9 (progs-6.2), or 6.9.1, 6.10 and later
    /// (progs-6.10: xattr names and values and clone sources escaped too)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = DumpFormat::Progs6_2)]
    pub format: DumpFormat,
    /// Continue after the first END through all concatenated streams
    #[arg(long)]
    pub all: bool,
}

/// `subvol dump --format`, `subvol recv --dump-format`: which btrfs-progs release's
/// `receive --dump` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DumpFormat {
    /// btrfs-progs 6.2 to 6.9 (Debian 12): xattr names and values and clone sources raw
    #[value(name = "progs-6.2")]
    Progs6_2,
    /// btrfs-progs 6.9.1, 6.10 and later: every name and value escaped
    #[value(name = "progs-6.10", alias = "progs-6.9.1")]
    Progs6_10,
}

/// `subvol verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input: InputArgs,
    /// Print the summary (or the error) as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Also check signature blocks against this public key (repeatable: any listed key may sign)
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
}

/// `subvol recv` and `subvol-recv`: the flags of `btrfs receive`, with the same meaning.
#[derive(Debug, Args, Clone)]
pub struct RecvArgs {
    /// Directory on a btrfs file system where the received subvolume is created
    #[arg(value_name = "DEST", required_unless_present = "dump")]
    pub dest: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub input: InputArgs,
    /// Stop after the first END command (for streams made with `btrfs send -e`)
    #[arg(short = 'e')]
    pub stop_at_end: bool,
    /// Stop at the Nth failed command (default 1; 0: never), as btrfs receive -E
    ///
    /// A command that fails with an OS error (a file that cannot be created, written, renamed)
    /// is reported as an error line and skipped, and the receive goes on, until the Nth such
    /// failure, which stops it as any error does. Only such failures count: an invalid or
    /// unverified stream, a refused command, a failed SUBVOL/SNAPSHOT or commit, and an
    /// interruption stop at once. Unlike btrfs receive, an input with a skipped command commits
    /// nothing (it is removed and the exit status is the first failure's): a subvolume that
    /// did not apply completely is never left looking like a good one, with a received UUID a
    /// later incremental stream would build on. --keep-incomplete keeps them, as btrfs receive
    /// does.
    #[arg(
        short = 'E',
        long = "max-errors",
        value_name = "N",
        default_value_t = 1
    )]
    pub max_errors: u64,
    /// With -E: commit the subvolumes even though commands failed and were skipped (btrfs
    /// receive's behaviour); they are read-only and carry the received UUID, but are
    /// incomplete. The exit status stays non-zero
    #[arg(long = "keep-incomplete")]
    pub keep_incomplete: bool,
    /// Confine the receive to DEST (subvol always resolves every stream path beneath the new
    /// subvolume, so this changes nothing but is accepted)
    #[arg(short = 'C', long = "chroot")]
    pub chroot: bool,
    /// The mount point of DEST's file system (found in /proc/self/mounts otherwise)
    #[arg(short = 'm', value_name = "ROOTMOUNT")]
    pub root_mount: Option<PathBuf>,
    /// Print the stream's commands instead of applying them (same as `subvol dump`)
    #[arg(long)]
    pub dump: bool,
    /// With --dump: whose text to print, btrfs-progs 6.2 to 6.9 (progs-6.2) or 6.9.1, 6.10 and
    /// later (progs-6.10), as `subvol dump --format`
    #[arg(
        long = "dump-format",
        value_name = "FORMAT",
        value_enum,
        default_value_t = DumpFormat::Progs6_2,
        requires = "dump"
    )]
    pub dump_format: DumpFormat,
    /// Write file data decompressed instead of with encoded writes
    #[arg(long = "force-decompress")]
    pub force_decompress: bool,
    /// Print less
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Print more (repeat for more detail; subvol-recv prints btrfs receive's lines: -v each
    /// subvolume, WRITE and CLONE, -vv every command)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Show a progress line on stderr even when it is not a terminal
    #[arg(long)]
    pub progress: bool,
    /// Require every segment to be signed by one of these public keys, and apply nothing before
    /// its signature verified (repeatable); nothing is committed before the whole input verified
    #[arg(long = "verify", value_name = "PUB")]
    pub verify_keys: Vec<PathBuf>,
    /// Let CLONE read from any read-only subvolume on DEST's file system that the stream names
    /// by its own UUID
    ///
    /// Without it, a clone may read only from the new subvolume, its parent, earlier
    /// subvolumes of the same input, and subvolumes received from the same sender (whose
    /// received UUID the stream names), as btrfs receive does. Use it only for streams you
    /// trust that were sent from this file system with `-c`: the stream can copy any file of
    /// such a subvolume, whatever its permissions.
    #[arg(long = "clone-from-any")]
    pub clone_from_any: bool,
    /// Clone WRITE data found in the files under DIR instead of writing it (repeatable)
    ///
    /// Before receiving, every regular file beneath each DIR is read and each 4 KiB block
    /// hashed (BLAKE3) into an index kept in anonymous files on DEST's file system (about 9 MiB per
    /// GiB of seed data). Each WRITE's block-aligned data found there becomes a clone of
    /// the seed file's range, so subvolumes received from unrelated streams share their common
    /// extents on disk. Nothing found is trusted: the cloned bytes are read back and compared
    /// with the stream's, and written as the stream says if they differ (a seed changed since it
    /// was indexed). The received tree is the same as without this option. Symlinks beneath DIR
    /// are never followed and other mounts never entered. DIR must be on DEST's mount (the
    /// kernel refuses clones across mounts); otherwise the receive stops before it starts
    /// (exit code 6). Prints how many bytes were cloned and written. When DEST is a pool
    /// (it has `.subvol/`, see `subvol pool init`), its content index is used without this
    /// option, and each received subvolume is added to it.
    #[arg(long = "dedup-from", value_name = "DIR")]
    pub dedup_from: Vec<PathBuf>,
    /// Take a checkpoint of the subvolume being received every BYTES of input (0: never)
    ///
    /// A checkpoint is a read-only snapshot of the staging subvolume (durable when made) and a
    /// record beside it of where the stream restarts. A receive interrupted by a signal, an
    /// input that ends early or an I/O error keeps its last checkpoint for 7 days; receiving
    /// the same stream again into DEST (from a file or a pipe) then skips what was applied,
    /// checking that the skipped bytes are the same, and continues from there. Signed streams
    /// are checkpointed at the end of a verified segment. Only the first subvolume of an input
    /// is checkpointed, and not with -E.
    #[arg(long = "checkpoint-every", value_name = "BYTES", default_value_t = subvol::recv::DEFAULT_CHECKPOINT_BYTES)]
    pub checkpoint_every: u64,
    /// Skip checkpoints that would take more than PERCENT of the receive's time so far
    /// (100: take every one)
    ///
    /// A checkpoint commits a btrfs transaction (some tens of milliseconds); on a fast local
    /// receive they become rarer than --checkpoint-every says, on a slow stream they do not.
    #[arg(long = "checkpoint-overhead", value_name = "PERCENT", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub checkpoint_overhead: u8,
    /// Do not resume an interrupted receive of this stream: start over (removing it)
    #[arg(long = "no-resume", conflicts_with = "resume_from")]
    pub no_resume: bool,
    /// The input is the stream from byte OFFSET on (as `--resume-offset` printed): take up the
    /// interrupted receive in DEST that restarts there
    ///
    /// For a stream that comes through a pipe from far away: `tail -c +$((OFFSET + 1)) FILE`
    /// sends a file from OFFSET on. The skipped bytes cannot be checked here (a signed
    /// stream's signatures still chain from the checkpoint); the receive goes on taking
    /// checkpoints, and a later resume from the whole stream checks the bytes before OFFSET
    /// against the digest the first receive recorded.
    #[arg(long = "resume-from", value_name = "OFFSET")]
    pub resume_from: Option<u64>,
    /// Print the input offset where the interrupted receive in DEST restarts (0 if there is
    /// none) and exit
    #[arg(long = "resume-offset", conflicts_with_all = ["list_incomplete", "drop_incomplete"])]
    pub resume_offset: bool,
    /// List the interrupted receives kept for resume in DEST and exit
    #[arg(long = "list-incomplete", conflicts_with = "drop_incomplete")]
    pub list_incomplete: bool,
    /// With --list-incomplete: print JSON
    #[arg(long, requires = "list_incomplete")]
    pub json: bool,
    /// Remove the interrupted receives kept for resume in DEST and exit
    #[arg(long = "drop-incomplete")]
    pub drop_incomplete: bool,
}

/// `subvol digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The tree to digest
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print every line of the digest, not only its SHA-256
    #[arg(long)]
    pub lines: bool,
    /// Leave modification times out
    #[arg(long = "no-mtime")]
    pub no_mtime: bool,
}

/// `subvol-recv`: the receiver as its own binary.
#[derive(Debug, Parser)]
#[command(name = "subvol-recv", version, about = "Receive a btrfs send stream into a new read-only subvolume (hardened, atomic; drop-in for `btrfs receive`)", after_help = RECV_AFTER_HELP)]
pub struct RecvCli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub args: RecvArgs,
}
