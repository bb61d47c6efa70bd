//! `patrol rotate [SECRET] [--force]`: a run of the engine from the operator's terminal — every token
//! that is due, or one named token (with `--force`, now, whatever its expiry). Notices of the run are
//! delivered like the Function App's. Prints what was done per token; never a PAT value.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::rotation::engine::{EngineError, RunOptions, RunSummary};
use crate::rotation::journal::Reason;
use crate::rotation::plan::Requests;

pub const AFTER_HELP: &str = "\
Examples:
  patrol rotate                        # every token that is due, as the timer
  patrol rotate ci-build-pat --force   # this token, now
  patrol rotate --format json

JSON (docs/schemas/rotate.schema.json):
  {dry_run, plan, reports, busy, deferred, rotated, revoked, failed,
   ignored, at_risk, notifications}
  reports[]: secret, done, rotated, revoked, error, deferred

Exit 1 when the run left a token at risk (a needed rotation failed, or a
previous PAT outlived its grace by a day: the rule of docs/rotation.md,
which the Function App's failed invocations follow too), 3 when an owner
must sign in first; other per-token failures are shown and retried by the
next run (exit 0).";

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The managed secret to rotate (default: every token that is due).
    pub secret: Option<String>,
    /// Rotate now even when the token is not due (with SECRET: that token; without: every token).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One row per token report.
pub fn table(s: &RunSummary) -> Table {
    let mut t = Table::new(&["SECRET", "OUTCOME", "NEW VALID TO", "REVOKED", "DETAIL"]);
    for r in &s.reports {
        let outcome = if r.error.is_some() {
            "failed"
        } else if r.rotated.is_some() {
            "rotated"
        } else if !r.revoked.is_empty() {
            "revoked previous"
        } else if r.deferred.is_some() {
            "deferred"
        } else {
            "nothing to do"
        };
        t.push(vec![
            r.secret.clone(),
            outcome.into(),
            r.rotated.as_ref().map(|c| c.valid_to.date().to_string()).unwrap_or_else(|| "-".into()),
            r.revoked.len().to_string(),
            r.error.clone().or_else(|| r.deferred.clone()).unwrap_or_else(|| r.done.join("; ")),
        ]);
    }
    // Retired tokens are never worked on: say so (and what to do) instead of leaving them out.
    for e in s.plan.entries.iter().filter(|e| !s.reports.iter().any(|r| r.secret == e.secret.as_str())) {
        if let Some(a) = e.retired() {
            t.push(vec![e.secret.to_string(), "retired".into(), "-".into(), "0".into(), a.label()]);
        }
    }
    for b in &s.busy {
        t.push(vec![b.to_string(), "busy".into(), "-".into(), "0".into(), "another run holds its lease".into()]);
    }
    for d in &s.deferred {
        t.push(vec![d.to_string(), "deferred".into(), "-".into(), "0".into(), "time budget spent".into()]);
    }
    t
}

/// Refuses a rotation that could race a Function App unseen: a shared Key Vault (`PATROL_KEYVAULT_URL`)
/// with neither the Function App's storage (`AzureWebJobsStorage`: its blob leases and journal) nor an
/// explicit `PATROL_LEASE=local`. The Function App would not see this run's lease or journal, could take
/// the PAT this run just created for an orphan and revoke it, and the vault would then name a dead PAT.
pub fn refuse_unshared_writer(s: &crate::config::Settings) -> Result<(), CliError> {
    if s.keyvault.is_some() && s.host_storage.is_none() && s.lease == crate::config::LeaseMode::Auto {
        return Err(CliError::usage(
            "settings PATROL_KEYVAULT_URL / AzureWebJobsStorage: rotating the tokens of a Key Vault needs the \
             leases and journal of whatever else rotates them — set AzureWebJobsStorage (or \
             AzureWebJobsStorage__accountName) to the Function App's storage account, or PATROL_LEASE=local if \
             no Function App manages this vault (then only patrol processes on this machine are excluded)",
        ));
    }
    Ok(())
}

pub async fn run(args: &RotateArgs) -> Result<(), CliError> {
    let local = Local::from_env()?;
    refuse_unshared_writer(&local.settings)?;
    if let Some(s) = &args.secret {
        super::runtime::chosen(&local, std::slice::from_ref(s))?;
    }
    let engine = local.engine()?;
    let started = std::time::Instant::now();
    let progress = super::progress::Progress::new("rotate", 1);
    let result = match &args.secret {
        Some(secret) => engine.rotate_one(secret, args.force, false, None).await,
        None => {
            let mut requests = Requests::default();
            if args.force {
                for t in &local.policy.tokens {
                    requests.rotate.insert(t.secret.clone(), Reason::Forced);
                }
            }
            crate::telemetry::with_trigger("patrol rotate", engine.run(RunOptions { requests, ..Default::default() }))
                .await
        }
    };
    progress.step("run finished");
    progress.finish();
    let summary = result.map_err(|e| match e {
        EngineError::UnknownSecret(_) | EngineError::BadInput(_) => CliError::usage(e.to_string()),
        other => CliError::failed(other.to_string()),
    })?;
    let delivery = if summary.notices.is_empty() {
        None
    } else {
        Some(local.notifier().await.deliver_run(summary.notices.clone()).await)
    };
    if let Some(metrics) = local.metrics() {
        let points = crate::rotation::measure::run_points(&summary, engine.state.as_ref()).await;
        let outcome = crate::rotation::measure::outcome(&summary);
        crate::app::export_cli_run(Some(&metrics), points, outcome, started).await;
    }
    let mut json = serde_json::to_value(&summary).unwrap_or_default();
    if let Some(d) = &delivery {
        json["notifications"] = serde_json::json!({ "delivered": d.all_delivered(), "failures": d.failures().count() });
    }
    let line = summary.line();
    write_stdout(&render(
        args.output.format,
        &json,
        || format!("{}{line}\n", table(&summary).to_text()),
        || format!("{}\n{line}\n", table(&summary).to_markdown()),
    )?)?;
    if let Some(d) = &delivery
        && !d.all_delivered()
    {
        tracing::warn!("{} notification(s) could not be delivered", d.failures().count());
    }
    let blocked_sign_in = summary.plan.entries.iter().any(|e| {
        e.actions
            .iter()
            .any(|a| matches!(a, crate::rotation::plan::Action::Blocked { why } if why.contains("patrol login")))
    });
    // The failed-invocation rule (`rotation::verdict`), as the Function App follows it.
    if !summary.at_risk.is_empty() {
        let why = summary.at_risk.iter().map(|r| format!("{}: {}", r.secret, r.why)).collect::<Vec<_>>().join("; ");
        if summary.at_risk.iter().all(|r| r.sign_in) {
            let owners: Vec<String> = summary
                .at_risk
                .iter()
                .filter_map(|r| summary.plan.entries.iter().find(|e| e.secret.as_str() == r.secret.as_str()))
                .map(|e| e.owner.to_string())
                .collect();
            return Err(CliError::sign_in(format!("{}; token(s) at risk: {why}", super::sign_in_message(&owners))));
        }
        return Err(CliError::failed(format!("{} token(s) at risk: {why}", summary.at_risk.len())));
    }
    if summary.failed > 0 {
        tracing::warn!("{} token(s) failed without being at risk yet; the next run retries them", summary.failed);
    }
    if blocked_sign_in {
        let owners: Vec<String> = summary
            .plan
            .entries
            .iter()
            .filter(|e| {
                e.actions.iter().any(
                    |a| matches!(a, crate::rotation::plan::Action::Blocked { why } if why.contains("patrol login")),
                )
            })
            .map(|e| e.owner.to_string())
            .collect();
        return Err(CliError::sign_in(super::sign_in_message(&owners)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, Source};

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_source(&Source::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn a_key_vault_rotation_needs_shared_leases_or_an_explicit_local_mode() {
        let vault = ("PATROL_KEYVAULT_URL", "https://contoso-pats.vault.azure.net/");
        let e = refuse_unshared_writer(&settings(&[vault])).unwrap_err();
        assert_eq!(e.code, 2, "a configuration error");
        assert!(e.message.contains("AzureWebJobsStorage") && e.message.contains("PATROL_LEASE=local"), "{}", e.message);
        // The Function App's storage: shared blob leases and journal.
        let shared = ("AzureWebJobsStorage", "UseDevelopmentStorage=true");
        assert!(refuse_unshared_writer(&settings(&[vault, shared])).is_ok());
        // Explicitly local: the operator says no Function App manages this vault.
        assert!(refuse_unshared_writer(&settings(&[vault, ("PATROL_LEASE", "local")])).is_ok());
        // The embedded file store is this machine's own: file leases exclude every writer.
        assert!(refuse_unshared_writer(&settings(&[])).is_ok());
    }
}
