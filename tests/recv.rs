//! `subvol recv` on real loop-mounted btrfs: the same trees as `btrfs receive` (digest, received
//! UUID, extent sharing), hostile streams refused with nothing outside touched, and atomicity
//! (nothing under the final name, no staging left) on truncation, bad CRC, ENOSPC, kill -9, SIGINT.

use crate::support::btrfs_fixture::{BtrfsFs, FsOptions};
use crate::support::{bin, kernel_streams::kernel_streams};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use subvol::digest::{DigestOptions, digest_tree};
use subvol::stream::{Builder, Command as Cmd, Uuid, Writer, attr, cmd, end_command};

const V2: u32 = 2;

fn recv(stream: &[u8], dest: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(bin("subvol"))
        .arg("recv")
        .args(extra)
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn subvol recv");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = stream.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

fn recv_file(stream: &Path, dest: &Path, extra: &[&str]) -> Output {
    Command::new(bin("subvol"))
        .arg("recv")
        .args(extra)
        .arg("-f")
        .arg(stream)
        .arg(dest)
        .output()
        .expect("run subvol recv")
}

fn stock_recv(stream: &Path, dest: &Path, extra: &[&str]) {
    let out = Command::new("btrfs")
        .arg("receive")
        .args(extra)
        .arg("-f")
        .arg(stream)
        .arg(dest)
        .output()
        .expect("run btrfs receive");
    assert!(
        out.status.success(),
        "btrfs receive failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "subvol recv failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn digest(p: &Path) -> subvol::digest::TreeDigest {
    digest_tree(p, &DigestOptions::default())
        .unwrap_or_else(|e| panic!("digest {}: {e}", p.display()))
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (digest(a), digest(b));
    if da.sha256 != db.sha256 {
        // Full listings for a post-mortem diff.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let _ = fs::write(dir.join("digest-a.txt"), da.lines.join("\n"));
        let _ = fs::write(dir.join("digest-b.txt"), db.lines.join("\n"));
    }
    assert!(
        da.sha256 == db.sha256,
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        da.diff(&db, 40)
    );
}

/// Like [`assert_same_tree`] but without the hole map: kernel send writes some holes of a
/// source as zeros, so a received tree's holes may differ from its source's (stock receive
/// gives the same result, which the exact comparisons check).
fn assert_same_content(source: &Path, received: &Path) {
    let strip = |p: &Path| -> Vec<String> {
        digest(p)
            .lines
            .iter()
            .map(|l| {
                l.split('\t')
                    .filter(|f| !f.starts_with("data="))
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect()
    };
    let (a, b) = (strip(source), strip(received));
    let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).take(20).collect();
    let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).take(20).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{} vs {}:\n-{only_a:#?}\n+{only_b:#?}",
        source.display(),
        received.display()
    );
}

fn subvol_info(p: &Path) -> subvol_ioctl::SubvolInfo {
    let f = fs::File::open(p).expect("open subvolume");
    subvol_ioctl::subvol_info(&f).expect("subvol info")
}

/// `btrfs filesystem du -s --raw`: total, exclusive and shared bytes, the extent-sharing picture.
fn du(p: &Path) -> String {
    // Delalloc data has no extents yet: flush the file system first.
    let _ = Command::new("sync").arg("-f").arg(p).status();
    let out = Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(p)
        .output()
        .expect("btrfs fi du");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .nth(1)
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or(text)
}

/// Extents flagged `encoded` (compressed) in `filefrag -v` of every file under `p`.
fn encoded_extents(p: &Path) -> usize {
    let mut n = 0;
    for e in walk(p) {
        if e.is_file() && !e.is_symlink() {
            let out = Command::new("filefrag")
                .arg("-v")
                .arg(&e)
                .output()
                .expect("filefrag");
            n += String::from_utf8_lossy(&out.stdout)
                .matches("encoded")
                .count();
        }
    }
    n
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            v.push(path);
        }
    }
    v
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dest")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Receives each full+incremental pair with both tools on separate file systems and compares
/// the trees, the received identity and the extent sharing.
#[test]
fn kernel_streams_give_the_same_trees_as_btrfs_receive() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(stock) = BtrfsFs::with_size_or_skip(2 << 30) else {
        return;
    };
    let Some(ours) = BtrfsFs::with_size_or_skip(2 << 30) else {
        return;
    };
    for (full, incr) in [
        ("full-v1", "incr-v1"),
        ("full-v2", "incr-v2"),
        ("full-v2c", "incr-v2c"),
    ] {
        let tag = format!("{full}+{incr}");
        let (s, o) = (stock.path().join(&tag), ours.path().join(&tag));
        fs::create_dir(&s).unwrap();
        fs::create_dir(&o).unwrap();
        for name in [full, incr] {
            let stream = streams.join(format!("{name}.stream"));
            stock_recv(&stream, &s, &[]);
            ok(&recv_file(&stream, &o, &[]));
        }
        for snap in ["snap1", "snap2"] {
            let (a, b) = (s.join(snap), o.join(snap));
            assert_same_tree(&a, &b);
            let (ia, ib) = (subvol_info(&a), subvol_info(&b));
            assert_eq!(
                ia.received_uuid, ib.received_uuid,
                "{tag}/{snap} received uuid"
            );
            assert_eq!(ia.stransid, ib.stransid, "{tag}/{snap} stransid");
            assert!(ib.is_readonly(), "{tag}/{snap} must be read-only");
            assert_ne!(ib.received_uuid, subvol_ioctl::Uuid::NIL);
        }
        // The incremental result shares extents with its parent, clones stay clones, compressed
        // extents stay compressed: the same totals as stock receive.
        assert_eq!(
            du(&s),
            du(&o),
            "{tag}: extent sharing differs (total exclusive shared)"
        );
        assert_eq!(
            encoded_extents(&s),
            encoded_extents(&o),
            "{tag}: compressed extents differ"
        );
        assert!(
            entries(&o)
                .iter()
                .all(|n| !n.starts_with(".subvol-recv-staging"))
        );
    }
    // The compressed stream really carried encoded extents through.
    assert!(encoded_extents(&ours.path().join("full-v2c+incr-v2c")) > 0);
    // `send -c` with a clone source in another subvolume: receive that subvolume first, then
    // the incremental stream whose CLONEs name it by UUID.
    let (s, o) = (
        stock.path().join("clone-src"),
        ours.path().join("clone-src"),
    );
    fs::create_dir(&s).unwrap();
    fs::create_dir(&o).unwrap();
    for name in ["other-v2", "full-v2", "incr-clone-v2"] {
        let stream = streams.join(format!("{name}.stream"));
        stock_recv(&stream, &s, &[]);
        ok(&recv_file(&stream, &o, &[]));
    }
    assert_same_tree(&s.join("snap2"), &o.join("snap2"));
    assert_eq!(du(&s), du(&o), "clone-src: extent sharing differs");
}

/// Concatenated streams (`btrfs send a b`) and `send -e` streams, with and without `-e`.
#[test]
fn concatenated_and_multi_subvolume_streams() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(stock) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(ours) = BtrfsFs::new_or_skip() else {
        return;
    };
    for (name, flags) in [("concat-v2", &[][..]), ("multi-e-v2", &["-e"][..])] {
        let (s, o) = (stock.path().join(name), ours.path().join(name));
        fs::create_dir(&s).unwrap();
        fs::create_dir(&o).unwrap();
        let stream = streams.join(format!("{name}.stream"));
        stock_recv(&stream, &s, flags);
        ok(&recv_file(&stream, &o, flags));
        assert_eq!(entries(&s), entries(&o));
        assert_eq!(entries(&o), ["snap1", "snap2"]);
        for snap in ["snap1", "snap2"] {
            assert_same_tree(&s.join(snap), &o.join(snap));
        }
    }
    // -e on a concatenated stream stops after the first subvolume, as btrfs receive does.
    let o = ours.path().join("first-only");
    fs::create_dir(&o).unwrap();
    ok(&recv_file(&streams.join("concat-v2.stream"), &o, &["-e"]));
    assert_eq!(entries(&o), ["snap1"]);
}

