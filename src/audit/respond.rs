//! Responding to findings: a pure plan (per finding, the action the policy chooses for its severity, as a
//! notice with the evidence), its execution (revoke through the owner's PAT API; rotate-now through the
//! rotation engine's state machine, behind [`RotateNow`]), and the evidence gate that decides when a
//! rotated-away PAT may be revoked.
//!
//! Rotate and revoke only ever touch PATs patrol manages; for any other PAT the response is an alert that
//! says so. In dry run nothing is executed and every notice says what would have been done.

use super::context::{KnownPat, LastUse, PatStatus};
use super::finding::{Finding, rfc3339};
use super::policy::{Action, AuditSettings, RevocationGate};
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
    /// Revoke the suspect PAT.
    Revoke { owner: OwnerId, organization: OrgName, suspect: AuthorizationId },
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
            let (step, description) = match (wanted, managed) {
                (Action::Alert, _) => (Step::Alert, "alert only (policy response for this severity)".to_owned()),
                (Action::Rotate, Some(p)) => {
                    let secret = p.secret.clone().unwrap_or_else(|| SecretName::derive(&p.display_name));
                    let d = format!("rotate {secret} now and revoke PAT {} at once", p.authorization_id);
                    (Step::RotateNow { secret, suspect: p.authorization_id }, d)
                }
                (Action::Revoke, Some(p)) => {
                    let d = format!("revoke PAT {} of {} without replacement", p.authorization_id, p.owner);
                    let step = Step::Revoke {
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
/// its state machine (crash-safe). Implemented by the rotation module.
#[async_trait]
pub trait RotateNow: Send + Sync {
    async fn rotate_now(&self, secret: &SecretName, suspect: AuthorizationId, reason: &str) -> Result<String, String>;
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
            Step::Revoke { owner, organization, suspect } => connector
                .pats(owner, organization)
                .revoke(*suspect)
                .await
                .map(|()| format!("revoked PAT {suspect}"))
                .map_err(|e: DevOpsError| e.to_string()),
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

/// Decides whether the previous PAT may be revoked now (pure).
pub fn gate(pat: &KnownPat, last_use: Option<&LastUse>, g: RevocationGate, now: OffsetDateTime) -> GateDecision {
    let PatStatus::Superseded { rotated_at, grace_ends } = pat.status else { return GateDecision::NotDue };
    if now < grace_ends {
        return GateDecision::NotDue;
    }
    let quiet = Duration::hours(g.quiet_hours.into());
    let deadline = rotated_at + Duration::hours(g.deadline_hours.into());
    let last = last_use.map(|u| u.at).filter(|t| *t >= rotated_at);
    match last {
        None if now - rotated_at >= quiet => GateDecision::Revoke {
            reason: format!(
                "no audited use since the rotation at {} ({} hours ago)",
                rfc3339(rotated_at),
                (now - rotated_at).whole_hours()
            ),
        },
        None => GateDecision::Wait {
            until: rotated_at + quiet,
            reason: format!("waiting for {} hours without use after the rotation", g.quiet_hours),
        },
        Some(t) if now - t >= quiet => GateDecision::Revoke {
            reason: format!("last audited use at {}, {} hours ago", rfc3339(t), (now - t).whole_hours()),
        },
        Some(t) if now < deadline => GateDecision::Wait {
            until: (t + quiet).min(deadline),
            reason: format!("still used at {}; a consumer has not switched to the new value yet", rfc3339(t)),
        },
        Some(_) => {
            let u = last_use.cloned().unwrap_or(LastUse {
                at: rotated_at,
                ip: String::new(),
                user_agent: String::new(),
                action_id: String::new(),
                entry_id: String::new(),
            });
            let who = format!(
                "IP {} with user agent \"{}\"",
                if u.ip.is_empty() { "(not recorded)" } else { &u.ip },
                if u.user_agent.is_empty() { "(not recorded)" } else { &u.user_agent }
            );
            GateDecision::RevokeAtDeadline {
                alert: Notice::Finding {
                    rule: "revocation_deadline".into(),
                    severity: Severity::Critical,
                    summary: format!(
                        "PAT \"{}\" ({}) was revoked at its hard deadline ({} hours after the rotation) although it \
                         was still in use; the last caller, {who} at {}, will now fail and must switch to the new \
                         value.",
                        pat.display_name,
                        pat.authorization_id,
                        g.deadline_hours,
                        rfc3339(u.at)
                    ),
                    evidence: vec![format!("audit entry {} ({})", u.entry_id, u.action_id)],
                    action: "revoked the previous PAT at the deadline".into(),
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
