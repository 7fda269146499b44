//! [`FramingWriter`]: compresses a send stream as independent zstd frames cut along its file
//! data, and records them in a [`ContentMap`].
//!
//! A DATA frame holds exactly the block-aligned part of one WRITE's data: from the first 4 KiB
//! boundary at or after the WRITE's file offset to the end of its data. Its pieces are the
//! blocks a receiver can clone (see [`super::aligned_blocks`]), so a puller that holds them
//! skips the frame. Everything else goes into LITERAL frames of at most [`LITERAL_MAX`] bytes.
//! Concatenated frames are a valid zstd file: `zstd -d` gives the stream back.
//!
//! Frame boundaries depend only on the stream bytes (not on how writes are chunked or when
//! `flush` is called), and zstd at a fixed level is deterministic, so the same stream gives the
//! same file and map. Frames are independent, so [`FramingWriter::with_workers`] compresses
//! them on worker threads and writes them in order: the output is the same for any number of
//! workers.

use super::map::{ContentMap, Frame, FrameKind};
use super::{BLOCK, DATA_WINDOW, Key, block_key};
use crate::stream::proto::{self, attr, cmd};
use crate::stream::{Command, stream_header};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

/// Smallest aligned data part that gets its own DATA frame. A DATA frame costs about 60 bytes
/// besides its data: its map entry and key (41 bytes), its zstd frame header, and the literal
/// frame it cuts in two (which loses its compression context). Below 2 KiB that overhead is
/// over 3 %, and the part is a single short piece that can only match the end of a seed file;
/// fetching it costs about as much as a range request's own overhead.
pub const MIN_DATA_FRAME: usize = 2048;

/// Largest DATA frame (stream bytes, a multiple of the block size): the aligned part of a larger
/// WRITE is cut into frames of this size. A puller fetches whole frames, so one changed block
/// costs a frame; smaller frames compress a little worse (each starts without context).
pub const DATA_FRAME_MAX: usize = DATA_WINDOW as usize;

/// Largest LITERAL frame (stream bytes). Small enough that a puller fetching a literal frame
/// for a few headers does not fetch much else; large enough that zstd compresses metadata
/// well (its window at the levels publish uses is 1 to 8 MiB).
pub const LITERAL_MAX: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum State {
    /// Reading a stream header (the first, or one after END).
    StreamHeader,
    /// Reading a command header.
    CmdHeader,
    /// Passing a non-WRITE payload through; `end`: it is END's (a stream header follows).
    Pass { left: u64, end: bool },
    /// Buffering a WRITE payload of `len` bytes.
    Write { len: usize },
}

/// A compressed frame ready to be written.
struct Compressed {
    kind: FrameKind,
    stream_len: u64,
    comp: Vec<u8>,
    /// Piece keys (DATA frames).
    keys: Vec<Key>,
}

/// The DATA frames of an earlier stream file (written by a [`FramingWriter`] at the same
/// level with the same zstd), to copy instead of compressing again: zstd at a fixed level is
/// deterministic, so a frame of the same data has the same bytes. A candidate is used only
/// when its bytes match its map digest and decompress to exactly the new frame's data.
#[derive(Debug)]
pub struct ReuseFrames {
    file: File,
    map: ContentMap,
    /// DATA frames by their first piece key.
    by_first_key: HashMap<Key, Vec<usize>>,
}

impl ReuseFrames {
    /// The frames of `file`, described by its map.
    #[must_use]
    pub fn new(file: File, map: ContentMap) -> ReuseFrames {
        let mut by_first_key: HashMap<Key, Vec<usize>> = HashMap::new();
        for (i, f) in map.frames.iter().enumerate() {
            if let Some(k) = map.keys_of(f).first() {
                by_first_key.entry(*k).or_default().push(i);
            }
        }
        ReuseFrames {
            file,
            map,
            by_first_key,
        }
    }

    /// The compressed bytes of an earlier frame holding exactly `src` (whose piece keys are
    /// `keys`), if there is one.
    fn find(&self, src: &[u8], keys: &[Key]) -> Option<Vec<u8>> {
        for &i in self.by_first_key.get(keys.first()?)? {
            let f = &self.map.frames[i];
            // A frame of src's data is never larger than zstd's bound for it: nothing larger
            // is read.
            let len = usize::try_from(f.comp_len).ok()?;
            if f.stream_len != src.len() as u64
                || len > zstd::zstd_safe::compress_bound(src.len())
                || self.map.keys_of(f) != keys
            {
                continue;
            }
            let mut comp = vec![0; len];
            if self.file.read_exact_at(&mut comp, f.comp_offset).is_err()
                || block_key(&comp) != f.digest
            {
                continue;
            }
            if zstd::bulk::decompress(&comp, src.len()).is_ok_and(|d| d == src) {
                return Some(comp);
            }
        }
        None
    }
}

