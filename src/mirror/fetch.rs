//! Getting the index and stream files from a repository: a directory, or HTTP(S).
//!
//! Over HTTP a file is downloaded into the pool's cache as `<sha256>.part`; an interrupted
//! download (connection cut, pull killed) is resumed with a `Range: bytes=N-` request, within
//! the same pull (up to [`RETRIES`] times) or by the next one. The server must answer 206 with a
//! matching `Content-Range`; a 200 restarts from zero. The finished file must have the size and
//! SHA-256 the signed index names, else it is deleted and reported bad.
//!
//! Every transfer must keep moving ([`StallLimits`]): no byte for `timeout`, or less than
//! `min_rate` bytes per second over a `window`, gives the URL up (the partial file stays for the
//! next pull). A failed local write (a full disk) drops the partial file: it holds the space
//! the pool needs. In a directory repository only regular files are opened (a FIFO would block
//! forever).

use super::MirrorError;
use super::index::{INDEX_FILE, Index, MAX_INDEX_BYTES, Sha256Digest, StreamFile};
use super::oci::{Reference, Registry};
use crate::sign::{KeyId, KeySet};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Attempts per file within one pull (each after the first resumes with Range).
pub const RETRIES: u32 = 4;

/// How long a transfer may go without progress, and the least rate it must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallLimits {
    /// Longest wait for a byte (also for the connection and the response headers).
    pub timeout: Duration,
    /// Least average rate over `window`, bytes per second (0: none).
    pub min_rate: u64,
    /// The window the rate is measured over.
    pub window: Duration,
    /// The most bytes per second a transfer may move (0: no limit, `--limit-rate`).
    pub limit_rate: u64,
}

impl Default for StallLimits {
    /// 30 s without a byte, or less than 1 KiB/s over 60 s.
    fn default() -> StallLimits {
        StallLimits {
            timeout: Duration::from_secs(30),
            min_rate: 1024,
            window: Duration::from_secs(60),
            limit_rate: 0,
        }
    }
}

/// A response body that fails with [`io::ErrorKind::TimedOut`] when it falls below the
/// minimum rate over a window (ureq's per-read time-out covers a silent server), and that
/// keeps below [`StallLimits::limit_rate`].
pub(super) struct RateGuard<R> {
    inner: R,
    limits: StallLimits,
    window_start: Instant,
    window_bytes: u64,
    bucket: Option<TokenBucket>,
}

impl<R: Read> RateGuard<R> {
    pub(super) fn new(inner: R, limits: StallLimits) -> RateGuard<R> {
        RateGuard {
            inner,
            limits,
            window_start: Instant::now(),
            window_bytes: 0,
            bucket: (limits.limit_rate > 0).then(|| TokenBucket::new(limits.limit_rate)),
        }
    }
}

/// `--limit-rate`: a token bucket that fills at `rate` bytes per second and holds at most
/// [`TokenBucket::BURST`] seconds of them. Bytes are paid after they are read: a read that
/// overdraws the bucket sleeps until it is paid, so `n` bytes from a fresh bucket take at least
/// `n / rate` seconds less what the read size lets through at once.
pub(super) struct TokenBucket {
    rate: u64,
    /// Tokens (bytes) available; negative while a read is being paid.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Seconds of tokens the bucket can hold after an idle spell.
    const BURST: f64 = 0.25;

    pub(super) fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate: rate.max(1),
            // Empty at first: the first bytes of a transfer are paid like all others.
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Pays for `n` bytes; returns how long it slept.
    pub(super) fn take(&mut self, n: usize) -> Duration {
        let rate = self.rate as f64;
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate)
            .min(rate * Self::BURST);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-self.tokens / rate);
        std::thread::sleep(wait);
        self.tokens = 0.0;
        self.last = Instant::now();
        wait
    }
}

