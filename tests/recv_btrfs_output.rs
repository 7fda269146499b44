//! `subvol-recv` prints what `btrfs receive` (btrfs-progs 6.2) prints: the same `-v`/`-vv`
//! trace lines on the same streams, errors as `ERROR: ...` lines on stderr; `subvol recv` keeps
//! its own style. Exit codes are subvol's documented ones (progs exits 1 for every failure).

use crate::support::bin;
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::tree::{bytes, run, setxattr, write, write_at};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn btrfs(args: &[&str], paths: &[&Path]) {
    run(Command::new("btrfs").arg("-q").args(args).args(paths));
}

/// A full and an incremental kernel stream of a small tree whose names and xattr values are
/// plain text (progs prints them raw, subvol escapes control characters: the same for these),
/// exercising every command a tree of this kind makes.
fn small_streams(work: &Path) -> Option<(PathBuf, PathBuf)> {
    let src = BtrfsFs::new_or_skip()?;
    let vol = src.path().join("vol");
    btrfs(&["subvolume", "create"], &[&vol]);
    write(&vol.join("file"), &bytes(1, 300 << 10));
    write(&vol.join("small"), b"hello");
    setxattr(&vol.join("small"), "user.note", b"plain text");
    fs::create_dir_all(vol.join("dir/sub")).unwrap();
    symlink("../file", vol.join("dir/link")).unwrap();
    fs::hard_link(vol.join("small"), vol.join("dir/hard")).unwrap();
    run(Command::new("mkfifo").arg(vol.join("fifo")));
    run(Command::new("mknod")
        .arg(vol.join("null"))
        .args(["c", "1", "3"]));
    run(Command::new("chown")
        .arg("1234:5678")
        .arg(vol.join("small")));
    run(Command::new("chmod").arg("0640").arg(vol.join("small")));
    let snap = |name: &str| {
        src.sync();
        let p = src.path().join(name);
        btrfs(&["subvolume", "snapshot", "-r"], &[&vol, &p]);
        p
    };
    let s1 = snap("snap1");
    // Changes: a clone, an overwrite, a truncate, a rename, removals, xattr changes.
    run(Command::new("cp")
        .arg("--reflink=always")
        .arg(vol.join("file"))
        .arg(vol.join("dir/copy")));
    write_at(&vol.join("file"), 4096, &bytes(2, 8192));
    fs::OpenOptions::new()
        .write(true)
        .open(vol.join("small"))
        .unwrap()
        .set_len(2)
        .unwrap();
    fs::rename(vol.join("dir/sub"), vol.join("moved")).unwrap();
    fs::remove_file(vol.join("fifo")).unwrap();
    fs::remove_file(vol.join("dir/hard")).unwrap();
    setxattr(&vol.join("small"), "user.other", b"x");
    run(Command::new("setfattr")
        .args(["-x", "user.note"])
        .arg(vol.join("small")));
    let s2 = snap("snap2");
    let (full, incr) = (work.join("full"), work.join("incr"));
    run(Command::new("btrfs")
        .args(["-q", "send", "-f"])
        .arg(&full)
        .arg(&s1));
    run(Command::new("btrfs")
        .args(["-q", "send", "-f"])
        .arg(&incr)
        .arg("-p")
        .arg(&s1)
        .arg(&s2));
    Some((full, incr))
}

/// `TOOL [receive] ARGS -f STREAM DEST`.
fn receive(tool: &str, args: &[&str], stream: &Path, dest: &Path) -> Output {
    let mut c = if tool == "btrfs" {
        let mut c = Command::new("btrfs");
        c.arg("receive");
        c
    } else if tool == "subvol" {
        let mut c = Command::new(bin("subvol"));
        c.arg("recv");
        c
    } else {
        Command::new(bin("subvol-recv"))
    };
    c.args(args)
        .arg("-f")
        .arg(stream)
        .arg(dest)
        .output()
        .unwrap()
}

fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(b)
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn verbose_traces_are_those_of_btrfs_receive() {
    let work = tempfile::tempdir().unwrap();
    let Some((full, incr)) = small_streams(work.path()) else {
        return;
    };
    for verbosity in [&[][..], &["-v"][..], &["-vv"][..], &["-q"][..]] {
        let Some(theirs) = BtrfsFs::new_or_skip() else {
            return;
        };
        let Some(ours) = BtrfsFs::new_or_skip() else {
            return;
        };
        for stream in [&full, &incr] {
            let t = receive("btrfs", verbosity, stream, theirs.path());
            assert!(t.status.success(), "btrfs receive {verbosity:?}: {t:?}");
            let o = receive("subvol-recv", verbosity, stream, ours.path());
            assert!(o.status.success(), "subvol-recv {verbosity:?}: {o:?}");
            let (te, oe) = (sorted_lines(&t.stderr), sorted_lines(&o.stderr));
            if verbosity == ["-vv"] {
                // Every command has a line at -vv: the check is not vacuous.
                assert!(te.len() > 20, "{te:#?}");
            }
            let missing: Vec<_> = te.iter().filter(|l| !oe.contains(l)).collect();
            let extra: Vec<_> = oe.iter().filter(|l| !te.contains(l)).collect();
            assert!(
                te == oe,
                "{verbosity:?} {}: stderr lines differ\nonly btrfs receive: {missing:#?}\nonly subvol-recv: {extra:#?}",
                stream.display()
            );
            assert_eq!(
                String::from_utf8_lossy(&t.stdout),
                String::from_utf8_lossy(&o.stdout),
                "{verbosity:?}: stdout"
            );
        }
    }
}

/// A stream with one byte changed in a command (a CRC mismatch): `subvol-recv` fails with an
/// `ERROR: ` line as btrfs receive does (with subvol's detail: where and why), exit code 3;
/// `subvol recv` keeps `subvol: error:`.
#[test]
fn errors_are_error_lines_as_btrfs_receive_prints_them() {
    let work = tempfile::tempdir().unwrap();
    let Some((full, _)) = small_streams(work.path()) else {
        return;
    };
    let mut bad = fs::read(&full).unwrap();
    let at = bad.len() / 2;
    bad[at] ^= 0x55;
    let corrupt = work.path().join("corrupt");
    fs::write(&corrupt, &bad).unwrap();
    let Some(dest) = BtrfsFs::new_or_skip() else {
        return;
    };
    let t = receive("btrfs", &[], &corrupt, dest.path());
    assert_eq!(t.status.code(), Some(1));
    let theirs = String::from_utf8_lossy(&t.stderr);
    assert!(theirs.lines().any(|l| l.starts_with("ERROR: ")), "{theirs}");

    let dest = dest.path().join("ours");
    fs::create_dir(&dest).unwrap();
    let o = receive("subvol-recv", &[], &corrupt, &dest);
    let ours = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{ours}");
    let last = ours.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ERROR: ") && last.contains("crc32c mismatch") && last.contains("at byte"),
        "{ours}"
    );
    assert!(o.stdout.is_empty());
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing committed");

    let o = receive("subvol", &[], &corrupt, &dest);
    let own = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{own}");
    assert!(
        own.lines()
            .last()
            .unwrap_or_default()
            .starts_with("subvol: error: ")
            && !own.contains("ERROR: "),
        "{own}"
    );
}

/// Exit codes: 0 on success, and subvol's documented non-zero codes where progs exits 1.
#[test]
fn exit_codes() {
    let work = tempfile::tempdir().unwrap();
    let Some((full, incr)) = small_streams(work.path()) else {
        return;
    };
    let Some(dest) = BtrfsFs::new_or_skip() else {
        return;
    };
    // Truncated: an invalid stream (3).
    let data = fs::read(&full).unwrap();
    let cut = work.path().join("cut");
    fs::write(&cut, &data[..data.len() - 7]).unwrap();
    // Incremental without its parent on the receiving side: a plain failure (1), as progs.
    // Missing input file: an I/O error (6).
    let missing = work.path().join("missing");
    for (stream, code) in [(&cut, 3), (&incr, 1), (&missing, 6), (&full, 0)] {
        let o = receive("subvol-recv", &[], stream, dest.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{}: {err}", stream.display());
        if code != 0 {
            assert!(
                err.lines()
                    .last()
                    .unwrap_or_default()
                    .starts_with("ERROR: "),
                "{err}"
            );
        }
    }
}

// ---------- -E N ----------

/// SUBVOL s; f written; two UNLINKs of files that do not exist (each fails with ENOENT, an OS
/// error, as it does for btrfs receive); g written; END.
fn stream_with_two_failing_commands() -> Vec<u8> {
    use subvol::stream::{Builder, Uuid, Writer, attr, cmd, end_command};
    let b = |c: u16| Builder::new(c, 1);
    let cmds = [
        b(cmd::SUBVOL)
            .bytes(attr::PATH, b"s")
            .uuid(attr::UUID, &Uuid([0x4e; 16]))
            .u64(attr::CTRANSID, 7),
        b(cmd::MKFILE).bytes(attr::PATH, b"f").u64(attr::INO, 257),
        b(cmd::WRITE)
            .bytes(attr::PATH, b"f")
            .u64(attr::FILE_OFFSET, 0)
            .data(b"first"),
        b(cmd::UNLINK).bytes(attr::PATH, b"missing1"),
        b(cmd::UNLINK).bytes(attr::PATH, b"missing2"),
        b(cmd::MKFILE).bytes(attr::PATH, b"g").u64(attr::INO, 258),
        b(cmd::WRITE)
            .bytes(attr::PATH, b"g")
            .u64(attr::FILE_OFFSET, 0)
            .data(b"second"),
    ];
    let mut w = Writer::new(Vec::new());
    w.write_header(1).unwrap();
    for c in cmds {
        w.write_command(&c.build().unwrap()).unwrap();
    }
    w.write_command(&end_command(1)).unwrap();
    w.into_inner()
}

fn error_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("ERROR: "))
        .map(str::to_owned)
        .collect()
}

