//! `subvol`: parse the command line, run, map errors to documented exit codes.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = subvol_cli::args::Cli::parse();
    match subvol_cli::cmd::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => subvol_cli::cmd::report("subvol", &e),
    }
}
