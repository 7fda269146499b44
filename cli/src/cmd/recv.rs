//! `subvol recv` and `subvol-recv`.

use super::{Progress, ThreadedInput, dump, open_input, trace};
use crate::args;
use std::cell::RefCell;
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
    // A pipe is read on a thread of its own (a silent sender must not delay a signal); a regular
    // file never blocks for long, and reading it directly saves a copy.
    let input: Box<dyn std::io::Read + Send> = if size.is_some() {
        input
    } else {
        Box::new(ThreadedInput::spawn(input, Some(Arc::clone(&interrupted))))
    };
    let reader = Reader::new(input);
    // Parsing, CRC checks and signature verification run on their own thread.
    let source = if a.verify_keys.is_empty() {
        ThreadedSource::spawn(reader)
    } else {
        // Nothing of a segment reaches the receiver before its signature verified, and END
        // (hence the commit) only after the block covering it verified.
        let keys = subvol::sign::KeySet::load(&a.verify_keys)?;
        ThreadedSource::spawn(subvol::sign::VerifyingSource::new(reader, keys))
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
