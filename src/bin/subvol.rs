//! `subvol`: parse the command line, run, map errors to documented exit codes.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = subvol::cli::Cli::parse();
    match subvol::cmd::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => subvol::cmd::report("subvol", &e),
    }
}
