//! `patrol migrate-refresh-tokens`: move owners' refresh tokens from the consumer vault(s) into patrol's own
//! vault (`PATROL_OWN_KEYVAULT_URL`) — no owner signs in again, nothing is left in the consumer vaults
//! (versions disabled, then the secret deleted and purged), and a crash resumes on the next run (journaled;
//! see `crate::auth::migrate`).

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use crate::auth::migrate::{Moved, migrate_refresh_tokens};
use crate::clock::Clock;
use crate::rotation::policy::Policy;

pub const AFTER_HELP: &str = "\
Examples:
  PATROL_OWN_KEYVAULT_URL=https://patrol-own-kv.vault.azure.net/ \\
    patrol migrate-refresh-tokens --dry-run
  PATROL_OWN_KEYVAULT_URL=https://patrol-own-kv.vault.azure.net/ \\
    patrol migrate-refresh-tokens

Needs PATROL_KEYVAULT_URL (and PATROL_CONSUMER_KEYVAULTS, if any) and
PATROL_OWN_KEYVAULT_URL, with an identity that may read, write, delete and
purge secrets in the consumer vaults and write secrets in patrol's own vault.
Safe to run again: an interrupted run resumes where it stopped. Exit 2 when
PATROL_OWN_KEYVAULT_URL is not set.

JSON: [{vault, secret, outcome, versions_disabled}]; outcome is moved,
kept-newer or would-move.";

#[derive(Debug, clap::Args)]
pub struct MigrateRefreshArgs {
    /// List the refresh tokens that would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: &MigrateRefreshArgs) -> Result<(), CliError> {
    let settings = super::runtime::checked_settings(false)?;
    if settings.own_keyvault.is_none() {
        return Err(CliError::usage(
            "setting PATROL_OWN_KEYVAULT_URL: not set (the vault only patrol can read, where refresh tokens move to)",
        ));
    }
    let clock = Clock::system();
    // The policy places tokens in vaults; without one, only the configured vaults are searched.
    let policy = if settings.policy_file.is_file() { Some(Policy::load(&settings.policy_file)?) } else { None };
    let stores = crate::store::open(&settings, clock.clone(), policy.as_ref().map(Policy::placement).as_ref())
        .map_err(|e| CliError::failed(format!("cannot open the secret stores: {e}")))?;
    let (state, _) = crate::rotation::shared::from_settings(&settings).map_err(|e| CliError::failed(e.to_string()))?;
    let moved =
        migrate_refresh_tokens(&stores.vaults, stores.own_direct.as_ref(), state.as_ref(), &clock, args.dry_run)
            .await
            .map_err(|e| CliError::failed(format!("migrating refresh tokens: {e}")))?;
    write_stdout(&render(args.output.format, &moved, || table(&moved).to_text(), || table(&moved).to_markdown())?)?;
    if moved.is_empty() {
        eprintln!("patrol: no refresh token left in any consumer vault");
    }
    Ok(())
}

fn table(moved: &[Moved]) -> Table {
    let mut t = Table::new(&["VAULT", "SECRET", "OUTCOME", "VERSIONS DISABLED"]);
    for m in moved {
        t.push(vec![m.vault.clone(), m.secret.to_string(), m.outcome.into(), m.versions_disabled.to_string()]);
    }
    t
}
