//! Tests: cli. `subvol dump` and `subvol verify` as a user runs them: output, exit codes and
//! messages, on the committed kernel streams and on malformed input.

use crate::support::bin;
use crate::support::btrfs_fixture::{find_tool, skip_or_panic};
use std::io::Write;
use std::path::{Path, PathBuf};
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

// ---------------------------------------------------------------------------------------------
// Issue 11: output files survive failures; every failure is one line naming the file and the
// reason, with the documented exit code and no side effect; human output escapes names.

/// Every entry of `dir` (hidden ones included) with its content and mode: what must not change
/// when a command fails.
fn listing(dir: &Path) -> std::collections::BTreeMap<std::ffi::OsString, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let content = if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name(), (content, meta.permissions().mode()))
        })
        .collect()
}

fn run_subvol(args: &[&std::ffi::OsStr], stdin: Option<&Path>) -> Output {
    Command::new(bin("subvol"))
        .args(args)
        .stdin(stdin.map_or_else(Stdio::null, |p| {
            Stdio::from(std::fs::File::open(p).unwrap())
        }))
        .output()
        .unwrap()
}

/// Runs `subvol ARGS`, expects exit `code` and one line of stderr containing `needle`, and no
/// change in `dir`.
fn fails_cleanly(
    dir: &Path,
    args: &[&std::ffi::OsStr],
    stdin: Option<&Path>,
    code: i32,
    needle: &str,
) {
    let before = listing(dir);
    let o = run_subvol(args, stdin);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(listing(dir) == before, "{args:?} changed {}", dir.display());
}

fn os<'a>(v: &'a [&'a dyn AsRef<std::ffi::OsStr>]) -> Vec<&'a std::ffi::OsStr> {
    v.iter().map(|s| s.as_ref()).collect()
}

fn cli_keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let sk = dir.join("k");
    let o = run_subvol(&os(&[&"keygen", &"-o", &sk]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (sk.clone(), dir.join("k.pub"))
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn failed_sign_and_send_leave_their_output_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (sk, pk) = cli_keygen(d);
    let plain = d.join("plain.stream");
    std::fs::write(&plain, good_stream()).unwrap();
    let bad = d.join("bad.stream");
    std::fs::write(&bad, b"not a send stream").unwrap();
    let x = d.join("x");
    std::fs::write(&x, good_stream()).unwrap();
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a"), b"a").unwrap();
    let missing = d.join("missing");

    // The output is the input: refused, by name or on stdin.
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-f", &x, &"-o", &x]),
        None,
        1,
        "is also the input",
    );
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-o", &x]),
        Some(&x),
        1,
        "is also the input",
    );
    // A bad input: exit 3, the existing output untouched (not removed, no temporary left).
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-f", &bad, &"-o", &x]),
        None,
        3,
        "bad magic",
    );
    // A missing SOURCE or parent: the existing output is not truncated.
    fails_cleanly(
        d,
        &os(&[&"send", &"-f", &x, &missing]),
        None,
        6,
        &format!("open {}: No such file", missing.display()),
    );
    fails_cleanly(
        d,
        &os(&[&"send", &"-f", &x, &"-p", &missing, &tree]),
        None,
        6,
        &format!("open {}", missing.display()),
    );
    fails_cleanly(
        d,
        &os(&[&"send", &"-f", &x, &"--sign", &pk, &tree]),
        None,
        4,
        "is a public key",
    );

    // Success: new files are 0600 as btrfs send makes them; a replaced file keeps its mode.
    let signed = d.join("signed");
    let o = run_subvol(
        &os(&[&"sign", &"--key", &sk, &"-f", &plain, &"-o", &signed]),
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode_of(&signed), 0o600);
    let o = run_subvol(&os(&[&"verify", &"--key", &pk, &"-f", &signed]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sent = d.join("sent");
    let o = run_subvol(&os(&[&"send", &"-f", &sent, &tree]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode_of(&sent), 0o600);
    std::fs::set_permissions(&x, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let o = run_subvol(&os(&[&"send", &"-f", &x, &tree]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&x).unwrap(), std::fs::read(&sent).unwrap());
    assert_eq!(mode_of(&x), 0o640);
    // A device is written in place, never replaced.
    let o = run_subvol(
        &os(&[&"sign", &"--key", &sk, &"-f", &plain, &"-o", &"/dev/null"]),
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &std::fs::metadata("/dev/null").unwrap().file_type()
    ));
    // No temporary file is left anywhere.
    let names: Vec<_> = listing(d).into_keys().collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().starts_with('.')),
        "{names:?}"
    );
}

