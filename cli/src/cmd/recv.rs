//! `subvol recv` and `subvol-recv`.

use super::{Progress, ThreadedInput, dump, open_input, trace};
use crate::args;
use std::cell::RefCell;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use subvol::Error;
use subvol::content::pool as content_pool;
use subvol::recv::{self, Event};
use subvol::stream::{Reader, ThreadedSource};
use subvol::util::escape;

/// Bytes for a person: exact, and in binary units.
fn bytes_human(bytes: u64) -> String {
    format!("{bytes} bytes ({})", subvol::util::size::human_size(bytes))
}

/// Whose output conventions a receive follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `subvol recv`: subvol's own messages.
    Subvol,
    /// `subvol-recv`: `btrfs receive`'s lines (`-v`/`-vv` traces, `ERROR: ` lines, see
    /// [`super::report_as_btrfs`]).
    Btrfs,
}

/// `subvol recv` / `subvol-recv`.
///
/// # Errors
/// Any receive failure (the partial subvolume is removed first).
pub fn recv(a: &args::RecvArgs, style: Style) -> Result<(), Error> {
    if a.dump {
        // Like `btrfs receive --dump`: the first stream only (up to its END).
        return dump(&a.input, false, a.dump_format, false, a.progress);
    }
    let dest = a
        .dest
        .clone()
        .ok_or_else(|| Error::Invalid("DEST is required".into()))?;
    if a.list_incomplete {
        return list_incomplete(&dest, a.json);
    }
    if a.drop_incomplete {
        for name in recv::drop_incomplete(&dest, None)? {
            eprintln!("removed the interrupted receive of {name}");
        }
        return Ok(());
    }
    if a.resume_offset {
        let incomplete = recv::list_incomplete(&dest)?;
        match incomplete.as_slice() {
            [] => println!("0"),
            [one] => println!("{}", one.offset),
            _ => {
                return Err(Error::Invalid(format!(
                    "{} interrupted receives in {}: see --list-incomplete",
                    incomplete.len(),
                    dest.display()
                )));
            }
        }
        return Ok(());
    }
    // A read-only or unwritable DEST fails before the stream is read, naming DEST.
    subvol::util::fs::check_writable_dir(&dest, "receive into")?;
    // SIGINT/SIGTERM set a flag checked between commands; the receiver then removes its staging
    // subvolume and returns `Interrupted` (exit 130).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| Error::io("install signal handler for", "SIGINT/SIGTERM", e))?;
    }
    let (input, size) = open_input(a.input.file.as_deref())?;
    let (input, resume, prefix) = find_resume(a, &dest, input, size)?;
    // A pipe is read on a thread of its own (a silent sender must not delay a signal); a regular
    // file never blocks for long, and reading it directly saves a copy.
    let input: Box<dyn std::io::Read + Send> = if size.is_some() {
        input
    } else {
        Box::new(ThreadedInput::spawn(input, Some(Arc::clone(&interrupted))))
    };
    let reader = match &resume {
        Some(inc) => inc.reader(input, prefix),
        None if a.checkpoint_every > 0 => Reader::new(input).with_prefix_digest(),
        None => Reader::new(input),
    };
    // Parsing, CRC checks and signature verification run on their own thread.
    let source = if a.verify_keys.is_empty() {
        ThreadedSource::spawn(reader)
    } else {
        // Nothing of a segment reaches the receiver before its signature verified, and END
        // (hence the commit) only after the block covering it verified.
        let keys = subvol::sign::KeySet::load(&a.verify_keys)?;
        let verifier = match resume
            .as_ref()
            .and_then(|r| r.resume_state().verifier.as_ref())
        {
            // The chain of signatures continues from the checkpoint's.
            Some(state) => subvol::sign::VerifyingSource::resume(reader, keys, state)?,
            None => subvol::sign::VerifyingSource::new(reader, keys),
        };
        ThreadedSource::spawn(verifier)
    };
    let into_pool = content_pool::is_pool(&dest);
    let opts = recv::Options {
        dest: dest.clone(),
        root_mount: a.root_mount.clone(),
        stop_at_end: a.stop_at_end,
        force_decompress: a.force_decompress,
        interrupted: Some(interrupted),
        clone_from_any: a.clone_from_any,
        dedup_from: a.dedup_from.clone(),
        // Into a pool: WRITE data the pool holds becomes verified clones of it.
        dedup_index: if into_pool {
            content_pool::pool_index(&dest).map_err(recv::RecvError::Seed)?
        } else {
            None
        },
        checkpoint_bytes: Some(a.checkpoint_every),
        checkpoint_max_share: (a.checkpoint_overhead < 100)
            .then(|| f64::from(a.checkpoint_overhead) / 100.0),
        resume,
    };
    // progs' verbosity: 1 by default, each -v one more, -q 0.
    let level = match (style, a.quiet) {
        (Style::Btrfs, false) => a.verbose.saturating_add(1),
        _ => 0,
    };
    let tracing = level >= trace::WRITES;
    // The traces run on this thread, between the receiver's commands.
    let mut source = trace::ProgsTrace::new(source, level);
    let pending = std::rc::Rc::clone(&source.pending);
    let progress = RefCell::new(Progress::new("recv", size, a.progress && !tracing));
    if tracing {
        // Trace lines and a bar redrawn between them do not mix.
        progress.borrow_mut().finish();
    }
    let tolerance = recv::Tolerance {
        max_errors: a.max_errors,
        keep_incomplete: a.keep_incomplete,
    };
    // Each command skipped under -E is reported as the error it is, where it happens.
    let mut on_skip = |e: &Error| {
        progress.borrow_mut().finish();
        super::print_error(style, e);
    };
    let quiet = a.quiet;
    let verbose = a.verbose;
    let received =
        recv::receive_tolerant(
            &mut source,
            &opts,
            tolerance,
            &mut on_skip,
            &mut |ev| match ev {
                Event::Checkpoint { offset, took } => {
                    if verbose > 0 && style == Style::Subvol {
                        progress.borrow_mut().finish();
                        eprintln!(
                            "checkpoint at byte {offset} ({:.1} ms)",
                            took.as_secs_f64() * 1000.0
                        );
                    }
                }
                Event::Resumed { name, offset } => {
                    if !quiet {
                        progress.borrow_mut().finish();
                        eprintln!(
                            "resuming the interrupted receive of {} at byte {offset}",
                            escape(name.as_bytes())
                        );
                    }
                }
                Event::Kept { name, offset } => {
                    progress.borrow_mut().finish();
                    eprintln!(
                        "kept the interrupted receive of {} for resume at byte {offset}: \
                         receive the same stream into {} again to continue (--drop-incomplete \
                         removes it)",
                        escape(name.as_bytes()),
                        dest.display()
                    );
                }
                Event::IncompleteDropped(name) => {
                    eprintln!(
                        "removed the interrupted receive of {}: this input starts it over",
                        escape(name.as_bytes())
                    );
                }
                Event::StaleRemoved(name) => {
                    eprintln!(
                        "removed stale staging subvolume {} left by an interrupted receive",
                        escape(name.as_bytes())
                    );
                }
                Event::Started { name, snapshot } => {
                    if !quiet {
                        progress.borrow_mut().finish();
                        // As btrfs-progs: `At snapshot` on stdout, `At subvol` on stderr.
                        if snapshot {
                            println!("At snapshot {}", escape(name.as_bytes()));
                        } else {
                            eprintln!("At subvol {}", escape(name.as_bytes()));
                        }
                    }
                    if let Some(line) = pending.borrow_mut().take() {
                        trace::print(&line);
                    }
                }
                Event::Progress { bytes, commands } => {
                    if !tracing {
                        progress.borrow_mut().update(bytes, commands);
                    }
                }
                Event::SeedsIndexed {
                    files,
                    bytes,
                    index_bytes,
                } => {
                    if verbose > 0 {
                        progress.borrow_mut().finish();
                        eprintln!(
                            "indexed {files} seed files ({}), index {}",
                            bytes_human(bytes),
                            bytes_human(index_bytes)
                        );
                    }
                }
                Event::Deduped(s) => {
                    if !quiet {
                        progress.borrow_mut().finish();
                        let mismatched = if s.mismatched > 0 {
                            format!(
                                " ({} clones differed from the stream and were rewritten)",
                                s.mismatched
                            )
                        } else {
                            String::new()
                        };
                        eprintln!(
                            "dedup: {} cloned from seeds, {} written{mismatched}",
                            bytes_human(s.cloned),
                            bytes_human(s.written)
                        );
                    }
                }
            },
        );
    progress.borrow_mut().finish();
    let received = received?;
    // Into a pool: what was received joins its content index.
    if into_pool {
        for r in &received {
            // The subvolume is committed whatever happens here; a pull indexes it later.
            if let Some(name) = r.name.to_str()
                && let Err(e) = content_pool::index_subvolume(&dest, name, &r.uuid, None)
            {
                eprintln!(
                    "subvol: warning: {} is received but not in the pool's content index: {}",
                    escape(r.path.as_os_str().as_bytes()),
                    subvol::util::error_chain(&e)
                );
            }
        }
    }
    // subvol-recv traced the received UUIDs as progs does.
    if a.verbose > 0 && style == Style::Subvol {
        for r in &received {
            eprintln!(
                "received {} (received UUID {}, stransid {})",
                escape(r.path.as_os_str().as_bytes()),
                r.uuid,
                r.ctransid
            );
        }
    }
    Ok(())
}

