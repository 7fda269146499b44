//! The pipeline every command runs through.
//!
//! A [`Source`] yields stream headers and commands (a stream reader, a verifying filter, a
//! reader on another thread); a [`CommandSink`] takes them (a stream writer, a signer, the
//! receiver, the dump printers, the checker); a filter is a sink that forwards to another sink.
//! [`pump`] is the one loop between a source and a sink, with one progress and cancellation
//! hook ([`Hook`]). Producers that make commands themselves (the tree sender) call a sink
//! directly.

use crate::Error;
use crate::stream::{Command, Item, Reader, StreamError, StreamErrorKind, Writer, cmd};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a header or command starts in its input: the byte offset and, for a command, its
/// 0-based index over the whole input (stream headers not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Byte offset of the first byte of the header or command.
    pub offset: u64,
    /// Index of the command (for a header: the index the next command will have).
    pub index: u64,
}

/// Anything that yields headers and commands: a [`Reader`], or a filter wrapped around one
/// (for example signature verification, which releases a segment's commands only after its
/// signature checked).
pub trait Source {
    /// The next header or command, or `Ok(None)` at a clean end of input.
    ///
    /// # Errors
    /// Stream, I/O or verification errors.
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error>;
    /// Bytes of input consumed so far.
    fn offset(&self) -> u64;
    /// Commands yielded so far.
    fn commands(&self) -> u64;
    /// Called right after an item was yielded: where a receive of this input could restart
    /// after that item, when this is a point to restart from (a reader keeping a digest offers
    /// one now and then; a verifying source only at the end of a verified segment). The state
    /// is taken at once, so a filter running ahead on another thread can pass it along.
    fn resume_state(&mut self) -> Option<ResumeState> {
        None
    }
}

/// Where an input can be taken up again after an item: the source's own position (what
/// [`Source::offset`] and [`Source::commands`] said right after the item), the reader's state
/// there, and a verifying source's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// [`Source::commands`] after the item: the index the next command will have.
    pub index: u64,
    /// The byte reader's state: the offset to restart reading at, and the digest before it.
    pub reader: crate::stream::ReaderState,
    /// A signature verifier's state (signed input only).
    pub verifier: Option<crate::sign::VerifierState>,
}

impl<R: std::io::Read> Source for Reader<R> {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        Ok(self.next(out)?)
    }
    fn resume_state(&mut self) -> Option<ResumeState> {
        let reader = self.offer_state()?;
        Some(ResumeState {
            index: reader.commands,
            reader,
            verifier: None,
        })
    }
    fn offset(&self) -> u64 {
        Reader::offset(self)
    }
    fn commands(&self) -> u64 {
        Reader::commands(self)
    }
}

impl<S: Source + ?Sized> Source for &mut S {
    fn next_item(&mut self, out: &mut Command) -> Result<Option<Item>, Error> {
        (**self).next_item(out)
    }
    fn offset(&self) -> u64 {
        (**self).offset()
    }
    fn commands(&self) -> u64 {
        (**self).commands()
    }
    fn resume_state(&mut self) -> Option<ResumeState> {
        (**self).resume_state()
    }
}

/// A consumer of headers and commands, in stream order.
pub trait CommandSink {
    /// A stream header (the first, or one after an END).
    ///
    /// # Errors
    /// Output errors, or a header the sink cannot take here.
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error>;
    /// One command. Returning `ControlFlow::Break` ends the pump early (a dump that stops
    /// after the first END, as `btrfs receive --dump` does).
    ///
    /// # Errors
    /// Output, formatting or apply errors.
    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error>;
    /// One command whose payload is `head`'s payload followed by the bytes of `tail` (a
    /// producer's large WRITE data, given separately so a sink that only writes or hashes it
    /// need not copy it into a payload buffer first). By default the command is assembled and
    /// passed to [`CommandSink::command`].
    ///
    /// # Errors
    /// As [`CommandSink::command`]; a payload that does not parse.
    fn command_split(
        &mut self,
        head: &Command,
        tail: &[&[u8]],
        at: Position,
    ) -> Result<ControlFlow<()>, Error> {
        let mut payload =
            Vec::with_capacity(head.payload().len() + tail.iter().map(|t| t.len()).sum::<usize>());
        payload.extend_from_slice(head.payload());
        for t in tail {
            payload.extend_from_slice(t);
        }
        let c = Command::from_payload(head.cmd(), head.version(), payload).map_err(|e| {
            StreamError {
                offset: at.offset,
                index: Some(at.index),
                cmd_name: Some(head.name()),
                kind: StreamErrorKind::Attr(e),
            }
        })?;
        self.command(&c, at)
    }
    /// The input ended cleanly (or the sink asked to stop): complete the work (flush output,
    /// write a final signature block, commit a received subvolume).
    ///
    /// # Errors
    /// Output errors, or an input that ended where it may not.
    fn finish(&mut self) -> Result<(), Error>;
    /// The input failed or was cancelled: release what is held (flush output already made,
    /// remove partial state). `finish` is not called after this.
    fn abort(&mut self) {}
}

