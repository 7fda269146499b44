//! Tests: cli. `subvol dump` and `subvol verify` as a user runs them: output, exit codes and
//! messages, on the committed kernel streams and on malformed input.

use crate::support::bin;
use crate::support::btrfs_fixture::{find_tool, skip_or_panic};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use subvol::stream::{Builder, Uuid, Writer, attr, cmd, command_header, stream_header};

fn fixtures() -> Vec<PathBuf> {
    let dir = crate::support::repo_root().join("tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stream"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn subvol(args: &[&str], tz: &str, stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(bin("subvol"));
    c.args(args)
        .env("TZ", tz)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&input);
        });
    }
    child.wait_with_output().unwrap()
}

fn with_file<T>(bytes: &[u8], f: impl FnOnce(&str) -> T) -> T {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    f(tmp.path().to_str().unwrap())
}

const END: [u8; 10] = [0, 0, 0, 0, 0x15, 0, 0x50, 0x6c, 0xc9, 0x9d];

fn good_stream() -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    w.write_header(2).unwrap();
    let sv = Builder::new(cmd::SUBVOL, 2)
        .bytes(attr::PATH, b"s")
        .uuid(attr::UUID, &Uuid([1; 16]))
        .u64(attr::CTRANSID, 5)
        .build()
        .unwrap();
    let mk = Builder::new(cmd::MKFILE, 2)
        .bytes(attr::PATH, b"f")
        .u64(attr::INO, 257)
        .build()
        .unwrap();
    w.write_command(&sv).unwrap();
    w.write_command(&mk).unwrap();
    w.write_raw(&END).unwrap();
    w.into_inner()
}

fn raw_cmd(c: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = command_header(c, &[payload]).to_vec();
    v.extend_from_slice(payload);
    v
}

fn tlv(a: u16, v: &[u8]) -> Vec<u8> {
    let mut t = a.to_le_bytes().to_vec();
    t.extend_from_slice(&u16::try_from(v.len()).unwrap().to_le_bytes());
    t.extend_from_slice(v);
    t
}

/// Offset of the third command (index 2) in `good_stream()`-prefixed inputs.
fn third_offset() -> usize {
    good_stream().len() - END.len()
}

/// `good_stream()` with its END replaced by `tail`.
fn good_then(tail: &[u8]) -> Vec<u8> {
    let mut s = good_stream();
    s.truncate(third_offset());
    s.extend_from_slice(tail);
    s
}

#[test]
fn dump_matches_progs_on_committed_streams() {
    for s in fixtures() {
        let want = std::fs::read(s.with_extension("dump")).unwrap();
        let out = subvol(&["dump", "-f", s.to_str().unwrap()], "UTC", None);
        assert!(
            out.status.success(),
            "{}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == want, "{}: dump differs", s.display());
        // stdin by default.
        let out = subvol(&["dump"], "UTC", Some(&std::fs::read(&s).unwrap()));
        assert!(out.status.success());
        assert!(out.stdout == want, "{} via stdin", s.display());
    }
}

#[test]
fn dump_honours_tz_like_progs() {
    let Some(btrfs) = find_tool("btrfs") else {
        skip_or_panic("`btrfs` (btrfs-progs) not installed");
        return;
    };
    for zone in ["Asia/Kolkata", "America/New_York"] {
        for s in fixtures() {
            let want = Command::new(&btrfs)
                .args(["receive", "--dump", "-f"])
                .arg(&s)
                .env("TZ", zone)
                .output()
                .unwrap();
            assert!(want.status.success());
            let out = subvol(&["dump", "-f", s.to_str().unwrap()], zone, None);
            assert!(out.status.success());
            assert!(out.stdout == want.stdout, "{} TZ={zone}", s.display());
        }
    }
}

#[test]
fn dump_json_one_object_per_line_with_lossless_names() {
    let mut decoded = Vec::new();
    for s in fixtures() {
        let out = subvol(&["dump", "--json", "-f", s.to_str().unwrap()], "UTC", None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("JSON output is UTF-8");
        assert!(text.lines().count() > 10);
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v.is_object());
            for a in v["attrs"].as_array().into_iter().flatten() {
                if let Some(hex) = a[1].get("hex").and_then(|h| h.as_str())
                    && (a[0] == "path" || a[0] == "path_to")
                {
                    decoded.push(::hex::decode(hex).unwrap());
                }
            }
        }
    }
    assert!(
        decoded.iter().any(|n| n == b"bad\xff\xfename"),
        "{decoded:?}"
    );
    assert!(decoded.iter().any(|n| n == b"renamed\xfe"), "{decoded:?}");
    // A crafted stream: every byte value survives in a name.
    let name: Vec<u8> = (1..=255u8).filter(|&b| b != b'/').collect();
    let mut s = good_stream();
    s.truncate(third_offset());
    s.extend(raw_cmd(cmd::UNLINK, &tlv(attr::PATH, &name)));
    s.extend_from_slice(&END);
    let out = subvol(&["dump", "--json"], "UTC", Some(&s));
    assert!(out.status.success());
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .nth(3)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["command"], "unlink");
    let hex = last["attrs"][0][1]["hex"].as_str().unwrap();
    assert_eq!(::hex::decode(hex).unwrap(), name);
}

