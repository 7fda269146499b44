//! Streaming pulls: the stream files of a chain are downloaded on a thread of their own into
//! the pool's cache (by [`Mirrors::fetch`]: `<sha256>.part`, resumed with Range, checked against
//! size and SHA-256, renamed to `<sha256>.zst`), while the receiver reads each file from the
//! cache as its bytes arrive ([`TailReader`]).
//!
//! - Nothing unverified is committed: the reader holds the file's last byte back until the
//!   whole file matched the signed index's size and SHA-256, and [`Gate`] holds the stream's
//!   last byte (the end of its END command) back until then, so a file found bad at its end
//!   fails the receive before anything is visible. (Signature segments are verified as they
//!   come, by the [`crate::sign::VerifyingSource`] above.)
//! - Read-ahead is bounded: file `j` starts downloading while earlier files are still being
//!   applied only when the cache files not yet applied, with `j`, fit in
//!   [`Flow::budget`] (the largest file of the plan), so the cache never holds more than that;
//!   each file is deleted once its version is committed.
//! - `no_stream` (`--no-stream`) downloads the whole chain before anything is applied, as
//!   pulls did before (kept for comparison, see `bench/pull-stream.sh`).

use super::fetch::{FetchError, Mirrors, Progress};
use super::index::StreamFile;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a waiting reader sleeps before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(100);

/// Download state of one file.
#[derive(Debug, Default)]
struct StepState {
    /// Bytes in the cache file now.
    written: u64,
    /// Bytes the cache held already when the download started (an earlier pull's `.part`).
    reused: u64,
    /// Bytes received over the network.
    fetched: u64,
    /// The first progress report came (the cache file is open).
    open: bool,
    /// The file is complete and verified.
    ok: bool,
    /// The download failed; the error, until taken by [`Flow::outcome`].
    failed: bool,
    error: Option<FetchError>,
    /// A mirror failed this file (and another one served it): what a receiver read of the
    /// file while it arrived may be the failed mirror's bytes, not the verified ones.
    mirror_failed: bool,
    /// Bumped whenever the bytes already written may change (another mirror takes over, a
    /// download restarts from zero): a reader of an older generation must not go on.
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    steps: Vec<StepState>,
    /// Steps whose version is committed (their files deleted).
    committed: usize,
    /// `Range` resumes not yet reported: (step, offset).
    resumes: Vec<(usize, u64)>,
    /// Mirrors that failed a file, not yet reported: (step, mirror, reason).
    skips: Vec<(usize, String, String)>,
}

/// The shared state of one chain's downloads and receives.
#[derive(Debug)]
pub(super) struct Flow<'p> {
    files: Vec<&'p StreamFile>,
    cache: PathBuf,
    state: Mutex<State>,
    cv: Condvar,
    /// The consumer stopped (a failure, or done): the downloader stops too.
    cancelled: AtomicBool,
    /// The downloader returned (or unwound): a file not settled by then never will be.
    finished: AtomicBool,
    /// Most bytes of files not yet applied that the cache may hold at once (read-ahead).
    budget: u64,
    no_stream: bool,
}

/// Totals over the files of a flow.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    /// Bytes received over the network.
    pub fetched: u64,
    /// Bytes found in the cache from an earlier pull.
    pub reused: u64,
}

