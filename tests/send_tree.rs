//! `subvol send`: tree streams (full and incremental) received by stock `btrfs receive` (and by
//! `subvol recv` once it is implemented) must reproduce the source trees exactly, by tree
//! digest (contents, holes, xattrs, hard-link groups, modes, owners, mtimes incl. the root);
//! kernel sends must be byte-identical to `btrfs send`.

use crate::support::btrfs_fixture::{BtrfsFs, FsOptions};
use crate::support::tree::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Sends full(OLD) and incr(OLD→NEW), receives both with `btrfs receive` (and `subvol recv`
/// when available) on a fresh btrfs, and compares digests with the sources.
fn roundtrip(old: &Path, new: &Path, protos: &[u32]) {
    roundtrip_with(old, new, protos, &mut |_| {});
}

/// What one protocol's round trip made, for extra checks.
struct Received<'a> {
    proto: u32,
    fs: &'a BtrfsFs,
    full: &'a Path,
    incr: &'a Path,
    /// `btrfs receive`'s OLD and NEW subvolumes.
    stock_old: PathBuf,
    stock_new: PathBuf,
    /// `subvol recv`'s, when it is implemented.
    ours: Option<(PathBuf, PathBuf)>,
}

/// [`roundtrip`], then `check` for each protocol.
fn roundtrip_with(old: &Path, new: &Path, protos: &[u32], check: &mut dyn FnMut(&Received<'_>)) {
    let Some(fs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let old_name = old.file_name().unwrap();
    let new_name = new.file_name().unwrap();
    for &proto in protos {
        let full = work.path().join(format!("full-v{proto}.stream"));
        let incr = work.path().join(format!("incr-v{proto}.stream"));
        send_full(old, proto, &full);
        send_incr(old, new, proto, &incr);

        let dest = fs.path().join(format!("stock-v{proto}"));
        fs::create_dir(&dest).unwrap();
        btrfs_receive(&full, &dest);
        assert_same_tree(
            old,
            &dest.join(old_name),
            &format!("btrfs receive of full v{proto}"),
        );
        btrfs_receive(&incr, &dest);
        if std::env::var_os("SEND_TREE_STATS").is_some() {
            let d = run(Command::new(crate::support::bin("subvol"))
                .arg("dump")
                .arg("-f")
                .arg(&incr));
            let text = String::from_utf8_lossy(&d.stdout);
            let mut counts = std::collections::BTreeMap::new();
            for l in text.lines() {
                *counts
                    .entry(l.split_whitespace().next().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
            eprintln!(
                "{}: v{proto} entries old={} new={} incr commands {counts:?}",
                new.display(),
                digest(old).lines.len(),
                digest(new).lines.len()
            );
        }
        assert_same_tree(
            new,
            &dest.join(new_name),
            &format!("btrfs receive of incremental v{proto}"),
        );

        // subvol recv of the same streams must give the same trees.
        let ours = fs.path().join(format!("ours-v{proto}"));
        fs::create_dir(&ours).unwrap();
        subvol_recv(&full, &ours).unwrap_or_else(|e| panic!("subvol recv full v{proto}: {e}"));
        assert_same_tree(
            old,
            &ours.join(old_name),
            &format!("subvol recv of full v{proto}"),
        );
        subvol_recv(&incr, &ours)
            .unwrap_or_else(|e| panic!("subvol recv incremental v{proto}: {e}"));
        assert_same_tree(
            new,
            &ours.join(new_name),
            &format!("subvol recv of incremental v{proto}"),
        );
        check(&Received {
            proto,
            fs: &fs,
            full: &full,
            incr: &incr,
            stock_old: dest.join(old_name),
            stock_new: dest.join(new_name),
            ours: Some((ours.join(old_name), ours.join(new_name))),
        });
    }
}

const CAP_NET_RAW: &[u8] = &[
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const CAP_NET_ADMIN: &[u8] = &[
    1, 0, 0, 2, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The scenario corpus, OLD side.
fn build_old(d: &Path) {
    fs::create_dir_all(d.join("a/b/c")).unwrap();
    for x in [
        "d",
        "e",
        "swap1",
        "swap2",
        "inv_parent/inv_child",
        "tc_dir/sub",
    ] {
        fs::create_dir_all(d.join(x)).unwrap();
    }
    write(&d.join("a/f1"), b"hello\n");
    write(&d.join("a/b/big"), &bytes(1, 300_000));
    write(&d.join("a/b/c/g"), b"g content");
    write(&d.join("d/h"), &bytes(2, 10_000));
    write(&d.join("e/i"), b"to be deleted");
    write(&d.join("swapx"), b"content X");
    write(&d.join("swapy"), b"content Y, longer");
    write(&d.join("swap1/one"), b"in swap1");
    write(&d.join("swap2/two"), b"in swap2");
    write(&d.join("inv_parent/p"), b"parent file");
    write(&d.join("inv_parent/inv_child/c"), b"child file");
    write(&d.join("tc_file"), b"becomes a directory");
    write(&d.join("tc_dir/sub/x"), b"dir becomes a symlink");
    fs::hard_link(d.join("a/f1"), d.join("a/hl1")).unwrap();
    fs::hard_link(d.join("a/f1"), d.join("d/hl2")).unwrap();
    write(&d.join("e/multi"), b"three links");
    fs::hard_link(d.join("e/multi"), d.join("e/multi2")).unwrap();
    fs::hard_link(d.join("e/multi"), d.join("d/multi3")).unwrap();
    std::os::unix::fs::symlink("../a/f1", d.join("d/sym")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", d.join("tc_link")).unwrap();
    // Sparse files.
    write_at(&d.join("sp1"), 0, &bytes(3, 8192));
    write_at(&d.join("sp1"), 512 * 1024, &bytes(4, 4096));
    fs::OpenOptions::new()
        .write(true)
        .open(d.join("sp1"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    write(&d.join("sp2"), &bytes(5, 256 * 1024));
    fs::File::create(d.join("hole_only"))
        .unwrap()
        .set_len(100_000)
        .unwrap();
    // Xattrs and capabilities.
    setxattr(&d.join("a/f1"), "user.a", b"1");
    setxattr(&d.join("a/f1"), "user.b", b"2");
    write(&d.join("capbin"), &bytes(6, 5000));
    setxattr(&d.join("capbin"), "security.capability", CAP_NET_RAW);
    setxattr(&d.join("d"), "user.dir", b"on a directory");
    // Special files.
    mknod(&d.join("fifo"), "p", 0, 0);
    mknod(&d.join("chr"), "c", 1, 3);
    mknod(&d.join("blk"), "b", 7, 0);
    mksock(&d.join("sock"));
    // Long and non-UTF-8 names.
    write(&raw(d, &[b'L'; 255]), b"long name");
    write(&raw(d, b"caf\xe9-\xff\x01 name"), b"latin-1 name");
    // Metadata.
    write(&d.join("meta_f"), b"metadata only");
    write(&d.join("suid"), &bytes(7, 6000));
    chmod(&d.join("suid"), 0o4755);
    // Content deltas.
    write(&d.join("delta_f"), &bytes(8, 1 << 20));
    write(&d.join("trunc_f"), &bytes(9, 200_000));
    write(&d.join("ext_f"), &bytes(10, 10_000));
    // Identical content (cloned within the tree).
    write(&d.join("dup1"), &bytes(11, 100_000));
    write(&d.join("dup2"), &bytes(11, 100_000));
    set_times(&d.join("a"), 1_000_000_000, 5);
}

/// The scenario corpus: turns a copy of OLD into NEW.
fn make_new(d: &Path) {
    let mv = |a: &str, b: &str| fs::rename(d.join(a), d.join(b)).unwrap();
    mv("a/f1", "a/f1renamed");
    mv("a/b", "d/b_moved");
    // Parent/child inversion.
    mv("inv_parent", "inv_tmp");
    mv("inv_tmp/inv_child", "inv_child");
    mv("inv_tmp", "inv_child/inv_parent");
    // Swaps of files and of directories.
    mv("swapx", "swap_tmp");
    mv("swapy", "swapx");
    mv("swap_tmp", "swapy");
    mv("swap1", "swap_tmp");
    mv("swap2", "swap1");
    mv("swap_tmp", "swap2");
    // Hard-link changes.
    fs::remove_file(d.join("d/hl2")).unwrap();
    fs::hard_link(d.join("a/hl1"), d.join("e/hl3")).unwrap();
    fs::remove_file(d.join("e/multi2")).unwrap();
    fs::hard_link(d.join("e/multi"), d.join("a/multi4")).unwrap();
    // Holes.
    punch(&d.join("sp2"), 64 * 1024, 64 * 1024);
    write_at(&d.join("sp1"), 700 * 1024, &bytes(12, 5000));
    write_at(&d.join("hole_only"), 40_000, b"data in a hole");
    // Xattrs.
    let f = d.join("a/f1renamed");
    rustix::fs::lremovexattr(&f, "user.a").unwrap();
    setxattr(&f, "user.b", b"changed");
    setxattr(&f, "user.c", b"new");
    setxattr(&d.join("capbin"), "security.capability", CAP_NET_ADMIN);
    write(&d.join("newcap"), &bytes(13, 3000));
    setxattr(&d.join("newcap"), "security.capability", CAP_NET_RAW);
    // Special files.
    fs::remove_file(d.join("fifo")).unwrap();
    mknod(&d.join("fifo2"), "p", 0, 0);
    fs::remove_file(d.join("chr")).unwrap();
    mknod(&d.join("chr"), "c", 1, 5);
    // Type changes at the same path.
    fs::remove_file(d.join("tc_file")).unwrap();
    fs::create_dir(d.join("tc_file")).unwrap();
    write(&d.join("tc_file/inside"), b"now a directory");
    fs::remove_dir_all(d.join("tc_dir")).unwrap();
    std::os::unix::fs::symlink("somewhere", d.join("tc_dir")).unwrap();
    fs::remove_file(d.join("tc_link")).unwrap();
    write(&d.join("tc_link"), b"was a symlink");
    // Metadata only.
    chmod(&d.join("meta_f"), 0o600);
    chown(&d.join("meta_f"), 1000, 1001);
    set_times(&d.join("meta_f"), 1_234_567_890, 123_456_789);
    chown(&d.join("suid"), 1000, 1000);
    chmod(&d.join("suid"), 0o4755);
    write_at(&d.join("capbin"), 100, b"patched");
    setxattr(&d.join("capbin"), "security.capability", CAP_NET_ADMIN);
    // Content deltas, truncation, extension.
    write_at(&d.join("delta_f"), 300_000, &bytes(14, 5000));
    write_at(&d.join("delta_f"), 1 << 20, &bytes(15, 10_000));
    fs::OpenOptions::new()
        .write(true)
        .open(d.join("trunc_f"))
        .unwrap()
        .set_len(50_000)
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(d.join("ext_f"))
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    // Deletions, new deep directories, clones from the parent.
    fs::remove_file(d.join("e/i")).unwrap();
    write(&d.join("new/x/y/z/file"), b"deep new file");
    fs::copy(d.join("d/b_moved/big"), d.join("new/copy_of_big")).unwrap();
    fs::remove_file(
        d.join(OsStr::new("caf\u{e9}"))
            .with_file_name(OsStr::new("x")),
    )
    .ok();
    fs::rename(raw(d, b"caf\xe9-\xff\x01 name"), raw(d, b"renamed-\xfe")).unwrap();
    set_times(d, 1_500_000_000, 42);
}

/// The scenario corpus on the temp directory's file system (ext4 here), v1 and v2.
#[test]
fn scenarios_full_and_incremental() {
    let work = tempfile::tempdir().unwrap();
    let (old, new) = (work.path().join("old"), work.path().join("new"));
    fs::create_dir(&old).unwrap();
    build_old(&old);
    set_times(&old, 1_400_000_000, 7);
    copy_tree(&old, &new);
    make_new(&new);
    roundtrip(&old, &new, &[1, 2]);
}

/// The same corpus with both trees on a fresh loop-mounted ext4.
#[test]
fn scenarios_on_ext4() {
    let Some(ext4) = Ext4::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount a loop ext4 image");
        return;
    };
    let (old, new) = (ext4.mnt.join("old"), ext4.mnt.join("new"));
    fs::create_dir(&old).unwrap();
    build_old(&old);
    copy_tree(&old, &new);
    make_new(&new);
    roundtrip(&old, &new, &[2]);
}

/// The same corpus with both trees on tmpfs.
#[test]
fn scenarios_on_tmpfs() {
    let Some(t) = Tmpfs::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount tmpfs");
        return;
    };
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    fs::create_dir(&old).unwrap();
    build_old(&old);
    copy_tree(&old, &new);
    make_new(&new);
    roundtrip(&old, &new, &[1]);
}

/// Every entry under `root` (relative paths), directories included, root excluded.
fn entries(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut names: Vec<_> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let r = rel.join(n);
            if fs::symlink_metadata(root.join(&r)).is_ok_and(|m| m.is_dir()) {
                stack.push(r.clone());
            }
            out.push(r);
        }
    }
    out
}

/// One random file-system operation under `root`.
fn random_op(root: &Path, rng: &mut Rng, serial: &mut u64) {
    let all = entries(root);
    let dirs: Vec<PathBuf> = std::iter::once(PathBuf::new())
        .chain(
            all.iter()
                .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir()))
                .cloned(),
        )
        .collect();
    let files: Vec<PathBuf> = all
        .iter()
        .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_file()))
        .cloned()
        .collect();
    let pick = |rng: &mut Rng, v: &[PathBuf]| -> Option<PathBuf> {
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
    };
    *serial += 1;
    let name = |rng: &mut Rng, serial: u64| -> String {
        const NAMES: [&str; 6] = ["a", "b", "lib", "data", "x.conf", "bin"];
        format!(
            "{}{}",
            NAMES[rng.below(6) as usize],
            serial % 61 + rng.below(3)
        )
    };
    let dir = pick(rng, &dirs).unwrap_or_default();
    let fresh = root.join(&dir).join(name(rng, *serial));
    let exists = fs::symlink_metadata(&fresh).is_ok();
    match rng.below(15) {
        0 | 1 if !exists => {
            let size = match rng.below(4) {
                0 => 0,
                1 => rng.below(4000) as usize,
                2 => rng.below(70_000) as usize,
                _ => 4096 * rng.below(40) as usize,
            };
            write(&fresh, &bytes(rng.next(), size));
            if rng.chance(20) {
                let len = 4096 * (1 + rng.below(64));
                fs::OpenOptions::new()
                    .write(true)
                    .open(&fresh)
                    .unwrap()
                    .set_len(size as u64 + len)
                    .unwrap();
            }
        }
        2 if !exists => fs::create_dir(&fresh).unwrap(),
        3 | 4 => {
            // Rename or move anything anywhere (not into itself).
            if let Some(src) = pick(rng, &all) {
                let to = fresh.clone();
                let src_is_file = fs::symlink_metadata(root.join(&src)).is_ok_and(|m| m.is_file());
                let to_is_file = fs::symlink_metadata(&to).is_ok_and(|m| m.is_file());
                // Onto a free name, or replacing an existing file by a file.
                if (!exists || (src_is_file && to_is_file))
                    && !root.join(&dir).starts_with(root.join(&src))
                {
                    fs::rename(root.join(&src), to).unwrap();
                }
            }
        }
        5 => {
            // Mostly files: whole directories go less often, so the tree grows.
            let victim = if rng.chance(15) {
                pick(rng, &all)
            } else {
                pick(rng, &files)
            };
            if let Some(victim) = victim {
                let p = root.join(victim);
                if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(p).unwrap();
                } else {
                    fs::remove_file(p).unwrap();
                }
            }
        }
        6 if !exists => {
            if let Some(f) = pick(rng, &files) {
                fs::hard_link(root.join(f), fresh).unwrap();
            }
        }
        7 if !exists => {
            std::os::unix::fs::symlink(format!("target{}", rng.below(5)), fresh).unwrap()
        }
        8 => {
            if let Some(f) = pick(rng, &files) {
                let p = root.join(f);
                let len = fs::metadata(&p).unwrap().len();
                let off = rng.below(len + 8192);
                write_at(&p, off, &bytes(rng.next(), 1 + rng.below(9000) as usize));
            }
        }
        9 => {
            if let Some(f) = pick(rng, &files) {
                let p = root.join(f);
                let len = fs::metadata(&p).unwrap().len();
                let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
                if rng.chance(50) {
                    f.set_len(rng.below(len + 1)).unwrap();
                } else {
                    punch(
                        &p,
                        rng.below(len + 1) / 4096 * 4096,
                        4096 * (1 + rng.below(8)),
                    );
                }
            }
        }
        10 => {
            if let Some(e) = pick(rng, &all) {
                let p = root.join(e);
                if !fs::symlink_metadata(&p).unwrap().is_symlink() {
                    chmod(
                        &p,
                        [0o644, 0o755, 0o600, 0o4755, 0o1777, 0o2750][rng.below(6) as usize],
                    );
                }
                if rng.chance(30) {
                    chown(&p, rng.below(3) as u32 * 1000, rng.below(3) as u32 * 1000);
                }
            }
        }
        11 => {
            if let Some(e) = pick(rng, &all) {
                let p = root.join(e);
                if !fs::symlink_metadata(&p).unwrap().is_symlink() {
                    let n = format!("user.k{}", rng.below(3));
                    if rng.chance(70) {
                        setxattr(&p, &n, &bytes(rng.next(), rng.below(40) as usize));
                    } else {
                        let _ = rustix::fs::lremovexattr(&p, n.as_str());
                    }
                }
            }
        }
        12 => {
            // Swap two entries, neither inside the other.
            if let (Some(a), Some(b)) = (pick(rng, &all), pick(rng, &all))
                && !a.starts_with(&b)
                && !b.starts_with(&a)
            {
                let tmp = root.join(format!("swap-tmp-{serial}"));
                fs::rename(root.join(&a), &tmp).unwrap();
                fs::rename(root.join(&b), root.join(&a)).unwrap();
                fs::rename(&tmp, root.join(&b)).unwrap();
            }
        }
        13 => {
            // Type change: a file becomes a directory or a directory a file.
            if let Some(e) = pick(rng, &all) {
                let p = root.join(e);
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                    write(&p, b"was a directory");
                } else {
                    fs::remove_file(&p).unwrap();
                    fs::create_dir(&p).unwrap();
                }
            }
        }
        _ => {
            // Duplicate a file's content (a clone candidate).
            if let Some(f) = pick(rng, &files)
                && !exists
            {
                fs::copy(root.join(f), fresh).unwrap();
            }
        }
    }
}