impl<R: Read> Read for RateGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Under a rate limit, reads of at most an eighth of a second's bytes: each pause stays
        // short (a cancelled pull stops soon) and the rate even.
        let len = match &self.bucket {
            Some(b) => usize::try_from(b.rate / 8)
                .unwrap_or(usize::MAX)
                .max(1024)
                .min(buf.len()),
            None => buf.len(),
        };
        let buf = &mut buf[..len];
        let n = self.inner.read(buf).map_err(|e| {
            if is_timeout(&e) {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no data for {} s (--timeout)",
                        self.limits.timeout.as_secs_f64()
                    ),
                )
            } else {
                e
            }
        })?;
        if let Some(b) = &mut self.bucket {
            // Time spent holding back is no stall of the server's.
            let slept = b.take(n);
            self.window_start += slept;
        }
        self.window_bytes += n as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed >= self.limits.window && n > 0 {
            let least = (self.limits.min_rate as f64 * elapsed.as_secs_f64()) as u64;
            if self.window_bytes < least {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} bytes in {:.0} s, below --min-rate {} bytes/s (over --rate-window {} s)",
                        self.window_bytes,
                        elapsed.as_secs_f64(),
                        self.limits.min_rate,
                        self.limits.window.as_secs_f64()
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

/// A time-out of ureq (wrapped in an I/O error by its body reader) or of the socket.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|x| x.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// Opens a repository file only if it is a regular file: opened without blocking (a FIFO's
/// open would wait for a writer), then checked on the open descriptor (no race with a rename).
pub(super) fn open_regular(p: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(p)?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Where a repository is.
#[derive(Debug)]
pub enum Remote {
    /// A local directory.
    Dir(PathBuf),
    /// An `http://` or `https://` base URL (ending in `/`).
    Http {
        /// Base URL.
        base: String,
        /// The client.
        agent: ureq::Agent,
        /// When to give a transfer up.
        limits: StallLimits,
    },
    /// An OCI registry repository (`oci://`, `oci+http://`), see [`super::oci`].
    Oci(Box<Registry>),
}

/// Download progress of one file.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Bytes of the file done so far.
    Bytes(u64),
    /// A Range request resumes a partial download at this offset.
    Resume(u64),
    /// A mirror failed for this file and the next one is tried ([`Mirrors::fetch`]).
    MirrorSkipped {
        /// The mirror (its base URL or directory).
        mirror: String,
        /// Why.
        reason: String,
    },
}

/// Why a file could not be fetched.
#[derive(Debug)]
pub enum FetchError {
    /// The repository does not have it (404, no such file): try another chain.
    Missing(String),
    /// Wrong size or hash: try another chain.
    Bad(String),
    /// Network or local I/O failure: stop (a partial download stays for the next pull).
    Fatal(MirrorError),
}

impl Remote {
    /// Parses `URL|DIR`; HTTP transfers are given up as `limits` say.
    #[must_use]
    pub fn new(source: &str, limits: StallLimits) -> Remote {
        if source.starts_with("http://") || source.starts_with("https://") {
            let mut base = source.to_string();
            if base.ends_with("/index.json") {
                base.truncate(base.len() - "index.json".len());
            }
            if !base.ends_with('/') {
                base.push('/');
            }
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(limits.timeout))
                .timeout_recv_response(Some(limits.timeout))
                .timeout_per_read(Some(limits.timeout))
                .user_agent(concat!("subvol/", env!("CARGO_PKG_VERSION")))
                .build()
                .into();
            Remote::Http {
                base,
                agent,
                limits,
            }
        } else {
            let p = source.strip_prefix("file://").unwrap_or(source);
            Remote::Dir(PathBuf::from(p))
        }
    }

    /// Parses `URL|DIR` as [`Remote::new`] does, and `oci://` (`oci+http://`) registry
    /// references, connecting to the registry (credentials, TLS roots from `ca`).
    ///
    /// # Errors
    /// A registry reference, its credentials or CA file are unusable, or it cannot be reached.
    pub fn open(
        source: &str,
        limits: StallLimits,
        ca: Option<&Path>,
    ) -> Result<Remote, MirrorError> {
        if Reference::is_oci(source) {
            return Ok(Remote::Oci(Box::new(Registry::connect(
                source, limits, ca, false,
            )?)));
        }
        let mut r = Remote::new(source, limits);
        if let (Remote::Http { agent, .. }, Some(_)) = (&mut r, ca) {
            *agent = super::oci::agent(limits, ca)?;
        }
        Ok(r)
    }

    /// A GET request for repository file `rel` over HTTP or from a registry (with its
    /// credentials); None for a directory.
    pub(super) fn get(
        &self,
        rel: &str,
    ) -> Result<Option<ureq::RequestBuilder<ureq::typestate::WithoutBody>>, MirrorError> {
        match self {
            Remote::Dir(_) => Ok(None),
            Remote::Http { agent, .. } => Ok(Some(agent.get(self.location(rel)))),
            Remote::Oci(r) => r.get(rel).map(Some),
        }
    }

    /// The stall limits of HTTP and registry transfers.
    pub(super) fn limits(&self) -> Option<StallLimits> {
        match self {
            Remote::Dir(_) => None,
            Remote::Http { limits, .. } => Some(*limits),
            Remote::Oci(r) => Some(r.limits()),
        }
    }

    /// The URL or path of a repository file, for messages.
    #[must_use]
    pub fn location(&self, rel: &str) -> String {
        match self {
            Remote::Dir(d) => d.join(rel).display().to_string(),
            Remote::Http { base, .. } => format!("{base}{rel}"),
            Remote::Oci(r) => r.location(rel),
        }
    }

    /// What identifies the repository by where it is: the base URL, or the directory's
    /// canonical path (as given when it cannot be resolved).
    #[must_use]
    pub fn identity(&self) -> String {
        match self {
            Remote::Dir(d) => fs::canonicalize(d)
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string(),
            Remote::Http { base, .. } => base.clone(),
            Remote::Oci(r) => r.reference.display(),
        }
    }

    /// The mirror as the user named it, for messages: the base URL, registry reference or
    /// directory.
    #[must_use]
    pub fn base(&self) -> String {
        match self {
            Remote::Dir(d) => d.display().to_string(),
            Remote::Http { base, .. } => base.clone(),
            Remote::Oci(r) => r.reference.display(),
        }
    }

    /// True for HTTP(S) and registries (files are downloaded into the pool's cache).
    #[must_use]
    pub fn is_http(&self) -> bool {
        !matches!(self, Remote::Dir(_))
    }

    /// Bytes still to download for `files` into `cache`: what complete or partial copies
    /// there hold already is not counted (0 for a directory, read in place).
    #[must_use]
    pub fn bytes_to_download<'f>(
        &self,
        files: impl IntoIterator<Item = &'f StreamFile>,
        cache: &Path,
    ) -> u64 {
        if !self.is_http() {
            return 0;
        }
        files.into_iter().fold(0u64, |sum, f| {
            let len = |ext: &str| {
                fs::metadata(cache.join(format!("{}.{ext}", f.sha256)))
                    .map(|m| m.len())
                    .ok()
                    .filter(|&n| n <= f.size)
            };
            let have = len("zst").or_else(|| len("part")).unwrap_or(0);
            sum.saturating_add(f.size - have)
        })
    }

    /// Reads a small file (the index), at most [`MAX_INDEX_BYTES`].
    ///
    /// # Errors
    /// Missing file, network or I/O errors, too large.
    pub fn read_small(&self, rel: &str) -> Result<Vec<u8>, MirrorError> {
        let loc = self.location(rel);
        let Some(buf) = self.read_capped(rel, MAX_INDEX_BYTES)? else {
            return Err(match self {
                Remote::Dir(d) => {
                    // The OS's own words ("No such file or directory").
                    let p = d.join(rel);
                    let e = open_regular(&p)
                        .err()
                        .unwrap_or_else(|| io::ErrorKind::NotFound.into());
                    MirrorError::io("read", p, e)
                }
                _ => MirrorError::HttpStatus {
                    url: loc,
                    status: 404,
                },
            });
        };
        if buf.len() as u64 > MAX_INDEX_BYTES {
            return Err(MirrorError::IndexTooLarge {
                location: loc,
                max: MAX_INDEX_BYTES,
            });
        }
        Ok(buf)
    }

    /// Reads at most `max + 1` bytes of file `rel` (more than `max` tells a file too large);
    /// None when the repository does not have it (no such file, HTTP 404 or 410).
    ///
    /// # Errors
    /// Network or I/O errors, other HTTP statuses.
    pub fn read_capped(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, MirrorError> {
        let loc = self.location(rel);
        let mut buf = Vec::new();
        match self {
            Remote::Dir(d) => {
                let p = d.join(rel);
                match open_regular(&p) {
                    Ok(f) => f.take(max + 1).read_to_end(&mut buf),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => Err(e),
                }
                .map_err(|e| MirrorError::io("read", &p, e))?;
            }
            Remote::Http { .. } | Remote::Oci(_) => {
                let limits = &self.limits().unwrap_or_default();
                let Some(req) = self.get(rel)? else {
                    return Err(MirrorError::Bug("no request for an HTTP file".to_string()));
                };
                let resp = req.call().map_err(|e| match e {
                    ureq::Error::Timeout(_) => MirrorError::Stalled {
                        url: loc.clone(),
                        reason: no_response(limits),
                    },
                    e => MirrorError::Http {
                        url: loc.clone(),
                        source: Box::new(e),
                    },
                })?;
                match resp.status().as_u16() {
                    200 => {}
                    404 | 410 => return Ok(None),
                    status => return Err(MirrorError::HttpStatus { url: loc, status }),
                }
                RateGuard::new(resp.into_body().into_reader(), *limits)
                    .take(max + 1)
                    .read_to_end(&mut buf)
                    .map_err(|source| {
                        if source.kind() == io::ErrorKind::TimedOut {
                            MirrorError::Stalled {
                                url: loc.clone(),
                                reason: source.to_string(),
                            }
                        } else {
                            MirrorError::HttpBody {
                                url: loc.clone(),
                                source,
                            }
                        }
                    })?;
            }
        }
        Ok(Some(buf))
    }

    /// Gets a stream file, checked against its size and SHA-256, and returns it open at offset
    /// 0. `cache` is the pool's cache directory (HTTP); `progress` gets the bytes of this file
    /// done so far.
    ///
    /// # Errors
    /// See [`FetchError`].
    pub fn fetch(
        &self,
        f: &StreamFile,
        cache: &Path,
        progress: &mut dyn FnMut(Progress),
        stop: &dyn Fn() -> bool,
    ) -> Result<File, FetchError> {
        match self {
            Remote::Dir(d) => {
                let p = d.join(&f.path);
                let mut file = match open_regular(&p) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(FetchError::Missing(format!(
                            "{} does not exist",
                            p.display()
                        )));
                    }
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        return Err(FetchError::Bad(format!("{}: {e}", p.display())));
                    }
                    Err(e) => return Err(FetchError::Fatal(MirrorError::io("open", &p, e))),
                };
                let mut h = Sha256::new();
                let n = hash_into(&mut file, &mut h, f.size + 1, &mut |b| {
                    progress(Progress::Bytes(b))
                })
                .map_err(|e| FetchError::Fatal(MirrorError::io("read", &p, e)))?;
                check(f, n, h, &p.display().to_string())?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| FetchError::Fatal(MirrorError::io("seek", &p, e)))?;
                Ok(file)
            }
            Remote::Http { limits, .. } => self.fetch_http(*limits, f, cache, progress, stop),
            Remote::Oci(r) => self.fetch_http(r.limits(), f, cache, progress, stop),
        }
    }

    fn fetch_http(
        &self,
        limits: StallLimits,
        f: &StreamFile,
        cache: &Path,
        progress: &mut dyn FnMut(Progress),
        stop: &dyn Fn() -> bool,
    ) -> Result<File, FetchError> {
        let url = self.location(&f.path);
        let done = cache.join(format!("{}.zst", f.sha256));
        let part = cache.join(format!("{}.part", f.sha256));
        let fatal_io =
            |op: &'static str, p: &Path, e: io::Error| FetchError::Fatal(MirrorError::io(op, p, e));
        // A file completed by an earlier pull is checked again.
        if let Ok(mut file) = File::open(&done) {
            let mut h = Sha256::new();
            let n = hash_into(&mut file, &mut h, f.size + 1, &mut |_| {})
                .map_err(|e| fatal_io("read", &done, e))?;
            if check(f, n, h, "").is_ok() {
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| fatal_io("seek", &done, e))?;
                progress(Progress::Bytes(f.size));
                return Ok(file);
            }
            let _ = fs::remove_file(&done);
        }
        fs::create_dir_all(cache).map_err(|e| fatal_io("create", cache, e))?;
        let mut out = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&part)
            .map_err(|e| fatal_io("open", &part, e))?;
        let mut last_err = String::new();
        for _attempt in 0..RETRIES {
            // Hash what is there already, then ask for the rest.
            let mut have = out
                .metadata()
                .map_err(|e| fatal_io("stat", &part, e))?
                .len();
            if have > f.size {
                out.set_len(0).map_err(|e| fatal_io("truncate", &part, e))?;
                have = 0;
            }
            let mut h = Sha256::new();
            out.seek(SeekFrom::Start(0))
                .map_err(|e| fatal_io("seek", &part, e))?;
            let n = hash_into(&mut out, &mut h, have, &mut |_| {})
                .map_err(|e| fatal_io("read", &part, e))?;
            if n != have {
                return Err(fatal_io(
                    "read",
                    &part,
                    io::Error::other("partial download shrank while reading"),
                ));
            }
            progress(Progress::Bytes(have));
            if have == f.size {
                return finish(f, out, h, &part, &done);
            }
            let Some(mut req) = self.get(&f.path).map_err(FetchError::Fatal)? else {
                return Err(FetchError::Fatal(MirrorError::Bug(
                    "no request for an HTTP file".to_string(),
                )));
            };
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
                progress(Progress::Resume(have));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Timeout(_)) => {
                    return Err(FetchError::Fatal(MirrorError::Stalled {
                        url,
                        reason: no_response(&limits),
                    }));
                }
                Err(e) => {
                    last_err = crate::util::error_chain(&e);
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            match status {
                404 | 410 => {
                    let _ = fs::remove_file(&part);
                    let note = if matches!(self, Remote::Oci(_)) {
                        " (the registry lacks this blob, which its manifest names)"
                    } else {
                        ""
                    };
                    return Err(FetchError::Missing(format!("{url}: HTTP {status}{note}")));
                }
                416 => {
                    // Our partial copy does not fit the file on the server: start over.
                    out.set_len(0).map_err(|e| fatal_io("truncate", &part, e))?;
                    last_err = format!("HTTP {status}");
                    continue;
                }
                200 if have > 0 => {
                    // The server ignored the range: start over.
                    out.set_len(0).map_err(|e| fatal_io("truncate", &part, e))?;
                    have = 0;
                    h = Sha256::new();
                    progress(Progress::Bytes(0));
                }
                206 if have > 0 => {
                    let cr = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !cr.starts_with(&format!("bytes {have}-")) {
                        out.set_len(0).map_err(|e| fatal_io("truncate", &part, e))?;
                        last_err = format!("unexpected Content-Range {cr:?}");
                        continue;
                    }
                }
                200 => {}
                _ => {
                    last_err = format!("HTTP status {status}");
                    if (500..600).contains(&status) {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    return Err(FetchError::Fatal(MirrorError::HttpStatus { url, status }));
                }
            }
            out.seek(SeekFrom::End(0))
                .map_err(|e| fatal_io("seek", &part, e))?;
            let mut body = RateGuard::new(resp.into_body().into_reader(), limits);
            let mut buf = vec![0u8; 1 << 16];
            let mut total = have;
            let res: Result<(), Cut> = (|| {
                loop {
                    if stop() {
                        return Err(Cut::Stop);
                    }
                    let n = match body.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return Err(Cut::Stalled(e.to_string()));
                        }
                        Err(e) => return Err(Cut::Read(e)),
                    };
                    if total + n as u64 > f.size {
                        return Err(Cut::TooLong);
                    }
                    out.write_all(&buf[..n]).map_err(Cut::Write)?;
                    h.update(&buf[..n]);
                    total += n as u64;
                    progress(Progress::Bytes(total));
                }
            })();
            match res {
                Ok(()) if total == f.size => return finish(f, out, h, &part, &done),
                Ok(()) => last_err = format!("connection closed after {total} of {} bytes", f.size),
                Err(Cut::TooLong) => {
                    let _ = fs::remove_file(&part);
                    return Err(FetchError::Bad(format!(
                        "{url}: server sent more bytes than the index says"
                    )));
                }
                Err(Cut::Stop) => {
                    let _ = out.flush();
                    return Err(FetchError::Fatal(MirrorError::Interrupted));
                }
                Err(Cut::Stalled(reason)) => {
                    let _ = out.flush();
                    return Err(FetchError::Fatal(MirrorError::Stalled { url, reason }));
                }
                Err(Cut::Write(e)) => {
                    // A full or failing disk: what was written cannot be trusted to resume
                    // and holds the space the pool needs.
                    drop(out);
                    let _ = fs::remove_file(&part);
                    return Err(fatal_io("write", &part, e));
                }
                Err(Cut::Read(e)) => last_err = crate::util::error_chain(&e),
            }
            out.flush().map_err(|e| fatal_io("write", &part, e))?;
        }
        Err(FetchError::Fatal(MirrorError::DownloadInterrupted {
            url,
            last: last_err,
        }))
    }
}

