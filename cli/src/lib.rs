//! The command-line side of subvol: clap definitions ([`args`], also rendered into man pages and
//! completions) and the subcommands as the binaries run them ([`cmd`]: open inputs and outputs,
//! wire a source to a sink, progress, printing). The library `subvol` never prints; this crate
//! decides what a person sees and which exit code a failure gets.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
pub mod cmd;
