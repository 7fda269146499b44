//! `subvol-recv`: the receiver as a drop-in for `btrfs receive`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = subvol_cli::args::RecvCli::parse();
    match subvol_cli::cmd::recv(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => subvol_cli::cmd::report("subvol-recv", &e),
    }
}
