//! The three extent decoders (zlib, zstd, btrfs-framed LZO) through `recv::decompress`'s public
//! API, as the receiver calls them: arbitrary data and claimed sizes must give a decoded extent
//! or a `DecodeError`, never a panic, and never more output than the geometry allows. A second
//! mode compresses the input with the real encoders and checks the decoders give it back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use subvol::recv::decompress::{DecodeError, MAX_UNENCODED, check_geometry, decode};

fuzz_target!(|input: &[u8]| {
    let Some((&[mode, compression, l0, l1, o0, o1, f0, f1], data)) = input.split_first_chunk()
    else {
        return;
    };
    if mode & 1 == 0 {
        hostile(compression, [l0, l1], [o0, o1], [f0, f1], data);
    } else {
        round_trip(compression, data);
    }
});

/// Arbitrary compressed bytes and arbitrary sizes, checked the way the receiver does.
fn hostile(compression: u8, len: [u8; 2], offset: [u8; 2], file_len: [u8; 2], data: &[u8]) {
    // Sizes in 64-byte units reach past MAX_UNENCODED (128 KiB) both ways.
    let unit = |b: [u8; 2]| u64::from(u16::from_le_bytes(b)) * 64;
    let (unencoded_len, unencoded_offset, unencoded_file_len) =
        (unit(len), unit(offset), unit(file_len));
    if check_geometry(unencoded_len, unencoded_offset, unencoded_file_len).is_err() {
        assert!(
            unencoded_len > MAX_UNENCODED || unencoded_offset + unencoded_file_len > unencoded_len
        );
        return;
    }
    // Values 0..=7 are known (none, zlib, zstd, LZO with 4..64 KiB sectors); keep a few unknown.
    let compression = u32::from(compression % 10);
    let mut out = vec![0u8; unencoded_len as usize];
    match decode(compression, data, &mut out) {
        Ok(()) => {}
        Err(DecodeError::UnknownCompression(c)) => assert!(c > 7),
        Err(DecodeError::Corrupt { alg, reason }) => {
            assert!(["zlib", "zstd", "lzo"].contains(&alg));
            assert!(!reason.is_empty());
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    assert_eq!(
        out.len() as u64,
        unencoded_len,
        "decoder resized its output"
    );
}

/// Valid data made by the real encoders decodes back to the input.
fn round_trip(compression: u8, plain: &[u8]) {
    let plain = &plain[..plain.len().min(MAX_UNENCODED as usize)];
    let (compression, encoded) = match compression % 3 {
        0 => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(plain).unwrap();
            (1, z.finish().unwrap())
        }
        1 => {
            let mut z = zstd::bulk::compress(plain, 1).unwrap();
            z.resize(z.len().next_multiple_of(4096), 0); // sector padding as on disk
            (2, z)
        }
        _ => {
            let sector_log = u32::from(compression / 3 % 5);
            (3 + sector_log, lzo_framed(plain, 4096 << sector_log))
        }
    };
    let mut out = vec![0u8; plain.len()];
    decode(compression, &encoded, &mut out).unwrap();
    assert!(
        out == plain,
        "compression {compression} does not round trip"
    );
}

/// btrfs LZO framing: le32 total, then per sector le32 length + LZO1X segment; a segment header
/// never straddles a sector boundary.
fn lzo_framed(plain: &[u8], sector: usize) -> Vec<u8> {
    let mut framed = vec![0u8; 4];
    for chunk in plain.chunks(sector) {
        let c = lzokay_native::compress(chunk).unwrap();
        if sector - framed.len() % sector < 4 {
            framed.resize(framed.len().next_multiple_of(sector), 0);
        }
        framed.extend_from_slice(&(c.len() as u32).to_le_bytes());
        framed.extend_from_slice(&c);
    }
    let total = framed.len() as u32;
    framed[..4].copy_from_slice(&total.to_le_bytes());
    framed
}
