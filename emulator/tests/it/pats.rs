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
