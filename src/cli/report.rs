//! `patrol report`: the weekly page — the report's model ([`crate::report::build`], the builder the weekly mail
//! uses too) from the real inventory (every PAT of every configured owner and organization), the journals
//! (recent rotations, failures), the period's lifecycle log and findings and the policy's expiry thresholds,
//! then the self-contained HTML page or the markdown.

use super::CliError;
use super::inventory::InventoryView;
use super::runtime::Local;
use crate::report::{Inputs, PERIOD, ReportData, render_html, render_markdown};
use crate::rotation::journal::Journal;
use crate::rotation::policy::Policy;
use std::path::{Path, PathBuf};

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

/// The report's model from the inventory view, through the one builder ([`crate::report::build`]): the
/// journals, the period's lifecycle log and findings are read here (read-only).
pub async fn model(local: &Local, view: &InventoryView, title: &str) -> ReportData {
    let now = local.clock.now();
    let journals = journals(local).await;
    let events = period_events(local).await;
    let findings = match crate::audit::weekly::findings_since(local.state.as_ref(), now - PERIOD).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("the findings log was not read; the report lists no findings: {e}");
            Vec::new()
        }
    };
    crate::report::build(Inputs {
        title: title.into(),
        now,
        policy: &local.policy,
        pats: &view.pats,
        listing: &view.problems,
        journals: &journals,
        events: &events,
        findings: &findings,
        consumers: view.consumers.clone(),
        usage: view.stale_shared_dead.clone(),
    })
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
    crate::report::journals(local.state.as_ref(), &local.policy).await
}

pub async fn run(args: &ReportArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let (_, view) = super::inventory::gather(&local).await?;
    let orgs: std::collections::BTreeSet<_> = local.policy.tokens.iter().map(|t| t.organization.to_string()).collect();
    let title = format!("patrol report: {}", orgs.into_iter().collect::<Vec<_>>().join(", "));
    let data = model(&local, &view, &title).await;
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
