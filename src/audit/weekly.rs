//! The weekly report the timer sends: the managed inventory, expiries against the thresholds, rotations,
//! and the week's findings as problems — once a week, to `PATROL_REPORT_RECIPIENTS`.
//!
//! Two documents in the [`StateStore`]: the findings log (`audit/findings-log`, findings of the last
//! [`LOG_KEEP`], capped at [`LOG_MAX`]), appended by every audit pass, and the last-sent timestamp
//! (`audit/weekly-report`). The send is claimed with compare-and-swap before anything goes out, so two
//! instances never both send; when no recipient got it, the claim is released and the next run tries again.

use super::finding::{Finding, rfc3339};
use super::managed::ManagedPat;
use crate::devops::GLOBAL_PAT_CUTOFF;
use crate::notify::{Notifier, Report, Severity, Target};
use crate::report::{ProblemRow, ReportData, RotationRow, TokenRow, render_html, render_markdown};
use crate::rotation::history::{Event, Kind};
use crate::state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub const FINDINGS_LOG_KEY: &str = "audit/findings-log";
pub const LAST_SENT_KEY: &str = "audit/weekly-report";
pub const PERIOD: Duration = Duration::days(7);
/// How long findings stay in the log.
pub const LOG_KEEP: Duration = Duration::days(14);
/// The most findings the log keeps (newest win).
pub const LOG_MAX: usize = 1000;

