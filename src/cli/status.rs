//! `patrol status`: is everything healthy without calling Azure DevOps — each owner's sign-in (refresh
//! token age, last sign-in and refresh), each token's last rotation, last failure and in-flight operation,
//! and previous PATs waiting for their grace to end (pending drains). Reads only the stores.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::auth::session::{RefreshStatus, refresh_status};
use crate::rotation::inventory;
use crate::rotation::journal::{self, Completed, Drain, Failure};
use serde::Serialize;
use time::OffsetDateTime;

pub const AFTER_HELP: &str = "\
Examples:
  patrol status
  patrol status --format json | jq '.owners[] | select(.health != \"ok\")'

JSON (docs/schemas/status.schema.json):
  {at, state, owners, tokens, warnings}
  owners[]: owner, health, signed_in_at, last_refresh_at,
            refresh_token_age_days
  tokens[]: secret, owner, organization, last_rotation, last_failure,
            in_flight, pending_drains, adopted, consumers
  consumers[]: consumer, kind, target, written, state, moved, detail,
               delivered_at, last_used_at, evidence, failing_since,
               last_error, lag_hours, lag_until
health is ok, stale (refresh token unused for 60+ days; Entra drops it at
90), sign-in-needed or unknown.

Exit 3 when an owner must sign in, 1 when a token's last run failed.";

/// Entra revokes a refresh token unused for 90 days; warn well before.
pub const STALE_AFTER_DAYS: i64 = 60;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct OwnerHealth {
    pub owner: String,
    /// `ok`, `stale`, `sign-in-needed` or `unknown` (the store could not be read).
    pub health: String,
    #[serde(flatten)]
    pub refresh: Option<RefreshStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub op: String,
    pub step: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub secret: String,
    pub owner: String,
    pub organization: String,
    pub last_rotation: Option<Completed>,
    pub last_failure: Option<Failure>,
    pub in_flight: Option<InFlight>,
    pub pending_drains: Vec<Drain>,
    /// The last PAT an operator adopted into this secret (`patrol adopt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted: Option<crate::rotation::journal::Adoption>,
    /// Each declared consumer and its delivery of the current PAT (`crate::consumers`).
    pub consumers: Vec<crate::consumers::view::ConsumerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Where patrol reads and writes its state (journal, notification and audit state): the Function App's
    /// storage (`AzureWebJobsStorage`) or a directory (`PATROL_STATE_DIR`).
    pub state: String,
    pub owners: Vec<OwnerHealth>,
    pub tokens: Vec<TokenStatus>,
    /// Trust-boundary warnings (`Settings::trust_warnings`): e.g. consumers can read refresh tokens.
    pub warnings: Vec<String>,
}

/// The health word for an owner's refresh-token bookkeeping.
pub fn health(refresh: Option<&RefreshStatus>) -> &'static str {
    match refresh {
        None => "sign-in-needed",
        Some(r) if r.refresh_token_age_days.is_some_and(|d| d >= STALE_AFTER_DAYS) => "stale",
        Some(_) => "ok",
    }
}

