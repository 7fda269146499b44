//! Tests: mirrors and pools, end to end through the `subvol` binary.
//!
//! One repository of five versions of a generated tree is published once per test run (plain
//! directories on the build machine's file system, as a build host would). Tests serve it (or a
//! copy they alter) with a real HTTP server on 127.0.0.1: a small Range-capable static server
//! in Python, written by the test, which logs every request (path, Range header, status, bytes
//! sent) and can cut one response short on request. Every version received is compared by tree
//! digest with the tree it was published from.

use crate::support::bin;
use crate::support::btrfs_fixture::{BtrfsFs, find_tool, skip_or_panic};
use crate::support::tree::{Rng, assert_same_tree, bytes, copy_tree, run, write, write_at};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

pub(crate) const VERSIONS: usize = 5;

/// The published repository, shared by all tests (read-only: tests copy it to alter it).
pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
    pub(crate) repo: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) public: PathBuf,
    /// Source trees, index 0 = version "1".
    pub(crate) trees: Vec<PathBuf>,
    /// The index as it was after each publish (index i = after version i+1).
    saved_index: Vec<PathBuf>,
}

pub(crate) fn subvol() -> Command {
    Command::new(bin("subvol"))
}

/// Generates version 1, then each next version from the previous one: changed blocks of a big
/// file, rewritten, added, removed and renamed files, a renamed directory, mode changes.
fn make_trees(base: &Path) -> Vec<PathBuf> {
    let mut rng = Rng(0x5eed_1234);
    let v1 = base.join("v1");
    for d in 0..6 {
        for f in 0..25 {
            let len = 200 + rng.below(16 << 10) as usize;
            write(&v1.join(format!("dir{d}/file{f}")), &bytes(rng.next(), len));
        }
    }
    write(&v1.join("big.bin"), &bytes(7, 2 << 20));
    write(&v1.join("etc/config"), b"version=1\n");
    std::os::unix::fs::symlink("etc/config", v1.join("config-link")).unwrap();
    fs::hard_link(v1.join("dir0/file0"), v1.join("hardlink0")).unwrap();
    let mut out = vec![v1];
    for v in 2..=VERSIONS {
        let prev = out.last().unwrap().clone();
        let next = base.join(format!("v{v}"));
        copy_tree(&prev, &next);
        // A few changed blocks in the big file, and some appended data.
        for _ in 0..3 {
            let off = rng.below(2 << 20) & !4095;
            write_at(&next.join("big.bin"), off, &bytes(rng.next(), 4096));
        }
        write_at(
            &next.join("big.bin"),
            (2 << 20) + (v as u64 - 2) * 65536,
            &bytes(rng.next(), 65536),
        );
        write(
            &next.join("etc/config"),
            format!("version={v}\n").as_bytes(),
        );
        for _ in 0..6 {
            let d = rng.below(6);
            let f = rng.below(25);
            let p = next.join(format!("dir{d}/file{f}"));
            if p.exists() {
                let len = 200 + rng.below(16 << 10) as usize;
                write(&p, &bytes(rng.next(), len));
            }
        }
        for i in 0..5 {
            write(
                &next.join(format!("new{v}/added{i}")),
                &bytes(rng.next(), 3000),
            );
        }
        let victim = next.join(format!("dir{}/file{}", rng.below(6), rng.below(25)));
        let _ = fs::remove_file(victim);
        // Rename a directory (moves are detected by the tree differ).
        let _ = fs::rename(
            next.join(format!("dir{}", v - 1)),
            next.join(format!("moved{v}")),
        );
        if let Ok(m) = fs::metadata(next.join("dir0/file1")) {
            use std::os::unix::fs::PermissionsExt;
            let mut p = m.permissions();
            p.set_mode(if v % 2 == 0 { 0o600 } else { 0o644 });
            fs::set_permissions(next.join("dir0/file1"), p).unwrap();
        }
        out.push(next);
    }
    out
}

pub(crate) fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if find_tool("python3").is_none() {
            skip_or_panic("python3 is needed for the HTTP server");
            return None;
        }
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Leftovers of earlier runs (the fixture lives as long as the test process).
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = n.strip_prefix("mirror-fixture-")
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("mirror-fixture-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let trees = make_trees(&dir.join("src"));
        let key = dir.join("vendor.key");
        run(subvol().arg("keygen").arg("-o").arg(&key));
        let repo = dir.join("repo");
        let mut saved_index = Vec::new();
        for (i, t) in trees.iter().enumerate() {
            run(subvol()
                .arg("publish")
                .arg("--repo")
                .arg(&repo)
                .arg("--key")
                .arg(&key)
                .arg(t)
                .arg("--version")
                .arg((i + 1).to_string())
                .arg("--level")
                .arg("3"));
            let saved = dir.join(format!("index-{}.json", i + 1));
            fs::copy(repo.join("index.json"), &saved).unwrap();
            saved_index.push(saved);
        }
        Some(Fixture {
            public: dir.join("vendor.key.pub"),
            dir,
            repo,
            key,
            trees,
            saved_index,
        })
    })
    .as_ref()
}

pub(crate) fn index_of(repo: &Path) -> Value {
    let env: Value = serde_json::from_slice(&fs::read(repo.join("index.json")).unwrap()).unwrap();
    serde_json::from_str(env["index"].as_str().unwrap()).unwrap()
}

/// The stream file `from` → `to` (None: full) of an index.
pub(crate) fn stream(index: &Value, from: Option<&str>, to: &str) -> (String, u64) {
    let s = index["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["to"] == to && s["from"].as_str() == from)
        .unwrap_or_else(|| panic!("no stream {from:?} -> {to}"));
    (
        s["path"].as_str().unwrap().to_string(),
        s["size"].as_u64().unwrap(),
    )
}

const SERVER: &str = r#"
import http.server, os, re, socket, sys, threading, time
root, log_path, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def note(self, rel, rng, status, sent):
        with lock, open(log_path, "a") as f:
            f.write("%s\t%s\t%d\t%d\n" % (rel, rng or "-", status, sent))
    def do_GET(self):
        rel = self.path.split("?")[0].lstrip("/")
        real = os.path.realpath(os.path.join(root, rel))
        if not real.startswith(os.path.realpath(root) + "/") or not os.path.isfile(real):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.note(rel, None, 404, 0)
            return
        size = os.path.getsize(real)
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        # One range (bytes=N- or bytes=N-M); several ranges are ignored (200), as many
        # servers do.
        m = re.match(r"bytes=(\d+)-(\d*)$", rng) if rng else None
        if m:
            start = int(m.group(1))
            if m.group(2):
                end = min(int(m.group(2)), size - 1)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.note(rel, rng, 416, 0)
                return
            status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        cut = None
        cut_file = os.path.join(ctl, "cut")
        with lock:
            if os.path.exists(cut_file):
                want, n = open(cut_file).read().split()
                if want == rel:
                    os.remove(cut_file)
                    cut = int(n)
        limit = end - start + 1 if cut is None else min(end - start + 1, cut)
        sent = 0
        trickle_file = os.path.join(ctl, "trickle")
        if rel.startswith("streams/") and os.path.exists(trickle_file):
            # A stalling server: one byte every INTERVAL seconds, or nothing (INTERVAL < 0).
            interval = float(open(trickle_file).read())
            if interval < 0:
                time.sleep(3600)
            try:
                with open(real, "rb") as f:
                    f.seek(start)
                    while sent < limit:
                        self.wfile.write(f.read(1))
                        self.wfile.flush()
                        sent += 1
                        time.sleep(interval)
            except OSError:
                self.close_connection = True
            return
        # A lying server: ranges of stream files come back with every byte inverted.
        garble = status == 206 and rel.endswith(".zst") and os.path.exists(os.path.join(ctl, "garble"))
        with open(real, "rb") as f:
            f.seek(start)
            while sent < limit:
                b = f.read(min(65536, limit - sent))
                if not b:
                    break
                if garble:
                    b = bytes(x ^ 0xFF for x in b)
                self.wfile.write(b)
                sent += len(b)
        self.wfile.flush()
        self.note(rel, rng, status, sent)
        if cut is not None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A static HTTP server on 127.0.0.1 serving `root` (one range per request), killed on drop.
pub(crate) struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    ctl: tempfile::TempDir,
}

