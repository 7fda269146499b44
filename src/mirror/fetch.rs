//! Getting the index and stream files from a repository: a directory, or HTTP(S).
//!
//! Over HTTP a file is downloaded into the pool's cache as `<sha256>.part`; an interrupted
//! download (connection cut, pull killed) is resumed with a `Range: bytes=N-` request, within
//! the same pull (up to [`RETRIES`] times) or by the next one. The server must answer 206 with a
//! matching `Content-Range`; a 200 restarts from zero. The finished file must have the size and
//! SHA-256 the signed index names, else it is deleted and reported bad.

use super::MirrorError;
use super::index::{MAX_INDEX_BYTES, Sha256Digest, StreamFile};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Attempts per file within one pull (each after the first resumes with Range).
pub const RETRIES: u32 = 4;

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
    },
}

/// Download progress of one file.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Bytes of the file done so far.
    Bytes(u64),
    /// A Range request resumes a partial download at this offset.
    Resume(u64),
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
    /// Parses `URL|DIR`.
    #[must_use]
    pub fn new(source: &str) -> Remote {
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
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .user_agent(concat!("subvol/", env!("CARGO_PKG_VERSION")))
                .build()
                .into();
            Remote::Http { base, agent }
        } else {
            let p = source.strip_prefix("file://").unwrap_or(source);
            Remote::Dir(PathBuf::from(p))
        }
    }

    /// The URL or path of a repository file, for messages.
    #[must_use]
    pub fn location(&self, rel: &str) -> String {
        match self {
            Remote::Dir(d) => d.join(rel).display().to_string(),
            Remote::Http { base, .. } => format!("{base}{rel}"),
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
        }
    }

    /// True for HTTP(S).
    #[must_use]
    pub fn is_http(&self) -> bool {
        matches!(self, Remote::Http { .. })
    }

    /// Reads a small file (the index), at most [`MAX_INDEX_BYTES`].
    ///
    /// # Errors
    /// Missing file, network or I/O errors, too large.
    pub fn read_small(&self, rel: &str) -> Result<Vec<u8>, MirrorError> {
        let loc = self.location(rel);
        let mut buf = Vec::new();
        match self {
            Remote::Dir(d) => {
                let p = d.join(rel);
                File::open(&p)
                    .and_then(|f| f.take(MAX_INDEX_BYTES + 1).read_to_end(&mut buf))
                    .map_err(|e| MirrorError::io("read", &p, e))?;
            }
            Remote::Http { agent, .. } => {
                let resp = agent.get(&loc).call().map_err(|e| MirrorError::Http {
                    url: loc.clone(),
                    source: Box::new(e),
                })?;
                if resp.status() != 200 {
                    return Err(MirrorError::HttpStatus {
                        url: loc,
                        status: resp.status().as_u16(),
                    });
                }
                resp.into_body()
                    .into_reader()
                    .take(MAX_INDEX_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(|source| MirrorError::HttpBody {
                        url: loc.clone(),
                        source,
                    })?;
            }
        }
        if buf.len() as u64 > MAX_INDEX_BYTES {
            return Err(MirrorError::IndexTooLarge {
                location: loc,
                max: MAX_INDEX_BYTES,
            });
        }
        Ok(buf)
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
                let mut file = match File::open(&p) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(FetchError::Missing(format!(
                            "{} does not exist",
                            p.display()
                        )));
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
            Remote::Http { agent, .. } => self.fetch_http(agent, f, cache, progress, stop),
        }
    }

    fn fetch_http(
        &self,
        agent: &ureq::Agent,
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
            let mut req = agent.get(&url);
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
                progress(Progress::Resume(have));
            }
            let resp = match req.call() {
                Ok(r) => r,
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
                    return Err(FetchError::Missing(format!("{url}: HTTP {status}")));
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
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = have;
            let res: io::Result<()> = (|| {
                loop {
                    if stop() {
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "stop"));
                    }
                    let n = match body.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if total + n as u64 > f.size {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "server sent more bytes than the index says",
                        ));
                    }
                    out.write_all(&buf[..n])?;
                    h.update(&buf[..n]);
                    total += n as u64;
                    progress(Progress::Bytes(total));
                }
            })();
            match res {
                Ok(()) if total == f.size => return finish(f, out, h, &part, &done),
                Ok(()) => last_err = format!("connection closed after {total} of {} bytes", f.size),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = fs::remove_file(&part);
                    return Err(FetchError::Bad(format!("{url}: {e}")));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    let _ = out.flush();
                    return Err(FetchError::Fatal(MirrorError::Interrupted));
                }
                Err(e) => last_err = crate::util::error_chain(&e),
            }
            out.flush().map_err(|e| fatal_io("write", &part, e))?;
        }
        Err(FetchError::Fatal(MirrorError::DownloadInterrupted {
            url,
            last: last_err,
        }))
    }
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
