//! The `wrale` command-line client of fleetd (docs/cli.md).
//!
//! Everything about the API lives in `wrale-client`; this crate parses
//! arguments, resolves the URL and token, calls the client and prints tables or
//! JSON. Exit codes: 0 ok, 1 failure, 2 usage.

mod args;
mod cmd;
mod config;
mod error;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Parses the process's arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap: help and version exit 0, usage errors 2.
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wrale: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wrale: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
