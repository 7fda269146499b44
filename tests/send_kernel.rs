//! `subvol send` of btrfs subvolumes behaves as `btrfs send` (btrfs-progs 6.2): the same bytes
//! for `-c` without `-p` (the parent picked among the clone sources), for several subvolumes
//! (whole streams one after the other, or one stream with `-e`), and the same failures; `-f`
//! creates its file with mode 0600.

use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::tree::{bytes, run, write, write_at};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file system with a live subvolume `vol` and read-only snapshots s1, s2, s3 taken after
/// successive changes (so each is a sibling of the others and a snapshot of `vol`), plus `s2b`
/// (a snapshot of s2) and `lone` (a subvolume of its own).
struct Snapshots {
    fs: BtrfsFs,
}

impl Snapshots {
    fn new() -> Option<Snapshots> {
        let fs = BtrfsFs::new_or_skip()?;
        let vol = fs.path().join("vol");
        btrfs(&["subvolume", "create"], &[&vol]);
        write(&vol.join("big"), &bytes(1, 3 << 20));
        write(&vol.join("small"), b"one");
        fs::create_dir(vol.join("dir")).unwrap();
        let snap = |from: &Path, name: &str| {
            fs.sync();
            btrfs(
                &["subvolume", "snapshot", "-r"],
                &[from, &fs.path().join(name)],
            );
        };
        snap(&vol, "s1");
        write_at(&vol.join("big"), 1 << 20, &bytes(2, 64 << 10));
        fs::copy(vol.join("big"), vol.join("dir/copy")).unwrap();
        snap(&vol, "s2");
        fs::rename(vol.join("small"), vol.join("dir/moved")).unwrap();
        write(&vol.join("new"), &bytes(3, 200 << 10));
        snap(&vol, "s3");
        write(&vol.join("later"), b"after s3");
        fs.sync();
        snap(&fs.path().join("s2"), "s2b");
        let lone = fs.path().join("lone");
        btrfs(&["subvolume", "create"], &[&lone]);
        write(&lone.join("f"), b"lone");
        btrfs(
            &["property", "set", "-ts"],
            &[&lone, Path::new("ro"), Path::new("true")],
        );
        Some(Snapshots { fs })
    }

    fn p(&self, name: &str) -> PathBuf {
        self.fs.path().join(name)
    }

    /// The arguments with each `@name` replaced by that subvolume's path.
    fn args(&self, args: &[&str]) -> Vec<OsString> {
        args.iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => self.p(name).into_os_string(),
                None => OsString::from(a),
            })
            .collect()
    }
}

fn btrfs(args: &[&str], paths: &[&Path]) {
    run(Command::new("btrfs").arg("-q").args(args).args(paths));
}

/// `TOOL send ARGS -f OUT` with `TOOL` `btrfs` or subvol.
fn send(tool: &str, args: &[OsString], out: &Path) -> Output {
    let mut c = if tool == "btrfs" {
        Command::new("btrfs")
    } else {
        Command::new(crate::support::bin("subvol"))
    };
    c.arg("send").arg("-f").arg(out).args(args);
    c.output().unwrap()
}

/// Both tools succeed on ARGS and write the same bytes; returns them.
fn assert_same_stream(s: &Snapshots, args: &[&str]) -> Vec<u8> {
    let work = tempfile::tempdir().unwrap();
    let (theirs, ours) = (work.path().join("btrfs"), work.path().join("subvol"));
    let a = s.args(args);
    let o = send("btrfs", &a, &theirs);
    assert!(o.status.success(), "btrfs send {args:?}: {o:?}");
    let o = send("subvol", &a, &ours);
    assert!(o.status.success(), "subvol send {args:?}: {o:?}");
    let (theirs, ours) = (fs::read(theirs).unwrap(), fs::read(ours).unwrap());
    assert!(theirs.len() > 17, "btrfs send {args:?} wrote no stream");
    assert!(
        theirs == ours,
        "subvol send {args:?} differs from btrfs send: {} vs {} bytes",
        ours.len(),
        theirs.len()
    );
    ours
}

/// The stream headers (`btrfs-stream\0`) in `stream`: one per whole stream.
fn headers(stream: &[u8]) -> usize {
    stream
        .windows(13)
        .filter(|w| *w == b"btrfs-stream\0")
        .count()
}

