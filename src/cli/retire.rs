//! `patrol retire SECRET [--dry-run] [--yes] [--force] [--reason TEXT]`: retire a managed token nobody uses
//! (`crate::audit::retire`): revoke its PATs with the owner's session, disable its secret, and record it,
//! so patrol never creates or rotates it again. Surveys first (that is also the dry run and what the
//! confirmation shows).

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::audit::retire::{RetireContext, RetireError, RetireReport, retire};
use crate::domain::SecretName;

pub const AFTER_HELP: &str = "\
Examples:
  patrol retire old-nightly-pat --dry-run     # what it would revoke and disable; changes nothing
  patrol retire old-nightly-pat               # the same survey, then asks before doing it
  patrol retire old-nightly-pat --yes --reason \"no audited use in 45 days; owner agreed\"

Revokes the token's PATs (current and still-draining previous ones) with its owner's session, disables
every enabled version of its secret, journals the retirement first (a rerun after a crash finishes it)
and records it in the lifecycle log (patrol history). From then on `patrol plan` shows the token as
retired and no run creates, rotates or delivers it: delete its [[token]] block from patrol.toml.

Refused without --force when something still depends on it: declared consumers, or an audited use
within [audit.stale] days. \"No audited use\" is evidence, not proof: the audit log records audited
actions, not every use.

JSON: {at, secret, owner, organization, dry_run, outcome, pats, versions, consumers, evidence, blockers,
notes}; outcome is would-retire, refused, retired, already-retired or not-confirmed.
Exit 0 retired, already retired, or the dry run; 1 refused (see blockers) or it failed (a rerun resumes
it); 2 bad input; 3 the owner must sign in; 4 not confirmed (nothing changed).";

#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// The managed secret (a `[[token]]` of patrol.toml) to retire.
    pub secret: String,
    /// Show what would be revoked and disabled; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Retire even though consumers are declared or the audit log shows recent use.
    #[arg(long)]
    pub force: bool,
    /// Why, for the lifecycle log (default: "no longer needed").
    #[arg(long, default_value = "no longer needed")]
    pub reason: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The survey or the result, for people.
pub fn text(r: &RetireReport, markdown: bool) -> String {
    let mut t = Table::new(&["SECRET", "PAT", "ROLE", "DISPLAY NAME", "VALID TO", "REVOKED"]);
    for p in &r.pats {
        t.push(vec![
            r.secret.clone(),
            p.authorization_id.to_string(),
            p.role.clone(),
            p.display_name.clone().unwrap_or_else(|| "(not listed)".into()),
            p.valid_to.map(|v| v.date().to_string()).unwrap_or_else(|| "-".into()),
            if p.revoked { "yes".into() } else { "no".into() },
        ]);
    }
    let mut out = if r.pats.is_empty() {
        format!("{}: no PAT to revoke\n", r.secret)
    } else if markdown {
        t.to_markdown()
    } else {
        t.to_text()
    };
    let versions = if r.versions.is_empty() { "none".to_owned() } else { r.versions.join(", ") };
    out.push_str(&format!(
        "vault versions {}: {versions}\n",
        if r.outcome == "retired" { "disabled" } else { "to disable" }
    ));
    if !r.consumers.is_empty() {
        out.push_str(&format!("declared consumers: {}\n", r.consumers.join(", ")));
    }
    for e in &r.evidence {
        out.push_str(&format!("audit log: {e}\n"));
    }
    for b in &r.blockers {
        out.push_str(&format!("refused: {b}\n"));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(match r.outcome.as_str() {
        "would-retire" => "dry run: nothing was changed\n",
        "refused" => "nothing was changed (pass --force to retire it anyway)\n",
        "not-confirmed" => "declined; nothing was changed\n",
        "already-retired" => "already retired: nothing to do\n",
        "retired" => "retired: delete its [[token]] block from patrol.toml; `patrol history` shows the retirement\n",
        _ => "",
    });
    out
}

pub async fn run(args: &RetireArgs) -> Result<(), CliError> {
    let secret = SecretName::parse(&args.secret).map_err(|e| CliError::usage(format!("SECRET: {e}")))?;
    if args.reason.trim().is_empty() {
        return Err(CliError::usage("--reason: empty; say why the token is retired"));
    }
    // A dry run writes nothing: the stores are opened as `plan` opens them.
    let local = if args.dry_run { Local::from_env_read_only()? } else { Local::from_env()? };
    if !args.dry_run {
        super::rotate::refuse_unshared_writer(&local.settings)?;
    }
    let token = local.policy.token(&secret).ok_or_else(|| {
        CliError::usage(format!(
            "{secret} is not managed: no [[token]] with secret = \"{secret}\" in {}",
            local.policy.file.display()
        ))
    })?;
    let connector = local.connector()?;
    let cx = RetireContext {
        token,
        connector: connector.as_ref(),
        store: local.store.as_ref(),
        state: local.state.as_ref(),
        leases: local.leases.as_ref(),
        stale_days: local.policy.audit.as_ref().map_or(30, |a| a.stale.days),
        now: local.clock.now(),
    };
    let format = args.output.format;
    let yes = args.yes;
    let shown = std::cell::Cell::new(false);
    let mut confirm = |survey: &RetireReport| {
        if yes {
            return true;
        }
        // The survey first, then the question (on stderr) — as `patrol revoke` does.
        if format == super::output::Format::Table {
            let _ = write_stdout(&text(survey, false));
            shown.set(true);
        }
        super::audit_cmds::ask_terminal(&survey.confirmation())
    };
    let report = crate::telemetry::with_trigger(
        "patrol retire",
        retire(&cx, args.reason.trim(), args.dry_run, args.force, &mut confirm),
    )
    .await
    .map_err(|e| match e {
        RetireError::SignIn(m) => CliError::sign_in(format!("retire: {m}")),
        RetireError::Failed(m) => CliError::failed(format!("retire: {m}")),
    })?;
    if shown.get() && report.outcome == "not-confirmed" {
        write_stdout("declined; nothing was changed\n")?;
    } else {
        write_stdout(&render(format, &report, || text(&report, false), || text(&report, true))?)?;
    }
    match report.outcome.as_str() {
        "refused" => Err(CliError::failed(format!(
            "retire: refused ({} reason(s) above); nothing was changed — pass --force to retire it anyway",
            report.blockers.len()
        ))),
        "not-confirmed" => Err(CliError { code: super::exit::DECLINED, message: "retire: not confirmed".into() }),
        _ => Ok(()),
    }
}
