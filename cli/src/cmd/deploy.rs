//! `subvol deploy`, `rollback`, `status`.

use super::mirror::{esc, esc_path, print_json, time};
use crate::args;
use std::io::{self, Write};
use subvol::Error;
use subvol::deploy::{self, DeployOptions, DeployReport, Deployment, Hooks};

fn hooks(a: &args::HookArgs) -> Hooks {
    Hooks {
        pre: a.pre.clone(),
        post: a.post.clone(),
    }
}

fn describe(d: &Deployment) -> String {
    format!(
        "{} ({}, {}, deployed {})",
        esc(&d.version),
        esc_path(&d.path),
        if d.writable { "writable" } else { "read-only" },
        time(d.deployed)
    )
}

fn print_report(verb: &str, r: &DeployReport, json: bool) -> Result<(), Error> {
    if json {
        return print_json(r);
    }
    let mut out = io::stdout().lock();
    let w = Error::output;
    writeln!(
        out,
        "{verb} {} at {}",
        describe(&r.current),
        esc_path(&r.target)
    )
    .map_err(w)?;
    if let Some(p) = &r.previous {
        writeln!(out, "previous: {}", describe(p)).map_err(w)?;
    }
    for id in &r.removed {
        writeln!(out, "removed old deployment {}", esc(id)).map_err(w)?;
    }
    Ok(())
}

/// `subvol deploy`.
///
/// # Errors
/// See [`deploy::deploy`].
pub fn deploy(a: &args::DeployArgs) -> Result<(), Error> {
    let opts = DeployOptions {
        writable: a.writable,
        hooks: hooks(&a.hooks),
    };
    let r = deploy::deploy(&a.pool, &a.version, &a.to, &opts)?;
    print_report("deployed", &r, a.json)
}

/// `subvol rollback`.
///
/// # Errors
/// See [`deploy::rollback`].
pub fn rollback(a: &args::RollbackArgs) -> Result<(), Error> {
    let r = deploy::rollback(&a.to, &hooks(&a.hooks))?;
    print_report("rolled back to", &r, a.json)
}

/// `subvol status`.
///
/// # Errors
/// See [`deploy::status`].
pub fn status(a: &args::StatusArgs) -> Result<(), Error> {
    let s = deploy::status(&a.to, a.pool.as_deref())?;
    if a.json {
        return print_json(&s);
    }
    let mut out = io::stdout().lock();
    let w = Error::output;
    writeln!(out, "target:   {}", esc_path(&s.target)).map_err(w)?;
    let line = |d: &Option<Deployment>| {
        d.as_ref().map_or_else(
            || "none".to_string(),
            |d| {
                let remote = d
                    .remote
                    .as_deref()
                    .map_or_else(String::new, |r| format!(" from {}", esc(r)));
                format!("{}{remote}", describe(d))
            },
        )
    };
    writeln!(out, "current:  {}", line(&s.current)).map_err(w)?;
    writeln!(out, "previous: {}", line(&s.previous)).map_err(w)?;
    if let Some(p) = &s.pool {
        writeln!(out, "pool:     {}", esc_path(p)).map_err(w)?;
    }
    for v in &s.pulled {
        let mark = if v.deployed {
            "  (deployed)"
        } else if v.previous {
            "  (previous)"
        } else {
            ""
        };
        let when = if v.pulled == 0 {
            "-".to_string()
        } else {
            time(v.pulled)
        };
        writeln!(out, "  {:<20} pulled {when}{mark}", esc(&v.name)).map_err(w)?;
    }
    if let Some(p) = &s.pending {
        writeln!(out, "pending:  {} (pulled, not deployed)", esc(p)).map_err(w)?;
    }
    Ok(())
}
