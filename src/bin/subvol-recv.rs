//! `subvol-recv`: the receiver as a drop-in for `btrfs receive`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = subvol::cli::RecvCli::parse();
    match subvol::cmd::recv(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => subvol::cmd::report("subvol-recv", &e),
    }
}
