//! The subcommands as the binaries run them: open inputs and outputs, wire a source to a sink,
//! show progress, print results. This is the only module that prints.

mod progress;

pub use progress::Progress;

use crate::Error;
use crate::cli::{self, Command};
use crate::stream::Reader;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Input buffer: large reads keep syscalls rare on multi-GB streams.
const INPUT_BUF: usize = 1 << 20;

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
        _ => Ok((Box::new(BufReader::with_capacity(INPUT_BUF, io::stdin())), None)),
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
    }
}

/// `subvol dump`.
///
/// # Errors
/// Input, stream or output errors.
pub fn dump(input: &cli::InputArgs, json: bool, all: bool, force_progress: bool) -> Result<(), Error> {
    let (inp, size) = open_input(input.file.as_deref())?;
    let mut reader = Reader::new(inp);
    let out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut progress = Progress::new("dump", size, force_progress);
    let mut tick = |b, c| progress.update(b, c);
    if json {
        crate::dump::run(&mut reader, &mut crate::dump::JsonDump::new(out), all, &mut tick)
    } else {
        crate::dump::run(&mut reader, &mut crate::dump::TextDump::new(out), all, &mut tick)
    }
}

/// `subvol verify`.
///
/// # Errors
/// Input or stream errors.
pub fn verify(a: &cli::VerifyArgs) -> Result<(), Error> {
    let (inp, size) = open_input(a.input.file.as_deref())?;
    let mut reader = Reader::new(inp);
    let mut progress = Progress::new("verify", size, false);
    let result = crate::verify::verify(&mut reader, &mut |b, c| progress.update(b, c));
    progress.finish();
    let mut out = io::stdout().lock();
    match (&result, a.json) {
        (Ok(s), true) => {
            let v = serde_json::json!({"ok": true, "streams": s.streams, "commands": s.commands, "bytes": s.bytes, "max_version": s.max_version});
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Ok(s), false) => {
            writeln!(
                out,
                "OK: {} stream{}, {} commands, {} bytes (max version {})",
                s.streams,
                if s.streams == 1 { "" } else { "s" },
                s.commands,
                s.bytes,
                s.max_version
            )
            .map_err(Error::output)?;
        }
        (Err(Error::Stream(e)), true) => {
            let v = serde_json::json!({"ok": false, "offset": e.offset, "index": e.index, "command": e.cmd_name, "error": e.kind.to_string()});
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Err(_), _) => {}
    }
    result.map(|_| ())
}

/// `subvol recv` / `subvol-recv`.
///
/// # Errors
/// Any receive failure.
pub fn recv(a: &cli::RecvArgs) -> Result<(), Error> {
    if a.dump {
        return dump(&a.input, false, !a.stop_at_end, a.progress);
    }
    Err(Error::Invalid("receiving is not implemented yet".into()))
}

/// Prints an error the way both binaries do and returns the exit code.
#[must_use]
pub fn report(prog: &str, e: &Error) -> std::process::ExitCode {
    if e.is_broken_pipe() {
        return std::process::ExitCode::SUCCESS;
    }
    let _ = io::stdout().flush();
    eprintln!("{prog}: error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        // thiserror `#[error("{0}")]`-style variants already include their source text.
        let text = s.to_string();
        if !e.to_string().contains(&text) {
            eprintln!("  caused by: {text}");
        }
        src = s.source();
    }
    std::process::ExitCode::from(e.exit_code() as u8)
}
