//! The one builder of the report's model: `patrol report` (and the demo's page) and the weekly mail the timer
//! sends both call [`build`], so a PAT's problem is judged by one rule set ([`pat_problems`]) and worded once.
//! The weekly mail is a view of the same model ([`weekly`]: its title, the period's rotations and revocations).
//!
//! The inputs are plain data: the PATs as rows ([`PatRow`]; `patrol report` lists every owner's PATs, the
//! timer takes the managed PATs from the vault's tags), the listings that failed, the journals, the period's
//! lifecycle log and findings, the consumers' view and the stale/shared/dead rows. [`build`] is pure.

use super::{ProblemRow, ReportData, RotationRow, TokenRow, UsageRow};
use crate::devops::GLOBAL_PAT_CUTOFF;
use crate::domain::AuthorizationId;
use crate::notify::Severity;
use crate::policy::Policy;
use crate::state::history::{Event, Kind};
use crate::state::journal::Journal;
use crate::timestamp::rfc3339;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The period a report covers: its rotations and revocations, its findings, the weekly mail's interval.
pub const PERIOD: Duration = Duration::days(7);

/// What patrol's role for a PAT is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The PAT a managed secret currently holds.
    Current,
    /// A managed secret's previous PAT, kept valid until its grace ends, then revoked.
    Draining,
    /// Made by a rotation that is still in flight.
    Rotating,
    /// Carries patrol's marker but nothing references it (removed from the policy, or an orphan).
    Orphan,
    /// Not patrol's: shown and alerted on, never touched.
    Unmanaged,
    /// A managed secret that holds no PAT yet (the next run creates one).
    Missing,
    /// A managed token retired with `patrol retire`: its PATs revoked, its secret disabled, never rotated again.
    Retired,
}

/// One PAT as the inventory and the reports see it (JSON field names are stable; see `docs/cli.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatRow {
    pub owner: String,
    pub organization: String,
    pub authorization_id: Option<AuthorizationId>,
    pub display_name: String,
    pub managed: bool,
    pub secret: Option<String>,
    pub role: Role,
    pub scope: String,
    pub global: bool,
    pub full_access: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    /// `active`, `expired`, or `missing`.
    pub state: String,
}

/// An (owner, organization) whose PATs could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListProblem {
    pub owner: String,
    pub organization: String,
    pub error: String,
    pub sign_in_required: bool,
}

