//! `subvol verify`.

use super::{Progress, open_input};
use crate::stream::Reader;
use crate::{Error, cli};
use std::io::{self, Write};

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

