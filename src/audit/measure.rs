//! An audit pass as metrics (`crate::metrics`): findings by rule and severity, and how far behind now each
//! organization's audit log has been read (from its checkpoint, so a failing poll shows a growing lag).
//! `patrol audit` reports its findings with `patrol.run.dry_run=true` (it reads a window the timer may
//! already have counted) and the lag of the timer's checkpoints, which it reads without moving them.

use super::ingest::{Checkpoint, checkpoint_key};
use super::pass::PassSummary;
use crate::metrics::{self as m, Point, attr};
use crate::state::StateStore;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `state` holds the checkpoints the lag is measured from; `dry_run`: the pass only read (`patrol audit`).
pub async fn pass_points(
    summary: &PassSummary,
    state: &dyn StateStore,
    now: OffsetDateTime,
    dry_run: bool,
) -> Vec<Point> {
    let mut out = Vec::new();
    let mut counts: BTreeMap<(String, String, &'static str), u32> = BTreeMap::new();
    for (org, f) in summary.reports.iter().flat_map(|r| r.findings.iter().map(move |f| (r.organization.to_string(), f)))
    {
        let severity = match f.severity {
            crate::notify::Severity::Info => "info",
            crate::notify::Severity::Warning => "warning",
            crate::notify::Severity::Critical => "critical",
        };
        *counts.entry((org, f.rule.to_string(), severity)).or_default() += 1;
    }
    for ((org, rule, severity), n) in counts {
        out.push(
            Point::new(&m::AUDIT_FINDINGS, f64::from(n))
                .with(attr::ORGANIZATION, org)
                .with(attr::RULE, rule)
                .with(attr::SEVERITY, severity)
                .with(attr::DRY_RUN, dry_run),
        );
    }
    for o in &summary.organizations {
        let end = match state.load(&checkpoint_key(&o.organization)).await {
            Ok(Some((body, _))) => serde_json::from_slice::<Checkpoint>(&body).ok().and_then(|c| c.window_end),
            _ => None,
        };
        // Never read: no lag figure (the auditing-off / unreadable warnings say why).
        if let Some(end) = end {
            out.push(
                Point::new(&m::AUDIT_LAG, (now - end).as_seconds_f64().max(0.0))
                    .with(attr::ORGANIZATION, o.organization.as_str()),
            );
        }
    }
    out
}
