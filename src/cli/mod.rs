//! The operator's command line: `serve`, `plan`, `rotate`, `inventory`, `status`, `login`, `report`,
//! `demo`, `audit`, `revoke`, `migrate-global`, shell completions, exit codes.
//!
//! Today it holds `serve` (the custom handler) and the rule that the bare binary serves when the Functions
//! host started it (`FUNCTIONS_CUSTOMHANDLER_PORT` set; the host passes no arguments). Other commands are
//! added here as subcommands.

mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use serve::{ServeArgs, port_from_env};

/// Exit codes: 0 success, 1 the command failed, 2 usage or configuration error.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "patrol",
    version,
    about = "Keeps Azure DevOps PATs short-lived, rotated, stored in Key Vault, watched and revocable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Azure Functions custom handler on 127.0.0.1 (what the Functions host runs).
    Serve(ServeArgs),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        // Started by the Functions host: it passes no arguments, only the port in the environment.
        None if port_from_env().is_some() => serve::run(ServeArgs::default()),
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            ExitCode::from(exit::USAGE)
        }
    }
}
