//! `subvol-recv`: the receiver as a drop-in for `btrfs receive`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = subvol_cli::args::RecvCli::parse();
    match subvol_cli::cmd::recv(&cli.args, subvol_cli::cmd::Style::Btrfs) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // As `btrfs receive`: `ERROR: ...` on stderr.
        Err(e) => subvol_cli::cmd::report_as_btrfs(&e),
    }
}