/// The subvolumes `btrfs receive --dump` shows as received (SUBVOL/SNAPSHOT lines), in order,
/// with their parent UUIDs for snapshots. Only the first stream of a concatenation is dumped,
/// as progs does.
fn first_dump_line(stream: &[u8]) -> String {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("s");
    fs::write(&f, stream).unwrap();
    let o = run(Command::new("btrfs")
        .args(["receive", "--dump", "-f"])
        .arg(&f));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn clone_sources_without_parent_pick_the_parent_as_btrfs_send() {
    let Some(s) = Snapshots::new() else {
        return;
    };
    // A sibling snapshot is the parent: the stream is incremental (SNAPSHOT), not full.
    let one = assert_same_stream(&s, &["-c", "@s1", "@s2"]);
    assert!(
        first_dump_line(&one).starts_with("snapshot"),
        "{}",
        first_dump_line(&one)
    );
    // Of two siblings the one nearest the source's ctransid (s2) is picked, whatever the order.
    for args in [
        ["-c", "@s1", "-c", "@s2", "@s3"],
        ["-c", "@s2", "-c", "@s1", "@s3"],
    ] {
        assert_same_stream(&s, &args);
    }
    // The snapshot source itself when it is a clone source.
    assert_same_stream(&s, &["-c", "@s1", "-c", "@s2", "@s2b"]);
    // Protocol 2 and no data take the same path.
    assert_same_stream(&s, &["--proto", "2", "-c", "@s1", "@s3"]);
    assert_same_stream(&s, &["--no-data", "-c", "@s2", "@s3"]);
}

#[test]
fn no_parent_among_clone_sources_fails_as_btrfs_send() {
    let Some(s) = Snapshots::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    for args in [["-c", "@s1", "@lone"], ["-c", "@lone", "@s2"]] {
        let a = s.args(&args);
        let theirs = send("btrfs", &a, &work.path().join("btrfs"));
        assert!(!theirs.status.success(), "btrfs send {args:?} succeeded");
        let out = work.path().join("subvol");
        let ours = send("subvol", &a, &out);
        let err = String::from_utf8_lossy(&ours.stderr);
        assert_eq!(ours.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("no parent among the clone sources")
                && err.contains(&*a[2].to_string_lossy()),
            "{args:?}: {err}"
        );
        // Nothing is written on failure.
        assert!(!out.exists(), "{args:?}: output left behind");
    }
}

#[test]
fn several_subvolumes_as_btrfs_send() {
    let Some(s) = Snapshots::new() else {
        return;
    };
    // Whole streams one after the other: a header each.
    let full = assert_same_stream(&s, &["@s1", "@s2", "@s3"]);
    assert_eq!(headers(&full), 3);
    // All from the one parent.
    assert_eq!(
        headers(&assert_same_stream(&s, &["-p", "@s1", "@s2", "@s3"])),
        2
    );
    // Picked parents; each subvolume sent is a clone source for the next.
    let chain = assert_same_stream(&s, &["-c", "@s1", "@s2", "@s3"]);
    assert_eq!(headers(&chain), 2);
    // -e: one stream (one header, one END).
    let one = assert_same_stream(&s, &["-e", "@s1", "@s2"]);
    assert_eq!(headers(&one), 1);
    assert_same_stream(&s, &["-e", "-c", "@s1", "@s2", "@s3"]);

    // Both receivers make every subvolume of the concatenation.
    for (stream, names) in [(&full, &["s1", "s2", "s3"][..]), (&one, &["s1", "s2"][..])] {
        let work = tempfile::tempdir().unwrap();
        let f = work.path().join("stream");
        fs::write(&f, stream).unwrap();
        let dest = s.p(&format!("recv-{}", headers(stream)));
        fs::create_dir(&dest).unwrap();
        run(Command::new(crate::support::bin("subvol-recv"))
            .arg("-f")
            .arg(&f)
            .arg(&dest));
        for n in names {
            crate::support::tree::assert_same_tree(&s.p(n), &dest.join(n), "received");
        }
    }
}

#[test]
fn several_tree_sources_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    write(&a.join("f"), b"a");
    write(&b.join("f"), b"b");
    let out = work.path().join("out");
    let o = Command::new(crate::support::bin("subvol"))
        .arg("send")
        .arg("-f")
        .arg(&out)
        .args([&a, &b])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("several SOURCEs need btrfs subvolumes"));
    assert!(!out.exists());
}

/// `-f` creates the file with mode 0600, as btrfs send does (a file that exists keeps its mode).
#[test]
fn output_file_mode_is_that_of_btrfs_send() {
    let Some(s) = Snapshots::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = s.args(&["@s1"]);
    for tool in ["btrfs", "subvol"] {
        let new = work.path().join(format!("{tool}.new"));
        assert!(send(tool, &a, &new).status.success());
        let mode = fs::metadata(&new).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{tool} send -f: mode {mode:o}");
        let old = work.path().join(format!("{tool}.old"));
        fs::write(&old, b"x").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(send(tool, &a, &old).status.success());
        let mode = fs::metadata(&old).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode, 0o644,
            "{tool} send -f onto an existing file: mode {mode:o}"
        );
    }
}