/// One logged request.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) path: String,
    pub(crate) range: Option<String>,
    pub(crate) status: u16,
    pub(crate) sent: u64,
}

impl Server {
    pub(crate) fn start(root: &Path) -> Server {
        let ctl = tempfile::tempdir().unwrap();
        let script = ctl.path().join("server.py");
        fs::write(&script, SERVER).unwrap();
        let log = ctl.path().join("requests.log");
        fs::write(&log, "").unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(root)
            .arg(&log)
            .arg(ctl.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("server port");
        Server {
            child,
            port,
            log,
            ctl,
        }
    }
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
    pub(crate) fn requests(&self) -> Vec<Req> {
        fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Req {
                    path: f[0].to_string(),
                    range: (f[1] != "-").then(|| f[1].to_string()),
                    status: f[2].parse().unwrap(),
                    sent: f[3].parse().unwrap(),
                }
            })
            .collect()
    }
    pub(crate) fn clear_log(&self) {
        fs::write(&self.log, "").unwrap();
    }
    /// Stream files are sent one byte every `interval` seconds (negative: never a byte).
    pub(crate) fn trickle(&self, interval: f64) {
        fs::write(self.ctl.path().join("trickle"), interval.to_string()).unwrap();
    }
    /// Ranges of stream files are answered with other bytes (every byte inverted).
    fn garble(&self) {
        fs::write(self.ctl.path().join("garble"), "").unwrap();
    }
    /// The next response for `rel` stops after `n` bytes and the connection is closed.
    pub(crate) fn cut_next(&self, rel: &str, n: u64) {
        fs::write(self.ctl.path().join("cut"), format!("{rel} {n}")).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `subvol pull SOURCE --into POOL --verify PUB --json [extra]`.
pub(crate) fn pull(f: &Fixture, source: &str, pool: &Path, extra: &[&str]) -> Output {
    subvol()
        .arg("pull")
        .arg(source)
        .arg("--into")
        .arg(pool)
        .arg("--verify")
        .arg(&f.public)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap()
}

pub(crate) fn pull_ok(f: &Fixture, source: &str, pool: &Path, extra: &[&str]) -> Value {
    let out = pull(f, source, pool, extra);
    assert!(
        out.status.success(),
        "pull {source} {extra:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pull --json output: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub(crate) fn pull_fails(
    f: &Fixture,
    source: &str,
    pool: &Path,
    extra: &[&str],
    code: i32,
) -> String {
    let out = pull(f, source, pool, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "pull {source} {extra:?}: expected exit {code}:\n{err}"
    );
    err
}

/// Subvolume names directly in the pool.
pub(crate) fn pool_versions(pool: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

pub(crate) fn check_version(f: &Fixture, pool: &Path, v: usize) {
    assert_same_tree(
        &f.trees[v - 1],
        &pool.join(v.to_string()),
        &format!("pulled version {v}"),
    );
}

pub(crate) fn new_pool(fs: &BtrfsFs, name: &str) -> PathBuf {
    let p = fs.path().join(name);
    fs::create_dir(&p).unwrap();
    p
}

/// A copy of the repository that a test may alter.
pub(crate) fn repo_copy(f: &Fixture, dir: &Path) -> PathBuf {
    let r = dir.join("repo");
    copy_tree(&f.repo, &r);
    r
}

#[test]
fn publish_writes_log_distance_deltas_and_a_signed_index() {
    let Some(f) = fixture() else { return };
    let idx = index_of(&f.repo);
    assert_eq!(idx["serial"], VERSIONS as u64);
    assert_eq!(idx["versions"].as_array().unwrap().len(), VERSIONS);
    // Version k (1-based, position k-1) has a full and deltas from positions k-1-1, -2, -4.
    for k in 1..=VERSIONS {
        let to = k.to_string();
        stream(&idx, None, &to);
        let mut d = 1;
        while d < k {
            stream(&idx, Some(&(k - d).to_string()), &to);
            d *= 2;
        }
    }
    let n = idx["streams"].as_array().unwrap().len();
    assert_eq!(
        n,
        5 + (1 + 2 + 2 + 3),
        "fulls + deltas into versions 2, 3, 4, 5"
    );
    // Every file is named by its content and has the listed size.
    for s in idx["streams"].as_array().unwrap() {
        let p = f.repo.join(s["path"].as_str().unwrap());
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, s["size"].as_u64().unwrap());
        use sha2::Digest;
        let h = subvol::util::hex::encode(sha2::Sha256::digest(&data));
        assert_eq!(h, s["sha256"].as_str().unwrap());
    }
    // A delta is much smaller than a full.
    let (_, full) = stream(&idx, None, "5");
    let (_, delta) = stream(&idx, Some("4"), "5");
    assert!(delta * 4 < full, "delta {delta} vs full {full}");
    // Publishing the same tree again is refused; so is a published version name.
    let out = subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&f.repo)
        .arg("--key")
        .arg(&f.key)
        .arg(&f.trees[4])
        .arg("--trees")
        .arg(f.dir.join("no-trees"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("identical"));
    // The stream files verify with `subvol verify --key` after decompression.
    let (path, _) = stream(&idx, Some("3"), "5");
    let raw = f.dir.join("check.stream");
    run(Command::new("zstd")
        .args(["-d", "-q", "-f", "-o"])
        .arg(&raw)
        .arg(f.repo.join(path)));
    run(subvol()
        .arg("verify")
        .arg("-f")
        .arg(&raw)
        .arg("--key")
        .arg(&f.public));
    let _ = fs::remove_file(raw);
}

/// The content map listed with a stream: (path, sha256, size).
fn map_of(s: &Value) -> Option<(String, String, u64)> {
    let m = s.get("map")?;
    Some((
        m["path"].as_str().unwrap().to_string(),
        m["sha256"].as_str().unwrap().to_string(),
        m["size"].as_u64().unwrap(),
    ))
}

#[test]
fn full_streams_are_framed_along_their_data_with_a_content_map() {
    use subvol::content::{ContentMap, FrameKind, block_key};
    let Some(f) = fixture() else { return };
    let idx = index_of(&f.repo);
    for s in idx["streams"].as_array().unwrap() {
        assert_eq!(
            map_of(s).is_some(),
            s["from"].is_null(),
            "maps for fulls only: {s}"
        );
    }
    let full = idx["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["to"] == "5" && s["from"].is_null())
        .unwrap();
    let (map_path, map_sha, map_size) = map_of(full).unwrap();
    let map_bytes = fs::read(f.repo.join(&map_path)).unwrap();
    assert_eq!(map_bytes.len() as u64, map_size);
    use sha2::Digest;
    let sha = subvol::util::hex::encode(sha2::Sha256::digest(&map_bytes));
    assert_eq!(sha, map_sha);
    assert_eq!(map_path, format!("streams/{sha}.map"));
    let comp = fs::read(f.repo.join(full["path"].as_str().unwrap())).unwrap();
    let stream_bytes = full["stream_bytes"].as_u64().unwrap();
    let map = ContentMap::decode(&map_bytes, stream_bytes, comp.len() as u64).unwrap();
    // Still one zstd file, and every frame on its own is its range of the stream.
    let stream = zstd::stream::decode_all(&comp[..]).unwrap();
    assert_eq!(stream.len() as u64, stream_bytes);
    let (mut data, mut windows) = (0, 0);
    for fr in &map.frames {
        let c = &comp[fr.comp_offset as usize..(fr.comp_offset + fr.comp_len) as usize];
        assert_eq!(block_key(c), fr.digest);
        let want = &stream[fr.stream_offset as usize..(fr.stream_offset + fr.stream_len) as usize];
        assert_eq!(zstd::stream::decode_all(c).unwrap(), want);
        match fr.kind {
            FrameKind::Data => {
                let keys: Vec<_> = want.chunks(4096).map(block_key).collect();
                assert_eq!(map.keys_of(fr), &keys[..]);
                data += fr.stream_len;
            }
            FrameKind::Window => {
                assert_eq!(map.keys_of(fr), &[block_key(want)]);
                data += fr.stream_len;
                windows += fr.stream_len;
            }
            FrameKind::Literal => {}
        }
    }
    // Most of the stream is data in DATA frames (the tree is 2 MiB of big.bin and 150 files
    // of up to 16 KiB), nearly all of it in window frames named by one key (protocol 2 WRITEs
    // start at multiples of 128 KiB).
    assert!(data * 10 > stream_bytes * 7, "{data} of {stream_bytes}");
    assert!(windows * 10 > data * 9, "{windows} of {data}");
    // The cost against one zstd frame of the same stream at the same level (3).
    let single = zstd::stream::encode_all(&stream[..], 3).unwrap();
    eprintln!(
        "full 5: stream {stream_bytes} B; one zstd frame {} B; {} frames {} B + map {} B = {:+.2} %",
        single.len(),
        map.frames.len(),
        comp.len(),
        map_bytes.len(),
        ((comp.len() + map_bytes.len()) as f64 / single.len() as f64 - 1.0) * 100.0
    );
    assert!((comp.len() + map_bytes.len()) * 100 < single.len() * 105);
}

#[test]
fn publish_no_deltas_writes_fulls_that_btrfs_receive_takes() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    for (i, t) in f.trees[..2].iter().enumerate() {
        run(subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(&f.key)
            .arg("--trees")
            .arg(work.path().join("trees"))
            .arg("--no-deltas")
            .arg("--version")
            .arg((i + 1).to_string())
            .arg(t));
    }
    let idx = index_of(&repo);
    let streams = idx["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert!(
        streams
            .iter()
            .all(|s| s["from"].is_null() && map_of(s).is_some())
    );
    assert_eq!(fs::read_dir(repo.join("streams")).unwrap().count(), 4);
    // The framed full goes through the standard tools: zstd -d | btrfs receive.
    let (path, _) = stream(&idx, None, "2");
    let dest = btrfs.path().join("recv");
    fs::create_dir(&dest).unwrap();
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "zstd -d -q < '{}' | btrfs receive '{}'",
        repo.join(path).display(),
        dest.display()
    )));
    assert!(out.status.success());
    assert_same_tree(
        &f.trees[1],
        &dest.join("2"),
        "btrfs receive of the framed full",
    );
}

