//! `subvol recv --dedup-from` on real loop-mounted btrfs: two trees with common files but no
//! common history share their common extents after the second is received with the first as a
//! seed; the received tree is always the source's; a seed changed after indexing, a symlink
//! out of a seed and a seed on another file system are handled.

use crate::support::bin;
use crate::support::btrfs_fixture::BtrfsFs;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use subvol::digest::{DigestOptions, digest_tree};

/// Deterministic pseudo-random bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Files both trees hold (path in A, path in B, contents).
fn common() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("lib/big", "usr/lib/big", data(1, 3 * 1024 * 1024 + 777)),
        ("lib/mid", "usr/lib/mid", data(2, 256 * 1024)),
        ("share/small", "share/small", data(3, 5000)),
        ("share/aligned", "x/aligned", data(4, 64 * 1024)),
        ("bin/tool", "bin/tool", data(5, 700 * 1024 + 1)),
    ]
}

fn write_file(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Two source trees (plain directories) with the common files and some of their own.
fn make_sources(top: &Path) -> (PathBuf, PathBuf, u64) {
    let (a, b) = (top.join("src-a/treea"), top.join("src-b/treeb"));
    let mut common_bytes = 0;
    for (pa, pb, bytes) in common() {
        write_file(&a, pa, &bytes);
        write_file(&b, pb, &bytes);
        common_bytes += bytes.len() as u64;
    }
    write_file(&a, "only-a", &data(10, 300 * 1024));
    write_file(&b, "only-b", &data(11, 200 * 1024 + 5));
    // A file that shares its first half with a common one, then differs.
    let mut half = data(2, 128 * 1024);
    half.extend_from_slice(&data(12, 100 * 1024));
    write_file(&b, "half", &half);
    (a, b, common_bytes)
}

fn send(src: &Path, out: &Path) {
    let o = Command::new(bin("subvol"))
        .arg("send")
        .arg(src)
        .arg("-f")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "send {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn recv(stream: &Path, dest: &Path, extra: &[&Path]) -> Output {
    let mut c = Command::new(bin("subvol"));
    c.arg("recv").arg("-v").arg("-f").arg(stream);
    for s in extra {
        c.arg("--dedup-from").arg(s);
    }
    c.arg(dest).output().unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "recv failed ({:?}): {err}",
        o.status.code()
    );
    err
}

fn assert_same_tree(a: &Path, b: &Path) {
    let opts = DigestOptions::default();
    let (da, db) = (
        digest_tree(a, &opts).unwrap(),
        digest_tree(b, &opts).unwrap(),
    );
    assert!(
        da.sha256 == db.sha256,
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        da.diff(&db, 40)
    );
}

/// The bytes `subvol recv` reports as cloned from seeds.
fn cloned(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("dedup: "))
        .unwrap_or_else(|| panic!("no dedup line in: {stderr}"));
    line["dedup: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad dedup line: {line}"))
}

/// Total, exclusive and shared bytes of `btrfs filesystem du -s --raw`.
fn du(p: &Path) -> (u64, u64, u64) {
    let _ = Command::new("sync").arg("-f").arg(p).status();
    let out = Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let n: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(|f| f.parse().unwrap_or_else(|_| panic!("btrfs fi du: {text}")))
        .collect();
    assert_eq!(n.len(), 3, "btrfs fi du: {text}");
    (n[0], n[1], n[2])
}

struct Setup {
    fs: BtrfsFs,
    a: PathBuf,
    b: PathBuf,
    common_bytes: u64,
    stream_a: PathBuf,
    stream_b: PathBuf,
    pool: PathBuf,
}

fn setup() -> Option<Setup> {
    let fs = BtrfsFs::new_or_skip()?;
    let top = fs.path().to_path_buf();
    let (a, b, common_bytes) = make_sources(&top.join("sources"));
    let (stream_a, stream_b) = (top.join("a.stream"), top.join("b.stream"));
    send(&a, &stream_a);
    send(&b, &stream_b);
    let pool = top.join("pool");
    fs::create_dir(&pool).unwrap();
    Some(Setup {
        fs,
        a,
        b,
        common_bytes,
        stream_a,
        stream_b,
        pool,
    })
}

#[test]
fn unrelated_trees_share_their_common_data() {
    let Some(s) = setup() else { return };
    ok(&recv(&s.stream_a, &s.pool, &[]));
    let got_a = s.pool.join("treea");
    assert_same_tree(&s.a, &got_a);
    let err = ok(&recv(&s.stream_b, &s.pool, &[&got_a]));
    let got_b = s.pool.join("treeb");
    assert_same_tree(&s.b, &got_b);
    assert!(err.contains("indexed 6 seed files"), "{err}");
    // The common files ("half" shares lib/mid's start, but the sender already made that a
    // CLONE within the stream).
    let cloned = cloned(&err);
    assert!(
        cloned >= s.common_bytes,
        "cloned {cloned} of {} common bytes: {err}",
        s.common_bytes
    );
    let (total, exclusive, _) = du(&got_b);
    let shared = total - exclusive;
    assert!(
        shared * 100 >= s.common_bytes * 95,
        "{shared} bytes shared of {} common (total {total}, exclusive {exclusive})",
        s.common_bytes
    );
    // Without a seed only the stream's own CLONE (of "half") is shared.
    let plain = s.fs.path().join("plain");
    fs::create_dir(&plain).unwrap();
    ok(&recv(&s.stream_b, &plain, &[]));
    let (total, exclusive, _) = du(&plain.join("treeb"));
    assert!(
        (total - exclusive) * 10 < s.common_bytes,
        "{total} {exclusive}"
    );
}

