//! The frame codec, written once: the 17-byte stream header and the 10-byte command header
//! (payload length, command number, CRC32C over the header with a zero CRC field and then the
//! payload).

use super::proto;

/// A command header with the given fields.
#[must_use]
pub(crate) fn header(cmd: u16, payload_len: usize, crc: u32) -> [u8; proto::CMD_HEADER_LEN] {
    let mut h = [0u8; proto::CMD_HEADER_LEN];
    // Payloads are capped per version far below 4 GiB (the reader and the builders enforce it).
    h[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[4..6].copy_from_slice(&cmd.to_le_bytes());
    h[6..10].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The fields of a command header: payload length, command number, CRC.
#[must_use]
pub(crate) fn parse_header(h: &[u8; proto::CMD_HEADER_LEN]) -> (u32, u16, u32) {
    (
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        u16::from_le_bytes([h[4], h[5]]),
        u32::from_le_bytes([h[6], h[7], h[8], h[9]]),
    )
}

/// The CRC32C of a command whose payload is the concatenation of `parts`.
#[must_use]
pub(crate) fn crc(cmd: u16, parts: &[&[u8]]) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut c = proto::crc32c_raw(0, &header(cmd, len, 0));
    for p in parts {
        c = proto::crc32c_raw(c, p);
    }
    c
}

/// The full 10-byte header (CRC included) for a command whose payload is the concatenation of
/// `parts`.
#[must_use]
pub fn command_header(cmd: u16, parts: &[&[u8]]) -> [u8; proto::CMD_HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    header(cmd, len, crc(cmd, parts))
}

/// The 17-byte stream header.
#[must_use]
pub fn stream_header(version: u32) -> [u8; proto::STREAM_HEADER_LEN] {
    let mut h = [0u8; proto::STREAM_HEADER_LEN];
    h[..13].copy_from_slice(proto::MAGIC);
    h[13..].copy_from_slice(&version.to_le_bytes());
    h
}
