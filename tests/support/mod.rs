//! Shared test helpers.

#![allow(dead_code)]

#[path = "btrfs_fixture.rs"]
pub mod btrfs_fixture;
pub mod kernel_streams;
pub mod nginx;
pub mod registry;
pub mod tree;

use std::path::{Path, PathBuf};

/// The repository's top directory (the tests belong to the `cli/` package).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Path of a built binary of this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "subvol" => PathBuf::from(env!("CARGO_BIN_EXE_subvol")),
        "subvol-recv" => PathBuf::from(env!("CARGO_BIN_EXE_subvol-recv")),
        other => panic!("unknown binary {other}"),
    }
}
