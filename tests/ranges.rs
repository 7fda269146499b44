//! Tests: fetching byte ranges of one repository file (`subvol::mirror::ranges`) from real
//! servers on 127.0.0.1: nginx (multi-range, `multipart/byteranges`), the Python test server
//! of `mirror.rs` (one range per request), `python3 -m http.server` (no Range at all), hostile
//! servers written here that answer with wrong ranges, and a directory.

use crate::mirror::Server;
use crate::support::btrfs_fixture::{find_tool, skip_or_panic};
use crate::support::nginx::{Nginx, free_port, wait_for_port};
use crate::support::tree::{Rng, bytes};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use subvol::mirror::fetch::{FetchError, Remote};
use subvol::mirror::ranges::{RANGES_PER_REQUEST, RangeFetch, SINGLE_RANGE_REQUESTS, coalesce};
use subvol::mirror::{MirrorError, StallLimits};

const FILE: &str = "streams/data.bin";

/// A served directory holding `FILE` of `size` random bytes.
fn served(size: usize) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("streams")).unwrap();
    let data = bytes(0x5eed_0012, size);
    fs::write(dir.path().join(FILE), &data).unwrap();
    (dir, data)
}

/// `n` ranges of 1 to `max_len` bytes at random offsets of a file of `size` bytes.
fn scattered(seed: u64, size: u64, n: usize, max_len: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let off = rng.below(size);
            (off, (1 + rng.below(max_len)).min(size - off))
        })
        .collect()
}

/// The outcome of one `fetch_ranges` into a fresh sparse file of `size` bytes: the result,
/// the file's bytes and the last progress value.
struct Fetched {
    result: Result<RangeFetch, FetchError>,
    file: Vec<u8>,
    progress: u64,
}

fn fetch_with(
    remote: &Remote,
    size: u64,
    ranges: &[(u64, u64)],
    stop: &dyn Fn() -> bool,
) -> Fetched {
    let out = tempfile::tempfile().unwrap();
    out.set_len(size).unwrap();
    let mut progress = 0;
    let result = remote.fetch_ranges(FILE, size, ranges, &out, &mut |b| progress = b, stop);
    let mut file = vec![0u8; size as usize];
    out.read_exact_at(&mut file, 0).unwrap();
    Fetched {
        result,
        file,
        progress,
    }
}

fn fetch(remote: &Remote, size: u64, ranges: &[(u64, u64)]) -> Fetched {
    fetch_with(remote, size, ranges, &|| false)
}

fn http(url: &str) -> Remote {
    Remote::new(url, StallLimits::default())
}

/// Every wanted byte in `file` equals the source's.
fn assert_ranges(file: &[u8], data: &[u8], wanted: &[(u64, u64)]) {
    for &(off, len) in wanted {
        let (a, b) = (off as usize, (off + len) as usize);
        assert!(file[a..b] == data[a..b], "bytes {a}..{b} differ");
    }
}

/// Bytes of `file` outside `plan` are still zero (nothing was written where it was not asked).
fn assert_only_plan_written(file: &[u8], plan: &[(u64, u64)]) {
    let mut pos = 0usize;
    for &(off, len) in plan.iter().chain([(file.len() as u64, 0)].iter()) {
        assert!(
            file[pos..off as usize].iter().all(|&b| b == 0),
            "bytes written between {pos} and {off}"
        );
        pos = (off + len) as usize;
    }
}

fn bad(f: &Fetched) -> &str {
    match &f.result {
        Err(FetchError::Bad(e)) => e,
        other => panic!("not refused as bad: {other:?}"),
    }
}

