//! Responding to findings: a pure plan (per finding, the action the policy chooses for its severity, as a
//! notice with the evidence), its execution (revoke through the owner's PAT API; rotate-now through the
//! rotation engine's state machine, behind [`RotateNow`]), and the evidence gate that decides when a
//! rotated-away PAT may be revoked.
//!
//! Rotate and revoke only ever touch PATs patrol manages; for any other PAT the response is an alert that
//! says so. In dry run nothing is executed and every notice says what would have been done.

use super::context::{KnownPat, LastUse, PatStatus};
use super::finding::{Finding, rfc3339};
use super::policy::{Action, AuditSettings, RevocationGate, RevocationMode, RuleId};
use crate::devops::{Connector, DevOpsError};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::notify::{Addressed, Notice, Severity, Target};
use async_trait::async_trait;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// What will be done about one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Only tell people.
    Alert,
    /// Rotate the managed secret now and revoke the suspect PAT at once.
    RotateNow { secret: SecretName, suspect: AuthorizationId },
    /// Revoke the suspect PAT (never the PAT the secret's current version names: re-checked at execution).
    Revoke { secret: SecretName, owner: OwnerId, organization: OrgName, suspect: AuthorizationId },
}

/// One finding's response: the step, whether it is only simulated, and the notice reporting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub finding_key: String,
    pub step: Step,
    pub dry_run: bool,
    pub notice: Addressed,
}

