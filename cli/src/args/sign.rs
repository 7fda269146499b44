//! `subvol sign` and `subvol keygen` arguments.

use clap::Args;
use std::path::PathBuf;

/// `subvol sign`: add ed25519 signature blocks to a send stream.
///
/// The output is still an ordinary send stream: `btrfs receive` skips the blocks and builds the
/// same tree, while `subvol verify --key` and `subvol recv --verify` check every byte and apply
/// nothing that did not verify. Concatenated streams (`btrfs send A B`) are signed as one chain.
/// A stream that already carries signature blocks is refused.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  subvol keygen -o vendor.key
  btrfs send /mnt/snap | subvol sign --key vendor.key > snap.signed
  subvol sign --key vendor.key -f snap.stream -o snap.signed
  subvol verify --key vendor.key.pub -f snap.signed

Segments close when the stream moves on to another file after at least 1 MiB, and always
before 8 MiB. See docs/signed-streams.md for the format.

A key that cannot be used (malformed, a public key, readable by group or others) exits 4, as a
failed key check; a key file that cannot be read exits 6.")]
pub struct SignArgs {
    /// Secret key file, as written by `subvol keygen` (must not be readable by group or others)
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
    /// Read the stream from FILE instead of stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Write the signed stream to FILE instead of stdout (a new file is mode 0600; FILE is
    /// replaced only once the whole stream is signed, and left as it was on any failure)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `subvol keygen`: generate an ed25519 key pair for signing streams.
///
/// Writes the secret key to PATH (mode 0600) and the public key to PATH.pub, and prints the key
/// id (the first 8 bytes of SHA-256 of the public key, as 16 hex digits), which every signature
/// block names. Existing files are never overwritten.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  subvol keygen -o /etc/subvol/vendor.key
  scp /etc/subvol/vendor.key.pub host:/etc/subvol/trusted.pub

Key files are text. Secret:  `subvol-ed25519-secret-key <64 hex digits>`
                  Public:  `subvol-ed25519-public-key <64 hex digits> key-id=<16 hex digits>`
`--key PUB` and `--verify PUB` also accept an OpenSSH `ssh-ed25519 AAAA... comment` line.")]
pub struct KeygenArgs {
    /// Where to write the secret key (the public key goes to PATH.pub)
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
}
