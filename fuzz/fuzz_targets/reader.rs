//! Feeds arbitrary bytes to the stream reader, the typed view of every command, the text and JSON
//! dumps, and a writer round trip: whatever parses must re-encode to exactly the input bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use subvol::dump::{JsonDump, TextDump};
use subvol::pipeline::{CommandSink, Position};
use subvol::stream::{Command, Item, Reader, Writer, command_header};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Mutations almost never keep a CRC valid; also try the input with every CRC recomputed so
    // that the attribute parser, the typed view and the dumps see deep inputs.
    let fixed = with_fixed_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});

/// Rewrites the CRC of every complete command it can frame (stream headers are skipped
/// wherever a command would start with the magic).
fn with_fixed_crcs(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let mut pos = 0;
    while pos < v.len() {
        if v[pos..].starts_with(b"btrfs-stream\0") {
            pos += 17;
            continue;
        }
        if v.len() - pos < 10 {
            break;
        }
        let len = u32::from_le_bytes(v[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 10 + len;
        if end > v.len() {
            break;
        }
        let cmd = u16::from_le_bytes([v[pos + 4], v[pos + 5]]);
        let hdr = command_header(cmd, &[&v[pos + 10..end]]);
        v[pos..pos + 10].copy_from_slice(&hdr);
        pos = end;
    }
    v
}

fn check(data: &[u8]) {
    let mut reader = Reader::new(data);
    let mut writer = Writer::new(Vec::with_capacity(data.len()));
    let mut text = TextDump::with_time_zone(std::io::sink(), jiff::tz::TimeZone::UTC);
    let mut json = JsonDump::new(std::io::sink());
    let mut c = Command::empty();
    let mut consumed = 0u64;
    loop {
        let at = reader.offset();
        match reader.next(&mut c) {
            Ok(Some(Item::Header(v))) => {
                writer.write_header(v).unwrap();
                let at = Position {
                    offset: at,
                    index: reader.commands(),
                };
                let _ = text.header(v, at);
                let _ = json.header(v, at);
            }
            Ok(Some(Item::Command)) => {
                let at = Position {
                    offset: at,
                    index: reader.commands() - 1,
                };
                let _ = c.op();
                let _ = c.check_sizes();
                for &a in c.attr_order() {
                    assert!(c.get(a).is_some());
                }
                let _ = text.command(&c, at);
                let _ = json.command(&c, at).unwrap();
                writer.write_command(&c).unwrap();
            }
            Ok(None) => break,
            Err(e) => {
                // The error names a position inside the input.
                assert!(e.offset <= data.len() as u64);
                let _ = e.to_string();
                break;
            }
        }
        consumed = reader.offset();
    }
    let out = writer.into_inner();
    assert_eq!(out.len() as u64, consumed);
    assert_eq!(&out[..], &data[..consumed as usize], "round trip differs");
}
