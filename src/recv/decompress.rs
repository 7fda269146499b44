//! Decoding an ENCODED_WRITE extent when the encoded-write ioctl cannot take it (another sector
//! size, an old kernel, `--force-decompress`): zlib, zstd, and btrfs's framed LZO.

use std::io::Read;

/// Largest decoded extent btrfs makes (`BTRFS_MAX_UNCOMPRESSED`); bigger claims are refused so
/// memory stays bounded.
pub const MAX_UNENCODED: u64 = 128 * 1024;

/// Why an extent could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Compression number this receiver does not know.
    #[error("unknown compression type {0}")]
    UnknownCompression(u32),
    /// Encryption is not supported by btrfs.
    #[error("encrypted extents are not supported (encryption type {0})")]
    Encrypted(u32),
    /// Sizes that do not fit together or exceed the cap.
    #[error("refused encoded extent: {0}")]
    Geometry(String),
    /// Corrupt compressed data.
    #[error("corrupt {alg} data: {reason}")]
    Corrupt {
        /// Algorithm.
        alg: &'static str,
        /// Decoder message.
        reason: String,
    },
}

/// Checks the lengths of an encoded extent against each other and the cap.
///
/// # Errors
/// [`DecodeError::Geometry`].
pub fn check_geometry(
    unencoded_len: u64,
    unencoded_offset: u64,
    file_len: u64,
) -> Result<(), DecodeError> {
    if unencoded_len > MAX_UNENCODED {
        return Err(DecodeError::Geometry(format!(
            "unencoded_len {unencoded_len} > {MAX_UNENCODED}"
        )));
    }
    if unencoded_offset
        .checked_add(file_len)
        .is_none_or(|end| end > unencoded_len)
    {
        return Err(DecodeError::Geometry(format!(
            "unencoded_offset {unencoded_offset} + unencoded_file_len {file_len} > unencoded_len {unencoded_len}"
        )));
    }
    Ok(())
}

/// Decodes `data` into `out` (already sized to `unencoded_len` and zeroed: bytes a decoder does
/// not produce stay zero, as progs ensures for zstd).
///
/// # Errors
/// Unknown algorithm or corrupt data.
pub fn decode(compression: u32, data: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    match compression {
        0 => {
            let n = data.len().min(out.len());
            out[..n].copy_from_slice(&data[..n]);
            Ok(())
        }
        1 => fill_from(flate2::read::ZlibDecoder::new(data), out, "zlib"),
        2 => {
            let dec = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| DecodeError::Corrupt {
                    alg: "zstd",
                    reason: e.to_string(),
                })?
                .single_frame();
            fill_from(dec, out, "zstd")
        }
        3..=7 => lzo(data, out, 4096 << (compression - 3)),
        other => Err(DecodeError::UnknownCompression(other)),
    }
}

/// Reads a decoder until `out` is full or the compressed stream ends.
fn fill_from<R: Read>(mut r: R, out: &mut [u8], alg: &'static str) -> Result<(), DecodeError> {
    let mut got = 0;
    while got < out.len() {
        match r.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    alg,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// btrfs LZO framing: le32 total length, then segments of le32 length + LZO1X data, each
/// decoding to at most one sector; a segment header never straddles a sector boundary.
fn lzo(data: &[u8], out: &mut [u8], sector: usize) -> Result<(), DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt { alg: "lzo", reason };
    let le32 = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let total = le32(0).ok_or_else(|| corrupt("missing length header".into()))?;
    if total > data.len() || total < 4 {
        return Err(corrupt(format!(
            "total length {total} outside 4..={}",
            data.len()
        )));
    }
    let mut pos = 4;
    let mut produced = 0;
    while pos < total && produced < out.len() {
        let left_in_sector = sector - pos % sector;
        if left_in_sector < 4 {
            pos += left_in_sector;
            if pos >= total {
                break;
            }
        }
        let seg = le32(pos).ok_or_else(|| corrupt("truncated segment header".into()))?;
        pos += 4;
        let end = pos
            .checked_add(seg)
            .filter(|&e| e <= total)
            .ok_or_else(|| corrupt("segment past the end".into()))?;
        let want = sector.min(out.len() - produced);
        let dec = lzokay_native::decompress_all(&data[pos..end], Some(want))
            .map_err(|e| corrupt(format!("{e:?}")))?;
        let n = dec.len().min(out.len() - produced);
        out[produced..produced + n].copy_from_slice(&dec[..n]);
        produced += sector.min(out.len() - produced);
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zlib_and_zstd_round_trip() {
        let plain: Vec<u8> = (0..10000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).unwrap();
        let zl = z.finish().unwrap();
        let mut out = vec![0u8; plain.len()];
        decode(1, &zl, &mut out).unwrap();
        assert_eq!(out, plain);
        let mut zs = zstd::bulk::compress(&plain, 3).unwrap();
        zs.resize(zs.len().next_multiple_of(4096), 0); // sector padding as on disk
        let mut out = vec![0u8; plain.len()];
        decode(2, &zs, &mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn lzo_framing() {
        let plain: Vec<u8> = (0..6000u32).map(|i| (i % 7) as u8).collect();
        let mut framed = vec![0u8; 4];
        for chunk in plain.chunks(4096) {
            let c = lzokay_native::compress(chunk).unwrap();
            if 4096 - framed.len() % 4096 < 4 {
                framed.resize(framed.len().next_multiple_of(4096), 0);
            }
            framed.extend_from_slice(&(c.len() as u32).to_le_bytes());
            framed.extend_from_slice(&c);
        }
        let total = framed.len() as u32;
        framed[..4].copy_from_slice(&total.to_le_bytes());
        let mut out = vec![0u8; plain.len()];
        decode(3, &framed, &mut out).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn geometry_is_bounded() {
        assert!(check_geometry(1 << 30, 0, 1).is_err());
        assert!(check_geometry(4096, 4000, 200).is_err());
        assert!(check_geometry(4096, 0, 4096).is_ok());
        assert!(decode(9, b"", &mut []).is_err());
    }
}
