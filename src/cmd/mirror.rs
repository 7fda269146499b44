//! `subvol publish`, `pull`, `pool`, `list`, `show`, `snapshot`, `delete`.

use crate::{Error, cli};

macro_rules! todo_cmd {
    ($($name:ident: $args:ty),*) => {$(
        /// Not implemented yet.
        ///
        /// # Errors
        /// Always.
        pub fn $name(_a: &$args) -> Result<(), Error> {
            Err(Error::Invalid(concat!(stringify!($name), " is not implemented yet").into()))
        }
    )*};
}
todo_cmd!(publish: cli::PublishArgs, pull: cli::PullArgs, pool: cli::PoolArgs, list: cli::ListArgs, show: cli::ShowArgs, snapshot: cli::SnapshotArgs, delete: cli::DeleteArgs);