/// The mirrors of one repository, tried in order. Metadata comes from the mirror whose index is
/// the newest valid one (so a mirror serving an old index cannot win); each file from the first
/// mirror of that index that serves it correctly. A mirror that fails (cannot be reached, stalls,
/// 404, a wrong size or hash, a bad or stale index) is skipped, and the caller is told which
/// and why.
#[derive(Debug)]
pub struct Mirrors {
    /// Mirrors serving the chosen index, in the order given; never empty.
    current: Vec<Remote>,
}

/// A failure of one mirror to say: the mirror (base URL or directory) and why.
pub type SkipNote<'a> = (&'a str, &'a str);

/// True when a fetch failure is the mirror's (try the next one), false when it is this host's
/// (a local write failed) or the user's (interrupted): stop.
fn is_mirror_fault(e: &MirrorError) -> bool {
    matches!(
        e,
        MirrorError::Http { .. }
            | MirrorError::HttpBody { .. }
            | MirrorError::HttpStatus { .. }
            | MirrorError::Stalled { .. }
            | MirrorError::DownloadInterrupted { .. }
            | MirrorError::Registry(_)
    )
}

impl Mirrors {
    /// Opens every mirror of `sources` (in parallel), reads each one's index, and keeps the newest
    /// valid one: signed by one of `keys`, unexpired at `now`, of the same repository as the
    /// first valid index, with the highest serial. Mirrors that fail, or serve an older index,
    /// are reported to `skipped` and not used for files. Returns the mirrors serving the chosen
    /// index, the index and its signing key.
    ///
    /// # Errors
    /// No mirror has a valid index: with one mirror its error, else
    /// [`MirrorError::AllMirrorsFailed`] (its exit code that of the first refusal of the data,
    /// else of the last failure).
    pub fn open_newest(
        sources: &[String],
        limits: StallLimits,
        ca: Option<&Path>,
        keys: &KeySet,
        now: u64,
        skipped: &mut dyn FnMut(SkipNote<'_>),
    ) -> Result<(Mirrors, Index, KeyId), MirrorError> {
        let mut valid: Vec<(Remote, Index, KeyId)> = Vec::new();
        let mut errors: Vec<(String, MirrorError)> = Vec::new();
        let several = sources.len() > 1;
        let read = |src: &String| {
            Remote::open(src, limits, ca).and_then(|remote| {
                let bytes = remote.read_small(INDEX_FILE)?;
                let (index, key) = Index::open(&bytes, keys)?;
                if now > index.expires {
                    return Err(MirrorError::Expired {
                        expires: index.expires,
                        now,
                    });
                }
                Ok((remote, index, key))
            })
        };
        // All mirrors at once: one that never answers costs one --timeout, not one each.
        let results: Vec<Result<(Remote, Index, KeyId), MirrorError>> = if several {
            std::thread::scope(|s| {
                let handles: Vec<_> = sources.iter().map(|src| s.spawn(|| read(src))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(MirrorError::Bug("reading a mirror's index panicked".into()))
                        })
                    })
                    .collect()
            })
        } else {
            sources.iter().map(read).collect()
        };
        for (src, r) in sources.iter().zip(results) {
            match r {
                Ok(v) => valid.push(v),
                Err(MirrorError::Interrupted) => return Err(MirrorError::Interrupted),
                Err(e) => {
                    if several {
                        skipped((src, &crate::util::error_chain(&e)));
                    }
                    errors.push((src.clone(), e));
                }
            }
        }
        let Some(repository) = valid.first().map(|v| v.1.repository) else {
            return Err(all_failed(errors));
        };
        // Another repository's index (signed by a key trusted for this one) is not a newer
        // version of this one.
        let mut same = Vec::new();
        for v in valid {
            if v.1.repository == repository {
                same.push(v);
            } else {
                let why = format!(
                    "its index is of another repository ({}) than the first mirror's ({})",
                    v.1.repository.map_or("none".into(), |u| u.to_string()),
                    repository.map_or("none".into(), |u| u.to_string()),
                );
                skipped((&v.0.base(), &why));
            }
        }
        let newest = same.iter().map(|v| v.1.serial).max().unwrap_or(0);
        let newest_at = same
            .iter()
            .find(|v| v.1.serial == newest)
            .map(|v| v.0.base())
            .unwrap_or_default();
        let mut current = Vec::new();
        let mut chosen: Option<(Index, KeyId)> = None;
        for (remote, index, key) in same {
            if index.serial < newest {
                let why = format!(
                    "its index serial {} is older than serial {newest} of {newest_at} (a stale or rolled-back mirror)",
                    index.serial
                );
                skipped((&remote.base(), &why));
                continue;
            }
            if chosen.is_none() {
                chosen = Some((index, key));
            }
            current.push(remote);
        }
        let (index, key) = chosen.ok_or_else(|| MirrorError::Bug("no newest index".into()))?;
        Ok((Mirrors { current }, index, key))
    }

    /// `first` (whose metadata verified) followed by the other mirrors of `sources` in their
    /// order, for files named by verified metadata (trust metadata chooses no index).
    ///
    /// # Errors
    /// A mirror cannot be opened (a bad registry reference or CA file).
    pub fn with_first(
        first: Remote,
        sources: &[String],
        limits: StallLimits,
        ca: Option<&Path>,
    ) -> Result<Mirrors, MirrorError> {
        let mut current = vec![first];
        for src in sources {
            let r = Remote::new(src, limits);
            if r.identity() != current[0].identity() {
                current.push(Remote::open(src, limits, ca)?);
            }
        }
        Ok(Mirrors { current })
    }

    /// The first mirror of the chosen index (seeded fulls and space checks use it).
    #[must_use]
    pub fn primary(&self) -> &Remote {
        &self.current[0]
    }

    /// Gets a stream file as [`Remote::fetch`] does, from the first mirror that serves it
    /// correctly; each mirror that fails is reported as [`Progress::MirrorSkipped`] (with more
    /// than one mirror). A partial download left by one mirror is resumed from the next (the
    /// file is named and checked by its SHA-256).
    ///
    /// # Errors
    /// [`FetchError::Missing`] or [`FetchError::Bad`] when every mirror failed and one of them
    /// lacks the file or served it wrong (another chain may do); [`FetchError::Fatal`] for a
    /// failure of this host, an interruption, or when every mirror failed to deliver.
    pub fn fetch(
        &self,
        f: &StreamFile,
        cache: &Path,
        progress: &mut dyn FnMut(Progress),
        stop: &dyn Fn() -> bool,
    ) -> Result<File, FetchError> {
        if let [only] = self.current.as_slice() {
            return only.fetch(f, cache, progress, stop);
        }
        let mut failures: Vec<String> = Vec::new();
        let mut refused: Option<bool> = None; // Some(true): some mirror lacks it (Missing)
        let mut last: Option<MirrorError> = None;
        for (k, m) in self.current.iter().enumerate() {
            let mut r = m.fetch(f, cache, progress, stop);
            // This mirror may have resumed a partial file an earlier one left (a stall keeps
            // it): a bad hash may be that mirror's prefix, not this one's bytes. The bad file
            // is gone now; ask this mirror once more, from zero.
            if k > 0 && matches!(r, Err(FetchError::Bad(_))) {
                r = m.fetch(f, cache, progress, stop);
            }
            let reason = match r {
                Ok(file) => return Ok(file),
                Err(FetchError::Fatal(e)) if !is_mirror_fault(&e) => {
                    return Err(FetchError::Fatal(e));
                }
                Err(FetchError::Fatal(e)) => {
                    let r = crate::util::error_chain(&e);
                    last = Some(e);
                    r
                }
                Err(FetchError::Missing(r)) => {
                    refused = Some(true);
                    r
                }
                Err(FetchError::Bad(r)) => {
                    refused.get_or_insert(false);
                    r
                }
            };
            progress(Progress::MirrorSkipped {
                mirror: m.base(),
                reason: reason.clone(),
            });
            failures.push(format!("{}: {reason}", m.base()));
        }
        match (refused, last) {
            (Some(true), _) => Err(FetchError::Missing(format!(
                "every mirror failed: {}",
                failures.join("; ")
            ))),
            (Some(false), _) => Err(FetchError::Bad(format!(
                "every mirror failed: {}",
                failures.join("; ")
            ))),
            (None, Some(kind)) => Err(FetchError::Fatal(MirrorError::AllMirrorsFailed {
                failures,
                kind: Box::new(kind),
            })),
            (None, None) => Err(FetchError::Fatal(MirrorError::Bug(
                "no mirror to fetch from".into(),
            ))),
        }
    }
}

