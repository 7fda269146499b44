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
    if a.sign.is_some() {
        // TODO(signing): wrap the output in `crate::sign`'s signer once it offers a Write
        // filter; until then refuse rather than emit an unsigned stream the user asked to sign.
        return Err(Error::Invalid("--sign: signing is not available in `subvol send` yet; pipe the stream through `subvol sign --key SECRET`".into()));
    }
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
            Box::new(io::stdout().lock())
        }
    };
    let mut progress = Progress::new("send", None, false);
    let w = BufWriter::with_capacity(OUTPUT_BUF, &mut out);
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
        send_tree(&a.source, a.parent.as_deref(), &opts, w, Some(&mut tick)).map(|_| ())
    } else {
        let opts = KernelSendOptions {
            parent: a.parent.clone(),
            clone_sources: a.clone_sources.clone(),
            proto: a.proto,
            compressed: a.compressed_data,
            no_data: a.no_data,
        };
        let mut tick = |b| progress.update(b, 0);
        send_kernel(&a.source, &opts, w, Some(&mut tick)).map(|_| ())
    };
    progress.finish();
    match r {
        Err(e) if e.is_broken_pipe() => Ok(()),
        r => r.map_err(Error::from),
    }
}