/// Compresses one frame (or copies it from `reuse`): its bytes, and for a DATA frame its
/// piece keys.
fn compress_frame(
    zstd: &mut zstd::bulk::Compressor<'static>,
    reuse: Option<&ReuseFrames>,
    kind: FrameKind,
    src: &[u8],
    comp: &mut Vec<u8>,
) -> io::Result<Vec<Key>> {
    let keys = match kind {
        // `src` starts on a block boundary of the file: its 4 KiB chunks are its blocks.
        FrameKind::Data => src.chunks(BLOCK as usize).map(block_key).collect(),
        FrameKind::Window => vec![block_key(src)],
        FrameKind::Literal => Vec::new(),
    };
    if let Some(old) = reuse.and_then(|r| r.find(src, &keys)) {
        *comp = old;
        return Ok(keys);
    }
    comp.clear();
    comp.reserve(zstd::zstd_safe::compress_bound(src.len()));
    zstd.compress_to_buffer(src, comp)?;
    Ok(keys)
}

/// A frame to compress on a worker: its sequence number, kind and stream bytes.
struct Job {
    seq: u64,
    kind: FrameKind,
    src: Vec<u8>,
}

/// Worker threads compressing frames; results come back tagged with their sequence number and
/// are written in that order.
struct FramePool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(u64, io::Result<Compressed>)>,
    workers: Vec<JoinHandle<()>>,
    submitted: u64,
    written: u64,
    /// Results that came back before an earlier frame's.
    ready: BTreeMap<u64, io::Result<Compressed>>,
    /// Frames submitted and not yet written, at most this many (bounds memory: literal frames
    /// are up to 1 MiB).
    max_in_flight: u64,
}

impl FramePool {
    fn new(level: i32, workers: usize, reuse: Option<ReuseFrames>) -> io::Result<FramePool> {
        let reuse = reuse.map(Arc::new);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::new();
        for _ in 0..workers.max(1) {
            let mut zstd = zstd::bulk::Compressor::new(level)?;
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let reuse = reuse.clone();
            let h = std::thread::Builder::new()
                .name("subvol-zstd".into())
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = next else { break };
                        let mut comp = Vec::new();
                        let r = compress_frame(
                            &mut zstd,
                            reuse.as_deref(),
                            job.kind,
                            &job.src,
                            &mut comp,
                        )
                        .map(|keys| Compressed {
                            kind: job.kind,
                            stream_len: job.src.len() as u64,
                            comp,
                            keys,
                        });
                        if tx.send((job.seq, r)).is_err() {
                            break;
                        }
                    }
                })?;
            handles.push(h);
        }
        Ok(FramePool {
            jobs: Some(job_tx),
            done,
            workers: handles,
            submitted: 0,
            written: 0,
            ready: BTreeMap::new(),
            max_in_flight: 4 * workers.max(1) as u64 + 4,
        })
    }

    fn submit(&mut self, kind: FrameKind, src: Vec<u8>) -> io::Result<()> {
        let seq = self.submitted;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("frame compression already finished"))?
            .send(Job { seq, kind, src })
            .map_err(|_| io::Error::other("frame compression workers stopped"))?;
        self.submitted += 1;
        Ok(())
    }

    /// The next frame in order if it is ready (`wait`: waiting for it).
    fn next_in_order(&mut self, wait: bool) -> io::Result<Option<Compressed>> {
        if self.written == self.submitted {
            return Ok(None);
        }
        loop {
            if let Some(r) = self.ready.remove(&self.written) {
                self.written += 1;
                return r.map(Some);
            }
            let got = if wait {
                self.done.recv().map_err(|_| ())
            } else {
                self.done.try_recv().map_err(|_| ())
            };
            match got {
                Ok((seq, r)) => {
                    self.ready.insert(seq, r);
                }
                Err(()) if wait => {
                    return Err(io::Error::other("frame compression workers stopped"));
                }
                Err(()) => return Ok(None),
            }
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Closing the job channel ends the workers' loops.
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Where frames are compressed.
enum Backend<'c> {
    /// On the writing thread, with the caller's compressor.
    Inline(&'c mut zstd::bulk::Compressor<'static>),
    /// On worker threads.
    Pool(FramePool),
}

/// An [`io::Write`] that takes a send stream (the signed bytes as publish writes them) and
/// writes it to `W` as independent zstd frames, building its [`ContentMap`]. Memory: one
/// WRITE command and one literal frame (with workers: and the frames being compressed, at most
/// 4 per worker, 4 more).
pub struct FramingWriter<'c, W: Write> {
    out: W,
    backend: Backend<'c>,
    zbuf: Vec<u8>,
    /// Stream bytes handed to frames (compressed or being compressed).
    framed: u64,
    literal: Vec<u8>,
    state: State,
    /// The stream or command header being read.
    head: [u8; proto::STREAM_HEADER_LEN],
    head_got: usize,
    version: u32,
    /// The WRITE being buffered (its payload buffer is reused).
    write: Command,
    map: ContentMap,
}

