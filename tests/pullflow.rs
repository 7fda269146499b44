//! Tests: streaming pulls (issue 14) — each step received while it downloads, the cache never
//! holding more than one step's file, space checked before any byte is fetched, progress
//! events, `--limit-rate`, and a cut connection resumed with Range — over a real nginx (and the
//! Python server of `mirror.rs` where a connection must be cut), on real loop-mounted btrfs.

use crate::mirror::{
    Fixture, Server, VERSIONS, check_version, fixture, index_of, new_pool, pool_versions,
    repo_copy, stream, subvol,
};
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::nginx::Nginx;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `subvol pull SOURCE --into POOL --verify PUB --json [extra]`.
fn pull(f: &Fixture, source: &str, pool: &Path, extra: &[&str]) -> Output {
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

/// The report (stdout) and the events (stderr, one JSON object a line) of a pull that worked.
fn pull_events(f: &Fixture, source: &str, pool: &Path, extra: &[&str]) -> (Value, Vec<Value>) {
    let out = pull(f, source, pool, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pull {extra:?} failed:\n{err}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let events = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line {l:?}: {e}")))
        .collect();
    (report, events)
}

fn of_kind<'v>(events: &'v [Value], kind: &str) -> Vec<&'v Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Samples the bytes in a directory every millisecond until dropped; the largest sum seen.
struct DirSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DirSampler {
    fn start(dir: PathBuf) -> DirSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let sum: u64 = fs::read_dir(&dir)
                    .map(|rd| {
                        rd.flatten()
                            .filter_map(|e| e.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                p.fetch_max(sum, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        DirSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for DirSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A multi-step chain over nginx is received as it downloads: the exact tree, the cache empty
/// afterwards and never holding more than the largest step's file, and `--json` events that
/// parse, with the final `applied` equal to the plan's bytes and one `step` event per step.
#[test]
fn streaming_pull_of_a_chain_is_exact_and_keeps_at_most_one_step_in_the_cache() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(512 << 20) else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    let (_, _) = pull_events(f, f.repo.to_str().unwrap(), &pool, &["--version", "2"]);
    let cache = pool.join(".subvol/cache");
    let sampler = DirSampler::start(cache.clone());
    let (r, events) = pull_events(f, &nginx.url(), &pool, &["--plan", "chain"]);
    let peak = sampler.peak();
    check_version(f, &pool, VERSIONS);
    assert_eq!(pool_versions(&pool), vec!["2", "5"]);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "2 -> 3|4 -> 5: {r}");
    let largest = steps
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .max()
        .unwrap();
    let plan_bytes: u64 = steps.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    assert!(
        peak <= largest,
        "cache peak {peak} > largest step file {largest}"
    );
    let left: Vec<_> = fs::read_dir(&cache).unwrap().flatten().collect();
    assert!(left.is_empty(), "cache not empty: {left:?}");
    assert_eq!(r["bytes"].as_u64(), Some(plan_bytes), "{r}");
    assert_eq!(r["reused"].as_u64(), Some(0), "{r}");

    let plan = of_kind(&events, "plan");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0]["plan"]["bytes"].as_u64(), Some(plan_bytes));
    let space = of_kind(&events, "space");
    assert_eq!(space.len(), 1);
    assert!(space[0]["space"]["need"].as_u64().unwrap() > 0);
    let progress = of_kind(&events, "progress");
    let last = progress.last().expect("progress events");
    assert_eq!(last["total"].as_u64(), Some(plan_bytes), "{last}");
    assert_eq!(last["applied"].as_u64(), Some(plan_bytes), "{last}");
    assert_eq!(last["fetched"].as_u64(), Some(plan_bytes), "{last}");
    // Counts only grow.
    for w in progress.windows(2) {
        for k in ["applied", "fetched"] {
            assert!(
                w[0][k].as_u64() <= w[1][k].as_u64(),
                "{k}: {} then {}",
                w[0],
                w[1]
            );
        }
    }
    let step_events = of_kind(&events, "step");
    assert_eq!(step_events.len(), 2);
    for (e, s) in step_events.iter().zip(steps) {
        assert_eq!(e["file"], s["path"]);
        assert_eq!(e["fetched"], s["size"]);
    }
    // nginx served each stream file once, whole.
    let streams: Vec<_> = nginx
        .requests()
        .into_iter()
        .filter(|q| q.path.starts_with("streams/"))
        .collect();
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert!(streams.iter().all(|q| q.status == 200 && q.range.is_none()));

    // -v without --json: a line per step; the report line says what was fetched.
    let pool = new_pool(&btrfs, "verbose");
    let out = subvol()
        .arg("pull")
        .arg(nginx.url())
        .arg("--into")
        .arg(&pool)
        .arg("--verify")
        .arg(&f.public)
        .args(["--version", "3", "-v"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("step 1/1: full 3"), "{err}");
    assert!(err.contains("space: needs"), "{err}");
    check_version(f, &pool, 3);
}

/// A pool whose file system cannot hold what the plan writes is refused before any stream
/// byte is requested (nginx's log), with the numbers; `--dry-run` shows the estimate.
#[test]
fn a_pool_too_small_is_refused_before_any_stream_byte_is_fetched() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(160 << 20) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    // Every stream listed as 200 MiB of stream (its file is what it is: zstd could make it
    // that small), signed by the publisher's key: more than a 160 MiB file system holds.
    let key = subvol::sign::SecretKey::load(&f.key).unwrap();
    let mut keys = subvol::sign::KeySet::new();
    keys.add(key.public().clone());
    let (mut index, _) =
        subvol::mirror::Index::open(&fs::read(repo.join("index.json")).unwrap(), &keys).unwrap();
    for s in &mut index.streams {
        s.stream_bytes = 200 << 20;
    }
    index.serial += 1;
    fs::write(repo.join("index.json"), index.sign(&key).unwrap()).unwrap();
    let Some(nginx) = Nginx::start(&repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");

    // --dry-run: the estimate, text and JSON.
    let out = subvol()
        .arg("pull")
        .arg(nginx.url())
        .arg("--into")
        .arg(&pool)
        .arg("--verify")
        .arg(&f.public)
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("space: needs ")
            && text.contains("written by the steps")
            && text.contains("does not fit"),
        "{text}"
    );
    let out = pull(f, &nginx.url(), &pool, &["--dry-run"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let space = &r["space"];
    // One step (the full): 200 MiB + 1/4 for metadata + 1 MiB; the cache needs its file.
    let (_, full) = stream(&index_of(&repo), None, &VERSIONS.to_string());
    let writes = (200u64 << 20) + (50 << 20) + (1 << 20);
    assert_eq!(space["writes"].as_u64(), Some(writes), "{r}");
    assert_eq!(space["cache"].as_u64(), Some(full), "{r}");
    assert_eq!(space["need"].as_u64(), Some(writes + full), "{r}");
    assert_eq!(space["reserve"].as_u64(), Some(64 << 20), "{r}");
    assert!(space["free"].as_u64().unwrap() < writes, "{r}");

    // The pull: refused, exit 6, the numbers named; no stream file requested.
    let out = pull(f, &nginx.url(), &pool, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("not enough space in")
            && err.contains("the pull needs")
            && err.contains("written by its steps")
            && err.contains("of downloads in the cache")
            && err.contains("in reserve"),
        "{err}"
    );
    let streams: Vec<_> = nginx
        .requests()
        .into_iter()
        .filter(|q| !q.path.ends_with("index.json"))
        .collect();
    assert!(streams.is_empty(), "{streams:?}");
    assert!(pool_versions(&pool).is_empty());
}

/// `--limit-rate RATE` makes a pull of N bytes take at least N / RATE seconds (a lower bound
/// only: this machine may be slower for other reasons).
#[test]
fn limit_rate_holds_a_pull_below_the_rate() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let (_, size) = stream(&index_of(&f.repo), None, &VERSIONS.to_string());
    // About 2 s for the full stream.
    let rate = (size / 2).max(1);
    let pool = new_pool(&btrfs, "pool");
    let t = Instant::now();
    let (r, events) = pull_events(f, &nginx.url(), &pool, &["--limit-rate", &rate.to_string()]);
    let took = t.elapsed().as_secs_f64();
    check_version(f, &pool, VERSIONS);
    let bytes = r["bytes"].as_u64().unwrap();
    assert_eq!(bytes, size, "{r}");
    assert!(
        took >= bytes as f64 / rate as f64,
        "{bytes} bytes at {rate} B/s took {took:.2}s"
    );
    // Streaming: the receiver took bytes while the file was still arriving.
    let progress = of_kind(&events, "progress");
    assert!(
        progress.iter().any(|e| {
            let (a, f) = (
                e["applied"].as_u64().unwrap(),
                e["fetched"].as_u64().unwrap(),
            );
            a > 0 && f < size
        }),
        "nothing applied before the download ended: {progress:?}"
    );
    // A bad rate is refused by the parser.
    let out = pull(f, &nginx.url(), &pool, &["--limit-rate", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit-rate"));
}

/// The server closes the connection in the middle of a file that is being received: the same
/// pull resumes it with a Range request (a `resume` event), the tree is exact, each byte was
/// sent once, and the cache is empty afterwards. A `.part` left by an earlier pull is reused,
/// shown as reused and not as fetched.
#[test]
fn a_cut_connection_resumes_with_range_while_streaming() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let srv = Server::start(&f.repo);
    let (full, size) = stream(&index_of(&f.repo), None, &VERSIONS.to_string());
    let pool = new_pool(&btrfs, "cut");
    let cut = size / 2 + 77;
    srv.cut_next(&full, cut);
    let (r, events) = pull_events(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, VERSIONS);
    let reqs: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|q| q.path == full)
        .collect();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].sent, cut);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(reqs[0].sent + reqs[1].sent, size);
    let resumes = of_kind(&events, "resume");
    assert_eq!(resumes.len(), 1, "{events:?}");
    assert_eq!(resumes[0]["offset"].as_u64(), Some(cut));
    assert_eq!(r["bytes"].as_u64(), Some(size), "{r}");
    let cache = pool.join(".subvol/cache");
    assert!(fs::read_dir(&cache).unwrap().next().is_none());

    // A partial file from a killed pull: reused, fetched only the rest.
    srv.clear_log();
    let pool = new_pool(&btrfs, "reuse");
    let cache = pool.join(".subvol/cache");
    fs::create_dir_all(&cache).unwrap();
    let sha = full.trim_start_matches("streams/").trim_end_matches(".zst");
    let have = size / 3;
    let data = fs::read(f.repo.join(&full)).unwrap();
    fs::write(cache.join(format!("{sha}.part")), &data[..have as usize]).unwrap();
    let (r, events) = pull_events(f, &srv.url(), &pool, &[]);
    check_version(f, &pool, VERSIONS);
    assert_eq!(r["reused"].as_u64(), Some(have), "{r}");
    assert_eq!(r["bytes"].as_u64(), Some(size - have), "{r}");
    let last = *of_kind(&events, "progress").last().unwrap();
    assert_eq!(last["reused"].as_u64(), Some(have), "{last}");
    assert_eq!(last["fetched"].as_u64(), Some(size - have), "{last}");
    assert_eq!(last["applied"].as_u64(), Some(size), "{last}");
    assert!(fs::read_dir(&cache).unwrap().next().is_none());
}

/// A file found bad only at its end (its last byte changed: every signature segment before
/// it verifies) is given up while streaming: nothing of it is committed, another chain is
/// used, and the staging subvolume is gone.
#[test]
fn a_file_bad_at_its_end_is_given_up_while_streaming() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let idx = index_of(&repo);
    let (d45, _) = stream(&idx, Some("4"), "5");
    let p = repo.join(&d45);
    let mut data = fs::read(&p).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x01;
    fs::write(&p, &data).unwrap();
    let Some(nginx) = Nginx::start(&repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    pull_events(f, repo.to_str().unwrap(), &pool, &["--version", "4"]);
    let (r, events) = pull_events(f, &nginx.url(), &pool, &[]);
    let refused = r["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    assert!(refused[0].as_str().unwrap().contains(&d45), "{r}");
    assert!(refused[0].as_str().unwrap().contains("SHA-256"), "{r}");
    assert_eq!(of_kind(&events, "refused").len(), 1);
    check_version(f, &pool, VERSIONS);
    // No staging subvolume or stray version left.
    let names: Vec<String> = fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, vec![".subvol", "4", "5"]);
}

/// Bytes free for an unprivileged writer on the file system of `p`.
fn free_bytes(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).unwrap();
    st.f_bavail * st.f_frsize
}