impl<'p> Flow<'p> {
    pub(super) fn new(files: Vec<&'p StreamFile>, cache: &Path, no_stream: bool) -> Flow<'p> {
        let budget = files.iter().map(|f| f.size).max().unwrap_or(0);
        let mut st = State::default();
        st.steps.resize_with(files.len(), StepState::default);
        Flow {
            files,
            cache: cache.to_path_buf(),
            state: Mutex::new(st),
            cv: Condvar::new(),
            cancelled: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            budget,
            no_stream,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the other thread while holding the lock leaves counts only.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'g>(&self, g: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        self.cv
            .wait_timeout(g, POLL)
            .map_or_else(|e| e.into_inner().0, |r| r.0)
    }

    /// May file `j` start downloading now (the files before it are downloaded)?
    fn may_start(&self, st: &State, j: usize) -> bool {
        if self.no_stream || st.committed >= j {
            return true;
        }
        let pending: u64 = self.files[st.committed..=j].iter().map(|f| f.size).sum();
        pending <= self.budget
    }

    /// Downloads the files in order (run on a thread of its own); stops at the first file
    /// that fails, when `stop` says so, or when the consumer cancelled.
    pub(super) fn download(&self, mirrors: &Mirrors, stop: &(dyn Fn() -> bool + Sync)) {
        /// Marks the downloader gone however it leaves (a panic too), so no reader waits on.
        struct Finished<'f, 'p>(&'f Flow<'p>);
        impl Drop for Finished<'_, '_> {
            fn drop(&mut self) {
                self.0.finished.store(true, Ordering::Relaxed);
                self.0.cv.notify_all();
            }
        }
        let _finished = Finished(self);
        let halt = || stop() || self.cancelled.load(Ordering::Relaxed);
        for (j, f) in self.files.iter().enumerate() {
            let mut g = self.lock();
            while !self.may_start(&g, j) {
                if halt() {
                    return;
                }
                g = self.wait(g);
            }
            drop(g);
            if halt() {
                return;
            }
            let r = mirrors.fetch(
                f,
                &self.cache,
                &mut |pr| {
                    let mut g = self.lock();
                    match pr {
                        Progress::Bytes(b) => {
                            let s = &mut g.steps[j];
                            if !s.open {
                                s.open = true;
                                s.reused = b;
                            } else if b > s.written {
                                s.fetched += b - s.written;
                            }
                            // A restart from zero (a server ignoring Range) re-fetches what
                            // counted as reused.
                            s.reused = s.reused.min(b);
                            if b < s.written {
                                s.generation += 1;
                            }
                            s.written = b;
                        }
                        Progress::Resume(offset) => g.resumes.push((j, offset)),
                        Progress::MirrorSkipped { mirror, reason } => {
                            g.steps[j].mirror_failed = true;
                            g.steps[j].generation += 1;
                            g.skips.push((j, mirror, reason));
                        }
                    }
                    drop(g);
                    self.cv.notify_all();
                },
                &halt,
            );
            let mut g = self.lock();
            let s = &mut g.steps[j];
            let failed = match r {
                Ok(_) => {
                    s.ok = true;
                    s.open = true;
                    false
                }
                Err(e) => {
                    s.failed = true;
                    s.error = Some(e);
                    true
                }
            };
            drop(g);
            self.cv.notify_all();
            if failed {
                return;
            }
        }
    }

    /// The downloader returned; re-checked under the lock by callers that hold it.
    fn gone(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Tells the downloader to stop (the consumer is done or gave up).
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }

    /// Waits until file `j` is downloaded and verified, or its download failed (then the
    /// error, once). `Ok(None)` when the download stopped before reaching `j` or the error was
    /// taken already.
    pub(super) fn outcome(
        &self,
        j: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Option<FetchError>> {
        let mut g = self.lock();
        loop {
            let s = &mut g.steps[j];
            if s.ok {
                return Ok(());
            }
            if s.failed {
                return Err(s.error.take());
            }
            // An earlier file failed, or the downloader is gone: this one never comes.
            if g.steps[..j].iter().any(|s| s.failed) || self.gone() || stop() {
                return Err(None);
            }
            g = self.wait(g);
        }
    }

    /// Waits until every file is downloaded or one failed (`--no-stream`).
    pub(super) fn wait_all(&self, stop: &dyn Fn() -> bool) {
        let mut g = self.lock();
        while !g.steps.iter().all(|s| s.ok)
            && !g.steps.iter().any(|s| s.failed)
            && !self.gone()
            && !stop()
        {
            g = self.wait(g);
        }
    }

    /// Step `j`'s version is committed: its cache file goes, and the downloader may read
    /// further ahead.
    pub(super) fn committed(&self, j: usize) {
        let f = self.files[j];
        for ext in ["zst", "part"] {
            let _ = std::fs::remove_file(self.cache.join(format!("{}.{ext}", f.sha256)));
        }
        self.lock().committed = j + 1;
        self.cv.notify_all();
    }

    /// The error of file `j`'s failed download, if it failed (does not wait).
    pub(super) fn failure(&self, j: usize) -> Option<FetchError> {
        let mut g = self.lock();
        let s = &mut g.steps[j];
        if !s.failed {
            return None;
        }
        Some(
            s.error
                .take()
                .unwrap_or_else(|| FetchError::Fatal(super::MirrorError::Interrupted)),
        )
    }

    /// Bytes fetched and reused so far, over all files.
    pub(super) fn counts(&self) -> Counts {
        let g = self.lock();
        g.steps.iter().fold(Counts::default(), |c, s| Counts {
            fetched: c.fetched + s.fetched,
            reused: c.reused + s.reused,
        })
    }

    /// Bytes of file `j` fetched and reused.
    pub(super) fn step_counts(&self, j: usize) -> Counts {
        let g = self.lock();
        Counts {
            fetched: g.steps[j].fetched,
            reused: g.steps[j].reused,
        }
    }

    /// True when a mirror failed file `j` before another served it (see
    /// [`StepState::mirror_failed`]).
    pub(super) fn mirror_failed(&self, j: usize) -> bool {
        self.lock().steps[j].mirror_failed
    }

    /// Mirrors that failed a file since the last call: (step, mirror, reason).
    pub(super) fn take_skips(&self) -> Vec<(usize, String, String)> {
        std::mem::take(&mut self.lock().skips)
    }

    /// `Range` resumes since the last call: (step, offset).
    pub(super) fn take_resumes(&self) -> Vec<(usize, u64)> {
        std::mem::take(&mut self.lock().resumes)
    }

    /// A reader of file `j` as it arrives; `tick` is called now and then while it waits or
    /// reads (progress).
    pub(super) fn reader<'a>(
        &'a self,
        j: usize,
        stop: &'a dyn Fn() -> bool,
        tick: &'a dyn Fn(),
    ) -> TailReader<'a, 'p> {
        TailReader {
            flow: self,
            step: j,
            size: self.files[j].size,
            pos: 0,
            file: None,
            generation: None,
            stop,
            tick,
            last_tick: Instant::now(),
        }
    }

    /// Waits until file `j` is downloaded and verified (true) or will not be (false).
    fn settled_ok(&self, j: usize, stop: &dyn Fn() -> bool) -> bool {
        let mut g = self.lock();
        loop {
            if g.steps[j].ok {
                return true;
            }
            if g.steps[..=j].iter().any(|s| s.failed) || self.gone() || stop() {
                return false;
            }
            g = self.wait(g);
        }
    }
}

/// Reads file `j` of a [`Flow`] from the cache while it is being downloaded: waits for bytes
/// not written yet; the last byte only once the whole file verified. A failed download is an
/// error ([`Flow::outcome`] says which).
pub(super) struct TailReader<'a, 'p> {
    flow: &'a Flow<'p>,
    step: usize,
    size: u64,
    pos: u64,
    file: Option<File>,
    /// The generation of the file's bytes this reader started on.
    generation: Option<u64>,
    stop: &'a dyn Fn() -> bool,
    tick: &'a dyn Fn(),
    last_tick: Instant,
}

impl TailReader<'_, '_> {
    fn maybe_tick(&mut self) {
        if self.last_tick.elapsed() >= Duration::from_millis(250) {
            self.last_tick = Instant::now();
            (self.tick)();
        }
    }

    /// The cache file, opened once: `.part` while downloading, `.zst` once renamed (the open
    /// descriptor survives the rename).
    fn open(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let f = self.flow.files[self.step];
            let cache = &self.flow.cache;
            let part = cache.join(format!("{}.part", f.sha256));
            let done = cache.join(format!("{}.zst", f.sha256));
            let file = File::open(&part).or_else(|_| File::open(&done))?;
            self.file = Some(file);
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("cache file not open"))
    }
}

impl Read for TailReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let end = {
                let g = self.flow.lock();
                let s = &g.steps[self.step];
                if s.failed {
                    return Err(io::Error::other("the download of this file failed"));
                }
                // Bytes read before another mirror took over (or a restart) may not be the
                // file's: a stream fault, so the verified file is received again.
                if *self.generation.get_or_insert(s.generation) != s.generation {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the file was replaced while it was read (another mirror took over)",
                    ));
                }
                let end = if s.ok {
                    self.size
                } else if s.open {
                    s.written.min(self.size.saturating_sub(1))
                } else {
                    0
                };
                if self.pos < end {
                    end
                } else if s.ok {
                    return Ok(0);
                } else if (self.stop)() || self.flow.cancelled.load(Ordering::Relaxed) {
                    return Err(io::Error::other("interrupted"));
                } else if self.flow.gone() {
                    return Err(io::Error::other("the download stopped"));
                } else {
                    drop(self.flow.wait(g));
                    // Unlocked: the tick reads the counts.
                    self.maybe_tick();
                    continue;
                }
            };
            let want = usize::try_from(end - self.pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let pos = self.pos;
            let n = self.open()?.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                // The file was cut back or replaced: the generation (checked above) tells;
                // wait for the downloader's next word rather than spin.
                drop(self.flow.wait(self.flow.lock()));
                continue;
            }
            self.pos += n as u64;
            self.maybe_tick();
            return Ok(n);
        }
    }
}

