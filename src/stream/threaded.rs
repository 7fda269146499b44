//! [`ThreadedSource`]: runs a [`Source`] on its own thread and hands its items over through a
//! bounded queue, so parsing, CRC checks and signature verification overlap with applying.
//!
//! Each item is queued as soon as it is parsed (the producer may block in `read` on a slow pipe
//! at any moment, and what it already has must not wait for more input), but the consumer takes
//! everything queued under one lock, and a side is woken only when it actually sleeps: on a
//! stream of small commands this avoids a futex round trip per command.
//!
//! Memory stays bounded: the queue holds at most [`MAX_QUEUED_BYTES`] of command buffers
//! (counted by allocation, not payload length, since recycled buffers keep their capacity) or
//! [`MAX_QUEUED_ITEMS`] items, plus one batch being applied and at most [`MAX_SPARE`] recycled
//! buffers.

use super::{Command, Item};
use crate::Error;
use crate::pipeline::Source;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Buffer bytes queued before the producer waits.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Items queued before the producer waits.
pub const MAX_QUEUED_ITEMS: usize = 2048;
/// Spent command buffers kept for reuse.
pub const MAX_SPARE: usize = 16;

struct Entry {
    item: Item,
    cmd: Command,
    /// The source's offset and command count after this item.
    offset: u64,
    commands: u64,
    /// Where the input could be taken up again after this item.
    resume: Option<crate::pipeline::ResumeState>,
}

#[derive(Default)]
struct State {
    items: VecDeque<Entry>,
    bytes: usize,
    /// Set by the producer when it stops: Ok at a clean end, the error otherwise.
    end: Option<Result<(), Error>>,
    consumer_gone: bool,
    consumer_waiting: bool,
    producer_waiting: bool,
    /// Spent command buffers on their way back to the producer.
    spare: Vec<Command>,
}

struct Shared {
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the other side poisons the lock; the state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A [`Source`] whose producer runs on another thread.
pub struct ThreadedSource {
    shared: Arc<Shared>,
    batch: VecDeque<Entry>,
    spent: Vec<Command>,
    offset: u64,
    commands: u64,
    resume: Option<crate::pipeline::ResumeState>,
    finished: bool,
}

impl ThreadedSource {
    /// Starts pulling from `source` on a new thread.
    pub fn spawn<S: Source + Send + 'static>(mut source: S) -> ThreadedSource {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        std::thread::spawn(move || {
            let shared = theirs;
            let mut spare: Vec<Command> = Vec::new();
            loop {
                let mut cmd = spare.pop().unwrap_or_default();
                let got = source.next_item(&mut cmd);
                let resume = if matches!(got, Ok(Some(_))) {
                    source.resume_state()
                } else {
                    None
                };
                let mut st = shared.lock();
                match got {
                    Ok(Some(item)) => {
                        while !st.consumer_gone
                            && (st.items.len() >= MAX_QUEUED_ITEMS || st.bytes >= MAX_QUEUED_BYTES)
                        {
                            st.producer_waiting = true;
                            st = shared
                                .not_full
                                .wait(st)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        st.producer_waiting = false;
                        if st.consumer_gone {
                            return;
                        }
                        st.bytes += cmd.allocated();
                        let entry = Entry {
                            item,
                            cmd,
                            offset: source.offset(),
                            commands: source.commands(),
                            resume,
                        };
                        st.items.push_back(entry);
                        spare.append(&mut st.spare);
                    }
                    Ok(None) => st.end = Some(Ok(())),
                    Err(e) => st.end = Some(Err(e)),
                }
                let stop = st.end.is_some();
                if st.consumer_waiting {
                    shared.not_empty.notify_one();
                }
                drop(st);
                if stop {
                    return;
                }
            }
        });
        ThreadedSource {
            shared,
            batch: VecDeque::new(),
            spent: Vec::new(),
            offset: 0,
            commands: 0,
            resume: None,
            finished: false,
        }
    }

    /// Waits for queued items and takes all of them; returns the producer's end once the queue
    /// is empty and it has stopped.
    fn refill(&mut self) -> Option<Result<(), Error>> {
        let mut st = self.shared.lock();
        while st.items.is_empty() && st.end.is_none() {
            st.consumer_waiting = true;
            st = self
                .shared
                .not_empty
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        st.consumer_waiting = false;
        if st.items.is_empty() {
            return st.end.take();
        }
        std::mem::swap(&mut self.batch, &mut st.items);
        st.bytes = 0;
        if st.spare.len() < MAX_SPARE {
            st.spare.append(&mut self.spent);
        }
        self.spent.clear();
        if st.producer_waiting {
            self.shared.not_full.notify_one();
        }
        None
    }
}

