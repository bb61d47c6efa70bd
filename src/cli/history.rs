//! `patrol history [SECRET]`: the lifecycle log the state keeps (`history/lifecycle`, see
//! `crate::rotation::history`): every PAT patrol created, rotated, revoked or retired, when, by which trigger and
//! why. Reads the state store only.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::rotation::history::{self, Event, Kind};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

pub const AFTER_HELP: &str = "\
Examples:
  patrol history
  patrol history ci-build-pat --since 7d
  patrol history --format json | jq '.events[] | select(.kind == \"revoked\")'

JSON (docs/schemas/history.schema.json):
  {at, secret, since, events}
  events[]: at, kind (created, rotated, revoked, retired), secret, owner,
            organization, authorization_id, display_name, scope,
            valid_to, replaced, by, detail
by is the trigger (RotateTimer, RotateHttp, EventGridSecretChanged, patrol
rotate, patrol revoke, ...; null for events logged before patrol kept it).
The log keeps 35 days.

Exit codes: 0 shown (also when empty), 1 the state could not be read, 2 a
secret the policy does not manage and the log does not name.";

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this secret's events (case-insensitive, as Key Vault compares names).
    pub secret: Option<String>,
    /// Only events of the last 30m, 24h, 7d, … (default: everything the log keeps, 35 days).
    #[arg(long, value_parser = super::audit_cmds::parse_since)]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub events: Vec<Event>,
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Created => "created",
        Kind::Rotated => "rotated",
        Kind::Revoked => "revoked",
        Kind::Retired => "retired",
    }
}

impl HistoryView {
    fn table(&self) -> Table {
        let mut t = Table::new(&["AT", "EVENT", "SECRET", "PAT", "VALID TO", "REPLACED", "BY", "WHY"]);
        for e in &self.events {
            t.push(vec![
                e.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| e.at.to_string()),
                kind(e.kind).into(),
                e.secret.clone().unwrap_or_else(|| "-".into()),
                e.authorization_id.to_string(),
                e.valid_to.map(|t| t.date().to_string()).unwrap_or_else(|| "-".into()),
                e.replaced.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                e.by.clone().unwrap_or_else(|| "-".into()),
                e.detail.clone(),
            ]);
        }
        t
    }
}

/// The events from `since`, oldest first; only `secret`'s when one is named.
pub async fn gather(local: &Local, secret: Option<&str>, since: Option<Duration>) -> Result<HistoryView, CliError> {
    let now = local.clock.now();
    let from = now - since.unwrap_or(history::KEEP);
    let mut events = history::since(local.state.as_ref(), from).await.map_err(CliError::failed)?;
    if let Some(s) = secret {
        events.retain(|e| e.secret.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(s)));
        let managed = local.policy.tokens.iter().any(|t| t.secret.as_str().eq_ignore_ascii_case(s));
        if events.is_empty() && !managed {
            return Err(CliError::usage(format!(
                "secret {s:?} is not managed by {} and the lifecycle log does not name it",
                local.policy.file.display()
            )));
        }
    }
    Ok(HistoryView { at: now, secret: secret.map(str::to_owned), since: from, events })
}

pub async fn run(args: &HistoryArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let view = gather(&local, args.secret.as_deref(), args.since).await?;
    let t = view.table();
    let empty = || {
        format!(
            "no PAT was created, rotated or revoked{} since {}\n",
            view.secret.as_deref().map(|s| format!(" for {s}")).unwrap_or_default(),
            view.since.date()
        )
    };
    write_stdout(&render(
        args.output.format,
        &view,
        || if view.events.is_empty() { empty() } else { t.to_text() },
        || if view.events.is_empty() { empty() } else { t.to_markdown() },
    )?)
}