/// Plans the response to each finding (pure). `targets_for` gives a managed secret's own recipients.
pub fn plan(
    findings: &[Finding],
    settings: &AuditSettings,
    known: &dyn Fn(&AuthorizationId) -> Option<KnownPat>,
    targets_for: &dyn Fn(&SecretName) -> Vec<Target>,
) -> Vec<Planned> {
    findings
        .iter()
        .map(|f| {
            let wanted = settings.response.for_severity(f.severity);
            let pat = f.subject.as_ref().and_then(|s| s.authorization_id).and_then(|id| known(&id));
            let managed = pat.as_ref().filter(|p| p.is_managed() && p.status != PatStatus::Revoked);
            let gated = settings.revocation.mode == RevocationMode::Evidence
                && f.rule == RuleId::ConsumerLag
                && managed.is_some_and(|p| matches!(p.status, PatStatus::Superseded { .. }));
            let (step, description) = match (wanted, managed) {
                (Action::Alert, _) => (Step::Alert, "alert only (policy response for this severity)".to_owned()),
                // A consumer still on the old value is what the evidence gate waits out: it, not this
                // finding, decides when the previous PAT is revoked (quiet time, or the hard deadline).
                (_, Some(_)) if gated => (
                    Step::Alert,
                    format!(
                        "alert only: revoking the previous PAT is gated on evidence (revoked after {} quiet hours, \
                         at the latest {} hours after the rotation)",
                        settings.revocation.quiet_hours, settings.revocation.deadline_hours
                    ),
                ),
                (Action::Revoke, Some(p)) if p.status == PatStatus::Current => (
                    Step::Alert,
                    format!(
                        "alert only: the policy asks to revoke PAT {} but it is the current value of {}; revoking it \
                         without a replacement would break every consumer. Use the response \"rotate\" (replace, \
                         then revoke) or `patrol revoke`.",
                        p.authorization_id,
                        p.secret.as_ref().map(|s| s.as_str()).unwrap_or("its secret")
                    ),
                ),
                (Action::Rotate, Some(p)) => {
                    let secret = p.secret.clone().unwrap_or_else(|| SecretName::derive(&p.display_name));
                    let d = format!("rotate {secret} now and revoke PAT {} at once", p.authorization_id);
                    (Step::RotateNow { secret, suspect: p.authorization_id }, d)
                }
                (Action::Revoke, Some(p)) => {
                    let d = format!("revoke PAT {} of {} without replacement", p.authorization_id, p.owner);
                    let step = Step::Revoke {
                        secret: p.secret.clone().unwrap_or_else(|| SecretName::derive(&p.display_name)),
                        owner: p.owner.clone(),
                        organization: p.organization.clone(),
                        suspect: p.authorization_id,
                    };
                    (step, d)
                }
                (a, None) => (
                    Step::Alert,
                    format!(
                        "alert only: the policy asks to {} but the PAT is not one patrol manages (use `patrol revoke` \
                         to act on it)",
                        if a == Action::Rotate { "rotate" } else { "revoke" }
                    ),
                ),
            };
            let action = if settings.dry_run && step != Step::Alert {
                format!("DRY RUN — would {description}")
            } else {
                description
            };
            let mut targets = settings.notify.clone();
            if let Some(secret) = f.secret() {
                for t in targets_for(secret) {
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
            let notice = Notice::Finding {
                rule: f.rule.to_string(),
                severity: f.severity,
                summary: f.summary.clone(),
                evidence: f.evidence.lines(),
                action,
            };
            Planned { finding_key: f.key(), step, dry_run: settings.dry_run, notice: Addressed { targets, notice } }
        })
        .collect()
}

/// The rotation engine's "rotate this secret now and revoke the suspect PAT at once", journaled through
/// its state machine (crash-safe), and what a secret's current version names (so that a `revoke` response
/// never revokes it). Implemented by the rotation module.
#[async_trait]
pub trait RotateNow: Send + Sync {
    async fn rotate_now(&self, secret: &SecretName, suspect: AuthorizationId, reason: &str) -> Result<String, String>;

    /// The PAT the secret's current version names, read from the store now.
    async fn current_of(&self, secret: &SecretName) -> Result<Option<AuthorizationId>, String>;

    /// Records a PAT the `revoke` response revoked (for the weekly report's lifecycle rows); never fails.
    async fn record_revoked(&self, secret: &SecretName, suspect: AuthorizationId, detail: &str);
}

/// What happened when a plan was executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Executed {
    pub finding_key: String,
    pub step: Step,
    pub outcome: Result<String, String>,
}

/// Executes the non-alert steps of a plan (nothing in dry run). Notices are for the caller to deliver.
pub async fn execute(plan: &[Planned], connector: &dyn Connector, rotator: &dyn RotateNow) -> Vec<Executed> {
    let mut out = Vec::new();
    for p in plan.iter().filter(|p| !p.dry_run && p.step != Step::Alert) {
        let outcome = match &p.step {
            Step::Alert => continue,
            Step::RotateNow { secret, suspect } => rotator.rotate_now(secret, *suspect, &p.finding_key).await,
            Step::Revoke { secret, owner, organization, suspect } => match rotator.current_of(secret).await {
                Ok(Some(current)) if current == *suspect => Err(format!(
                    "refused to revoke PAT {suspect}: it is the current value of {secret} (revoking it would break \
                     every consumer; the response \"rotate\" replaces it first)"
                )),
                Err(e) => {
                    Err(format!("refused to revoke PAT {suspect}: cannot read the current value of {secret}: {e}"))
                }
                Ok(_) => match connector.pats(owner, organization).revoke(*suspect).await {
                    Ok(()) => {
                        rotator.record_revoked(secret, *suspect, &format!("revoked: {}", p.finding_key)).await;
                        Ok(format!("revoked PAT {suspect}"))
                    }
                    Err(e) => Err(DevOpsError::to_string(&e)),
                },
            },
        };
        out.push(Executed { finding_key: p.finding_key.clone(), step: p.step.clone(), outcome });
    }
    out
}

/// The evidence gate's answer for one rotated-away PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum GateDecision {
    /// Not superseded, or its grace period has not ended: leave it.
    NotDue,
    /// Still in use recently: wait (until `quiet_hours` of silence, or the deadline).
    Wait {
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
        reason: String,
    },
    /// No audited use for `quiet_hours`: revoke.
    Revoke { reason: String },
    /// The deadline passed while it was still used: revoke and alert, naming the last caller.
    RevokeAtDeadline { alert: Notice },
}

/// Decides whether the previous PAT may be revoked now (pure), with evidence read up to `now`.
pub fn gate(pat: &KnownPat, last_use: Option<&LastUse>, g: RevocationGate, now: OffsetDateTime) -> GateDecision {
    let PatStatus::Superseded { rotated_at, grace_ends } = pat.status else { return GateDecision::NotDue };
    let label = format!("\"{}\" ({})", pat.display_name, pat.authorization_id);
    let s = Superseded { label: &label, rotated_at, grace_ends };
    gate_observed(&s, last_use, Some(now), g, now)
}

/// A rotated-away PAT as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Superseded<'a> {
    /// How notices name it, e.g. `"previous PAT of ci-build" (<id>)`.
    pub label: &'a str,
    pub rotated_at: OffsetDateTime,
    /// When its grace period ends (never revoked before).
    pub grace_ends: OffsetDateTime,
}