impl Source for ThreadedSource {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        if self.batch.is_empty() {
            if self.finished {
                return Ok(None);
            }
            if let Some(end) = self.refill() {
                self.finished = true;
                return end.map(|()| None);
            }
        }
        let Some(mut e) = self.batch.pop_front() else {
            return Ok(None);
        };
        std::mem::swap(out, &mut e.cmd);
        if self.spent.len() < MAX_SPARE {
            self.spent.push(e.cmd);
        }
        self.offset = e.offset;
        self.commands = e.commands;
        self.resume = e.resume;
        Ok(Some(e.item))
    }

    fn resume_state(&mut self) -> Option<crate::pipeline::ResumeState> {
        self.resume.take()
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn commands(&self) -> u64 {
        self.commands
    }
}

impl Drop for ThreadedSource {
    fn drop(&mut self) {
        // Let a producer waiting for room stop; one blocked in `read` stops at its next item.
        let mut st = self.shared.lock();
        st.consumer_gone = true;
        st.items.clear();
        self.shared.not_full.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Builder, Reader, Writer, attr, cmd, end_command};

    fn stream(n: usize) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.write_header(2).unwrap();
        let sub = Builder::new(cmd::SUBVOL, 2)
            .bytes(attr::PATH, b"s")
            .uuid(attr::UUID, &crate::stream::Uuid([1; 16]))
            .u64(attr::CTRANSID, 1)
            .build()
            .unwrap();
        w.write_command(&sub).unwrap();
        for i in 0..n {
            let c = Builder::new(cmd::WRITE, 2)
                .bytes(attr::PATH, format!("f{i}").as_bytes())
                .u64(attr::FILE_OFFSET, 0)
                .data(&vec![i as u8; i % 5000])
                .build()
                .unwrap();
            w.write_command(&c).unwrap();
        }
        w.write_command(&end_command(2)).unwrap();
        w.into_inner()
    }

    #[test]
    fn yields_the_same_items_and_positions() {
        let bytes = stream(3000);
        let mut direct = Reader::new(&bytes[..]);
        let mut threaded = ThreadedSource::spawn(Reader::new(std::io::Cursor::new(bytes.clone())));
        let (mut a, mut b) = (Command::empty(), Command::empty());
        loop {
            let x = direct.next(&mut a).unwrap();
            let y = threaded.next_item(&mut b).unwrap();
            assert_eq!(x, y);
            if x.is_none() {
                break;
            }
            assert_eq!(a, b);
            assert_eq!(direct.offset(), Source::offset(&threaded));
            assert_eq!(direct.commands(), Source::commands(&threaded));
        }
    }

    #[test]
    fn passes_errors_after_the_good_items() {
        let mut bytes = stream(10);
        let n = bytes.len();
        bytes.truncate(n - 3);
        let mut t = ThreadedSource::spawn(Reader::new(std::io::Cursor::new(bytes)));
        let mut c = Command::empty();
        let mut good = 0;
        let err = loop {
            match t.next_item(&mut c) {
                Ok(Some(_)) => good += 1,
                Ok(None) => panic!("truncated stream ended cleanly"),
                Err(e) => break e,
            }
        };
        assert_eq!(good, 12); // header, SUBVOL, 10 writes
        assert!(
            crate::util::error_chain(&err).contains("truncated"),
            "{err}"
        );
    }
}
