//! PAT Lifecycle API behaviour: create/get/list/update/revoke, refusals with `patTokenError`, paging.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn create_get_update_revoke_round_trip() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let created = env.create_pat(&t, "fabrikam", "ci-build", "vso.code vso.build", 30).await;
    assert_eq!(created["patTokenError"], "none");
    assert_eq!(created["patTokenErrorMessage"], Value::Null);
    let pat = &created["patToken"];
    let secret = pat["token"].as_str().unwrap();
    assert_eq!(secret.len(), 84);
    assert_eq!(&secret[76..80], "AZDO");
    assert_eq!(pat["targetAccounts"].as_array().unwrap().len(), 1);
    let id = pat["authorizationId"].as_str().unwrap().to_string();

    // Get never returns the secret.
    let got: Value = env
        .pat_api(Method::GET, "fabrikam", &format!("authorizationId={id}&api-version=7.1-preview.1"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["patToken"]["token"], Value::Null);
    assert_eq!(got["patToken"]["displayName"], "ci-build");
    assert!(got.get("patTokenErrorMessage").is_none(), "7.1 has no patTokenErrorMessage");

    // The PAT works for an ordinary call.
    let projects = env
        .http
        .get(env.devops("/fabrikam/_apis/projects?api-version=7.1"))
        .basic_auth("", Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(projects.status(), 401, "vso.code/vso.build do not include vso.project");

    let upd: Value = env
        .pat_api(Method::PUT, "fabrikam", "api-version=7.2-preview.1", &t)
        .json(&json!({ "authorizationId": id, "displayName": "ci-build-2", "scope": "vso.project" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upd["patTokenError"], "none");
    assert_eq!(upd["patToken"]["scope"], "vso.project");
    let projects =
        env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("x", Some(secret)).send().await.unwrap();
    assert_eq!(projects.status(), 200);

    let del = env
        .pat_api(Method::DELETE, "fabrikam", &format!("authorizationId={id}&api-version=7.2-preview.1"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let projects =
        env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("x", Some(secret)).send().await.unwrap();
    assert_eq!(projects.status(), 401);

    let upd: Value = env
        .pat_api(Method::PUT, "fabrikam", "api-version=7.2-preview.1", &t)
        .json(&json!({ "authorizationId": id, "displayName": "again" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upd["patTokenError"], "invalidToken");
    assert!(upd["patTokenErrorMessage"].as_str().unwrap().contains("revoked"));
    env.emu.shutdown().await.unwrap();
}

async fn list(env: &Env, t: &str, query: &str) -> (u16, Value) {
    let r =
        env.pat_api(Method::GET, "fabrikam", &format!("api-version=7.2-preview.1&{query}"), t).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

#[tokio::test]
async fn list_pages_with_continuation_and_same_filters() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    for i in 0..7 {
        env.create_pat(&t, "fabrikam", &format!("tok-{i}"), "vso.code", 10 + i).await;
    }
    env.create_pat(&t, "contoso", "elsewhere", "vso.code", 10).await;
    let mut names = Vec::new();
    let mut cont = String::new();
    loop {
        let (s, page) =
            list(&env, &t, &format!("sortByOption=displayName&isSortAscending=false&$top=3&continuationToken={cont}"))
                .await;
        assert_eq!(s, 200, "{page}");
        for p in page["patTokens"].as_array().unwrap() {
            names.push(p["displayName"].as_str().unwrap().to_string());
            assert_eq!(p["token"], Value::Null);
        }
        cont = page["continuationToken"].as_str().unwrap().to_string();
        if cont.is_empty() {
            break;
        }
        let (s, _) =
            list(&env, &t, &format!("sortByOption=displayName&isSortAscending=true&$top=3&continuationToken={cont}"))
                .await;
        assert_eq!(s, 400, "later pages require the same filters");
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("tok-{i}")).collect();
    assert_eq!(names, expected, "org-scoped PATs of other organizations are not listed");
    let (s, _) = list(&env, &t, "$top=101").await;
    assert_eq!(s, 400);
    let (s, _) = list(&env, &t, "displayFilterOption=bogus").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn expiry_runs_on_the_virtual_clock() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let c = env.create_pat(&t, "fabrikam", "short", "vso.project", 1).await;
    let id = c["patToken"]["authorizationId"].as_str().unwrap().to_string();
    let secret = c["patToken"]["token"].as_str().unwrap().to_string();
    env.advance(86_400 + 5).await;
    let t = env.pats_token(ALICE).await;
    let (_, active) = list(&env, &t, "displayFilterOption=active").await;
    assert!(active["patTokens"].as_array().unwrap().is_empty());
    let (_, expired) = list(&env, &t, "displayFilterOption=expired").await;
    assert_eq!(expired["patTokens"][0]["authorizationId"], id.as_str());
    let r = env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("", Some(&secret)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("expired"));
    let upd: Value = env
        .pat_api(Method::PUT, "fabrikam", "api-version=7.2-preview.1", &t)
        .json(&json!({ "authorizationId": id, "validTo": "2099-01-01T00:00:00Z" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upd["patTokenError"], "expiredPatCannotBeExtended");
}

#[tokio::test]
async fn policies_set_through_the_control_api() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    env.put_ctl(
        "/_control/policies/tenant",
        json!({ "maxLifespanDays": 7, "restrictFullScoped": true, "restrictGlobal": true }),
    )
    .await;
    let c = env.create_pat(&t, "fabrikam", "long", "vso.code", 60).await;
    assert_eq!(c["patTokenError"], "none");
    let valid_to = patrol_emulator::wire::parse_time(c["patToken"]["validTo"].as_str().unwrap()).unwrap();
    let max = env.emu.clock().now() + time::Duration::days(7);
    assert!(valid_to <= max && valid_to > max - time::Duration::minutes(1), "validTo is clamped to now + 7 days");
    let c = env.create_pat(&t, "fabrikam", "full", "app_token", 3).await;
    assert_eq!(c["patTokenError"], "fullScopePatPolicyViolation");
    assert_eq!(c["patToken"], Value::Null);
    let r: Value = env
        .pat_api(Method::POST, "fabrikam", "api-version=7.1-preview.1", &t)
        .json(&json!({ "displayName": "g", "scope": "vso.code", "validTo": "2099-01-01T00:00:00Z", "allOrgs": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["patTokenError"], "globalPatPolicyViolation");
    assert!(r.get("patTokenErrorMessage").is_none());
    env.put_ctl("/_control/orgs/fabrikam/policy", json!({ "restrictPatCreation": true, "allowlist": [BOB] })).await;
    let c = env.create_pat(&t, "fabrikam", "blocked", "vso.code", 3).await;
    assert_eq!(c["patTokenError"], "disablePatCreationPolicyViolation");
    let bob = env.pats_token(BOB).await;
    let c = env.create_pat(&bob, "fabrikam", "allowed", "vso.code", 3).await;
    assert_eq!(c["patTokenError"], "none");
    let c = env.create_pat(&t, "fabrikam", "bad", "vso.nonsense", 3).await;
    assert_eq!(c["patTokenError"], "invalidScope");
}

#[tokio::test]
async fn get_and_revoke_unknown_ids() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let id = uuid::Uuid::new_v4();
    let (_, g) = (
        0,
        env.pat_api(Method::GET, "fabrikam", &format!("authorizationId={id}&api-version=7.2-preview.1"), &t)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(g["patTokenError"], "authorizationNotFound");
    let r = env
        .pat_api(Method::DELETE, "fabrikam", &format!("authorizationId={id}&api-version=7.2-preview.1"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Bob cannot see or revoke Alice's PAT.
    let c = env.create_pat(&t, "fabrikam", "mine", "vso.code", 3).await;
    let aid = c["patToken"]["authorizationId"].as_str().unwrap();
    let bob = env.pats_token(BOB).await;
    let r = env
        .pat_api(Method::DELETE, "fabrikam", &format!("authorizationId={aid}&api-version=7.2-preview.1"), &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = env
        .pat_api(Method::DELETE, "fabrikam", &format!("authorizationId={aid}&api-version=7.2-preview.1"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = env
        .pat_api(Method::DELETE, "fabrikam", &format!("authorizationId={aid}&api-version=7.2-preview.1"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "revoking twice is fine");
}