#[test]
fn nginx_serves_scattered_ranges_in_few_multi_range_requests() {
    let (root, data) = served(5 << 20);
    let Some(nginx) = Nginx::start(root.path()) else {
        return;
    };
    let size = data.len() as u64;
    let remote = http(&nginx.url());

    // 200 scattered ranges, within budget: one or two multipart/byteranges answers.
    let wanted = scattered(1, size, 200, 20_000);
    let plan = coalesce(&wanted, 64, RANGES_PER_REQUEST);
    let f = fetch(&remote, size, &plan);
    let done = f.result.unwrap();
    assert_ranges(&f.file, &data, &wanted);
    assert_only_plan_written(&f.file, &plan);
    assert!(!done.whole_file);
    let log = nginx.requests();
    assert_eq!(log.len(), done.requests as usize, "{log:?}");
    assert!(done.requests <= 2, "{} requests", done.requests);
    assert!(
        log.iter().all(|r| r.status == 206 && r.path == FILE),
        "{log:?}"
    );
    assert!(
        log[0]
            .range
            .as_ref()
            .is_some_and(|r| r.matches(',').count() > 50)
    );
    let planned: u64 = plan.iter().map(|r| r.1).sum();
    assert_eq!(done.bytes, log.iter().map(|r| r.sent).sum::<u64>());
    assert!(
        done.bytes > planned && done.bytes < planned + 200 * 200,
        "{done:?}"
    );
    assert_eq!(f.progress, done.bytes);

    // 3000 small ranges squeezed into a budget of 4 requests: gaps are closed, every request
    // header stays within the limit, and nginx still answers every one with ranges.
    nginx.clear_log();
    let wanted = scattered(2, size, 3000, 300);
    let plan = coalesce(&wanted, 4, RANGES_PER_REQUEST);
    assert!(plan.len() <= 4 * RANGES_PER_REQUEST);
    let f = fetch(&remote, size, &plan);
    let done = f.result.unwrap();
    assert_ranges(&f.file, &data, &wanted);
    assert_only_plan_written(&f.file, &plan);
    let log = nginx.requests();
    assert!(
        done.requests <= 4 && log.len() == done.requests as usize,
        "{log:?}"
    );
    assert!(log.iter().all(|r| r.status == 206));
    assert!(log.iter().all(|r| {
        r.range
            .as_ref()
            .is_some_and(|h| h.len() + "Range: ".len() <= 4000)
    }));

    // One range: a plain 206 with Content-Range.
    nginx.clear_log();
    let f = fetch(&remote, size, &[(size - 10, 10)]);
    assert_eq!(f.result.unwrap().requests, 1);
    assert_ranges(&f.file, &data, &[(size - 10, 10)]);
    assert_eq!(
        nginx.requests()[0].range.as_deref(),
        Some(&*format!("bytes={}-{}", size - 10, size - 1))
    );

    // A missing file, and a stop between reads.
    let f = remote.fetch_ranges(
        "streams/none",
        10,
        &[(0, 1)],
        &tempfile::tempfile().unwrap(),
        &mut |_| {},
        &|| false,
    );
    assert!(matches!(f, Err(FetchError::Missing(_))), "{f:?}");
    let stopped = std::cell::Cell::new(false);
    let out = tempfile::tempfile().unwrap();
    out.set_len(size).unwrap();
    let r = remote.fetch_ranges(FILE, size, &plan, &out, &mut |_| stopped.set(true), &|| {
        stopped.get()
    });
    assert!(
        matches!(r, Err(FetchError::Fatal(MirrorError::Interrupted))),
        "{r:?}"
    );
}