/// `--force-decompress` decodes zstd, zlib and lzo extents in userspace: same tree, written plain.
#[test]
fn force_decompress_gives_the_same_tree() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let (a, b) = (fs_.path().join("encoded"), fs_.path().join("decoded"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let stream = streams.join("full-v2c.stream");
    ok(&recv_file(&stream, &a, &[]));
    ok(&recv_file(&stream, &b, &["--force-decompress"]));
    assert_same_tree(&a.join("snap1"), &b.join("snap1"));
    assert_eq!(
        encoded_extents(&b.join("snap1/comp")),
        0,
        "--force-decompress must write plain extents"
    );
}

/// A tiny xorshift generator: the same seed gives the same operations everywhere.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Applies `n` random operations to the tree at `root`: creates, overwrites, appends, truncates,
/// hole punches, reflinks, renames and moves of files and directories, hardlinks, symlinks,
/// xattrs, mode changes, deletions.
fn random_ops(root: &Path, rng: &mut Rng, n: usize) {
    let mut files: Vec<PathBuf> = walk(root)
        .into_iter()
        .filter(|p| p.is_file() && !p.is_symlink())
        .collect();
    let mut dirs: Vec<PathBuf> = std::iter::once(root.to_path_buf())
        .chain(
            walk(root)
                .into_iter()
                .filter(|p| p.is_dir() && !p.is_symlink()),
        )
        .collect();
    let mut counter = 0u64;
    let mut fresh = |rng: &mut Rng, dirs: &Vec<PathBuf>| {
        counter += 1;
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        let names = [
            "f",
            "file name",
            "caf\u{e9}",
            "x",
            "long_name_with_many_characters_in_it",
        ];
        d.join(format!(
            "{}{}-{}",
            names[rng.below(names.len() as u64) as usize],
            counter,
            rng.below(1000)
        ))
    };
    for _ in 0..n {
        let op = rng.below(14);
        let r: std::io::Result<()> = (|| {
            match op {
                0 | 1 => {
                    let p = fresh(rng, &dirs);
                    let len = [0u64, 1, 100, 4096, 5000, 70_000, 300_000][rng.below(7) as usize];
                    let data: Vec<u8> =
                        (0..len).map(|i| (i as u8) ^ (rng.below(3) as u8)).collect();
                    fs::write(&p, data)?;
                    files.push(p);
                }
                2 => {
                    let p = fresh(rng, &dirs);
                    fs::create_dir(&p)?;
                    dirs.push(p);
                }
                3 if !files.is_empty() => {
                    // overwrite a range
                    let p = &files[rng.below(files.len() as u64) as usize];
                    let f = fs::OpenOptions::new().write(true).open(p)?;
                    let off = rng.below(200_000);
                    use std::os::unix::fs::FileExt;
                    f.write_all_at(
                        &vec![rng.below(256) as u8; rng.below(20_000) as usize + 1],
                        off,
                    )?;
                }
                4 if !files.is_empty() => {
                    let p = &files[rng.below(files.len() as u64) as usize];
                    fs::OpenOptions::new()
                        .write(true)
                        .open(p)?
                        .set_len(rng.below(100_000))?;
                }
                5 if !files.is_empty() => {
                    let p = &files[rng.below(files.len() as u64) as usize];
                    let off = rng.below(16) * 4096;
                    Command::new("fallocate")
                        .args(["-p", "-o", &off.to_string(), "-l", "8192"])
                        .arg(p)
                        .status()?;
                }
                6 if !files.is_empty() => {
                    let src = files[rng.below(files.len() as u64) as usize].clone();
                    let dst = fresh(rng, &dirs);
                    Command::new("cp")
                        .arg("--reflink=always")
                        .arg(&src)
                        .arg(&dst)
                        .status()?;
                    files.push(dst);
                }
                7 if !files.is_empty() => {
                    let i = rng.below(files.len() as u64) as usize;
                    let to = fresh(rng, &dirs);
                    fs::rename(&files[i], &to)?;
                    files[i] = to;
                }
                8 if dirs.len() > 1 => {
                    // move a directory somewhere else (not into itself)
                    let i = 1 + rng.below(dirs.len() as u64 - 1) as usize;
                    let to = fresh(rng, &dirs);
                    if !to.starts_with(&dirs[i]) {
                        fs::rename(&dirs[i], &to)?;
                        // rebuild the lists: paths under the moved directory changed
                        files = walk(root)
                            .into_iter()
                            .filter(|p| p.is_file() && !p.is_symlink())
                            .collect();
                        dirs = std::iter::once(root.to_path_buf())
                            .chain(
                                walk(root)
                                    .into_iter()
                                    .filter(|p| p.is_dir() && !p.is_symlink()),
                            )
                            .collect();
                    }
                }
                9 if !files.is_empty() => {
                    let src = files[rng.below(files.len() as u64) as usize].clone();
                    let to = fresh(rng, &dirs);
                    fs::hard_link(&src, &to)?;
                    files.push(to);
                }
                10 => {
                    let to = fresh(rng, &dirs);
                    std::os::unix::fs::symlink(format!("target-{}", rng.below(100)), to)?;
                }
                11 if !files.is_empty() => {
                    let p = &files[rng.below(files.len() as u64) as usize];
                    Command::new("setfattr")
                        .args([
                            "-n",
                            &format!("user.k{}", rng.below(4)),
                            "-v",
                            &format!("v{}", rng.below(1000)),
                        ])
                        .arg(p)
                        .status()?;
                }
                12 if !files.is_empty() => {
                    let p = &files[rng.below(files.len() as u64) as usize];
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(
                        p,
                        fs::Permissions::from_mode(
                            [0o644, 0o600, 0o755, 0o4755][rng.below(4) as usize],
                        ),
                    )?;
                }
                13 if !files.is_empty() => {
                    let i = rng.below(files.len() as u64) as usize;
                    let p = files.swap_remove(i);
                    fs::remove_file(p)?;
                }
                _ => {}
            }
            Ok(())
        })();
        // Collisions (renaming onto an existing directory and such) are simply skipped.
        let _ = r;
    }
}

/// Thousands of random operations between two snapshots, sent by the kernel (v1 and v2), received
/// by both tools: both reproduce the source snapshots exactly.
#[test]
fn random_operations_between_snapshots() {
    let Some(src) = BtrfsFs::with_size_or_skip(2 << 30) else {
        return;
    };
    let Some(stock) = BtrfsFs::with_size_or_skip(2 << 30) else {
        return;
    };
    let Some(ours) = BtrfsFs::with_size_or_skip(2 << 30) else {
        return;
    };
    let vol = src.path().join("vol");
    let st = Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(&vol)
        .status()
        .unwrap();
    assert!(st.success());
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    random_ops(&vol, &mut rng, 1500);
    let snap = |name: &str| {
        let p = src.path().join(name);
        src.sync();
        assert!(
            Command::new("btrfs")
                .args(["-q", "subvolume", "snapshot", "-r"])
                .arg(&vol)
                .arg(&p)
                .status()
                .unwrap()
                .success()
        );
        p
    };
    let s1 = snap("s1");
    random_ops(&vol, &mut rng, 3000);
    let s2 = snap("s2");
    let tmp = tempfile::tempdir().unwrap();
    for proto in ["1", "2"] {
        let full = tmp.path().join(format!("full{proto}"));
        let incr = tmp.path().join(format!("incr{proto}"));
        for (out, args) in [
            (&full, vec![s1.as_os_str()]),
            (&incr, vec!["-p".as_ref(), s1.as_os_str(), s2.as_os_str()]),
        ] {
            let st = Command::new("btrfs")
                .args(["-q", "send", "--proto", proto, "-f"])
                .arg(out)
                .args(args)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let (s, o) = (stock.path().join(proto), ours.path().join(proto));
        fs::create_dir(&s).unwrap();
        fs::create_dir(&o).unwrap();
        for stream in [&full, &incr] {
            stock_recv(stream, &s, &[]);
            ok(&recv_file(stream, &o, &[]));
        }
        for (name, source) in [("s1", &s1), ("s2", &s2)] {
            assert_same_tree(&s.join(name), &o.join(name));
            assert_same_content(source, &o.join(name));
        }
        if du(&s) != du(&o) {
            for (side, dir) in [("stock", &s), ("ours", &o)] {
                let out = Command::new("btrfs")
                    .args(["filesystem", "du", "--raw"])
                    .arg(dir)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).replace(dir.to_str().unwrap(), "");
                let _ = fs::write(
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("du-{side}.txt")),
                    text,
                );
            }
        }
        assert_eq!(du(&s), du(&o), "proto {proto}: extent sharing differs");
    }
}

