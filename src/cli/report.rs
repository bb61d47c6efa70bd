//! `patrol report`: the weekly page — builds a [`ReportData`] from the real inventory (every PAT of every
//! configured owner and organization), the journals (recent rotations, failures) and the policy's expiry
//! thresholds, then writes the self-contained HTML page or the markdown. [`build`] is pure.

use super::CliError;
use super::inventory::{InventoryView, Role};
use super::runtime::Local;
use crate::devops::GLOBAL_PAT_CUTOFF;
use crate::notify::Severity;
use crate::report::{ProblemRow, ReportData, RotationRow, TokenRow, render_html, render_markdown};
use crate::rotation::journal::Journal;
use crate::rotation::policy::Policy;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

pub const AFTER_HELP: &str = "\
Examples:
  patrol report                                # writes patrol-report.html
  patrol report --out /srv/www/patrol.html
  patrol report --format markdown --out -      # markdown on stdout

The page is self-contained (no scripts, fonts or images fetched): inventory, an SVG expiry timeline with
the policy's thresholds marked, recent rotations and open problems. It never contains a secret value.
Exit 3 when an owner must sign in (the page is still written, with the problem on it).";

/// `--format` of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Html,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Where to write the report (`-` for stdout) [default: patrol-report.html / patrol-report.md].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
}

/// The thresholds marked on the timeline ([`Policy::timeline_thresholds`]).
pub fn thresholds(policy: &Policy) -> Vec<u32> {
    policy.timeline_thresholds()
}

fn fmt_date(t: OffsetDateTime) -> String {
    t.date().to_string()
}

/// Builds the report from the inventory view, the journals and the policy.
pub fn build(
    view: &InventoryView,
    journals: &[Journal],
    policy: &Policy,
    title: &str,
    now: OffsetDateTime,
) -> ReportData {
    let mut tokens = Vec::new();
    let mut problems = Vec::new();
    for p in &view.problems {
        problems.push(ProblemRow {
            severity: if p.sign_in_required { Severity::Critical } else { Severity::Warning },
            summary: if p.sign_in_required {
                format!("{} must sign in ({})", p.owner, p.organization)
            } else {
                format!("The PATs of {} in {} could not be listed", p.owner, p.organization)
            },
            detail: if p.sign_in_required {
                format!("Rotation of this owner's tokens is blocked. Run `patrol login --owner {}`.", p.owner)
            } else {
                p.error.clone()
            },
        });
    }
    for r in &view.pats {
        let Some(valid_to) = r.valid_to else {
            problems.push(ProblemRow {
                severity: Severity::Info,
                summary: format!("Managed secret {} holds no PAT yet", r.secret.as_deref().unwrap_or("?")),
                detail: "The next run creates one.".into(),
            });
            continue;
        };
        let role = match r.role {
            Role::Draining => "draining (previous)",
            Role::Rotating => "rotating",
            Role::Orphan => "orphan",
            _ => "",
        };
        let state = if role.is_empty() { r.state.clone() } else { format!("{}, {role}", r.state) };
        tokens.push(TokenRow {
            display_name: r.display_name.clone(),
            organization: r.organization.clone(),
            owner: r.owner.clone(),
            managed: r.managed,
            secret: r.secret.clone(),
            scope: r.scope.clone(),
            global: r.global,
            valid_to,
            state,
        });
        if r.global && valid_to > now {
            let summary = if now < GLOBAL_PAT_CUTOFF {
                format!("All-organization PAT {:?} stops working on {}", r.display_name, fmt_date(GLOBAL_PAT_CUTOFF))
            } else {
                format!("All-organization PAT {:?} stopped working on {}", r.display_name, fmt_date(GLOBAL_PAT_CUTOFF))
            };
            problems.push(ProblemRow {
                severity: Severity::Critical,
                summary,
                detail: format!("Owner {}. Replace it with an organization-scoped PAT.", r.owner),
            });
        }
        if r.full_access && valid_to > now {
            problems.push(ProblemRow {
                severity: Severity::Warning,
                summary: format!("Full-access PAT {:?} (scope app_token)", r.display_name),
                detail: format!("Owner {}. Give it only the scopes it needs.", r.owner),
            });
        }
        if r.role == Role::Orphan && valid_to > now {
            problems.push(ProblemRow {
                severity: Severity::Warning,
                summary: format!("PAT {:?} was made by patrol but no managed secret holds it", r.display_name),
                detail: "Its token may have been removed from the policy. Revoke it if nothing uses it.".into(),
            });
        }
        if !r.managed && r.role == Role::Unmanaged && valid_to > now && r.days_left.is_some_and(|d| d < 7) {
            problems.push(ProblemRow {
                severity: Severity::Warning,
                summary: format!("Unmanaged PAT {:?} expires on {}", r.display_name, fmt_date(valid_to)),
                detail: format!(
                    "Owner {}. patrol does not rotate it; bring it under the policy or let it lapse.",
                    r.owner
                ),
            });
        }
    }
    let mut rotations = Vec::new();
    for j in journals {
        if let Some(f) = &j.last_failure {
            problems.push(ProblemRow {
                severity: Severity::Critical,
                summary: format!("Rotation of {} failed at step {}", j.secret, f.step),
                detail: format!("{} ({})", f.error, fmt_date(f.at)),
            });
        }
        if let Some(c) = &j.last {
            let new_name = view
                .pats
                .iter()
                .find(|p| p.authorization_id == Some(c.authorization_id))
                .map(|p| p.display_name.clone())
                .or_else(|| policy.token(&j.secret).map(|t| t.display_name.to_string()))
                .unwrap_or_default();
            let old_name = j
                .drains
                .iter()
                .filter_map(|d| view.pats.iter().find(|p| p.authorization_id == Some(d.pat.authorization_id)))
                .map(|p| p.display_name.clone())
                .next();
            rotations.push(RotationRow {
                at: c.finished,
                secret: j.secret.to_string(),
                old_display_name: old_name,
                new_display_name: new_name,
                new_valid_to: c.valid_to,
                outcome: format!("rotated ({})", c.reason.as_str()),
            });
        }
    }
    rotations.sort_by_key(|r| std::cmp::Reverse(r.at));
    // A consumer that cannot be written holds the previous PAT back (to the deadline): a person must act.
    for t in &view.consumers {
        for c in t.consumers.iter().filter(|c| c.state == "failing") {
            let fix = policy
                .tokens
                .iter()
                .find(|tok| tok.secret.as_str() == t.secret)
                .and_then(|tok| tok.consumers.get(&c.consumer))
                .map(crate::consumers::fix)
                .unwrap_or_default();
            problems.push(ProblemRow {
                severity: Severity::Warning,
                summary: format!(
                    "Consumer {} of {} failing since {}",
                    c.consumer,
                    t.secret,
                    c.failing_since.map(fmt_date).unwrap_or_else(|| "?".into())
                ),
                detail: format!("{} {fix}", c.last_error.as_deref().unwrap_or(&c.detail)),
            });
        }
    }
    problems.sort_by_key(|p| std::cmp::Reverse(severity_rank(p.severity)));
    ReportData {
        title: title.into(),
        generated_at: now,
        thresholds: thresholds(policy),
        tokens,
        rotations,
        problems,
        consumers: view.consumers.clone(),
        usage: view.stale_shared_dead.clone(),
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::Warning => 1,
        Severity::Info => 0,
    }
}