#[test]
fn keygen_never_overwrites_either_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let k = d.join("k");
    std::fs::write(d.join("k.pub"), b"someone else's file\n").unwrap();
    fails_cleanly(d, &os(&[&"keygen", &"-o", &k]), None, 1, "already exists");
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let (sk, _) = cli_keygen(&sub);
    fails_cleanly(
        &d.join("sub"),
        &os(&[&"keygen", &"-o", &sk]),
        None,
        1,
        "already exists",
    );
    fails_cleanly(d, &os(&[&"keygen", &"-o", &d]), None, 1, "already exists");
}

#[test]
fn failures_are_one_line_naming_the_file_with_the_documented_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (sk, pk) = cli_keygen(d);
    let plain = d.join("plain.stream");
    std::fs::write(&plain, good_stream()).unwrap();
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let malformed = d.join("malformed.key");
    std::fs::write(&malformed, b"garbage\n").unwrap();
    std::fs::set_permissions(
        &malformed,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let missing = d.join("missing.key");
    let dir_is = format!("open {}: Is a directory", tree.display());
    let create_dir_is = format!("create {}: Is a directory", tree.display());

    // -f DIR names the file.
    fails_cleanly(d, &os(&[&"dump", &"-f", &tree]), None, 6, &dir_is);
    fails_cleanly(d, &os(&[&"verify", &"-f", &tree]), None, 6, &dir_is);
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-f", &tree]),
        None,
        6,
        &dir_is,
    );
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-f", &plain, &"-o", &tree]),
        None,
        6,
        &create_dir_is,
    );
    fails_cleanly(
        d,
        &os(&[&"send", &"-f", &tree, &tree]),
        None,
        6,
        &create_dir_is,
    );
    fails_cleanly(
        d,
        &os(&[&"verify", &"--key", &tree, &"-f", &plain]),
        None,
        6,
        &format!("key file {}: Is a directory", tree.display()),
    );

    // A public key where a secret key is needed: said so, exit 4 (a key check failed).
    let public = format!("{} is a public key; a secret key is needed", pk.display());
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &pk, &"-f", &plain]),
        None,
        4,
        &public,
    );
    fails_cleanly(
        d,
        &os(&[&"send", &"--sign", &pk, &"-f", &d.join("out"), &tree]),
        None,
        4,
        &public,
    );
    // A malformed key file: exit 4, naming it.
    let named = format!("key file {}", malformed.display());
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &malformed, &"-f", &plain]),
        None,
        4,
        &named,
    );
    fails_cleanly(
        d,
        &os(&[&"verify", &"--key", &malformed, &"-f", &plain]),
        None,
        4,
        &named,
    );
    // A world-readable secret key: exit 4.
    std::fs::set_permissions(&sk, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &sk, &"-f", &plain]),
        None,
        4,
        "too open",
    );
    // A missing key file: an I/O error naming it.
    fails_cleanly(
        d,
        &os(&[&"sign", &"--key", &missing, &"-f", &plain]),
        None,
        6,
        &format!("key file {}: No such file", missing.display()),
    );
    // A missing input.
    fails_cleanly(
        d,
        &os(&[&"dump", &"-f", &missing]),
        None,
        6,
        &format!("open {}: No such file", missing.display()),
    );
    // list/show/delete/snapshot of a missing path: missing, not "not on btrfs".
    let gone = format!("open {}: No such file", missing.display());
    for cmd in ["list", "show", "delete"] {
        fails_cleanly(d, &os(&[&cmd, &missing]), None, 6, &gone);
    }
    fails_cleanly(
        d,
        &os(&[&"snapshot", &missing, &d.join("snap")]),
        None,
        6,
        &gone,
    );
    // DEST that is no directory, or missing: named before the stream is read.
    fails_cleanly(
        d,
        &os(&[&"recv", &"-f", &plain, &plain]),
        None,
        6,
        &format!("receive into {}: Not a directory", plain.display()),
    );
    fails_cleanly(
        d,
        &os(&[&"recv", &"-f", &plain, &missing]),
        None,
        6,
        &format!("receive into {}: No such file", missing.display()),
    );
}

