//! Evidence-gated revocation of previous PATs in the engine: what the audit log has shown about each
//! rotated-away PAT ([`crate::evidence::Evidence`]), loaded for the plan, and each drain put to the one gate
//! (`crate::evidence::gate_observed`) — the pure per-drain decision the plan takes.
//!
//! Opt-in (`[audit] revocation = { mode = "evidence", … }`, parsed into [`super::policy::Policy::gate`]).
//! The evidence is what the audit ingestion persisted in the state store (`audit/<org>/checkpoint`: how far
//! the log was read and each PAT's last audited use), so it survives across runs and instances. Loading
//! is the only effect here; [`decide`] is pure. Fail closed: a missing, unreadable or corrupt checkpoint,
//! or one that says auditing looks off, is *no evidence* — the previous PAT waits, until the hard deadline.

use super::inventory::TokenState;
use super::journal::{Drain, Reason};
use super::policy::{ManagedToken, Policy};
use crate::evidence::{
    AUDIT_DELAY, Checkpoint, Evidence, GateDecision, Observed, Superseded, checkpoint_key, gate_observed, observed,
};
use crate::state::StateStore;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};

/// Loads the evidence for every organization of the policy's tokens (`None` when the gate is off).
pub async fn load(state: &dyn StateStore, policy: &Policy) -> Option<Evidence> {
    let gate = policy.gate.clone()?;
    let mut orgs = BTreeMap::new();
    for t in &policy.tokens {
        let org = t.organization.as_str().to_ascii_lowercase();
        if orgs.contains_key(&org) {
            continue;
        }
        let observed = match state.load(&checkpoint_key(&t.organization)).await {
            Ok(Some((body, _))) => match serde_json::from_slice::<Checkpoint>(&body) {
                Ok(cp) => observed(cp, AUDIT_DELAY),
                Err(e) => {
                    Observed { problem: Some(format!("the audit checkpoint is corrupt: {e}")), ..Default::default() }
                }
            },
            Ok(None) => Observed {
                problem: Some(format!("the audit log of {} has not been read yet", t.organization)),
                ..Default::default()
            },
            Err(e) => {
                Observed { problem: Some(format!("the audit checkpoint cannot be read: {e}")), ..Default::default() }
            }
        };
        orgs.insert(org, observed);
    }
    Some(Evidence { gate, orgs })
}

/// When the PAT a drain holds was rotated away: the finishing time of the journaled operation that
/// replaced it, else its grace end less the token's grace.
fn rotated_at(token: &ManagedToken, ts: &TokenState, d: &Drain) -> (OffsetDateTime, Option<Reason>) {
    match (&ts.journal.last, &d.replaced_by) {
        (Some(l), Some(op)) if &l.op == op => (l.finished.min(d.revoke_after), Some(l.reason)),
        _ => (d.revoke_after - Duration::days(token.grace_days.into()), None),
    }
}

