//! Streaming writer: stream headers and commands to any `Write`, CRC computed per command.

use super::command::Command;
use super::proto;
use std::io::{self, Write};

/// The 10-byte header of a command with `payload_len` bytes of payload whose CRC chain
/// (over header with a zero CRC field, then payload) is finished by the caller.
fn header_zero_crc(cmd: u16, payload_len: u32) -> [u8; proto::CMD_HEADER_LEN] {
    let mut h = [0u8; proto::CMD_HEADER_LEN];
    h[0..4].copy_from_slice(&payload_len.to_le_bytes());
    h[4..6].copy_from_slice(&cmd.to_le_bytes());
    h
}

/// The full 10-byte header (CRC included) for a command whose payload is the concatenation of
/// `parts`.
#[must_use]
pub fn command_header(cmd: u16, parts: &[&[u8]]) -> [u8; proto::CMD_HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Payloads are built under the per-version cap (well below 4 GiB).
    let mut h = header_zero_crc(cmd, len as u32);
    let mut crc = proto::crc32c_raw(0, &h);
    for p in parts {
        crc = proto::crc32c_raw(crc, p);
    }
    h[6..10].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The 17-byte stream header.
#[must_use]
pub fn stream_header(version: u32) -> [u8; proto::STREAM_HEADER_LEN] {
    let mut h = [0u8; proto::STREAM_HEADER_LEN];
    h[..13].copy_from_slice(proto::MAGIC);
    h[13..].copy_from_slice(&version.to_le_bytes());
    h
}

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
        self.write_parts(c.cmd(), &[c.payload()])
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