#[test]
fn pull_over_http_from_empty_and_from_every_older_version() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let srv = Server::start(&f.repo);
    // From empty: one full stream of the newest.
    let pool = new_pool(&btrfs, "empty");
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    assert_eq!(r["target"], "5");
    assert_eq!(r["steps"].as_array().unwrap().len(), 1);
    assert!(r["steps"][0]["from"].is_null());
    check_version(f, &pool, 5);
    // Pulling again does nothing.
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    assert_eq!(r["already"], true);

    let idx = index_of(&f.repo);
    let (_, full5) = stream(&idx, None, "5");
    for old in 1..VERSIONS {
        let pool = new_pool(&btrfs, &format!("from{old}"));
        let r = pull_ok(f, &srv.url(), &pool, &["--version", &old.to_string()]);
        assert_eq!(r["target"], old.to_string());
        check_version(f, &pool, old);
        let r = pull_ok(f, &srv.url(), &pool, &[]);
        let steps = r["steps"].as_array().unwrap();
        // Deltas only, at most popcount(distance) steps, cheaper than the full.
        assert!(steps.iter().all(|s| !s["from"].is_null()), "{r}");
        assert!(
            steps.len() <= (VERSIONS - old).count_ones() as usize,
            "{old} -> 5 in {} steps",
            steps.len()
        );
        assert!(r["bytes"].as_u64().unwrap() < full5);
        assert_eq!(steps[0]["from"], old.to_string());
        check_version(f, &pool, 5);
        // Intermediate versions are gone; the old one stays.
        assert_eq!(pool_versions(&pool), vec![old.to_string(), "5".to_string()]);
    }
    // The requests were plain GETs of index and stream files.
    assert!(srv.requests().iter().all(|r| r.status == 200));
}

#[test]
fn pull_from_a_directory_with_dry_run_and_retention() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    let src = f.repo.to_str().unwrap();
    pull_ok(f, src, &pool, &["--version", "1"]);
    pull_ok(f, src, &pool, &["--version", "2"]);
    check_version(f, &pool, 2);
    // Dry run: the plan, nothing changes.
    let out = subvol()
        .arg("pull")
        .arg(src)
        .arg("--into")
        .arg(&pool)
        .arg("--verify")
        .arg(&f.public)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan: 2 → 5 in 2 step(s)"), "{text}");
    assert!(text.contains("  1. delta 2 → "), "{text}");
    assert_eq!(pool_versions(&pool), vec!["1", "2"]);
    // --keep 2: the oldest pulled version goes, the target stays.
    let r = pull_ok(f, src, &pool, &["--keep", "2"]);
    assert_eq!(
        r["steps"].as_array().unwrap().len(),
        2,
        "2 -> 3|4 -> 5: {r}"
    );
    assert_eq!(pool_versions(&pool), vec!["2", "5"]);
    check_version(f, &pool, 5);

    // list / show / snapshot / delete.
    let out = run(subvol().arg("list").arg(&pool).arg("--json"));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let idx = index_of(&f.repo);
    let uuid5 = idx["versions"][4]["uuid"].as_str().unwrap();
    let e5 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "5")
        .unwrap();
    assert_eq!(e5["received_uuid"], uuid5);
    assert_eq!(e5["readonly"], true);
    assert_eq!(e5["version"], "5");
    let snap = pool.join("work");
    run(subvol().arg("snapshot").arg(pool.join("5")).arg(&snap));
    let out = run(subvol().arg("show").arg(&snap).arg("--json"));
    let show: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(show["readonly"], false);
    assert_eq!(show["parent_uuid"], e5["uuid"]);
    assert!(show["received_uuid"].is_null());
    let text = String::from_utf8_lossy(&run(subvol().arg("list").arg(&pool)).stdout).into_owned();
    assert!(text.contains("work") && text.contains(uuid5), "{text}");
    // Retention never deletes subvolumes it did not pull.
    pull_ok(f, src, &pool, &["--keep", "1"]);
    assert_eq!(pool_versions(&pool), vec!["5", "work"]);
    run(subvol().arg("delete").arg(&snap));
    assert_eq!(pool_versions(&pool), vec!["5"]);
}

