//! The weekly report the timer sends — once a week, to `PATROL_REPORT_RECIPIENTS`. Its model is built by the
//! one report builder (`crate::report::build`, the same rules and words as `patrol report`) from the managed
//! PATs ([`managed_rows`]), and mailed as its weekly view (`crate::report::weekly`).
//!
//! Two documents in the [`StateStore`]: the findings log (`audit/findings-log`, findings of the last
//! [`LOG_KEEP`], capped at [`LOG_MAX`]), appended by every audit pass, and the last-sent timestamp
//! (`audit/weekly-report`). The send is claimed with compare-and-swap before anything goes out, so two
//! instances never both send; when no recipient got it, the claim is released and the next run tries again.

use super::finding::{Finding, rfc3339};
use super::managed::ManagedPat;
use crate::notify::{Notifier, Report, Severity, Target};
use crate::policy::Policy;
pub use crate::report::PERIOD;
use crate::report::{PatRow, ReportData, Role, render_html, render_markdown};
use crate::state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub const FINDINGS_LOG_KEY: &str = "audit/findings-log";
pub const LAST_SENT_KEY: &str = "audit/weekly-report";
/// How long findings stay in the log.
pub const LOG_KEEP: Duration = Duration::days(14);
/// The most findings the log keeps (newest win).
pub const LOG_MAX: usize = 1000;

/// A finding as the report keeps it (no evidence beyond one line): the report's own type.
pub use crate::report::LoggedFinding;

impl LoggedFinding {
    /// The findings log's line for a finding.
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

/// One inventory row per managed PAT (policy ⋈ journal ⋈ vault version: the weekly mail lists no owner's
/// PATs), for the one report builder ([`crate::report::build`]); all-organization as its `[[token]]` says.
pub fn managed_rows(managed: &[ManagedPat], policy: &Policy, now: OffsetDateTime) -> Vec<PatRow> {
    managed
        .iter()
        .map(|m| {
            let valid_to = m.valid_to.unwrap_or(now);
            PatRow {
                owner: m.owner.to_string(),
                organization: m.organization.to_string(),
                authorization_id: Some(m.authorization_id),
                display_name: m.display_name.clone(),
                managed: true,
                secret: Some(m.secret.to_string()),
                role: Role::Current,
                scope: m.scope.clone(),
                global: policy.token(&m.secret).is_some_and(|t| t.all_orgs),
                full_access: m.scope.split_whitespace().any(|s| s == "app_token"),
                valid_from: None,
                valid_to: Some(valid_to),
                days_left: Some((valid_to - now).whole_seconds().div_euclid(86_400)),
                state: if valid_to <= now { "expired".into() } else { "active".into() },
            }
        })
        .collect()
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
    use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
    use crate::report::{Inputs, build, weekly};
    use time::macros::datetime;

    const POLICY: &str = "[defaults]\norganization = \"fabrikam\"\nowner = \"a@b.test\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
        rotate_before_days = 7\ngrace_days = 2\n\
        [[token]]\nsecret = \"everything\"\ndisplay_name = \"Everything\"\nall_orgs = true\nallow_all_orgs = true\n";

    fn model(policy: &Policy, pats: &[PatRow], now: OffsetDateTime) -> ReportData {
        build(Inputs {
            title: "patrol report: fabrikam".into(),
            now,
            policy,
            pats,
            listing: &[],
            journals: &[],
            events: &[],
            findings: &[],
            consumers: vec![],
            usage: vec![],
        })
    }

    #[test]
    fn the_report_and_the_weekly_mail_judge_the_same_pat_the_same_way() {
        let policy = Policy::parse(std::path::Path::new("patrol.toml"), POLICY).unwrap();
        let now = datetime!(2026-11-10 00:00 UTC);
        let id = AuthorizationId::parse("0f8e4b5a-1111-2222-3333-444455556666").unwrap();
        let valid_to = datetime!(2026-11-30 00:00 UTC);
        // The weekly mail sees the PAT through the vault's tags (a managed PAT) ...
        let managed = ManagedPat {
            secret: SecretName::parse("everything").unwrap(),
            authorization_id: id,
            display_name: "Everything".into(),
            organization: OrgName::parse("fabrikam").unwrap(),
            owner: OwnerId::parse("a@b.test").unwrap(),
            scope: "app_token".into(),
            valid_to: Some(valid_to),
            previous: None,
            previous_revoke_after: None,
            replaced_at: None,
        };
        let mail_row = managed_rows(&[managed], &policy, now);
        // ... `patrol report` through the owner's listing (the inventory's row).
        let report_row = PatRow {
            owner: "a@b.test".into(),
            organization: "fabrikam".into(),
            authorization_id: Some(id),
            display_name: "Everything".into(),
            managed: true,
            secret: Some("everything".into()),
            role: Role::Current,
            scope: "app_token".into(),
            global: true,
            full_access: true,
            valid_from: Some(now - Duration::days(10)),
            valid_to: Some(valid_to),
            days_left: Some(20),
            state: "active".into(),
        };
        let mail = weekly(model(&policy, &mail_row, now));
        let report = model(&policy, std::slice::from_ref(&report_row), now);
        let words = |d: &ReportData| -> Vec<(Severity, String, String)> {
            d.problems.iter().map(|p| (p.severity, p.summary.clone(), p.detail.clone())).collect()
        };
        assert_eq!(words(&mail), words(&report));
        assert_eq!(
            words(&report),
            vec![
                (
                    Severity::Critical,
                    "All-organization PAT \"Everything\" of a@b.test stops working on 2026-12-01".into(),
                    "Run `patrol migrate-global` to replace it with an organization-scoped PAT.".into()
                ),
                (
                    Severity::Warning,
                    "Full-access PAT \"Everything\" of a@b.test (scope app_token)".into(),
                    "A full-access (app_token) PAT can do anything its owner can; give it only the scopes it needs."
                        .into()
                ),
            ]
        );
        // The same words in both renderings.
        let (mail_md, report_md) = (render_markdown(&mail), render_markdown(&report));
        for p in &report.problems {
            assert!(mail_md.contains(&p.summary) && report_md.contains(&p.summary), "{mail_md}\n{report_md}");
        }
        assert!(mail.title.starts_with("patrol weekly report — 2026-11-10"), "{}", mail.title);
    }
}