#[test]
fn a_single_range_server_gets_one_range_per_request() {
    if find_tool("python3").is_none() {
        skip_or_panic("python3 is needed for the HTTP server");
        return;
    }
    let (root, data) = served(1 << 20);
    let server = Server::start(root.path());
    let size = data.len() as u64;
    let wanted = scattered(3, size, 40, 5000);
    let plan = coalesce(&wanted, 64, RANGES_PER_REQUEST);
    let f = fetch(&http(&server.url()), size, &plan);
    let done = f.result.unwrap();
    assert_ranges(&f.file, &data, &wanted);
    assert_only_plan_written(&f.file, &plan);
    assert!(!done.whole_file);
    // The multi-range request got 200 and was dropped; then one request per range.
    assert_eq!(done.requests as usize, 1 + plan.len());
    let ranged: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 206)
        .collect();
    assert_eq!(ranged.len(), plan.len());
    for (r, &(off, len)) in ranged.iter().zip(&plan) {
        assert_eq!(
            r.range.as_deref(),
            Some(&*format!("bytes={off}-{}", off + len - 1))
        );
        assert_eq!(r.sent, len);
    }
    assert_eq!(done.bytes, plan.iter().map(|r| r.1).sum::<u64>());

    // Many ranges: merged into at most SINGLE_RANGE_REQUESTS single-range requests.
    let wanted = scattered(4, size, 200, 700);
    let plan = coalesce(&wanted, 64, RANGES_PER_REQUEST);
    assert!(plan.len() > SINGLE_RANGE_REQUESTS);
    let f = fetch(&http(&server.url()), size, &plan);
    let done = f.result.unwrap();
    assert_ranges(&f.file, &data, &wanted);
    assert_eq!(done.requests as usize, 1 + SINGLE_RANGE_REQUESTS);
}

/// `python3 -m http.server` on a free port serving `root`, killed on drop.
struct PlainServer {
    child: Child,
    port: u16,
}

