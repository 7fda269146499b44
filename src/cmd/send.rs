//! `subvol send`: from a btrfs subvolume through the kernel, or from a plain directory tree.

use super::Progress;
use crate::send::kernel::{KernelSendOptions, is_subvolume, send_kernel};
use crate::send::{TreeSendOptions, send_tree};
use crate::{Error, cli};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};

/// Output buffer: stream commands are small, data chunks up to 128 KiB.
const OUTPUT_BUF: usize = 1 << 20;

/// `subvol send`.
///
/// # Errors
/// Invalid option combinations, source read errors, kernel send errors, output errors.
pub fn send(a: &cli::SendArgs) -> Result<(), Error> {
    // Load the key before any work, so a bad key fails fast.
    let key = a
        .sign
        .as_deref()
        .map(crate::sign::SecretKey::load)
        .transpose()?;
    let tree = a.from_tree || !is_subvolume(&a.source);
    if tree {
        if !a.clone_sources.is_empty() {
            return Err(Error::Invalid("-c needs a btrfs subvolume SOURCE (kernel send); tree sends clone from the parent and the tree itself".into()));
        }
        if a.compressed_data {
            return Err(Error::Invalid(
                "--compressed-data needs a btrfs subvolume SOURCE (kernel send)".into(),
            ));
        }
    } else if a.uuid.is_some() || a.parent_uuid.is_some() {
        return Err(Error::Invalid(
            "--uuid and --parent-uuid apply to directory trees (add --from-tree)".into(),
        ));
    }
    let mut out: Box<dyn Write> = match &a.file {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(File::create(p).map_err(|e| Error::io("create", p, e))?)
        }
        _ => {
            if io::stdout().is_terminal() {
                return Err(Error::Invalid(
                    "not writing a send stream to a terminal: redirect it or use -f FILE".into(),
                ));
            }
            super::enlarge_pipe(io::stdout());
            Box::new(io::stdout().lock())
        }
    };
    let mut progress = Progress::new("send", None, false);
    let r = match key {
        None => produce(
            a,
            tree,
            BufWriter::with_capacity(OUTPUT_BUF, &mut out),
            &mut progress,
        ),
        Some(key) => {
            // The source writes into a pipe on its own thread; the signer reads it back as
            // commands and adds a block after each segment. Memory stays bounded by the pipe
            // and the signer's segment.
            let (pipe_r, pipe_w) = io::pipe().map_err(|e| Error::io("create", "pipe", e))?;
            let signer =
                crate::sign::Signer::new(BufWriter::with_capacity(OUTPUT_BUF, &mut out), key)?;
            std::thread::scope(|scope| {
                let producer = scope.spawn(|| {
                    let mut quiet = Progress::new("send", None, false);
                    produce(
                        a,
                        tree,
                        BufWriter::with_capacity(OUTPUT_BUF, pipe_w),
                        &mut quiet,
                    )
                });
                let mut reader =
                    crate::stream::Reader::new(io::BufReader::with_capacity(OUTPUT_BUF, pipe_r));
                let signed = crate::sign::sign_stream(&mut reader, signer, &mut |b, c| {
                    progress.update(b, c)
                });
                drop(reader); // unblocks the producer if signing failed early
                let produced = producer
                    .join()
                    .unwrap_or_else(|_| Err(Error::Invalid("send thread panicked".into())));
                // A source error explains a truncated stream better than the signer's view of it.
                produced?;
                let (_, mut w) = signed?;
                w.flush().map_err(Error::output)
            })
        }
    };
    progress.finish();
    match r {
        Err(e) if e.is_broken_pipe() => Ok(()),
        r => r,
    }
}

/// Runs the kernel or tree source into `w`.
fn produce<W: Write>(
    a: &cli::SendArgs,
    tree: bool,
    mut w: W,
    progress: &mut Progress,
) -> Result<(), Error> {
    let r = if tree {
        let version = match a.proto {
            None => 1,
            Some(0) => 2,
            Some(v) => v,
        };
        let opts = TreeSendOptions {
            version,
            no_data: a.no_data,
            uuid: a.uuid,
            parent_uuid: a.parent_uuid,
            name: None,
        };
        let mut tick = |b, c| progress.update(b, c);
        send_tree(
            &a.source,
            a.parent.as_deref(),
            &opts,
            &mut w,
            Some(&mut tick),
        )
        .map(|_| ())
    } else {
        let opts = KernelSendOptions {
            parent: a.parent.clone(),
            clone_sources: a.clone_sources.clone(),
            proto: a.proto,
            compressed: a.compressed_data,
            no_data: a.no_data,
        };
        let mut tick = |b| progress.update(b, 0);
        send_kernel(&a.source, &opts, &mut w, Some(&mut tick)).map(|_| ())
    };
    r.map_err(Error::from)?;
    w.flush().map_err(Error::output)
}
