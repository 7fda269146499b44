//! Dump sinks ([`crate::pipeline::CommandSink`]s): the text of `btrfs receive --dump` (btrfs-progs v6.2 or
//! 6.9.1+, byte for byte) and one JSON
//! object per command for scripts.

mod json;
mod text;

pub use json::JsonDump;
pub use text::{TextDump, TextFormat};

use crate::Error;
use crate::pipeline::{CommandSink, Hook, Source, Totals, UntilEnd, pump};

/// Pumps `src` into a dump sink. With `all == false` it stops after the first END, as
/// `btrfs receive --dump` does; otherwise it reads concatenated streams to the end. On an
/// error, what was printed before it is flushed.
///
/// # Errors
/// The first stream or sink error.
pub fn run<S: Source + ?Sized, K: CommandSink>(
    src: &mut S,
    sink: K,
    all: bool,
    hook: &mut Hook<'_>,
) -> Result<Totals, Error> {
    if all {
        pump(src, &mut { sink }, hook)
    } else {
        pump(src, &mut UntilEnd(sink), hook)
    }
}

/// Escapes bytes the way btrfs-progs' `print_path_escaped` does in the C locale; returns the
/// escaped length (used for column padding).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) -> usize {
    let start = out.len();
    for &b in bytes {
        match b {
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x1b => out.extend_from_slice(b"\\e"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x0b => out.extend_from_slice(b"\\v"),
            b' ' => out.extend_from_slice(b"\\ "),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x21..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]),
        }
    }
    out.len() - start
}
