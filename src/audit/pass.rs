//! The audit part of the timer's full pass: for every organization with managed PATs (or a configured
//! reader), poll its audit log, evaluate the rules, plan and execute the policy's response, log the
//! findings for the weekly report, and hand back notices (`notify::Addressed`) and a summary.
//!
//! The rotation engine calls [`audit_pass`] once per full pass. It never fails as a whole: an organization
//! whose log cannot be read becomes an error in the summary and a warning notice, and the others go on.
//! The evidence gate's decisions for previous PATs are returned (not executed), for information: revoking
//! a rotated-away PAT stays the rotation engine's job, which decides it from the checkpoint this pass
//! persisted (`rotation::evidence`).

use super::context::{AuditContext, PatrolAction};
use super::finding::Finding;
use super::ingest::{AuditPages, PollConfig, poll};
use super::managed::ManagedPat;
use super::policy::AuditSettings;
use super::respond::{Executed, GateDecision, Planned, RotateNow, execute, gate, plan};
use super::weekly::record_findings;
use crate::devops::Connector;
use crate::devops::connector::HttpConnector;
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::notify::{Addressed, Notice, Severity, Target};
use crate::state::StateStore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// Hands out an audit-log reader for (reader identity, organization).
pub trait AuditSources: Send + Sync {
    fn audit(&self, reader: &OwnerId, organization: &OrgName) -> Arc<dyn AuditPages>;
}

impl AuditSources for HttpConnector {
    fn audit(&self, reader: &OwnerId, organization: &OrgName) -> Arc<dyn AuditPages> {
        Arc::new(HttpConnector::audit(self, reader, organization))
    }
}

/// What the pass works on.
pub struct PassInput<'a> {
    pub settings: &'a AuditSettings,
    pub managed: &'a [ManagedPat],
    /// Patrol's own recent lifecycle actions (rotation journal, break glass).
    pub actions: Vec<PatrolAction>,
    /// Who reads each organization's audit log; default: the owner of its first managed PAT.
    pub readers: BTreeMap<OrgName, OwnerId>,
    /// A managed secret's own notification targets (the policy's `notify` of the token).
    pub targets_for: &'a (dyn Fn(&SecretName) -> Vec<Target> + Sync),
    pub poll: PollConfig,
}

/// One organization's part of the pass.
#[derive(Debug, Clone, Serialize)]
pub struct OrgPass {
    pub organization: OrgName,
    pub reader: OwnerId,
    pub entries: u64,
    pub findings: usize,
    pub auditing_off: Option<String>,
    pub error: Option<String>,
}

/// What the pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassSummary {
    pub organizations: Vec<OrgPass>,
    pub findings: Vec<Finding>,
    pub planned: Vec<Planned>,
    pub executed: Vec<Executed>,
    /// Evidence-gate decisions for previous PATs whose grace period has ended.
    pub gate: Vec<(AuthorizationId, GateDecision)>,
    /// Everything to deliver (responses with their outcome, auditing-off and unreadable-log warnings).
    pub notices: Vec<Addressed>,
    pub errors: Vec<String>,
}

/// Polls, evaluates and responds for every organization. See the module doc.
pub async fn audit_pass(
    sources: &dyn AuditSources,
    state: &dyn StateStore,
    connector: &dyn Connector,
    rotator: &dyn RotateNow,
    input: PassInput<'_>,
    now: OffsetDateTime,
) -> PassSummary {
    let mut summary = PassSummary::default();
    let settings = input.settings;
    let mut orgs: BTreeMap<OrgName, OwnerId> = BTreeMap::new();
    for m in input.managed {
        orgs.entry(m.organization.clone()).or_insert_with(|| m.owner.clone());
    }
    for (o, r) in &input.readers {
        orgs.insert(o.clone(), r.clone());
    }
    for (org, reader) in orgs {
        let mut ctx = AuditContext::new();
        for m in input.managed.iter().filter(|m| m.in_organization(&org)) {
            ctx.add_pat(m.known(now));
            if let Some(p) = m.known_previous(now) {
                ctx.add_pat(p);
            }
        }
        for a in input.actions.iter().filter(|a| a.organization == org) {
            ctx.add_action(a.clone());
        }
        let source = sources.audit(&reader, &org);
        let report = match poll(source.as_ref(), state, &org, settings, &mut ctx, input.poll, now).await {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                summary.notices.push(Addressed {
                    targets: settings.notify.clone(),
                    notice: Notice::Finding {
                        rule: "audit_unreadable".into(),
                        severity: Severity::Warning,
                        summary: format!(
                            "patrol could not read the audit log of {org}: misuse goes unseen until it can."
                        ),
                        evidence: vec![msg.clone()],
                        action: "alert only".into(),
                    },
                });
                summary.organizations.push(OrgPass {
                    organization: org.clone(),
                    reader,
                    entries: 0,
                    findings: 0,
                    auditing_off: None,
                    error: Some(msg.clone()),
                });
                summary.errors.push(msg);
                continue;
            }
        };
        if let Some(off) = &report.auditing_off {
            summary.notices.push(Addressed {
                targets: settings.notify.clone(),
                notice: Notice::Finding {
                    rule: "auditing_off".into(),
                    severity: Severity::Critical,
                    summary: off.clone(),
                    evidence: vec![format!(
                        "audit log window {} – {}: {} entries",
                        super::finding::rfc3339(report.window_start),
                        super::finding::rfc3339(report.window_end),
                        report.entries
                    )],
                    action: "alert only".into(),
                },
            });
        }
        let known = |id: &AuthorizationId| ctx.pat(id).cloned();
        let planned = plan(&report.findings, settings, &known, input.targets_for);
        let executed = execute(&planned, connector, rotator).await;
        for p in &planned {
            let mut notice = p.notice.clone();
            if let Some(x) = executed.iter().find(|x| x.finding_key == p.finding_key)
                && let Notice::Finding { action, .. } = &mut notice.notice
            {
                match &x.outcome {
                    Ok(done) => action.push_str(&format!(" — done: {done}")),
                    Err(e) => action.push_str(&format!(" — FAILED: {e}")),
                }
            }
            summary.notices.push(notice);
        }
        for m in input.managed.iter().filter(|m| m.in_organization(&org)) {
            if let (Some(prev), Some(_)) = (m.known_previous(now), m.previous_revoke_after) {
                let d = gate(&prev, ctx.last_use.get(&prev.authorization_id), settings.revocation, now);
                if d != GateDecision::NotDue {
                    summary.gate.push((prev.authorization_id, d));
                }
            }
        }
        if let Err(e) = record_findings(state, &report.findings, now).await {
            summary.errors.push(format!("{org}: findings were not logged for the weekly report: {e}"));
        }
        summary.organizations.push(OrgPass {
            organization: org.clone(),
            reader,
            entries: report.entries,
            findings: report.findings.len(),
            auditing_off: report.auditing_off.clone(),
            error: None,
        });
        summary.findings.extend(report.findings);
        summary.planned.extend(planned);
        summary.executed.extend(executed);
    }
    summary
}
