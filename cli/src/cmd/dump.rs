//! `subvol dump`.

use super::{Progress, open_input};
use crate::args;
use std::io::{self, BufWriter};
use subvol::Error;
use subvol::dump::{JsonDump, TextDump, TextFormat, run};
use subvol::pipeline::{Hook, Totals};
use subvol::stream::Reader;

/// `subvol dump`.
///
/// # Errors
/// Input, stream or output errors.
pub fn dump(
    input: &args::InputArgs,
    json: bool,
    format: args::DumpFormat,
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
        let format = match format {
            args::DumpFormat::Progs6_2 => TextFormat::Progs6_2,
            args::DumpFormat::Progs6_10 => TextFormat::Progs6_10,
        };
        run(
            &mut reader,
            TextDump::new(out).format(format),
            all,
            &mut hook,
        )?;
    }
    Ok(())
}
