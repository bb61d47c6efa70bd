//! Owner sessions during long runs: access tokens that live minutes while the virtual clock jumps during a
//! run (patrol refreshes and the run does not fail), and a revoked refresh token (SignInRequired, nothing
//! created, nothing half-done).

use super::world::{ORG, OWNER, World, seed};
use patrol::devops::DisplayFilter;
use patrol::notify::Notice;
use patrol::rotation::engine::RunOptions;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::Duration;

fn policy(n: usize) -> String {
    let mut p = format!("[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n");
    for i in 0..n {
        p.push_str(&format!(
            "[[token]]\nsecret = \"long-{i}\"\ndisplay_name = \"Long {i}\"\nvalidity_days = 30\n\
             rotate_before_days = 7\ngrace_days = 1\n"
        ));
    }
    p
}

async fn entra_requests(w: &World) -> u64 {
    let v: serde_json::Value = w.http.get(w.control("stats")).send().await.unwrap().json().await.unwrap();
    v["requests"]["entra"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_outlives_several_access_tokens_does_not_fail() {
    let w = Arc::new(World::start(seed(), &policy(6)).await);
    let r = w.http.put(w.control("lifetimes")).json(&json!({ "accessTokenSecs": 120 })).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r =
        w.http.put(w.control("faults")).json(&json!({ "latencyMs": 40, "services": ["devops"] })).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // The access token from sign-in lived an hour; start past it.
    w.advance(Duration::hours(2)).await;
    let mut engine = w.local.engine().unwrap();
    engine.concurrency = 1;
    let before = entra_requests(&w).await;
    // While the run goes on, virtual time jumps a minute every 100 ms (each access token lives 2 minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (w, stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            let mut jumps = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                w.advance(Duration::minutes(1)).await;
                jumps += 1;
            }
            jumps
        })
    };
    let summary = engine.run(RunOptions::default()).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let jumps = ticker.await.unwrap();
    assert_eq!((summary.rotated, summary.failed), (6, 0), "{}", summary.line());
    assert!(jumps >= 6, "the run spanned several access-token lifetimes ({jumps} one-minute jumps)");
    let refreshes = entra_requests(&w).await - before;
    assert!(refreshes >= 3, "patrol refreshed its access token during the run ({refreshes} Entra requests)");
    for i in 0..6 {
        let (_, value) = w.current(&format!("long-{i}")).await.unwrap();
        assert!(w.authenticates(&value).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_raises_sign_in_required_and_changes_nothing() {
    let w = World::start(seed(), &policy(2)).await;
    let engine = w.local.engine().unwrap();
    let first = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((first.rotated, first.failed), (2, 0), "{}", first.line());
    let before: Vec<_> = w.pats(DisplayFilter::All).await.into_iter().map(|p| p.authorization_id).collect();
    let current = w.current("long-0").await.unwrap();

    let r = w.post("refresh-tokens/revoke", json!({ "upn": OWNER })).await;
    assert!(r.status().is_success(), "{}", r.status());
    // The cached access token expires; the next call needs the (revoked) refresh token.
    w.advance(Duration::hours(2)).await;
    let run = engine.rotate_one("long-0", true, false, None).await.unwrap();
    assert_eq!(run.rotated, 0, "{}", run.line());
    let sign_in = run.notices.iter().find_map(|a| match &a.notice {
        Notice::SignInRequired { owner, reason } => Some((owner.to_string(), reason.clone())),
        _ => None,
    });
    let (owner, reason) = sign_in.expect("a SignInRequired notice");
    assert_eq!(owner, OWNER);
    assert!(!reason.is_empty());
    // Nothing was created, revoked or written; no operation is left in flight (checked after the owner
    // signs in again, as an operator would).
    super::world::sign_in(&w.emu, &w.local).await;
    let after: Vec<_> = w.pats(DisplayFilter::All).await.into_iter().map(|p| p.authorization_id).collect();
    assert_eq!(before, after);
    assert!(w.pats(DisplayFilter::Revoked).await.is_empty());
    assert_eq!(w.current("long-0").await.unwrap(), current);
    assert!(w.authenticates(&current.1).await);
    let journal = w.local.state.load("journal/long-0").await.unwrap().map(|(b, _)| String::from_utf8(b).unwrap());
    let journal: serde_json::Value = serde_json::from_str(&journal.unwrap_or_else(|| "{}".into())).unwrap();
    assert!(journal.get("operation").is_none_or(|o| o.is_null()), "nothing half-done: {journal}");
    // Signed in again, the forced rotation goes through.
    let again = engine.rotate_one("long-0", true, false, None).await.unwrap();
    assert_eq!((again.rotated, again.failed), (1, 0), "{}", again.line());
}
