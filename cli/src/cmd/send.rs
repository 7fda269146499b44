//! `subvol send`: from a btrfs subvolume through the kernel, or from a plain directory tree.

use super::{OUTPUT_MODE, Progress};
use crate::args;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use subvol::Error;
use subvol::pipeline::{CommandSink, Hook, Totals};
use subvol::send::kernel::{KernelSendOptions, is_subvolume, send_kernel, send_kernel_into};
use subvol::send::{TreeSendOptions, send_tree};
use subvol::stream::Writer;
use subvol::util::fs::AtomicFile;

/// Output buffer: stream commands are small, data chunks up to 128 KiB.
const OUTPUT_BUF: usize = 1 << 20;

/// `subvol send`.
///
/// # Errors
/// Invalid option combinations, source read errors, kernel send errors, output errors.
pub fn send(a: &args::SendArgs) -> Result<(), Error> {
    // Load the key before any work, so a bad key fails fast.
    let key = a
        .sign
        .as_deref()
        .map(subvol::sign::SecretKey::load)
        .transpose()?;
    let tree = a.from_tree || !a.sources.iter().all(|s| is_subvolume(s));
    if tree {
        if a.sources.len() > 1 {
            return Err(Error::Invalid(
                "several SOURCEs need btrfs subvolumes (kernel send); send directory trees one at a time".into(),
            ));
        }
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
    // Check every input before the output is touched.
    for p in a
        .sources
        .iter()
        .chain(a.parent.as_ref())
        .chain(&a.clone_sources)
    {
        std::fs::metadata(p).map_err(|e| Error::io("open", p, e))?;
    }
    let mut progress = Progress::new("send", None, false);
    let r = match &a.file {
        Some(p) if p.as_os_str() != "-" => {
            // Written beside FILE; FILE is replaced only by a complete stream.
            let mut out = AtomicFile::create(p, OUTPUT_MODE)?;
            match produce_into(a, tree, key, &mut out, &mut progress) {
                Ok(()) => out.commit().map_err(Error::from),
                Err(e) => Err(super::name_output(e, p)),
            }
        }
        _ => {
            if io::stdout().is_terminal() {
                return Err(Error::Invalid(
                    "not writing a send stream to a terminal: redirect it or use -f FILE".into(),
                ));
            }
            super::enlarge_pipe(io::stdout());
            produce_into(a, tree, key, &mut io::stdout().lock(), &mut progress)
        }
    };
    progress.finish();
    match r {
        Err(e) if e.is_broken_pipe() => Ok(()),
        r => r,
    }
}

/// Runs the source into `out`, signed when there is a key.
fn produce_into(
    a: &args::SendArgs,
    tree: bool,
    key: Option<subvol::sign::SecretKey>,
    out: &mut dyn Write,
    progress: &mut Progress,
) -> Result<(), Error> {
    match key {
        None => produce(
            a,
            tree,
            Writer::new(BufWriter::with_capacity(OUTPUT_BUF, out)),
            progress,
        ),
        // The signer is the sink the source emits into: it adds a block after each segment.
        Some(key) => produce(
            a,
            tree,
            subvol::sign::Signer::new(BufWriter::with_capacity(OUTPUT_BUF, out), key)?,
            progress,
        ),
    }
}

/// Runs the kernel or tree source into `sink` (a plain [`Writer`] or a signer), and finishes
/// it.
fn produce<K: CommandSink + KernelOutput>(
    a: &args::SendArgs,
    tree: bool,
    mut sink: K,
    progress: &mut Progress,
) -> Result<(), Error> {
    let mut tick = |t: &Totals| progress.totals(t);
    let mut hook = Hook::none().progress(&mut tick);
    if tree {
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
            mtime_only: false,
        };
        send_tree(
            &a.sources[0],
            a.parent.as_deref(),
            &opts,
            &mut sink,
            &mut hook,
        )?;
    } else {
        let opts = KernelSendOptions {
            parent: a.parent.clone(),
            clone_sources: a.clone_sources.clone(),
            proto: a.proto,
            compressed: a.compressed_data,
            no_data: a.no_data,
            one_stream: a.one_stream,
        };
        sink.kernel_send(&a.sources, &opts, &mut hook)?;
    }
    Ok(())
}

/// How a kernel send reaches a sink: plain output gets the kernel's bytes as they are; any
/// other sink gets them parsed into commands.
trait KernelOutput {
    fn kernel_send(
        &mut self,
        sources: &[PathBuf],
        opts: &KernelSendOptions,
        hook: &mut Hook<'_>,
    ) -> Result<(), Error>;
}

impl<W: Write> KernelOutput for Writer<W> {
    fn kernel_send(
        &mut self,
        sources: &[PathBuf],
        opts: &KernelSendOptions,
        hook: &mut Hook<'_>,
    ) -> Result<(), Error> {
        let mut tick = |b| {
            hook.tick(
                &Totals {
                    bytes: b,
                    ..Totals::default()
                },
                false,
            );
        };
        send_kernel(sources, opts, self.get_mut(), Some(&mut tick))?;
        Ok(())
    }
}

impl<W: Write> KernelOutput for subvol::sign::Signer<W> {
    fn kernel_send(
        &mut self,
        sources: &[PathBuf],
        opts: &KernelSendOptions,
        hook: &mut Hook<'_>,
    ) -> Result<(), Error> {
        send_kernel_into(sources, opts, self, hook)?;
        Ok(())
    }
}
