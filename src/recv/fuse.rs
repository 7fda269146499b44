//! Create+rename fusion, a filter in front of the receiver.
//!
//! Kernel streams create each inode under a temporary name (`o257-7-0`) and rename it at once.
//! This stage holds a create command back until the next command is known: when that is the
//! RENAME of the new inode, the sink creates it at its final name directly, which saves a
//! rename (and churn in the parent directory) per inode. Anything else passes through unchanged.

use super::{Failure, command_error};
use crate::Error;
use crate::pipeline::{CommandSink, Position};
use crate::stream::{Command, Op, cmd};
use std::ops::ControlFlow;

/// A sink that can make a created inode appear directly under the name a RENAME gives it.
pub(super) trait CreateRenamed: CommandSink {
    /// Applies `create` at the target of `rename` (whose source is `create`'s path).
    /// `Ok(false)` when the target name is taken: then both are applied as the stream says.
    ///
    /// # Errors
    /// As applying `rename` would fail (reported against `rename`).
    fn create_renamed(
        &mut self,
        create: &Command,
        rename: &Command,
        rename_at: Position,
    ) -> Result<bool, Error>;
}

/// The filter: forwards everything to `inner`, fusing create+rename pairs.
pub(super) struct Fuse<K> {
    inner: K,
    /// A create command held back, and where it was.
    pending: Command,
    pending_at: Option<Position>,
}

fn is_create(c: u16) -> bool {
    matches!(
        c,
        cmd::MKFILE | cmd::MKDIR | cmd::MKNOD | cmd::MKFIFO | cmd::MKSOCK | cmd::SYMLINK
    )
}

/// The path a create command makes (None if it does not parse: the sink reports that).
fn created_path(c: &Command) -> Option<&[u8]> {
    match c.op().ok()? {
        Op::Mkfile { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Mknod { path, .. }
        | Op::Mkfifo { path, .. }
        | Op::Mksock { path, .. }
        | Op::Symlink { path, .. } => Some(path),
        _ => None,
    }
}

impl<K: CreateRenamed> Fuse<K> {
    pub(super) fn new(inner: K) -> Fuse<K> {
        Fuse {
            inner,
            pending: Command::empty(),
            pending_at: None,
        }
    }

    pub(super) fn into_inner(self) -> K {
        self.inner
    }

    /// Passes the held-back create on unchanged.
    fn flush(&mut self) -> Result<(), Error> {
        if let Some(at) = self.pending_at.take() {
            // A create never ends the stream.
            let _ = self.inner.command(&self.pending, at)?;
        }
        Ok(())
    }
}

impl<K: CreateRenamed> CommandSink for Fuse<K> {
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error> {
        if let Some(create_at) = self.pending_at {
            return Err(command_error(
                &self.pending,
                create_at,
                created_path(&self.pending),
                Failure::OutOfPlace("new stream header before END"),
            ));
        }
        self.inner.header(version, at)
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        if let Some(create_at) = self.pending_at
            && c.cmd() == cmd::RENAME
            && let Ok(Op::Rename { from, .. }) = c.op()
            && created_path(&self.pending) == Some(from)
        {
            if self.inner.create_renamed(&self.pending, c, at)? {
                self.pending_at = None;
                return Ok(ControlFlow::Continue(()));
            }
            // The final name is taken: let the stream's own create and rename run.
            self.pending_at = Some(create_at);
        }
        self.flush()?;
        if is_create(c.cmd()) && created_path(c).is_some() {
            self.pending.clone_from(c);
            self.pending_at = Some(at);
            return Ok(ControlFlow::Continue(()));
        }
        self.inner.command(c, at)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.inner.finish()
    }

    fn abort(&mut self) {
        self.pending_at = None;
        self.inner.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Builder, attr, end_command};

    /// Records what reaches it; `taken` names are already in use.
    #[derive(Default)]
    struct Log {
        seen: Vec<String>,
        taken: Vec<&'static [u8]>,
    }

    fn describe(c: &Command) -> String {
        match c.op().unwrap() {
            Op::Rename { from, to } => format!(
                "rename {} {}",
                String::from_utf8_lossy(from),
                String::from_utf8_lossy(to)
            ),
            _ => format!(
                "{} {}",
                c.name(),
                String::from_utf8_lossy(created_path(c).unwrap_or_default())
            ),
        }
    }

    impl CommandSink for Log {
        fn header(&mut self, v: u32, _: Position) -> Result<(), Error> {
            self.seen.push(format!("header {v}"));
            Ok(())
        }
        fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
            self.seen.push(format!("{}@{}", describe(c), at.index));
            Ok(ControlFlow::Continue(()))
        }
        fn finish(&mut self) -> Result<(), Error> {
            self.seen.push("finish".into());
            Ok(())
        }
    }

    impl CreateRenamed for Log {
        fn create_renamed(
            &mut self,
            create: &Command,
            rename: &Command,
            at: Position,
        ) -> Result<bool, Error> {
            let Ok(Op::Rename { to, .. }) = rename.op() else {
                panic!("not a rename");
            };
            if self.taken.contains(&to) {
                return Ok(false);
            }
            self.seen.push(format!(
                "{} at {}@{}",
                describe(create),
                String::from_utf8_lossy(to),
                at.index
            ));
            Ok(true)
        }
    }

    fn mkfile(p: &[u8]) -> Command {
        Builder::new(cmd::MKFILE, 1)
            .bytes(attr::PATH, p)
            .u64(attr::INO, 257)
            .build()
            .unwrap()
    }

    fn rename(from: &[u8], to: &[u8]) -> Command {
        Builder::new(cmd::RENAME, 1)
            .bytes(attr::PATH, from)
            .bytes(attr::PATH_TO, to)
            .build()
            .unwrap()
    }

    fn run(sink: Log, cmds: &[Command]) -> Vec<String> {
        let mut f = Fuse::new(sink);
        f.header(1, Position::default()).unwrap();
        for (i, c) in cmds.iter().enumerate() {
            let at = Position {
                offset: 0,
                index: i as u64,
            };
            assert!(f.command(c, at).unwrap().is_continue());
        }
        f.finish().unwrap();
        f.into_inner().seen
    }

    #[test]
    fn fuses_create_then_rename_of_the_same_path() {
        let seen = run(
            Log::default(),
            &[
                mkfile(b"o257-7-0"),
                rename(b"o257-7-0", b"a"),
                mkfile(b"o258-7-0"),
                rename(b"other", b"b"),
                mkfile(b"o259-7-0"),
                end_command(1),
            ],
        );
        assert_eq!(
            seen,
            [
                "header 1",
                "mkfile o257-7-0 at a@1",
                "mkfile o258-7-0@2",
                "rename other b@3",
                "mkfile o259-7-0@4",
                "end @5",
                "finish"
            ]
        );
    }

    #[test]
    fn taken_name_falls_back_to_the_stream_order() {
        let seen = run(
            Log {
                taken: vec![b"a"],
                ..Log::default()
            },
            &[mkfile(b"t"), rename(b"t", b"a")],
        );
        assert_eq!(seen, ["header 1", "mkfile t@0", "rename t a@1", "finish"]);
    }

    #[test]
    fn header_after_a_held_create_is_out_of_place() {
        let mut f = Fuse::new(Log::default());
        let flow = f.command(&mkfile(b"x"), Position::default()).unwrap();
        assert!(flow.is_continue());
        let e = f.header(1, Position::default()).unwrap_err();
        match e {
            Error::Recv(r) => assert!(r.is_stream_fault(), "{r}"),
            other => panic!("{other}"),
        }
    }
}