fn random_roundtrip(seed: u64, initial_ops: usize, ops: usize, proto: u32) {
    let Some(t) = Tmpfs::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount tmpfs");
        return;
    };
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    fs::create_dir(&old).unwrap();
    let mut rng = Rng(seed);
    let mut serial = 0;
    for _ in 0..initial_ops {
        random_op(&old, &mut rng, &mut serial);
    }
    copy_tree(&old, &new);
    for _ in 0..ops {
        random_op(&new, &mut rng, &mut serial);
    }
    roundtrip(&old, &new, &[proto]);
}

/// Seeded random trees: 1,500 random operations to build OLD, 3,000 more between OLD and NEW, protocol 2.
#[test]
fn random_trees_v2() {
    random_roundtrip(0x5eed_0001, 1500, 3000, 2);
}

/// Seeded random trees, protocol 1 (holes by truncate and rewrite).
#[test]
fn random_trees_v1() {
    random_roundtrip(0x5eed_0002, 1500, 3000, 1);
}

/// An incremental stream names the UUID the full stream of OLD carried, and sending the same
/// tree twice gives the same UUID.
#[test]
fn tree_uuid_is_stable_and_chains() {
    let work = tempfile::tempdir().unwrap();
    let (old, new) = (work.path().join("old"), work.path().join("new"));
    write(&old.join("f"), b"one");
    copy_tree(&old, &new);
    write(&new.join("g"), b"two");
    let dump = |s: &Path| -> String {
        let o = run(Command::new(crate::support::bin("subvol"))
            .arg("dump")
            .arg("-f")
            .arg(s));
        String::from_utf8(o.stdout).unwrap()
    };
    let (f1, f2, i) = (
        work.path().join("f1"),
        work.path().join("f2"),
        work.path().join("i"),
    );
    send_full(&old, 1, &f1);
    send_full(&old, 1, &f2);
    send_incr(&old, &new, 1, &i);
    let uuid_of = |text: &str, key: &str| -> String {
        let l = text.lines().next().unwrap();
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .to_string()
    };
    let (a, b) = (dump(&f1), dump(&f2));
    assert_eq!(uuid_of(&a, "uuid="), uuid_of(&b, "uuid="));
    assert_eq!(uuid_of(&dump(&i), "parent_uuid="), uuid_of(&a, "uuid="));
    // --uuid / --parent-uuid override the rule.
    let o = work.path().join("o");
    subvol_send(
        &[
            new.as_os_str(),
            OsStr::new("-p"),
            old.as_os_str(),
            OsStr::new("--uuid"),
            OsStr::new("11111111-2222-3333-4444-555555555555"),
            OsStr::new("--parent-uuid"),
            OsStr::new("66666666-7777-8888-9999-aaaaaaaaaaaa"),
        ],
        &o,
    );
    let t = dump(&o);
    assert_eq!(uuid_of(&t, "uuid="), "11111111-2222-3333-4444-555555555555");
    assert_eq!(
        uuid_of(&t, "parent_uuid="),
        "66666666-7777-8888-9999-aaaaaaaaaaaa"
    );
}