#[test]
fn interrupted_download_resumes_with_range() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let srv = Server::start(&f.repo);
    let idx = index_of(&f.repo);
    let (full, size) = stream(&idx, None, "5");
    // 1. The connection drops in the middle: the same pull resumes with a Range request.
    let pool = new_pool(&btrfs, "cut");
    let cut = size / 2 + 123;
    srv.cut_next(&full, cut);
    pull_ok(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, 5);
    let reqs: Vec<Req> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path == full)
        .collect();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!((reqs[0].range.as_deref(), reqs[0].sent), (None, cut));
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(reqs[1].status, 206);
    assert_eq!(reqs[0].sent + reqs[1].sent, size, "not restarted");

    // 2. A pull killed mid-download leaves `<sha>.part` in the pool's cache; the next pull
    //    fetches only the rest.
    srv.clear_log();
    let pool = new_pool(&btrfs, "killed");
    let sha = full.trim_start_matches("streams/").trim_end_matches(".zst");
    let cache = pool.join(".subvol/cache");
    fs::create_dir_all(&cache).unwrap();
    let have = size / 3;
    let data = fs::read(f.repo.join(&full)).unwrap();
    fs::write(cache.join(format!("{sha}.part")), &data[..have as usize]).unwrap();
    pull_ok(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, 5);
    let reqs: Vec<Req> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path == full)
        .collect();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert_eq!(reqs[0].sent, size - have);
    assert!(
        fs::read_dir(&cache).unwrap().next().is_none(),
        "cache emptied"
    );
}

#[test]
fn tampered_or_missing_files_make_pull_use_another_chain() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let idx = index_of(&repo);
    let srv = Server::start(&repo);

    // Tampered delta 4 -> 5 (one byte in the middle): refused by its hash, full of 5 used.
    let pool = new_pool(&btrfs, "tampered");
    pull_ok(f, &srv.url(), &pool, &["--version", "4"]);
    let (d45, _) = stream(&idx, Some("4"), "5");
    let p = repo.join(&d45);
    let mut data = fs::read(&p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(&p, &data).unwrap();
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    let refused = r["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    assert!(refused[0].as_str().unwrap().contains("SHA-256"), "{r}");
    assert!(
        r["steps"][0]["from"].is_null(),
        "fell back to the full: {r}"
    );
    check_version(f, &pool, 5);

    // Missing delta 3 -> 5: another chain (3 -> 4 -> 5 is gone too, since 4 -> 5 is bad, so
    // the full again, or 3 -> 4 then the full: whichever is cheaper, but never the missing one).
    let pool = new_pool(&btrfs, "missing");
    pull_ok(f, &srv.url(), &pool, &["--version", "3"]);
    let (d35, _) = stream(&idx, Some("3"), "5");
    fs::remove_file(repo.join(&d35)).unwrap();
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    let refused: Vec<&str> = r["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(refused.iter().any(|s| s.contains("404")), "{r}");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["path"] != d35.as_str() && s["path"] != d45.as_str())
    );
    check_version(f, &pool, 5);

    // No usable chain at all (every stream into 5 missing or tampered; note that "full of 1,
    // then 1 -> 5" is a chain too): a clear error (exit 4) and nothing committed.
    let pool = new_pool(&btrfs, "nochain");
    pull_ok(f, &srv.url(), &pool, &["--version", "4"]);
    for from in [None, Some("1")] {
        let (path, _) = stream(&idx, from, "5");
        let p = repo.join(&path);
        let mut data = fs::read(&p).unwrap();
        let last = data.len() - 10;
        data[last] ^= 1;
        fs::write(&p, &data).unwrap();
    }
    let err = pull_fails(f, &srv.url(), &pool, &[], 4);
    assert!(err.contains("no usable chain"), "{err}");
    assert_eq!(pool_versions(&pool), vec!["4"]);
    // Repaired mirror: the failed pull left nothing in the way.
    let _ = fs::remove_dir_all(repo.join("streams"));
    copy_tree(&f.repo.join("streams"), &repo.join("streams"));
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    assert!(r["refused"].as_array().unwrap().is_empty(), "{r}");
    check_version(f, &pool, 5);
}

#[test]
fn rolled_back_expired_or_forged_index_is_refused() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let srv = Server::start(&repo);
    let pool = new_pool(&btrfs, "pool");
    pull_ok(f, &srv.url(), &pool, &["--version", "2"]);

    // Rolled back: the mirror serves the index of serial 3 after the pool saw serial 5.
    fs::copy(&f.saved_index[2], repo.join("index.json")).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &[], 4);
    assert!(err.contains("serial 3 is older than serial 5"), "{err}");
    assert_eq!(pool_versions(&pool), vec!["2"]);
    // Another pool never saw serial 5 and accepts it.
    let other = new_pool(&btrfs, "other");
    pull_ok(f, &srv.url(), &other, &["--version", "1"]);

    // Expired: re-signed by the right key, but past its expiry.
    let key = subvol::sign::SecretKey::load(&f.key).unwrap();
    let mut keys = subvol::sign::KeySet::new();
    keys.add(key.public().clone());
    let (mut index, _) =
        subvol::mirror::Index::open(&fs::read(f.repo.join("index.json")).unwrap(), &keys).unwrap();
    index.expires = index.created.saturating_sub(3600);
    index.serial += 1;
    fs::write(repo.join("index.json"), index.sign(&key).unwrap()).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &[], 4);
    assert!(err.contains("expired"), "{err}");

    // Forged: the index text altered without the key.
    let text = fs::read_to_string(f.repo.join("index.json")).unwrap();
    let forged = text.replace("\\\"serial\\\": 5", "\\\"serial\\\": 99");
    assert_ne!(forged, text);
    fs::write(repo.join("index.json"), forged).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &[], 4);
    assert!(err.contains("does not verify"), "{err}");

    // Signed by another key.
    let other_key = work.path().join("other.key");
    run(subvol().arg("keygen").arg("-o").arg(&other_key));
    let other = subvol::sign::SecretKey::load(&other_key).unwrap();
    index.expires = u64::MAX / 2;
    fs::write(repo.join("index.json"), index.sign(&other).unwrap()).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &[], 4);
    assert!(err.contains("not an accepted key"), "{err}");
    assert_eq!(pool_versions(&pool), vec!["2"]);

    // The real index again: the pull goes on.
    fs::copy(f.repo.join("index.json"), repo.join("index.json")).unwrap();
    pull_ok(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, 5);
}