/// Reads the status from the stores.
pub async fn gather(local: &Local) -> StatusView {
    let now = local.clock.now();
    let mut owners: Vec<_> = local.policy.tokens.iter().map(|t| t.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    let mut owner_rows = Vec::new();
    for o in owners {
        let row = match refresh_status(local.own.as_ref(), &o, now).await {
            Ok(r) => OwnerHealth { owner: o.to_string(), health: health(r.as_ref()).into(), refresh: r, error: None },
            Err(e) => OwnerHealth {
                owner: o.to_string(),
                health: "unknown".into(),
                refresh: None,
                error: Some(e.to_string()),
            },
        };
        owner_rows.push(row);
    }
    let mut tokens = Vec::new();
    for t in &local.policy.tokens {
        let mut row = TokenStatus {
            secret: t.secret.to_string(),
            owner: t.owner.to_string(),
            organization: t.organization.to_string(),
            last_rotation: None,
            last_failure: None,
            in_flight: None,
            pending_drains: Vec::new(),
            adopted: None,
            consumers: Vec::new(),
            error: None,
        };
        // The vault's current version with the journal: a version patrol wrote without a journal here means
        // this patrol reads another state than the one that wrote it ("state missing", never "never rotated").
        let ts = inventory::token_state(local.store.as_ref(), local.state.as_ref(), &t.secret).await;
        let state_missing = ts.error.as_ref().filter(|e| e.starts_with("state missing")).cloned();
        match journal::load(local.state.as_ref(), &t.secret).await {
            Ok(l) => {
                let j = l.journal;
                row.error = state_missing;
                row.adopted = j.adopted.as_deref().cloned();
                let current = j.current.as_ref().map(|c| c.authorization_id);
                row.consumers = crate::consumers::view::token_view(t, &j, current, now);
                row.last_rotation = j.last;
                row.last_failure = j.last_failure.map(|f| *f);
                row.in_flight = j.operation.map(|op| InFlight {
                    op: op.op.to_string(),
                    step: op.step.name().into(),
                    started: op.started,
                });
                row.pending_drains = j.drains;
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        tokens.push(row);
    }
    StatusView {
        at: now,
        state: local.state.location(),
        owners: owner_rows,
        tokens,
        warnings: local.settings.trust_warnings(),
    }
}

fn date(t: Option<OffsetDateTime>) -> String {
    t.map(|t| t.date().to_string()).unwrap_or_else(|| "-".into())
}

impl StatusView {
    pub fn tables(&self) -> (Table, Table) {
        let mut o = Table::new(&["OWNER", "HEALTH", "SIGNED IN", "LAST REFRESH", "REFRESH TOKEN AGE (DAYS)"]);
        for r in &self.owners {
            let f = r.refresh.as_ref();
            o.push(vec![
                r.owner.clone(),
                r.health.clone(),
                date(f.and_then(|f| f.signed_in_at)),
                date(f.and_then(|f| f.last_refresh_at)),
                f.and_then(|f| f.refresh_token_age_days).map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut t = Table::new(&[
            "SECRET",
            "LAST ROTATION",
            "NEW VALID TO",
            "IN FLIGHT",
            "PENDING DRAINS",
            "CONSUMERS",
            "LAST FAILURE",
        ]);
        for r in &self.tokens {
            t.push(vec![
                r.secret.clone(),
                r.last_rotation
                    .as_ref()
                    .map(|c| format!("{} ({})", c.finished.date(), c.reason.as_str()))
                    .or_else(|| r.adopted.as_ref().map(|a| format!("never (adopted {})", a.at.date())))
                    .unwrap_or_else(|| "never".into()),
                date(r.last_rotation.as_ref().map(|c| c.valid_to)),
                r.in_flight.as_ref().map(|f| format!("{} at {}", f.op, f.step)).unwrap_or_else(|| "-".into()),
                if r.pending_drains.is_empty() {
                    "-".into()
                } else {
                    r.pending_drains
                        .iter()
                        .map(|d| format!("{} after {}", d.pat.authorization_id, d.revoke_after.date()))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                crate::consumers::view::TokenConsumers::summary(&r.consumers),
                r.last_failure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.step, f.error))
                    .or_else(|| r.error.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        (o, t)
    }

    /// One row per consumer of every token (`None` when no token declares any).
    pub fn consumer_table(&self) -> Option<Table> {
        let list: Vec<crate::consumers::view::TokenConsumers> = self
            .tokens
            .iter()
            .filter(|t| !t.consumers.is_empty())
            .map(|t| crate::consumers::view::TokenConsumers {
                secret: t.secret.clone(),
                consumers: t.consumers.clone(),
            })
            .collect();
        (!list.is_empty()).then(|| super::consumers::table(&list))
    }
}

pub async fn run(args: &StatusArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let view = gather(&local).await;
    let (o, t) = view.tables();
    write_stdout(&render(
        args.output.format,
        &view,
        || {
            let warnings: String = view.warnings.iter().map(|w| format!("WARNING: {w}\n")).collect();
            let c = view.consumer_table().map(|c| format!("\n{}", c.to_text())).unwrap_or_default();
            format!("state: {}\n\n{}\n{}{c}{warnings}", view.state, o.to_text(), t.to_text())
        },
        || {
            let warnings: String = view.warnings.iter().map(|w| format!("> **Warning:** {w}\n")).collect();
            let c = view.consumer_table().map(|c| format!("\n## Consumers\n\n{}", c.to_markdown())).unwrap_or_default();
            format!(
                "State: {}\n\n## Owners\n\n{}\n## Tokens\n\n{}{c}{warnings}",
                view.state,
                o.to_markdown(),
                t.to_markdown()
            )
        },
    )?)?;
    let need: Vec<_> = view.owners.iter().filter(|o| o.health == "sign-in-needed").map(|o| o.owner.as_str()).collect();
    if !need.is_empty() {
        let commands: Vec<String> = need.iter().map(|o| format!("`patrol login --owner {o}`")).collect();
        return Err(CliError::sign_in(format!("{} never signed in: run {}", need.join(", "), commands.join(", "))));
    }
    let failed = view.tokens.iter().filter(|t| t.last_failure.is_some() || t.error.is_some()).count();
    if failed > 0 {
        return Err(CliError::failed(format!("{failed} token(s) failed on their last run; see LAST FAILURE")));
    }
    Ok(())
}