const BLK: usize = 4096;

/// Asserts that `stats` has a CLONE into `path` at `offset` of `len` bytes from `clone_path`
/// at `clone_offset` in the subvolume `uuid`.
fn assert_clone(
    stats: &StreamStats,
    what: &str,
    (path, offset, len): (&str, usize, usize),
    (uuid, clone_path, clone_offset): (subvol::stream::Uuid, &str, usize),
) {
    let want = CloneCmd {
        path: path.as_bytes().to_vec(),
        offset: offset as u64,
        len: len as u64,
        clone_uuid: uuid,
        clone_path: clone_path.as_bytes().to_vec(),
        clone_offset: clone_offset as u64,
    };
    let show = |c: &CloneCmd| {
        format!(
            "{}@{}+{} <- {}:{}@{}",
            String::from_utf8_lossy(&c.path),
            c.offset,
            c.len,
            c.clone_uuid,
            String::from_utf8_lossy(&c.clone_path),
            c.clone_offset
        )
    };
    assert!(
        stats.clones.contains(&want),
        "{what}: no {} among the clones:\n{}",
        show(&want),
        stats.clones.iter().map(show).collect::<Vec<_>>().join("\n")
    );
}

/// Asserts that the received files share extents (with each other or with the parent).
fn assert_shared(r: &Received<'_>, files: &[&str], new_side: bool) {
    r.fs.sync();
    let mut roots = vec![if new_side { &r.stock_new } else { &r.stock_old }];
    if let Some((o, n)) = &r.ours {
        roots.push(if new_side { n } else { o });
    }
    for root in roots {
        for f in files {
            let p = root.join(f);
            let shared = shared_bytes(&p);
            assert!(shared > 0, "v{}: {} shares no extent", r.proto, p.display());
        }
    }
}

