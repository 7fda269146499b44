//! Streaming writer: stream headers and commands to any `Write`, CRC computed per command.

use super::command::Command;
use super::frame::{command_header, stream_header};
use super::proto;
use std::io::{self, Write};

/// Writes send streams.
#[derive(Debug)]
pub struct Writer<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    /// A writer over `inner` (wrap in a `BufWriter` for many small commands).
    pub fn new(inner: W) -> Writer<W> {
        Writer { inner, bytes: 0 }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes a stream header.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_header(&mut self, version: u32) -> io::Result<()> {
        self.inner.write_all(&stream_header(version))?;
        self.bytes += proto::STREAM_HEADER_LEN as u64;
        Ok(())
    }

    /// Writes a command: header with its CRC, then the payload verbatim.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_command(&mut self, c: &Command) -> io::Result<()> {
        let h = c.frame_header();
        self.inner.write_all(&h)?;
        self.inner.write_all(c.payload())?;
        self.bytes += c.frame_len();
        Ok(())
    }

    /// Writes a command whose payload is the concatenation of `parts` (lets large data be
    /// written without copying it into a payload buffer first).
    ///
    /// # Errors
    /// Write errors.
    pub fn write_parts(&mut self, cmd: u16, parts: &[&[u8]]) -> io::Result<()> {
        let h = command_header(cmd, parts);
        self.inner.write_all(&h)?;
        for p in parts {
            self.inner.write_all(p)?;
        }
        self.bytes += (h.len() + parts.iter().map(|p| p.len()).sum::<usize>()) as u64;
        Ok(())
    }

    /// Writes bytes that are already a valid encoding (for pass-through filters).
    ///
    /// # Errors
    /// Write errors.
    pub fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    /// Flushes the wrapped writer.
    ///
    /// # Errors
    /// Write errors.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Mutable access to the wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}
