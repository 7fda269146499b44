//! `subvol verify`: checks framing, versions, every CRC and every command's attributes without
//! applying anything.

use crate::Error;
use crate::stream::{Command, Item, Reader, StreamError, StreamErrorKind};
use std::io::Read;

/// What a verified input contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Stream headers (concatenated streams count one each).
    pub streams: u64,
    /// Commands, END included.
    pub commands: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Highest stream version seen.
    pub max_version: u32,
}

/// Reads the whole input and checks it. A stream must end with END; concatenated streams are
/// accepted; anything after the last END other than a new stream is an error.
///
/// # Errors
/// The first problem, with its byte offset and command index.
pub fn verify<R: Read>(
    reader: &mut Reader<R>,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Error> {
    let mut c = Command::empty();
    let mut s = Summary::default();
    loop {
        let at = reader.offset();
        match reader.next(&mut c)? {
            None => break,
            Some(Item::Header(v)) => s.max_version = s.max_version.max(v),
            Some(Item::Command) => {
                let index = reader.commands() - 1;
                // Known commands must carry what progs requires, with correct sizes.
                c.check_sizes().and_then(|()| c.op().map(|_| ())).map_err(|e| StreamError {
                    offset: at,
                    index: Some(index),
                    cmd_name: Some(c.name()),
                    kind: StreamErrorKind::Attr(e),
                })?;
                if index % 8192 == 0 {
                    on_progress(reader.offset(), reader.commands());
                }
            }
        }
    }
    s.streams = reader.streams();
    s.commands = reader.commands();
    s.bytes = reader.offset();
    Ok(s)
}