/// Full stream: block-aligned ranges that repeat within and across files are sent once and
/// cloned (runs of blocks merged, the tail at EOF of both files, holes kept, a file's own
/// earlier blocks), the stream is much smaller than the data, and the received files share
/// extents.
#[test]
fn block_clones_in_full_stream() {
    let Some(t) = Tmpfs::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount tmpfs");
        return;
    };
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    let a = bytes(1001, 10 * BLK + 1000);
    let blk = |i: usize| &a[i * BLK..(i + 1) * BLK];
    write(&old.join("a"), &a);
    // b: a's first 3 blocks, a new block, a's block 7.
    let mut b = a[..3 * BLK].to_vec();
    b.extend(bytes(1003, BLK));
    b.extend(blk(7));
    write(&old.join("b"), &b);
    // c: three blocks repeated three times (clones of its own earlier blocks).
    let c = bytes(1005, 3 * BLK).repeat(3);
    write(&old.join("c"), &c);
    // d: a from block 5 to EOF (the unaligned tail at EOF of both).
    write(&old.join("d"), &a[5 * BLK..]);
    // sub/e: a's block 2, a hole, a's blocks 3 and 4.
    fs::create_dir_all(old.join("sub")).unwrap();
    write_at(&old.join("sub/e"), 0, blk(2));
    write_at(&old.join("sub/e"), 2 * BLK as u64, &a[3 * BLK..5 * BLK]);
    // a_copy: the whole of a (one whole-file clone).
    write(&old.join("a_copy"), &a);
    // sub/f: b's new block then a's blocks 8 and 9 and a's tail.
    let mut f = bytes(1003, BLK);
    f.extend(&a[8 * BLK..]);
    write(&old.join("sub/f"), &f);
    let total = (a.len() * 2 + b.len() + c.len() + (a.len() - 5 * BLK) + 3 * BLK + f.len()) as u64;
    copy_tree(&old, &new);
    write(&new.join("g"), b"a change");
    roundtrip_with(&old, &new, &[1, 2], &mut |r| {
        let st = stream_stats(r.full);
        let me = st.uuid.unwrap();
        let what = format!("full v{}", r.proto);
        assert_clone(&st, &what, ("b", 0, 3 * BLK), (me, "a", 0));
        assert_clone(&st, &what, ("b", 4 * BLK, BLK), (me, "a", 7 * BLK));
        assert_clone(&st, &what, ("c", 3 * BLK, 3 * BLK), (me, "c", 0));
        assert_clone(&st, &what, ("c", 6 * BLK, 3 * BLK), (me, "c", 0));
        assert_clone(&st, &what, ("d", 0, 5 * BLK + 1000), (me, "a", 5 * BLK));
        assert_clone(&st, &what, ("sub/e", 0, BLK), (me, "a", 2 * BLK));
        assert_clone(&st, &what, ("sub/e", 2 * BLK, 2 * BLK), (me, "a", 3 * BLK));
        assert_clone(&st, &what, ("a_copy", 0, a.len()), (me, "a", 0));
        assert_clone(&st, &what, ("sub/f", 0, BLK), (me, "b", 3 * BLK));
        assert_clone(
            &st,
            &what,
            ("sub/f", BLK, 2 * BLK + 1000),
            (me, "a", 8 * BLK),
        );
        // Only a, b's new block and c's first three blocks are written.
        let unique = (a.len() + 4 * BLK) as u64;
        assert_eq!(st.write_bytes, unique, "{what}: bytes written");
        assert_eq!(
            st.write_bytes + st.cloned_bytes(),
            total,
            "{what}: written + cloned"
        );
        assert!(
            st.write_bytes * 2 < total,
            "{what}: not much smaller than the data"
        );
        assert_shared(r, &["a", "b", "c", "d", "sub/e", "sub/f"], false);
    });
}

