//! The new-PAT test against patrol-emulator: every rotation reads `connectionData` with the new PAT
//! (Basic auth) before storing it; when Azure DevOps refuses it, the PAT is never stored, is revoked at
//! once, an alert names the step, and the old PAT stays current and working.

use super::world::{ORG, OWNER, World, seed};
use patrol::devops::DisplayFilter;
use patrol::notify::Notice;
use patrol::rotation::engine::RunOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_new_pat_is_never_stored_and_is_revoked_while_the_old_one_stays() {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.packaging\"\n\
         [[token]]\nsecret = \"tested-pat\"\ndisplay_name = \"Tested\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n"
    );
    let w = World::start(seed(), &policy).await;
    let engine = w.local.engine().unwrap();
    // A narrow-scope PAT passes the test (connectionData is readable with any scope).
    let first = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((first.rotated, first.failed), (1, 0), "{}", first.line());
    assert!(first.reports[0].done.iter().any(|d| d.contains("tested new PAT")), "{:?}", first.reports[0].done);
    let (old, old_value) = w.current("tested-pat").await.unwrap();
    let versions =
        w.local.store.list_versions(&patrol::domain::SecretName::parse("tested-pat").unwrap()).await.unwrap().len();

    // Azure DevOps refuses the next new PAT on connectionData (e.g. Conditional Access, an IP policy).
    let r = w
        .post(
            "faults/once",
            json!({ "kind": "status", "status": 401, "service": "devops", "pathContains": "connectionData" }),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let failed = engine.rotate_one("tested-pat", true, false, None).await.unwrap();
    assert_eq!((failed.rotated, failed.failed), (0, 1), "{}", failed.line());
    let report = &failed.reports[0];
    assert_eq!(report.revoked.len(), 1, "{report:?}");
    let refused = report.revoked[0];
    let step = failed.notices.iter().find_map(|a| match &a.notice {
        Notice::RotationFailed { step, .. } => Some(step.clone()),
        _ => None,
    });
    assert_eq!(step.as_deref(), Some("test"), "{:?}", failed.notices);
    // Never stored; revoked; the old PAT is current and authenticates.
    assert_eq!(
        w.local.store.list_versions(&patrol::domain::SecretName::parse("tested-pat").unwrap()).await.unwrap().len(),
        versions
    );
    assert_eq!(w.current("tested-pat").await.unwrap(), (old, old_value.clone()));
    assert!(w.pats(DisplayFilter::Revoked).await.iter().any(|p| p.authorization_id == refused));
    assert!(w.authenticates(&old_value).await);
    // No PAT value in the report or the notices.
    let text = format!("{:?}{:?}", failed.reports, failed.notices);
    for secret in w.minted().await {
        assert!(!text.contains(&secret), "a minted secret leaked into the report");
    }

    // The next run (no fault) rotates.
    let retry = engine.rotate_one("tested-pat", true, false, None).await.unwrap();
    assert_eq!((retry.rotated, retry.failed), (1, 0), "{}", retry.line());
    assert_ne!(w.current("tested-pat").await.unwrap().0, old);
}
