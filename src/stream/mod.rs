//! The btrfs send-stream wire format (protocol v1, v2, v3): commands, a streaming [`Reader`] and
//! [`Writer`], the raw CRC32C, and size caps. Reading then writing gives the input bytes exactly.

mod command;
pub mod proto;
mod reader;
mod threaded;
mod writer;

pub use command::{AttrError, Builder, Command, Op, Timespec, Uuid, end_command};
pub use proto::{attr, cmd};
pub use reader::{Item, Reader, StreamError, StreamErrorKind};
pub use threaded::ThreadedSource;
pub use writer::{Writer, command_header, stream_header};

/// Copies every header and command from `reader` to `writer` unchanged (after checking them),
/// until the input ends. Returns the number of commands copied.
///
/// # Errors
/// A stream error on input, or an I/O error on output (wrapped as a stream error at the
/// position reached).
pub fn copy<R: std::io::Read, W: std::io::Write>(
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
) -> Result<u64, crate::Error> {
    let mut c = Command::empty();
    let mut n = 0;
    while let Some(item) = reader.next(&mut c)? {
        match item {
            Item::Header(v) => writer.write_header(v).map_err(crate::Error::output)?,
            Item::Command => {
                writer.write_command(&c).map_err(crate::Error::output)?;
                n += 1;
            }
        }
    }
    Ok(n)
}
