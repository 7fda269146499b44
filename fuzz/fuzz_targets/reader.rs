//! Feeds arbitrary bytes to the stream reader, the typed view of every command, the text and JSON
//! dumps, and a writer round trip: whatever parses must re-encode to exactly the input bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use subvol::dump::{JsonDump, Sink, TextDump};
use subvol::stream::{Command, Item, Reader, Writer};

fuzz_target!(|data: &[u8]| {
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
                let _ = text.header(v, at);
                let _ = json.header(v, at);
            }
            Ok(Some(Item::Command)) => {
                let index = reader.commands() - 1;
                let _ = c.op();
                let _ = c.check_sizes();
                for &a in c.attr_order() {
                    assert!(c.get(a).is_some());
                }
                let _ = text.command(&c, at, index);
                json.command(&c, at, index).unwrap();
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
});
