//! subvol: a btrfs-native subvolume manager.
//!
//! Everything is a stream of btrfs send [`stream::Command`]s: sources (a stream reader, the kernel
//! send ioctl, a directory-tree walker) produce them, filters (signing, verification) pass them
//! on, sinks (a writer, the receiver, the dump printers) consume them. See `ARCHITECTURE.md`.
//!
//! The library never prints; it returns values and [`Error`]s, and the binaries decide what a
//! person sees and which exit code a failure gets ([`Error::exit_code`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod content;
pub mod deploy;
pub mod digest;
pub mod dump;
pub mod error;
pub mod mirror;
pub mod pipeline;
pub mod pool;
pub mod recv;
pub mod send;
pub mod sign;
pub mod stream;
pub mod trust;
pub mod util;
pub mod verify;

pub use error::{Error, ExitCode};
