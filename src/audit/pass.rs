//! The audit pass — one and the same for the timer and `patrol audit`: for every organization with managed
//! PATs (or a configured reader), poll its audit log, evaluate the rules, plan the policy's response and
//! (timer only) execute it, log the findings for the weekly report, and hand back notices
//! (`notify::Addressed`) and a summary. [`inputs`] gathers what both callers feed it: the managed PATs by
//! the one definition of [`super::managed::managed`] (policy ⋈ journal ⋈ vault), the managed tokens that
//! cannot be watched (reported as problems), and patrol's own recent actions (journals and the lifecycle
//! log), so patrol's rotations and revocations are never reported as someone else's.
//!
//! The rotation engine calls [`audit_pass`] once per full pass. It never fails as a whole: an organization
//! whose log cannot be read becomes an error in the summary and a warning notice, and the others go on.
//! The evidence gate's decisions for previous PATs are returned (not executed), for information: revoking
//! a rotated-away PAT stays the rotation engine's job, which decides it from the checkpoint this pass
//! persisted (`rotation::evidence`).

use super::context::{AuditContext, PatrolAction};
use super::finding::Finding;
use super::ingest::{AuditPages, PollConfig, poll};
use super::managed::{ManagedPat, Unwatched};
use super::respond::{Executed, Planned, RotateNow, execute, gate, plan};
use super::weekly::record_findings;
use crate::devops::Connector;
use crate::devops::connector::HttpConnector;
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::evidence::GateDecision;
use crate::notify::{Addressed, Notice, Severity, Target};
use crate::policy::audit::AuditSettings;
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
    /// Who reads each organization's audit log, where it differs from `default_reader`.
    pub readers: BTreeMap<OrgName, OwnerId>,
    /// Who reads the others (`PATROL_AUDIT_READER`: the Function App's identity or an administrator). Never
    /// an owner by default: owners consent to the PAT scopes only. `None`: an organization without a reader
    /// is reported as unreadable.
    pub default_reader: Option<OwnerId>,
    /// A managed secret's own notification targets (the policy's `notify` of the token).
    pub targets_for: &'a (dyn Fn(&SecretName) -> Vec<Target> + Sync),
    pub poll: PollConfig,
    /// Managed tokens that cannot be watched: each becomes a warning notice and an error of the pass.
    pub unwatched: &'a [Unwatched],
    /// Only these organizations (`patrol audit --org`); empty: all.
    pub only: &'a [OrgName],
    /// Execute the planned responses (the timer); `false` plans them only (`patrol audit` is read-only).
    pub respond: bool,
}

