//! `subvol sign` and `subvol keygen`.

use super::{OUTPUT_MODE, Progress, ThreadedInput, open_input, refuse_output_is_input};
use crate::args;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use subvol::Error;
use subvol::pipeline::{Hook, Totals};
use subvol::sign::{SecretKey, Signer, keygen as make_key, sign_stream};
use subvol::stream::Reader;
use subvol::util::fs::AtomicFile;

/// Output chunk of `subvol sign`.
const OUTPUT_CHUNK: usize = 1 << 20;
/// Chunks queued for the output thread.
const OUTPUT_DEPTH: usize = 4;

/// Output written on its own thread, so that hashing and signing overlap the `write` syscalls
/// (the input is read on another thread, [`ThreadedInput`]).
struct ThreadedOutput<W> {
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedOutput<W> {
    fn spawn(mut f: W) -> ThreadedOutput<W> {
        let (tx, rx) = sync_channel::<Vec<u8>>(OUTPUT_DEPTH);
        let (spare_tx, spare) = sync_channel::<Vec<u8>>(OUTPUT_DEPTH + 1);
        let thread = std::thread::spawn(move || {
            for mut chunk in rx {
                f.write_all(&chunk)?;
                chunk.clear();
                let _ = spare_tx.try_send(chunk);
            }
            Ok(f)
        });
        ThreadedOutput {
            tx: Some(tx),
            spare,
            buf: Vec::with_capacity(OUTPUT_CHUNK),
            thread: Some(thread),
        }
    }

    /// The writer thread's error, after it stopped.
    fn thread_error(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("output thread stopped"),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(OUTPUT_CHUNK));
        let chunk = std::mem::replace(&mut self.buf, next);
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(self.thread_error()),
        }
    }

    /// Writes what is left and returns the writer.
    fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("output thread panicked")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ThreadedOutput<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= OUTPUT_CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Data is handed to the thread in chunks; `finish` writes the rest.
        Ok(())
    }
}

/// `subvol sign`.
///
/// The key and the input are opened first; `-o FILE` is written beside FILE and takes its name
/// only once signed completely, so a failure leaves FILE as it was.
///
/// # Errors
/// Key, input, stream or output errors.
pub fn sign(a: &args::SignArgs) -> Result<(), Error> {
    let key = SecretKey::load(&a.key)?;
    let (inp, size) = open_input(a.file.as_deref())?;
    match &a.output {
        Some(p) => {
            refuse_output_is_input(a.file.as_deref(), p)?;
            let out = AtomicFile::create(p, OUTPUT_MODE)?;
            let out = sign_into(inp, size, out, key).map_err(|e| super::name_output(e, p))?;
            out.commit()?;
            Ok(())
        }
        None => {
            // A File on a duplicate of fd 1: no line buffering (stdout's LineWriter scans
            // every write for newlines).
            let out = File::from(
                io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(Error::output)?,
            );
            super::enlarge_pipe(&out);
            sign_into(inp, size, out, key).map(drop)
        }
    }
}

/// Signs the stream read from `inp` into `out`, returning `out` when all of it is written.
fn sign_into<W: Write + Send + 'static>(
    inp: Box<dyn io::Read + Send>,
    size: Option<u64>,
    out: W,
    key: SecretKey,
) -> Result<W, Error> {
    let mut reader = Reader::new(ThreadedInput::spawn(inp, None));
    let signer = Signer::new(ThreadedOutput::spawn(out), key)?;
    let mut progress = Progress::new("sign", size, false);
    let mut tick = |t: &Totals| progress.totals(t);
    let result = sign_stream(&mut reader, signer, &mut Hook::none().progress(&mut tick));
    progress.finish();
    let (_, w) = result?;
    w.finish().map_err(Error::output)
}

/// `subvol keygen`.
///
/// # Errors
/// Any key generation failure.
pub fn keygen(a: &args::KeygenArgs) -> Result<(), Error> {
    let (key, pub_path) = make_key(&a.output)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "secret key: {}\npublic key: {}\nkey id:     {}",
        a.output.display(),
        pub_path.display(),
        key.public().id()
    )
    .map_err(Error::output)
}