/// The decompressed stream of step `j`, at most `stream_bytes` long, whose last byte is held
/// back until the file verified: END cannot complete, so nothing is committed, before the
/// file's SHA-256 matched.
pub(super) struct Gate<'a, 'p, R> {
    inner: R,
    flow: &'a Flow<'p>,
    step: usize,
    remaining: u64,
    stop: &'a dyn Fn() -> bool,
}

impl<'a, 'p, R: Read> Gate<'a, 'p, R> {
    pub(super) fn new(
        inner: R,
        flow: &'a Flow<'p>,
        step: usize,
        stream_bytes: u64,
        stop: &'a dyn Fn() -> bool,
    ) -> Self {
        Gate {
            inner,
            flow,
            step,
            remaining: stream_bytes,
            stop,
        }
    }
}

impl<R: Read> Read for Gate<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let limit = if self.remaining > 1 {
            self.remaining - 1
        } else {
            if !self.flow.settled_ok(self.step, self.stop) {
                return Err(io::Error::other("the download of this file failed"));
            }
            1
        };
        let want = usize::try_from(limit).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Space a pull needs in the pool's file system, estimated before any byte is fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpaceEstimate {
    /// Bytes the steps write into the pool, estimated (see [`step_writes`]).
    pub writes: u64,
    /// Bytes the download cache holds at its peak.
    pub cache: u64,
    /// `writes + cache`.
    pub need: u64,
    /// Bytes free for this user.
    pub free: u64,
    /// Bytes kept free (not counted as available).
    pub reserve: u64,
}