// ---------- hostile streams ----------

const EVIL: Uuid = Uuid([0xee; 16]);

fn build(version: u32, cmds: &[Cmd]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    w.write_header(version).unwrap();
    for c in cmds {
        w.write_command(c).unwrap();
    }
    w.into_inner()
}

fn b(c: u16) -> Builder {
    Builder::new(c, V2)
}

fn subvol(name: &[u8]) -> Cmd {
    b(cmd::SUBVOL)
        .bytes(attr::PATH, name)
        .uuid(attr::UUID, &EVIL)
        .u64(attr::CTRANSID, 7)
        .build()
        .unwrap()
}
fn mkfile(p: &[u8]) -> Cmd {
    b(cmd::MKFILE)
        .bytes(attr::PATH, p)
        .u64(attr::INO, 300)
        .build()
        .unwrap()
}
fn mkdir(p: &[u8]) -> Cmd {
    b(cmd::MKDIR)
        .bytes(attr::PATH, p)
        .u64(attr::INO, 301)
        .build()
        .unwrap()
}
fn symlink(p: &[u8], target: &[u8]) -> Cmd {
    b(cmd::SYMLINK)
        .bytes(attr::PATH, p)
        .u64(attr::INO, 302)
        .bytes(attr::PATH_LINK, target)
        .build()
        .unwrap()
}
fn write(p: &[u8], data: &[u8]) -> Cmd {
    b(cmd::WRITE)
        .bytes(attr::PATH, p)
        .u64(attr::FILE_OFFSET, 0)
        .data(data)
        .build()
        .unwrap()
}
fn with_path(c: u16, p: &[u8], f: impl FnOnce(Builder) -> Builder) -> Cmd {
    f(b(c).bytes(attr::PATH, p)).build().unwrap()
}