#[test]
fn publish_prune_keeps_chains_valid() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let trees = work.path().join("trees");
    // The copy needs its own tree store: the fixture's `repo.trees`.
    copy_tree(&f.dir.join("repo.trees"), &trees);
    let pool = new_pool(&btrfs, "pool");
    let srv = Server::start(&repo);
    pull_ok(f, &srv.url(), &pool, &["--version", "3"]);
    let before: Vec<String> = fs::read_dir(repo.join("streams"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Re-sign and prune to 3 versions: 1 and 2 retired.
    let out = run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&f.key)
        .arg("--trees")
        .arg(&trees)
        .arg("--prune")
        .arg("3")
        .arg("--json"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["pruned"], serde_json::json!(["1", "2"]));
    assert_eq!(r["serial"], VERSIONS as u64 + 1);
    let idx = index_of(&repo);
    let names: Vec<&str> = idx["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["3", "4", "5"]);
    for s in idx["streams"].as_array().unwrap() {
        assert!(names.contains(&s["to"].as_str().unwrap()));
        if let Some(from) = s["from"].as_str() {
            assert!(names.contains(&from), "{s}");
        }
        assert!(repo.join(s["path"].as_str().unwrap()).is_file());
    }
    // Files of retired versions stay while the previous index names them (mirror clients
    // that read it can still fetch), and go with the next publish.
    let after1 = fs::read_dir(repo.join("streams")).unwrap().count();
    assert_eq!(after1, before.len());
    assert!(!trees.join("1").exists() && !trees.join("2").exists());
    run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&f.key)
        .arg("--trees")
        .arg(&trees));
    let after2 = fs::read_dir(repo.join("streams")).unwrap().count();
    let listed = idx["streams"].as_array().unwrap();
    let maps = listed.iter().filter(|s| s["map"].is_object()).count();
    assert_eq!(maps, 3, "one map per full");
    assert_eq!(after2, listed.len() + maps);
    // A new version after pruning gets deltas from the remaining ones, and pools still update.
    let v6 = work.path().join("v6");
    copy_tree(&f.trees[4], &v6);
    write(&v6.join("etc/config"), b"version=6\n");
    run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&f.key)
        .arg("--trees")
        .arg(&trees)
        .arg(&v6));
    let idx = index_of(&repo);
    stream(&idx, Some("5"), "6");
    stream(&idx, Some("4"), "6");
    let r = pull_ok(f, &srv.url(), &pool, &[]);
    assert_eq!(r["target"], "6");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["from"].is_null())
    );
    assert_same_tree(&v6, &pool.join("6"), "pulled version 6");
}

#[test]
fn pool_init_makes_a_loopback_btrfs_pool_idempotently() {
    if !crate::support::btrfs_fixture::require_root_or_skip() {
        return;
    }
    let Some(tmp) = crate::support::tree::Tmpfs::new() else {
        skip_or_panic("cannot mount a tmpfs");
        return;
    };
    /// Unmounts the pool if the test fails half-way.
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let pool = tmp.path().join("pool");
    let _guard = Umount(pool.clone());
    let out = run(subvol()
        .args(["pool", "init"])
        .arg(&pool)
        .args(["--size", "300M", "--json"]));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mounted"], true);
    assert_eq!(r["created_image"], true);
    let image = tmp.path().join("pool.img");
    assert_eq!(r["image"], image.to_str().unwrap());
    assert!(subvol::util::fs::is_btrfs(&pool));
    // Again: nothing to do.
    let out = run(subvol().args(["pool", "init"]).arg(&pool).arg("--json"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mounted"], false);
    assert_eq!(r["image"], image.to_str().unwrap());
    // After an unmount (a reboot), init mounts the same image again.
    run(Command::new("umount").arg(&pool));
    assert!(!subvol::util::fs::is_btrfs(&pool));
    let out = run(subvol().args(["pool", "init"]).arg(&pool).arg("--json"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["mounted"].as_bool(), r["created_image"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(subvol::util::fs::is_btrfs(&pool));
    let list: Value =
        serde_json::from_slice(&run(subvol().arg("list").arg(&pool).arg("--json")).stdout).unwrap();
    assert_eq!(list, serde_json::json!([]));
    // A pull into it works like into any btrfs directory.
    if let Some(f) = fixture() {
        pull_ok(f, f.repo.to_str().unwrap(), &pool, &[]);
        check_version(f, &pool, 5);
    }
    // A non-empty directory not on btrfs is refused.
    let busy = tmp.path().join("busy");
    write(&busy.join("x"), b"x");
    let out = subvol().args(["pool", "init"]).arg(&busy).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn stream_signed_by_another_key_is_refused_while_receiving() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    // A publisher mistake (or a stolen index key without the stream key): the index lists, with
    // the right hash, a full stream of 5 signed by a key the pool does not accept. The hash
    // matches, so only the signature check while receiving can catch it.
    let other_key = work.path().join("other.key");
    run(subvol().arg("keygen").arg("-o").arg(&other_key));
    let signed = work.path().join("signed.stream");
    run(subvol()
        .arg("send")
        .arg(&f.trees[4])
        .args(["--proto", "2", "--sign"])
        .arg(&other_key)
        .arg("-f")
        .arg(&signed));
    let zst = work.path().join("signed.zst");
    run(Command::new("zstd")
        .args(["-q", "-o"])
        .arg(&zst)
        .arg(&signed));
    let data = fs::read(&zst).unwrap();
    use sha2::Digest;
    let sha = subvol::util::hex::encode(sha2::Sha256::digest(&data));
    fs::write(repo.join(format!("streams/{sha}.zst")), &data).unwrap();
    let key = subvol::sign::SecretKey::load(&f.key).unwrap();
    let mut keys = subvol::sign::KeySet::new();
    keys.add(key.public().clone());
    let (mut index, _) =
        subvol::mirror::Index::open(&fs::read(f.repo.join("index.json")).unwrap(), &keys).unwrap();
    // Only the forged full leads to 5.
    index.streams.retain(|s| s.to != "5");
    index.streams.push(subvol::mirror::StreamFile {
        path: format!("streams/{sha}.zst"),
        sha256: sha.parse().unwrap(),
        size: data.len() as u64,
        stream_bytes: fs::metadata(&signed).unwrap().len(),
        from: None,
        to: "5".into(),
        map: None,
    });
    index.serial += 1;
    fs::write(repo.join("index.json"), index.sign(&key).unwrap()).unwrap();
    let pool = new_pool(&btrfs, "pool");
    let err = pull_fails(f, repo.to_str().unwrap(), &pool, &[], 4);
    assert!(err.contains("not an accepted key"), "{err}");
    // Nothing committed, no staging subvolume left behind.
    let names: Vec<String> = fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![".subvol"], "{names:?}");
}

/// Issue 11, item 2: the docs' key rotation (a new key signs the next versions, the old key
/// stays trusted) must not let a mirror roll the pool back with an older index signed by the
/// old key, and `--keep` must not then delete the newer version.
#[test]
fn an_older_index_signed_by_a_rotated_out_key_is_refused() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let srv = Server::start(&repo);
    let pool = new_pool(&btrfs, "pool");
    pull_ok(f, &srv.url(), &pool, &["--keep", "1"]);
    assert_eq!(pool_versions(&pool), vec!["5"]);

    // Rotation: the new key signs version 6 (serial 6); pools trust both keys.
    let new_key = work.path().join("new.key");
    run(subvol().arg("keygen").arg("-o").arg(&new_key));
    let new_pub = work.path().join("new.key.pub");
    let tree6 = work.path().join("v6");
    copy_tree(&f.trees[VERSIONS - 1], &tree6);
    write(&tree6.join("etc/config"), b"version=6\n");
    run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&new_key)
        .arg(&tree6)
        .arg("--version")
        .arg("6"));
    let both = ["--verify", new_pub.to_str().unwrap(), "--keep", "1"];
    pull_ok(f, &srv.url(), &pool, &both);
    assert_eq!(pool_versions(&pool), vec!["6"]);

    // The mirror serves the old key's index of serial 5 again.
    fs::copy(&f.saved_index[VERSIONS - 1], repo.join("index.json")).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &both, 4);
    assert!(err.contains("serial 5 is older than serial 6"), "{err}");
    assert_eq!(pool_versions(&pool), vec!["6"]);

    // The same index re-signed without a repository UUID (as written before indexes carried
    // one): the source identifies the repository.
    let old = subvol::sign::SecretKey::load(&f.key).unwrap();
    let mut keys = subvol::sign::KeySet::new();
    keys.add(old.public().clone());
    let (mut legacy, _) =
        subvol::mirror::Index::open(&fs::read(&f.saved_index[VERSIONS - 1]).unwrap(), &keys)
            .unwrap();
    legacy.repository = None;
    fs::write(repo.join("index.json"), legacy.sign(&old).unwrap()).unwrap();
    let err = pull_fails(f, &srv.url(), &pool, &both, 4);
    assert!(err.contains("serial 5 is older than serial 6"), "{err}");
    assert_eq!(pool_versions(&pool), vec!["6"]);
    check_version_tree(&tree6, &pool.join("6"));
}

