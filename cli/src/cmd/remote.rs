//! `subvol remote add|list|show|remove`.

use super::mirror::{esc, esc_path, print_json};
use crate::args::{self, RemoteCommand};
use std::io::{self, Write};
use subvol::Error;
use subvol::mirror::remotes::{self, AddRemote, RemoteConfig};

/// `subvol remote ...`.
///
/// # Errors
/// Invalid names, URLs or key files, a remote that exists (add) or does not (show, remove), I/O.
pub fn remote(a: &args::RemoteArgs) -> Result<(), Error> {
    let dir = &a.config_dir;
    match &a.command {
        RemoteCommand::Add(add) => {
            let r = remotes::add(
                dir,
                &AddRemote {
                    name: add.name.clone(),
                    urls: add.urls.clone(),
                    keys: add.verify.clone(),
                    root: add.root.clone(),
                    force: add.force,
                },
            )?;
            if add.json {
                return print_json(&r);
            }
            writeln!(
                io::stdout(),
                "added remote {} ({} mirror(s), {} key(s){}) in {}",
                esc(&r.name),
                r.urls.len(),
                r.keys.len(),
                if r.root.is_some() { ", root" } else { "" },
                esc_path(&r.file)
            )
            .map_err(Error::output)
        }
        RemoteCommand::List(l) => {
            let all = remotes::list(dir)?;
            if l.json {
                return print_json(&all);
            }
            let mut out = io::stdout().lock();
            for r in &all {
                writeln!(out, "{}\t{}", esc(&r.name), esc(&r.urls.join(" ")))
                    .map_err(Error::output)?;
            }
            Ok(())
        }
        RemoteCommand::Show(s) => {
            let r = remotes::show(dir, &s.name)?;
            if s.json {
                return print_json(&r);
            }
            show_text(&r)
        }
        RemoteCommand::Remove(rm) => {
            let r = remotes::remove(dir, &rm.name)?;
            writeln!(
                io::stdout(),
                "removed remote {} ({})",
                esc(&r.name),
                esc_path(&r.file)
            )
            .map_err(Error::output)
        }
    }
}

fn show_text(r: &RemoteConfig) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    let w = Error::output;
    writeln!(out, "remote {}  ({})", esc(&r.name), esc_path(&r.file)).map_err(w)?;
    for (i, u) in r.urls.iter().enumerate() {
        writeln!(out, "  mirror {}: {}", i + 1, esc(u)).map_err(w)?;
    }
    for k in &r.keys {
        writeln!(out, "  key:      {}", esc_path(k)).map_err(w)?;
    }
    if let Some(root) = &r.root {
        writeln!(out, "  root:     {}", esc_path(root)).map_err(w)?;
    }
    Ok(())
}