impl SpaceEstimate {
    /// Whether the pull fits: `need <= free - reserve`.
    #[must_use]
    pub fn fits(&self) -> bool {
        self.need <= self.free.saturating_sub(self.reserve)
    }
}

/// What a receive of a `stream_bytes`-long stream writes into the pool: data no more than the
/// stream itself (every data byte written comes from a WRITE payload; CLONE and the snapshot a
/// delta starts from share extents and write metadata only), plus metadata for the items its
/// commands create, estimated as a quarter of the stream (btrfs keeps metadata twice, DUP, on
/// one device; ample for data, short for streams of many tiny files) and 1 MiB for the tree
/// blocks a new subvolume starts with.
#[must_use]
pub fn step_writes(stream_bytes: u64) -> u64 {
    stream_bytes
        .saturating_add(stream_bytes / 4)
        .saturating_add(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::index::Sha256Digest;
    use std::io::Write;

    fn file(size: u64) -> StreamFile {
        StreamFile {
            path: "streams/x.zst".into(),
            sha256: Sha256Digest([7; 32]),
            size,
            stream_bytes: size,
            from: None,
            to: "1".into(),
            map: None,
        }
    }

    /// What a downloader does after writing `n` bytes in all.
    fn wrote(flow: &Flow<'_>, n: u64) {
        let mut g = flow.lock();
        g.steps[0].open = true;
        g.steps[0].written = n;
        drop(g);
        flow.cv.notify_all();
    }

    /// The reader returns bytes as they are written, waits for more, and gets the last byte
    /// only once the file verified; a failed download is an error, also for [`Gate`].
    #[test]
    fn tail_reader_follows_the_download_and_holds_the_last_byte_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(10);
        let part = dir.path().join(format!("{}.part", f.sha256));
        let flow = Flow::new(vec![&f], dir.path(), false);
        let mut out = File::create(&part).unwrap();
        out.write_all(b"0123456789").unwrap();
        wrote(&flow, 4);
        let no = || false;
        let tick = || {};
        let mut r = flow.reader(0, &no, &tick);
        let mut buf = [0u8; 16];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"0123");
        // All written but not verified: all but the last byte.
        wrote(&flow, 10);
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"45678");
        std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(150));
                flow.lock().steps[0].ok = true;
                flow.cv.notify_all();
            });
            assert_eq!(r.read(&mut buf).unwrap(), 1);
        });
        assert_eq!(buf[0], b'9');
        assert_eq!(r.read(&mut buf).unwrap(), 0);

        // A failed file: the reader and the gate fail, the error is kept for the consumer.
        let flow = Flow::new(vec![&f], dir.path(), false);
        wrote(&flow, 9);
        {
            let mut g = flow.lock();
            g.steps[0].failed = true;
            g.steps[0].error = Some(FetchError::Bad("SHA-256 differs".into()));
        }
        let mut gate = Gate::new(&b"0123456789"[..], &flow, 0, 10, &no);
        let mut all = [0u8; 10];
        assert_eq!(gate.read(&mut all).unwrap(), 9);
        assert!(gate.read(&mut all).is_err());
        assert!(flow.reader(0, &no, &tick).read(&mut buf).is_err());
        assert!(matches!(flow.failure(0), Some(FetchError::Bad(r)) if r.contains("SHA-256")));
    }

    /// Read-ahead: a file starts downloading while earlier ones are not applied only when
    /// they fit in the budget (the largest file) together.
    #[test]
    fn read_ahead_stays_within_the_largest_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (file(100), file(30), file(60));
        let flow = Flow::new(vec![&a, &b, &c], dir.path(), false);
        let mut st = State::default();
        st.steps.resize_with(3, StepState::default);
        assert!(flow.may_start(&st, 0));
        assert!(!flow.may_start(&st, 1), "100 + 30 > 100");
        st.committed = 1;
        assert!(flow.may_start(&st, 1));
        assert!(flow.may_start(&st, 2), "30 + 60 <= 100");
        let all = Flow::new(vec![&a, &b, &c], dir.path(), true);
        st.committed = 0;
        assert!(all.may_start(&st, 2), "--no-stream reads everything ahead");
    }

    #[test]
    fn step_writes_bound_data_metadata_and_a_new_subvolume() {
        assert_eq!(step_writes(0), 1 << 20);
        assert_eq!(step_writes(400 << 20), (500 << 20) + (1 << 20));
        assert_eq!(step_writes(u64::MAX), u64::MAX);
        let s = SpaceEstimate {
            writes: 10,
            cache: 5,
            need: 15,
            free: 100,
            reserve: 85,
        };
        assert!(s.fits());
        assert!(!SpaceEstimate { reserve: 86, ..s }.fits());
    }
}