impl<W: Write> std::fmt::Debug for FramingWriter<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramingWriter")
            .field("state", &self.state)
            .field("frames", &self.map.frames.len())
            .field("stream_bytes", &self.map.stream_bytes)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The payload range of a WRITE's data that becomes a DATA frame, and its file offset.
fn data_part(c: &Command) -> Option<(usize, usize, u64)> {
    let offset = c.u64(attr::FILE_OFFSET).ok()?;
    let start = c.value_offset(attr::DATA)?;
    let len = c.get(attr::DATA)?.len();
    offset.checked_add(len as u64)?;
    let aligned = offset.checked_next_multiple_of(BLOCK)?;
    let head = usize::try_from(aligned - offset).ok()?;
    (len.checked_sub(head)? >= MIN_DATA_FRAME).then_some((start + head, start + len, aligned))
}

impl<'c, W: Write> FramingWriter<'c, W> {
    /// A writer of frames to `out`, compressed with `zstd` (set to the level wanted; reused
    /// from frame to frame and from file to file).
    pub fn new(out: W, zstd: &'c mut zstd::bulk::Compressor<'static>) -> FramingWriter<'c, W> {
        FramingWriter::with_backend(out, Backend::Inline(zstd))
    }

    /// A writer of frames to `out`, compressed at `level` by `workers` threads (at least one)
    /// while the caller goes on writing, DATA frames copied from `reuse` where it holds them.
    /// The output is the same as [`FramingWriter::new`]'s (if `reuse` was written at `level`
    /// with this zstd).
    ///
    /// # Errors
    /// zstd cannot start at `level`; a thread cannot be started.
    pub fn with_workers(
        out: W,
        level: i32,
        workers: usize,
        reuse: Option<ReuseFrames>,
    ) -> io::Result<FramingWriter<'static, W>> {
        Ok(FramingWriter::with_backend(
            out,
            Backend::Pool(FramePool::new(level, workers, reuse)?),
        ))
    }

    fn with_backend(out: W, backend: Backend<'c>) -> FramingWriter<'c, W> {
        FramingWriter {
            out,
            backend,
            zbuf: Vec::new(),
            framed: 0,
            literal: Vec::with_capacity(LITERAL_MAX),
            state: State::StreamHeader,
            head: [0; proto::STREAM_HEADER_LEN],
            head_got: 0,
            version: 0,
            write: Command::empty(),
            map: ContentMap::default(),
        }
    }

    /// Stream bytes taken so far.
    #[must_use]
    pub fn stream_bytes(&self) -> u64 {
        self.framed + self.literal.len() as u64
    }

    /// Writes the last literal frame; returns the output and the map.
    ///
    /// # Errors
    /// Output errors; the stream ended inside a header or command.
    pub fn finish(mut self) -> io::Result<(W, ContentMap)> {
        if !matches!(self.state, State::StreamHeader) || self.head_got != 0 {
            return Err(invalid(format!(
                "send stream ends inside a header or command (at byte {})",
                self.stream_bytes()
            )));
        }
        self.emit_literal()?;
        if let Backend::Pool(pool) = &mut self.backend {
            while let Some(c) = pool.next_in_order(true)? {
                Self::record(&mut self.out, &mut self.map, &c)?;
            }
        }
        self.out.flush()?;
        Ok((self.out, self.map))
    }

    /// Writes a compressed frame and adds it to the map.
    fn record(out: &mut W, map: &mut ContentMap, c: &Compressed) -> io::Result<()> {
        out.write_all(&c.comp)?;
        let first_key = map.keys.len();
        map.keys.extend_from_slice(&c.keys);
        map.frames.push(Frame {
            kind: c.kind,
            stream_offset: map.stream_bytes,
            stream_len: c.stream_len,
            comp_offset: map.comp_bytes,
            comp_len: c.comp.len() as u64,
            digest: block_key(&c.comp),
            first_key,
        });
        map.stream_bytes += c.stream_len;
        map.comp_bytes += c.comp.len() as u64;
        Ok(())
    }

    /// Compresses `src` as one frame and writes it (with workers: hands a copy to them).
    fn emit(&mut self, kind: FrameKind, src: &[u8]) -> io::Result<()> {
        let Backend::Inline(zstd) = &mut self.backend else {
            return self.submit(kind, src.to_vec());
        };
        self.framed += src.len() as u64;
        let keys = compress_frame(zstd, None, kind, src, &mut self.zbuf)?;
        let c = Compressed {
            kind,
            stream_len: src.len() as u64,
            comp: std::mem::take(&mut self.zbuf),
            keys,
        };
        let r = Self::record(&mut self.out, &mut self.map, &c);
        self.zbuf = c.comp;
        r
    }

    /// Hands a frame to the workers, and writes the frames that are done, in order.
    fn submit(&mut self, kind: FrameKind, src: Vec<u8>) -> io::Result<()> {
        let Backend::Pool(pool) = &mut self.backend else {
            return self.emit(kind, &src);
        };
        self.framed += src.len() as u64;
        // At most max_in_flight frames out: wait for the oldest first.
        while pool.submitted - pool.written >= pool.max_in_flight {
            if let Some(c) = pool.next_in_order(true)? {
                Self::record(&mut self.out, &mut self.map, &c)?;
            }
        }
        pool.submit(kind, src)?;
        while let Some(c) = pool.next_in_order(false)? {
            Self::record(&mut self.out, &mut self.map, &c)?;
        }
        Ok(())
    }

    fn emit_literal(&mut self) -> io::Result<()> {
        if self.literal.is_empty() {
            return Ok(());
        }
        if matches!(self.backend, Backend::Pool(_)) {
            // The frame's buffer goes to the worker; the next literal starts in a new one.
            let lit = std::mem::replace(&mut self.literal, Vec::with_capacity(LITERAL_MAX));
            return self.submit(FrameKind::Literal, lit);
        }
        let lit = std::mem::take(&mut self.literal);
        let r = self.emit(FrameKind::Literal, &lit);
        self.literal = lit;
        self.literal.clear();
        r
    }

    fn push_literal(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let n = (LITERAL_MAX - self.literal.len()).min(b.len());
            self.literal.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.literal.len() == LITERAL_MAX {
                self.emit_literal()?;
            }
        }
        Ok(())
    }

    /// Fills `head` up to `need` bytes from `b`; true when complete.
    fn fill_head(&mut self, b: &mut &[u8], need: usize) -> bool {
        let n = (need - self.head_got).min(b.len());
        self.head[self.head_got..self.head_got + n].copy_from_slice(&b[..n]);
        self.head_got += n;
        *b = &b[n..];
        if self.head_got < need {
            return false;
        }
        self.head_got = 0;
        true
    }

    fn stream_header_done(&mut self) -> io::Result<()> {
        let h = self.head;
        if &h[..proto::MAGIC.len()] != proto::MAGIC {
            return Err(invalid(format!(
                "not a send stream header at byte {}",
                self.stream_bytes()
            )));
        }
        let version = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
        if version > proto::MAX_VERSION {
            return Err(invalid(format!(
                "send stream version {version} not supported"
            )));
        }
        debug_assert_eq!(h, stream_header(version));
        self.version = version;
        self.push_literal(&h)?;
        self.state = State::CmdHeader;
        Ok(())
    }

    fn command_header_done(&mut self) -> io::Result<()> {
        let mut h = [0u8; proto::CMD_HEADER_LEN];
        h.copy_from_slice(&self.head[..proto::CMD_HEADER_LEN]);
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let cmd_no = u16::from_le_bytes([h[4], h[5]]);
        if cmd_no == cmd::WRITE {
            let max = proto::max_payload(self.version);
            if len > max {
                return Err(invalid(format!(
                    "WRITE of {len} bytes at stream byte {} is over the {max}-byte limit",
                    self.stream_bytes()
                )));
            }
            self.write.payload_buf().clear();
            self.state = State::Write { len: len as usize };
            // The header goes out with the payload, in front of its literal part.
            return self.maybe_write_done();
        }
        self.push_literal(&h)?;
        self.state = State::Pass {
            left: u64::from(len),
            end: cmd_no == cmd::END,
        };
        self.maybe_pass_done();
        Ok(())
    }

    fn maybe_pass_done(&mut self) {
        if let State::Pass { left: 0, end } = self.state {
            self.state = if end {
                State::StreamHeader
            } else {
                State::CmdHeader
            };
        }
    }

    fn maybe_write_done(&mut self) -> io::Result<()> {
        let State::Write { len } = self.state else {
            return Ok(());
        };
        if self.write.payload().len() < len {
            return Ok(());
        }
        self.state = State::CmdHeader;
        let mut h = [0u8; proto::CMD_HEADER_LEN];
        h.copy_from_slice(&self.head[..proto::CMD_HEADER_LEN]);
        // A WRITE whose attributes do not parse is passed through whole (the receiver will
        // refuse it; framing is not the place to).
        let part = match self.write.finish_read(cmd::WRITE, self.version) {
            Ok(()) => data_part(&self.write),
            Err(_) => None,
        };
        // A WRITE shorter than the sender's largest ends its file (or a data range before a
        // hole): its last frame is the partial window a seed file ends with.
        let ends_file = self
            .write
            .get(attr::DATA)
            .is_some_and(|d| d.len() < proto::max_write_chunk(self.version));
        let payload = std::mem::take(self.write.payload_buf());
        let r = (|| {
            self.push_literal(&h)?;
            match part {
                None => self.push_literal(&payload),
                Some((start, end, file_offset)) => {
                    self.push_literal(&payload[..start])?;
                    self.emit_literal()?;
                    let mut at = file_offset;
                    for piece in payload[start..end].chunks(DATA_FRAME_MAX) {
                        let whole_window = piece.len() == DATA_FRAME_MAX || ends_file;
                        let kind = if at.is_multiple_of(DATA_WINDOW) && whole_window {
                            FrameKind::Window
                        } else {
                            FrameKind::Data
                        };
                        self.emit(kind, piece)?;
                        at += piece.len() as u64;
                    }
                    self.push_literal(&payload[end..])
                }
            }
        })();
        *self.write.payload_buf() = payload;
        r
    }
}