/// The error of a pull whose every mirror failed to give a valid index (see
/// [`Mirrors::open_newest`]).
pub(super) fn all_failed(mut errors: Vec<(String, MirrorError)>) -> MirrorError {
    if errors.len() == 1 {
        return errors.remove(0).1;
    }
    let failures: Vec<String> = errors
        .iter()
        .map(|(m, e)| format!("{m}: {}", crate::util::error_chain(e)))
        .collect();
    let at = errors
        .iter()
        .position(|(_, e)| e.is_stream_fault())
        .unwrap_or(errors.len().saturating_sub(1));
    match errors.into_iter().nth(at) {
        Some((_, kind)) => MirrorError::AllMirrorsFailed {
            failures,
            kind: Box::new(kind),
        },
        None => MirrorError::Bug("no mirror given".into()),
    }
}

/// Why a body transfer ended early.
enum Cut {
    /// Cancelled.
    Stop,
    /// Too slow ([`StallLimits`]).
    Stalled(String),
    /// More bytes than the index says.
    TooLong,
    /// Reading the body failed (retried with Range).
    Read(io::Error),
    /// Writing the partial file failed.
    Write(io::Error),
}

pub(super) fn no_response(limits: &StallLimits) -> String {
    format!(
        "no response within {} s (--timeout)",
        limits.timeout.as_secs_f64()
    )
}