/// Incremental stream: new files made of OLD blocks (of kept and deleted files) at aligned
/// offsets are cloned from the parent, a block that only NEW has is written once and cloned
/// from the new file already sent, and a changed file's new blocks that exist in other OLD
/// files are cloned; only the one new block is written.
#[test]
fn block_clones_in_incremental_stream() {
    let Some(t) = Tmpfs::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount tmpfs");
        return;
    };
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    let p = bytes(2001, 10 * BLK + 500);
    let q = bytes(2003, 8 * BLK);
    let r0 = bytes(2005, 6 * BLK);
    let z = bytes(2007, 5 * BLK);
    let blk = |v: &[u8], i: usize| v[i * BLK..(i + 1) * BLK].to_vec();
    write(&old.join("p"), &p);
    write(&old.join("dir/q"), &q);
    write(&old.join("r"), &r0);
    write(&old.join("z"), &z);
    write(&old.join("keep"), &bytes(2009, 3 * BLK));
    copy_tree(&old, &new);
    // n1 (new): p's blocks 2..6, a block only NEW has, q's block 5.
    let x = bytes(2011, BLK);
    let mut n1 = p[2 * BLK..6 * BLK].to_vec();
    n1.extend(&x);
    n1.extend(blk(&q, 5));
    write(&new.join("n1"), &n1);
    // n2 (new, sent after n1): the new block, then blocks 1..4 of the deleted z.
    let mut n2 = x.clone();
    n2.extend(&z[BLK..4 * BLK]);
    write(&new.join("n2"), &n2);
    fs::remove_file(new.join("z")).unwrap();
    // r (changed in place): block 2 becomes p's block 7, block 4 q's block 1, and q's blocks
    // 0 and 1 are appended.
    let mut r1 = r0.clone();
    r1[2 * BLK..3 * BLK].copy_from_slice(&blk(&p, 7));
    r1[4 * BLK..5 * BLK].copy_from_slice(&blk(&q, 1));
    r1.extend(&q[..2 * BLK]);
    write(&new.join("r"), &r1);
    roundtrip_with(&old, &new, &[1, 2], &mut |r| {
        let st = stream_stats(r.incr);
        let (me, parent) = (st.uuid.unwrap(), st.parent_uuid.unwrap());
        let what = format!("incremental v{}", r.proto);
        assert_clone(&st, &what, ("n1", 0, 4 * BLK), (parent, "p", 2 * BLK));
        assert_clone(&st, &what, ("n1", 5 * BLK, BLK), (parent, "dir/q", 5 * BLK));
        assert_clone(&st, &what, ("n2", 0, BLK), (me, "n1", 4 * BLK));
        assert_clone(&st, &what, ("n2", BLK, 3 * BLK), (parent, "z", BLK));
        assert_clone(&st, &what, ("r", 2 * BLK, BLK), (parent, "p", 7 * BLK));
        assert_clone(&st, &what, ("r", 4 * BLK, BLK), (parent, "dir/q", BLK));
        assert_clone(&st, &what, ("r", 6 * BLK, 2 * BLK), (parent, "dir/q", 0));
        assert_eq!(
            st.write_bytes, BLK as u64,
            "{what}: only the new block is written"
        );
        assert_shared(r, &["n1", "n2", "r"], true);
    });
}