#[test]
fn receive_onto_a_read_only_mount_names_dest() {
    let Some(fs) = crate::support::btrfs_fixture::BtrfsFs::new_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.stream");
    std::fs::write(&plain, good_stream()).unwrap();
    let remount = |how: &str| {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(fs.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    remount("ro");
    let needle = format!(
        "receive into {}: Read-only file system",
        fs.path().display()
    );
    for binary in ["subvol", "subvol-recv"] {
        let mut c = Command::new(bin(binary));
        if binary == "subvol" {
            c.arg("recv");
        }
        let o = c.arg("-f").arg(&plain).arg(fs.path()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(6), "{binary}: {err}");
        assert!(err.contains(&needle), "{binary}: {err:?} lacks {needle:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    remount("rw");
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

#[test]
fn list_show_and_snapshot_escape_names_but_json_keeps_them() {
    use std::os::unix::ffi::OsStrExt;
    let Some(fs) = crate::support::btrfs_fixture::BtrfsFs::new_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.stream");
    std::fs::write(&plain, good_stream()).unwrap();
    let o = run_subvol(&os(&[&"recv", &"-f", &plain, &fs.path()]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hostile = b"x\x1b]0;owned\x07\x1b[2J\ny";
    let escaped = "x\\033]0;owned\\007\\033[2J\\012y";
    let snap = fs.path().join(std::ffi::OsStr::from_bytes(hostile));
    let base = fs.path().join("s");
    let clean = |what: &str, o: &Output| -> String {
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8(o.stdout.clone()).unwrap();
        assert!(
            !text.bytes().any(|b| b.is_ascii_control() && b != b'\n'),
            "{what}: control characters in {text:?}"
        );
        assert!(text.contains(escaped), "{what}: {text:?} lacks {escaped:?}");
        text
    };
    clean(
        "snapshot",
        &run_subvol(&os(&[&"snapshot", &base, &snap]), None),
    );
    let text = clean("list", &run_subvol(&os(&[&"list", &fs.path()]), None));
    assert_eq!(text.lines().count(), 3, "{text}");
    clean("show", &run_subvol(&os(&[&"show", &base]), None));
    clean("show", &run_subvol(&os(&[&"show", &snap]), None));
    // JSON escapes by itself and stays exact.
    let o = run_subvol(&os(&[&"list", &"--json", &fs.path()]), None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&std::str::from_utf8(hostile).unwrap()),
        "{names:?}"
    );
    // Errors too: one line, escaped.
    let missing = fs.path().join(std::ffi::OsStr::from_bytes(b"gone\x1b[2J"));
    let o = run_subvol(&os(&[&"delete", &missing]), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("gone\\033[2J"), "{err:?}");
}

/// `--format progs-6.10` (and `subvol-recv --dump --dump-format progs-6.10`) prints xattrs as
/// btrfs-progs 6.9.1+ does; the default stays 6.2's text; --format and --json exclude each
/// other.
#[test]
fn dump_format_selects_the_progs_release() {
    let xattr = Builder::new(cmd::SET_XATTR, 2)
        .bytes(attr::PATH, b"f")
        .bytes(attr::XATTR_NAME, b"user.a b")
        .bytes(attr::XATTR_DATA, b"x\ny")
        .build()
        .unwrap();
    let mut w = Writer::new(Vec::new());
    w.write_command(&xattr).unwrap();
    let stream = good_then(&[w.into_inner(), END.to_vec()].concat());
    let line = |out: &Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout.clone())
            .unwrap()
            .split_once("set_xattr")
            .map(|(_, l)| format!("set_xattr{l}"))
            .unwrap()
    };
    let old = "set_xattr       ./s/f                           name=user.a b data=x\ny len=3\n";
    let new = "set_xattr       ./s/f                           name=user.a\\ b x\\ny len=3\n";
    with_file(&stream, |f| {
        assert_eq!(line(&subvol(&["dump", "-f", f], "UTC", None)), old);
        let out = subvol(&["dump", "--format", "progs-6.2", "-f", f], "UTC", None);
        assert_eq!(line(&out), old);
        let out = subvol(&["dump", "--format", "progs-6.10", "-f", f], "UTC", None);
        assert_eq!(line(&out), new);
        let out = subvol(&["dump", "--format=progs-6.9.1", "-f", f], "UTC", None);
        assert_eq!(line(&out), new);
        let out = Command::new(bin("subvol-recv"))
            .args(["--dump", "--dump-format", "progs-6.10", "-f", f])
            .output()
            .unwrap();
        assert_eq!(line(&out), new);
        let out = subvol(
            &["dump", "--json", "--format", "progs-6.10", "-f", f],
            "UTC",
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    });
}
