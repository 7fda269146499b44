//! `subvol send` arguments.

use clap::Args;
use std::path::PathBuf;
use subvol::stream::Uuid;

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse(s).ok_or_else(|| format!("`{s}` is not a UUID (expected 8-4-4-4-12 hex digits)"))
}

/// `subvol send`: make a send stream, through the kernel from a read-only btrfs subvolume, or
/// in user space from a plain directory tree on any file system.
///
/// When SOURCE is the root of a btrfs subvolume (and --from-tree is not given), the kernel's
/// send ioctl makes the stream, with the same arguments `btrfs send` passes: the output is byte
/// for byte what `btrfs send` writes with the same options. As with `btrfs send`:
///
/// - several SOURCEs (`subvol send A B C`) are sent one after the other into the one output,
///   each as a whole stream (header to END), so a receiver makes one subvolume per stream; with
///   -e they form one stream (a header before the first, END after the last). With -p every
///   SOURCE is sent from the same PARENT.
///
/// - -c CLONE_SRC without -p makes an incremental stream too: the parent is picked among the
///   clone sources, as btrfs-progs picks it: SOURCE's snapshot source if it is a clone source,
///   otherwise the clone source that is a snapshot of the same source with the ctransid nearest
///   to that source's. When none qualifies the send fails, as `btrfs send` does. With several
///   SOURCEs each one sent becomes a clone source (and parent candidate) for those after it.
///
/// Otherwise SOURCE is read as a directory tree (the same file system only; mount points below
/// it become empty directories). Without -p the stream is full; with -p OLD_DIR it is
/// incremental: a snapshot of OLD_DIR's stream followed by exactly the operations that turn OLD
/// into SOURCE (renames and moves are detected by content and structure, contents are sent as a
/// block delta, identical contents are cloned). Holes are found with SEEK_DATA/SEEK_HOLE and
/// never sent. A file that changes while it is read fails the send, naming the file.
///
/// Tree UUIDs: a directory tree has no UUID, so subvol derives one: the first 16 bytes of a
/// SHA-256 over the tree's metadata (names, types, modes, owners, sizes, mtimes, device numbers,
/// symlink targets, xattrs, hard links), as an RFC 9562 version-8 UUID. The same tree always
/// gets the same UUID, so `subvol send -p OLD NEW` names the UUID that a receiver of
/// `subvol send OLD` recorded. --uuid and --parent-uuid override the rule.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  Kernel send of a read-only snapshot, as btrfs send:
    subvol send /mnt/pool/snap.2 -p /mnt/pool/snap.1 -f snap.2.stream
  Full stream of a plain directory tree (any file system), received by stock btrfs:
    subvol send /srv/release-1.0 -f r1.stream
    btrfs receive -f r1.stream /mnt/pool/
  Incremental stream between two release trees, protocol 2 (hole punching):
    subvol send /srv/release-1.1 -p /srv/release-1.0 --proto 2 | btrfs receive /mnt/pool/
  Print the UUID a tree gets (it is in the first command):
    subvol send /srv/release-1.0 --no-data | subvol dump | head -1

Options that only apply to one source: -c and --compressed-data need the kernel (a btrfs
subvolume); --uuid and --parent-uuid apply to directory trees.")]
pub struct SendArgs {
    /// The read-only subvolume(s) or the directory tree to send (several only for subvolumes)
    #[arg(value_name = "SOURCE", required = true, num_args = 1..)]
    pub sources: Vec<PathBuf>,
    /// Send incrementally from PARENT (a read-only subvolume, or a directory tree with a tree SOURCE)
    #[arg(short = 'p', long = "parent", value_name = "PARENT")]
    pub parent: Option<PathBuf>,
    /// Let the kernel clone data from this read-only subvolume (repeatable; kernel send only)
    #[arg(short = 'c', long = "clone-src", value_name = "CLONE_SRC")]
    pub clone_sources: Vec<PathBuf>,
    /// Stream protocol version: 1 (default), 2, or 0 for the highest supported
    #[arg(long = "proto", value_name = "N")]
    pub proto: Option<u32>,
    /// Send compressed extents as they are stored (implies --proto 2; kernel send only)
    #[arg(long = "compressed-data")]
    pub compressed_data: bool,
    /// With several SOURCEs: make one stream of them (no END between the subvolumes), as
    /// `btrfs send -e`; the receiver needs to know this format (btrfs receive and subvol-recv do)
    #[arg(short = 'e')]
    pub one_stream: bool,
    /// Send no file data: offsets and lengths only (UPDATE_EXTENT instead of WRITE)
    #[arg(long = "no-data")]
    pub no_data: bool,
    /// Write the stream to FILE instead of stdout (a new file is mode 0600, as btrfs send makes
    /// it; FILE is replaced only by a complete stream, and left as it was on any failure)
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read SOURCE as a directory tree even when it is a btrfs subvolume
    #[arg(long = "from-tree")]
    pub from_tree: bool,
    /// UUID of the tree stream instead of the one derived from the tree's metadata
    #[arg(long = "uuid", value_name = "UUID", value_parser = parse_uuid)]
    pub uuid: Option<Uuid>,
    /// UUID of the parent tree instead of the one derived from its metadata (what the receiver
    /// of the parent's stream recorded)
    #[arg(long = "parent-uuid", value_name = "UUID", value_parser = parse_uuid)]
    pub parent_uuid: Option<Uuid>,
    /// Sign the stream with this secret key (see `subvol keygen`)
    #[arg(long = "sign", value_name = "SECRET")]
    pub sign: Option<PathBuf>,
}
