//! Integration tests, one binary (ripgrep's layout). Tests that need root, loop devices and btrfs
//! use `support::btrfs_fixture`; with `CI=true` they fail instead of skipping.

mod support;

mod cli;
mod codec;
mod content;
mod decompress;
mod deploy;
mod man;
mod mirror;
mod oci;
mod publish;
mod pullflow;
mod ranges;
mod recv;
mod recv_btrfs_output;
mod remotes;
mod resume;
mod send_kernel;
mod send_tree;
mod sign;
mod trust;
