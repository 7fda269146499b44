//! `subvol verify`.

use super::{Progress, open_input};
use crate::args;
use std::io::{self, Write};
use subvol::Error;
use subvol::pipeline::{Hook, Totals};
use subvol::sign::{KeySet, VerifyReport, VerifyingSource, hex_id};
use subvol::stream::Reader;

/// `subvol verify`.
///
/// # Errors
/// Input, stream or signature errors.
pub fn verify(a: &args::VerifyArgs) -> Result<(), Error> {
    let keys = if a.keys.is_empty() {
        None
    } else {
        Some(KeySet::load(&a.keys)?)
    };
    let (inp, size) = open_input(a.input.file.as_deref())?;
    let reader = Reader::new(inp);
    let mut progress = Progress::new("verify", size, false);
    let mut tick = |t: &Totals| progress.totals(t);
    let mut hook = Hook::none().progress(&mut tick);
    let (result, signed) = match keys {
        None => {
            let mut reader = reader;
            (subvol::verify::verify(&mut reader, &mut hook), None)
        }
        Some(keys) => {
            let mut src = VerifyingSource::new(reader, keys);
            let r = subvol::verify::verify(&mut src, &mut hook);
            (r, Some(src.report()))
        }
    };
    progress.finish();
    let mut out = io::stdout().lock();
    match (&result, a.json) {
        (Ok(s), true) => {
            let mut v = serde_json::json!({"ok": true, "streams": s.streams, "commands": s.commands, "bytes": s.bytes, "max_version": s.max_version});
            if let Some(r) = signed {
                v["signed"] = signed_json(&r);
            }
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Ok(s), false) => {
            write!(
                out,
                "OK: {} stream{}, {} commands, {} bytes (max version {})",
                s.streams,
                if s.streams == 1 { "" } else { "s" },
                s.commands,
                s.bytes,
                s.max_version
            )
            .map_err(Error::output)?;
            if let Some(r) = signed {
                write!(
                    out,
                    ", signed by key {} in {} segment{}",
                    r.key_id.map(|k| k.to_string()).unwrap_or_default(),
                    r.segments,
                    if r.segments == 1 { "" } else { "s" }
                )
                .map_err(Error::output)?;
            }
            writeln!(out).map_err(Error::output)?;
        }
        (Err(Error::Stream(e)), true) => {
            let v = serde_json::json!({"ok": false, "offset": e.offset, "index": e.index, "command": e.cmd_name, "error": e.kind.to_string()});
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Err(Error::Sign(subvol::sign::SignError::Verify(f))), true) => {
            let v = serde_json::json!({
                "ok": false,
                "offset": f.offset,
                "index": f.index,
                "segment": f.segment,
                "key_id": f.key_id.map(|k| k.to_string()),
                "segment_commands": f.commands,
                "segment_paths": f.paths,
                "error": e_string(&result),
            });
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Err(e), true) => {
            let v = serde_json::json!({"ok": false, "error": e.to_string()});
            writeln!(out, "{v}").map_err(Error::output)?;
        }
        (Err(_), false) => {}
    }
    result.map(|_| ())
}

fn e_string<T>(r: &Result<T, Error>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

fn signed_json(r: &VerifyReport) -> serde_json::Value {
    serde_json::json!({
        "key_id": r.key_id.map(|k| k.to_string()),
        "stream_id": r.stream_id.map(|s| hex_id(&s)),
        "segments": r.segments,
    })
}