/// The period a report covers (its "recent rotations and revocations").
pub const PERIOD: time::Duration = time::Duration::days(7);

/// Adds the revocations of the period from the lifecycle log (`rotation::history`): previous PATs whose grace
/// ended, suspects revoked by a response, break glass, tokens retired (`patrol retire`). Rotations come from the
/// journals already.
pub fn add_revocations(data: &mut ReportData, events: &[crate::rotation::history::Event]) {
    use crate::rotation::history::Kind;
    let from = data.generated_at - PERIOD;
    let revoked: Vec<_> =
        events.iter().filter(|e| matches!(e.kind, Kind::Revoked | Kind::Retired) && e.at >= from).cloned().collect();
    data.rotations.extend(crate::audit::weekly::lifecycle_rows(&revoked));
    data.rotations.sort_by_key(|r| std::cmp::Reverse(r.at));
}

/// The lifecycle log of the report's period (a log that cannot be read is logged and leaves it out).
pub async fn period_events(local: &Local) -> Vec<crate::rotation::history::Event> {
    match crate::rotation::history::since(local.state.as_ref(), local.clock.now() - PERIOD).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("the lifecycle log was not read; the report lists no revocations: {e}");
            Vec::new()
        }
    }
}

/// Writes `text` to `out` atomically (or to stdout for `-`).
pub fn write(out: &Path, text: &str) -> Result<(), CliError> {
    if out == Path::new("-") {
        return super::output::write_stdout(text);
    }
    crate::state::write_atomic(out, text.as_bytes())
        .map_err(|e| CliError::failed(format!("cannot write the report to {}: {e}", out.display())))
}

/// Renders the report in `format`.
pub fn render(data: &ReportData, format: ReportFormat) -> String {
    match format {
        ReportFormat::Html => render_html(data),
        ReportFormat::Markdown => render_markdown(data),
    }
}

/// Loads every managed token's journal (unreadable ones are reported as problems by `status`).
pub async fn journals(local: &Local) -> Vec<Journal> {
    let mut out = Vec::new();
    for t in &local.policy.tokens {
        match crate::rotation::journal::load(local.state.as_ref(), &t.secret).await {
            Ok(l) => out.push(l.journal),
            Err(e) => tracing::warn!(secret = %t.secret, "journal not read: {e}"),
        }
    }
    out
}

pub async fn run(args: &ReportArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let (_, view) = super::inventory::gather(&local).await?;
    let journals = journals(&local).await;
    let orgs: std::collections::BTreeSet<_> = local.policy.tokens.iter().map(|t| t.organization.to_string()).collect();
    let title = format!("patrol report: {}", orgs.into_iter().collect::<Vec<_>>().join(", "));
    let mut data = build(&view, &journals, &local.policy, &title, local.clock.now());
    add_revocations(&mut data, &period_events(&local).await);
    let out = args.out.clone().unwrap_or_else(|| match args.format {
        ReportFormat::Html => PathBuf::from("patrol-report.html"),
        ReportFormat::Markdown => PathBuf::from("patrol-report.md"),
    });
    write(&out, &render(&data, args.format))?;
    if out != Path::new("-") {
        eprintln!("patrol: report written to {}", out.display());
    }
    super::inventory::listing_outcome(&view)
}
