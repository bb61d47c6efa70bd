//! What one run did ([`RunSummary`]) and when it counts as **failed** — the rule the three functions (the Functions host's failed-invocation
//! alerts) and `patrol rotate`'s exit code follow. Pure: a function of the plan, the per-token reports,
//! the policy and the time.
//!
//! A run fails when it leaves a managed token **at risk**: the run's work on the token failed (an error,
//! or it was blocked — e.g. the owner must sign in again) and
//!
//! 1. the token needed a new PAT now: the plan rotated it because it is `due` (within its
//!    `rotate_before_days`), `missing`, `expired`, `compromised`, an all-organization PAT that no longer
//!    works (`global-migration`), or because an operator asked (`forced`); or its current PAT is within
//!    its rotate-before window whatever the plan was doing (e.g. finishing an interrupted rotation) — left
//!    alone, consumers end up holding a PAT that stops working or that someone else may hold; or
//! 2. a previous PAT it had to revoke is still alive more than [`REVOCATION_SLACK`] after its grace
//!    ended (the next daily run had its chance too): an old value keeps working past its deadline.
//!
//! Not failures: tokens another run holds (`busy`) or left for the next run (`deferred`: the invocation
//! is `incomplete`, 202), a failed rotation for scope `drift` alone while the PAT is not yet due, a failed
//! orphan clean-up, a revocation within a day of its grace. They stay in the report's `failed` count and
//! per-token errors, and are retried by the next run.

use super::inventory::Inventory;
use super::journal::Reason;
use super::machine::TokenReport;
use super::plan::{Action, Plan};
use super::policy::Policy;
use crate::domain::SecretName;
use crate::notify::Addressed;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// How long after its grace a previous PAT may survive a failed revocation before the run fails.
pub const REVOCATION_SLACK: Duration = Duration::hours(24);

/// A token the run left at risk, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AtRisk {
    pub secret: SecretName,
    pub why: String,
    /// The token was blocked because its owner must sign in again (`patrol login`).
    pub sign_in: bool,
}

/// What one invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub dry_run: bool,
    pub plan: Plan,
    pub reports: Vec<TokenReport>,
    /// Tokens another invocation was working on (its lease was held).
    pub busy: Vec<SecretName>,
    /// Tokens left for the next run because the time budget was spent.
    pub deferred: Vec<SecretName>,
    pub rotated: usize,
    pub revoked: usize,
    pub failed: usize,
    /// Why an event was ignored, when it was.
    pub ignored: Option<String>,
    /// Tokens this run left at risk: when not empty the run failed (`rotation::verdict`).
    pub at_risk: Vec<AtRisk>,
    #[serde(skip)]
    pub notices: Vec<Addressed>,
    /// What the run found (for metrics: `rotation::measure`), how long it took, the Azure DevOps calls it made.
    #[serde(skip)]
    pub inventory: Option<Arc<Inventory>>,
    #[serde(skip)]
    pub duration: std::time::Duration,
    #[serde(skip)]
    pub calls: crate::metrics::CallCounters,
}

impl RunSummary {
    pub(super) fn new(plan: Plan, dry_run: bool) -> Self {
        Self {
            dry_run,
            plan,
            reports: Vec::new(),
            busy: Vec::new(),
            deferred: Vec::new(),
            rotated: 0,
            revoked: 0,
            failed: 0,
            ignored: None,
            at_risk: Vec::new(),
            notices: Vec::new(),
            inventory: None,
            duration: std::time::Duration::ZERO,
            calls: Default::default(),
        }
    }

    /// Fills in what metrics need (`rotation::measure`).
    pub(super) fn measured(
        mut self,
        inv: &Arc<Inventory>,
        started: std::time::Instant,
        calls: crate::metrics::CallCounters,
    ) -> Self {
        self.inventory = Some(inv.clone());
        self.duration = started.elapsed();
        self.calls = calls;
        self
    }

