//! A lost Create response: the emulator performs the Create and then drops the connection, so patrol
//! never sees the new PAT's value. patrol must find the orphan by its operation marker, revoke it, and
//! rotate under a new operation: afterwards exactly one live PAT for the token, the secret valid.

use super::world::{ORG, OWNER, World, seed};
use patrol::devops::DisplayFilter;
use patrol::rotation::engine::RunOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_response_leaves_one_live_pat_and_revokes_the_orphan() {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"lost-create\"\ndisplay_name = \"Lost create\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 1\n"
    );
    let w = World::start(seed(), &policy).await;
    let engine = w.local.engine().unwrap();
    let mut transcript = String::new();
    for round in 0..2 {
        let before = w.current("lost-create").await;
        let r = w
            .post(
                "faults/once",
                json!({ "kind": "loseResponse", "service": "devops", "method": "POST", "pathContains": "/_apis/tokens/pats" }),
            )
            .await;
        assert!(r.status().is_success(), "{}", r.status());
        let summary = if round == 0 {
            engine.run(RunOptions::default()).await.unwrap()
        } else {
            engine.rotate_one("lost-create", true, false, None).await.unwrap()
        };
        transcript.push_str(&serde_json::to_string(&summary).unwrap());
        let stats: serde_json::Value = w.http.get(w.control("stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["responsesLost"], json!(round + 1), "the fault fired: {stats}");
        assert_eq!((summary.rotated, summary.failed), (1, 0), "round {round}: {}", summary.line());
        let (id, value) = w.current("lost-create").await.expect("a current secret");
        assert!(w.authenticates(&value).await, "round {round}: the stored value works");

        // Every PAT the token ever had: the orphan (created, value lost) is revoked, one new PAT is live.
        let ours = |p: &patrol::devops::Pat| p.display_name.starts_with("Lost create (patrol:");
        let active: Vec<_> = w.pats(DisplayFilter::Active).await.into_iter().filter(ours).collect();
        let revoked: Vec<_> = w.pats(DisplayFilter::Revoked).await.into_iter().filter(ours).collect();
        let live_new: Vec<_> =
            active.iter().filter(|p| Some(p.authorization_id) != before.as_ref().map(|b| b.0)).collect();
        assert_eq!(live_new.len(), 1, "round {round}: exactly one new live PAT: {active:?}");
        assert_eq!(live_new[0].authorization_id, id);
        assert_eq!(revoked.len(), round + 1, "round {round}: the orphan of each lost Create is revoked: {revoked:?}");
        let orphan = revoked.iter().find(|p| {
            !summary.reports[0].revoked.is_empty() && summary.reports[0].revoked.contains(&p.authorization_id)
        });
        assert!(orphan.is_some(), "round {round}: this run revoked the orphan: {:?}", summary.reports[0]);
        // The orphan had a different operation marker from the PAT that was stored.
        let marker = |n: &str| n.rsplit("(patrol:").next().unwrap_or_default().to_owned();
        assert!(revoked.iter().all(|o| marker(&o.display_name) != marker(&live_new[0].display_name)));
        if let Some((old, _)) = before {
            // The previous PAT drains for its one day of grace.
            assert!(active.iter().any(|p| p.authorization_id == old));
        }
    }
    // No minted secret (PAT values, tokens) in what the run returns.
    let minted = w.minted().await;
    assert!(!minted.is_empty());
    assert!(minted.iter().all(|m| !transcript.contains(m.as_str())), "a minted secret leaked into a summary");
}
