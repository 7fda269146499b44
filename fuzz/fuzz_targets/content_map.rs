//! Content maps (`content::ContentMap::decode`) from arbitrary bytes, raw and zstd-compressed,
//! against sizes from the input; and arbitrary bytes written through `content::FramingWriter`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use subvol::content::{ContentMap, FrameKind, FramingWriter};

fn check(m: &ContentMap, stream_bytes: u64, comp_bytes: u64) {
    // An accepted map tiles both sizes and re-encodes to a map that decodes the same.
    let (mut so, mut co) = (0, 0);
    for f in &m.frames {
        assert_eq!((f.stream_offset, f.comp_offset), (so, co));
        assert!(f.stream_len > 0 && f.comp_len > 0);
        assert_eq!(
            m.keys_of(f).len() as u64,
            if f.kind == FrameKind::Data {
                f.stream_len.div_ceil(4096)
            } else {
                0
            }
        );
        so += f.stream_len;
        co += f.comp_len;
    }
    assert_eq!((so, co), (stream_bytes, comp_bytes));
    let again = ContentMap::decode(&m.encode(), stream_bytes, comp_bytes).unwrap();
    assert_eq!(&again, m);
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 8 {
        return;
    }
    // Sizes from the input, small enough that a few frames can tile them.
    let stream_bytes = u64::from(u32::from_le_bytes([input[0], input[1], input[2], input[3]]));
    let comp_bytes = u64::from(u32::from_le_bytes([input[4], input[5], input[6], input[7]]));
    let body = &input[8..];
    if let Ok(m) = ContentMap::decode(body, stream_bytes, comp_bytes) {
        check(&m, stream_bytes, comp_bytes);
    }
    if let Ok(z) = zstd::bulk::compress(body, 1)
        && let Ok(m) = ContentMap::decode(&z, stream_bytes, comp_bytes)
    {
        check(&m, stream_bytes, comp_bytes);
    }
    // The framing writer: an error or a zstd file that decompresses to the input.
    let mut z = zstd::bulk::Compressor::new(1).unwrap();
    let mut fw = FramingWriter::new(Vec::new(), &mut z);
    if fw.write_all(body).is_ok()
        && let Ok((out, m)) = fw.finish()
    {
        assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), body);
        check(&m, body.len() as u64, out.len() as u64);
    }
});
