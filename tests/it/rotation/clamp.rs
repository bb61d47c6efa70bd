//! Lifespan clamping: the tenant's maximum-lifespan policy shortens the new PAT's `validTo`. The rotation
//! succeeds, the clamp is reported (drift in the run summary and a finding notice), and the next rotation
//! is scheduled from the clamped `validTo`, not from the lifetime patrol asked for.

use super::world::{ORG, OWNER, World, seed};
use patrol::notify::Notice;
use patrol::rotation::engine::RunOptions;
use patrol::rotation::journal::Reason;
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamped_lifespan_is_reported_and_the_next_rotation_follows_the_granted_valid_to() {
    let mut s = seed();
    s["tenantPolicy"] = serde_json::json!({ "maxLifespanDays": 10 });
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"clamped\"\ndisplay_name = \"Clamped\"\nvalidity_days = 30\n\
         rotate_before_days = 3\ngrace_days = 0\n"
    );
    let w = World::start(s, &policy).await;
    let engine = w.local.engine().unwrap();
    let asked_at = w.local.clock.now();
    let first = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((first.rotated, first.failed), (1, 0), "{}", first.line());
    let done = first.reports[0].rotated.clone().unwrap();
    // Granted: about 10 days, not the 30 asked for.
    let granted = done.valid_to - asked_at;
    assert!(granted <= Duration::days(10) + Duration::minutes(1) && granted > Duration::days(9), "{granted}");
    assert_eq!(done.drift.len(), 1, "{:?}", done.drift);
    assert!(done.drift[0].contains("validTo clamped"), "{:?}", done.drift);
    let finding = first.notices.iter().find_map(|a| match &a.notice {
        Notice::Finding { rule, summary, .. } if rule == "rotation-drift" => Some(summary.clone()),
        _ => None,
    });
    assert!(finding.as_deref().is_some_and(|s| s.contains("clamped") && s.contains("validTo")), "{finding:?}");
    // The summary as the functions return it carries the drift too.
    let json = serde_json::to_string(&first).unwrap();
    assert!(json.contains("validTo clamped"), "{json}");
    let (id, value) = w.current("clamped").await.unwrap();
    assert_eq!(id, done.authorization_id);
    assert!(w.authenticates(&value).await);

    // Day 6: 4 days left of the clamped 10 (26 of the asked 30): nothing is due.
    w.advance(Duration::days(6)).await;
    let quiet = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!(quiet.rotated, 0, "{}", quiet.line());
    assert_eq!(quiet.plan.entries[0].current.as_ref().and_then(|c| c.days_left), Some(3));
    // Day 7.5: within 3 days of the clamped validTo: rotated as due (with the asked 30 days it would be day 27).
    w.advance(Duration::hours(36)).await;
    let second = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((second.rotated, second.failed), (1, 0), "{}", second.line());
    let again = second.reports[0].rotated.clone().unwrap();
    assert_eq!(again.reason, Reason::Due);
    assert!(again.drift.iter().any(|d| d.contains("validTo clamped")));
    let (id2, value2) = w.current("clamped").await.unwrap();
    assert_eq!(id2, again.authorization_id);
    assert!(w.authenticates(&value2).await);
}