/// Runs a pull of `url` into `pool` with `--limit-rate rate`; once it reported its space
/// estimate (nothing fetched yet), another writer takes all but `leave` bytes of the file
/// system at `fs` (file `filler`). Returns the exit code and stderr.
fn pull_while_the_disk_fills(
    f: &Fixture,
    url: &str,
    pool: &Path,
    rate: u64,
    fs_root: &Path,
    leave: u64,
) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = subvol()
        .arg("pull")
        .arg(url)
        .arg("--into")
        .arg(pool)
        .arg("--verify")
        .arg(&f.public)
        .args(["--json", "--limit-rate", &rate.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            break;
        }
        text.push_str(&l);
        if l.contains("\"event\":\"space\"") {
            let mut want = free_bytes(fs_root).saturating_sub(leave);
            while want > 0 {
                let ok = std::process::Command::new("fallocate")
                    .arg("-l")
                    .arg(want.to_string())
                    .arg(fs_root.join("filler"))
                    .status()
                    .unwrap()
                    .success();
                if ok {
                    break;
                }
                want = want.saturating_sub(1 << 20);
            }
            break;
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    text.push_str(&rest);
    (child.wait().unwrap().code(), text)
}

/// The disk fills up after the space check passed (another writer took the space while the
/// pull was downloading): whether the cache's write or the receive's hits ENOSPC, the pull
/// ends with exit status 6 naming it, nothing appears in the pool (no version, no staging
/// subvolume), and once space is back the next pull works.
#[test]
fn a_disk_that_fills_during_the_pull_ends_it_cleanly() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(256 << 20) else {
        return;
    };
    // A repository whose one stream writes 32 MiB but compresses to little: the cache file
    // fits in what is left, the receive does not.
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // Every 4 KiB block differs (no block is sent as a clone of another), each repeats a
    // line of its own (zstd makes little of it).
    let data: Vec<u8> = (0..(32 << 20) / 4096)
        .flat_map(|i| {
            let line = format!("block {i:010} of a file that streams\n");
            line.into_bytes().into_iter().cycle().take(4096)
        })
        .collect();
    fs::write(tree.join("big.txt"), &data).unwrap();
    let repo = work.path().join("repo");
    crate::support::tree::run(
        subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(&f.key)
            .arg(&tree)
            .args(["--version", "big"]),
    );
    let Some(nginx) = Nginx::start(&repo) else {
        return;
    };
    let (big, big_size) = stream(&index_of(&repo), None, "big");
    let (_, size) = stream(&index_of(&f.repo), None, &VERSIONS.to_string());
    let Some(fixture_nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let only_meta = |pool: &Path| {
        let names: Vec<String> = fs::read_dir(pool)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![".subvol"]);
    };

    // 1. The receive hits ENOSPC (8 MiB left: the file fits, its 32 MiB of data do not).
    let pool = new_pool(&btrfs, "recv");
    let (code, text) = pull_while_the_disk_fills(
        f,
        &nginx.url(),
        &pool,
        (big_size / 2).max(1),
        btrfs.path(),
        8 << 20,
    );
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        !text.contains(".part: No space"),
        "the receive should have failed: {text}"
    );
    only_meta(&pool);
    fs::remove_file(btrfs.path().join("filler")).unwrap();
    let out = pull(f, &nginx.url(), &pool, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(pool.join("big/big.txt")).unwrap(), data);
    assert!(nginx.requests().iter().any(|q| q.path == big));
    crate::support::tree::run(subvol().arg("delete").arg(pool.join("big")));

    // 2. The download's write hits ENOSPC (256 KiB left): its partial file is dropped.
    let pool = new_pool(&btrfs, "download");
    let (code, text) = pull_while_the_disk_fills(
        f,
        &fixture_nginx.url(),
        &pool,
        (size / 3).max(1),
        btrfs.path(),
        256 << 10,
    );
    assert_eq!(code, Some(6), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    only_meta(&pool);
    fs::remove_file(btrfs.path().join("filler")).unwrap();
    pull_events(f, &fixture_nginx.url(), &pool, &[]);
    check_version(f, &pool, VERSIONS);
}

