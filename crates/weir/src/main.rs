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
        Command::Kinds => {
            use std::io::Write;
            let table = weir_store::Kind::ALL.map(weir_store::Kind::info);
            let written = serde_json::to_string_pretty(&table)
                .map_err(std::io::Error::from)
                .and_then(|json| writeln!(std::io::stdout(), "{json}"));
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("weir: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
