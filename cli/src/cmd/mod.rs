//! The subcommands as the binaries run them: open inputs and outputs, wire a source to a sink,
//! show progress, print results. This is the only module that prints.

mod deploy;
mod dump;
mod input;
mod mirror;
mod progress;
mod recv;
mod remote;
mod send;
mod sign;
mod trace;
mod trust;
mod verify;

pub use deploy::{deploy, rollback, status};
pub use dump::dump;
pub use input::ThreadedInput;
pub use mirror::{delete, list, pool, publish, pull, push, show, snapshot};
pub use recv::{Style, recv};
pub use remote::remote;
pub use send::send;
pub use sign::{keygen, sign};
pub use trust::trust;
pub use verify::verify;

pub use progress::Progress;

use crate::args::Command;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use subvol::Error;
use subvol::util::escape;
use subvol::util::fs::{is_same_file, open_to_read};

/// Mode of a new output file (`send -f`, `sign -o`), as `btrfs send -f` creates its file: a
/// stream holds every file of its subvolume, whatever their own modes.
pub const OUTPUT_MODE: u32 = 0o600;

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
/// The file cannot be opened, or is a directory.
pub fn open_input(file: Option<&Path>) -> Result<(Box<dyn Read + Send>, Option<u64>), Error> {
    match file {
        Some(p) if p != Path::new("-") => {
            let (f, meta) = open_to_read(p)?;
            let size = meta.is_file().then_some(meta.len());
            Ok((Box::new(BufReader::with_capacity(INPUT_BUF, f)), size))
        }
        _ => Ok((
            Box::new(BufReader::with_capacity(INPUT_BUF, io::stdin())),
            None,
        )),
    }
}

/// Refuses an output that is the input file (`-f X -o X`, or `-o X < X`): the output would
/// replace the input while it is read.
///
/// # Errors
/// [`Error::Invalid`] naming the file.
pub fn refuse_output_is_input(input: Option<&Path>, output: &Path) -> Result<(), Error> {
    let meta = match input {
        Some(p) if p != Path::new("-") => std::fs::metadata(p).ok(),
        _ => io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok()),
    };
    // Pipes and terminals cannot be named by a path that is also an output file.
    if meta.is_some_and(|m| m.is_file() && is_same_file(&m, output)) {
        return Err(Error::Invalid(format!(
            "{} is also the input; write the output to another file",
            output.display()
        )));
    }
    Ok(())
}

/// A failure to write the output, named by the output file (a closed pipe stays what it is: a
/// reader that stopped early is no failure).
#[must_use]
pub fn name_output(e: Error, file: &Path) -> Error {
    match e {
        Error::Output(source) if source.kind() != io::ErrorKind::BrokenPipe => {
            Error::io("write", file, source)
        }
        e => e,
    }
}

/// Runs one `subvol` subcommand.
///
/// # Errors
/// Whatever the subcommand fails with.
pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Dump(a) => dump(&a.input, a.json, a.format, a.all, false),
        Command::Verify(a) => verify(&a),
        Command::Recv(a) => recv(&a, Style::Subvol),
        Command::Send(a) => send(&a),
        Command::Sign(a) => sign(&a),
        Command::Keygen(a) => keygen(&a),
        Command::Trust(a) => trust(&a),
        Command::Digest(a) => digest(&a),
        Command::Publish(a) => publish(&a),
        Command::Pull(a) => pull(&a),
        Command::Push(a) => push(&a),
        Command::Remote(a) => remote(&a),
        Command::Pool(a) => pool(&a),
        Command::List(a) => list(&a),
        Command::Show(a) => show(&a),
        Command::Snapshot(a) => snapshot(&a),
        Command::Delete(a) => delete(&a),
        Command::Deploy(a) => deploy(&a),
        Command::Rollback(a) => rollback(&a),
        Command::Status(a) => status(&a),
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
///
/// One line: `PROG: error: MESSAGE: CAUSE: ...`, each cause once (a cause whose text already
/// ends the line is not repeated), control characters escaped so that no name in a message
/// can move the cursor or start a line of its own.
#[must_use]
pub fn report(prog: &str, e: &Error) -> std::process::ExitCode {
    if e.is_broken_pipe() {
        return std::process::ExitCode::SUCCESS;
    }
    let _ = io::stdout().flush();
    eprintln!("{prog}: error: {}", escape_controls(&message(e)));
    std::process::ExitCode::from(e.exit_code() as u8)
}

/// Prints an error as `btrfs receive` does (`ERROR: MESSAGE` on stderr, the line scripts
/// match with `^ERROR: `), with the same message and causes as [`report`], and returns the
/// exit code (subvol's, documented; progs exits 1 for every failure).
#[must_use]
pub fn report_as_btrfs(e: &Error) -> std::process::ExitCode {
    if e.is_broken_pipe() {
        return std::process::ExitCode::SUCCESS;
    }
    let _ = io::stdout().flush();
    eprintln!("ERROR: {}", escape_controls(&message(e)));
    std::process::ExitCode::from(e.exit_code() as u8)
}

/// Prints an error that does not end the command (a command skipped under -E) as the
/// binary prints its final error.
pub(crate) fn print_error(style: Style, e: &Error) {
    let _ = io::stdout().flush();
    let line = escape_controls(&message(e));
    match style {
        Style::Btrfs => eprintln!("ERROR: {line}"),
        Style::Subvol => eprintln!("subvol: error: {line}"),
    }
}

/// An error's message and its causes on one line, each cause once (a cause whose text already
/// ends the line is not repeated).
fn message(e: &Error) -> String {
    let mut line = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        src = s.source();
    }
    line
}

/// `text` with its control characters escaped as [`escape`] does, everything else as it is
/// (names in messages are escaped already; their backslashes must not double).
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            out.push_str(&escape(c.encode_utf8(&mut buf).as_bytes()));
        } else {
            out.push(c);
        }
    }
    out
}