#[test]
fn a_seed_changed_after_indexing_is_written_not_cloned() {
    let Some(s) = setup() else { return };
    // A writable seed: a plain copy of tree A on the same mount.
    let seed = s.fs.path().join("seed");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&s.a)
        .arg(&seed)
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = Command::new(bin("subvol"))
        .args(["recv", "-v", "--dedup-from"])
        .arg(&seed)
        .arg(&s.pool)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The index is built before the first byte of input is needed.
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no index: {seen}");
        seen.push_str(&line);
        if line.starts_with("indexed ") {
            break;
        }
    }
    // Overwrite a common file in place (same inode, same size, other bytes).
    let big = seed.join("lib/big");
    let len = fs::metadata(&big).unwrap().len() as usize;
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .write_all(&data(99, len))
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&fs::read(&s.stream_b).unwrap()).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    assert_same_tree(&s.b, &s.pool.join("treeb"));
    let cloned = cloned(&seen);
    let big_len = common()[0].2.len() as u64;
    assert!(
        cloned <= s.common_bytes - big_len,
        "cloned {cloned}: {seen}"
    );
    assert!(cloned > 0, "{seen}");
    assert!(seen.contains("differed from the stream"), "{seen}");
}

#[test]
fn symlinks_out_of_a_seed_are_not_followed() {
    let Some(s) = setup() else { return };
    ok(&recv(&s.stream_a, &s.pool, &[]));
    let seed = s.fs.path().join("links");
    fs::create_dir(&seed).unwrap();
    std::os::unix::fs::symlink(s.pool.join("treea"), seed.join("dir")).unwrap();
    std::os::unix::fs::symlink(s.pool.join("treea/lib/big"), seed.join("file")).unwrap();
    let err = ok(&recv(&s.stream_b, &s.pool, &[&seed]));
    assert_same_tree(&s.b, &s.pool.join("treeb"));
    assert!(err.contains("indexed 0 seed files"), "{err}");
    assert_eq!(cloned(&err), 0, "{err}");
}

#[test]
fn a_seed_on_another_file_system_is_refused_before_receiving() {
    let Some(s) = setup() else { return };
    let other = tempfile::tempdir().unwrap();
    let o = recv(&s.stream_b, &s.pool, &[other.path()]);
    let err = String::from_utf8_lossy(&o.stderr);
    // Exit code 6: a host fault (as DEST not on btrfs).
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains("is not on the btrfs file system of") || err.contains("another mount"),
        "{err}"
    );
    assert!(err.contains(&other.path().display().to_string()), "{err}");
    assert_eq!(fs::read_dir(&s.pool).unwrap().count(), 0);
}

/// Unmounts a bind mount on drop.
struct Bind(PathBuf);

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_seed_on_another_mount_of_the_same_file_system_is_refused() {
    let Some(s) = setup() else { return };
    // The same file system seen through a bind mount: the kernel refuses clones across mounts.
    let target = s.fs.path().join("bind");
    fs::create_dir(&target).unwrap();
    let st = Command::new("mount")
        .arg("--bind")
        .arg(s.fs.path().join("sources"))
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success(), "mount --bind");
    let _bind = Bind(target.clone());
    let o = recv(&s.stream_b, &s.pool, &[&target]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("is on another mount than"), "{err}");
    assert_eq!(fs::read_dir(&s.pool).unwrap().count(), 0);
}

/// Issue 12: `subvol recv` into a pool (a directory with `.subvol`) needs no seed: each
/// received subvolume joins the pool's content index, and the next receive dedups against it.
#[test]
fn receives_into_a_pool_index_and_dedup_without_seeds() {
    let Some(s) = setup() else { return };
    fs::create_dir(s.pool.join(".subvol")).unwrap();
    ok(&recv(&s.stream_a, &s.pool, &[]));
    let idx: Vec<_> = fs::read_dir(s.pool.join(".subvol/content"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(idx.len(), 1, "{idx:?}");
    assert!(idx[0].ends_with(".idx"), "{idx:?}");
    let err = ok(&recv(&s.stream_b, &s.pool, &[]));
    let got_b = s.pool.join("treeb");
    assert_same_tree(&s.b, &got_b);
    let cloned = cloned(&err);
    assert!(cloned >= s.common_bytes, "cloned {cloned}: {err}");
    let (total, exclusive, _) = du(&got_b);
    assert!(
        (total - exclusive) * 100 >= s.common_bytes * 95,
        "{total} {exclusive} of {}",
        s.common_bytes
    );
    assert_eq!(
        fs::read_dir(s.pool.join(".subvol/content"))
            .unwrap()
            .count(),
        2
    );
}