/// Files next to DEST on the same btrfs and in another file system, whose digests must not
/// change whatever a stream says.
struct Sentinels {
    near: PathBuf,
    far: tempfile::TempDir,
}

impl Sentinels {
    fn new(fs_root: &Path) -> Sentinels {
        let near = fs_root.join("sentinel");
        fs::create_dir_all(near.join("sub")).unwrap();
        fs::write(near.join("file"), b"precious near").unwrap();
        fs::write(near.join("sub/file"), b"precious sub").unwrap();
        let far = tempfile::tempdir().unwrap();
        fs::write(far.path().join("file"), b"precious far").unwrap();
        Sentinels { near, far }
    }
    fn digests(&self) -> (String, String) {
        let o = DigestOptions {
            mtime: true,
            atime: false,
        };
        (
            digest_tree(&self.near, &o).unwrap().hex(),
            digest_tree(self.far.path(), &o).unwrap().hex(),
        )
    }
}

#[test]
fn hostile_streams_are_refused_and_touch_nothing_outside() {
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let s = Sentinels::new(fs_.path());
    let near = s.near.as_os_str().as_bytes().to_vec();
    let near_file = s.near.join("file").as_os_str().as_bytes().to_vec();
    let far_file = s.far.path().join("file").as_os_str().as_bytes().to_vec();
    let before = s.digests();
    let dd = |p: &[u8]| {
        let mut v = b"../../".to_vec();
        v.extend_from_slice(p);
        v
    };
    let cases: Vec<(&str, Vec<Cmd>)> = vec![
        ("dotdot mkfile", vec![mkfile(b"../escaped")]),
        ("dotdot deep", vec![mkdir(b"d"), mkfile(b"d/../../escaped")]),
        ("absolute path", vec![mkfile(&far_file)]),
        (
            "symlink dir intermediate",
            vec![symlink(b"l", &near), mkfile(b"l/x")],
        ),
        (
            "write through symlink",
            vec![symlink(b"l", &near_file), write(b"l", b"pwned")],
        ),
        (
            "write through far symlink",
            vec![symlink(b"l", &far_file), write(b"l", b"pwned")],
        ),
        (
            "chmod through symlink",
            vec![
                symlink(b"l", &near_file),
                with_path(cmd::CHMOD, b"l", |b| b.u64(attr::MODE, 0o777)),
            ],
        ),
        (
            "truncate through symlink",
            vec![
                symlink(b"l", &near_file),
                with_path(cmd::TRUNCATE, b"l", |b| b.u64(attr::SIZE, 0)),
            ],
        ),
        (
            "chown via intermediate",
            vec![
                symlink(b"l", &near),
                with_path(cmd::CHOWN, b"l/file", |b| {
                    b.u64(attr::UID, 1).u64(attr::GID, 1)
                }),
            ],
        ),
        (
            "utimes via intermediate",
            vec![
                symlink(b"l", &near),
                with_path(cmd::UTIMES, b"l/file", |b| {
                    let t = subvol::stream::Timespec { sec: 1, nsec: 0 };
                    b.timespec(attr::ATIME, t)
                        .timespec(attr::MTIME, t)
                        .timespec(attr::CTIME, t)
                }),
            ],
        ),
        (
            "xattr via intermediate",
            vec![
                symlink(b"l", &near),
                with_path(cmd::SET_XATTR, b"l/file", |b| {
                    b.bytes(attr::XATTR_NAME, b"user.pwn")
                        .bytes(attr::XATTR_DATA, b"1")
                }),
            ],
        ),
        (
            "rename out via symlink",
            vec![
                symlink(b"l", &near),
                with_path(cmd::RENAME, b"l/file", |b| {
                    b.bytes(attr::PATH_TO, b"stolen")
                }),
            ],
        ),
        (
            "rename out via dotdot",
            vec![
                mkfile(b"f"),
                with_path(cmd::RENAME, b"f", |b| {
                    b.bytes(attr::PATH_TO, &dd(b"sentinel/file"))
                }),
            ],
        ),
        (
            "unlink via dotdot",
            vec![with_path(cmd::UNLINK, &dd(b"sentinel/file"), |b| b)],
        ),
        (
            "hardlink to outside",
            vec![with_path(cmd::LINK, b"x", |b| {
                b.bytes(attr::PATH_LINK, &dd(b"sentinel/file"))
            })],
        ),
        (
            "hardlink via symlink",
            vec![
                symlink(b"l", &near),
                with_path(cmd::LINK, b"x", |b| b.bytes(attr::PATH_LINK, b"l/file")),
            ],
        ),
        (
            "clone from outside",
            vec![
                mkfile(b"f"),
                with_path(cmd::CLONE, b"f", |b| {
                    b.u64(attr::FILE_OFFSET, 0)
                        .u64(attr::CLONE_LEN, 4096)
                        .uuid(attr::CLONE_UUID, &EVIL)
                        .u64(attr::CLONE_CTRANSID, 7)
                        .bytes(attr::CLONE_PATH, &dd(b"sentinel/file"))
                        .u64(attr::CLONE_OFFSET, 0)
                }),
            ],
        ),
        (
            "clone via symlink",
            vec![
                mkfile(b"f"),
                symlink(b"l", &near),
                with_path(cmd::CLONE, b"f", |b| {
                    b.u64(attr::FILE_OFFSET, 0)
                        .u64(attr::CLONE_LEN, 4096)
                        .uuid(attr::CLONE_UUID, &EVIL)
                        .u64(attr::CLONE_CTRANSID, 7)
                        .bytes(attr::CLONE_PATH, b"l/file")
                        .u64(attr::CLONE_OFFSET, 0)
                }),
            ],
        ),
        (
            "write to a device node",
            vec![
                with_path(cmd::MKNOD, b"null", |b| {
                    b.u64(attr::INO, 5)
                        .u64(attr::RDEV, 0x103)
                        .u64(attr::MODE, 0o20644)
                }),
                write(b"null", b"x"),
            ],
        ),
        (
            "mknod of a directory type",
            vec![with_path(cmd::MKNOD, b"d", |b| {
                b.u64(attr::INO, 5)
                    .u64(attr::RDEV, 0)
                    .u64(attr::MODE, 0o40755)
            })],
        ),
        (
            "fallocate collapse range",
            vec![
                mkfile(b"f"),
                with_path(cmd::FALLOCATE, b"f", |b| {
                    b.u32(attr::FALLOCATE_MODE, 0x08)
                        .u64(attr::FILE_OFFSET, 0)
                        .u64(attr::SIZE, 4096)
                }),
            ],
        ),
        (
            "encoded extent too big",
            vec![
                mkfile(b"f"),
                with_path(cmd::ENCODED_WRITE, b"f", |b| {
                    b.u64(attr::FILE_OFFSET, 0)
                        .u64(attr::UNENCODED_FILE_LEN, 1 << 30)
                        .u64(attr::UNENCODED_LEN, 1 << 30)
                        .u64(attr::UNENCODED_OFFSET, 0)
                        .u32(attr::COMPRESSION, 2)
                        .data(b"zz")
                }),
            ],
        ),
    ];
    for (what, cmds) in cases {
        let mut all = vec![subvol(b"evil")];
        all.extend(cmds);
        all.push(end_command(V2));
        let out = recv(&build(V2, &all), &dest, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: hostile stream was accepted");
        assert_eq!(
            out.status.code(),
            Some(5),
            "{what}: expected exit 5 (refused), stderr: {err}"
        );
        assert!(err.contains("refused"), "{what}: unclear error: {err}");
        assert!(
            err.contains("command "),
            "{what}: error must name the command: {err}"
        );
        assert!(
            entries(&dest).is_empty(),
            "{what}: left {:?} in DEST",
            entries(&dest)
        );
        assert_eq!(s.digests(), before, "{what}: a sentinel changed");
    }
    // Subvolume names that are not one plain component.
    for name in [
        &b"../evil"[..],
        b"a/b",
        b".",
        b"..",
        b".subvol-recv-staging.x",
    ] {
        let out = recv(&build(V2, &[subvol(name), end_command(V2)]), &dest, &[]);
        assert_eq!(
            out.status.code(),
            Some(5),
            "subvolume name {:?}",
            String::from_utf8_lossy(name)
        );
        assert!(entries(&dest).is_empty());
    }
    // An oversized command is a stream error (exit 3) and allocates nothing.
    let mut big = build(V2, &[subvol(b"evil")]);
    big.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 15, 0, 0, 0, 0, 0]);
    let out = recv(&big, &dest, &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds the limit"));
    assert!(entries(&dest).is_empty());
    assert_eq!(s.digests(), before);
    // Safe operations on a symlink itself stay allowed (they never touch its target).
    let legit = vec![
        subvol(b"fine"),
        symlink(b"l", &near_file),
        with_path(cmd::CHOWN, b"l", |b| b.u64(attr::UID, 1).u64(attr::GID, 1)),
        with_path(cmd::RENAME, b"l", |b| b.bytes(attr::PATH_TO, b"m")),
        with_path(cmd::LINK, b"n", |b| b.bytes(attr::PATH_LINK, b"m")),
        end_command(V2),
    ];
    ok(&recv(&build(V2, &legit), &dest, &[]));
    assert_eq!(
        fs::read_link(dest.join("fine/n")).unwrap(),
        s.near.join("file")
    );
    assert_eq!(fs::symlink_metadata(dest.join("fine/m")).unwrap().uid(), 1);
    assert_eq!(s.digests(), before);
}

