//! Fetching many byte ranges of one repository file in few requests.
//!
//! [`coalesce`] plans: it merges the wanted ranges and then the neighbours with the smallest
//! gaps between them until the plan fits a request budget. [`Remote::fetch_ranges`] fetches a
//! plan into a sparse cache file, every byte at its own offset:
//!
//! * over HTTP with multi-range requests (`Range: bytes=a-b,c-d,...`, at most
//!   [`MAX_RANGE_HEADER`] bytes of header each) answered by `206 multipart/byteranges` (or one
//!   `Content-Range` when the server merged them). A server answering a multi-range request with
//!   `200` gets one range per request from then on; one answering a single range with `200` has
//!   no Range support and the whole file is read once. The mode found holds for the rest of the
//!   call.
//! * from a directory with `pread`/`pwrite`.
//!
//! Everything a server sends is bounded: body bytes (what was asked plus a little framing),
//! part headers, the number of parts; parts must lie in the file, meet a range asked for and
//! have the length their `Content-Range` says. Transfers keep the stall limits of
//! [`Remote::fetch`], are retried [`RETRIES`] times on transient failures and stop when
//! `stop()` says so.
//!
//! The multipart parser is our own: the maintained multipart crates parse `multipart/form-data`
//! (asynchronously, by field name), none reads `multipart/byteranges` from a blocking reader
//! with the bounds needed here.

use super::MirrorError;
use super::fetch::{
    FetchError, RETRIES, RateGuard, Remote, StallLimits, no_response, open_regular,
};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

/// Longest `Range` request header, in bytes (nginx's default large header buffer is 8 KiB).
pub const MAX_RANGE_HEADER: usize = 4000;

/// Ranges one request carries at least: as many as fit in [`MAX_RANGE_HEADER`] even with
/// 20-digit offsets (`a-b,` is at most 42 bytes). A plan of `n * RANGES_PER_REQUEST` ranges
/// takes at most `n` requests from a multi-range server.
pub const RANGES_PER_REQUEST: usize = (MAX_RANGE_HEADER - RANGE_PREFIX.len()) / 42;

const RANGE_PREFIX: &str = "Range: bytes=";

/// Ranges of a file of `file_size` bytes that one request always carries: as many `a-b,` as
/// fit in [`MAX_RANGE_HEADER`] with offsets of that file's digits (at least
/// [`RANGES_PER_REQUEST`]).
#[must_use]
pub fn ranges_per_request(file_size: u64) -> usize {
    let digits = file_size.max(1).ilog10() as usize + 1;
    ((MAX_RANGE_HEADER - RANGE_PREFIX.len()) / (2 * digits + 2)).max(RANGES_PER_REQUEST)
}

/// Longest preamble or part header block of a multipart answer.
const MAX_PART_HEADER: usize = 4096;

/// Body bytes a response may have beyond the bytes asked for: per range (a part's boundary and
/// headers, or a small gap a server merged) and per response (preamble, epilogue).
const SLACK_PER_RANGE: u64 = 512;
const SLACK_PER_RESPONSE: u64 = 4096;

/// What [`Remote::fetch_ranges`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeFetch {
    /// HTTP requests sent (retries and refused answers included; 0 for a directory).
    pub requests: u32,
    /// Body bytes received (multipart framing included), or copied from a directory.
    pub bytes: u64,
    /// The server ignores Range: the whole file was read into `out`.
    pub whole_file: bool,
}

/// Plans range requests: sorts and merges `wanted` (`(offset, len)`, any order, may overlap),
/// then merges neighbours across the smallest gaps until at most
/// `max_requests * ranges_per_request` ranges remain (at least one). Every wanted byte is
/// covered; the extra bytes are the fewest any plan of that many ranges can have. Empty ranges
/// are dropped.
#[must_use]
pub fn coalesce(
    wanted: &[(u64, u64)],
    max_requests: usize,
    ranges_per_request: usize,
) -> Vec<(u64, u64)> {
    let budget = max_requests.saturating_mul(ranges_per_request).max(1);
    let merged = merge_touching(wanted);
    if merged.len() <= budget {
        return merged;
    }
    // Closing the k smallest gaps removes k ranges for the fewest extra bytes.
    let mut gaps: Vec<(u64, usize)> = merged
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].0 - (w[0].0 + w[0].1), i))
        .collect();
    gaps.sort_unstable();
    let mut close = vec![false; gaps.len()];
    for &(_, i) in &gaps[..merged.len() - budget] {
        close[i] = true;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(budget);
    let mut cur = merged[0];
    for (i, &next) in merged.iter().enumerate().skip(1) {
        if close[i - 1] {
            cur.1 = next.0 + next.1 - cur.0;
        } else {
            out.push(cur);
            cur = next;
        }
    }
    out.push(cur);
    out
}