/// `--no-stream` (download-then-apply, kept for comparison) downloads the whole chain before
/// anything is applied, and gives the same tree.
#[test]
fn no_stream_downloads_the_whole_chain_first() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    pull_events(f, f.repo.to_str().unwrap(), &pool, &["--version", "2"]);
    let (r, events) = pull_events(f, &nginx.url(), &pool, &["--plan", "chain", "--no-stream"]);
    check_version(f, &pool, VERSIONS);
    let total: u64 = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .sum();
    let space = &of_kind(&events, "space")[0]["space"];
    assert_eq!(space["cache"].as_u64(), Some(total), "{space}");
    for e in of_kind(&events, "progress") {
        if e["applied"].as_u64().unwrap() > 0 {
            assert_eq!(e["fetched"].as_u64(), Some(total), "{e}");
        }
    }
    assert!(
        fs::read_dir(pool.join(".subvol/cache"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// SIGTERM while a file is being downloaded and received: exit status 130, nothing visible in
/// the pool, the partial file kept; the next pull fetches only the rest with a Range request
/// and reports the kept bytes as reused.
#[test]
fn an_interrupted_streaming_pull_keeps_its_partial_file_for_the_next() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let (full, size) = stream(&index_of(&f.repo), None, &VERSIONS.to_string());
    let pool = new_pool(&btrfs, "pool");
    let mut child = subvol()
        .arg("pull")
        .arg(nginx.url())
        .arg("--into")
        .arg(&pool)
        .arg("--verify")
        .arg(&f.public)
        .args(["--json", "--limit-rate", &(size / 4).max(1).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            break;
        }
        text.push_str(&l);
        let v: Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "progress" && v["fetched"].as_u64().unwrap() > size / 4 {
            let ok = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            break;
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    text.push_str(&rest);
    assert_eq!(child.wait().unwrap().code(), Some(130), "{text}");
    assert_eq!(pool_versions(&pool), Vec::<String>::new(), "{text}");
    let sha = full.trim_start_matches("streams/").trim_end_matches(".zst");
    let part = pool.join(format!(".subvol/cache/{sha}.part"));
    let kept = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < size, "kept {kept} of {size}: {text}");

    nginx.clear_log();
    let (r, _) = pull_events(f, &nginx.url(), &pool, &[]);
    check_version(f, &pool, VERSIONS);
    assert_eq!(r["reused"].as_u64(), Some(kept), "{r}");
    assert_eq!(r["bytes"].as_u64(), Some(size - kept), "{r}");
    let reqs: Vec<_> = nginx
        .requests()
        .into_iter()
        .filter(|q| q.path == full)
        .collect();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
}

/// Starts `subvol pull` of the full of the newest version over `nginx`, throttled so that it
/// takes a few seconds, with a checkpoint at every signature segment, and kills it with SIGKILL
/// once a checkpoint was recorded. Returns the offset `recv --list-incomplete` then shows, the
/// cache file kept and its length, the stream file's path and size, and the events seen.
fn pull_killed_after_a_checkpoint(
    f: &Fixture,
    nginx: &Nginx,
    pool: &Path,
) -> (u64, PathBuf, u64, String, u64, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (full, size) = stream(&index_of(&f.repo), None, &VERSIONS.to_string());
    let mut child = subvol()
        .arg("pull")
        .arg(nginx.url())
        .arg("--into")
        .arg(pool)
        .arg("--verify")
        .arg(&f.public)
        .args([
            "--json",
            "--checkpoint-every",
            "1",
            "--checkpoint-overhead",
            "100",
        ])
        .args(["--limit-rate", &(size / 6).max(1).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let mut killed = false;
    loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            break;
        }
        text.push_str(&l);
        let v: Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "checkpoint" && v["offset"].as_u64().unwrap() > 0 {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "no checkpoint before the pull ended ({status}):\n{text}"
    );
    assert_eq!(pool_versions(pool), Vec::<String>::new(), "{text}");
    // The checkpoint is recorded and listed.
    let out = subvol()
        .args(["recv", "--list-incomplete", "--json"])
        .arg(pool)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().expect("a list of incomplete receives");
    assert_eq!(list.len(), 1, "{list:?}\n{text}");
    let offset = list[0]["offset"].as_u64().unwrap();
    assert!(offset > 0, "{list:?}");
    assert_eq!(list[0]["name"], VERSIONS.to_string(), "{list:?}");
    // The step's partial download is kept too.
    let sha = full.trim_start_matches("streams/").trim_end_matches(".zst");
    let cache = pool.join(".subvol/cache");
    let part = [format!("{sha}.part"), format!("{sha}.zst")]
        .into_iter()
        .map(|n| cache.join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no cache file of {full}:\n{text}"));
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0, "{text}");
    (offset, part, kept, full, size, text)
}

/// A pull killed with SIGKILL after its receive took a checkpoint keeps the checkpoint and
/// the partial download; the next pull resumes the apply at the checkpoint (the `apply_resumed`
/// event, the report and the progress say so), fetches only the rest of the file with one
/// Range request (no byte of the stream again), and the tree is exact.
#[test]
fn a_pull_killed_after_a_checkpoint_resumes_its_apply() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    let (offset, _part, kept, full, size, text) = pull_killed_after_a_checkpoint(f, &nginx, &pool);

    nginx.clear_log();
    let (r, events) = pull_events(f, &nginx.url(), &pool, &["-v"]);
    check_version(f, &pool, VERSIONS);
    let resumed = of_kind(&events, "apply_resumed");
    assert_eq!(resumed.len(), 1, "{events:?}\nfirst run:\n{text}");
    assert_eq!(resumed[0]["offset"].as_u64(), Some(offset), "{resumed:?}");
    assert_eq!(resumed[0]["file"].as_str(), Some(full.as_str()));
    assert_eq!(r["resumed"][0]["offset"].as_u64(), Some(offset), "{r}");
    // Progress: what the earlier pull applied is counted as resumed, inside `applied`.
    let last = of_kind(&events, "progress")
        .into_iter()
        .last()
        .cloned()
        .unwrap();
    assert!(last["resumed"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(last["applied"], last["total"], "{last}");
    // Only the rest of the file was fetched, with one Range request.
    assert_eq!(r["reused"].as_u64(), Some(kept), "{r}");
    assert_eq!(r["bytes"].as_u64(), Some(size - kept), "{r}");
    let reqs: Vec<_> = nginx
        .requests()
        .into_iter()
        .filter(|q| q.path == full)
        .collect();
    if kept < size {
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(
            reqs[0].range.as_deref(),
            Some(format!("bytes={kept}-").as_str())
        );
        assert_eq!(reqs[0].sent, size - kept, "{reqs:?}");
    } else {
        assert!(reqs.is_empty(), "{reqs:?}");
    }
    // Nothing of the interrupted receive is left.
    let left: Vec<_> = fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".subvol-recv"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A killed pull whose checkpoint record was tampered with: the next pull does not use it
/// (the cleanup removes the staging subvolume), receives the step from its first byte, and
/// the tree is exact.
#[test]
fn a_tampered_checkpoint_of_a_killed_pull_restarts_cleanly() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let pool = new_pool(&btrfs, "pool");
    let (_, _, _, _, _, text) = pull_killed_after_a_checkpoint(f, &nginx, &pool);
    let record = fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "resume"))
        .unwrap_or_else(|| panic!("no .resume record:\n{text}"));
    let mut bytes = fs::read(&record).unwrap();
    let s = String::from_utf8(bytes.clone()).unwrap();
    let at = s.find("\"offset\":").expect("an offset in the record") + "\"offset\":".len();
    // One digit of the offset changed: a record that no longer matches its checksum.
    let d = bytes[at..].iter().position(u8::is_ascii_digit).unwrap() + at;
    bytes[d] = if bytes[d] == b'1' { b'2' } else { b'1' };
    fs::write(&record, &bytes).unwrap();

    let (r, events) = pull_events(f, &nginx.url(), &pool, &["-v"]);
    check_version(f, &pool, VERSIONS);
    assert!(of_kind(&events, "apply_resumed").is_empty(), "{events:?}");
    assert_eq!(r["resumed"].as_array().map(Vec::len), Some(0), "{r}");
    let left: Vec<_> = fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".subvol-recv"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
