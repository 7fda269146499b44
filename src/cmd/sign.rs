//! `subvol sign` and `subvol keygen`.

use super::{Progress, open_input};
use crate::sign::{SecretKey, Signer, keygen as make_key, sign_stream};
use crate::stream::Reader;
use crate::{Error, cli};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;

/// Output buffer of `subvol sign`.
const OUTPUT_BUF: usize = 1 << 20;

/// `subvol sign`.
///
/// # Errors
/// Key, input, stream or output errors.
pub fn sign(a: &cli::SignArgs) -> Result<(), Error> {
    let key = SecretKey::load(&a.key)?;
    let (inp, size) = open_input(a.file.as_deref())?;
    let mut reader = Reader::new(inp);
    let out: File = match &a.output {
        Some(p) => File::create(p).map_err(|e| Error::io("create", p, e))?,
        // A File on a duplicate of fd 1: no line buffering (stdout's LineWriter scans every
        // write for newlines).
        None => File::from(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(Error::output)?,
        ),
    };
    let signer = Signer::new(BufWriter::with_capacity(OUTPUT_BUF, out), key)?;
    let mut progress = Progress::new("sign", size, false);
    let result = sign_stream(&mut reader, signer, &mut |b, c| progress.update(b, c));
    progress.finish();
    let result = result.and_then(|(_, w)| {
        let f = w.into_inner().map_err(|e| Error::output(e.into_error()))?;
        if a.output.is_some() && f.metadata().is_ok_and(|m| m.is_file()) {
            f.sync_all().map_err(Error::output)?;
        }
        Ok(())
    });
    if result.is_err()
        && let Some(p) = &a.output
    {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// `subvol keygen`.
///
/// # Errors
/// Any key generation failure.
pub fn keygen(a: &cli::KeygenArgs) -> Result<(), Error> {
    let (key, pub_path) = make_key(&a.output)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "secret key: {}\npublic key: {}\nkey id:     {}",
        a.output.display(),
        pub_path.display(),
        key.public().id()
    )
    .map_err(Error::output)
}