/// Sorted, non-empty, with overlapping and touching ranges merged. Ends past `u64::MAX` are cut
/// there.
fn merge_touching(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(off, len)| (off, off.saturating_add(len)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (start, end) in v {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// How the server answers ranges, as found so far in one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Several ranges per request.
    Multi,
    /// One range per request (multi-range requests got 200).
    Single,
    /// No Range support: the whole file in one response.
    Whole,
}

/// Why reading a response ended before its end.
#[derive(Debug)]
enum Cut {
    /// `stop()` said so.
    Stop,
    /// Too slow ([`StallLimits`]).
    Stalled(String),
    /// The server's answer is wrong (not retried).
    Bad(String),
    /// Reading failed or the body ended early (retried).
    Transient(String),
    /// Writing the cache file failed.
    Write(io::Error),
}

/// A failure of the multipart or single-part parser.
#[derive(Debug)]
enum PartError {
    /// The answer is malformed or not what was asked.
    Bad(String),
    /// Reading failed.
    Read(io::Error),
    /// The body ended before the parts did.
    Ended(String),
    /// The sink failed.
    Write(io::Error),
}

impl From<io::Error> for PartError {
    fn from(e: io::Error) -> PartError {
        PartError::Read(e)
    }
}

/// A response body reader that counts bytes (for the call's total and `progress`), refuses
/// more than `limit`, and stops when `stop()` says so; the reason of a cut is kept in `cut`.
struct Metered<'a, R> {
    inner: R,
    limit: u64,
    read: u64,
    total: &'a mut u64,
    progress: &'a mut dyn FnMut(u64),
    stop: &'a dyn Fn() -> bool,
    cut: Option<Cut>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.stop)() {
            self.cut = Some(Cut::Stop);
            return Err(io::Error::other("stopped"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.cut = Some(Cut::Stalled(e.to_string()));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.read += n as u64;
        if self.read > self.limit {
            self.cut = Some(Cut::Bad(format!(
                "the server sent more than the {} bytes expected",
                self.limit
            )));
            return Err(io::Error::other("too long"));
        }
        *self.total += n as u64;
        (self.progress)(*self.total);
        Ok(n)
    }
}

impl Remote {
    /// Fetches the byte `ranges` (`(offset, len)`) of the repository file `rel`, which has
    /// `file_size` bytes, writing each byte at its own offset in `out` (a cache file the caller
    /// sized to `file_size`; bytes outside the ranges may be written too, with the file's
    /// bytes). Ranges may overlap and come in any order; plan them with [`coalesce`].
    /// `progress` gets the body bytes received so far.
    ///
    /// # Errors
    /// [`FetchError::Missing`] (404), [`FetchError::Bad`] (an answer that is not the file's
    /// ranges, a directory file of another size), [`FetchError::Fatal`] (network after
    /// retries, stalls, local I/O, stopped).
    pub fn fetch_ranges(
        &self,
        rel: &str,
        file_size: u64,
        ranges: &[(u64, u64)],
        out: &File,
        progress: &mut dyn FnMut(u64),
        stop: &dyn Fn() -> bool,
    ) -> Result<RangeFetch, FetchError> {
        let ranges = merge_touching(ranges);
        if let Some(&(off, len)) = ranges.iter().find(|r| r.0 + r.1 > file_size) {
            return Err(FetchError::Fatal(MirrorError::Bug(format!(
                "range {off}+{len} asked of {rel}, which has {file_size} bytes"
            ))));
        }
        match self {
            Remote::Dir(d) => copy_ranges(&d.join(rel), file_size, &ranges, out, progress, stop),
            Remote::Http { .. } | Remote::Oci(_) => {
                let mut http = HttpRanges {
                    remote: self,
                    rel,
                    limits: self.limits().unwrap_or_default(),
                    url: self.location(rel),
                    file_size,
                    out,
                    progress,
                    stop,
                    done: RangeFetch::default(),
                };
                http.run(&ranges)?;
                Ok(http.done)
            }
        }
    }
}

/// A write error on `out`, named by the path the descriptor has.
fn write_error(out: &File, e: io::Error) -> FetchError {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", out.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("range cache file"));
    FetchError::Fatal(MirrorError::io("write", path, e))
}

fn copy_ranges(
    path: &std::path::Path,
    file_size: u64,
    ranges: &[(u64, u64)],
    out: &File,
    progress: &mut dyn FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<RangeFetch, FetchError> {
    let src = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::Missing(format!(
                "{} does not exist",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(FetchError::Bad(format!("{}: {e}", path.display())));
        }
        Err(e) => return Err(FetchError::Fatal(MirrorError::io("open", path, e))),
    };
    let fatal = |op, e| FetchError::Fatal(MirrorError::io(op, path, e));
    let size = src.metadata().map_err(|e| fatal("stat", e))?.len();
    if size != file_size {
        return Err(FetchError::Bad(format!(
            "{}: {size} bytes, the index says {file_size}",
            path.display()
        )));
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut done = RangeFetch::default();
    for &(off, len) in ranges {
        let mut pos = off;
        while pos < off + len {
            if stop() {
                return Err(FetchError::Fatal(MirrorError::Interrupted));
            }
            let want = buf
                .len()
                .min(usize::try_from(off + len - pos).unwrap_or(usize::MAX));
            let n = match src.read_at(&mut buf[..want], pos) {
                Ok(0) => {
                    return Err(FetchError::Bad(format!(
                        "{}: shrank below {file_size} bytes while being read",
                        path.display()
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fatal("read", e)),
            };
            out.write_all_at(&buf[..n], pos)
                .map_err(|e| write_error(out, e))?;
            pos += n as u64;
            done.bytes += n as u64;
            progress(done.bytes);
        }
    }
    Ok(done)
}

/// One HTTP fetch_ranges call.
/// Requests at most, one range each, once a server turned out not to do multi-range.
pub const SINGLE_RANGE_REQUESTS: usize = 48;

struct HttpRanges<'a> {
    remote: &'a Remote,
    rel: &'a str,
    limits: StallLimits,
    url: String,
    file_size: u64,
    out: &'a File,
    progress: &'a mut dyn FnMut(u64),
    stop: &'a dyn Fn() -> bool,
    done: RangeFetch,
}

/// What one answered request came to.
enum Answer {
    /// The batch's ranges (or the whole file) are in `out`.
    Done,
    /// A multi-range request got 200: ask again one range at a time.
    NoMultiRange,
}

impl HttpRanges<'_> {
    fn run(&mut self, ranges: &[(u64, u64)]) -> Result<(), FetchError> {
        let mut mode = Mode::Multi;
        let mut next = 0;
        let mut ranges = std::borrow::Cow::Borrowed(ranges);
        while next < ranges.len() {
            let batch = match mode {
                Mode::Multi => &ranges[next..next + fits_in_header(&ranges[next..])],
                Mode::Single | Mode::Whole => &ranges[next..=next],
            };
            match self.request(batch, &mut mode)? {
                Answer::Done if mode == Mode::Whole => {
                    self.done.whole_file = true;
                    return Ok(());
                }
                Answer::Done => next += batch.len(),
                Answer::NoMultiRange => {
                    // One range per request from now on: the rest is merged into at most
                    // SINGLE_RANGE_REQUESTS ranges (closing the smallest gaps), so a server
                    // without multi-range support costs a bounded number of requests.
                    mode = Mode::Single;
                    let rest = coalesce(&ranges[next..], SINGLE_RANGE_REQUESTS, 1);
                    ranges = std::borrow::Cow::Owned(rest);
                    next = 0;
                }
            }
        }
        Ok(())
    }

    /// Sends `batch` (retrying transient failures) and stores the answer. A single range
    /// answered with 200 switches `mode` to [`Mode::Whole`] and reads the whole file.
    fn request(&mut self, batch: &[(u64, u64)], mode: &mut Mode) -> Result<Answer, FetchError> {
        let mut last_err = String::new();
        for _attempt in 0..RETRIES {
            if (self.stop)() {
                return Err(FetchError::Fatal(MirrorError::Interrupted));
            }
            let Some(mut req) = self.remote.get(self.rel).map_err(FetchError::Fatal)? else {
                return Err(FetchError::Fatal(MirrorError::Bug(
                    "no request for an HTTP file".to_string(),
                )));
            };
            if *mode != Mode::Whole {
                req = req.header("Range", &range_header(batch));
            }
            self.done.requests += 1;
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Timeout(_)) => {
                    return Err(FetchError::Fatal(MirrorError::Stalled {
                        url: self.url.clone(),
                        reason: no_response(&self.limits),
                    }));
                }
                Err(e) => {
                    last_err = crate::util::error_chain(&e);
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap_or("(not text)").to_string())
            };
            let content_type = header("content-type");
            let content_range = header("content-range");
            let content_length = header("content-length");
            let framed = content_length.is_some()
                || header("transfer-encoding").is_some_and(|t| t.contains("chunked"));
            let read = match status {
                404 | 410 => {
                    return Err(FetchError::Missing(format!("{}: HTTP {status}", self.url)));
                }
                416 => {
                    return Err(FetchError::Bad(format!(
                        "{}: HTTP 416: the ranges asked do not fit the file on the server \
                         (the index says {} bytes)",
                        self.url, self.file_size
                    )));
                }
                200 if *mode == Mode::Multi && batch.len() > 1 => {
                    // Dropped unread: the connection is closed rather than drained.
                    drop(resp);
                    return Ok(Answer::NoMultiRange);
                }
                200 => {
                    *mode = Mode::Whole;
                    if let Some(n) = content_length.as_deref()
                        && n.trim().parse::<u64>().ok() != Some(self.file_size)
                    {
                        return Err(FetchError::Bad(format!(
                            "{}: Content-Length {n}, the index says {} bytes",
                            self.url, self.file_size
                        )));
                    }
                    let limit = self.file_size;
                    self.read_body(resp, limit, framed, |r, out| read_whole(r, limit, out))
                }
                206 if *mode == Mode::Whole => {
                    return Err(FetchError::Bad(format!(
                        "{}: HTTP 206 to a request without Range",
                        self.url
                    )));
                }
                206 => {
                    let asked: u64 = batch.iter().map(|r| r.1).sum();
                    let limit = asked
                        .saturating_add(SLACK_PER_RANGE.saturating_mul(batch.len() as u64))
                        .saturating_add(SLACK_PER_RESPONSE);
                    let file_size = self.file_size;
                    let multipart = content_type
                        .as_deref()
                        .filter(|t| is_multipart_byteranges(t));
                    match (multipart, content_range) {
                        (Some(t), _) => match boundary(t) {
                            Ok(b) => self.read_body(resp, limit, framed, |r, out| {
                                read_multipart(r, &b, file_size, batch, out)
                            }),
                            Err(e) => Err(Cut::Bad(e)),
                        },
                        (None, Some(cr)) => self.read_body(resp, limit, framed, |r, out| {
                            read_single(r, &cr, file_size, batch, out)
                        }),
                        (None, None) => Err(Cut::Bad(
                            "HTTP 206 without Content-Range or multipart/byteranges".into(),
                        )),
                    }
                }
                _ => {
                    last_err = format!("HTTP status {status}");
                    if (500..600).contains(&status) {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    return Err(FetchError::Fatal(MirrorError::HttpStatus {
                        url: self.url.clone(),
                        status,
                    }));
                }
            };
            match read {
                Ok(()) => return Ok(Answer::Done),
                Err(Cut::Transient(e)) => last_err = e,
                Err(Cut::Bad(e)) => return Err(FetchError::Bad(format!("{}: {e}", self.url))),
                Err(Cut::Stop) => return Err(FetchError::Fatal(MirrorError::Interrupted)),
                Err(Cut::Stalled(reason)) => {
                    return Err(FetchError::Fatal(MirrorError::Stalled {
                        url: self.url.clone(),
                        reason,
                    }));
                }
                Err(Cut::Write(e)) => return Err(write_error(self.out, e)),
            }
        }
        Err(FetchError::Fatal(MirrorError::DownloadInterrupted {
            url: self.url.clone(),
            last: last_err,
        }))
    }

    /// Runs `parse` over the response body (metered, at most `limit` bytes) with a sink writing
    /// into `out`, and classifies how it ended.
    fn read_body(
        &mut self,
        resp: ureq::http::Response<ureq::Body>,
        limit: u64,
        framed: bool,
        parse: impl FnOnce(
            &mut dyn BufRead,
            &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
        ) -> Result<(), PartError>,
    ) -> Result<(), Cut> {
        let out = self.out;
        let mut body = BufReader::with_capacity(
            1 << 16,
            Metered {
                inner: RateGuard::new(resp.into_body().into_reader(), self.limits),
                limit,
                read: 0,
                total: &mut self.done.bytes,
                progress: &mut *self.progress,
                stop: self.stop,
                cut: None,
            },
        );
        let res = parse(&mut body, &mut |off, data| out.write_all_at(data, off));
        if let Some(cut) = body.into_inner().cut {
            return Err(cut);
        }
        match res {
            Ok(()) => Ok(()),
            Err(PartError::Bad(e)) => Err(Cut::Bad(e)),
            Err(PartError::Read(e)) => Err(Cut::Transient(crate::util::error_chain(&e))),
            // ureq reports a connection closed before the Content-Length or the last chunk as a
            // read error: a body that ends cleanly is complete, its parts are wrong.
            Err(PartError::Ended(e)) if framed => Err(Cut::Bad(format!(
                "{e}, though the response is complete: a part's length does not match its data"
            ))),
            Err(PartError::Ended(e)) => Err(Cut::Transient(e)),
            Err(PartError::Write(e)) => Err(Cut::Write(e)),
        }
    }
}

/// How many of `ranges` (at least one) fit in one `Range` header of [`MAX_RANGE_HEADER`].
fn fits_in_header(ranges: &[(u64, u64)]) -> usize {
    let mut len = RANGE_PREFIX.len();
    let mut n = 0;
    for &(off, l) in ranges {
        let item = format!("{off}-{}", off + l - 1).len() + usize::from(n > 0);
        if n > 0 && len + item > MAX_RANGE_HEADER {
            break;
        }
        len += item;
        n += 1;
    }
    n.max(1)
}

/// The value of a `Range` header asking for `ranges` (non-empty lengths).
fn range_header(ranges: &[(u64, u64)]) -> String {
    let list: Vec<String> = ranges
        .iter()
        .map(|&(off, len)| format!("{off}-{}", off + len - 1))
        .collect();
    format!("bytes={}", list.join(","))
}

fn is_multipart_byteranges(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/byteranges"))
}

/// The `boundary` parameter of a multipart Content-Type (RFC 2046: 1 to 70 characters).
fn boundary(content_type: &str) -> Result<Vec<u8>, String> {
    let value = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim())
        .ok_or_else(|| format!("Content-Type {content_type:?} has no boundary"))?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || value.len() > 70 {
        return Err(format!(
            "Content-Type {content_type:?}: the boundary must have 1 to 70 characters"
        ));
    }
    Ok(value.as_bytes().to_vec())
}

/// Parses `bytes FIRST-LAST/SIZE` (SIZE may be `*`), checked against the file: returns
/// `(offset, len)`.
fn parse_content_range(value: &str, file_size: u64) -> Result<(u64, u64), String> {
    let bad = || format!("malformed Content-Range {value:?}");
    let number = |s: &str| {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    let rest = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, size) = rest.split_once('/').ok_or_else(bad)?;
    let (first, last) = span.trim().split_once('-').ok_or_else(bad)?;
    let (first, last) = (
        number(first).ok_or_else(bad)?,
        number(last).ok_or_else(bad)?,
    );
    if first > last {
        return Err(bad());
    }
    if size.trim() != "*" {
        let size = number(size.trim()).ok_or_else(bad)?;
        if size != file_size {
            return Err(format!(
                "Content-Range {value:?}: the file has {size} bytes on the server, the index says {file_size}"
            ));
        }
    }
    if last >= file_size {
        return Err(format!(
            "Content-Range {value:?} lies outside the file ({file_size} bytes)"
        ));
    }
    Ok((first, last - first + 1))
}

/// Checks a received part against the ranges asked for: it must meet one of them.
fn check_part(part: (u64, u64), asked: &[(u64, u64)]) -> Result<(), PartError> {
    let (off, len) = part;
    if asked.iter().any(|&(a, l)| off < a + l && a < off + len) {
        Ok(())
    } else {
        Err(PartError::Bad(format!(
            "the server sent bytes {off}-{}, none of the ranges asked for",
            off + len - 1
        )))
    }
}

/// Checks that the received `parts` cover every range asked for.
fn check_covered(parts: &[(u64, u64)], asked: &[(u64, u64)]) -> Result<(), PartError> {
    let got = merge_touching(parts);
    for &(a, l) in asked {
        let i = got.partition_point(|g| g.0 + g.1 <= a);
        if !got.get(i).is_some_and(|g| g.0 <= a && a + l <= g.0 + g.1) {
            return Err(PartError::Bad(format!(
                "the server's answer lacks bytes of {a}-{} asked for",
                a + l - 1
            )));
        }
    }
    Ok(())
}

/// Copies `len` bytes of `r` to `sink` at `off`.
fn copy_data(
    r: &mut dyn BufRead,
    off: u64,
    len: u64,
    sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), PartError> {
    let mut pos = 0u64;
    while pos < len {
        let avail = match r.fill_buf() {
            Ok([]) => {
                return Err(PartError::Ended(format!(
                    "the body ended {pos} bytes into a part of {len}"
                )));
            }
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PartError::Read(e)),
        };
        let n = avail
            .len()
            .min(usize::try_from(len - pos).unwrap_or(usize::MAX));
        sink(off + pos, &avail[..n]).map_err(PartError::Write)?;
        r.consume(n);
        pos += n as u64;
    }
    Ok(())
}

/// True at the end of `r`.
fn at_end(r: &mut dyn BufRead) -> Result<bool, PartError> {
    loop {
        match r.fill_buf() {
            Ok(b) => return Ok(b.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PartError::Read(e)),
        }
    }
}

/// Reads a whole-file body (200) into `sink`: exactly `file_size` bytes.
fn read_whole(
    r: &mut dyn BufRead,
    file_size: u64,
    sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), PartError> {
    copy_data(r, 0, file_size, sink)?;
    if !at_end(r)? {
        return Err(PartError::Bad(format!(
            "the server sent more than the {file_size} bytes the index says"
        )));
    }
    Ok(())
}

/// Reads a single-part 206 body described by the response's Content-Range.
fn read_single(
    r: &mut dyn BufRead,
    content_range: &str,
    file_size: u64,
    asked: &[(u64, u64)],
    sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), PartError> {
    let part = parse_content_range(content_range, file_size).map_err(PartError::Bad)?;
    check_part(part, asked)?;
    check_covered(&[part], asked)?;
    copy_data(r, part.0, part.1, sink)?;
    if !at_end(r)? {
        return Err(PartError::Bad(format!(
            "the body is longer than its Content-Range {content_range:?}"
        )));
    }
    Ok(())
}

/// A line of a multipart body, without its line end (`\r\n` or `\n`).
struct Line {
    text: Vec<u8>,
    /// False when the body ended before the line end.
    ended: bool,
}

/// Reads one line of at most `max` bytes; `None` at the end of the body.
fn read_line(r: &mut dyn BufRead, max: usize) -> Result<Option<Line>, PartError> {
    let mut text = Vec::new();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PartError::Read(e)),
        };
        if avail.is_empty() {
            return Ok((!text.is_empty()).then_some(Line { text, ended: false }));
        }
        let (n, ended) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if text.len() + n > max {
            return Err(PartError::Bad(format!(
                "a multipart header line is longer than {max} bytes"
            )));
        }
        text.extend_from_slice(&avail[..n]);
        r.consume(n);
        if ended {
            text.pop();
            if text.last() == Some(&b'\r') {
                text.pop();
            }
            return Ok(Some(Line { text, ended }));
        }
    }
}