/// Removes from `cache` every file that is not a copy (complete or partial) of one of `keep`:
/// nothing else there can be resumed by this pull.
pub fn drop_others<'f>(cache: &Path, keep: impl IntoIterator<Item = &'f StreamFile>) {
    let names: std::collections::HashSet<String> = keep
        .into_iter()
        .flat_map(|f| [format!("{}.zst", f.sha256), format!("{}.part", f.sha256)])
        .collect();
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            if !names.contains(e.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Bytes the file system of `dir` can spare for downloads: (free for this user, reserve). The
/// reserve, 2% of the file system but at least 64 MiB, stays for the received versions and
/// everything else on it.
///
/// # Errors
/// `statvfs` fails.
pub fn spare_space(dir: &Path) -> Result<(u64, u64), MirrorError> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| MirrorError::io("statvfs", dir, io::Error::from(e)))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    Ok((free, (total / 50).max(64 << 20)))
}

fn hash_into(
    r: &mut impl Read,
    h: &mut Sha256,
    max: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    let mut r = r.take(max);
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
        progress(n);
    }
}

fn check(f: &StreamFile, n: u64, h: Sha256, what: &str) -> Result<(), FetchError> {
    if n != f.size {
        return Err(FetchError::Bad(format!(
            "{what}: {n} bytes, the index says {}",
            f.size
        )));
    }
    let got = Sha256Digest(h.finalize().into());
    if got != f.sha256 {
        return Err(FetchError::Bad(format!(
            "{what}: SHA-256 {got} differs from the signed index's {}",
            f.sha256
        )));
    }
    Ok(())
}

