//! The btrfs send-stream wire format (protocol v1, v2, v3): commands, a streaming [`Reader`] and
//! [`Writer`], the raw CRC32C, and size caps. Reading then writing gives the input bytes exactly.

mod command;
mod frame;
pub mod proto;
mod reader;
mod threaded;
mod writer;

pub use command::{AttrError, Builder, Command, Op, Timespec, Uuid, end_command};
pub use frame::{command_header, stream_header};
pub use proto::{attr, cmd};
pub use reader::{Item, RESUME_OFFER_BYTES, Reader, ReaderState, StreamError, StreamErrorKind};
pub use threaded::ThreadedSource;
pub use writer::Writer;