/// Reads a line that must end before the body does.
fn read_whole_line(r: &mut dyn BufRead, max: usize) -> Result<Vec<u8>, PartError> {
    match read_line(r, max)? {
        Some(Line { text, ended: true }) => Ok(text),
        _ => Err(ended_early()),
    }
}

fn ended_early() -> PartError {
    PartError::Ended("the multipart body ended early".into())
}

/// Fills `buf` from `r`; [`PartError::Ended`] at the end of the body.
fn read_exactly(r: &mut dyn BufRead, buf: &mut [u8]) -> Result<(), PartError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(ended_early()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PartError::Read(e)),
        }
    }
    Ok(())
}

/// Reads a `multipart/byteranges` body: each part's data goes to `sink` at the offset its
/// Content-Range names. Parts may come in any order; each must lie in the file, meet a range
/// asked for, and be followed by the boundary right where its Content-Range says it ends;
/// together they must cover `asked`. At most `asked.len()` parts (a server may merge ranges,
/// not split them), each header block at most [`MAX_PART_HEADER`] bytes.
fn read_multipart(
    r: &mut dyn BufRead,
    boundary: &[u8],
    file_size: u64,
    asked: &[(u64, u64)],
    sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), PartError> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // Preamble, then the first delimiter line (transport padding allowed after it).
    let mut preamble = 0usize;
    loop {
        let line = read_whole_line(r, MAX_PART_HEADER)?;
        preamble += line.len() + 2;
        if preamble > MAX_PART_HEADER {
            return Err(PartError::Bad(format!(
                "no multipart boundary within the first {MAX_PART_HEADER} bytes"
            )));
        }
        if let Some(rest) = line.strip_prefix(delimiter.as_slice())
            && rest.iter().all(|b| *b == b' ' || *b == b'\t')
        {
            break;
        }
    }
    let mut parts: Vec<(u64, u64)> = Vec::new();
    loop {
        // Part headers, up to an empty line.
        let mut header_bytes = 0usize;
        let mut content_range = None;
        loop {
            let line = read_whole_line(r, MAX_PART_HEADER)?;
            header_bytes += line.len() + 2;
            if header_bytes > MAX_PART_HEADER {
                return Err(PartError::Bad(format!(
                    "a part's headers are longer than {MAX_PART_HEADER} bytes"
                )));
            }
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if let Some((name, value)) = text.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-range")
            {
                content_range = Some(value.trim().to_string());
            }
        }
        let cr = content_range
            .ok_or_else(|| PartError::Bad("a multipart part has no Content-Range".into()))?;
        let part = parse_content_range(&cr, file_size).map_err(PartError::Bad)?;
        check_part(part, asked)?;
        if parts.len() == asked.len() {
            return Err(PartError::Bad(format!(
                "more parts than the {} ranges asked for",
                asked.len()
            )));
        }
        parts.push(part);
        copy_data(r, part.0, part.1, sink)?;
        // The data must end right before CRLF and the delimiter.
        let mut after = vec![0u8; 2 + delimiter.len()];
        read_exactly(r, &mut after)?;
        if after[..2] != *b"\r\n" || after[2..] != *delimiter {
            return Err(PartError::Bad(format!(
                "part {cr:?} is not followed by the boundary: its length does not match its data"
            )));
        }
        // "--" closes (a body may end right after it); else padding up to the line end.
        let rest = read_line(r, MAX_PART_HEADER)?;
        if rest.as_ref().is_some_and(|l| l.text.starts_with(b"--")) {
            break;
        }
        let rest = match rest {
            Some(Line { text, ended: true }) => text,
            _ => return Err(ended_early()),
        };
        if !rest.iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err(PartError::Bad(
                "unexpected bytes after a multipart boundary".into(),
            ));
        }
    }
    check_covered(&parts, asked)?;
    // The epilogue (nginx sends a CRLF) is read so the connection can be reused.
    let mut epilogue = 0usize;
    while let Some(line) = read_line(r, MAX_PART_HEADER)? {
        epilogue += line.text.len() + 2;
        if epilogue > MAX_PART_HEADER {
            return Err(PartError::Bad(format!(
                "more than {MAX_PART_HEADER} bytes after the closing boundary"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(plan: &[(u64, u64)], wanted: &[(u64, u64)]) -> bool {
        wanted
            .iter()
            .all(|&(o, l)| l == 0 || plan.iter().any(|&(po, pl)| po <= o && o + l <= po + pl))
    }

    #[test]
    fn ranges_per_request_follow_the_file_size() {
        assert_eq!(ranges_per_request(u64::MAX), RANGES_PER_REQUEST);
        // 9-digit offsets: "123456789-123456999," is 20 bytes.
        assert_eq!(ranges_per_request(130_000_000), (4000 - 13) / 20);
        // Whatever the offsets, a plan with that many per request fits the header.
        let size = 130_000_000u64;
        let plan: Vec<(u64, u64)> = (0..ranges_per_request(size) as u64)
            .map(|i| (size - 1000 - i * 3, 1))
            .collect();
        assert_eq!(fits_in_header(&plan), plan.len());
    }

    #[test]
    fn coalesce_merges_overlaps_and_the_smallest_gaps() {
        assert_eq!(coalesce(&[], 4, 4), vec![]);
        // Sorted, overlapping and touching merged, empty dropped.
        assert_eq!(
            coalesce(&[(30, 10), (0, 10), (5, 10), (15, 5), (50, 0)], 10, 10),
            vec![(0, 20), (30, 10)]
        );
        // Budget 2: the gap of 10 closes, not the one of 60.
        assert_eq!(
            coalesce(&[(0, 10), (20, 10), (90, 10)], 2, 1),
            vec![(0, 30), (90, 10)]
        );
        // Budget 1 (or 0): one range spans all.
        assert_eq!(coalesce(&[(5, 1), (100, 1)], 1, 1), vec![(5, 96)]);
        assert_eq!(coalesce(&[(5, 1), (100, 1)], 0, 7), vec![(5, 96)]);
        // Ends past u64::MAX are cut, not wrapped.
        assert_eq!(
            coalesce(&[(u64::MAX - 1, 10)], 1, 1),
            vec![(u64::MAX - 1, 1)]
        );
    }

    #[test]
    fn coalesce_fits_the_budget_and_covers_every_wanted_byte() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let n = (next() % 500) as usize;
            let wanted: Vec<(u64, u64)> = (0..n)
                .map(|_| (next() % 1_000_000, next() % 5000))
                .collect();
            let (reqs, per) = (1 + round % 5, 1 + (next() % 40) as usize);
            let plan = coalesce(&wanted, reqs, per);
            assert!(
                plan.len() <= reqs * per,
                "round {round}: {} ranges",
                plan.len()
            );
            assert!(covers(&plan, &wanted), "round {round}");
            assert!(plan.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0));
            assert!(plan.iter().all(|r| r.1 > 0));
            // Nothing is added beyond the gaps closed: the plan starts and ends where the
            // wanted bytes do.
            let merged = merge_touching(&wanted);
            if let (Some(f), Some(l)) = (merged.first(), merged.last()) {
                assert_eq!(plan[0].0, f.0);
                let pl = plan[plan.len() - 1];
                assert_eq!(pl.0 + pl.1, l.0 + l.1);
            }
        }
    }

    #[test]
    fn range_headers_stay_under_the_limit() {
        let many: Vec<(u64, u64)> = (0..10_000u64)
            .map(|i| (u64::MAX / 2 + i * 1000, 10))
            .collect();
        let n = fits_in_header(&many);
        assert!(n >= RANGES_PER_REQUEST, "{n}");
        assert!(
            RANGE_PREFIX.len() - "bytes=".len() + range_header(&many[..n]).len()
                <= MAX_RANGE_HEADER
        );
        assert!(
            RANGE_PREFIX.len() - "bytes=".len() + range_header(&many[..n + 1]).len()
                > MAX_RANGE_HEADER
        );
        assert_eq!(range_header(&[(0, 1), (10, 5)]), "bytes=0-0,10-14");
        assert_eq!(fits_in_header(&[]), 1);
    }

    /// Runs the multipart parser over `body`, returning the file it wrote (`size` bytes,
    /// unwritten bytes 0xEE).
    fn multipart(body: &[u8], size: u64, asked: &[(u64, u64)]) -> Result<Vec<u8>, PartError> {
        let mut file = vec![0xEEu8; size as usize];
        let mut r = io::BufReader::with_capacity(7, body);
        read_multipart(&mut r, b"XyZ", size, asked, &mut |off, data| {
            file[off as usize..off as usize + data.len()].copy_from_slice(data);
            Ok(())
        })?;
        Ok(file)
    }

    fn part(range: &str, data: &str) -> String {
        format!(
            "\r\n--XyZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {range}\r\n\r\n{data}"
        )
    }

    const END: &str = "\r\n--XyZ--\r\n";

    fn bad(r: Result<Vec<u8>, PartError>) -> String {
        match r {
            Err(PartError::Bad(e)) => e,
            other => panic!("not refused as bad: {other:?}"),
        }
    }

    fn truncated(r: Result<Vec<u8>, PartError>) -> bool {
        matches!(r, Err(PartError::Ended(_)))
    }

    #[test]
    fn multipart_parts_in_any_order_land_at_their_offsets() {
        // nginx's layout: CRLF preamble, parts, closing delimiter, CRLF.
        let body = format!("{}{}{END}", part("6-8/10", "ghi"), part("0-1/10", "ab"));
        let file = multipart(body.as_bytes(), 10, &[(0, 2), (6, 3)]).unwrap();
        assert_eq!(file, b"ab\xee\xee\xee\xeeghi\xee");
        // No preamble, LF-only header lines, a merged part covering two asked ranges, a
        // total of *.
        let body = "--XyZ\nContent-Range: bytes 1-8/*\n\n12345678\r\n--XyZ--";
        let file = multipart(body.as_bytes(), 10, &[(1, 2), (6, 3)]).unwrap();
        assert_eq!(&file[1..9], b"12345678");
    }

    #[test]
    fn hostile_multipart_answers_are_refused() {
        let asked = [(0, 2), (6, 3)];
        let ok_tail = format!("{}{END}", part("6-8/10", "ghi"));
        // A part outside the file, or with another file size.
        let e = bad(multipart(
            format!("{}{ok_tail}", part("9-10/10", "jk")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("outside the file"), "{e}");
        let e = bad(multipart(
            format!("{}{ok_tail}", part("0-1/11", "ab")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("11 bytes on the server"), "{e}");
        // A part none of the asked ranges meets.
        let e = bad(multipart(
            format!("{}{ok_tail}", part("3-4/10", "de")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("none of the ranges asked"), "{e}");
        // Data longer or shorter than the Content-Range says.
        let e = bad(multipart(
            format!("{}{ok_tail}", part("0-1/10", "abc")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("not followed by the boundary"), "{e}");
        let e = bad(multipart(
            format!("{}{ok_tail}", part("0-2/10", "ab")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("not followed by the boundary"), "{e}");
        // A range asked for is missing.
        let e = bad(multipart(
            format!("{}{END}", part("0-1/10", "ab")).as_bytes(),
            10,
            &asked,
        ));
        assert!(e.contains("lacks bytes of 6-8"), "{e}");
        // More parts than ranges asked.
        let body = format!(
            "{}{}{}{END}",
            part("0-1/10", "ab"),
            part("0-1/10", "ab"),
            part("6-8/10", "ghi")
        );
        let e = bad(multipart(body.as_bytes(), 10, &asked));
        assert!(e.contains("more parts"), "{e}");
        // A part without Content-Range, or a malformed one.
        let body = format!("\r\n--XyZ\r\nContent-Type: x\r\n\r\nab{ok_tail}");
        assert!(bad(multipart(body.as_bytes(), 10, &asked)).contains("no Content-Range"));
        for cr in [
            "0-1/10",
            "bytes 1-0/10",
            "bytes a-1/10",
            "bytes 0-1",
            "bytes +0-1/10",
            "bytes 0-99999999999999999999999/10",
        ] {
            let body = format!("\r\n--XyZ\r\nContent-Range: {cr}\r\n\r\nab{ok_tail}");
            let e = bad(multipart(body.as_bytes(), 10, &asked));
            assert!(e.contains("Content-Range"), "{cr}: {e}");
        }
        // A huge part header, one long line or many lines.
        let body = format!(
            "\r\n--XyZ\r\nX-Pad: {}\r\nContent-Range: bytes 0-1/10\r\n\r\nab{ok_tail}",
            "p".repeat(10_000)
        );
        assert!(bad(multipart(body.as_bytes(), 10, &asked)).contains("longer than"));
        let body = format!(
            "\r\n--XyZ\r\n{}Content-Range: bytes 0-1/10\r\n\r\nab{ok_tail}",
            "X-Pad: p\r\n".repeat(1000)
        );
        assert!(bad(multipart(body.as_bytes(), 10, &asked)).contains("longer than"));
        // No boundary at all (a body of another shape), or junk after a delimiter.
        let e = bad(multipart("x\r\n".repeat(5000).as_bytes(), 10, &asked));
        assert!(e.contains("no multipart boundary"), "{e}");
        let body = format!("\r\n--XyZjunk\r\nContent-Range: bytes 0-1/10\r\n\r\nab{ok_tail}");
        assert!(bad(multipart(body.as_bytes(), 10, &asked)).contains("lacks bytes of 0-1"));
        // A long epilogue.
        let body = format!("{}{ok_tail}{}", part("0-1/10", "ab"), "e\r\n".repeat(5000));
        assert!(bad(multipart(body.as_bytes(), 10, &asked)).contains("after the closing"));
    }

    #[test]
    fn truncated_multipart_bodies_are_transient() {
        let body = format!("{}{}{END}", part("0-1/10", "ab"), part("6-8/10", "ghi"));
        let asked = [(0, 2), (6, 3)];
        assert!(multipart(body.as_bytes(), 10, &asked).is_ok());
        // Every cut before the closing delimiter is an early end, never a success.
        let close = body.len() - END.len() + "\r\n--XyZ--".len();
        for cut in 0..close {
            let r = multipart(&body.as_bytes()[..cut], 10, &asked);
            assert!(truncated(r), "cut at {cut}");
        }
        assert!(multipart(&body.as_bytes()[..close], 10, &asked).is_ok());
    }

    #[test]
    fn boundaries_and_single_parts() {
        assert_eq!(
            boundary("multipart/byteranges; boundary=00001").unwrap(),
            b"00001"
        );
        assert_eq!(
            boundary("multipart/byteranges;BOUNDARY=\"a b\"").unwrap(),
            b"a b"
        );
        assert!(
            boundary("multipart/byteranges")
                .unwrap_err()
                .contains("no boundary")
        );
        assert!(boundary("multipart/byteranges; boundary=\"\"").is_err());
        assert!(
            boundary(&format!(
                "multipart/byteranges; boundary={}",
                "b".repeat(71)
            ))
            .is_err()
        );
        assert!(is_multipart_byteranges("Multipart/ByteRanges; boundary=x"));
        assert!(!is_multipart_byteranges("application/octet-stream"));

        let run = |body: &[u8], cr: &str, asked: &[(u64, u64)]| {
            let mut file = vec![0u8; 10];
            let res = read_single(&mut &body[..], cr, 10, asked, &mut |off, d| {
                file[off as usize..off as usize + d.len()].copy_from_slice(d);
                Ok(())
            });
            res.map(|()| file)
        };
        // A server that merged two asked ranges into one.
        let file = run(b"cdefg", "bytes 2-6/10", &[(2, 1), (5, 2)]).unwrap();
        assert_eq!(&file[..2], &[0, 0]);
        assert_eq!(&file[2..7], b"cdefg");
        assert!(matches!(
            run(b"cdefgh", "bytes 2-6/10", &[(2, 1)]),
            Err(PartError::Bad(_))
        ));
        assert!(matches!(
            run(b"cd", "bytes 2-6/10", &[(2, 1)]),
            Err(PartError::Ended(_))
        ));
        assert!(matches!(
            run(b"cdefg", "bytes 2-6/10", &[(2, 1), (8, 1)]),
            Err(PartError::Bad(_))
        ));

        let mut whole = Vec::new();
        let mut sink = |_off: u64, d: &[u8]| {
            whole.extend_from_slice(d);
            Ok(())
        };
        assert!(read_whole(&mut &b"0123456789"[..], 10, &mut sink).is_ok());
        assert!(matches!(
            read_whole(&mut &b"0123456789x"[..], 10, &mut sink),
            Err(PartError::Bad(_))
        ));
        assert!(matches!(
            read_whole(&mut &b"01234"[..], 10, &mut sink),
            Err(PartError::Ended(_))
        ));
    }
}
