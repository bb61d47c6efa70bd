//! Tests of response planning and the evidence gate.

use super::*;
use crate::audit::finding::{Evidence, Subject};
use crate::notify::Severity;
use crate::policy::audit::{AuditPolicy, RuleId};
use time::Duration;
use time::macros::datetime;

const ID: &str = "11111111-1111-4111-8111-111111111111";

fn pat(status: PatStatus, managed: bool) -> KnownPat {
    KnownPat {
        authorization_id: AuthorizationId::parse(ID).unwrap(),
        display_name: "ci-build (patrol:0123456789ab)".into(),
        owner: OwnerId::parse("build@contoso.com").unwrap(),
        organization: OrgName::parse("fabrikam").unwrap(),
        secret: managed.then(|| SecretName::parse("ci-build").unwrap()),
        valid_from: datetime!(2026-03-01 00:00 UTC),
        valid_to: datetime!(2026-04-01 00:00 UTC),
        scope: "vso.code".into(),
        global: false,
        status,
    }
}

fn finding(severity: Severity, secret: bool) -> Finding {
    Finding {
        rule: RuleId::OutsideCidr,
        severity,
        summary: "why".into(),
        subject: Some(Subject {
            authorization_id: Some(AuthorizationId::parse(ID).unwrap()),
            display_name: None,
            owner: None,
            secret: secret.then(|| SecretName::parse("ci-build").unwrap()),
        }),
        evidence: Evidence {
            entry_id: "e1".into(),
            timestamp: datetime!(2026-03-04 10:00 UTC),
            action_id: "Git.X".into(),
            actor: "a".into(),
            authentication_mechanism: "PAT".into(),
            ip_address: "203.0.113.9".into(),
            user_agent: "curl/8".into(),
            details: String::new(),
            data: vec![],
        },
        detected_at: datetime!(2026-03-04 10:05 UTC),
    }
}

fn settings(t: &str) -> AuditSettings {
    toml::from_str::<AuditPolicy>(t).unwrap().resolve().unwrap()
}

#[test]
fn severity_chooses_the_step_and_the_notice_carries_evidence() {
    let s = settings("notify = [\"email:sec@contoso.com\"]");
    let managed = |_: &AuthorizationId| Some(pat(PatStatus::Current, true));
    let targets = |_: &SecretName| vec![Target::Teams];
    let p = plan(&[finding(Severity::Critical, true), finding(Severity::Warning, true)], &s, &managed, &targets);
    assert_eq!(
        p[0].step,
        Step::RotateNow {
            secret: SecretName::parse("ci-build").unwrap(),
            suspect: AuthorizationId::parse(ID).unwrap()
        }
    );
    assert_eq!(p[1].step, Step::Alert);
    assert_eq!(p[0].notice.targets, vec![Target::Email("sec@contoso.com".into()), Target::Teams]);
    let Notice::Finding { evidence, action, .. } = &p[0].notice.notice else { panic!() };
    assert!(evidence.iter().any(|l| l.contains("203.0.113.9")), "{evidence:?}");
    assert!(action.starts_with("rotate ci-build now"), "{action}");
}

#[test]
fn unmanaged_pats_are_only_alerted_and_dry_run_says_would() {
    let s = settings("dry_run = true\nresponse = { critical = \"revoke\" }");
    let unmanaged = |_: &AuthorizationId| Some(pat(PatStatus::Current, false));
    let rotated = datetime!(2026-03-01 00:00 UTC);
    let superseded = PatStatus::Superseded { rotated_at: rotated, grace_ends: rotated };
    let managed = |_: &AuthorizationId| Some(pat(superseded, true));
    let none = |_: &SecretName| vec![];
    let p = plan(&[finding(Severity::Critical, false)], &s, &unmanaged, &none);
    assert_eq!(p[0].step, Step::Alert);
    let Notice::Finding { action, .. } = &p[0].notice.notice else { panic!() };
    assert!(action.contains("not one patrol manages"), "{action}");
    let p = plan(&[finding(Severity::Critical, true)], &s, &managed, &none);
    assert!(matches!(p[0].step, Step::Revoke { .. }));
    assert!(p[0].dry_run);
    let Notice::Finding { action, .. } = &p[0].notice.notice else { panic!() };
    assert!(action.starts_with("DRY RUN — would revoke"), "{action}");
}

