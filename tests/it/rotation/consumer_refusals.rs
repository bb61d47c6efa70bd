//! Consumers that answer 404 (deleted), 403 (no rights) and 409 (edited concurrently) at delivery, against
//! patrol-emulator: each one gets a `RotationFailed` alert naming the exact object, the error and the fix;
//! nothing is half-written (the refused objects keep their old value, the others get the new one); the
//! previous PAT stays valid; and once the object is fixed the next run delivers it.

use super::consumers::{APP, Cons, EP};
use patrol::devops::DisplayFilter;
use patrol::notify::Notice;
use serde_json::json;
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_answering_404_403_409_are_named_with_the_fix_and_nothing_is_half_written() {
    let c = Cons::start().await;
    assert_eq!(c.run().await.failed, 0);
    let (old, old_value) = c.w.current("feed-pat").await.unwrap();
    // 404: the service connection is deleted. 403: patrol loses its role on the variable group.
    // 409: GitHub refuses the next secret write as a concurrent change.
    let r = c.w.http.delete(c.w.control(&format!("consumers/service-endpoints/{EP}"))).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r =
        c.w.http
            .put(c.w.control("consumers/variable-groups/7/administrators"))
            .json(&json!({ "remove": [APP] }))
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success());
    let f =
        c.w.post(
            "consumers/faults",
            json!({ "api": "githubSecrets", "target": "octo/app/prod", "status": 409, "method": "PUT" }),
        )
        .await;
    assert!(f.status().is_success(), "{}", f.text().await.unwrap());

    c.w.advance(Duration::days(24)).await;
    let s = c.run().await;
    assert_eq!(s.rotated, 1, "{:?}", s.reports);
    let (new, new_value) = c.w.current("feed-pat").await.unwrap();
    assert_ne!(new, old);
    let alerts: Vec<(String, String, String)> = s
        .notices
        .iter()
        .filter_map(|a| match &a.notice {
            Notice::RotationFailed { step, error, next, .. } => Some((step.clone(), error.clone(), next.clone())),
            _ => None,
        })
        .collect();
    let alert = |id: &str| {
        alerts.iter().find(|(step, _, _)| step == &format!("deliver {id}")).cloned().unwrap_or_else(|| {
            panic!("no alert for {id}: {alerts:?}");
        })
    };
    let (_, e, next) = alert("service-connection:fabrikam/web/npm-feed");
    assert!(e.contains("npm-feed") && (e.contains("not found") || e.contains("404")), "{e}");
    assert!(next.contains("Check service connection \"npm-feed\" in fabrikam/web exists"), "{next}");
    let (_, e, next) = alert("variable-group:fabrikam/web/7/AZDO_PAT");
    assert!(e.contains("403"), "{e}");
    assert!(next.contains("Administrator of the group"), "{next}");
    let (_, e, next) = alert("github:octo/app/environments/prod/AZDO_PAT");
    assert!(e.contains("409") || e.contains("changed concurrently"), "{e}");
    assert!(next.contains("Actions secret AZDO_PAT"), "{next}");
    for (_, _, next) in &alerts {
        assert!(next.contains("The previous PAT stays valid"), "{next}");
    }
    assert_eq!(alerts.len(), 3, "only the three refused consumers alert: {alerts:?}");

    // Nothing half-written: the refused objects hold the old value (or are gone), the others the new one.
    let g = c.ctl("consumers/variable-groups/7").await.to_string();
    assert!(g.contains(&old_value) && !g.contains(&new_value), "the group keeps the old PAT");
    assert!(g.contains("keep-me-0123456789abcdef"), "its other secret is untouched");
    let gh = c.ctl("consumers/github/secrets?repository=octo/app&environment=prod").await.to_string();
    assert!(gh.contains(&old_value) && !gh.contains(&new_value), "the GitHub secret keeps the old PAT");
    let ep = c.ctl(&format!("consumers/service-endpoints/{EP}")).await.to_string();
    assert!(!ep.contains(&new_value), "a deleted connection is not recreated: {ep}");
    let copy = c.w.local.store.get(&patrol::domain::SecretName::parse("team-copy").unwrap(), None).await.unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&copy.unwrap().value), new_value.as_str());
    // The previous PAT stays valid, well past the grace period, while consumers lack the new one.
    c.w.advance(Duration::days(2)).await;
    c.run().await;
    let active = c.w.pats(DisplayFilter::Active).await;
    assert!(active.iter().any(|p| p.authorization_id == old), "previous PAT kept");
    assert!(c.w.authenticates(&old_value).await, "and it still works for the consumers that hold it");

    // The fixes: rights back on the group; the next due attempt delivers it (and the 409 was one-off).
    let r =
        c.w.http
            .put(c.w.control("consumers/variable-groups/7/administrators"))
            .json(&json!({ "add": [APP] }))
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success());
    c.w.advance(Duration::hours(7)).await;
    c.run().await;
    let g = c.ctl("consumers/variable-groups/7").await.to_string();
    assert!(g.contains(&new_value), "delivered once fixed");
    let gh = c.ctl("consumers/github/secrets?repository=octo/app&environment=prod").await.to_string();
    assert!(gh.contains(&new_value), "GitHub delivered on the retry");
}