/// `-E N` goes past failed commands as btrfs receive does (each reported as an `ERROR: ` line),
/// but commits nothing unless `--keep-incomplete`; then the subvolume is what btrfs receive
/// leaves.
#[test]
fn max_errors_goes_past_failed_commands_and_commits_nothing_unless_asked() {
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let stream = work.path().join("stream");
    fs::write(&stream, stream_with_two_failing_commands()).unwrap();
    let dest = |name: &str| {
        let d = fs_.path().join(name);
        fs::create_dir(&d).unwrap();
        d
    };
    // (arguments, skipped errors reported, final error contains)
    let cases: [(&[&str], usize, &str); 4] = [
        (&[], 0, "command 3 (unlink) at byte"),
        (&["-E", "2"], 1, "command 4 (unlink) at byte"),
        (
            &["-E", "3"],
            2,
            "2 command(s) failed and were skipped; nothing was committed",
        ),
        (
            &["-E", "0"],
            2,
            "2 command(s) failed and were skipped; nothing was committed",
        ),
    ];
    for (i, (args, skipped, last)) in cases.into_iter().enumerate() {
        let d = dest(&format!("d{i}"));
        let o = receive("subvol-recv", args, &stream, &d);
        let errors = error_lines(&o);
        assert_eq!(o.status.code(), Some(6), "{args:?}: {errors:?}");
        assert_eq!(errors.len(), skipped + 1, "{args:?}: {errors:?}");
        assert!(
            errors[errors.len() - 1].contains(last),
            "{args:?}: {errors:?}"
        );
        for e in &errors[..skipped] {
            assert!(e.contains("(unlink)") && e.contains("missing"), "{e}");
        }
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            0,
            "{args:?}: left something"
        );
    }

    // --keep-incomplete: btrfs receive's result, still a failure.
    let theirs = dest("theirs");
    let t = receive("btrfs", &["-E", "0"], &stream, &theirs);
    assert_eq!(t.status.code(), Some(1), "{t:?}");
    assert_eq!(error_lines(&t).len(), 2, "{t:?}");
    let ours = dest("ours");
    let o = receive(
        "subvol-recv",
        &["-E", "0", "--keep-incomplete"],
        &stream,
        &ours,
    );
    let errors = error_lines(&o);
    assert_eq!(o.status.code(), Some(6), "{errors:?}");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[2].contains("committed anyway"), "{errors:?}");
    for f in ["f", "g"] {
        assert_eq!(
            fs::read(ours.join("s").join(f)).unwrap(),
            fs::read(theirs.join("s").join(f)).unwrap()
        );
    }
    let show = run(Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(ours.join("s")));
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("readonly"), "{show}");
    assert!(
        show.contains("4e4e4e4e-4e4e-4e4e-4e4e-4e4e4e4e4e4e"),
        "{show}"
    );

    // `subvol recv` reports skipped commands in its own style.
    let d = dest("own");
    let o = receive("subvol", &["-E", "0"], &stream, &d);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert_eq!(err.matches("subvol: error: ").count(), 3, "{err}");
}