#[test]
fn evidence_gate() {
    let g = RevocationGate { quiet_hours: 24, deadline_hours: 72, ..Default::default() };
    let rotated = datetime!(2026-03-01 00:00 UTC);
    let p = pat(PatStatus::Superseded { rotated_at: rotated, grace_ends: rotated + Duration::hours(12) }, true);
    let used = |at| LastUse {
        at,
        ip: "10.1.2.3".into(),
        user_agent: "legacy-job/1.0".into(),
        action_id: "Git.X".into(),
        entry_id: "e9".into(),
    };
    // In grace: not due.
    assert_eq!(gate(&p, None, g, rotated + Duration::hours(6)), GateDecision::NotDue);
    // No use, not yet quiet long enough: wait; then revoke.
    assert!(matches!(gate(&p, None, g, rotated + Duration::hours(13)), GateDecision::Wait { .. }));
    assert!(matches!(gate(&p, None, g, rotated + Duration::hours(24)), GateDecision::Revoke { .. }));
    // Use before the rotation does not count.
    assert!(matches!(
        gate(&p, Some(&used(rotated - Duration::hours(1))), g, rotated + Duration::hours(25)),
        GateDecision::Revoke { .. }
    ));
    // Recent use: wait, until quiet or the deadline.
    let u = used(rotated + Duration::hours(40));
    match gate(&p, Some(&u), g, rotated + Duration::hours(50)) {
        GateDecision::Wait { until, .. } => assert_eq!(until, rotated + Duration::hours(64)),
        other => panic!("{other:?}"),
    }
    // Used and quiet for 24h: revoke.
    assert!(matches!(gate(&p, Some(&u), g, rotated + Duration::hours(64)), GateDecision::Revoke { .. }));
    // Still used at the deadline: revoke with an alert naming the last caller.
    let u = used(rotated + Duration::hours(70));
    match gate(&p, Some(&u), g, rotated + Duration::hours(72)) {
        GateDecision::RevokeAtDeadline { alert: Notice::Finding { summary, severity, .. } } => {
            assert_eq!(severity, Severity::Critical);
            assert!(summary.contains("10.1.2.3") && summary.contains("legacy-job/1.0"), "{summary}");
        }
        other => panic!("{other:?}"),
    }
    // A current PAT is never gated.
    assert_eq!(gate(&pat(PatStatus::Current, true), None, g, rotated), GateDecision::NotDue);
}

#[test]
fn revoke_never_targets_the_current_pat_and_the_gate_owns_consumer_lag() {
    let none = |_: &SecretName| vec![];
    let current = |_: &AuthorizationId| Some(pat(PatStatus::Current, true));
    let s = settings("response = { critical = \"revoke\" }");
    let p = plan(&[finding(Severity::Critical, true)], &s, &current, &none);
    assert_eq!(p[0].step, Step::Alert, "the current value is never revoked without a replacement");
    let Notice::Finding { action, .. } = &p[0].notice.notice else { panic!() };
    assert!(action.contains("current value of ci-build") && action.contains("rotate"), "{action}");

    // With evidence-gated revocation a consumer still on the previous PAT is the gate's business.
    let rotated = datetime!(2026-03-01 00:00 UTC);
    let previous = |_: &AuthorizationId| {
        Some(pat(PatStatus::Superseded { rotated_at: rotated, grace_ends: rotated + Duration::days(2) }, true))
    };
    let mut lag = finding(Severity::Critical, true);
    lag.rule = RuleId::ConsumerLag;
    let gated = settings("revocation = { mode = \"evidence\", quiet_hours = 24, deadline_hours = 96 }");
    let p = plan(std::slice::from_ref(&lag), &gated, &previous, &none);
    assert_eq!(p[0].step, Step::Alert);
    let Notice::Finding { action, .. } = &p[0].notice.notice else { panic!() };
    assert!(action.contains("gated on evidence") && action.contains("96 hours"), "{action}");
    // Without the gate the policy's response applies as before.
    let p = plan(&[lag], &settings(""), &previous, &none);
    assert!(matches!(p[0].step, Step::RotateNow { .. }), "{:?}", p[0].step);
}

#[test]
fn evidence_gate_fails_closed_without_fresh_evidence() {
    let g = RevocationGate { quiet_hours: 24, deadline_hours: 72, ..Default::default() };
    let rotated = datetime!(2026-03-01 00:00 UTC);
    let s = Superseded {
        label: "\"previous PAT of ci\" (x)",
        rotated_at: rotated,
        grace_ends: rotated + Duration::hours(12),
    };
    let at = |h: i64| rotated + Duration::hours(h);
    // Never polled: wait until the deadline, then revoke with a warning (no caller known).
    match gate_observed(&s, None, None, g, at(30)) {
        GateDecision::Wait { until, reason } => {
            assert_eq!(until, at(72));
            assert!(reason.contains("no audit evidence"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The log was last read 2 hours after the rotation (polls failing since): quiet time by the clock is
    // not quiet time observed.
    match gate_observed(&s, None, Some(at(2)), g, at(40)) {
        GateDecision::Wait { until, reason } => {
            assert_eq!(until, at(72));
            assert!(reason.contains("no fresh evidence"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match gate_observed(&s, None, Some(at(2)), g, at(72)) {
        GateDecision::RevokeAtDeadline { alert: Notice::Finding { severity, summary, .. } } => {
            assert_eq!(severity, Severity::Warning);
            assert!(summary.contains("without audit evidence"), "{summary}");
        }
        other => panic!("{other:?}"),
    }
    // Read far enough: revoke, with the evidence in the reason.
    match gate_observed(&s, None, Some(at(25)), g, at(26)) {
        GateDecision::Revoke { reason } => assert!(reason.contains("no audited use since the rotation"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Evidence "from the future" (a clock skew) counts only up to now.
    assert!(matches!(gate_observed(&s, None, Some(at(99)), g, at(20)), GateDecision::Wait { .. }));
}
