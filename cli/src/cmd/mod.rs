//! The subcommands as the binaries run them: open inputs and outputs, wire a source to a sink,
//! show progress, print results. This is the only module that prints.

mod dump;
mod input;
mod mirror;
mod progress;
mod recv;
mod send;
mod sign;
mod verify;

pub use dump::dump;
pub use input::ThreadedInput;
pub use mirror::{delete, list, pool, publish, pull, show, snapshot};
pub use recv::recv;
pub use send::send;
pub use sign::{keygen, sign};
pub use verify::verify;

pub use progress::Progress;

use crate::args::Command;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use subvol::Error;

/// Input buffer: large reads keep syscalls rare on multi-GB streams.
const INPUT_BUF: usize = 1 << 20;

pub use subvol::util::pipe::enlarge_pipe;

/// A flag that SIGINT and SIGTERM set: long operations check it, clean up and return
/// `Interrupted` (exit 130).
///
/// # Errors
/// The handlers cannot be installed.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>, Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .map_err(|e| Error::io("install signal handler for", "SIGINT/SIGTERM", e))?;
    }
    Ok(flag)
}

/// Opens `-f FILE` or stdin; returns the reader and the input size when it is a regular file.
///
/// # Errors
/// The file cannot be opened.
pub fn open_input(file: Option<&Path>) -> Result<(Box<dyn Read + Send>, Option<u64>), Error> {
    match file {
        Some(p) if p != Path::new("-") => {
            let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
            let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            Ok((Box::new(BufReader::with_capacity(INPUT_BUF, f)), size))
        }
        _ => Ok((
            Box::new(BufReader::with_capacity(INPUT_BUF, io::stdin())),
            None,
        )),
    }
}

/// Runs one `subvol` subcommand.
///
/// # Errors
/// Whatever the subcommand fails with.
pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Dump(a) => dump(&a.input, a.json, a.all, false),
        Command::Verify(a) => verify(&a),
        Command::Recv(a) => recv(&a),
        Command::Send(a) => send(&a),
        Command::Sign(a) => sign(&a),
        Command::Keygen(a) => keygen(&a),
        Command::Digest(a) => digest(&a),
        Command::Publish(a) => publish(&a),
        Command::Pull(a) => pull(&a),
        Command::Pool(a) => pool(&a),
        Command::List(a) => list(&a),
        Command::Show(a) => show(&a),
        Command::Snapshot(a) => snapshot(&a),
        Command::Delete(a) => delete(&a),
    }
}

/// `subvol digest`.
///
/// # Errors
/// The tree cannot be read, or output fails.
pub fn digest(a: &crate::args::DigestArgs) -> Result<(), Error> {
    let opts = subvol::digest::DigestOptions {
        mtime: !a.no_mtime,
        ..Default::default()
    };
    let d = subvol::digest::digest_tree(&a.dir, &opts)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.lines {
        for l in &d.lines {
            writeln!(out, "{l}").map_err(Error::output)?;
        }
    } else {
        writeln!(out, "{}  {}", d.hex(), a.dir.display()).map_err(Error::output)?;
    }
    out.flush().map_err(Error::output)
}

/// Prints an error the way both binaries do and returns the exit code.
#[must_use]
pub fn report(prog: &str, e: &Error) -> std::process::ExitCode {
    if e.is_broken_pipe() {
        return std::process::ExitCode::SUCCESS;
    }
    let _ = io::stdout().flush();
    eprintln!("{prog}: error: {e}");
    // Each message names its own operation only; the causes follow, each once.
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    std::process::ExitCode::from(e.exit_code() as u8)
}