impl<K: CommandSink + ?Sized> CommandSink for &mut K {
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error> {
        (**self).header(version, at)
    }
    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        (**self).command(c, at)
    }
    fn command_split(
        &mut self,
        head: &Command,
        tail: &[&[u8]],
        at: Position,
    ) -> Result<ControlFlow<()>, Error> {
        (**self).command_split(head, tail, at)
    }
    fn finish(&mut self) -> Result<(), Error> {
        (**self).finish()
    }
    fn abort(&mut self) {
        (**self).abort();
    }
}

/// The plain output: every header and command written as it is (a command read from bytes
/// keeps its checked CRC, so reading then writing gives the input bytes exactly).
impl<W: std::io::Write> CommandSink for Writer<W> {
    fn header(&mut self, version: u32, _: Position) -> Result<(), Error> {
        self.write_header(version).map_err(Error::output)
    }
    fn command(&mut self, c: &Command, _: Position) -> Result<ControlFlow<()>, Error> {
        self.write_command(c).map_err(Error::output)?;
        Ok(ControlFlow::Continue(()))
    }
    fn command_split(
        &mut self,
        head: &Command,
        tail: &[&[u8]],
        _: Position,
    ) -> Result<ControlFlow<()>, Error> {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + tail.len());
        parts.push(head.payload());
        parts.extend_from_slice(tail);
        self.write_parts(head.cmd(), &parts)
            .map_err(Error::output)?;
        Ok(ControlFlow::Continue(()))
    }
    fn finish(&mut self) -> Result<(), Error> {
        self.flush().map_err(Error::output)
    }
    fn abort(&mut self) {
        // Keep what was produced before the failure (a dump's text, a partial copy).
        let _ = self.flush();
    }
}

/// A filter that ends the pump after the first END, as `btrfs receive --dump` stops after
/// the first stream of a concatenation.
#[derive(Debug)]
pub struct UntilEnd<K>(pub K);

impl<K: CommandSink> CommandSink for UntilEnd<K> {
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error> {
        self.0.header(version, at)
    }
    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        let flow = self.0.command(c, at)?;
        Ok(if c.cmd() == cmd::END {
            ControlFlow::Break(())
        } else {
            flow
        })
    }
    fn finish(&mut self) -> Result<(), Error> {
        self.0.finish()
    }
    fn abort(&mut self) {
        self.0.abort();
    }
}

/// What a [`pump`] moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Stream headers (concatenated streams count one each).
    pub streams: u64,
    /// Commands passed to the sink.
    pub commands: u64,
    /// Bytes of input consumed.
    pub bytes: u64,
    /// Highest stream version seen.
    pub max_version: u32,
}

/// Progress is reported at most every this many commands...
const PROGRESS_COMMANDS: u64 = 4096;
/// ...or when this many input bytes passed since the last report, whichever comes first.
const PROGRESS_BYTES: u64 = 8 << 20;

/// The one progress and cancellation hook of a pipeline.
#[derive(Default)]
pub struct Hook<'a> {
    progress: Option<&'a mut dyn FnMut(&Totals)>,
    cancel: Option<&'a AtomicBool>,
    last_bytes: u64,
}

