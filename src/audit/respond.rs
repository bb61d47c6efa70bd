//! Responding to findings: a pure plan (per finding, the action the policy chooses for its severity, as a
//! notice with the evidence), its execution (revoke through the owner's PAT API; rotate-now through the
//! rotation engine's state machine, behind [`RotateNow`]), and [`gate`]: the evidence gate
//! (`crate::evidence`, the one home of that decision) for a PAT the audit context knows.
//!
//! Rotate and revoke only ever touch PATs patrol manages; for any other PAT the response is an alert that
//! says so. In dry run nothing is executed and every notice says what would have been done.

use super::context::{KnownPat, LastUse, PatStatus};
use super::finding::Finding;
use crate::devops::{Connector, DevOpsError};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::evidence::{GateDecision, Superseded, gate_observed};
use crate::notify::{Addressed, Notice, Target};
use crate::policy::audit::{Action, AuditSettings, RevocationGate, RevocationMode, RuleId};
use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

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

/// Decides whether the previous PAT may be revoked now (pure), with evidence read up to `now`.
pub fn gate(pat: &KnownPat, last_use: Option<&LastUse>, g: RevocationGate, now: OffsetDateTime) -> GateDecision {
    let PatStatus::Superseded { rotated_at, grace_ends } = pat.status else { return GateDecision::NotDue };
    let label = format!("\"{}\" ({})", pat.display_name, pat.authorization_id);
    let s = Superseded { label: &label, rotated_at, grace_ends };
    gate_observed(&s, last_use, Some(now), g, now)
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