fn check_version_tree(tree: &Path, got: &Path) {
    assert_same_tree(tree, got, "pulled version");
}

/// Issue 11, item 3: a receive killed between the commit steps leaves its staging subvolume
/// read-only with the version's received UUID. It must not count as a held version (nor show
/// as one in `subvol list`), and pull must clean it (its lock is free) before planning.
#[test]
fn a_stale_committed_staging_subvolume_is_no_held_version() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let pool = new_pool(&btrfs, "pool");
    pull_ok(f, repo.to_str().unwrap(), &pool, &["--version", "2"]);
    // What a kill after "received UUID + read-only" and before the rename leaves behind.
    let staging = pool.join(".subvol-recv-staging.99999.0123456789ab");
    fs::rename(pool.join("2"), &staging).unwrap();

    let out = subvol()
        .arg("list")
        .arg(&pool)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(!listed.contains("subvol-recv-staging"), "{listed}");

    let dry = pull_ok(
        f,
        repo.to_str().unwrap(),
        &pool,
        &["--version", "2", "--dry-run"],
    );
    assert_eq!(dry["already"], false, "{dry}");

    let report = pull_ok(f, repo.to_str().unwrap(), &pool, &["--version", "2"]);
    assert_eq!(report["already"], false, "{report}");
    assert!(
        !staging.exists(),
        "the stale staging subvolume was not removed"
    );
    assert_eq!(pool_versions(&pool), vec!["2"]);
    check_version(f, &pool, 2);
}

/// Runs `cmd`, killing it after `limit` (a hang fails the test instead of blocking it).
pub(crate) fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn pull_within(f: &Fixture, source: &str, pool: &Path, extra: &[&str], secs: u64) -> Output {
    output_within(
        subvol()
            .arg("pull")
            .arg(source)
            .arg("--into")
            .arg(pool)
            .arg("--verify")
            .arg(&f.public)
            .args(extra),
        std::time::Duration::from_secs(secs),
    )
}

/// Issue 11, item 8: a FIFO in a directory repository (as a stream file or as the index) must
/// not hang pull: only regular files are opened.
#[test]
fn a_fifo_in_a_directory_repository_does_not_hang_pull() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let index = index_of(&repo);
    for v in 1..=VERSIONS {
        let (path, _) = stream(&index, None, &v.to_string());
        fs::remove_file(repo.join(&path)).unwrap();
        run(Command::new("mkfifo").arg(repo.join(&path)));
    }
    let pool = new_pool(&btrfs, "pool");
    let out = pull_within(f, repo.to_str().unwrap(), &pool, &[], 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(pool_versions(&pool).is_empty());

    fs::remove_file(repo.join("index.json")).unwrap();
    run(Command::new("mkfifo").arg(repo.join("index.json")));
    let out = pull_within(f, repo.to_str().unwrap(), &pool, &[], 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("index.json") && err.contains("not a regular file"),
        "{err}"
    );
}

/// Issue 11, item 8: a server that trickles (one byte now and then) or goes silent is given
/// up after the configured time-out or below the minimum rate, with the URL in the message.
#[test]
fn a_stalling_server_is_given_up_on() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let srv = Server::start(&repo);
    let pool = new_pool(&btrfs, "pool");
    let limits = ["--timeout", "2", "--min-rate", "1K", "--rate-window", "3"];

    // One byte every 0.5 s: never silent for 2 s, but far below 1 KiB/s.
    srv.trickle(0.5);
    let start = std::time::Instant::now();
    let out = pull_within(f, &srv.url(), &pool, &limits, 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains(&srv.url()) && err.contains("streams/"),
        "{err}"
    );
    assert!(err.contains("below --min-rate"), "{err}");
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());

    // Headers, then silence.
    srv.trickle(-1.0);
    let start = std::time::Instant::now();
    let out = pull_within(f, &srv.url(), &pool, &limits, 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains(&srv.url()) && err.contains("no data for 2 s"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    assert!(pool_versions(&pool).is_empty());

    // A normal server: the partial files are resumed and the pull completes.
    fs::remove_file(srv.ctl.path().join("trickle")).unwrap();
    pull_ok(f, &srv.url(), &pool, &limits);
    check_version(f, &pool, VERSIONS);
}

/// Issue 11, item 9: an index that lists files far larger than the pool's file system can hold
/// is refused before anything is downloaded, with the size needed and the space free, and
/// leftovers in the cache that this pull cannot resume are dropped.
#[test]
fn downloads_are_bounded_by_the_space_the_pool_can_spare() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(160 << 20) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let srv = Server::start(&repo);
    let pool = new_pool(&btrfs, "pool");
    let cache = pool.join(".subvol/cache");
    fs::create_dir_all(&cache).unwrap();
    let leftover = cache.join(format!("{}.part", "0f".repeat(32)));
    fs::write(&leftover, vec![7u8; 1 << 20]).unwrap();

    let key = subvol::sign::SecretKey::load(&f.key).unwrap();
    let mut keys = subvol::sign::KeySet::new();
    keys.add(key.public().clone());
    let (mut index, _) =
        subvol::mirror::Index::open(&fs::read(f.repo.join("index.json")).unwrap(), &keys).unwrap();
    let original = index.clone();

    // Every full stream listed as 1 TiB, signed by the right key: more than zstd makes of
    // the stream inside, so no such file is planned (the ceiling).
    for s in &mut index.streams {
        if s.from.is_none() {
            s.size = 1 << 40;
        }
    }
    index.serial += 1;
    fs::write(repo.join("index.json"), index.sign(&key).unwrap()).unwrap();
    let out = pull_within(f, &srv.url(), &pool, &[], 120);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("more than zstd makes"), "{err}");
    assert!(
        srv.requests()
            .iter()
            .all(|r| !r.path.starts_with("streams/"))
    );

    // Listed as 1 TiB of a 1 TiB stream: consistent, but the pool's file system cannot hold it.
    for s in &mut index.streams {
        if s.from.is_none() {
            s.stream_bytes = 1 << 40;
        }
    }
    index.serial += 1;
    fs::write(repo.join("index.json"), index.sign(&key).unwrap()).unwrap();

    let out = pull_within(f, &srv.url(), &pool, &[], 120);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("not enough space") && err.contains("1.0 TiB"),
        "{err}"
    );
    assert!(err.contains("MiB is free"), "{err}");
    assert!(
        srv.requests()
            .iter()
            .all(|r| !r.path.starts_with("streams/")),
        "{:?}",
        srv.requests()
    );
    let left: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(pool_versions(&pool).is_empty());

    // The real index (a newer serial) fits.
    let mut real = original;
    real.serial = index.serial + 1;
    fs::write(repo.join("index.json"), real.sign(&key).unwrap()).unwrap();
    pull_ok(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, VERSIONS);
}