/// A file made of blocks of `pool`, maybe ending with one of `tails`.
fn pool_content(rng: &mut Rng, pool: &[Vec<u8>], tails: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..rng.below(12) {
        v.extend(&pool[rng.below(pool.len() as u64) as usize]);
    }
    if rng.chance(60) {
        v.extend(&tails[rng.below(tails.len() as u64) as usize]);
    }
    v
}

/// One random operation on a tree of files made of pool blocks: new files, blocks overwritten
/// at aligned and unaligned offsets, appends, holes, truncations, deletions, copies.
fn pool_op(root: &Path, rng: &mut Rng, pool: &[Vec<u8>], tails: &[Vec<u8>], serial: u64) {
    let files: Vec<PathBuf> = entries(root)
        .into_iter()
        .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_file()))
        .collect();
    let pick = |rng: &mut Rng| -> Option<PathBuf> {
        (!files.is_empty()).then(|| root.join(&files[rng.below(files.len() as u64) as usize]))
    };
    let fresh = root
        .join(format!("d{}", rng.below(4)))
        .join(format!("f{serial}"));
    let op = if files.is_empty() { 0 } else { rng.below(9) };
    match op {
        0 | 1 => write(&fresh, &pool_content(rng, pool, tails)),
        2 => {
            let f = pick(rng).unwrap();
            let blocks = fs::metadata(&f).unwrap().len() / BLK as u64 + 1;
            let b = &pool[rng.below(pool.len() as u64) as usize];
            write_at(&f, rng.below(blocks) * BLK as u64, b);
        }
        3 => {
            let f = pick(rng).unwrap();
            let len = fs::metadata(&f).unwrap().len();
            write_at(&f, len, &pool_content(rng, pool, tails));
        }
        4 => {
            let f = pick(rng).unwrap();
            let blocks = fs::metadata(&f).unwrap().len() / BLK as u64 + 1;
            punch(
                &f,
                rng.below(blocks) * BLK as u64,
                BLK as u64 * (1 + rng.below(3)),
            );
        }
        5 => {
            let f = pick(rng).unwrap();
            let len = fs::metadata(&f).unwrap().len();
            let to = if rng.chance(50) {
                rng.below(len / BLK as u64 + 2) * BLK as u64
            } else {
                rng.below(len + 3 * BLK as u64)
            };
            fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(to)
                .unwrap();
        }
        6 => fs::remove_file(pick(rng).unwrap()).unwrap(),
        7 => {
            let f = pick(rng).unwrap();
            fs::create_dir_all(fresh.parent().unwrap()).unwrap();
            fs::copy(f, &fresh).unwrap();
        }
        _ => {
            // Pool bytes at an unaligned offset.
            let f = pick(rng).unwrap();
            let len = fs::metadata(&f).unwrap().len();
            let b = &pool[rng.below(pool.len() as u64) as usize];
            write_at(
                &f,
                rng.below(len + 1),
                &b[..1 + rng.below(BLK as u64) as usize],
            );
        }
    }
}

/// Seeded random trees whose files are made of a small pool of blocks (one of zeros) and
/// tails, so block clones are everywhere: the receivers reproduce OLD and NEW exactly (no
/// clone breaks the kernel's alignment rules), the full stream clones at least half of the repeated blocks,
/// and the incremental one clones too.
#[test]
fn random_block_pool_trees() {
    let Some(t) = Tmpfs::new() else {
        crate::support::btrfs_fixture::skip_or_panic("cannot mount tmpfs");
        return;
    };
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    fs::create_dir(&old).unwrap();
    // SEND_TREE_POOL_SEED=n runs another seed.
    let seed = std::env::var("SEND_TREE_POOL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b10c);
    let mut rng = Rng(seed);
    let mut pool: Vec<Vec<u8>> = (0..12).map(|i| bytes(3001 + 2 * i, BLK)).collect();
    pool.push(vec![0; BLK]);
    let tails: Vec<Vec<u8>> = [100, 1000, 3000, 4095]
        .iter()
        .enumerate()
        .map(|(i, &n)| bytes(4001 + 2 * i as u64, n))
        .collect();
    for serial in 0..80 {
        pool_op(&old, &mut rng, &pool, &tails, serial);
    }
    copy_tree(&old, &new);
    for serial in 80..240 {
        pool_op(&new, &mut rng, &pool, &tails, serial);
    }
    // Bytes of aligned non-zero blocks of OLD that repeat an earlier one: what could be cloned.
    let mut seen = std::collections::HashSet::new();
    let mut repeated = 0u64;
    for e in entries(&old) {
        let p = old.join(&e);
        if fs::symlink_metadata(&p).unwrap().is_file() {
            for c in fs::read(&p).unwrap().chunks_exact(BLK) {
                if c.iter().any(|&x| x != 0) && !seen.insert(c.to_vec()) {
                    repeated += BLK as u64;
                }
            }
        }
    }
    roundtrip_with(&old, &new, &[1, 2], &mut |r| {
        let (full, incr) = (stream_stats(r.full), stream_stats(r.incr));
        // Not all: a one-block clone from offset 0 is written instead (as the kernel does).
        assert!(
            full.cloned_bytes() * 2 >= repeated,
            "v{}: full stream clones {} bytes of {} repeated ones",
            r.proto,
            full.cloned_bytes(),
            repeated
        );
        assert!(
            !incr.clones.is_empty(),
            "v{}: incremental clones nothing",
            r.proto
        );
    });
}

/// A file that grows while the tree is sent fails the send, naming the file.
#[test]
fn file_changing_during_send_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write(&src.join("a_big"), &bytes(1, 64 << 20));
    write(&src.join("grow"), b"start");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let grow = src.join("grow");
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = open_append(&grow);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all(b"more").unwrap();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let out = Command::new(crate::support::bin("subvol"))
        .arg("send")
        .arg(&src)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "send of a growing file succeeded");
    assert!(
        err.contains("grow") && err.contains("changed while being sent"),
        "unexpected error: {err}"
    );
}

