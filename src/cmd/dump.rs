//! `subvol dump`.

use super::{Progress, open_input};
use crate::dump::{JsonDump, TextDump, run};
use crate::pipeline::{Hook, Totals};
use crate::stream::Reader;
use crate::{Error, cli};
use std::io::{self, BufWriter};

/// `subvol dump`.
///
/// # Errors
/// Input, stream or output errors.
pub fn dump(
    input: &cli::InputArgs,
    json: bool,
    all: bool,
    force_progress: bool,
) -> Result<(), Error> {
    let (inp, size) = open_input(input.file.as_deref())?;
    let mut reader = Reader::new(inp);
    super::enlarge_pipe(io::stdout());
    let out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut progress = Progress::new("dump", size, force_progress);
    let mut tick = |t: &Totals| progress.totals(t);
    let mut hook = Hook::none().progress(&mut tick);
    if json {
        run(&mut reader, JsonDump::new(out), all, &mut hook)?;
    } else {
        run(&mut reader, TextDump::new(out), all, &mut hook)?;
    }
    Ok(())
}
