//! Dump sinks: the text of `btrfs receive --dump` (btrfs-progs v6.2, byte for byte) and one JSON
//! object per command for scripts.

mod json;
mod text;

pub use json::JsonDump;
pub use text::TextDump;

use crate::Error;
use crate::stream::{Command, Item, Reader};
use std::io::Read;

/// A consumer of headers and commands.
pub trait Sink {
    /// A stream header was read at `offset`.
    ///
    /// # Errors
    /// Output errors.
    fn header(&mut self, version: u32, offset: u64) -> Result<(), Error>;
    /// A command was read; `offset` is where it starts, `index` its number.
    ///
    /// # Errors
    /// Output or formatting errors.
    fn command(&mut self, c: &Command, offset: u64, index: u64) -> Result<(), Error>;
    /// Flushes buffered output.
    ///
    /// # Errors
    /// Output errors.
    fn finish(&mut self) -> Result<(), Error>;
}

/// Feeds a stream to a sink. With `all == false` it stops after the first END, as
/// `btrfs receive --dump` does; otherwise it reads concatenated streams to the end.
/// `on_progress` is called now and then with the byte offset (for a progress display).
///
/// # Errors
/// The first stream or sink error. Everything before it has been passed to the sink.
pub fn run<R: Read, S: Sink + ?Sized>(
    reader: &mut Reader<R>,
    sink: &mut S,
    all: bool,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<(), Error> {
    let mut c = Command::empty();
    loop {
        let at = reader.offset();
        let item = match reader.next(&mut c) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                sink.finish()?;
                return Err(e.into());
            }
        };
        match item {
            Item::Header(v) => sink.header(v, at)?,
            Item::Command => {
                let index = reader.commands() - 1;
                sink.command(&c, at, index)?;
                if index.is_multiple_of(4096) {
                    on_progress(reader.offset(), reader.commands());
                }
                if c.cmd() == crate::stream::cmd::END && !all {
                    break;
                }
            }
        }
    }
    sink.finish()
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
