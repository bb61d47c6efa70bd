//! `patrol status`: is everything healthy without calling Azure DevOps — each owner's sign-in (refresh
//! token age, last sign-in and refresh), each token's last rotation, last failure and in-flight operation,
//! and previous PATs waiting for their grace to end (pending drains). Reads only the stores.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::auth::session::{RefreshStatus, refresh_status};
use crate::rotation::journal::{self, Completed, Drain, Failure};
use serde::Serialize;
use time::OffsetDateTime;

pub const AFTER_HELP: &str = "\
Examples:
  patrol status
  patrol status --format json | jq '.owners[] | select(.health != \"ok\")'

JSON (docs/schemas/status.schema.json):
  {at, owners, tokens, warnings}
  owners[]: owner, health, signed_in_at, last_refresh_at,
            refresh_token_age_days
  tokens[]: secret, owner, organization, last_rotation, last_failure,
            in_flight, pending_drains, consumers
  consumers[]: consumer, kind, state, delivered_at, last_used_at,
               failing_since, last_error, lag_hours
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
    /// Each declared consumer and its delivery of the current PAT (`crate::consumers`).
    pub consumers: Vec<ConsumerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One consumer as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    pub consumer: String,
    pub kind: String,
    /// `pending`, `writing`, `delivered`, `reads-vault`, `failing` or `unknown` (no record yet).
    pub state: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub lag_hours: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
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
            consumers: Vec::new(),
            error: None,
        };
        match journal::load(local.state.as_ref(), &t.secret).await {
            Ok(l) => {
                let j = l.journal;
                row.last_rotation = j.last;
                row.last_failure = j.last_failure;
                row.in_flight = j.operation.map(|op| InFlight {
                    op: op.op.to_string(),
                    step: op.step.name().into(),
                    started: op.started,
                });
                row.pending_drains = j.drains;
                let current = j.current.as_ref().map(|c| c.authorization_id);
                row.consumers = t
                    .consumers
                    .list
                    .iter()
                    .map(|c| {
                        let d = j.deliveries.iter().find(|d| d.consumer == c.id && Some(d.authorization_id) == current);
                        ConsumerStatus {
                            consumer: c.id.clone(),
                            kind: c.kind_name().into(),
                            state: match d {
                                None => "unknown".into(),
                                Some(d) if d.failing_since.is_some() => "failing".into(),
                                Some(d) => d.step.name().into(),
                            },
                            delivered_at: d.and_then(|d| d.delivered_at()),
                            last_used_at: d.and_then(|d| d.evidence.as_ref().map(|e| e.at)),
                            failing_since: d.and_then(|d| d.failing_since),
                            last_error: d.and_then(|d| d.last_error.clone()),
                            lag_hours: c.lag_hours(),
                        }
                    })
                    .collect();
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        tokens.push(row);
    }
    StatusView { at: now, owners: owner_rows, tokens, warnings: local.settings.trust_warnings() }
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
                if r.consumers.is_empty() {
                    "-".into()
                } else {
                    let moved =
                        r.consumers.iter().filter(|c| matches!(c.state.as_str(), "delivered" | "reads-vault")).count();
                    let failing: Vec<&str> =
                        r.consumers.iter().filter(|c| c.state == "failing").map(|c| c.consumer.as_str()).collect();
                    let mut s = format!("{moved}/{} delivered", r.consumers.len());
                    if !failing.is_empty() {
                        s.push_str(&format!("; failing: {}", failing.join(", ")));
                    }
                    s
                },
                r.last_failure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.step, f.error))
                    .or_else(|| r.error.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        (o, t)
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
            format!("{}\n{}{warnings}", o.to_text(), t.to_text())
        },
        || {
            let warnings: String = view.warnings.iter().map(|w| format!("> **Warning:** {w}\n")).collect();
            format!("## Owners\n\n{}\n## Tokens\n\n{}{warnings}", o.to_markdown(), t.to_markdown())
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
