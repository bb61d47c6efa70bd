//! A run as metrics (`crate::metrics`, `docs/metrics.md`): what each managed token and unmanaged PAT looks
//! like after the run, and what the run did. Computed only when metrics are exported (the engine keeps the
//! run's inventory in the summary; this reads the journals of the tokens it rotated, nothing else).

use super::engine::RunSummary;
use super::journal;
use crate::consumers::state::DeliveryStep;
use crate::domain::AuthorizationId;
use crate::metrics::{self as m, Point, attr};
use crate::state::StateStore;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The points of one engine run (managed tokens, unmanaged PATs, owners, run counts, Azure DevOps calls).
pub async fn run_points(summary: &RunSummary, store: &dyn StateStore) -> Vec<Point> {
    let mut out = Vec::new();
    let Some(inv) = summary.inventory.as_deref() else { return out };
    let now = summary.plan.at;
    let left = |valid_to: OffsetDateTime| (valid_to - now).as_seconds_f64();
    let reports: BTreeMap<&str, &super::machine::TokenReport> =
        summary.reports.iter().map(|r| (r.secret.as_str(), r)).collect();
    for e in &summary.plan.entries {
        let report = reports.get(e.secret.as_str()).copied();
        let failing = report.is_some_and(|r| r.error.is_some()) || summary.at_risk.iter().any(|r| r.secret == e.secret);
        let token = |p: Point| {
            p.with(attr::SECRET, e.secret.as_str())
                .with(attr::ORGANIZATION, e.organization.as_str())
                .with(attr::OWNER, e.owner.as_str())
        };
        let ts = inv.tokens.get(&e.secret);
        let listing = inv.owner_pats(&e.owner, &e.organization);
        let valid_to_of = |id: AuthorizationId| {
            listing.and_then(|o| o.pats.iter().find(|p| p.authorization_id == id)).map(|p| p.valid_to)
        };
        let revoked: &[AuthorizationId] = report.map(|r| r.revoked.as_slice()).unwrap_or_default();
        // The current PAT after the run, and the previous ones still draining.
        let rotated = report.and_then(|r| r.rotated.as_ref());
        let before = e.current.as_ref().and_then(|c| c.authorization_id.map(|id| (id, c.valid_to)));
        let current = match rotated {
            Some(c) => Some((c.authorization_id, Some(c.valid_to))),
            None => before,
        };
        let mut draining: Vec<AuthorizationId> =
            ts.map(|t| t.journal.drains.iter().map(|d| d.pat.authorization_id).collect()).unwrap_or_default();
        if rotated.is_some()
            && let Some((id, _)) = before
        {
            draining.push(id);
        }
        draining.retain(|id| !revoked.contains(id) && Some(*id) != current.map(|c| c.0));
        draining.sort();
        draining.dedup();
        if let Some((id, Some(valid_to))) = current {
            out.push(
                token(Point::new(&m::PAT_EXPIRY, left(valid_to)))
                    .with(attr::PAT_STATE, if failing { "failing" } else { "current" })
                    .with(attr::AUTHORIZATION_ID, id.to_string())
                    .with(attr::MANAGED, true),
            );
        }
        for id in &draining {
            if let Some(valid_to) = valid_to_of(*id) {
                out.push(
                    token(Point::new(&m::PAT_EXPIRY, left(valid_to)))
                        .with(attr::PAT_STATE, "draining")
                        .with(attr::AUTHORIZATION_ID, id.to_string())
                        .with(attr::MANAGED, true),
                );
            }
        }
        let state = if failing {
            "failing"
        } else if !draining.is_empty() {
            "draining"
        } else {
            "current"
        };
        out.push(token(Point::new(&m::TOKEN_STATE, 1.0)).with(attr::TOKEN_STATE, state));
        if failing {
            out.push(token(Point::new(&m::ROTATION_FAILURES, 1.0)));
        }
        // Deliveries of the current PAT (the journal as the run left it, for tokens it rotated).
        let deliveries = match rotated {
            Some(_) => journal::load(store, &e.secret).await.ok().map(|l| l.journal.deliveries),
            None => ts.map(|t| t.journal.deliveries.clone()),
        };
        if let (Some(deliveries), Some((id, _))) = (deliveries, current) {
            let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
            for d in deliveries.iter().filter(|d| d.authorization_id == id) {
                let s = match (&d.step, d.failing_since) {
                    (DeliveryStep::Delivered { .. } | DeliveryStep::ReadsVault, _) => "delivered",
                    (_, Some(_)) => "failing",
                    _ => "pending",
                };
                *counts.entry(s).or_default() += 1;
            }
            if !deliveries.is_empty() {
                for s in ["delivered", "pending", "failing"] {
                    let n = counts.get(s).copied().unwrap_or(0);
                    out.push(token(Point::new(&m::CONSUMER_DELIVERIES, f64::from(n))).with(attr::DELIVERY_STATE, s));
                }
            }
        }
    }
    for u in &summary.plan.unmanaged {
        out.push(
            Point::new(&m::PAT_EXPIRY, left(u.pat.valid_to))
                .with(attr::ORGANIZATION, u.organization.as_str())
                .with(attr::OWNER, u.owner.as_str())
                .with(attr::PAT_STATE, "unmanaged")
                .with(attr::AUTHORIZATION_ID, u.pat.authorization_id.to_string())
                .with(attr::MANAGED, false),
        );
    }
    for o in &inv.owners {
        out.push(
            Point::new(&m::SIGN_IN_REQUIRED, if o.sign_in_required { 1.0 } else { 0.0 })
                .with(attr::ORGANIZATION, o.organization.as_str())
                .with(attr::OWNER, o.owner.as_str()),
        );
    }
    let dry = summary.dry_run;
    let count = |result: &'static str, n: usize| {
        Point::new(&m::RUN_TOKENS, n as f64).with(attr::RUN_RESULT, result).with(attr::DRY_RUN, dry)
    };
    let planned = summary.plan.entries.iter().filter(|e| !e.is_noop()).count();
    out.push(count("planned", planned));
    out.push(count("rotated", summary.rotated));
    out.push(count("revoked", summary.revoked));
    out.push(count("failed", summary.failed));
    out.push(count("busy", summary.busy.len()));
    out.push(count("deferred", summary.deferred.len()));
    let outcome = outcome(summary);
    out.push(
        Point::new(&m::RUN_DURATION, summary.duration.as_secs_f64())
            .with(attr::OUTCOME, outcome)
            .with(attr::DRY_RUN, dry),
    );
    out.extend(summary.calls.points());
    out
}

/// The run's outcome, as the functions report it: failed (a token left at risk), ignored, incomplete
/// (busy or deferred tokens), planned (dry run) or completed.
pub fn outcome(summary: &RunSummary) -> &'static str {
    if !summary.at_risk.is_empty() {
        "failed"
    } else if summary.ignored.is_some() {
        "ignored"
    } else if !summary.deferred.is_empty() || !summary.busy.is_empty() {
        "incomplete"
    } else if summary.dry_run {
        "planned"
    } else {
        "completed"
    }
}