/// A finding as the report keeps it (no evidence beyond one line).
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
    pub fn of(f: &Finding) -> Self {
        Self {
            key: f.key(),
            rule: f.rule.to_string(),
            severity: crate::report::severity_word(f.severity).to_owned(),
            summary: f.summary.clone(),
            evidence: format!(
                "audit entry {} at {}: {} from {}",
                f.evidence.entry_id,
                rfc3339(f.evidence.timestamp),
                f.evidence.action_id,
                if f.evidence.ip_address.is_empty() { "-" } else { &f.evidence.ip_address }
            ),
            at: f.detected_at,
        }
    }

    fn severity(&self) -> Severity {
        match self.severity.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FindingsLog {
    findings: Vec<LoggedFinding>,
}

#[derive(Debug, thiserror::Error)]
pub enum WeeklyError {
    #[error("weekly report state: {0}")]
    State(#[from] StateError),
    #[error("weekly report state {key} is corrupt: {message}")]
    Corrupt { key: &'static str, message: String },
    #[error("PATROL_REPORT_RECIPIENTS: {0}")]
    Recipients(String),
}

fn corrupt(key: &'static str) -> impl Fn(serde_json::Error) -> WeeklyError {
    move |e| WeeklyError::Corrupt { key, message: e.to_string() }
}

/// Appends findings to the log (a finding already logged under the same key is kept once).
pub async fn record_findings(
    state: &dyn StateStore,
    findings: &[Finding],
    now: OffsetDateTime,
) -> Result<(), WeeklyError> {
    if findings.is_empty() {
        return Ok(());
    }
    for _ in 0..5 {
        let (mut log, etag) = match state.load(FINDINGS_LOG_KEY).await? {
            Some((b, t)) => (serde_json::from_slice::<FindingsLog>(&b).map_err(corrupt(FINDINGS_LOG_KEY))?, Some(t)),
            None => (FindingsLog::default(), None),
        };
        for f in findings {
            let key = f.key();
            if !log.findings.iter().any(|l| l.key == key) {
                log.findings.push(LoggedFinding::of(f));
            }
        }
        log.findings.retain(|l| now - l.at <= LOG_KEEP);
        log.findings.sort_by_key(|l| l.at);
        let excess = log.findings.len().saturating_sub(LOG_MAX);
        log.findings.drain(..excess);
        let body = serde_json::to_vec(&log).map_err(corrupt(FINDINGS_LOG_KEY))?;
        match state.save(FINDINGS_LOG_KEY, &body, etag.as_ref()).await {
            Ok(_) => return Ok(()),
            Err(StateError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(WeeklyError::State(StateError::Conflict { key: FINDINGS_LOG_KEY.into(), expected: None }))
}

/// Findings logged since `since`, oldest first.
pub async fn findings_since(state: &dyn StateStore, since: OffsetDateTime) -> Result<Vec<LoggedFinding>, WeeklyError> {
    let Some((body, _)) = state.load(FINDINGS_LOG_KEY).await? else { return Ok(Vec::new()) };
    let log: FindingsLog = serde_json::from_slice(&body).map_err(corrupt(FINDINGS_LOG_KEY))?;
    Ok(log.findings.into_iter().filter(|l| l.at >= since).collect())
}

/// One inventory row per managed PAT.
pub fn token_rows(managed: &[ManagedPat], now: OffsetDateTime) -> Vec<TokenRow> {
    managed
        .iter()
        .map(|m| {
            let valid_to = m.valid_to.unwrap_or(now);
            TokenRow {
                display_name: m.display_name.clone(),
                organization: m.organization.to_string(),
                owner: m.owner.to_string(),
                managed: true,
                secret: Some(m.secret.to_string()),
                scope: m.scope.clone(),
                global: false,
                valid_to,
                state: if valid_to <= now { "expired".into() } else { "active".into() },
            }
        })
        .collect()
}

/// The report's "recent rotations" rows from the lifecycle log: created, rotated and revoked PATs, newest
/// first. A revoked PAT's row shows it as the old PAT, no new one, and its validity ending when revoked.
pub fn lifecycle_rows(events: &[Event]) -> Vec<RotationRow> {
    let mut rows: Vec<RotationRow> = events
        .iter()
        .map(|e| {
            let secret = e.secret.clone().unwrap_or_else(|| "—".into());
            match e.kind {
                Kind::Created | Kind::Rotated => RotationRow {
                    at: e.at,
                    secret,
                    old_display_name: e.replaced.map(|id| format!("PAT {id}")),
                    new_display_name: format!("{} (PAT {}, scope {})", e.display_name, e.authorization_id, e.scope),
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
                    old_display_name: Some(format!(
                        "{} (PAT {}, scope {})",
                        e.display_name, e.authorization_id, e.scope
                    )),
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

/// The report (pure): tokens and rotations as given; the week's findings and every all-organization or
/// full-access PAT become problems, worst first.
pub fn build(
    now: OffsetDateTime,
    tokens: Vec<TokenRow>,
    rotations: Vec<RotationRow>,
    findings: &[LoggedFinding],
    thresholds: Vec<u32>,
) -> ReportData {
    let mut problems: Vec<ProblemRow> = findings
        .iter()
        .map(|f| ProblemRow {
            severity: f.severity(),
            summary: f.summary.clone(),
            detail: format!("{} — {} (detected {})", f.rule, f.evidence, rfc3339(f.at)),
        })
        .collect();
    for t in tokens.iter().filter(|t| t.global && matches!(t.state.as_str(), "active" | "stopped-working")) {
        problems.push(ProblemRow {
            severity: if GLOBAL_PAT_CUTOFF - now <= Duration::days(30) {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary: format!(
                "All-organization PAT \"{}\" of {} {} working on 2026-12-01",
                t.display_name,
                t.owner,
                if now >= GLOBAL_PAT_CUTOFF { "stopped" } else { "stops" }
            ),
            detail: if t.managed {
                "Run `patrol migrate-global` to replace it with an organization-scoped PAT.".into()
            } else {
                "Replace it with an organization-scoped PAT (not managed by patrol).".into()
            },
        });
    }
    for t in tokens.iter().filter(|t| t.full_access() && t.state == "active") {
        problems.push(ProblemRow {
            severity: Severity::Warning,
            summary: format!("Full-access PAT \"{}\" of {}", t.display_name, t.owner),
            detail: "A full-access (app_token) PAT can do anything its owner can; narrow its scopes.".into(),
        });
    }
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    ReportData {
        title: format!("patrol weekly report — {}", crate::report::date(now)),
        generated_at: now,
        thresholds,
        tokens,
        rotations,
        problems,
        consumers: Vec::new(),
        usage: Vec::new(),
    }
}

/// What [`send_if_due`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WeeklyOutcome {
    NotDue {
        #[serde(with = "time::serde::rfc3339")]
        next: OffsetDateTime,
    },
    NoRecipients,
    /// Another instance claimed this week's report first.
    Claimed,
    Sent {
        delivered: usize,
        failed: Vec<String>,
    },
    /// Nobody got it; the claim was released so the next run tries again.
    Failed {
        failed: Vec<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LastSent {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

/// Sends the weekly report when a week has passed since the last one (or none was ever sent).
/// `data` is only built when the report is due.
pub async fn send_if_due(
    state: &dyn StateStore,
    notifier: &Notifier,
    recipients: &[String],
    now: OffsetDateTime,
    data: impl FnOnce() -> ReportData,
) -> Result<WeeklyOutcome, WeeklyError> {
    let targets: Vec<Target> = recipients
        .iter()
        .map(|r| Target::parse(r).map_err(|e| WeeklyError::Recipients(e.to_string())))
        .collect::<Result<_, _>>()?;
    let loaded = state.load(LAST_SENT_KEY).await?;
    let previous = match &loaded {
        Some((b, _)) => Some(serde_json::from_slice::<LastSent>(b).map_err(corrupt(LAST_SENT_KEY))?),
        None => None,
    };
    if let Some(p) = &previous
        && now - p.at < PERIOD
    {
        return Ok(WeeklyOutcome::NotDue { next: p.at + PERIOD });
    }
    if targets.is_empty() {
        return Ok(WeeklyOutcome::NoRecipients);
    }
    let claim = serde_json::to_vec(&LastSent { at: now }).map_err(corrupt(LAST_SENT_KEY))?;
    let etag = match state.save(LAST_SENT_KEY, &claim, loaded.as_ref().map(|(_, t)| t)).await {
        Ok(t) => t,
        Err(StateError::Conflict { .. }) => return Ok(WeeklyOutcome::Claimed),
        Err(e) => return Err(e.into()),
    };
    let data = data();
    let severity = data.problems.iter().map(|p| p.severity).max().unwrap_or(Severity::Info);
    let report = Report {
        subject: format!("{} ({} problems)", data.title, data.problems.len()),
        text: render_markdown(&data),
        html: Some(render_html(&data)),
        severity,
    };
    let delivery = notifier.send_report(&targets, &report).await;
    let failed: Vec<String> =
        delivery.failures().map(|o| format!("{} via {}: {:?}", o.target, o.channel, o.status)).collect();
    let delivered = delivery.outcomes.len() - failed.len();
    if delivered == 0 {
        // Release the claim (only if it is still ours).
        let back = match &previous {
            Some(p) => serde_json::to_vec(&LastSent { at: p.at }).map_err(corrupt(LAST_SENT_KEY))?,
            None => serde_json::to_vec(&LastSent { at: now - PERIOD - Duration::seconds(1) })
                .map_err(corrupt(LAST_SENT_KEY))?,
        };
        if let Err(e) = state.save(LAST_SENT_KEY, &back, Some(&etag)).await {
            tracing::warn!(error = %e, "could not release the weekly report claim");
        }
        return Ok(WeeklyOutcome::Failed { failed });
    }
    Ok(WeeklyOutcome::Sent { delivered, failed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn row(name: &str, global: bool, scope: &str) -> TokenRow {
        TokenRow {
            display_name: name.into(),
            organization: "fabrikam".into(),
            owner: "a@b.test".into(),
            managed: true,
            secret: Some(name.into()),
            scope: scope.into(),
            global,
            valid_to: datetime!(2026-12-20 00:00 UTC),
            state: "active".into(),
        }
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
        let d = build(now, vec![row("g", true, "vso.code"), row("f", false, "app_token")], vec![], &[f], vec![30]);
        assert_eq!(d.problems.len(), 3);
        assert_eq!(d.problems[0].severity, Severity::Critical, "global PAT within 30 days of the cutoff");
        assert!(d.problems[0].summary.contains("2026-12-01"));
        assert!(d.problems.iter().any(|p| p.summary.contains("500 calls") && p.detail.starts_with("burst")));
        let later = build(datetime!(2026-01-10 00:00 UTC), vec![row("g", true, "vso.code")], vec![], &[], vec![]);
        assert_eq!(later.problems[0].severity, Severity::Warning);
    }
}