#[test]
fn verify_good_input_prints_summary() {
    for s in fixtures() {
        let len = std::fs::metadata(&s).unwrap().len();
        let out = subvol(&["verify", "-f", s.to_str().unwrap()], "UTC", None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with("OK: 1 stream, ") && line.contains(&format!(" {len} bytes")),
            "{line}"
        );
    }
    // Concatenated streams from stdin.
    let all: Vec<u8> = fixtures()
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let out = subvol(&["verify"], "UTC", Some(&all));
    assert_eq!(out.status.code(), Some(0));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with(&format!("OK: {} streams, ", fixtures().len())),
        "{line}"
    );
}

/// Every kind of bad input: `verify` and `dump` exit 3 with a message naming the problem (and
/// the byte offset and command index where there is one), never a panic.
#[test]
fn bad_input_exit_code_3_with_position() {
    let mut bad_crc = good_stream();
    bad_crc[third_offset() - 1] ^= 0xff; // last payload byte of command 1
    let cmd1 = 17 + (third_offset() - 17)
        - raw_cmd(
            cmd::MKFILE,
            &[tlv(attr::PATH, b"f"), tlv(attr::INO, &[0; 8])].concat(),
        )
        .len();
    let mut oversized = good_then(&0xffff_ffffu32.to_le_bytes());
    oversized.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
    let mut v4 = stream_header(4).to_vec();
    v4.extend_from_slice(&END);
    let mut vmax = stream_header(0xffff_ffff).to_vec();
    vmax.extend_from_slice(&END);
    let mut garbage = good_stream();
    garbage.extend_from_slice(b"\0\0\0\0junk");
    let path = tlv(attr::PATH, b"p");
    // (name, input, message part, position: Some((offset, index)), dump also fails)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Option<(usize, u64)>, bool);
    let cases: Vec<Case> = vec![
        ("empty", Vec::new(), "empty", None, true),
        (
            "bad magic",
            b"not a btrfs stream at all".to_vec(),
            "bad magic",
            None,
            true,
        ),
        ("version 4", v4, "version 4", None, true),
        ("version 0xffffffff", vmax, "version 4294967295", None, true),
        ("bad crc", bad_crc, "crc32c mismatch", Some((cmd1, 1)), true),
        (
            "truncated stream header",
            b"btrfs-stream\0\x02".to_vec(),
            "truncated inside stream header",
            None,
            true,
        ),
        (
            "truncated command header",
            good_then(&[5, 0, 0]),
            "truncated inside command header",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "truncated payload",
            good_then(&raw_cmd(cmd::UNLINK, &path)[..12]),
            "truncated inside command payload",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "truncated attribute",
            good_then(&raw_cmd(cmd::UNLINK, &[15, 0, 9, 0, b'x'])),
            "attribute truncated",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "oversized length",
            oversized,
            "exceeds the limit",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "wrong size",
            good_then(&raw_cmd(
                cmd::CHMOD,
                &[path.clone(), tlv(attr::MODE, &[1, 2, 3, 4])].concat(),
            )),
            "expected 8 bytes, got 4",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "missing attribute",
            good_then(&raw_cmd(cmd::RENAME, &path)),
            "path_to missing",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "attribute type 0",
            good_then(&raw_cmd(cmd::UNLINK, &tlv(0, b""))),
            "invalid attribute type 0",
            Some((third_offset(), 2)),
            true,
        ),
        (
            "attribute type 36",
            good_then(&raw_cmd(cmd::UNLINK, &tlv(36, b""))),
            "invalid attribute type 36",
            Some((third_offset(), 2)),
            true,
        ),
        ("missing END", good_then(&[]), "without an END", None, true),
        // `dump` stops at the first END, as btrfs receive --dump does.
        ("trailing garbage", garbage, "trailing garbage", None, false),
    ];
    for (name, input, msg, pos, dump_fails) in cases {
        with_file(&input, |f| {
            let out = subvol(&["verify", "-f", f], "UTC", None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{name}: verify: {err}");
            assert!(err.contains(msg), "{name}: {err:?} lacks {msg:?}");
            assert!(!err.contains("panicked"), "{name}: {err}");
            if let Some((offset, index)) = pos {
                assert!(
                    err.contains(&format!("at byte {offset}")),
                    "{name}: {err:?} lacks offset {offset}"
                );
                assert!(
                    err.contains(&format!("command {index}")),
                    "{name}: {err:?} lacks index {index}"
                );
            }
            let out = subvol(&["verify", "--json", "-f", f], "UTC", None);
            assert_eq!(out.status.code(), Some(3), "{name}: verify --json");
            let out = subvol(&["dump", "-f", f], "UTC", None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{name}: {err}");
            if dump_fails {
                assert_eq!(out.status.code(), Some(3), "{name}: dump: {err}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{name}: dump: {err}");
            }
            let out = subvol(&["dump", "--json", "-f", f], "UTC", None);
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        });
    }
}

#[test]
fn unknown_commands_dump_nothing() {
    let s = good_then(
        &[
            raw_cmd(99, &tlv(attr::PATH, b"x")),
            raw_cmd(0, b""),
            END.to_vec(),
        ]
        .concat(),
    );
    let out = subvol(&["dump"], "UTC", Some(&s));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "subvol          ./s                             uuid=01010101-0101-0101-0101-010101010101 transid=5\nmkfile          ./s/f\n"
    );
    let out = subvol(&["verify"], "UTC", Some(&s));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("5 commands")
    );
    let out = subvol(&["dump", "--json"], "UTC", Some(&s));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"command\":\"unknown\",\"cmd\":99"),
        "{text}"
    );
}
