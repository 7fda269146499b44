//! `subvol verify`: checks framing, versions, every CRC and every command's attributes without
//! applying anything; with keys, also every signature block (through
//! [`crate::sign::VerifyingSource`]).

use crate::Error;
use crate::pipeline::Source;
use crate::stream::{Command, Item, StreamError, StreamErrorKind};

/// What a verified input contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Stream headers (concatenated streams count one each).
    pub streams: u64,
    /// Commands, END included (signature blocks excluded when checking signatures).
    pub commands: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Highest stream version seen.
    pub max_version: u32,
}

/// Reads the whole input from `src` (a [`crate::stream::Reader`], or a verifying filter
/// around one) and checks it. A stream must end with END; concatenated streams are accepted;
/// anything after the last END other than a new stream is an error.
///
/// # Errors
/// The first problem, with its byte offset and command index.
pub fn verify<S: Source + ?Sized>(
    src: &mut S,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Error> {
    let mut c = Command::empty();
    let mut s = Summary::default();
    loop {
        let at = src.offset();
        match src.next_item(&mut c)? {
            None => break,
            Some(Item::Header(v)) => {
                s.streams += 1;
                s.max_version = s.max_version.max(v);
            }
            Some(Item::Command) => {
                let index = src.commands() - 1;
                // Known commands must carry what progs requires, with correct sizes.
                c.check_sizes()
                    .and_then(|()| c.op().map(|_| ()))
                    .map_err(|e| StreamError {
                        offset: at,
                        index: Some(index),
                        cmd_name: Some(c.name()),
                        kind: StreamErrorKind::Attr(e),
                    })?;
                if index.is_multiple_of(8192) {
                    on_progress(src.offset(), src.commands());
                }
            }
        }
    }
    s.commands = src.commands();
    s.bytes = src.offset();
    Ok(s)
}