/// The gate's decision for one drain (pure). A compromise rotation's previous PAT is never gated: it is
/// revoked at once.
pub fn decide(ev: &Evidence, token: &ManagedToken, ts: &TokenState, d: &Drain, now: OffsetDateTime) -> GateDecision {
    let id = d.pat.authorization_id;
    let (rotated, reason) = rotated_at(token, ts, d);
    if reason == Some(Reason::Compromised) {
        return if now < d.revoke_after {
            GateDecision::NotDue
        } else {
            GateDecision::Revoke {
                reason: "replaced by a compromise rotation: revoked without waiting for evidence".into(),
            }
        };
    }
    let label = format!("\"previous PAT of {}\" ({id})", token.secret);
    let pat = Superseded { label: &label, rotated_at: rotated, grace_ends: d.revoke_after };
    let seen = ev.orgs.get(&d.pat.organization.as_str().to_ascii_lowercase());
    let last = seen.and_then(|o| o.last_use.get(&id));
    let until = seen.and_then(|o| o.observed_until);
    match gate_observed(&pat, last, until, ev.gate.gate, now) {
        GateDecision::Wait { until, reason } => {
            let why = seen.and_then(|o| o.problem.clone()).map(|p| format!("{p}; ")).unwrap_or_default();
            GateDecision::Wait { until, reason: format!("{why}{reason}") }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrgName, OwnerId};
    use crate::evidence::{LastUse, is_deadline_alert};
    use crate::notify::{Notice, Severity};
    use crate::policy::EvidenceGate;
    use crate::policy::audit::RevocationGate;
    use crate::policy::audit::RevocationMode;
    use crate::rotation::journal::PatVersion;
    use crate::rotation::machine::{TokenReport, report_gated};
    use crate::rotation::plan::tests::{NOW, id, inventory, managed, pat, policy_of};
    use crate::rotation::plan::{Action, Requests, plan};
    use std::collections::HashMap;

    const QUIET: i64 = 24;
    const DEADLINE: i64 = 96;

    /// tok-0 rotated at `NOW - rotated_ago`, grace 2 days (the policy's), its previous PAT 5 draining.
    fn world(rotated_ago: Duration) -> (Policy, crate::rotation::inventory::Inventory) {
        let mut policy = policy_of(1);
        policy.gate = Some(EvidenceGate {
            gate: RevocationGate {
                mode: RevocationMode::Evidence,
                quiet_hours: QUIET as u32,
                deadline_hours: DEADLINE as u32,
            },
            notify: vec![],
        });
        let mut t0 = managed("tok-0", id(1), NOW + Duration::days(25));
        t0.journal.drains.push(Drain {
            pat: PatVersion {
                authorization_id: id(5),
                owner: OwnerId::parse("svc@contoso.com").unwrap(),
                organization: OrgName::parse("fabrikam").unwrap(),
                vault_version: None,
            },
            revoke_after: NOW - rotated_ago + Duration::days(2),
            replaced_by: None,
        });
        let pats = vec![
            pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(25)),
            pat(5, "Token 0 (patrol:aaaaaaaaaaa5)", NOW + Duration::days(3)),
        ];
        (policy, inventory(vec![t0], pats))
    }

    fn seen(observed_until: Option<OffsetDateTime>, last: Option<(OffsetDateTime, &str, &str)>) -> Observed {
        let mut last_use = HashMap::new();
        if let Some((at, ip, ua)) = last {
            let u = LastUse {
                at,
                ip: ip.into(),
                user_agent: ua.into(),
                action_id: "Git.RefUpdatePushed".into(),
                entry_id: "entry-7".into(),
            };
            last_use.insert(id(5), u);
        }
        Observed { observed_until, last_use, problem: None }
    }

    fn with(policy: &Policy, inv: &mut crate::rotation::inventory::Inventory, o: Option<Observed>) {
        let mut orgs = BTreeMap::new();
        if let Some(o) = o {
            orgs.insert("fabrikam".to_owned(), o);
        }
        inv.evidence = Some(Evidence { gate: policy.gate.clone().unwrap(), orgs });
    }

    fn actions(policy: &Policy, inv: &crate::rotation::inventory::Inventory) -> Vec<Action> {
        plan(inv, policy, NOW, &Requests::default()).entries[0].actions.clone()
    }

    #[test]
    fn a_previous_pat_still_in_use_waits_with_the_reason_and_the_time_it_is_decided() {
        // Rotated 3 days ago (grace over a day ago), used 2 hours ago.
        let (policy, mut inv) = world(Duration::days(3));
        with(&policy, &mut inv, Some(seen(Some(NOW), Some((NOW - Duration::hours(2), "198.51.100.7", "legacy/1.0")))));
        let p = plan(&inv, &policy, NOW, &Requests::default());
        let a = &p.entries[0].actions;
        match &a[..] {
            [Action::WaitPrevious { authorization_id, until, reason, .. }] => {
                assert_eq!(*authorization_id, id(5));
                assert_eq!(*until, NOW - Duration::hours(2) + Duration::hours(QUIET));
                assert!(reason.contains("198.51.100.7") && reason.contains("legacy/1.0"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(p.entries[0].is_noop(), "a wait is not work for the machine");
        assert!(p.table().contains("wait: previous"), "{}", p.table());
        let j = p.to_json();
        assert_eq!(j["entries"][0]["actions"][0]["action"], "wait-previous");
        assert!(
            j["entries"][0]["actions"][0]["until"].is_string() && j["entries"][0]["actions"][0]["reason"].is_string()
        );
    }

    #[test]
    fn quiet_for_quiet_hours_is_revoked_with_its_evidence() {
        let (policy, mut inv) = world(Duration::days(3));
        let last = NOW - Duration::hours(QUIET + 1);
        with(&policy, &mut inv, Some(seen(Some(NOW), Some((last, "198.51.100.7", "legacy/1.0")))));
        match &actions(&policy, &inv)[..] {
            [Action::RevokePrevious { authorization_id, evidence: Some(why), alert: None, .. }] => {
                assert_eq!(*authorization_id, id(5));
                assert!(why.contains("last audited use") && why.contains("25 hours"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Never used since the rotation, and the log was read far enough: revoked too.
        with(&policy, &mut inv, Some(seen(Some(NOW - Duration::hours(1)), None)));
        assert!(matches!(&actions(&policy, &inv)[..], [Action::RevokePrevious { evidence: Some(_), .. }]));
    }

    #[test]
    fn still_used_at_the_deadline_is_revoked_with_an_alert_naming_the_caller() {
        let (policy, mut inv) = world(Duration::hours(DEADLINE));
        with(&policy, &mut inv, Some(seen(Some(NOW), Some((NOW - Duration::hours(1), "198.51.100.7", "legacy/1.0")))));
        let a = actions(&policy, &inv);
        let [Action::RevokePrevious { alert: Some(alert), evidence: Some(why), .. }] = &a[..] else { panic!("{a:?}") };
        assert!(why.contains("deadline"), "{why}");
        let Notice::Finding { severity, summary, .. } = alert else { panic!() };
        assert_eq!(*severity, Severity::Critical);
        assert!(summary.contains("198.51.100.7") && summary.contains("legacy/1.0") && summary.contains("tok-0"));
        // Reported (and alerted) only once it was really revoked.
        let mut report = TokenReport::default();
        report_gated(&a, &mut report);
        assert!(report.notices.is_empty());
        report.revoked.push(id(5));
        report_gated(&a, &mut report);
        assert_eq!(report.notices.len(), 1);
        assert!(is_deadline_alert(&report.notices[0]));
        assert!(report.done[0].contains("evidence for revoking previous"), "{:?}", report.done);
    }

    #[test]
    fn no_or_stale_evidence_waits_until_the_deadline() {
        let (policy, mut inv) = world(Duration::days(3));
        // The organization's log was never read.
        with(&policy, &mut inv, None);
        let a = actions(&policy, &inv);
        let [Action::WaitPrevious { until, .. }] = &a[..] else { panic!("{a:?}") };
        assert_eq!(*until, NOW - Duration::days(3) + Duration::hours(DEADLINE));
        // The last successful poll was right after the rotation; polls have failed since.
        with(&policy, &mut inv, Some(seen(Some(NOW - Duration::days(3) + Duration::hours(1)), None)));
        let a = actions(&policy, &inv);
        assert!(
            matches!(&a[..], [Action::WaitPrevious { reason, .. }] if reason.contains("no fresh evidence")),
            "{a:?}"
        );
        // A checkpoint that says auditing is off is no evidence.
        let cp = Checkpoint { window_end: Some(NOW), auditing_off: true, ..Default::default() };
        with(&policy, &mut inv, Some(observed(cp, Duration::minutes(15))));
        let a = actions(&policy, &inv);
        assert!(
            matches!(&a[..], [Action::WaitPrevious { reason, .. }] if reason.contains("auditing looks switched off")),
            "{a:?}"
        );
    }

    #[test]
    fn gate_off_is_todays_behaviour_and_compromise_is_never_gated() {
        let (mut policy, inv) = world(Duration::days(3));
        policy.gate = None;
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert!(matches!(&p.entries[0].actions[..], [Action::RevokePrevious { evidence: None, alert: None, .. }]));
        let j = p.to_json();
        let keys: Vec<_> = j["entries"][0]["actions"][0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["action", "authorization_id", "revoke_after"], "unchanged JSON when the gate is off");

        // Compromise rotation (grace 0) that replaced PAT 5: revoked at once even while used.
        let (policy, mut inv) = world(Duration::hours(1));
        let t0 = inv.tokens.values_mut().next().unwrap();
        let last = t0.journal.last.as_mut().unwrap();
        last.reason = Reason::Compromised;
        last.finished = NOW - Duration::hours(1);
        let op = last.op.clone();
        t0.journal.drains[0].replaced_by = Some(op);
        t0.journal.drains[0].revoke_after = NOW - Duration::hours(1);
        with(&policy, &mut inv, Some(seen(Some(NOW), Some((NOW, "198.51.100.7", "legacy/1.0")))));
        assert!(
            matches!(&actions(&policy, &inv)[..], [Action::RevokePrevious { evidence: Some(w), .. }] if w.contains("compromise"))
        );
    }

    #[test]
    fn the_current_pat_is_never_revoked_even_when_the_gate_allows() {
        let (policy, mut inv) = world(Duration::days(3));
        inv.tokens.values_mut().next().unwrap().journal.drains[0].pat.authorization_id = id(1);
        with(&policy, &mut inv, Some(seen(Some(NOW), None)));
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert!(
            p.entries[0].actions.iter().all(|a| !matches!(a,
                Action::RevokePrevious { authorization_id, .. } | Action::WaitPrevious { authorization_id, .. }
                if *authorization_id == id(1))),
            "{:?}",
            p.entries[0].actions
        );
        assert!(p.entries[0].notes.iter().any(|n| n.contains("never revoked")));
    }
}
