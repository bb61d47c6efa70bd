//! `patrol consumers [SECRET…] [--check]`: every declared consumer of every token (or of the named ones)
//! with where its delivery of the current PAT stands — the same view `status`, `plan`, `inventory`,
//! `report` and `demo --json` show (`crate::consumers::view`). With `--check`, each consumer is also checked
//! without writing anything (`crate::consumers::check`): reachable, writable, the right type. Read-only:
//! the stores are opened as `status` opens them (nothing created), no consumer is written, no webhook sent.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::config::KeyVaultCredential;
use crate::consumers::ConsumerError;
use crate::consumers::view::{HEADERS, TokenConsumers};
use crate::rotation::journal;
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;

pub const AFTER_HELP: &str = "\
Examples:
  patrol consumers
  patrol consumers feed-pat --format json
  patrol consumers --check                 # reachable, writable, right type; writes nothing

JSON: {\"at\", \"tokens\": [{\"secret\", \"consumers\": [{\"consumer\", \"kind\", \"target\", \"written\", \"state\",
\"moved\", \"detail\", \"delivered_at\", \"last_used_at\", \"evidence\", \"failing_since\", \"last_error\", \"lag_hours\",
\"lag_until\"}]}], \"checks\": [{\"secret\", \"consumer\", \"kind\", \"ok\", \"outcome\", \"reachable\", \"writable\",
\"right_type\", \"findings\", \"problem\", \"fix\"}] (with --check; reachable/writable/right_type are null when not
checkable)}. Exit codes with --check: 0 every consumer passed, 1 a consumer failed its check, 2 patrol is not
set up to reach one (no consumer identity, a credential missing from the store) or bad configuration, 3 the
developer-tools identity must sign in (az login).";

#[derive(Debug, clap::Args)]
pub struct ConsumersArgs {
    /// Only these secrets (default: every token that declares consumers).
    pub secrets: Vec<String>,
    /// Check each consumer without writing: reachable, writable (rights), the right type.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One consumer's check, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub secret: String,
    pub consumer: String,
    pub kind: String,
    pub ok: bool,
    /// `ok`, `not-found`, `forbidden`, `wrong-type`, `unreachable`, `conflict` or `not-configured`.
    pub outcome: String,
    pub reachable: Option<bool>,
    pub writable: Option<bool>,
    pub right_type: Option<bool>,
    pub findings: Vec<String>,
    pub problem: Option<String>,
    /// What a person should do, when the check failed.
    pub fix: Option<String>,
    /// The failure is the developer-tools identity needing a sign-in.
    #[serde(skip)]
    pub sign_in: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumersView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub tokens: Vec<TokenConsumers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckRow>>,
}

/// The consumer table every command prints (one row per consumer).
pub fn table(list: &[TokenConsumers]) -> Table {
    let mut t = Table::new(&HEADERS);
    for r in TokenConsumers::rows(list) {
        t.push(r);
    }
    t
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "NO".into(),
        None => "-".into(),
    }
}

fn check_table(checks: &[CheckRow]) -> Table {
    let mut t = Table::new(&["SECRET", "CONSUMER", "CHECK", "REACHABLE", "WRITABLE", "RIGHT TYPE", "DETAIL"]);
    for c in checks {
        let detail = match (&c.problem, &c.fix) {
            (Some(p), Some(f)) => format!("{p} — {f}"),
            (Some(p), None) => p.clone(),
            _ => c.findings.join("; "),
        };
        t.push(vec![
            c.secret.clone(),
            c.consumer.clone(),
            c.outcome.clone(),
            yes_no(c.reachable),
            yes_no(c.writable),
            yes_no(c.right_type),
            detail,
        ]);
    }
    t
}

/// Every consumer of the chosen tokens, as the journals say (reads the state store only).
pub async fn gather(local: &Local, only: Option<&[crate::domain::SecretName]>) -> Vec<TokenConsumers> {
    let now = local.clock.now();
    let mut out = Vec::new();
    for t in &local.policy.tokens {
        if t.consumers.is_empty() || only.is_some_and(|o| !o.contains(&t.secret)) {
            continue;
        }
        let j = match journal::load(local.state.as_ref(), &t.secret).await {
            Ok(l) => l.journal,
            Err(e) => {
                tracing::warn!(secret = %t.secret, "journal not read: {e}");
                journal::Journal::new(t.secret.clone())
            }
        };
        let current = j.current.as_ref().map(|c| c.authorization_id);
        out.push(TokenConsumers {
            secret: t.secret.to_string(),
            consumers: crate::consumers::view::token_view(t, &j, current, now),
        });
    }
    out
}