/// An unreadable file fails the send with the path and the OS error.
#[test]
fn unreadable_file_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    chmod(work.path(), 0o755);
    let src = work.path().join("src");
    write(&src.join("ok"), b"fine");
    write(&src.join("secret"), b"no access");
    chmod(&src.join("secret"), 0o000);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::support::bin("subvol"))
        .arg("send")
        .arg(&src)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "send of an unreadable file succeeded"
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "exit code for an I/O error: {err}"
    );
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "unexpected error: {err}"
    );
}

/// Kernel send: `subvol send` writes exactly what `btrfs send` writes, for full, incremental,
/// v2, compressed and no-data streams.
#[test]
fn kernel_send_is_byte_identical_to_btrfs_send() {
    let Some(fs) =
        BtrfsFs::with_options_or_skip(FsOptions::default().mount_option("compress=zstd"))
    else {
        return;
    };
    let root = fs.path();
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(root.join("vol")));
    let vol = root.join("vol");
    build_old(&vol);
    write(&vol.join("compressible"), &vec![b'z'; 1 << 20]);
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&vol)
        .arg(root.join("s1")));
    make_new(&vol);
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&vol)
        .arg(root.join("s2")));
    fs.sync();
    let work = tempfile::tempdir().unwrap();
    let s1 = root.join("s1");
    let s2 = root.join("s2");
    let cases: Vec<(&str, Vec<&OsStr>)> = vec![
        ("full", vec![s1.as_os_str()]),
        (
            "incremental",
            vec![OsStr::new("-p"), s1.as_os_str(), s2.as_os_str()],
        ),
        (
            "proto2",
            vec![OsStr::new("--proto"), OsStr::new("2"), s2.as_os_str()],
        ),
        (
            "proto0",
            vec![OsStr::new("--proto"), OsStr::new("0"), s1.as_os_str()],
        ),
        (
            "compressed",
            vec![OsStr::new("--compressed-data"), s2.as_os_str()],
        ),
        (
            "compressed-incr",
            vec![
                OsStr::new("--compressed-data"),
                OsStr::new("-p"),
                s1.as_os_str(),
                s2.as_os_str(),
            ],
        ),
        ("no-data", vec![OsStr::new("--no-data"), s2.as_os_str()]),
    ];
    for (name, args) in cases {
        let theirs = work.path().join(format!("{name}.btrfs"));
        let ours = work.path().join(format!("{name}.subvol"));
        run(Command::new("btrfs")
            .arg("-q")
            .arg("send")
            .args(&args)
            .arg("-f")
            .arg(&theirs));
        subvol_send(&args, &ours);
        let (a, b) = (fs::read(&theirs).unwrap(), fs::read(&ours).unwrap());
        assert!(
            a == b,
            "{name}: btrfs send wrote {} bytes, subvol send {} bytes, contents differ",
            a.len(),
            b.len()
        );
    }
}

/// A POSIX ACL xattr value: version 2, then (tag, permissions, id) entries, which must be in
/// the kernel's order (owner, named users, owning group, named groups, mask, other).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

/// A default ACL with a named user (so new inodes get an access ACL from it).
fn acl_named_user(uid: u32, perm: u16) -> Vec<u8> {
    acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_USER, perm, uid),
        (ACL_GROUP_OBJ, 5, NO_ID),
        (ACL_MASK, 7, NO_ID),
        (ACL_OTHER, 5, NO_ID),
    ])
}

/// A default ACL with a named group and other permissions.
fn acl_named_group(gid: u32) -> Vec<u8> {
    acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_GROUP_OBJ, 5, NO_ID),
        (ACL_GROUP, 6, gid),
        (ACL_MASK, 7, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ])
}

/// A default ACL of the three base entries only: new inodes get no access ACL from it, but
/// their mode is masked by it.
fn acl_base_only() -> Vec<u8> {
    acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_GROUP_OBJ, 1, NO_ID),
        (ACL_OTHER, 0, NO_ID),
    ])
}

const ACCESS: &str = "system.posix_acl_access";
const DEFAULT: &str = "system.posix_acl_default";

fn removexattr(p: &Path, name: &str) {
    rustix::fs::lremovexattr(p, name)
        .unwrap_or_else(|e| panic!("removexattr {} {name}: {e}", p.display()));
}

fn has_xattr(p: &Path, name: &str) -> bool {
    rustix::fs::lgetxattr(p, name, &mut [0u8; 0][..]).is_ok()
}

/// In `dir`: a file, a directory with a file, a fifo, a character device and a symlink, all
/// made after `dir`'s default ACL was set (so they inherit it as the kernel does), named with
/// `prefix`.
fn acl_entries(dir: &Path, prefix: &str) {
    let p = |n: &str| dir.join(format!("{prefix}{n}"));
    write(&p("file"), b"inherits");
    fs::create_dir(p("dir")).unwrap();
    write(&p("dir").join("inner"), b"inherits through the directory");
    mknod(&p("fifo"), "p", 0, 0);
    mknod(&p("chr"), "c", 1, 3);
    std::os::unix::fs::symlink("target", p("sym")).unwrap();
}

/// The same as [`acl_entries`], then the inherited ACLs removed again (the source has none).
fn acl_entries_stripped(dir: &Path, prefix: &str) {
    acl_entries(dir, prefix);
    let p = |n: &str| dir.join(format!("{prefix}{n}"));
    for n in ["file", "fifo", "chr", "dir"] {
        if has_xattr(&p(n), ACCESS) {
            removexattr(&p(n), ACCESS);
        }
    }
    removexattr(&p("dir"), DEFAULT);
    if has_xattr(&p("dir").join("inner"), ACCESS) {
        removexattr(&p("dir").join("inner"), ACCESS);
    }
}