impl PlainServer {
    fn start(root: &Path) -> PlainServer {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start python3 -m http.server");
            if wait_for_port(port, &mut child) {
                return PlainServer { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("python3 -m http.server did not start");
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_without_range_support_sends_the_whole_file_once() {
    if find_tool("python3").is_none() {
        skip_or_panic("python3 is needed for the HTTP server");
        return;
    }
    let (root, data) = served(3 << 20);
    let server = PlainServer::start(root.path());
    let remote = http(&format!("http://127.0.0.1:{}/", server.port));
    let size = data.len() as u64;
    let plan = coalesce(&scattered(4, size, 30, 1000), 64, RANGES_PER_REQUEST);
    let f = fetch(&remote, size, &plan);
    let done = f.result.unwrap();
    // The multi-range request's 200 is dropped, the single range's 200 is read whole.
    assert_eq!(
        done,
        RangeFetch {
            requests: 2,
            bytes: size,
            whole_file: true
        }
    );
    assert!(f.file == data, "the whole file differs");
    // One range asked: its 200 is the whole file at once.
    let f = fetch(&remote, size, &[(7, 3)]);
    assert_eq!(f.result.unwrap().requests, 1);
    assert!(f.file == data);
    // The index says another size: refused before the body is read.
    let f = fetch(&remote, size + 1, &[(7, 3)]);
    assert!(bad(&f).contains("Content-Length"), "{}", bad(&f));
}

/// An HTTP server whose answers the test writes: `answer(range_header, connection)` per
/// request, one request per connection. Stopped and joined on drop.
struct Canned {
    port: u16,
    stop: Arc<AtomicBool>,
    ranges: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Canned {
    fn start(answer: impl Fn(&str, &mut TcpStream) + Send + 'static) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (stop2, ranges2) = (stop.clone(), ranges.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut range = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("range")
                    {
                        range = v.trim().to_string();
                    }
                }
                ranges2.lock().unwrap().push(range.clone());
                answer(&range, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        });
        Canned {
            port,
            stop,
            ranges,
            thread: Some(thread),
        }
    }

    fn remote(&self, limits: StallLimits) -> Remote {
        Remote::new(&format!("http://127.0.0.1:{}/", self.port), limits)
    }

    fn requests(&self) -> Vec<String> {
        self.ranges.lock().unwrap().clone()
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes a response: status line, headers, Content-Length (of `body`, unless given),
/// `Connection: close`, then `body`.
fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| *k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// A multipart/byteranges body (boundary `B0UND`) of `parts`: (Content-Range value, data).
fn multipart(parts: &[(String, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (cr, data) in parts {
        body.extend_from_slice(
            format!("\r\n--B0UND\r\nContent-Type: application/octet-stream\r\nContent-Range: {cr}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
    }
    body.extend_from_slice(b"\r\n--B0UND--\r\n");
    body
}

/// A part of a canned multipart answer: Content-Range value and data.
type Part = (String, Vec<u8>);
/// Headers of a canned answer.
type Headers = Vec<(&'static str, String)>;

fn multipart_type() -> (&'static str, String) {
    (
        "Content-Type",
        "multipart/byteranges; boundary=B0UND".to_string(),
    )
}

#[test]
fn wrong_ranges_from_a_server_are_refused() {
    let data = Arc::new(bytes(77, 1000));
    let size = 1000u64;
    let asked = [(100u64, 50u64), (500, 20)];
    let limits = StallLimits::default();
    let part = |d: &[u8], a: usize, b: usize, total: usize| {
        (format!("bytes {a}-{b}/{total}"), d[a..=b].to_vec())
    };
    let serve = |parts: Vec<(String, Vec<u8>)>| {
        let body = multipart(
            &parts
                .iter()
                .map(|(cr, d)| (cr.clone(), d.as_slice()))
                .collect::<Vec<_>>(),
        );
        Canned::start(move |_, conn| {
            respond(conn, "206 Partial Content", &[multipart_type()], &body)
        })
    };
    let d = &data;

    // A correct answer with parts in reverse order is taken.
    let s = serve(vec![part(d, 500, 519, 1000), part(d, 100, 149, 1000)]);
    let f = fetch(&s.remote(limits), size, &asked);
    assert_eq!(f.result.unwrap().requests, 1);
    assert_ranges(&f.file, d, &asked);
    assert_eq!(s.requests(), vec!["bytes=100-149,500-519".to_string()]);

    // A part outside the file, one none of the asked ranges meets, another file size, a part
    // shorter than its Content-Range, a range left out.
    let cases: Vec<(Vec<Part>, &str)> = vec![
        (
            vec![
                part(d, 100, 149, 1000),
                ("bytes 990-1009/1000".into(), vec![1; 20]),
            ],
            "outside the file",
        ),
        (
            vec![part(d, 100, 149, 1000), part(d, 300, 319, 1000)],
            "none of the ranges asked",
        ),
        (
            vec![part(d, 100, 149, 999), part(d, 500, 519, 999)],
            "999 bytes on the server",
        ),
        (
            vec![
                part(d, 100, 149, 1000),
                ("bytes 500-519/1000".into(), d[500..515].to_vec()),
            ],
            "does not match its data",
        ),
        (vec![part(d, 100, 149, 1000)], "lacks bytes of 500-519"),
    ];
    for (parts, want) in cases {
        let s = serve(parts);
        let f = fetch(&s.remote(limits), size, &asked);
        let e = bad(&f);
        assert!(
            e.contains(want) && e.contains("127.0.0.1"),
            "{e} (want {want})"
        );
        assert_eq!(s.requests().len(), 1, "refused without retrying");
    }

    // Single-part answers: a wrong Content-Range, no Content-Range, a multipart type without
    // boundary, a body longer than asked for.
    let single = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        Canned::start(move |_, conn| respond(conn, "206 Partial Content", &headers, &body))
    };
    let cases: Vec<(Headers, Vec<u8>, &str)> = vec![
        (
            vec![("Content-Range", "bytes 0-49/1000".into())],
            d[..50].to_vec(),
            "none of the ranges asked",
        ),
        (vec![], d[100..150].to_vec(), "without Content-Range"),
        (
            vec![("Content-Type", "multipart/byteranges".into())],
            vec![],
            "no boundary",
        ),
        (
            vec![("Content-Range", "bytes 100-149/1000".into())],
            d[100..200].to_vec(),
            "longer than its Content-Range",
        ),
    ];
    for (headers, body, want) in cases {
        let s = single(headers, body);
        let f = fetch(&s.remote(limits), size, &asked[..1]);
        let e = bad(&f);
        assert!(e.contains(want), "{e} (want {want})");
    }

    // A server that merges close ranges into one answer is fine.
    let dd = data.clone();
    let s = Canned::start(move |_, conn| {
        respond(
            conn,
            "206 Partial Content",
            &[("Content-Range", "bytes 100-169/1000".into())],
            &dd[100..170],
        )
    });
    let f = fetch(&s.remote(limits), size, &[(100, 10), (160, 10)]);
    assert_eq!(f.result.unwrap().bytes, 70);
    assert_ranges(&f.file, d, &[(100, 70)]);

    // Not found, and a 416.
    let s = Canned::start(|_, conn| respond(conn, "404 Not Found", &[], b""));
    assert!(matches!(
        fetch(&s.remote(limits), size, &asked).result,
        Err(FetchError::Missing(_))
    ));
    let s = Canned::start(|_, conn| respond(conn, "416 Range Not Satisfiable", &[], b""));
    let f = fetch(&s.remote(limits), size, &asked);
    assert!(bad(&f).contains("416"));
}

#[test]
fn cut_or_stalled_answers_are_retried_then_given_up() {
    let data = bytes(78, 1000);
    let size = 1000u64;
    // Every answer stops in the middle of the second part: retried, then given up.
    let mut body = multipart(&[
        ("bytes 100-149/1000".into(), &data[100..150]),
        ("bytes 500-519/1000".into(), &data[500..520]),
    ]);
    let full_len = body.len();
    body.truncate(full_len - 20);
    let s = Canned::start(move |_, conn| {
        respond(
            conn,
            "206 Partial Content",
            &[multipart_type(), ("Content-Length", full_len.to_string())],
            &body,
        )
    });
    let f = fetch(
        &s.remote(StallLimits::default()),
        size,
        &[(100, 50), (500, 20)],
    );
    match &f.result {
        Err(FetchError::Fatal(e @ MirrorError::DownloadInterrupted { .. })) => {
            assert!(e.to_string().contains("127.0.0.1"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests().len(), subvol::mirror::fetch::RETRIES as usize);
    // The first part arrived each time and is in place.
    assert_ranges(&f.file, &data, &[(100, 50)]);

    // A server that sends the headers and then nothing is given up after the time-out.
    let s = Canned::start(|_, conn| {
        let _ = conn.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/1000\r\nContent-Length: 10\r\n\r\n");
        std::thread::sleep(Duration::from_secs(3));
    });
    let limits = StallLimits {
        timeout: Duration::from_secs(1),
        min_rate: 0,
        window: Duration::from_secs(60),
        limit_rate: 0,
    };
    let t = std::time::Instant::now();
    let f = fetch(&s.remote(limits), size, &[(0, 10)]);
    assert!(
        matches!(
            f.result,
            Err(FetchError::Fatal(MirrorError::Stalled { .. }))
        ),
        "{:?}",
        f.result
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_directory_remote_copies_the_ranges() {
    let (root, data) = served(1 << 20);
    let size = data.len() as u64;
    let remote = Remote::new(root.path().to_str().unwrap(), StallLimits::default());
    let wanted = scattered(5, size, 100, 3000);
    let f = fetch(&remote, size, &wanted);
    let done = f.result.unwrap();
    assert_ranges(&f.file, &data, &wanted);
    let plan = coalesce(&wanted, usize::MAX, 1);
    assert_only_plan_written(&f.file, &plan);
    assert_eq!(done.requests, 0);
    assert_eq!(done.bytes, plan.iter().map(|r| r.1).sum::<u64>());
    assert!(!done.whole_file);
    // Another size than the index says, a missing file.
    assert!(bad(&fetch(&remote, size + 1, &[(0, 1)])).contains("the index says"));
    let r = remote.fetch_ranges(
        "streams/none",
        10,
        &[(0, 1)],
        &File::open("/dev/null").unwrap(),
        &mut |_| {},
        &|| false,
    );
    assert!(matches!(r, Err(FetchError::Missing(_))), "{r:?}");
}