// ---------- atomicity ----------

fn staging_entries(dest: &Path) -> Vec<String> {
    entries(dest)
        .into_iter()
        .filter(|n| n.starts_with(".subvol-recv-staging."))
        .collect()
}

#[test]
fn existing_subvolume_is_never_overwritten() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let stream = streams.join("full-v2.stream");
    ok(&recv_file(&stream, fs_.path(), &[]));
    let before = digest(&fs_.path().join("snap1"));
    let out = recv_file(&stream, fs_.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(digest(&fs_.path().join("snap1")).sha256, before.sha256);
    assert!(staging_entries(fs_.path()).is_empty());
}

#[test]
fn truncated_and_corrupt_streams_leave_nothing() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let full = fs::read(streams.join("full-v2.stream")).unwrap();
    // Cut at several places, including just before END.
    for cut in [
        17 + 10,
        full.len() / 3,
        full.len() / 2,
        full.len() - 10,
        full.len() - 1,
    ] {
        let out = recv(&full[..cut], dest, &[]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "cut at {cut}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            entries(dest).is_empty(),
            "cut at {cut}: left {:?}",
            entries(dest)
        );
    }
    // A flipped bit in the middle: CRC mismatch, named with its offset and command index.
    let mut bad = full.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    let out = recv(&bad, dest, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("crc32c mismatch") && err.contains("at byte") && err.contains("command "),
        "{err}"
    );
    assert!(entries(dest).is_empty());
    // And the intact stream still works afterwards.
    ok(&recv(&full, dest, &[]));
    assert_eq!(entries(dest), ["snap1"]);
}

