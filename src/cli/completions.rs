//! `patrol completions <shell>`: prints a completion script for bash, zsh, fish, elvish or PowerShell.

use super::{Cli, CliError};
use clap::CommandFactory;
use clap_complete::Shell;

pub const AFTER_HELP: &str = "\
Examples:
  patrol completions bash > ~/.local/share/bash-completion/completions/patrol
  patrol completions zsh > \"${fpath[1]}/_patrol\"
  patrol completions fish > ~/.config/fish/completions/patrol.fish";

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "patrol", &mut out);
    super::output::write_stdout(&String::from_utf8_lossy(&out))
}