impl<W: Write> Write for FramingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut b = buf;
        while !b.is_empty() {
            match self.state {
                State::StreamHeader => {
                    if self.fill_head(&mut b, proto::STREAM_HEADER_LEN) {
                        self.stream_header_done()?;
                    }
                }
                State::CmdHeader => {
                    if self.fill_head(&mut b, proto::CMD_HEADER_LEN) {
                        self.command_header_done()?;
                    }
                }
                State::Pass { left, end } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(b.len());
                    self.push_literal(&b[..n])?;
                    b = &b[n..];
                    self.state = State::Pass {
                        left: left - n as u64,
                        end,
                    };
                    self.maybe_pass_done();
                }
                State::Write { len } => {
                    let p = self.write.payload_buf();
                    let n = (len - p.len()).min(b.len());
                    p.extend_from_slice(&b[..n]);
                    b = &b[n..];
                    self.maybe_write_done()?;
                }
            }
        }
        Ok(buf.len())
    }

    /// Flushes the output only: cutting a frame here would make the file depend on when the
    /// caller flushes.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::aligned_blocks;
    use crate::stream::{Builder, Writer, end_command};

    fn pseudo(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// WRITEs: (file offset, data length).
    const WRITES: &[(u64, usize)] = &[
        (0, 128 << 10),      // aligned, full
        (100, 10_000),       // unaligned head
        (4000, 5000),        // head 96 bytes, 4904 aligned
        (4096, 2047),        // aligned but below MIN_DATA_FRAME
        (4096, 2048),        // exactly MIN_DATA_FRAME
        (1, 4095),           // nothing aligned
        (8192, 0),           // empty
        (u64::MAX - 10, 5),  // offset near the end of u64
        (1 << 40, 64 << 10), // far offset
    ];

    fn stream(version: u32, writes: &[(u64, usize)], seed: u64) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.write_header(version).unwrap();
        let mk = Builder::new(cmd::MKFILE, version)
            .bytes(attr::PATH, b"f")
            .u64(attr::INO, 257)
            .build()
            .unwrap();
        w.write_command(&mk).unwrap();
        for (i, &(off, len)) in writes.iter().enumerate() {
            let c = Builder::new(cmd::WRITE, version)
                .bytes(attr::PATH, b"f")
                .u64(attr::FILE_OFFSET, off)
                .data(&pseudo(seed + i as u64, len))
                .build()
                .unwrap();
            w.write_command(&c).unwrap();
        }
        w.write_command(&end_command(version)).unwrap();
        w.into_inner()
    }

    fn frame(input: &[u8], chunk: usize, level: i32) -> (Vec<u8>, ContentMap) {
        let mut z = zstd::bulk::Compressor::new(level).unwrap();
        let mut fw = FramingWriter::new(Vec::new(), &mut z);
        for c in input.chunks(chunk.max(1)) {
            fw.write_all(c).unwrap();
            fw.flush().unwrap();
        }
        fw.finish().unwrap()
    }

    /// Everything a map promises about a file: tiling, digests, each frame decompressing on its
    /// own to its stream range, DATA frames holding the aligned part of a WRITE with its keys.
    fn check(input: &[u8], out: &[u8], map: &ContentMap) {
        assert_eq!(zstd::stream::decode_all(out).unwrap(), input);
        assert_eq!(map.stream_bytes, input.len() as u64);
        assert_eq!(map.comp_bytes, out.len() as u64);
        let d = ContentMap::decode(&map.encode(), map.stream_bytes, map.comp_bytes).unwrap();
        assert_eq!(&d, map);
        for f in &map.frames {
            let comp = &out[f.comp_offset as usize..(f.comp_offset + f.comp_len) as usize];
            assert_eq!(block_key(comp), f.digest);
            let got = zstd::bulk::decompress(comp, f.stream_len as usize).unwrap();
            let want = &input[f.stream_offset as usize..(f.stream_offset + f.stream_len) as usize];
            assert_eq!(got, want);
            match f.kind {
                FrameKind::Literal => assert!(f.stream_len as usize <= LITERAL_MAX),
                FrameKind::Data => {
                    assert!(f.stream_len as usize >= MIN_DATA_FRAME);
                    let keys: Vec<_> = want.chunks(4096).map(block_key).collect();
                    assert_eq!(map.keys_of(f), &keys[..]);
                }
                FrameKind::Window => {
                    assert!(f.stream_len as usize >= MIN_DATA_FRAME);
                    assert!(f.stream_len <= DATA_WINDOW);
                    assert_eq!(map.keys_of(f), &[block_key(want)]);
                }
            }
        }
    }

    fn data_frames(map: &ContentMap) -> Vec<u64> {
        map.frames
            .iter()
            .filter(|f| f.kind.is_data())
            .map(|f| f.stream_len)
            .collect()
    }

    #[test]
    fn frames_follow_the_aligned_data_of_writes() {
        for version in [1, 2, 3] {
            let writes: Vec<_> = WRITES
                .iter()
                .copied()
                .filter(|&(_, l)| l <= proto::max_write_chunk(version))
                .collect();
            let input = stream(version, &writes, 5);
            let (out, map) = frame(&input, 1 << 16, 3);
            check(&input, &out, &map);
            // The DATA frames are exactly the aligned parts of at least MIN_DATA_FRAME bytes,
            // cut every DATA_FRAME_MAX bytes.
            let max = DATA_FRAME_MAX as u64;
            let want: Vec<u64> = writes
                .iter()
                .map(|&(off, len)| aligned_blocks(off, len as u64).map(|b| b.1).sum::<u64>())
                .filter(|&n| n >= MIN_DATA_FRAME as u64)
                .flat_map(|n| (0..n.div_ceil(max)).map(move |i| (n - i * max).min(max)))
                .collect();
            assert_eq!(data_frames(&map), want, "version {version}");
            // And their keys are as the pool indexes them (at file offsets): one per window
            // for a frame at a window boundary that fills its window or ends a short WRITE
            // (a file's last), else one per block.
            let mut keys = Vec::new();
            let mut kinds = Vec::new();
            for (i, &(off, len)) in writes.iter().enumerate() {
                let data = pseudo(5 + i as u64, len);
                let blocks: Vec<_> = aligned_blocks(off, len as u64).collect();
                let Some(&(first, _)) = blocks.first() else {
                    continue;
                };
                let aligned = &data[(first - off) as usize..];
                if aligned.len() < MIN_DATA_FRAME {
                    continue;
                }
                let short = len < proto::max_write_chunk(version);
                for (j, piece) in aligned.chunks(DATA_FRAME_MAX).enumerate() {
                    let at = first + (j * DATA_FRAME_MAX) as u64;
                    if at.is_multiple_of(DATA_WINDOW) && (piece.len() == DATA_FRAME_MAX || short) {
                        kinds.push(FrameKind::Window);
                        keys.push(block_key(piece));
                    } else {
                        kinds.push(FrameKind::Data);
                        keys.extend(piece.chunks(4096).map(block_key));
                    }
                }
            }
            assert_eq!(map.keys, keys, "version {version}");
            let got: Vec<_> = map
                .frames
                .iter()
                .map(|f| f.kind)
                .filter(|k| k.is_data())
                .collect();
            assert_eq!(got, kinds, "version {version}");
            // The full 128 KiB WRITE at 0 (two windows) and the 64 KiB one at 1 TiB are windows
            // (version 1 has neither: its WRITEs are at most 48 KiB); no other part starts at a
            // window boundary.
            let windows = kinds.iter().filter(|k| **k == FrameKind::Window).count();
            assert_eq!(
                windows,
                if version == 1 { 0 } else { 3 },
                "version {version}"
            );
        }
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        let input = stream(2, &WRITES[..5], 9);
        let (out, map) = frame(&input, input.len(), 3);
        for chunk in [1, 7, 10, 17, 4096, 100_000] {
            let (o, m) = frame(&input, chunk, 3);
            assert_eq!(o, out, "chunk {chunk}");
            assert_eq!(m, map);
        }
    }

    #[test]
    fn workers_give_the_same_file_and_map() {
        // Literal frames at the limit, many small DATA frames, large ones, two streams.
        let small: Vec<(u64, usize)> = (0..600).map(|i| (i * 8192, 3000 + i as usize)).collect();
        let mut input = stream(2, &small, 4);
        input.extend_from_slice(&stream(2, WRITES, 6));
        let (want, want_map) = frame(&input, 1 << 16, 3);
        for workers in [1, 2, 3, 8] {
            for chunk in [999, 1 << 20] {
                let mut fw = FramingWriter::with_workers(Vec::new(), 3, workers, None).unwrap();
                for c in input.chunks(chunk) {
                    fw.write_all(c).unwrap();
                }
                let (out, map) = fw.finish().unwrap();
                assert!(out == want, "{workers} workers, chunk {chunk}");
                assert_eq!(map, want_map, "{workers} workers, chunk {chunk}");
            }
        }
        check(&input, &want, &want_map);
    }

    #[test]
    fn frames_reused_from_an_earlier_file_give_the_same_file_and_map() {
        let old_input = stream(2, WRITES, 6);
        let (old, old_map) = frame(&old_input, 1 << 16, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.zst");
        // One DATA frame of the old file is damaged: it is compressed anew, not copied.
        let mut damaged = old.clone();
        let f = old_map
            .frames
            .iter()
            .rfind(|f| f.kind == FrameKind::Data)
            .unwrap();
        damaged[f.comp_offset as usize + 8] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        // The new stream has the old WRITEs and others.
        let mut input = stream(2, &WRITES[..4], 6);
        input.extend_from_slice(&stream(2, WRITES, 6));
        input.extend_from_slice(&stream(2, &WRITES[..3], 8));
        let (want, want_map) = frame(&input, 1 << 16, 3);
        for workers in [1, 3] {
            let reuse = ReuseFrames::new(std::fs::File::open(&path).unwrap(), old_map.clone());
            let mut fw = FramingWriter::with_workers(Vec::new(), 3, workers, Some(reuse)).unwrap();
            fw.write_all(&input).unwrap();
            let (out, map) = fw.finish().unwrap();
            assert!(out == want, "{workers} workers");
            assert_eq!(map, want_map);
        }
        // And copies are found at all: frames that only the old file has, bit-flipped there,
        // would appear in the output if copied without checks.
        let reuse = ReuseFrames::new(std::fs::File::open(&path).unwrap(), old_map.clone());
        let data: Vec<_> = old_map
            .frames
            .iter()
            .filter(|f| f.kind == FrameKind::Data)
            .collect();
        let found = data
            .iter()
            .filter(|f| {
                let src =
                    &old_input[f.stream_offset as usize..(f.stream_offset + f.stream_len) as usize];
                let keys: Vec<_> = src.chunks(4096).map(block_key).collect();
                reuse.find(src, &keys).is_some()
            })
            .count();
        assert_eq!(found, data.len() - 1);
    }

    #[test]
    fn a_dropped_parallel_writer_stops_its_workers() {
        let input = stream(2, WRITES, 1);
        let mut fw = FramingWriter::with_workers(Vec::new(), 1, 2, None).unwrap();
        fw.write_all(&input[..input.len() / 2]).unwrap();
        drop(fw);
    }

    #[test]
    fn literal_frames_are_cut_at_the_limit_and_streams_concatenate() {
        // 3 MB of small writes (all literal) and a second stream after END.
        let small: Vec<(u64, usize)> = (0..3000).map(|i| (i * 4096 + 1, 1000)).collect();
        let mut input = stream(2, &small, 1);
        input.extend_from_slice(&stream(1, &WRITES[1..3], 2));
        let (out, map) = frame(&input, 65_536, 1);
        check(&input, &out, &map);
        let lits: Vec<u64> = map
            .frames
            .iter()
            .filter(|f| f.kind == FrameKind::Literal)
            .map(|f| f.stream_len)
            .collect();
        assert!(
            lits[..2].iter().all(|&n| n == LITERAL_MAX as u64),
            "{lits:?}"
        );
        assert_eq!(data_frames(&map).len(), 2);
    }

    #[test]
    fn a_signed_stream_frames_and_verifies() {
        use crate::pipeline::Hook;
        use crate::sign::{SecretKey, Signer, sign_stream};
        use crate::stream::Reader;
        let input = stream(2, WRITES, 3);
        let key = SecretKey::from_seed(&[1; 32]);
        let (_, signed) = sign_stream(
            &mut Reader::new(&input[..]),
            Signer::with_stream_id(Vec::new(), SecretKey::from_seed(&[1; 32]), [2; 16])
                .with_segment_sizes(20_000, 40_000),
            &mut Hook::none(),
        )
        .unwrap();
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        let (_, framed) = sign_stream(
            &mut Reader::new(&input[..]),
            Signer::with_stream_id(FramingWriter::new(Vec::new(), &mut z), key, [2; 16])
                .with_segment_sizes(20_000, 40_000),
            &mut Hook::none(),
        )
        .unwrap();
        let (out, map) = framed.finish().unwrap();
        check(&signed, &out, &map);
        // Five aligned parts, the 128 KiB one cut in two DATA_FRAME_MAX frames.
        assert_eq!(data_frames(&map).len(), 6);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let input = stream(2, &WRITES[..3], 1);
        // Cut anywhere but at the end: finish refuses.
        for n in [1, 16, 17, 20, 27, 200, input.len() - 1] {
            let mut z = zstd::bulk::Compressor::new(1).unwrap();
            let mut fw = FramingWriter::new(Vec::new(), &mut z);
            fw.write_all(&input[..n]).unwrap();
            assert_eq!(
                fw.finish().unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "cut at {n}"
            );
        }
        // Bad magic, and a WRITE over the payload cap.
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let mut fw = FramingWriter::new(Vec::new(), &mut z);
        assert!(fw.write_all(b"btrfs-streaX\0\x02\0\0\0").is_err());
        let mut bad = stream_header(1).to_vec();
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0, 15, 0, 0, 0, 0, 0]);
        let mut fw = FramingWriter::new(Vec::new(), &mut z);
        assert!(fw.write_all(&bad).is_err());
        // A WRITE whose attributes do not parse passes through as literal bytes.
        let mut odd = stream_header(2).to_vec();
        let payload = [0xffu8; 5000];
        odd.extend_from_slice(&crate::stream::command_header(cmd::WRITE, &[&payload]));
        odd.extend_from_slice(&payload);
        odd.extend_from_slice(&crate::stream::command_header(cmd::END, &[]));
        let (out, map) = frame(&odd, 999, 1);
        check(&odd, &out, &map);
        assert!(data_frames(&map).is_empty());
    }

    /// The cost of frames and map against one zstd stream (printed with --nocapture).
    #[test]
    fn size_cost_against_a_single_frame() {
        // 40 files of mixed compressible and random data, in 128 KiB WRITEs.
        let mut writes = Vec::new();
        let mut w = Writer::new(Vec::new());
        w.write_header(2).unwrap();
        for f in 0..40u64 {
            let path = format!("dir/file{f}");
            let mk = Builder::new(cmd::MKFILE, 2)
                .bytes(attr::PATH, path.as_bytes())
                .u64(attr::INO, 257 + f)
                .build()
                .unwrap();
            w.write_command(&mk).unwrap();
            let size = 10_000 + f as usize * 9_000;
            let mut data = pseudo(f, size);
            if f % 2 == 0 {
                // Text-like: compressible.
                for (i, b) in data.iter_mut().enumerate() {
                    *b = b"the quick brown fox jumps over the lazy dog "[i % 44] ^ (*b & 1);
                }
            }
            for (i, c) in data.chunks(128 << 10).enumerate() {
                let c = Builder::new(cmd::WRITE, 2)
                    .bytes(attr::PATH, path.as_bytes())
                    .u64(attr::FILE_OFFSET, i as u64 * (128 << 10))
                    .data(c)
                    .build()
                    .unwrap();
                w.write_command(&c).unwrap();
                writes.push(());
            }
        }
        w.write_command(&end_command(2)).unwrap();
        let input = w.into_inner();
        let single = zstd::stream::encode_all(&input[..], 6).unwrap();
        let (out, map) = frame(&input, 1 << 20, 6);
        check(&input, &out, &map);
        let map_file = map.encode();
        let cost = out.len() + map_file.len();
        eprintln!(
            "stream {} B, single zstd {} B, frames {} B (+{:.2} %) + map {} B = {:.2} % over single, {} frames",
            input.len(),
            single.len(),
            out.len(),
            (out.len() as f64 / single.len() as f64 - 1.0) * 100.0,
            map_file.len(),
            (cost as f64 / single.len() as f64 - 1.0) * 100.0,
            map.frames.len()
        );
        // Loose bound: independent frames of 128 KiB lose little on data like this.
        assert!(
            cost < single.len() * 110 / 100,
            "{cost} vs {}",
            single.len()
        );
    }
}