/// A stream bigger than the file system: ENOSPC is an I/O error (exit 6) and nothing remains.
#[test]
fn full_disk_leaves_nothing() {
    let Some(fs_) = BtrfsFs::with_options_or_skip(FsOptions::default().size(256 << 20)) else {
        return;
    };
    let dest = fs_.path();
    let mut child = Command::new(bin("subvol"))
        .arg("recv")
        .arg(dest)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut w = Writer::new(&mut stdin);
        let _ = w.write_header(V2);
        let _ = w.write_command(&subvol(b"big"));
        let _ = w.write_command(&mkfile(b"f"));
        let mut rng = Rng(42);
        let mut chunk = vec![0u8; 128 * 1024];
        for i in 0..4096u64 {
            for c in chunk.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            let head = Builder::new(cmd::WRITE, V2)
                .bytes(attr::PATH, b"f")
                .u64(attr::FILE_OFFSET, i * chunk.len() as u64)
                .build()
                .unwrap();
            let mut prefix = head.payload().to_vec();
            prefix.extend_from_slice(&attr::DATA.to_le_bytes());
            if w.write_parts(cmd::WRITE, &[&prefix, &chunk]).is_err() {
                return; // receiver gave up
            }
        }
        let _ = w.write_command(&end_command(V2));
    });
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("No space left") || err.contains("os error 28"),
        "{err}"
    );
    assert!(entries(dest).is_empty(), "left {:?}", entries(dest));
}

/// Starts a receive fed through a pipe and returns it once a staging subvolume exists.
fn start_partial(stream: &[u8], cut: usize, dest: &Path) -> (Child, std::process::ChildStdin) {
    let mut child = Command::new(bin("subvol"))
        .arg("recv")
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&stream[..cut]).unwrap();
    stdin.flush().unwrap();
    let t = Instant::now();
    while staging_entries(dest).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no staging subvolume appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give it time to apply what it has.
    std::thread::sleep(Duration::from_millis(300));
    (child, stdin)
}

#[test]
fn kill_9_then_next_receive_cleans_up() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let full = fs::read(streams.join("full-v2.stream")).unwrap();
    let small = fs::read(streams.join("full-v1.stream")).unwrap();
    for cut in [80, full.len() / 2, full.len() - 10] {
        let (mut child, stdin) = start_partial(&full, cut, dest);
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        drop(stdin);
        assert!(
            !entries(dest).contains(&"snap1".to_string()),
            "cut {cut}: final name after kill -9"
        );
        // The staging subvolume and its lock file.
        assert_eq!(
            staging_entries(dest)
                .iter()
                .filter(|n| !n.ends_with(".lock"))
                .count(),
            1,
            "cut {cut}: the killed receive leaves its staging"
        );
        // The next receive into the same DEST removes it and says so.
        let out = recv(&small, dest, &[]);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("removed stale staging subvolume"),
            "cut {cut}: {err}"
        );
        assert!(
            staging_entries(dest).is_empty(),
            "cut {cut}: stale staging not removed: {:?}",
            entries(dest)
        );
        assert_eq!(entries(dest), ["snap1"]);
        let st = Command::new("btrfs")
            .args(["-q", "subvolume", "delete"])
            .arg(dest.join("snap1"))
            .status()
            .unwrap();
        assert!(st.success());
    }
}

#[test]
fn sigint_removes_the_staging_subvolume() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let full = fs::read(streams.join("full-v2.stream")).unwrap();
    for sig in ["INT", "TERM"] {
        let (child, stdin) = start_partial(&full, full.len() / 2, dest);
        // The sender stays alive (stdin open): the receiver must still react.
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{sig}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            entries(dest).is_empty(),
            "SIG{sig}: left {:?}",
            entries(dest)
        );
    }
}

/// `subvol-recv` is the same receiver with the same flags.
#[test]
fn subvol_recv_binary_is_a_drop_in() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let out = Command::new(bin("subvol-recv"))
        .arg("-f")
        .arg(streams.join("full-v1.stream"))
        .arg(fs_.path())
        .output()
        .unwrap();
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("At subvol snap1"));
    let out = Command::new(bin("subvol-recv"))
        .arg("--dump")
        .arg("-f")
        .arg(streams.join("full-v1.stream"))
        .env("TZ", "UTC")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(out.stdout, fs::read(streams.join("full-v1.dump")).unwrap());
}

