//! [`ThreadedSource`]: runs a [`Source`] on its own thread and hands its items over through a
//! bounded channel, so parsing, CRC checks and signature verification overlap with applying.
//!
//! Items go one at a time: the producer may block in `read` on a slow pipe at any moment, and
//! whatever it has already parsed must reach the consumer without waiting for more input.
//! Memory stays bounded: at most [`DEPTH`] commands (each under the per-version payload cap) are
//! in flight, and command buffers are recycled back to the producer.

use super::{Command, Item, Source};
use crate::Error;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Commands in flight between the threads.
pub const DEPTH: usize = 64;

struct Entry {
    item: Item,
    cmd: Command,
    /// The source's offset and command count after this item.
    offset: u64,
    commands: u64,
}

// `Item` is nearly every message: boxing it would allocate once per command.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Item(Entry),
    Done,
    Failed(Error),
}

/// A [`Source`] whose producer runs on another thread.
pub struct ThreadedSource {
    rx: Receiver<Msg>,
    recycle: SyncSender<Command>,
    offset: u64,
    commands: u64,
    finished: bool,
}

impl ThreadedSource {
    /// Starts pulling from `source` on a new thread.
    pub fn spawn<S: Source + Send + 'static>(mut source: S) -> ThreadedSource {
        let (tx, rx) = sync_channel::<Msg>(DEPTH);
        // Spent command buffers come back for reuse.
        let (recycle, reuse) = sync_channel::<Command>(DEPTH);
        std::thread::spawn(move || {
            loop {
                let mut cmd = reuse.try_recv().unwrap_or_default();
                let msg = match source.next_item(&mut cmd) {
                    Ok(Some(item)) => Msg::Item(Entry {
                        item,
                        cmd,
                        offset: source.offset(),
                        commands: source.commands(),
                    }),
                    Ok(None) => Msg::Done,
                    Err(e) => Msg::Failed(e),
                };
                let last = !matches!(msg, Msg::Item(_));
                // A failed send means the consumer is gone: stop.
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        });
        ThreadedSource {
            rx,
            recycle,
            offset: 0,
            commands: 0,
            finished: false,
        }
    }
}

impl Source for ThreadedSource {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        if self.finished {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(Msg::Item(mut e)) => {
                std::mem::swap(out, &mut e.cmd);
                let _ = self.recycle.try_send(e.cmd);
                self.offset = e.offset;
                self.commands = e.commands;
                Ok(Some(e.item))
            }
            Ok(Msg::Done) => {
                self.finished = true;
                Ok(None)
            }
            Ok(Msg::Failed(e)) => {
                self.finished = true;
                Err(e)
            }
            Err(_) => {
                // The producer died without saying why (a panic): report, don't hang.
                self.finished = true;
                Err(Error::Invalid(
                    "the stream reader thread stopped unexpectedly".into(),
                ))
            }
        }
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn commands(&self) -> u64 {
        self.commands
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
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
