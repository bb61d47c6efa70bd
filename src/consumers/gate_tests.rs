use super::gate::{ConsumerGate, decide};
use super::state::{Delivery, DeliveryStep, UseEvidence};
use crate::domain::AuthorizationId;
use crate::policy::Policy;
use std::path::Path;
use time::Duration;
use time::macros::datetime;

const POLICY: &str = r#"[defaults]
organization = "fabrikam"
owner = "svc@contoso.com"
scopes = "vso.code"
validity_days = 30
rotate_before_days = 7
grace_days = 1

[consumers]
deadline_hours = 72

[[token]]
secret = "t"
display_name = "T"

[[token.consumer]]
kind = "devops-service-connection"
project = "web"
connection = "feed"
type = "generic"
scheme = "UsernamePassword"

[[token.consumer]]
kind = "keyvault"
secret = "team-copy"

[[token.consumer]]
kind = "reference"
description = "App Service"
lag_hours = 24
"#;

#[test]
fn revocation_waits_for_delivery_evidence_and_lag_then_the_deadline() {
    let p = Policy::parse(Path::new("patrol.toml"), POLICY).unwrap();
    let t = &p.tokens[0];
    let ids: Vec<String> = t.consumers.list.iter().map(|c| c.id.clone()).collect();
    let cur = AuthorizationId::from_uuid(uuid::Uuid::from_u128(1));
    let prev = AuthorizationId::from_uuid(uuid::Uuid::from_u128(2));
    let rotated = datetime!(2027-01-01 00:00 UTC);
    let mut ds: Vec<Delivery> = ids.iter().map(|i| Delivery::new(i, cur, "v2", rotated)).collect();
    ds[2].step = DeliveryStep::ReadsVault;

    // Nothing delivered: wait until the earliest self-resolving point (the reference's lag).
    let g = decide(t, &ds, Some(cur), prev, rotated, rotated + Duration::hours(2));
    match g {
        ConsumerGate::Wait { until, reason } => {
            assert_eq!(until, rotated + Duration::hours(24));
            assert!(reason.contains("service-connection:fabrikam/web/feed (not delivered yet)"), "{reason}");
            assert!(reason.contains("reference:app-service (may lag up to 24 h"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Delivered but no pipeline run used the connection yet: still waiting, now until the deadline.
    for d in ds.iter_mut().take(2) {
        d.step = DeliveryStep::Delivered { at: rotated + Duration::minutes(1), after: None };
    }
    let g = decide(t, &ds, Some(cur), prev, rotated, rotated + Duration::hours(30));
    match &g {
        ConsumerGate::Wait { until, reason } => {
            assert_eq!(*until, rotated + Duration::hours(72));
            assert!(reason.contains("no pipeline run"), "{reason}");
            assert!(!reason.contains("keyvault"), "a delivered vault copy has moved: {reason}");
        }
        other => panic!("{other:?}"),
    }
    // A delivery for an older PAT does not count.
    let mut stale = ds.clone();
    stale[1].authorization_id = prev;
    assert!(matches!(
        decide(t, &stale, Some(cur), prev, rotated, rotated + Duration::hours(30)),
        ConsumerGate::Wait { .. }
    ));
    // Evidence of use: ready.
    ds[0].evidence = Some(UseEvidence { at: rotated + Duration::hours(3), what: "pipeline run 7".into() });
    assert!(matches!(decide(t, &ds, Some(cur), prev, rotated, rotated + Duration::hours(30)), ConsumerGate::Ready(_)));
    // Without evidence, the deadline revokes with an alert naming the consumer and the fix.
    ds[0].evidence = None;
    match decide(t, &ds, Some(cur), prev, rotated, rotated + Duration::hours(72)) {
        ConsumerGate::Deadline { alert: crate::notify::Notice::Finding { rule, evidence, action, .. }, .. } => {
            assert_eq!(rule, "consumer-deadline");
            assert_eq!(evidence.len(), 1, "{evidence:?}");
            assert!(evidence[0].starts_with("service-connection:fabrikam/web/feed"), "{evidence:?}");
            assert!(action.contains("Administrator"), "{action}");
        }
        other => panic!("{other:?}"),
    }
}