/// An audit finding as the findings log keeps it (no evidence beyond one line); the audit pass writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedFinding {
    pub key: String,
    pub rule: String,
    pub severity: String,
    pub summary: String,
    pub evidence: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl LoggedFinding {
    pub fn severity(&self) -> Severity {
        match self.severity.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

/// Everything the model is built from.
pub struct Inputs<'a> {
    pub title: String,
    pub now: OffsetDateTime,
    pub policy: &'a Policy,
    pub pats: &'a [PatRow],
    pub listing: &'a [ListProblem],
    pub journals: &'a [Journal],
    /// The lifecycle log of the period (or longer: [`build`] keeps the period's events).
    pub events: &'a [Event],
    /// The findings of the period.
    pub findings: &'a [LoggedFinding],
    pub consumers: Vec<crate::consumers::view::TokenConsumers>,
    pub usage: Vec<UsageRow>,
}

fn fmt_date(t: OffsetDateTime) -> String {
    t.date().to_string()
}

/// The one rule set for a PAT's problems (`patrol report` and the weekly mail).
pub fn pat_problems(r: &PatRow, now: OffsetDateTime) -> Vec<ProblemRow> {
    let mut problems = Vec::new();
    if r.role == Role::Retired {
        // Retired on purpose (`patrol retire`): its PATs are revoked and nothing will create one.
        return problems;
    }
    let Some(valid_to) = r.valid_to else {
        problems.push(ProblemRow {
            severity: Severity::Info,
            summary: format!("Managed secret {} holds no PAT yet", r.secret.as_deref().unwrap_or("?")),
            detail: "The next run creates one.".into(),
        });
        return problems;
    };
    if valid_to <= now {
        return problems;
    }
    if r.global {
        // Critical at any distance from the cutoff (the stricter of the two former rules).
        problems.push(ProblemRow {
            severity: Severity::Critical,
            summary: format!(
                "All-organization PAT \"{}\" of {} {} working on {}",
                r.display_name,
                r.owner,
                if now >= GLOBAL_PAT_CUTOFF { "stopped" } else { "stops" },
                fmt_date(GLOBAL_PAT_CUTOFF)
            ),
            detail: if r.managed {
                "Run `patrol migrate-global` to replace it with an organization-scoped PAT.".into()
            } else {
                "Replace it with an organization-scoped PAT (not managed by patrol).".into()
            },
        });
    }
    if r.full_access {
        problems.push(ProblemRow {
            severity: Severity::Warning,
            summary: format!("Full-access PAT \"{}\" of {} (scope app_token)", r.display_name, r.owner),
            detail: "A full-access (app_token) PAT can do anything its owner can; give it only the scopes it needs."
                .into(),
        });
    }
    if r.role == Role::Orphan {
        problems.push(ProblemRow {
            severity: Severity::Warning,
            summary: format!("PAT \"{}\" was made by patrol but no managed secret holds it", r.display_name),
            detail: "Its token may have been removed from the policy. Revoke it if nothing uses it.".into(),
        });
    }
    if !r.managed && r.role == Role::Unmanaged && r.days_left.is_some_and(|d| d < 7) {
        problems.push(ProblemRow {
            severity: Severity::Warning,
            summary: format!("Unmanaged PAT \"{}\" expires on {}", r.display_name, fmt_date(valid_to)),
            detail: format!("Owner {}. patrol does not rotate it; bring it under the policy or let it lapse.", r.owner),
        });
    }
    problems
}

/// A listing that failed: the owner must sign in (critical), or the PATs could not be listed.
pub fn listing_problem(p: &ListProblem) -> ProblemRow {
    if p.sign_in_required {
        ProblemRow {
            severity: Severity::Critical,
            summary: format!("{} must sign in ({})", p.owner, p.organization),
            detail: format!("Rotation of this owner's tokens is blocked. Run `patrol login --owner {}`.", p.owner),
        }
    } else {
        ProblemRow {
            severity: Severity::Warning,
            summary: format!("The PATs of {} in {} could not be listed", p.owner, p.organization),
            detail: p.error.clone(),
        }
    }
}

/// An audit finding of the period.
pub fn finding_problem(f: &LoggedFinding) -> ProblemRow {
    ProblemRow {
        severity: f.severity(),
        summary: f.summary.clone(),
        detail: format!("{} — {} (detected {})", f.rule, f.evidence, rfc3339(f.at)),
    }
}

/// The report's "recent rotations" rows from the lifecycle log: created, rotated and revoked PATs, newest
/// first. A revoked PAT's row shows it as the old PAT, no new one, and its validity ending when revoked.
pub fn lifecycle_rows(events: &[Event]) -> Vec<RotationRow> {
    let mut rows: Vec<RotationRow> = events
        .iter()
        .map(|e| {
            let secret = e.secret.clone().unwrap_or_else(|| "—".into());
            let pat = format!("{} (PAT {}, scope {})", e.display_name, e.authorization_id, e.scope);
            match e.kind {
                Kind::Created | Kind::Rotated => RotationRow {
                    at: e.at,
                    secret,
                    old_display_name: e.replaced.map(|id| format!("PAT {id}")),
                    new_display_name: pat,
                    new_valid_to: e.valid_to.unwrap_or(e.at),
                    outcome: if e.kind == Kind::Created {
                        format!("created ({})", e.detail)
                    } else {
                        format!("rotated ({})", e.detail)
                    },
                },
                Kind::Revoked | Kind::Retired => RotationRow {
                    at: e.at,
                    secret,
                    old_display_name: Some(pat),
                    new_display_name: "—".into(),
                    new_valid_to: e.at,
                    outcome: if e.kind == Kind::Retired {
                        format!("retired ({})", e.detail)
                    } else {
                        format!("revoked ({})", e.detail)
                    },
                },
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.at));
    rows
}

/// The one report model. Problems, worst first: failed listings, each PAT's ([`pat_problems`]), failed
/// rotations (journals), failing consumers, the period's findings. Rotations: the period's lifecycle log
/// (created, rotated, revoked, retired PATs) and each journal's last rotation that the period's log does not
/// already show (an older one), newest first.
pub fn build(i: Inputs<'_>) -> ReportData {
    let now = i.now;
    let from = now - PERIOD;
    let mut problems: Vec<ProblemRow> = i.listing.iter().map(listing_problem).collect();
    let mut tokens = Vec::new();
    for r in i.pats {
        problems.extend(pat_problems(r, now));
        let Some(valid_to) = r.valid_to else { continue };
        let role = match r.role {
            Role::Draining => "draining (previous)",
            Role::Rotating => "rotating",
            Role::Orphan => "orphan",
            _ => "",
        };
        tokens.push(TokenRow {
            display_name: r.display_name.clone(),
            organization: r.organization.clone(),
            owner: r.owner.clone(),
            managed: r.managed,
            secret: r.secret.clone(),
            scope: r.scope.clone(),
            global: r.global,
            valid_to,
            state: if role.is_empty() { r.state.clone() } else { format!("{}, {role}", r.state) },
        });
    }
    let events: Vec<Event> = i.events.iter().filter(|e| e.at >= from).cloned().collect();
    let mut rotations = lifecycle_rows(&events);
    for j in i.journals {
        if let Some(f) = &j.last_failure {
            problems.push(ProblemRow {
                severity: Severity::Critical,
                summary: format!("Rotation of {} failed at step {}", j.secret, f.step),
                detail: format!("{} ({})", f.error, fmt_date(f.at)),
            });
        }
        let Some(c) = &j.last else { continue };
        let logged = events
            .iter()
            .any(|e| matches!(e.kind, Kind::Created | Kind::Rotated) && e.authorization_id == c.authorization_id);
        if logged {
            continue;
        }
        let new_name = i
            .pats
            .iter()
            .find(|p| p.authorization_id == Some(c.authorization_id))
            .map(|p| p.display_name.clone())
            .or_else(|| i.policy.token(&j.secret).map(|t| t.display_name.to_string()))
            .unwrap_or_default();
        let old_name = j
            .drains
            .iter()
            .filter_map(|d| i.pats.iter().find(|p| p.authorization_id == Some(d.pat.authorization_id)))
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
    rotations.sort_by_key(|r| std::cmp::Reverse(r.at));
    // A consumer that cannot be written holds the previous PAT back (to the deadline): a person must act.
    for t in &i.consumers {
        for c in t.consumers.iter().filter(|c| c.state == "failing") {
            let fix = i
                .policy
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
    problems.extend(i.findings.iter().filter(|f| f.at >= from).map(finding_problem));
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    ReportData {
        title: i.title,
        generated_at: now,
        thresholds: i.policy.timeline_thresholds(),
        tokens,
        rotations,
        problems,
        consumers: i.consumers,
        usage: i.usage,
    }
}

/// The weekly mail: the same model, titled for the week, its rotations and revocations those of the period.
pub fn weekly(mut data: ReportData) -> ReportData {
    let from = data.generated_at - PERIOD;
    data.title = format!("patrol weekly report — {}", super::date(data.generated_at));
    data.rotations.retain(|r| r.at >= from);
    data
}

/// Every managed token's journal (an unreadable one is logged and left out; `patrol status` reports it).
pub async fn journals(state: &dyn crate::state::StateStore, policy: &Policy) -> Vec<Journal> {
    let mut out = Vec::new();
    for t in &policy.tokens {
        match crate::state::journal::load(state, &t.secret).await {
            Ok(l) => out.push(l.journal),
            Err(e) => tracing::warn!(secret = %t.secret, "journal not read: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const POLICY: &str = "[defaults]\norganization = \"fabrikam\"\nowner = \"a@b.test\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\n\
        [[token]]\nsecret = \"g\"\ndisplay_name = \"g\"\n";

    fn row(name: &str, global: bool, scope: &str) -> PatRow {
        let valid_to = datetime!(2026-12-20 00:00 UTC);
        PatRow {
            owner: "a@b.test".into(),
            organization: "fabrikam".into(),
            authorization_id: None,
            display_name: name.into(),
            managed: true,
            secret: Some(name.into()),
            role: Role::Current,
            scope: scope.into(),
            global,
            full_access: scope.split_whitespace().any(|s| s == "app_token"),
            valid_from: None,
            valid_to: Some(valid_to),
            days_left: None,
            state: "active".into(),
        }
    }

    fn model(now: OffsetDateTime, pats: &[PatRow], findings: &[LoggedFinding]) -> ReportData {
        let policy = Policy::parse(std::path::Path::new("patrol.toml"), POLICY).unwrap();
        weekly(build(Inputs {
            title: String::new(),
            now,
            policy: &policy,
            pats,
            listing: &[],
            journals: &[],
            events: &[],
            findings,
            consumers: vec![],
            usage: vec![],
        }))
    }

    #[test]
    fn a_retired_token_is_no_problem_but_a_managed_secret_without_a_pat_is() {
        let now = datetime!(2026-12-02 00:00 UTC);
        let empty = PatRow { valid_to: None, ..row("new", false, "vso.code") };
        assert_eq!(pat_problems(&empty, now).len(), 1, "holds no PAT yet");
        let retired = PatRow { role: Role::Retired, state: "retired".into(), ..empty };
        assert!(pat_problems(&retired, now).is_empty(), "{:?}", pat_problems(&retired, now));
    }

    #[test]
    fn findings_and_global_or_full_access_pats_become_problems_worst_first() {
        let now = datetime!(2026-11-10 00:00 UTC);
        let f = LoggedFinding {
            key: "burst:1".into(),
            rule: "burst".into(),
            severity: "warning".into(),
            summary: "PAT x made 500 calls".into(),
            evidence: "audit entry 1".into(),
            at: now,
        };
        let d = model(now, &[row("g", true, "vso.code"), row("f", false, "app_token")], &[f]);
        assert_eq!(d.problems.len(), 3);
        assert_eq!(d.problems[0].severity, Severity::Critical, "global PAT within 30 days of the cutoff");
        assert!(d.problems[0].summary.contains("2026-12-01"));
        assert!(d.problems.iter().any(|p| p.summary.contains("500 calls") && p.detail.starts_with("burst")));
        // One rule for both reports: an all-organization PAT is critical at any distance from the cutoff
        // (the weekly mail said "warning" more than 30 days before it; `patrol report` said "critical").
        let later = model(datetime!(2026-01-10 00:00 UTC), &[row("g", true, "vso.code")], &[]);
        assert_eq!(later.problems[0].severity, Severity::Critical);
    }

    #[test]
    fn the_weekly_view_keeps_the_periods_rotations() {
        let now = datetime!(2026-11-10 00:00 UTC);
        let mut d = model(now, &[], &[]);
        let rotation = |at| RotationRow {
            at,
            secret: "s".into(),
            old_display_name: None,
            new_display_name: "n".into(),
            new_valid_to: at,
            outcome: "rotated (expiring)".into(),
        };
        d.rotations = vec![rotation(now - Duration::days(1)), rotation(now - Duration::days(20))];
        let w = weekly(d);
        assert_eq!(w.rotations.len(), 1);
        assert_eq!(w.title, "patrol weekly report — 2026-11-10");
    }
}
