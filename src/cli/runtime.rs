//! The parts a CLI command works with: [`crate::app::App`], the composition root the Function App builds
//! its parts with too (policy, secret stores, journal and leases, Entra, owners' sessions, the Azure DevOps
//! connector, the rotation engine, the notifier). `Local` is the CLI's name for it.

pub use crate::app::App as Local;

/// The settings from the environment with every problem at once (see [`crate::app::checked_settings`]).
pub fn checked_settings(needs_sign_in: bool) -> Result<crate::config::Settings, super::CliError> {
    Ok(crate::app::checked_settings(needs_sign_in)?)
}
