//! Tests: decoding the compressed extents of the committed kernel streams (`tests/fixtures/`)
//! in userspace, as the receiver does for `--force-decompress`, byte for byte against reference
//! decoders (flate2/zstd for zlib/zstd, lzokay-native for LZO, which the receiver used before its
//! own bounds-checked LZO decoder). No root needed.

use std::collections::BTreeMap;
use subvol::recv::decompress::{check_geometry, decode};
use subvol::stream::{Command, Item, Op, Reader};

/// The previous LZO path: btrfs framing around `lzokay_native` (correct on valid data).
fn reference_lzo(data: &[u8], out: &mut [u8], sector: usize) {
    let le32 = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let total = le32(0);
    let (mut pos, mut produced) = (4, 0);
    while pos < total && produced < out.len() {
        let left_in_sector = sector - pos % sector;
        if left_in_sector < 4 {
            pos += left_in_sector;
            if pos >= total {
                break;
            }
        }
        let seg = le32(pos);
        pos += 4;
        let dec = lzokay_native::decompress_all(&data[pos..pos + seg], None).unwrap();
        let want = sector.min(out.len() - produced);
        let n = dec.len().min(want);
        out[produced..produced + n].copy_from_slice(&dec[..n]);
        produced += want;
        pos += seg;
    }
}

fn reference(compression: u32, data: &[u8], out: &mut [u8]) {
    let fill = |mut r: Box<dyn std::io::Read + '_>, out: &mut [u8]| {
        let mut got = 0;
        while got < out.len() {
            match r.read(&mut out[got..]).unwrap() {
                0 => break,
                n => got += n,
            }
        }
    };
    match compression {
        1 => fill(Box::new(flate2::read::ZlibDecoder::new(data)), out),
        // One frame; the sector padding after it is not a frame.
        2 => fill(
            Box::new(
                zstd::stream::read::Decoder::new(data)
                    .unwrap()
                    .single_frame(),
            ),
            out,
        ),
        3..=7 => reference_lzo(data, out, 4096 << (compression - 3)),
        other => panic!("compression {other} in a fixture"),
    }
}

#[test]
fn kernel_extents_decode_as_the_reference_decoders_do() {
    let dir = crate::support::repo_root().join("tests/fixtures");
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for name in ["full-v2c.stream", "incr-v2c.stream"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut reader = Reader::new(&bytes[..]);
        let mut c = Command::empty();
        while let Some(item) = reader.next(&mut c).unwrap() {
            if !matches!(item, Item::Command) {
                continue;
            }
            let Ok(Op::EncodedWrite {
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                data,
                ..
            }) = c.op()
            else {
                continue;
            };
            check_geometry(unencoded_len, unencoded_offset, unencoded_file_len).unwrap();
            let mut ours = vec![0u8; unencoded_len as usize];
            decode(compression, data, &mut ours).unwrap();
            let mut theirs = vec![0u8; unencoded_len as usize];
            reference(compression, data, &mut theirs);
            assert!(ours == theirs, "{name}: compression {compression} differs");
            *seen.entry(compression).or_default() += 1;
        }
    }
    // zlib, zstd and LZO (4 KiB sectors) extents are all in the fixtures.
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{seen:?}"
    );
}