/// Issue 11, item 11: failures name the path and the reason, exit with the documented code,
/// and leave nothing behind: `pool init` with a too small size creates no PATH, `publish` with
/// a bad source or version name creates no repository, and a missing path is reported as
/// missing, not as "not on btrfs".
#[test]
fn failures_name_the_path_and_leave_no_side_effects() {
    let Some(tmp) = crate::support::tree::Tmpfs::new() else {
        skip_or_panic("cannot mount a tmpfs (not root?)");
        return;
    };
    let base = tmp.path();
    let fail = |cmd: &mut Command, code: i32| -> String {
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{cmd:?}:\n{err}");
        err
    };

    let pool = base.join("newpool");
    let err = fail(
        subvol()
            .args(["pool", "init"])
            .arg(&pool)
            .args(["--size", "1K"]),
        1,
    );
    assert!(err.contains("newpool.img") && err.contains("256M"), "{err}");
    assert!(
        !pool.exists(),
        "pool init --size 1K created {}",
        pool.display()
    );
    assert!(!base.join("newpool.img").exists());

    let key = base.join("k.key");
    run(subvol().arg("keygen").arg("-o").arg(&key));
    let repo = base.join("repo");
    let missing = base.join("no-such-tree");
    let err = fail(
        subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(&key)
            .arg(&missing),
        1,
    );
    assert!(err.contains("no-such-tree"), "{err}");
    assert!(
        !repo.exists(),
        "publish with a missing source created the repository"
    );
    let tree = base.join("tree");
    write(&tree.join("f"), b"x");
    let err = fail(
        subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(&key)
            .arg(&tree)
            .args(["--version", ".bad"]),
        1,
    );
    assert!(err.contains("invalid version name"), "{err}");
    assert!(
        !repo.exists(),
        "publish with a bad version created the repository"
    );

    let gone = base.join("gone");
    let gone_s = gone.to_str().unwrap();
    for args in [
        vec!["list", gone_s],
        vec!["show", gone_s],
        vec!["delete", gone_s],
        vec!["snapshot", gone_s, base.join("snap").to_str().unwrap()],
    ] {
        let err = fail(subvol().args(&args), 6);
        assert!(
            err.contains(gone_s) && err.contains("No such file or directory"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("btrfs"), "{args:?}: {err}");
    }
    assert!(!base.join("snap").exists());
}

/// `POOL/.subvol/content/*.idx`, sorted.
fn index_files(pool: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(pool.join(".subvol/content"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".idx"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn version_uuid(f: &Fixture, v: usize) -> String {
    index_of(&f.repo)["versions"][v - 1]["uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(r: &Value, field: &str) -> Vec<String> {
    r[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Issue 12: every version pull keeps has a content index file named by its received UUID;
/// deleting the version drops it; a missing, corrupt or stale file is dealt with at the next
/// pull.
#[test]
fn pull_keeps_a_content_index_file_per_version() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    let src = f.repo.to_str().unwrap();
    let (u1, u2) = (version_uuid(f, 1), version_uuid(f, 2));
    let r = pull_ok(f, src, &pool, &["--version", "1"]);
    assert_eq!(names(&r, "indexed"), ["1"]);
    assert_eq!(index_files(&pool), [format!("{u1}.idx")]);
    let r = pull_ok(f, src, &pool, &["--version", "2"]);
    assert_eq!(names(&r, "indexed"), ["2"]);
    let mut want = vec![format!("{u1}.idx"), format!("{u2}.idx")];
    want.sort();
    assert_eq!(index_files(&pool), want);
    let idx2 = pool.join(format!(".subvol/content/{u2}.idx"));
    let good = fs::read(&idx2).unwrap();
    assert_eq!(&good[..8], b"SVCIDX\r\n");

    // Deleting a version drops its file.
    run(subvol().arg("delete").arg(pool.join("1")));
    assert_eq!(index_files(&pool), [format!("{u2}.idx")]);

    // Corrupt (truncated) and stale files: rebuilt and dropped by the next pull, even one
    // with nothing to fetch.
    fs::write(&idx2, &good[..good.len() - 10]).unwrap();
    let stale = pool.join(".subvol/content/0123456789abcdef0123456789abcdef.idx");
    fs::write(&stale, b"x").unwrap();
    let out = pull(f, src, &pool, &["--version", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&r, "indexed"), ["2"]);
    assert_eq!(index_files(&pool), [format!("{u2}.idx")]);
    assert_eq!(fs::read(&idx2).unwrap(), good, "rebuilt exactly");
    // A version without a file (pulled by an older subvol) is indexed.
    fs::remove_file(&idx2).unwrap();
    let r = pull_ok(f, src, &pool, &["--version", "2"]);
    assert_eq!(names(&r, "indexed"), ["2"]);
    assert_eq!(fs::read(&idx2).unwrap(), good);
    // Intermediate steps are not indexed (deleted anyway); retention drops the files.
    let r = pull_ok(f, src, &pool, &["--keep", "1"]);
    assert_eq!(names(&r, "indexed"), ["5"]);
    assert_eq!(pool_versions(&pool), ["5"]);
    assert_eq!(index_files(&pool), [format!("{}.idx", version_uuid(f, 5))]);
    check_version(f, &pool, 5);
}

/// Issue 12: two repositories with no history in common (other keys, other version names)
/// whose trees hold mostly the same files: pulling the second into a pool holding the first
/// applies the common data as clones of the first's files (checked bytes), so they share
/// extents, and both trees are exact.
#[test]
fn unrelated_pulls_into_one_pool_share_common_data() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut rng = Rng(0xded0_0012);
    let a = dir.path().join("tree-a");
    let mut common = 0u64;
    for i in 0..40 {
        let len = 4096 + rng.below(200 << 10) as usize;
        write(&a.join(format!("lib/f{i}")), &bytes(rng.next(), len));
        common += len as u64;
    }
    let b = dir.path().join("tree-b");
    copy_tree(&a, &b);
    // B: a few files of its own, one common file changed in one block, one removed.
    for i in 0..5 {
        write(&b.join(format!("own/g{i}")), &bytes(rng.next(), 50_000));
    }
    write_at(&b.join("lib/f3"), 4096, &bytes(rng.next(), 4096));
    fs::remove_file(b.join("lib/f7")).unwrap();
    let _ = f;
    let mut pubs = Vec::new();
    for (name, tree) in [("a", &a), ("b", &b)] {
        let key = dir.path().join(format!("{name}.key"));
        run(subvol().arg("keygen").arg("-o").arg(&key));
        run(subvol()
            .arg("publish")
            .arg("--repo")
            .arg(dir.path().join(format!("repo-{name}")))
            .arg("--key")
            .arg(&key)
            .arg(tree)
            .arg("--version")
            .arg(format!("{name}1")));
        pubs.push(dir.path().join(format!("{name}.key.pub")));
    }
    let pool = new_pool(&btrfs, "pool");
    let pull_from = |name: &str, public: &Path| -> Value {
        let out = run(subvol()
            .arg("pull")
            .arg(dir.path().join(format!("repo-{name}")))
            .arg("--into")
            .arg(&pool)
            .arg("--verify")
            .arg(public)
            .arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ra = pull_from("a", &pubs[0]);
    assert_eq!(ra["deduped"], 0);
    let rb = pull_from("b", &pubs[1]);
    assert_eq!(names(&rb, "indexed"), ["b1"]);
    assert_same_tree(&a, &pool.join("a1"), "tree a");
    assert_same_tree(&b, &pool.join("b1"), "tree b");
    // Everything of B's lib/ but f3's changed block (f7 is gone from B) came from A.
    let f7 = fs::metadata(a.join("lib/f7")).unwrap().len();
    let from_a = common - f7 - 4096;
    let deduped = rb["deduped"].as_u64().unwrap();
    assert!(
        deduped >= from_a - 40 * 4096 && deduped <= from_a,
        "deduped {deduped} of {from_a} common bytes"
    );
    btrfs.sync();
    let shared = crate::support::tree::shared_bytes(&pool.join("b1/lib"));
    assert!(shared >= from_a - 40 * 4096, "shared {shared} of {from_a}");
    let own = crate::support::tree::shared_bytes(&pool.join("b1/own"));
    assert_eq!(own, 0);
}

/// The full stream file of version `v` and its content map (path, size).
fn full_with_map(f: &Fixture, v: usize) -> (String, u64, String) {
    let idx = index_of(&f.repo);
    let s = idx["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["from"].is_null() && s["to"] == v.to_string().as_str())
        .unwrap();
    let (map, _, _) = map_of(s).expect("the full has a content map");
    (
        s["path"].as_str().unwrap().to_string(),
        s["size"].as_u64().unwrap(),
        map,
    )
}

/// A pool holding version 1 (pulled, so indexed) on a fresh btrfs.
fn pool_with_v1(f: &Fixture, btrfs: &BtrfsFs, name: &str, repo: &Path) -> PathBuf {
    let pool = new_pool(btrfs, name);
    pull_ok(f, repo.to_str().unwrap(), &pool, &["--version", "1"]);
    pool
}

/// A repository of fulls only (with content maps): versions 1 and 5 of the fixture, under
/// `dir/repo`.
fn fulls_only_repo(f: &Fixture, dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    for v in [1, 5] {
        run(subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(&f.key)
            .arg(&f.trees[v - 1])
            .arg("--version")
            .arg(v.to_string())
            .arg("--level")
            .arg("3")
            .arg("--no-deltas"));
    }
    repo
}

/// Issue 12: a pool holding v1 pulls v5 as a seeded full from nginx: only the frames it lacks
/// are fetched, by multi-range requests, the rest is read (and cloned) from v1, and the result
/// is exact. The dry run says how much is found locally and where.
#[test]
fn seeded_full_from_nginx_fetches_only_what_the_pool_lacks() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = crate::support::nginx::Nginx::start(&f.dir) else {
        return;
    };
    let url = format!("{}repo", nginx.url());
    let pool = pool_with_v1(f, &btrfs, "pool", &f.repo);
    let (full, full_size, map) = full_with_map(f, 5);

    let dry = pull_ok(f, &url, &pool, &["--plan", "seeded", "--dry-run"]);
    let seeded = &dry["plan"]["seeded"];
    let local = seeded["local_bytes"].as_u64().unwrap();
    assert!(local > 1 << 20, "found locally: {dry}");
    assert_eq!(seeded["local_from"][0]["name"], "1", "{dry}");
    let planned = dry["plan"]["bytes"].as_u64().unwrap();
    assert!(
        planned < full_size / 2,
        "plan {planned} of a {full_size}-byte full"
    );
    assert_eq!(pool_versions(&pool), ["1"], "a dry run changes nothing");

    nginx.clear_log();
    let r = pull_ok(f, &url, &pool, &["--plan", "seeded"]);
    check_version(f, &pool, 5);
    let fetched = r["bytes"].as_u64().unwrap();
    assert!(fetched > 0 && fetched < full_size / 2, "fetched {fetched}");
    assert_eq!(r["seeded"]["local_bytes"].as_u64().unwrap(), local, "{r}");
    assert_eq!(r["seeded"]["refetched_frames"], 0, "{r}");
    let reqs = nginx.requests();
    let ranged: Vec<_> = reqs
        .iter()
        .filter(|q| q.path == format!("repo/{full}"))
        .collect();
    assert!(!ranged.is_empty() && ranged.len() <= 2, "{reqs:?}");
    assert!(
        ranged.iter().all(|q| q.status == 206 && q.range.is_some()),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|q| q.path == format!("repo/{map}")),
        "{reqs:?}"
    );
    assert!(reqs.len() <= 4, "index, map and ranges only: {reqs:?}");
    // The data found in v1 became clones of it.
    assert!(r["deduped"].as_u64().unwrap() >= local, "{r}");
    btrfs.sync();
    assert!(crate::support::tree::shared_bytes(&pool.join("5/big.bin")) > 1 << 20);
}

/// Issue 12: from a repository of fulls only, auto picks the seeded full; a server without
/// Range support still works (the file comes whole); a server that sends other bytes for
/// ranges makes `--plan seeded` fail cleanly and `--plan auto` fetch the full instead.
#[test]
fn seeded_full_falls_back_on_servers_without_ranges_or_with_wrong_bytes() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let repo = fulls_only_repo(f, dir.path());
    let idx = index_of(&repo);
    let full_size = stream(&idx, None, "5").1;

    // No Range support at all: the file comes whole, the result is exact.
    let port = crate::support::nginx::free_port();
    let mut plain = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let plain = Kill(&mut plain);
    assert!(crate::support::nginx::wait_for_port(port, plain.0));
    let pool = pool_with_v1(f, &btrfs, "pool", &repo);
    let url = format!("http://127.0.0.1:{port}/repo");
    let dry = pull_ok(f, &url, &pool, &["--dry-run"]);
    assert!(
        dry["plan"]["seeded"].is_object(),
        "auto picks the seeded full: {dry}"
    );
    let r = pull_ok(f, &url, &pool, &[]);
    check_version(f, &pool, 5);
    assert!(
        r["bytes"].as_u64().unwrap() >= full_size,
        "the whole file: {r}"
    );
    drop(plain);

    // Wrong bytes for every range.
    let srv = Server::start(dir.path());
    srv.garble();
    let url = format!("{}repo", srv.url());
    run(subvol().arg("delete").arg(pool.join("5")));
    let err = pull_fails(f, &url, &pool, &["--plan", "seeded"], 4);
    assert!(err.contains("do not match the content map"), "{err}");
    assert_eq!(pool_versions(&pool), ["1"], "nothing partial is left");
    let r = pull_ok(f, &url, &pool, &[]);
    check_version(f, &pool, 5);
    let refused = r["refused"].to_string();
    assert!(refused.contains("(seeded)"), "{r}");
    assert!(r["seeded"].is_null(), "{r}");
}

/// Issue 12: what the pool's index says is a hint. Here v1's index file is replaced by v2's
/// (so it lists v2's blocks at v1's paths, as if v1's files had changed after indexing): the
/// frames whose bytes do not match are fetched instead, and the result is exact.
#[test]
fn seeded_full_fetches_frames_whose_local_bytes_changed() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let pool = pool_with_v1(f, &btrfs, "pool", &f.repo);
    let other = new_pool(&btrfs, "other");
    pull_ok(f, f.repo.to_str().unwrap(), &other, &["--version", "2"]);
    fs::copy(
        other.join(format!(".subvol/content/{}.idx", version_uuid(f, 2))),
        pool.join(format!(".subvol/content/{}.idx", version_uuid(f, 1))),
    )
    .unwrap();
    let r = pull_ok(f, f.repo.to_str().unwrap(), &pool, &["--plan", "seeded"]);
    check_version(f, &pool, 5);
    assert!(r["seeded"]["refetched_frames"].as_u64().unwrap() > 0, "{r}");
}