/// Checks every consumer of the chosen tokens without writing.
pub async fn check(local: &Local, only: Option<&[crate::domain::SecretName]>) -> Vec<CheckRow> {
    let tokens: Vec<_> = local
        .policy
        .tokens
        .iter()
        .filter(|t| !t.consumers.is_empty() && only.is_none_or(|o| o.contains(&t.secret)))
        .collect();
    let Some(first) = tokens.first() else { return Vec::new() };
    let writers = crate::consumers::writers::Writers::from_settings(
        &local.settings,
        &first.consumers.settings,
        local.own.clone(),
        local.store.clone(),
        local.state.clone(),
        local.clock.clone(),
    )
    .map(Arc::new);
    let developer_tools =
        local.settings.consumer_identity.as_ref().is_some_and(|i| i.credential == KeyVaultCredential::DeveloperTools);
    let mut rows = Vec::new();
    for t in tokens {
        for c in &t.consumers.list {
            let (probe, result) = match &writers {
                Ok(w) => w.check(c).await,
                Err(e) => {
                    let e = ConsumerError::NotConfigured(format!("patrol cannot reach consumers: {e}"));
                    (Default::default(), Err(e))
                }
            };
            let sign_in = developer_tools
                && matches!(&result, Err(ConsumerError::NotConfigured(m)) if m.contains("no Entra token"))
                && c.kind_name().starts_with("devops-");
            rows.push(CheckRow {
                secret: t.secret.to_string(),
                consumer: c.id.clone(),
                kind: c.kind_name().to_owned(),
                ok: result.is_ok(),
                outcome: if sign_in {
                    "sign-in-needed".into()
                } else {
                    crate::consumers::check::outcome(&result).to_owned()
                },
                reachable: probe.reachable,
                writable: probe.writable,
                right_type: probe.right_type,
                findings: probe.findings,
                problem: result.as_ref().err().map(ToString::to_string),
                fix: result.is_err().then(|| {
                    if sign_in {
                        "Sign in with the developer tools patrol's identity uses (az login / azd auth login).".into()
                    } else {
                        crate::consumers::fix(c)
                    }
                }),
                sign_in,
            });
        }
    }
    rows
}

/// The exit code of `--check`: 2 when patrol is not set up to reach a consumer, else 3 when its
/// developer-tools identity must sign in, else 1 when a consumer failed.
pub fn check_outcome(checks: &[CheckRow]) -> Result<(), CliError> {
    let names = |f: &dyn Fn(&CheckRow) -> bool| -> String {
        checks.iter().filter(|c| f(c)).map(|c| c.consumer.as_str()).collect::<Vec<_>>().join(", ")
    };
    let config = names(&|c| c.outcome == "not-configured");
    if !config.is_empty() {
        return Err(CliError::usage(format!("patrol is not set up to reach: {config} (see DETAIL)")));
    }
    let sign_in = names(&|c| c.sign_in);
    if !sign_in.is_empty() {
        return Err(CliError::sign_in(format!("patrol's identity must sign in (az login) to check: {sign_in}")));
    }
    let failed = names(&|c| !c.ok);
    if !failed.is_empty() {
        return Err(CliError::failed(format!("consumer(s) failed the check: {failed}")));
    }
    Ok(())
}

pub async fn run(args: &ConsumersArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let only = super::runtime::chosen(&local, &args.secrets)?;
    let tokens = gather(&local, only.as_deref()).await;
    let checks = if args.check { Some(check(&local, only.as_deref()).await) } else { None };
    let view = ConsumersView { at: local.clock.now(), tokens, checks };
    let empty = if view.tokens.is_empty() { "No token declares consumers ([[token.consumer]]).\n" } else { "" };
    let text = |md: bool| {
        let t = table(&view.tokens);
        let mut s = if md { t.to_markdown() } else { t.to_text() };
        s.push_str(empty);
        if let Some(c) = &view.checks {
            let c = check_table(c);
            s.push('\n');
            s.push_str(&if md { c.to_markdown() } else { c.to_text() });
        }
        s
    };
    write_stdout(&render(args.output.format, &view, || text(false), || text(true))?)?;
    match &view.checks {
        Some(c) => check_outcome(c),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(outcome: &str, sign_in: bool) -> CheckRow {
        CheckRow {
            secret: "s".into(),
            consumer: format!("c-{outcome}"),
            kind: "webhook".into(),
            ok: outcome == "ok",
            outcome: outcome.into(),
            reachable: None,
            writable: None,
            right_type: None,
            findings: vec![],
            problem: None,
            fix: None,
            sign_in,
        }
    }

    #[test]
    fn exit_codes_rank_configuration_then_sign_in_then_failure() {
        assert_eq!(check_outcome(&[row("ok", false)]), Ok(()));
        assert_eq!(check_outcome(&[row("ok", false), row("forbidden", false)]).unwrap_err().code, 1);
        assert_eq!(check_outcome(&[row("sign-in-needed", true), row("forbidden", false)]).unwrap_err().code, 3);
        let e = check_outcome(&[row("not-configured", false), row("sign-in-needed", true)]).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("c-not-configured"), "{e}");
    }
}
