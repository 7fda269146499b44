//! `subvol verify`: checks framing, versions, every CRC and every command's attributes without
//! applying anything; with keys, also every signature block (through
//! [`crate::sign::VerifyingSource`]).

use crate::Error;
use crate::pipeline::{CommandSink, Hook, Position, Source, Totals, pump};
use crate::stream::{Command, StreamError, StreamErrorKind};
use std::ops::ControlFlow;

/// What a verified input contained: streams, commands (END included, signature blocks
/// excluded when checking signatures), bytes read, highest version.
pub type Summary = Totals;

/// The sink of `subvol verify`: checks that every known command carries what progs requires,
/// with correct sizes. Framing, versions and CRCs are checked by the reader before.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checker;

impl CommandSink for Checker {
    fn header(&mut self, _: u32, _: Position) -> Result<(), Error> {
        Ok(())
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        c.check_sizes()
            .and_then(|()| c.op().map(|_| ()))
            .map_err(|e| StreamError {
                offset: at.offset,
                index: Some(at.index),
                cmd_name: Some(c.name()),
                kind: StreamErrorKind::Attr(e),
            })?;
        Ok(ControlFlow::Continue(()))
    }

    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Reads the whole input from `src` (a [`crate::stream::Reader`], or a verifying filter
/// around one) and checks it with a [`Checker`]. A stream must end with END; concatenated
/// streams are accepted; anything after the last END other than a new stream is an error.
///
/// # Errors
/// The first problem, with its byte offset and command index.
pub fn verify<S: Source + ?Sized>(src: &mut S, hook: &mut Hook<'_>) -> Result<Summary, Error> {
    pump(src, &mut Checker, hook)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Builder, Reader, Writer, attr, cmd, end_command};

    fn stream(cmds: &[Command]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.write_header(1).unwrap();
        for c in cmds {
            w.write_command(c).unwrap();
        }
        w.write_command(&end_command(1)).unwrap();
        w.into_inner()
    }

    #[test]
    fn checker_accepts_complete_commands() {
        let mkdir = Builder::new(cmd::MKDIR, 1)
            .bytes(attr::PATH, b"d")
            .u64(attr::INO, 257)
            .build()
            .unwrap();
        let bytes = stream(&[mkdir]);
        let s = verify(&mut Reader::new(&bytes[..]), &mut Hook::none()).unwrap();
        assert_eq!((s.streams, s.commands, s.bytes), (1, 2, bytes.len() as u64));
    }

    #[test]
    fn checker_names_the_command_missing_an_attribute() {
        let ok = Builder::new(cmd::UNLINK, 1)
            .bytes(attr::PATH, b"x")
            .build()
            .unwrap();
        let no_ino = Builder::new(cmd::MKDIR, 1)
            .bytes(attr::PATH, b"d")
            .build()
            .unwrap();
        let bytes = stream(&[ok.clone(), no_ino]);
        let e = verify(&mut Reader::new(&bytes[..]), &mut Hook::none()).unwrap_err();
        let Error::Stream(e) = e else { panic!("{e}") };
        assert_eq!(e.index, Some(1));
        assert_eq!(e.offset, 17 + ok.frame_len());
        assert_eq!(e.cmd_name, Some("mkdir"));
    }
}