/// OLD of the ACL corpus.
fn build_acl_old(d: &Path) {
    // A default ACL set before the entries are made: they inherit it; some lose it again.
    fs::create_dir(d.join("dacl")).unwrap();
    setxattr(&d.join("dacl"), DEFAULT, &acl_named_user(1000, 6));
    acl_entries(&d.join("dacl"), "inh_");
    acl_entries_stripped(&d.join("dacl"), "bare_");
    // A default ACL set after the entries were made: they have no ACLs.
    fs::create_dir(d.join("late")).unwrap();
    acl_entries(&d.join("late"), "early_");
    setxattr(&d.join("late"), DEFAULT, &acl_named_group(2000));
    // Base entries only: no access ACLs inherited, modes masked.
    fs::create_dir(d.join("minimal")).unwrap();
    setxattr(&d.join("minimal"), DEFAULT, &acl_base_only());
    acl_entries(&d.join("minimal"), "m_");
    // No default ACL; one file with an access ACL of its own.
    fs::create_dir(d.join("plain")).unwrap();
    write(&d.join("plain/own_acl"), b"own");
    setxattr(
        &d.join("plain/own_acl"),
        ACCESS,
        &acl(&[
            (ACL_USER_OBJ, 6, NO_ID),
            (ACL_USER, 4, 1234),
            (ACL_GROUP_OBJ, 4, NO_ID),
            (ACL_MASK, 4, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ]),
    );
    // The root has a default ACL too (full streams set it before making the entries).
    setxattr(d, DEFAULT, &acl_named_group(3000));
    write(&d.join("root_file"), b"made after the root's default ACL");
}

/// Turns a copy of the OLD ACL corpus into NEW: default ACLs changed, added and removed, and
/// new entries under each state, inheriting or not.
fn make_acl_new(d: &Path) {
    // Changed default ACL: entries made after the change inherit the new one.
    setxattr(&d.join("dacl"), DEFAULT, &acl_named_user(1001, 4));
    acl_entries(&d.join("dacl"), "new_inh_");
    acl_entries_stripped(&d.join("dacl"), "new_bare_");
    // Removed default ACL: the new entries have none (the receiver still has OLD's default ACL
    // on the directory while it makes them).
    removexattr(&d.join("late"), DEFAULT);
    acl_entries(&d.join("late"), "after_removal_");
    // Added default ACL: entries made before it have none, entries made after inherit it.
    acl_entries(&d.join("plain"), "before_");
    setxattr(&d.join("plain"), DEFAULT, &acl_named_user(1002, 7));
    acl_entries(&d.join("plain"), "after_");
    acl_entries(&d.join("minimal"), "new_m_");
    // A new directory with a default ACL, and one that inherited the root's and lost it.
    fs::create_dir(d.join("fresh")).unwrap();
    setxattr(&d.join("fresh"), DEFAULT, &acl_named_user(1003, 5));
    acl_entries(&d.join("fresh"), "f_");
    acl_entries_stripped(&d.join("fresh"), "fb_");
    fs::create_dir(d.join("fresh_bare")).unwrap();
    removexattr(&d.join("fresh_bare"), DEFAULT);
    if has_xattr(&d.join("fresh_bare"), ACCESS) {
        removexattr(&d.join("fresh_bare"), ACCESS);
    }
    acl_entries(&d.join("fresh_bare"), "x_");
}

/// Full and incremental tree streams reproduce ACLs exactly (every entry's xattrs compared
/// raw, by digest) with `btrfs receive` and `subvol recv`, whichever order the source's
/// default ACLs and entries were made in: default ACLs added, changed and removed between
/// the trees; inherited, stripped and own ACLs on files, directories, fifos, devices and
/// symlinks. Both directions, so each change is also seen reversed.
#[test]
fn acls_full_and_incremental() {
    let work = tempfile::tempdir().unwrap();
    let (old, new) = (work.path().join("acl_old"), work.path().join("acl_new"));
    fs::create_dir(&old).unwrap();
    build_acl_old(&old);
    copy_tree(&old, &new);
    make_acl_new(&new);
    // The sources are what the scenario says (the kernel did the inheriting).
    for (p, name, want) in [
        ("dacl/inh_file", ACCESS, true),
        ("dacl/inh_dir", DEFAULT, true),
        ("dacl/inh_dir/inner", ACCESS, true),
        ("dacl/inh_chr", ACCESS, true),
        ("dacl/inh_fifo", ACCESS, true),
        ("dacl/bare_file", ACCESS, false),
        ("dacl/bare_dir", DEFAULT, false),
        ("late/early_file", ACCESS, false),
        ("minimal/m_file", ACCESS, false),
        ("minimal/m_dir", DEFAULT, true),
        ("root_file", ACCESS, true),
    ] {
        assert_eq!(has_xattr(&old.join(p), name), want, "OLD {p} {name}");
    }
    for (p, name, want) in [
        ("dacl/inh_file", ACCESS, true),
        ("late/early_dir", DEFAULT, false),
        ("dacl/new_inh_file", ACCESS, true),
        ("late/after_removal_file", ACCESS, false),
        ("late/after_removal_dir", DEFAULT, false),
        ("plain/before_file", ACCESS, false),
        ("plain/after_fifo", ACCESS, true),
        ("fresh/f_dir/inner", ACCESS, true),
        ("fresh/fb_dir", DEFAULT, false),
        ("fresh_bare/x_file", ACCESS, false),
    ] {
        assert_eq!(has_xattr(&new.join(p), name), want, "NEW {p} {name}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::symlink_metadata(old.join("minimal/m_file"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "OLD minimal/m_file: mode masked by the base-only default ACL"
    );
    roundtrip(&old, &new, &[1, 2]);
    roundtrip(&new, &old, &[2]);
}
