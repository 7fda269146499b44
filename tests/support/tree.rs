//! Helpers for tree-send tests: digests, building trees, sending and receiving.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use subvol::digest::{DigestOptions, TreeDigest, digest_tree};

/// The tree digest with default options (mtime included, atime excluded).
pub fn digest(p: &Path) -> TreeDigest {
    digest_tree(p, &DigestOptions::default())
        .unwrap_or_else(|e| panic!("digest {}: {e}", p.display()))
}

/// Asserts two trees have equal digests, printing the differing lines otherwise.
pub fn assert_same_tree(expected: &Path, actual: &Path, what: &str) {
    let (a, b) = (digest(expected), digest(actual));
    assert!(
        a.sha256 == b.sha256,
        "{what}: {} and {} differ:\n{}",
        expected.display(),
        actual.display(),
        a.diff(&b, 40)
    );
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `subvol send` with extra arguments, into `out`.
pub fn subvol_send(args: &[&OsStr], out: &Path) {
    let mut c = Command::new(super::bin("subvol"));
    c.arg("send").args(args).arg("-f").arg(out);
    run(&mut c);
}

/// Full tree stream of `src`.
pub fn send_full(src: &Path, proto: u32, out: &Path) {
    let p = proto.to_string();
    subvol_send(
        &[src.as_os_str(), OsStr::new("--proto"), OsStr::new(&p)],
        out,
    );
}

/// Incremental tree stream `old` → `new`.
pub fn send_incr(old: &Path, new: &Path, proto: u32, out: &Path) {
    let p = proto.to_string();
    subvol_send(
        &[
            new.as_os_str(),
            OsStr::new("-p"),
            old.as_os_str(),
            OsStr::new("--proto"),
            OsStr::new(&p),
        ],
        out,
    );
}

/// `btrfs receive -f stream dest`.
pub fn btrfs_receive(stream: &Path, dest: &Path) {
    run(Command::new("btrfs")
        .arg("receive")
        .arg("-f")
        .arg(stream)
        .arg(dest));
}

/// Whether `subvol recv` is implemented: `--help` works and a receive does not report
/// "not implemented". Returns the error text when it is not.
pub fn subvol_recv(stream: &Path, dest: &Path) -> Result<(), String> {
    let out = Command::new(super::bin("subvol"))
        .arg("recv")
        .arg("-f")
        .arg(stream)
        .arg(dest)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Writes a file with `content`.
pub fn write(p: &Path, content: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Writes `data` at `offset` without truncating.
pub fn write_at(p: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// Punches a hole (keeping the size).
pub fn punch(p: &Path, offset: u64, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .unwrap();
}

/// Sets an xattr (not following symlinks).
pub fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {} {name}: {e}", p.display()));
}

/// Sets mtime and atime (not following symlinks).
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// chmod.
pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// lchown.
pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// mknod/mkfifo through the tools (tests run as root).
pub fn mknod(p: &Path, kind: &str, major: u32, minor: u32) {
    let mut c = Command::new("mknod");
    c.arg(p).arg(kind);
    if kind != "p" {
        c.arg(major.to_string()).arg(minor.to_string());
    }
    run(&mut c);
}

/// A unix socket file.
pub fn mksock(p: &Path) {
    let l = std::os::unix::net::UnixListener::bind(p).unwrap();
    drop(l);
}

/// `cp -a` (keeps hard links, xattrs, times, sparseness).
pub fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp")
        .arg("-a")
        .arg("--sparse=always")
        .arg(from)
        .arg(to));
}

/// A path made of raw bytes under `dir`.
pub fn raw(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// Opens a file for appending (used to change a file while it is sent).
pub fn open_append(p: &Path) -> fs::File {
    fs::OpenOptions::new()
        .append(true)
        .custom_flags(0)
        .open(p)
        .unwrap()
}

/// xorshift64*: a small seeded generator, so failures reproduce.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        ok.success().then_some(Tmpfs { dir })
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An ext4 file system on a loop-mounted image, unmounted on drop.
pub struct Ext4 {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl Ext4 {
    pub fn new() -> Option<Ext4> {
        let dir = tempfile::tempdir().ok()?;
        let img = dir.path().join("ext4.img");
        let f = fs::File::create(&img).ok()?;
        f.set_len(256 << 20).ok()?;
        drop(f);
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).ok()?;
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&img)
            .status()
            .ok()?;
        if !mkfs.success() {
            return None;
        }
        let m = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .status()
            .ok()?;
        m.success().then_some(Ext4 { dir, mnt })
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// One CLONE command of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneCmd {
    pub path: Vec<u8>,
    pub offset: u64,
    pub len: u64,
    pub clone_uuid: subvol::stream::Uuid,
    pub clone_path: Vec<u8>,
    pub clone_offset: u64,
}

/// What a stream carries: the SUBVOL/SNAPSHOT UUIDs, WRITE payload bytes and the CLONEs.
#[derive(Clone, Debug, Default)]
pub struct StreamStats {
    pub uuid: Option<subvol::stream::Uuid>,
    pub parent_uuid: Option<subvol::stream::Uuid>,
    pub write_bytes: u64,
    pub writes: u64,
    pub clones: Vec<CloneCmd>,
}

impl StreamStats {
    /// Bytes the CLONEs cover.
    pub fn cloned_bytes(&self) -> u64 {
        self.clones.iter().map(|c| c.len).sum()
    }

    /// The CLONEs into `path`.
    pub fn clones_into(&self, path: &str) -> Vec<&CloneCmd> {
        self.clones
            .iter()
            .filter(|c| c.path == path.as_bytes())
            .collect()
    }
}

/// Reads a stream file with `subvol::stream::Reader` and counts WRITE bytes and CLONEs.
pub fn stream_stats(stream: &Path) -> StreamStats {
    use subvol::stream::{Command, Item, Op, Reader};
    let f = std::io::BufReader::with_capacity(1 << 20, fs::File::open(stream).unwrap());
    let mut r = Reader::new(f);
    let mut c = Command::empty();
    let mut st = StreamStats::default();
    loop {
        match r.next(&mut c) {
            Ok(Some(Item::Header(_))) => {}
            Ok(Some(Item::Command)) => match c.op().unwrap() {
                Op::Subvol { uuid, .. } => st.uuid = Some(uuid),
                Op::Snapshot {
                    uuid, clone_uuid, ..
                } => {
                    st.uuid = Some(uuid);
                    st.parent_uuid = Some(clone_uuid);
                }
                Op::Write { data, .. } => {
                    st.write_bytes += data.len() as u64;
                    st.writes += 1;
                }
                Op::Clone {
                    path,
                    offset,
                    len,
                    clone_uuid,
                    clone_path,
                    clone_offset,
                    ..
                } => st.clones.push(CloneCmd {
                    path: path.to_vec(),
                    offset,
                    len,
                    clone_uuid,
                    clone_path: clone_path.to_vec(),
                    clone_offset,
                }),
                Op::End => break,
                _ => {}
            },
            Ok(None) => break,
            Err(e) => panic!("{}: {e}", stream.display()),
        }
    }
    st
}

/// Bytes of `path` (a file or a tree) whose extents are shared with other files or snapshots:
/// total minus exclusive from `btrfs filesystem du -s --raw` (sync first).
pub fn shared_bytes(path: &Path) -> u64 {
    let out = run(Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
        })
        .unwrap_or_else(|| panic!("btrfs filesystem du output: {text}"));
    let v: Vec<u64> = line
        .split_whitespace()
        .take(2)
        .map(|w| w.parse().unwrap())
        .collect();
    v[0] - v[1]
}