    /// One line for `Logs`.
    pub fn line(&self) -> String {
        let risk = if self.at_risk.is_empty() {
            String::new()
        } else {
            format!(
                "; FAILED: {} token(s) at risk: {}",
                self.at_risk.len(),
                self.at_risk.iter().map(|r| r.secret.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        // Only what happened: the counts that are not zero ("nothing changed" when none is).
        let counts = [
            (self.rotated, "rotated"),
            (self.revoked, "revoked"),
            (self.failed, "failed"),
            (self.busy.len(), "busy (another instance holds the lease)"),
            (self.deferred.len(), "deferred to the next run"),
        ];
        let mut parts: Vec<String> =
            counts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
        if parts.is_empty() {
            parts.push("nothing changed".into());
        }
        let unmanaged = match self.plan.unmanaged.len() {
            0 => String::new(),
            n => format!("; {n} unmanaged PAT(s) reported"),
        };
        format!(
            "{}{} token(s) planned: {}{unmanaged}{risk}",
            if self.dry_run { "dry run: " } else { "" },
            self.plan.entries.len(),
            parts.join(", ")
        )
    }
}

/// The tokens `summary` leaves at risk (see the module doc); empty for a dry run. `valid_to` is what the
/// inventory knew of each token's current PAT (its vault version's `valid-to` tag): a blocked token's plan
/// entry carries no view of its PAT, so this decides whether it was needed now. A blocked token whose
/// PAT is unknown (no version, unreadable store) counts as at risk.
pub fn at_risk(
    summary: &RunSummary,
    policy: &Policy,
    now: OffsetDateTime,
    valid_to: &BTreeMap<SecretName, OffsetDateTime>,
) -> Vec<AtRisk> {
    if summary.dry_run {
        return Vec::new();
    }
    let mut out = Vec::new();
    for report in &summary.reports {
        let Some(error) = &report.error else { continue };
        let Some(entry) = summary.plan.entries.iter().find(|e| e.secret.as_str() == report.secret) else { continue };
        let token = policy.token(&entry.secret);
        let sign_in =
            entry.actions.iter().any(|a| matches!(a, Action::Blocked { why } if why.contains("patrol login")));
        let mut why = None;
        if let Some(reason) = entry.rotation().filter(|r| *r != Reason::Drift) {
            why = Some(format!("its {} rotation failed", reason.as_str()));
        } else if let (Some(days_left), Some(t)) = (entry.current.as_ref().and_then(|c| c.days_left), token)
            && days_left <= i64::from(t.rotate_before_days)
        {
            why = Some(format!("its current PAT has {days_left} day(s) left and the work on it failed"));
        } else if entry.actions.iter().any(|a| matches!(a, Action::Blocked { .. })) {
            match (valid_to.get(&entry.secret), token) {
                (Some(v), Some(t)) => {
                    let days_left = (*v - now).whole_seconds().div_euclid(86_400);
                    if days_left <= i64::from(t.rotate_before_days) {
                        why = Some(format!("it is blocked and its current PAT has {days_left} day(s) left"));
                    }
                }
                _ => why = Some("it is blocked and patrol cannot tell which PAT its secret holds".to_owned()),
            }
        }
        if why.is_none() {
            for a in &entry.actions {
                if let Action::RevokePrevious { authorization_id, revoke_after, .. } = a
                    && !report.revoked.contains(authorization_id)
                    && *revoke_after + REVOCATION_SLACK <= now
                {
                    why = Some(format!(
                        "previous PAT {authorization_id} is still alive {} hour(s) after its grace ended",
                        (now - *revoke_after).whole_hours()
                    ));
                    break;
                }
            }
        }
        if let Some(why) = why {
            out.push(AtRisk { secret: entry.secret.clone(), why: format!("{why}: {error}"), sign_in });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuthorizationId;
    use crate::rotation::machine::TokenReport;
    use crate::rotation::plan::{Entry, Plan};
    use std::path::Path;
    use time::macros::datetime;

    fn summary(actions: Vec<Action>, report: TokenReport) -> RunSummary {
        let secret = SecretName::parse("tok").unwrap();
        let entry = Entry {
            secret,
            owner: crate::domain::OwnerId::parse("svc@contoso.com").unwrap(),
            organization: crate::domain::OrgName::parse("fabrikam").unwrap(),
            current: None,
            actions,
            notes: Vec::new(),
            consumers: Vec::new(),
        };
        let plan = Plan { at: datetime!(2027-01-01 00:00 UTC), entries: vec![entry], unmanaged: Vec::new() };
        let mut s = empty(plan);
        s.reports = vec![report];
        s
    }

    fn empty(plan: Plan) -> RunSummary {
        RunSummary::new(plan, false)
    }

    fn policy() -> Policy {
        let text = "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
                    [[token]]\nsecret = \"tok\"\ndisplay_name = \"T\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\n";
        Policy::parse(Path::new("patrol.toml"), text).unwrap()
    }

    #[test]
    fn a_failed_revocation_fails_the_run_only_a_day_after_the_grace() {
        let id = AuthorizationId::parse("3f0b6d1e-8a0c-4c7e-9d6b-2a1f5e4c3b2a").unwrap();
        let ended = datetime!(2027-01-10 00:00 UTC);
        let revoke =
            vec![Action::RevokePrevious { authorization_id: id, revoke_after: ended, evidence: None, alert: None }];
        let failed =
            TokenReport { secret: "tok".into(), error: Some("Azure DevOps: 503".into()), ..Default::default() };
        let no_valid_to = BTreeMap::new();
        let s = summary(revoke.clone(), failed.clone());
        assert!(at_risk(&s, &policy(), ended + Duration::hours(23), &no_valid_to).is_empty(), "within the slack");
        let r = at_risk(&s, &policy(), ended + Duration::hours(25), &no_valid_to);
        assert_eq!(r.len(), 1);
        assert!(r[0].why.contains("still alive 25 hour(s) after its grace ended") && r[0].why.contains("503"), "{r:?}");
        // Revoked after all (another action of the token failed): not at risk for it.
        let revoked = TokenReport { revoked: vec![id], ..failed.clone() };
        assert!(at_risk(&summary(revoke, revoked), &policy(), ended + Duration::days(3), &no_valid_to).is_empty());
        // A drift rotation that fails while the PAT is not due: retried, not a failure.
        let drift = summary(vec![Action::Rotate { reason: Reason::Drift }], failed.clone());
        assert!(at_risk(&drift, &policy(), ended, &no_valid_to).is_empty());
        // Forced, due, missing…: at risk. A dry run never fails.
        let mut forced = summary(vec![Action::Rotate { reason: Reason::Forced }], failed);
        assert_eq!(at_risk(&forced, &policy(), ended, &no_valid_to).len(), 1);
        forced.dry_run = true;
        assert!(at_risk(&forced, &policy(), ended, &no_valid_to).is_empty());
    }

    #[test]
    fn a_blocked_token_is_at_risk_when_due_or_unknown() {
        let blocked = vec![Action::Blocked { why: "the owner must sign in again (patrol login)".into() }];
        let failed = TokenReport { secret: "tok".into(), error: Some("blocked".into()), ..Default::default() };
        let s = summary(blocked, failed);
        let now = datetime!(2027-01-10 00:00 UTC);
        let secret = SecretName::parse("tok").unwrap();
        let later = BTreeMap::from([(secret.clone(), now + Duration::days(20))]);
        assert!(at_risk(&s, &policy(), now, &later).is_empty(), "20 days left, rotate 7 before");
        let soon = BTreeMap::from([(secret, now + Duration::days(6))]);
        let r = at_risk(&s, &policy(), now, &soon);
        assert!(r.len() == 1 && r[0].sign_in && r[0].why.contains("6 day(s) left"), "{r:?}");
        assert_eq!(at_risk(&s, &policy(), now, &BTreeMap::new()).len(), 1, "unknown PAT");
    }
}