fn finish(
    f: &StreamFile,
    mut out: File,
    h: Sha256,
    part: &Path,
    done: &Path,
) -> Result<File, FetchError> {
    if let Err(e) = check(f, f.size, h, &part.display().to_string()) {
        let _ = fs::remove_file(part);
        return Err(e);
    }
    fs::rename(part, done).map_err(|e| FetchError::Fatal(MirrorError::io("rename", done, e)))?;
    out.seek(SeekFrom::Start(0))
        .map_err(|e| FetchError::Fatal(MirrorError::io("seek", done, e)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    /// A directory mirror serving `index` signed by `key`.
    fn mirror(dir: &Path, name: &str, index: &Index, key: &SecretKey) -> String {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(INDEX_FILE), index.sign(key).unwrap()).unwrap();
        d.display().to_string()
    }

    fn index(repository: &str, serial: u64, expires: u64) -> Index {
        Index {
            repository: Some(repository.parse().unwrap()),
            serial,
            created: 1,
            expires,
            versions: Vec::new(),
            streams: Vec::new(),
        }
    }

    #[test]
    fn the_newest_valid_index_of_the_first_mirrors_repository_wins() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed(&[7; 32]);
        let other_key = SecretKey::from_seed(&[8; 32]);
        let mut keys = KeySet::new();
        keys.add(key.public().clone());
        let repo = "01234567-89ab-4def-8123-456789abcdef";
        let other = "11234567-89ab-4def-8123-456789abcdef";
        let now = 1000;
        let sources = vec![
            mirror(dir.path(), "old", &index(repo, 3, 5000), &key),
            mirror(dir.path(), "forged", &index(repo, 9, 5000), &other_key),
            mirror(dir.path(), "expired", &index(repo, 8, 999), &key),
            mirror(dir.path(), "wrong", &index(other, 7, 5000), &key),
            dir.path().join("missing").display().to_string(),
            mirror(dir.path(), "new", &index(repo, 5, 5000), &key),
            mirror(dir.path(), "new2", &index(repo, 5, 5000), &key),
        ];
        let mut notes: Vec<(String, String)> = Vec::new();
        let (m, idx, k) = Mirrors::open_newest(
            &sources,
            StallLimits::default(),
            None,
            &keys,
            now,
            &mut |n| {
                notes.push((n.0.to_string(), n.1.to_string()));
            },
        )
        .unwrap();
        assert_eq!((idx.serial, k), (5, key.public().id()));
        let used: Vec<String> = m.current.iter().map(Remote::base).collect();
        assert_eq!(used, vec![sources[5].clone(), sources[6].clone()]);
        let skipped: Vec<&str> = notes.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(
            skipped,
            vec![
                sources[1].as_str(),
                sources[2].as_str(),
                sources[4].as_str(),
                sources[3].as_str(),
                sources[0].as_str()
            ]
        );
        assert!(notes[0].1.contains("not an accepted key"), "{notes:?}");
        assert!(notes[1].1.contains("expired"), "{notes:?}");
        assert!(notes[3].1.contains("another repository"), "{notes:?}");
        assert!(
            notes[4].1.contains(&format!(
                "serial 3 is older than serial 5 of {}",
                sources[5]
            )),
            "{notes:?}"
        );

        // Every mirror bad: the refusal of the data decides the kind (exit 4), not the
        // missing directory.
        let bad = vec![sources[4].clone(), sources[1].clone()];
        let e = Mirrors::open_newest(&bad, StallLimits::default(), None, &keys, now, &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, MirrorError::AllMirrorsFailed { .. }), "{e}");
        assert_eq!(e.exit_code(), crate::ExitCode::Verification);
        // One mirror: its own error, as before mirror lists.
        let e = Mirrors::open_newest(
            &bad[..1],
            StallLimits::default(),
            None,
            &keys,
            now,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, MirrorError::Io(_)), "{e}");
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    /// `n` bytes through a fresh bucket take at least `n / rate` seconds.
    #[test]
    fn token_bucket_is_a_lower_bound_on_time() {
        let rate = 4 << 20;
        let mut b = TokenBucket::new(rate);
        let t = Instant::now();
        let mut slept = Duration::ZERO;
        for _ in 0..16 {
            slept += b.take(64 << 10);
        }
        let least = Duration::from_secs_f64(f64::from(16 * (64 << 10)) / rate as f64);
        assert!(t.elapsed() >= least, "{:?} < {least:?}", t.elapsed());
        assert!(slept > Duration::ZERO);
        // Nothing held back without a limit.
        let limits = StallLimits::default();
        assert_eq!(limits.limit_rate, 0);
        let mut g = RateGuard::new(&b"abc"[..], limits);
        let mut buf = [0u8; 8];
        assert_eq!(g.read(&mut buf).unwrap(), 3);
        assert!(g.bucket.is_none());
    }
}