type Input = Box<dyn std::io::Read + Send>;

/// Finds the interrupted receive this input takes up again, if any: with --resume-from, the
/// one that restarts at that offset; otherwise one of the same stream (its first command
/// names the same subvolume), whose skipped bytes are then read and checked. Returns the
/// input positioned where the receive goes on, and the digest state of the bytes skipped.
fn find_resume(
    a: &args::RecvArgs,
    dest: &std::path::Path,
    input: Input,
    size: Option<u64>,
) -> Result<(Input, Option<recv::Incomplete>, Option<recv::Skipped>), Error> {
    let signed = !a.verify_keys.is_empty();
    if let Some(offset) = a.resume_from {
        if offset == 0 {
            return Ok((input, None, None));
        }
        let found: Vec<_> = recv::list_incomplete(dest)?
            .into_iter()
            .filter(|i| i.offset == offset)
            .collect();
        let [inc] = <[recv::Incomplete; 1]>::try_from(found).map_err(|f| {
            Error::Invalid(format!(
                "{} interrupted receives in {} restart at byte {offset} (see --list-incomplete)",
                f.len(),
                dest.display()
            ))
        })?;
        if inc.signed != signed {
            return Err(Error::Invalid(format!(
                "the interrupted receive of {} is of a {} stream: {}",
                inc.name,
                if inc.signed { "signed" } else { "unsigned" },
                if inc.signed {
                    "give --verify"
                } else {
                    "it cannot be taken up with --verify"
                }
            )));
        }
        return Ok((input, Some(inc), None));
    }
    if a.no_resume || a.checkpoint_every == 0 {
        return Ok((input, None, None));
    }
    let candidates: Vec<_> = recv::list_incomplete(dest)?
        .into_iter()
        .filter(|i| i.signed == signed)
        .collect();
    if candidates.is_empty() {
        return Ok((input, None, None));
    }
    let mut input = input;
    let (start, bytes) =
        recv::peek_start(&mut input).map_err(|e| Error::io("read", input_name(a), e))?;
    let mut rest: Input = Box::new(std::io::Cursor::new(bytes).chain(input));
    let Some(inc) = start.and_then(|s| candidates.into_iter().find(|c| c.matches(&s))) else {
        return Ok((rest, None, None));
    };
    match recv::skip_checked(&mut rest, &inc) {
        Ok(prefix) => Ok((rest, Some(inc), Some(prefix))),
        Err(e) => {
            eprintln!(
                "subvol: not resuming the interrupted receive of {}: {e}",
                inc.name
            );
            // Receiving this input removes it (same final name).
            if size.is_some() {
                Ok((open_input(a.input.file.as_deref())?.0, None, None))
            } else {
                recv::drop_incomplete(dest, Some(&inc.name))?;
                Err(Error::Invalid(format!(
                    "the piped input was read up to the checkpoint and is not the stream it was \
                     taken of; the interrupted receive of {} was removed: send the stream again",
                    inc.name
                )))
            }
        }
    }
}

fn input_name(a: &args::RecvArgs) -> std::path::PathBuf {
    a.input
        .file
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("-"))
}

/// `--list-incomplete`.
fn list_incomplete(dest: &std::path::Path, json: bool) -> Result<(), Error> {
    let list = recv::list_incomplete(dest)?;
    if json {
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| Error::Bug(format!("encoding JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    for i in &list {
        println!(
            "{}\tbyte {}\t{}\tuuid {}\tkept until {}\t{}",
            escape(i.name.as_bytes()),
            i.offset,
            if i.signed { "signed" } else { "unsigned" },
            i.uuid,
            i.expires,
            i.staging
        );
    }
    Ok(())
}
