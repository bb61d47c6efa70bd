//! The parts a CLI command works with: [`crate::app::App`], the composition root the Function App builds
//! its parts with too (policy, secret stores, journal and leases, Entra, owners' sessions, the Azure DevOps
//! connector, the rotation engine, the notifier). `Local` is the CLI's name for it.

pub use crate::app::App as Local;

/// The settings from the environment with every problem at once (see [`crate::app::checked_settings`]).
pub fn checked_settings(needs_sign_in: bool) -> Result<crate::config::Settings, super::CliError> {
    Ok(crate::app::checked_settings(needs_sign_in)?)
}

/// Validates secret names and checks that the policy manages them.
pub fn chosen(local: &Local, names: &[String]) -> Result<Option<Vec<crate::domain::SecretName>>, super::CliError> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let s =
            crate::domain::SecretName::parse(n).map_err(|e| super::CliError::usage(format!("secret {n:?}: {e}")))?;
        if local.policy.token(&s).is_none() {
            return Err(super::CliError::usage(format!(
                "secret {n:?} is not managed by patrol (not in {})",
                local.policy.file.display()
            )));
        }
        out.push(s);
    }
    Ok(Some(out))
}
