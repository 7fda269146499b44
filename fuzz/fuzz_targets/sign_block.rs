//! Signature blocks and the verifying filter (`sign`): `Block::decode` on arbitrary payloads
//! (canonical: whatever decodes re-encodes to the same bytes), `VerifyingSource` with a fixed
//! key set over arbitrary bytes, and over a stream signed with that key then damaged as the
//! input says: the filter never panics and never yields anything the signer did not sign.

#![no_main]

use libfuzzer_sys::fuzz_target;
use subvol::pipeline::{CommandSink, Source};
use subvol::sign::{Block, KeySet, SecretKey, Signer, VerifyingSource};
use subvol::stream::{Builder, Command, Item, Reader, Writer, attr, cmd, end_command};

fn key() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

fn keys() -> KeySet {
    let mut k = KeySet::new();
    k.add(key().public().clone());
    k
}

fuzz_target!(|input: &[u8]| {
    if let Ok(block) = Block::decode(input) {
        assert_eq!(
            &block.encode()[..],
            input,
            "block encoding is not canonical"
        );
    }
    // Raw bytes: mostly refused early, but never a panic.
    let _ = verify(input);

    // A signed stream built from the input, then damaged: flips of bytes and a truncation.
    let Some((&[shape, flips, cut0, cut1], rest)) = input.split_first_chunk() else {
        return;
    };
    let (plain, signed) = signed_stream(shape, rest);
    let mut damaged = signed.clone();
    let flips = usize::from(flips % 4);
    for pair in rest.chunks_exact(3).take(flips) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % damaged.len();
        damaged[at] ^= pair[2].max(1);
    }
    if cut0 & 1 == 1 {
        let cut = usize::from(u16::from_le_bytes([cut0, cut1])) % (damaged.len() + 1);
        damaged.truncate(cut);
    }
    let (yielded, result) = verify(&damaged);
    // Whatever was released is a prefix of what was signed.
    assert!(
        plain.starts_with(&yielded),
        "released commands that were not signed"
    );
    if damaged == signed {
        result.unwrap();
        assert_eq!(yielded, plain);
    }
});

/// Runs the verifying filter to its end: the stream bytes it released and its final result.
fn verify(input: &[u8]) -> (Vec<u8>, Result<(), subvol::Error>) {
    let mut src = VerifyingSource::new(Reader::new(input), keys());
    let mut out = Writer::new(Vec::new());
    let mut c = Command::empty();
    let result = loop {
        match src.next_item(&mut c) {
            Ok(None) => break Ok(()),
            Ok(Some(Item::Header(v))) => out.write_header(v).unwrap(),
            Ok(Some(Item::Command)) => out.write_command(&c).unwrap(),
            Err(e) => {
                let _ = e.to_string();
                break Err(e);
            }
        }
    };
    let _ = src.report();
    (out.into_inner(), result)
}

/// A small stream whose names and data come from `bytes`, plain and signed with tiny segments
/// so that it has several signature blocks.
fn signed_stream(shape: u8, bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let version = 1 + u32::from(shape % 3);
    let mut commands = vec![
        Builder::new(cmd::SUBVOL, version)
            .bytes(attr::PATH, b"vol")
            .bytes(attr::UUID, &[1; 16])
            .u64(attr::CTRANSID, 7)
            .build()
            .unwrap(),
    ];
    for (i, chunk) in bytes.chunks(40).take(8).enumerate() {
        let name = format!("f{i}");
        commands.push(
            Builder::new(cmd::MKFILE, version)
                .bytes(attr::PATH, name.as_bytes())
                .u64(attr::INO, 257 + i as u64)
                .build()
                .unwrap(),
        );
        commands.push(
            Builder::new(cmd::WRITE, version)
                .bytes(attr::PATH, name.as_bytes())
                .u64(attr::FILE_OFFSET, 0)
                .data(chunk)
                .build()
                .unwrap(),
        );
    }
    commands.push(end_command(version));
    let mut plain = Writer::new(Vec::new());
    plain.write_header(version).unwrap();
    let target = 64 + u64::from(shape / 3) * 16;
    let mut signer = Signer::with_stream_id(Vec::new(), key(), [shape; 16])
        .with_segment_sizes(target, 4 * target);
    signer.write_header(version).unwrap();
    for c in &commands {
        plain.write_command(c).unwrap();
        signer.write_command(c).unwrap();
    }
    signer.finish().unwrap();
    (plain.into_inner(), signer.into_inner())
}