/// Faults of this host are not blamed on the stream: a missing parent exits 1, no btrfs mount
/// for DEST exits 6 (neither is 3, "invalid stream"), and nothing is left behind.
#[test]
fn host_faults_are_not_invalid_streams() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let incr = streams.join("incr-v2.stream");
    let out = recv_file(&incr, dest, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot find parent subvolume"), "{err}");
    assert!(entries(dest).is_empty(), "left {:?}", entries(dest));

    ok(&recv_file(&streams.join("full-v2.stream"), dest, &[]));
    // -m names a mount that is not btrfs: the parent is found, but cannot be opened.
    let out = recv_file(&incr, dest, &["-m", "/proc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("no btrfs mount found"), "{err}");
    assert_eq!(entries(dest), ["snap1"]);
}

// ---------- hardening (issue 11: items 3, 4, 5, 7, 10; issue 15: At snapshot on stdout) ----------

/// A one-file stream for subvolume `name` whose sender UUID is `uuid`.
fn small_stream(name: &[u8], uuid: Uuid, data: &[u8]) -> Vec<u8> {
    let sub = b(cmd::SUBVOL)
        .bytes(attr::PATH, name)
        .uuid(attr::UUID, &uuid)
        .u64(attr::CTRANSID, 9)
        .build()
        .unwrap();
    build(V2, &[sub, mkfile(b"f"), write(b"f", data), end_command(V2)])
}

fn btrfs(args: &[&str], paths: &[&Path]) {
    let out = Command::new("btrfs")
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until process `pid` is stopped (it stopped itself at a test pause point).
fn wait_stopped(pid: u32) {
    let t = Instant::now();
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('T'))
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "receive {pid} never reached its pause point (SUBVOL_TEST_PAUSE_AT ignored?)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A staging subvolume that carries a received UUID and is read-only (what a kill between
/// commit steps leaves) is never a parent, and the next receive into its DEST removes it.
#[test]
fn read_only_staging_with_received_uuid_is_no_parent_and_is_cleaned() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let (a, other) = (fs_.path().join("a"), fs_.path().join("other"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&other).unwrap();
    ok(&recv_file(&streams.join("full-v2.stream"), &a, &[]));
    // A read-only snapshot keeps the received UUID: a staging subvolume as a kill leaves it.
    let stale = a.join(".subvol-recv-staging.1.dead");
    btrfs(
        &["-q", "subvolume", "snapshot", "-r"],
        &[&a.join("snap1"), &stale],
    );
    btrfs(&["-q", "subvolume", "delete"], &[&a.join("snap1")]);
    let info = subvol_info(&stale);
    assert!(info.is_readonly() && !info.received_uuid.is_nil());
    let out = recv_file(&streams.join("incr-v2.stream"), &other, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "staging used as parent: {err}");
    assert!(err.contains("cannot find parent"), "{err}");
    assert!(entries(&other).is_empty(), "{:?}", entries(&other));
    // The next receive into `a` removes it.
    let out = recv(&small_stream(b"next", Uuid([3; 16]), b"x"), &a, &[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed stale staging subvolume"));
    assert_eq!(entries(&a), ["next"]);
}

/// kill -9 at each step of the commit sequence: the killed subvolume is never a parent while
/// uncommitted, and the next receive into DEST succeeds and leaves no staging.
#[test]
fn kill_at_each_commit_step_then_next_receive_cleans_up() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    for step in ["received", "readonly", "renamed"] {
        let dest = fs_.path().join(format!("d-{step}"));
        let other = fs_.path().join(format!("o-{step}"));
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&other).unwrap();
        let mut child = Command::new(bin("subvol"))
            .arg("recv")
            .arg("-f")
            .arg(streams.join("full-v2.stream"))
            .arg(&dest)
            .env("SUBVOL_TEST_PAUSE_AT", step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_stopped(child.id());
        child.kill().unwrap();
        let _ = child.wait();
        let incr = recv_file(&streams.join("incr-v2.stream"), &other, &[]);
        if step == "renamed" {
            // Renamed: committed (received UUID, read-only), a valid parent.
            assert!(subvol_info(&dest.join("snap1")).is_readonly());
            ok(&incr);
        } else {
            assert!(
                !dest.join("snap1").exists(),
                "{step}: final name after kill"
            );
            assert!(
                !staging_entries(&dest).is_empty(),
                "{step}: no staging left?"
            );
            let err = String::from_utf8_lossy(&incr.stderr);
            assert_eq!(
                incr.status.code(),
                Some(1),
                "{step}: staging used as parent: {err}"
            );
            assert!(entries(&other).is_empty(), "{step}: {:?}", entries(&other));
        }
        ok(&recv(
            &small_stream(b"next", Uuid([4; 16]), b"y"),
            &dest,
            &[],
        ));
        assert!(
            staging_entries(&dest).is_empty(),
            "{step}: staging left: {:?}",
            entries(&dest)
        );
        let want: &[&str] = if step == "renamed" {
            &["next", "snap1"]
        } else {
            &["next"]
        };
        assert_eq!(entries(&dest), want, "{step}");
    }
}

/// 8 receives at once into one DEST, many rounds: every one succeeds, every committed
/// subvolume is read-only with its received UUID, no staging is left. `SUBVOL_RACE_ROUNDS`
/// sets the number of rounds (default 100, about 30 s).
#[test]
fn parallel_receives_into_one_dest() {
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let rounds: u32 = std::env::var("SUBVOL_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dest = fs_.path().to_path_buf();
    for round in 0..rounds {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let dest = dest.clone();
                std::thread::spawn(move || {
                    let name = format!("r{round}-{i}");
                    let mut uuid = [i + 1; 16];
                    uuid[..4].copy_from_slice(&round.to_le_bytes());
                    let out = recv(&small_stream(name.as_bytes(), Uuid(uuid), b"z"), &dest, &[]);
                    (name, out)
                })
            })
            .collect();
        for h in handles {
            let (name, out) = h.join().unwrap();
            assert!(
                out.status.success(),
                "round {round}, {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let names = entries(&dest);
    assert_eq!(names.len(), 8 * rounds as usize, "{names:?}");
    for n in names {
        let info = subvol_info(&dest.join(&n));
        assert!(info.is_readonly(), "{n} is read-write");
        assert!(!info.received_uuid.is_nil(), "{n} has no received UUID");
    }
}

fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("k");
    let out = Command::new(bin("subvol"))
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    ok(&out);
    (key.clone(), dir.join("k.pub"))
}

fn sign(stream: &[u8], key: &Path, dir: &Path) -> Vec<u8> {
    let (i, o) = (dir.join("in"), dir.join("out"));
    fs::write(&i, stream).unwrap();
    let _ = fs::remove_file(&o);
    let out = Command::new(bin("subvol"))
        .arg("sign")
        .arg("--key")
        .arg(key)
        .arg("-f")
        .arg(&i)
        .arg("-o")
        .arg(&o)
        .output()
        .unwrap();
    ok(&out);
    fs::read(o).unwrap()
}

/// All or nothing for the whole input: whatever fails after the first subvolume's END, the
/// exit status is non-zero and no subvolume is committed.
#[test]
fn failure_anywhere_in_the_input_commits_nothing() {
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let first = small_stream(b"first", Uuid([5; 16]), b"one");
    let second = small_stream(b"second", Uuid([6; 16]), b"two");
    let hostile = build(
        V2,
        &[subvol(b"second"), mkfile(b"../escape"), end_command(V2)],
    );
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    let mut damaged = second.clone();
    let n = damaged.len();
    damaged[n - 20] ^= 1;
    let mut bare_header = Vec::new();
    Writer::new(&mut bare_header).write_header(V2).unwrap();
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("hostile second stream", cat(&first, &hostile), 5),
        ("damaged second stream", cat(&first, &damaged), 3),
        (
            "truncated second stream",
            cat(&first, &second[..second.len() - 5]),
            3,
        ),
        (
            "garbage after END",
            cat(&first, b"garbage!garbage!garbage!"),
            3,
        ),
        ("bare header after END", cat(&first, &bare_header), 3),
    ];
    for (what, input, code) in &cases {
        let out = recv(input, dest, &[]);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(entries(dest).is_empty(), "{what}: left {:?}", entries(dest));
    }
    // Signed input with --verify.
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keypair(keys.path());
    let public = public.to_str().unwrap().to_string();
    let signed = sign(&cat(&first, &second), &key, keys.path());
    let signed_one = sign(&first, &key, keys.path());
    let mut trailing = signed_one.clone();
    trailing.extend_from_slice(b"trailing bytes");
    let cut_in_second = signed.len() - (second.len() / 2);
    // A cut is a malformed stream (3); the rest fail verification (4).
    let vcases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("trailing bytes after a signed stream", trailing, 4),
        (
            "signed input cut in the second subvolume",
            signed[..cut_in_second].to_vec(),
            3,
        ),
        (
            "signed input, unsigned stream appended",
            cat(&signed_one, &second),
            4,
        ),
    ];
    for (what, input, code) in &vcases {
        let out = recv(input, dest, &["--verify", &public]);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(entries(dest).is_empty(), "{what}: left {:?}", entries(dest));
    }
    // And complete inputs commit every subvolume.
    ok(&recv(&signed, dest, &["--verify", &public]));
    assert_eq!(entries(dest), ["first", "second"]);
}

/// CLONE may read from a subvolume named by its own UUID (not received from the same sender)
/// only with --clone-from-any: a sibling's 0600 secret cannot be copied out.
#[test]
fn clone_from_a_sibling_by_its_own_uuid_needs_an_option() {
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let root = fs_.path();
    let (src, secret, dest) = (root.join("src"), root.join("secret"), root.join("dest"));
    btrfs(&["-q", "subvolume", "create"], &[&src]);
    fs::create_dir(&dest).unwrap();
    let data = vec![b's'; 4096];
    fs::write(src.join("key"), &data).unwrap();
    fs::set_permissions(
        src.join("key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    btrfs(&["-q", "subvolume", "snapshot", "-r"], &[&src, &secret]);
    let secret_uuid = subvol_info(&secret).uuid;
    let stream = build(
        V2,
        &[
            subvol(b"evil"),
            mkfile(b"f"),
            with_path(cmd::CLONE, b"f", |b| {
                b.u64(attr::FILE_OFFSET, 0)
                    .u64(attr::CLONE_LEN, 4096)
                    .uuid(attr::CLONE_UUID, &secret_uuid)
                    .u64(attr::CLONE_CTRANSID, 7)
                    .bytes(attr::CLONE_PATH, b"key")
                    .u64(attr::CLONE_OFFSET, 0)
            }),
            with_path(cmd::CHMOD, b"f", |b| b.u64(attr::MODE, 0o644)),
            end_command(V2),
        ],
    );
    let out = recv(&stream, &dest, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("clone"), "{err}");
    assert!(entries(&dest).is_empty(), "{:?}", entries(&dest));
    ok(&recv(&stream, &dest, &["--clone-from-any"]));
    assert_eq!(fs::read(dest.join("evil/f")).unwrap(), data);
}

/// Names from the stream are printed with control characters escaped; `At snapshot` goes to
/// stdout and `At subvol` to stderr, as btrfs-progs prints them.
#[test]
fn human_lines_escape_names_and_go_where_btrfs_progs_puts_them() {
    let Some(streams) = kernel_streams() else {
        return;
    };
    let Some(fs_) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dest = fs_.path();
    let out = Command::new(bin("subvol-recv"))
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&small_stream(
                b"t\x1b]0;owned\x07\x1b[2J",
                Uuid([8; 16]),
                b"q",
            ))?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{err:?}"
    );
    assert!(
        err.contains("At subvol t\\033]0;owned\\007\\033[2J"),
        "{err:?}"
    );
    // Full then incremental: At subvol on stderr, At snapshot on stdout.
    for (stream, line, on_stdout) in [
        ("full-v2.stream", "At subvol snap1", false),
        ("incr-v2.stream", "At snapshot snap2", true),
    ] {
        let out = Command::new(bin("subvol-recv"))
            .arg("-f")
            .arg(streams.join(stream))
            .arg(dest)
            .output()
            .unwrap();
        ok(&out);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let (yes, no) = if on_stdout {
            (&stdout, &stderr)
        } else {
            (&stderr, &stdout)
        };
        assert!(
            yes.contains(line),
            "{line}: stdout {stdout:?} stderr {stderr:?}"
        );
        assert!(
            !no.contains(line),
            "{line}: stdout {stdout:?} stderr {stderr:?}"
        );
    }
}
