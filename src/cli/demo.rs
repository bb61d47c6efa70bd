//! `patrol demo`: the whole job against patrol-emulator, in-process, on its virtual clock.

use super::CliError;

pub const AFTER_HELP: &str = "\
Examples:
  patrol demo
  patrol demo --json";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary instead of the narrative.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: &DemoArgs) -> Result<(), CliError> {
    Err(CliError::failed("patrol demo is not wired yet in this build"))
}
