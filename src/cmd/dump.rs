//! `subvol dump`.

use super::{Progress, open_input};
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
    let mut tick = |b, c| progress.update(b, c);
    if json {
        crate::dump::run(
            &mut reader,
            &mut crate::dump::JsonDump::new(out),
            all,
            &mut tick,
        )
    } else {
        crate::dump::run(
            &mut reader,
            &mut crate::dump::TextDump::new(out),
            all,
            &mut tick,
        )
    }
}