/// One organization's part of the pass.
#[derive(Debug, Clone, Serialize)]
pub struct OrgPass {
    pub organization: OrgName,
    /// Who read it (`app (the Function App's identity)` or an administrator's UPN).
    pub reader: String,
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
    /// Each organization's poll (for `patrol audit`'s rendering).
    #[serde(skip)]
    pub reports: Vec<super::ingest::PollReport>,
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
    let wanted = |o: &OrgName| input.only.is_empty() || input.only.contains(o);
    for u in input.unwatched.iter().filter(|u| wanted(&u.organization)) {
        let sentence = u.sentence();
        summary.notices.push(Addressed {
            targets: settings.notify.iter().cloned().chain((input.targets_for)(&u.secret)).collect(),
            notice: Notice::Finding {
                rule: "managed_unwatched".into(),
                severity: Severity::Warning,
                summary: format!("{sentence}; misuse of it goes unseen until this is fixed."),
                evidence: vec![u.reason.clone()],
                action: "alert only".into(),
            },
        });
        summary.errors.push(sentence);
    }
    let mut orgs: BTreeMap<OrgName, Option<OwnerId>> = BTreeMap::new();
    for m in input.managed.iter().filter(|m| wanted(&m.organization)) {
        orgs.entry(m.organization.clone()).or_insert_with(|| input.default_reader.clone());
    }
    for (o, r) in input.readers.iter().filter(|(o, _)| wanted(o)) {
        orgs.insert(o.clone(), Some(r.clone()));
    }
    for (org, reader) in orgs {
        let Some(reader) = reader else {
            let msg = format!(
                "nobody reads the audit log of {org}: set PATROL_AUDIT_READER to app (the Function App's identity, \
                 added to the organization with \"View audit log\") or to an administrator signed in with \
                 `patrol login --admin` (docs/deploy.md)"
            );
            summary.notices.push(Addressed {
                targets: settings.notify.clone(),
                notice: Notice::Finding {
                    rule: "audit_unreadable".into(),
                    severity: Severity::Warning,
                    summary: format!("patrol cannot read the audit log of {org}: misuse goes unseen until it can."),
                    evidence: vec![msg.clone()],
                    action: "alert only".into(),
                },
            });
            summary.organizations.push(OrgPass {
                organization: org.clone(),
                reader: "-".into(),
                entries: 0,
                findings: 0,
                auditing_off: None,
                error: Some(msg.clone()),
            });
            summary.errors.push(msg);
            continue;
        };
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
                    reader: crate::auth::app::describe(&reader),
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
        let executed = if input.respond { execute(&planned, connector, rotator).await } else { Vec::new() };
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
            reader: crate::auth::app::describe(&reader),
            entries: report.entries,
            findings: report.findings.len(),
            auditing_off: report.auditing_off.clone(),
            error: None,
        });
        summary.findings.extend(report.findings.iter().cloned());
        summary.planned.extend(planned);
        summary.executed.extend(executed);
        summary.reports.push(report);
    }
    summary
}

/// What both the timer and `patrol audit` feed the pass.
pub struct Inputs {
    pub managed: super::managed::Managed,
    pub actions: Vec<PatrolAction>,
}

/// Gathers the managed PATs (one definition: [`super::managed::managed`]) and patrol's own recent actions.
pub async fn inputs(
    policy: &crate::rotation::policy::Policy,
    store: &dyn crate::store::SecretStore,
    state: &dyn StateStore,
    now: OffsetDateTime,
) -> Inputs {
    let managed = super::managed::managed(policy, store, state).await;
    let actions = patrol_actions(policy, state, now).await;
    Inputs { managed, actions }
}

/// The PAT lifecycle actions patrol itself performed recently: the last rotation of each token (journal)
/// and everything patrol created, rotated or revoked (the lifecycle log: engine runs, break glass,
/// rotate-now), so the rules do not mistake patrol's own work for someone else's.
pub async fn patrol_actions(
    policy: &crate::rotation::policy::Policy,
    state: &dyn StateStore,
    now: OffsetDateTime,
) -> Vec<PatrolAction> {
    use super::context::Lifecycle;
    use crate::rotation::{history, journal};
    let mut actions = Vec::new();
    for t in &policy.tokens {
        let Ok(loaded) = journal::load(state, &t.secret).await else { continue };
        if let Some(last) = loaded.journal.last {
            actions.push(PatrolAction {
                kind: Lifecycle::Create,
                organization: t.organization.clone(),
                owner: t.owner.clone(),
                display_name: journal::marked_display_name(t.display_name.as_str(), &last.op),
                authorization_id: Some(last.authorization_id),
                at: last.finished,
            });
        }
    }
    match history::since(state, now - super::weekly::LOG_KEEP).await {
        Ok(events) => {
            for e in events {
                let Some(owner) = e.owner else { continue };
                actions.push(PatrolAction {
                    kind: match e.kind {
                        history::Kind::Revoked | history::Kind::Retired => Lifecycle::Revoke,
                        history::Kind::Created | history::Kind::Rotated => Lifecycle::Create,
                    },
                    organization: e.organization,
                    owner,
                    display_name: e.display_name,
                    authorization_id: Some(e.authorization_id),
                    at: e.at,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "the audit pass runs without the lifecycle log"),
    }
    actions
}