impl std::fmt::Debug for Hook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl<'a> Hook<'a> {
    /// No progress, no cancellation.
    #[must_use]
    pub fn none() -> Hook<'a> {
        Hook::default()
    }

    /// Calls `f` now and then (and once at the end) with what was moved so far.
    #[must_use]
    pub fn progress(mut self, f: &'a mut dyn FnMut(&Totals)) -> Hook<'a> {
        self.progress = Some(f);
        self
    }

    /// Stops with [`Error::Interrupted`] once `flag` is set (by a signal handler).
    #[must_use]
    pub fn cancel(mut self, flag: &'a AtomicBool) -> Hook<'a> {
        self.cancel = Some(flag);
        self
    }

    /// True once cancellation was asked for.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Reports `t` if enough happened since the last report (or `force`).
    pub fn tick(&mut self, t: &Totals, force: bool) {
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        if force
            || t.commands.is_multiple_of(PROGRESS_COMMANDS)
            || t.bytes.saturating_sub(self.last_bytes) >= PROGRESS_BYTES
        {
            self.last_bytes = t.bytes;
            p(t);
        }
    }
}

/// Moves every header and command from `src` into `sink` until the input ends (then
/// [`CommandSink::finish`]) or the sink breaks (then also `finish`). On any error, and on
/// cancellation, calls [`CommandSink::abort`] and returns the error.
///
/// # Errors
/// The first source or sink error; [`Error::Interrupted`] when the hook's flag was set.
pub fn pump<S, K>(src: &mut S, sink: &mut K, hook: &mut Hook<'_>) -> Result<Totals, Error>
where
    S: Source + ?Sized,
    K: CommandSink + ?Sized,
{
    match pump_items(src, sink, hook) {
        Ok(t) => {
            sink.finish()?;
            hook.tick(&t, true);
            Ok(t)
        }
        Err(e) => {
            sink.abort();
            Err(e)
        }
    }
}

fn pump_items<S, K>(src: &mut S, sink: &mut K, hook: &mut Hook<'_>) -> Result<Totals, Error>
where
    S: Source + ?Sized,
    K: CommandSink + ?Sized,
{
    let mut c = Command::empty();
    let mut t = Totals::default();
    loop {
        if hook.cancelled() {
            return Err(Error::Interrupted);
        }
        let at = Position {
            offset: src.offset(),
            index: src.commands(),
        };
        let Some(item) = src.next_item(&mut c)? else {
            t.bytes = src.offset();
            break;
        };
        t.bytes = src.offset();
        match item {
            Item::Header(v) => {
                t.streams += 1;
                t.max_version = t.max_version.max(v);
                sink.header(v, at)?;
            }
            Item::Command => {
                t.commands += 1;
                let flow = sink.command(&c, at)?;
                hook.tick(&t, false);
                if flow.is_break() {
                    break;
                }
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Writer, cmd, end_command};

    /// Counts what it is given; breaks after `stop_after` commands if set.
    #[derive(Default)]
    struct Count {
        headers: u64,
        commands: u64,
        finished: bool,
        aborted: bool,
        stop_after: Option<u64>,
    }

    impl CommandSink for Count {
        fn header(&mut self, _: u32, _: Position) -> Result<(), Error> {
            self.headers += 1;
            Ok(())
        }
        fn command(&mut self, _: &Command, _: Position) -> Result<ControlFlow<()>, Error> {
            self.commands += 1;
            Ok(if self.stop_after == Some(self.commands) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        }
        fn finish(&mut self) -> Result<(), Error> {
            self.finished = true;
            Ok(())
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    fn two_streams() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        for _ in 0..2 {
            w.write_header(1).unwrap();
            w.write_command(&end_command(1)).unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn pumps_everything_then_finishes() {
        let bytes = two_streams();
        let mut sink = Count::default();
        let t = pump(&mut Reader::new(&bytes[..]), &mut sink, &mut Hook::none()).unwrap();
        assert_eq!((t.streams, t.commands, t.bytes), (2, 2, bytes.len() as u64));
        assert_eq!((sink.headers, sink.commands), (2, 2));
        assert!(sink.finished && !sink.aborted);
    }

    #[test]
    fn sink_break_stops_early() {
        let bytes = two_streams();
        let mut sink = Count {
            stop_after: Some(1),
            ..Count::default()
        };
        let t = pump(&mut Reader::new(&bytes[..]), &mut sink, &mut Hook::none()).unwrap();
        assert_eq!((t.streams, t.commands), (1, 1));
        assert!(sink.finished);
    }

    #[test]
    fn stream_error_aborts() {
        let mut bytes = two_streams();
        bytes.truncate(bytes.len() - 3);
        let mut sink = Count::default();
        let e = pump(&mut Reader::new(&bytes[..]), &mut sink, &mut Hook::none()).unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::InvalidStream);
        assert!(sink.aborted && !sink.finished);
        assert_eq!(sink.commands, 1);
        assert_eq!(cmd::END, end_command(1).cmd());
    }

    #[test]
    fn cancellation_aborts_with_interrupted() {
        let bytes = two_streams();
        let flag = AtomicBool::new(true);
        let mut sink = Count::default();
        let mut hook = Hook::none().cancel(&flag);
        let e = pump(&mut Reader::new(&bytes[..]), &mut sink, &mut hook).unwrap_err();
        assert!(matches!(e, Error::Interrupted));
        assert!(sink.aborted && sink.commands == 0);
    }

    #[test]
    fn writer_sink_gives_the_input_bytes() {
        use crate::stream::{Builder, attr};
        let mut w = Writer::new(Vec::new());
        w.write_header(2).unwrap();
        let c = Builder::new(cmd::WRITE, 2)
            .bytes(attr::PATH, b"f")
            .u64(attr::FILE_OFFSET, 0)
            .data(&[7; 1000])
            .build()
            .unwrap();
        w.write_command(&c).unwrap();
        w.write_command(&end_command(2)).unwrap();
        w.write_header(1).unwrap();
        w.write_command(&end_command(1)).unwrap();
        let bytes = w.into_inner();
        let mut out = Writer::new(Vec::new());
        let t = pump(&mut Reader::new(&bytes[..]), &mut out, &mut Hook::none()).unwrap();
        assert_eq!((t.streams, t.commands, t.max_version), (2, 3, 2));
        assert_eq!(out.into_inner(), bytes);
    }

    #[test]
    fn split_command_is_the_same_frame() {
        use crate::stream::{Builder, attr};
        let head = Builder::new(cmd::WRITE, 2)
            .bytes(attr::PATH, b"f")
            .u64(attr::FILE_OFFSET, 0)
            .build()
            .unwrap();
        let data = [5u8; 300];
        let whole = Builder::new(cmd::WRITE, 2)
            .bytes(attr::PATH, b"f")
            .u64(attr::FILE_OFFSET, 0)
            .data(&data)
            .build()
            .unwrap();
        let tail: [&[u8]; 2] = [&attr::DATA.to_le_bytes(), &data];
        // Writer writes the parts; the default method assembles them.
        let mut w = Writer::new(Vec::new());
        let flow = w.command_split(&head, &tail, Position::default()).unwrap();
        assert!(flow.is_continue());
        struct Keep(Vec<Command>);
        impl CommandSink for Keep {
            fn header(&mut self, _: u32, _: Position) -> Result<(), Error> {
                Ok(())
            }
            fn command(&mut self, c: &Command, _: Position) -> Result<ControlFlow<()>, Error> {
                self.0.push(c.clone());
                Ok(ControlFlow::Continue(()))
            }
            fn finish(&mut self) -> Result<(), Error> {
                Ok(())
            }
        }
        let mut keep = Keep(Vec::new());
        let flow = keep
            .command_split(&head, &tail, Position::default())
            .unwrap();
        assert!(flow.is_continue());
        assert_eq!(keep.0, vec![whole.clone()]);
        let mut expect = whole.frame_header().to_vec();
        expect.extend_from_slice(whole.payload());
        assert_eq!(w.into_inner(), expect);
    }

    #[test]
    fn until_end_stops_after_the_first_stream() {
        let bytes = two_streams();
        let mut sink = UntilEnd(Count::default());
        let t = pump(&mut Reader::new(&bytes[..]), &mut sink, &mut Hook::none()).unwrap();
        assert_eq!((t.streams, t.commands), (1, 1));
        assert!(sink.0.finished);
    }

    #[test]
    fn progress_reported_at_the_end() {
        let bytes = two_streams();
        let mut seen = Vec::new();
        let mut f = |t: &Totals| seen.push(t.commands);
        let mut hook = Hook::none().progress(&mut f);
        pump(
            &mut Reader::new(&bytes[..]),
            &mut Count::default(),
            &mut hook,
        )
        .unwrap();
        assert_eq!(seen.last(), Some(&2));
    }
}
