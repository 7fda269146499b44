//! Decoding an ENCODED_WRITE extent when the encoded-write ioctl cannot take it (another sector
//! size, an old kernel, `--force-decompress`): zlib, zstd, and btrfs's framed LZO.

use std::io::Read;

/// Largest decoded extent btrfs makes (`BTRFS_MAX_UNCOMPRESSED`); bigger claims are refused so
/// memory stays bounded.
pub const MAX_UNENCODED: u64 = 128 * 1024;

/// Largest zstd window btrfs uses (`ZSTD_BTRFS_MAX_WINDOWLOG`): 128 KiB.
const ZSTD_MAX_WINDOW_LOG: u32 = 17;

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
            let corrupt = |e: std::io::Error| DecodeError::Corrupt {
                alg: "zstd",
                reason: e.to_string(),
            };
            let mut dec = zstd::stream::read::Decoder::with_buffer(data).map_err(corrupt)?;
            // The frame header chooses the window the decoder allocates; btrfs compresses with
            // at most 128 KiB (ZSTD_BTRFS_MAX_WINDOWLOG), and the kernel refuses larger frames.
            dec.window_log_max(ZSTD_MAX_WINDOW_LOG).map_err(corrupt)?;
            fill_from(dec.single_frame(), out, "zstd")
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
    let mut scratch = vec![0u8; sector];
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
        // A segment decodes to at most one sector (the kernel refuses more); the last sector of
        // `out` may be shorter, so decode into a sector-sized scratch and keep what fits.
        let want = sector.min(out.len() - produced);
        let n = lzo1x_decode(&data[pos..end], &mut scratch).map_err(|e| corrupt(e.to_string()))?;
        let keep = n.min(want);
        out[produced..produced + keep].copy_from_slice(&scratch[..keep]);
        produced += want;
        pos = end;
    }
    Ok(())
}

/// Why one LZO1X segment could not be decoded.
#[derive(Debug, thiserror::Error)]
enum LzoFault {
    #[error("input ends inside an instruction or before the end marker")]
    Truncated,
    #[error("match {distance} bytes back at output {at}, before the start of the segment")]
    BeforeStart { distance: usize, at: usize },
    #[error("segment decodes past the end of the sector ({limit} bytes)")]
    Overrun { limit: usize },
    #[error("end marker with length {0} (expected 3)")]
    BadEnd(usize),
}

/// Decodes one LZO1X-1 block into `out` and returns the bytes produced. Every read and copy is
/// bounds-checked against `src` and `out`, so hostile input gives an error, never a panic or
/// unbounded output. Instruction set as documented in lzokay's decoder; the state is the number
/// of literals the previous instruction copied (4 for a long run).
fn lzo1x_decode(src: &[u8], out: &mut [u8]) -> Result<usize, LzoFault> {
    let mut d = Lzo1x {
        src,
        ip: 0,
        out,
        op: 0,
    };
    let mut state = 0;
    // A first byte above 17 is a literal run of byte - 17.
    if let Some(&first) = src.first()
        && first > 17
    {
        d.ip = 1;
        let n = usize::from(first - 17);
        d.literals(n)?;
        state = n.min(4);
    }
    loop {
        let inst = d.byte()?;
        let (distance, len, trailing) = if inst >= 64 {
            // M2: 1LLDDDSS or 01LDDDSS, HHHHHHHH: 3..8 bytes within 2 KiB.
            let h = usize::from(d.byte()?);
            let distance = (h << 3) + usize::from((inst >> 2) & 7) + 1;
            (distance, usize::from(inst >> 5) + 1, usize::from(inst & 3))
        } else if inst >= 32 {
            // M3: 001LLLLL [length run], le16 DDDDDDDD DDDDDDSS: within 16 KiB.
            let len = d.length(usize::from(inst & 31), 31)? + 2;
            let tail = d.le16()?;
            ((tail >> 2) + 1, len, tail & 3)
        } else if inst >= 16 {
            // M4: 0001HLLL [length run], le16: 16..48 KiB back; distance 16384 ends the block.
            let len = d.length(usize::from(inst & 7), 7)? + 2;
            let tail = d.le16()?;
            let back = (usize::from(inst & 8) << 11) + (tail >> 2);
            if back == 0 {
                if len != 3 {
                    return Err(LzoFault::BadEnd(len));
                }
                return Ok(d.op);
            }
            (back + 16384, len, tail & 3)
        } else if state == 0 {
            // 0000LLLL [length run]: a run of 4 or more literals.
            let n = d.length(usize::from(inst), 15)? + 3;
            d.literals(n)?;
            state = 4;
            continue;
        } else {
            // 0000DDSS HHHHHHHH: 2 bytes within 1 KiB after 1..3 literals, else 3 bytes 2..3 KiB back.
            let h = usize::from(d.byte()?);
            let near = usize::from(inst >> 2) + (h << 2);
            if state < 4 {
                (near + 1, 2, usize::from(inst & 3))
            } else {
                (near + 2049, 3, usize::from(inst & 3))
            }
        };
        d.copy_match(distance, len)?;
        d.literals(trailing)?;
        state = trailing;
    }
}