/// The gate proper (pure). `observed_until` is how far the audit log has been read (`None`: no evidence at
/// all — never polled, unreadable, or auditing looks off). Quiet time only counts up to what was observed,
/// so a failing or stale poll can never make a PAT look unused (fail closed): it waits, and at the hard
/// deadline (`rotated_at + deadline_hours`) it is revoked with an alert naming the last caller.
pub fn gate_observed(
    pat: &Superseded<'_>,
    last_use: Option<&LastUse>,
    observed_until: Option<OffsetDateTime>,
    g: RevocationGate,
    now: OffsetDateTime,
) -> GateDecision {
    if now < pat.grace_ends {
        return GateDecision::NotDue;
    }
    let quiet = Duration::hours(g.quiet_hours.into());
    let deadline = pat.rotated_at + Duration::hours(g.deadline_hours.into());
    let last = last_use.filter(|u| u.at >= pat.rotated_at);
    let quiet_since = last.map(|u| u.at).unwrap_or(pat.rotated_at);
    let horizon = observed_until.map(|o| o.min(now));
    if let Some(h) = horizon
        && h - quiet_since >= quiet
    {
        let reason = match last {
            None => format!(
                "no audited use since the rotation at {} ({} hours without use; audit log read up to {})",
                rfc3339(pat.rotated_at),
                (h - pat.rotated_at).whole_hours(),
                rfc3339(h)
            ),
            Some(u) => format!(
                "last audited use at {} ({}), {} hours without use since (audit log read up to {})",
                rfc3339(u.at),
                caller(u),
                (h - u.at).whole_hours(),
                rfc3339(h)
            ),
        };
        return GateDecision::Revoke { reason };
    }
    if now >= deadline {
        return GateDecision::RevokeAtDeadline { alert: deadline_alert(pat, last, horizon, g) };
    }
    let (until, reason) = match (horizon, last) {
        (None, _) => (
            deadline,
            "no audit evidence (the audit log has not been read, cannot be read, or auditing looks off): \
             waiting, at the latest until the hard deadline"
                .to_owned(),
        ),
        // Quiet long enough by the clock, but the log was not read that far: the evidence lags.
        (Some(h), _) if quiet_since + quiet <= now => (
            deadline,
            format!(
                "the audit log was last read up to {}: no fresh evidence, waiting for a successful poll, at the \
                 latest until the hard deadline",
                rfc3339(h)
            ),
        ),
        (Some(_), Some(u)) => (
            (u.at + quiet).min(deadline),
            format!(
                "still used at {} ({}); a consumer has not switched to the new value yet",
                rfc3339(u.at),
                caller(u)
            ),
        ),
        (Some(_), None) => (
            (pat.rotated_at + quiet).min(deadline),
            format!("waiting for {} hours without use after the rotation", g.quiet_hours),
        ),
    };
    GateDecision::Wait { until, reason }
}

/// "IP x with user agent "y"", with placeholders for what the entry did not record.
fn caller(u: &LastUse) -> String {
    format!(
        "IP {} with user agent \"{}\"",
        if u.ip.is_empty() { "(not recorded)" } else { &u.ip },
        if u.user_agent.is_empty() { "(not recorded)" } else { &u.user_agent }
    )
}

/// The alert for a revocation at the hard deadline: critical when the PAT was still in use (naming the
/// last caller), a warning when there was no evidence either way.
fn deadline_alert(
    pat: &Superseded<'_>,
    last: Option<&LastUse>,
    horizon: Option<OffsetDateTime>,
    g: RevocationGate,
) -> Notice {
    match last {
        Some(u) => Notice::Finding {
            rule: DEADLINE_RULE.into(),
            severity: Severity::Critical,
            summary: format!(
                "PAT {} was revoked at its hard deadline ({} hours after the rotation) although it was still in \
                 use; the last caller, {} at {}, will now fail and must switch to the new value.",
                pat.label,
                g.deadline_hours,
                caller(u),
                rfc3339(u.at)
            ),
            evidence: vec![
                format!("audit entry {} ({}) at {}", u.entry_id, u.action_id, rfc3339(u.at)),
                format!("from {}", caller(u)),
                format!("rotated at {}", rfc3339(pat.rotated_at)),
            ],
            action: "revoked the previous PAT at the deadline".into(),
        },
        None => Notice::Finding {
            rule: DEADLINE_RULE.into(),
            severity: Severity::Warning,
            summary: format!(
                "PAT {} was revoked at its hard deadline ({} hours after the rotation) without audit evidence that \
                 it was unused; no caller is known.",
                pat.label, g.deadline_hours
            ),
            evidence: vec![
                match horizon {
                    Some(h) => {
                        format!("audit log read up to {}; no use of this PAT seen since the rotation", rfc3339(h))
                    }
                    None => "no audit evidence (log not read, unreadable, or auditing off)".to_owned(),
                },
                format!("rotated at {}", rfc3339(pat.rotated_at)),
            ],
            action: "revoked the previous PAT at the deadline".into(),
        },
    }
}

/// The rule name of the deadline alert.
pub const DEADLINE_RULE: &str = "revocation_deadline";

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
