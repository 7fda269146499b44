//! Input read on its own thread: reading overlaps applying, and a signal flag is noticed even
//! while the producer of a pipe is silent.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds the memory used for read-ahead (4 MiB).
const DEPTH: usize = 4;

/// A `Read` fed by a background thread.
pub struct ThreadedInput {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    stop: Option<Arc<AtomicBool>>,
    spare: Option<SyncSender<Vec<u8>>>,
}

impl ThreadedInput {
    /// Starts reading `inner` on a thread. When `stop` becomes true, reads fail with
    /// `ErrorKind::Interrupted`-like `Other` errors.
    pub fn spawn(mut inner: Box<dyn Read + Send>, stop: Option<Arc<AtomicBool>>) -> ThreadedInput {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(DEPTH);
        std::thread::spawn(move || {
            loop {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let n = loop {
                    match inner.read(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                };
                match n {
                    Ok(0) => {
                        let _ = tx.send(Ok(Vec::new()));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        ThreadedInput {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
            stop,
            spare: Some(spare_tx),
        }
    }
}

impl Read for ThreadedInput {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(buf)) if buf.is_empty() => self.done = true,
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    if let Some(s) = &self.spare {
                        let _ = s.try_send(old);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    if self
                        .stop
                        .as_ref()
                        .is_some_and(|f| f.load(Ordering::Relaxed))
                    {
                        return Err(io::Error::other("interrupted by a signal"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