/// Input and output cursors of [`lzo1x_decode`].
struct Lzo1x<'a> {
    src: &'a [u8],
    ip: usize,
    out: &'a mut [u8],
    op: usize,
}

impl Lzo1x<'_> {
    fn byte(&mut self) -> Result<u8, LzoFault> {
        let b = *self.src.get(self.ip).ok_or(LzoFault::Truncated)?;
        self.ip += 1;
        Ok(b)
    }

    fn le16(&mut self) -> Result<usize, LzoFault> {
        let lo = self.byte()?;
        let hi = self.byte()?;
        Ok(usize::from(u16::from_le_bytes([lo, hi])))
    }

    /// A length field: `short` when non-zero, else `base` + 255 per zero byte + the next byte.
    fn length(&mut self, short: usize, base: usize) -> Result<usize, LzoFault> {
        if short != 0 {
            return Ok(short);
        }
        let mut n = base;
        loop {
            match self.byte()? {
                0 => n = n.saturating_add(255),
                b => return Ok(n.saturating_add(usize::from(b))),
            }
        }
    }

    fn output_end(&self, n: usize) -> Result<usize, LzoFault> {
        self.op
            .checked_add(n)
            .filter(|&end| end <= self.out.len())
            .ok_or(LzoFault::Overrun {
                limit: self.out.len(),
            })
    }

    fn literals(&mut self, n: usize) -> Result<(), LzoFault> {
        let from = self
            .ip
            .checked_add(n)
            .and_then(|end| self.src.get(self.ip..end))
            .ok_or(LzoFault::Truncated)?;
        let end = self.output_end(n)?;
        self.out[self.op..end].copy_from_slice(from);
        self.ip += n;
        self.op = end;
        Ok(())
    }

    /// Copies `len` bytes from `distance` back; overlapping copies repeat the pattern.
    fn copy_match(&mut self, distance: usize, len: usize) -> Result<(), LzoFault> {
        let start = self.op.checked_sub(distance).ok_or(LzoFault::BeforeStart {
            distance,
            at: self.op,
        })?;
        let end = self.output_end(len)?;
        if distance >= len {
            self.out.copy_within(start..start + len, self.op);
        } else {
            for i in self.op..end {
                self.out[i] = self.out[i - distance];
            }
        }
        self.op = end;
        Ok(())
    }
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

    /// btrfs LZO framing of raw LZO1X segments (4 KiB sectors).
    fn frame(segments: &[&[u8]]) -> Vec<u8> {
        let mut framed = vec![0u8; 4];
        for seg in segments {
            if 4096 - framed.len() % 4096 < 4 {
                framed.resize(framed.len().next_multiple_of(4096), 0);
            }
            framed.extend_from_slice(&(seg.len() as u32).to_le_bytes());
            framed.extend_from_slice(seg);
        }
        let total = framed.len() as u32;
        framed[..4].copy_from_slice(&total.to_le_bytes());
        framed
    }

    fn lzo_error(segment: &[u8]) -> String {
        let mut out = vec![0u8; 8192];
        match decode(3, &frame(&[segment]), &mut out) {
            Ok(()) => panic!("{segment:02x?} decoded"),
            Err(e) => e.to_string(),
        }
    }

    /// Inputs that panicked inside the previous LZO crate (`lzokay-native`): each must be a
    /// "corrupt lzo data" error naming the fault.
    #[test]
    fn lzo_hostile_segments_are_corrupt_not_panics() {
        // The first byte of a segment is a literal run when above 17, so most matches follow one.
        let before_start = [
            &[0x12, b'a', 0x40, 0x08][..],   // M2 match 65 back at 1
            &[0x12, b'a', 0x21, 0x04, 0x00], // M3 match 2 back at 1
            &[0x11, 0xff, 0xff],             // M4 match 32 KiB back at 0
            &[0x16, b'a', b'b', b'c', b'd', b'e', 0x00, 0x00], // 3-byte match 2049 back at 5
            &[0x12, b'a', 0x04, 0x01],       // 2-byte match 6 back at 1
        ];
        for seg in before_start {
            let e = lzo_error(seg);
            assert!(e.starts_with("corrupt lzo data: "), "{e}");
            assert!(e.contains("before the start"), "{seg:02x?}: {e}");
        }
        // A match length from a run of zero bytes that overruns the sector.
        let mut long = vec![0x13, b'a', b'b', 0x20];
        long.extend_from_slice(&[0; 64]);
        long.extend_from_slice(&[0xff, 0x04, 0x00]);
        let e = lzo_error(&long);
        assert!(e.contains("past the end of the sector"), "{e}");
        // Truncated instructions and a stream without its end marker.
        for seg in [
            &[0x40][..],
            &[0x15, b'a'],
            &[0x16, b'a', b'b', b'c', b'd', b'e'],
        ] {
            let e = lzo_error(seg);
            assert!(e.contains("input ends"), "{seg:02x?}: {e}");
        }
        // An end marker whose length is not 3.
        let e = lzo_error(&[0x16, b'a', b'b', b'c', b'd', b'e', 0x12, 0x00, 0x00]);
        assert!(e.contains("end marker"), "{e}");
    }

    /// A zstd frame asking for a 128 MiB window is refused before the decoder allocates it.
    #[test]
    fn zstd_window_is_capped() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.write_all(&[7u8; 1000]).unwrap();
        let frame = enc.finish().unwrap();
        let mut out = vec![0u8; 4096];
        let e = decode(2, &frame, &mut out).unwrap_err().to_string();
        assert!(e.starts_with("corrupt zstd data: "), "{e}");
    }

    /// Output never exceeds the buffer, whatever the compressed data claims.
    #[test]
    fn zlib_and_zstd_output_is_bounded() {
        let plain = vec![0u8; 1 << 20];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).unwrap();
        let zl = z.finish().unwrap();
        let zs = zstd::bulk::compress(&plain, 3).unwrap();
        for (alg, data) in [(1, zl), (2, zs)] {
            let mut out = vec![1u8; 4096];
            let result = decode(alg, &data, &mut out);
            // zlib fills exactly the buffer; zstd may refuse the 1 MiB frame's window instead.
            if alg == 1 || result.is_ok() {
                result.unwrap();
                assert_eq!(out, vec![0u8; 4096]);
            }
        }
    }

    /// The decoder gives byte for byte what lzokay gives on what lzokay's encoder makes, on
    /// text-like, random and run-heavy sectors.
    #[test]
    fn lzo_matches_the_reference_decoder() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let len = (next() % 4097) as usize;
            let plain: Vec<u8> = match round % 3 {
                0 => (0..len).map(|_| next() as u8).collect(),
                1 => (0..len).map(|i| b"the quick brown fox "[i % 20]).collect(),
                _ => (0..len).map(|i| ((i / 97) % 3) as u8).collect(),
            };
            let seg = lzokay_native::compress(&plain).unwrap();
            let reference = lzokay_native::decompress_all(&seg, None).unwrap();
            assert_eq!(reference, plain);
            let mut out = vec![0u8; 4096];
            let n = lzo1x_decode(&seg, &mut out).unwrap();
            assert_eq!(&out[..n], &plain[..], "round {round}");
            // Every strict prefix is an error, not a panic.
            for cut in 0..seg.len() {
                assert!(lzo1x_decode(&seg[..cut], &mut out).is_err());
            }
        }
    }

    #[test]
    fn geometry_is_bounded() {
        assert!(check_geometry(1 << 30, 0, 1).is_err());
        assert!(check_geometry(4096, 4000, 200).is_err());
        assert!(check_geometry(4096, 0, 4096).is_ok());
        assert!(decode(9, b"", &mut []).is_err());
    }
}
