//! The `weir` command: parses flags and hands over to the library (see `lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use weir::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            weir::logging::init(args.log_format, &args.log_level);
            match weir::app::run_until_signal(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "weir stopped");
                    eprintln!("weir: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(args) => weir::check::run(&args, &mut std::io::stdout()),
    }
}
