//! Authentication like the real service: sign-in page vs 401, PATs and Basic auth refused on the PAT
//! API, scopes, membership, api-version negotiation.

use crate::support::*;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn unauthenticated_gets_sign_in_page_unless_suppressed() {
    let env = start().await;
    let url = env.devops("/fabrikam/_apis/tokens/pats?api-version=7.1-preview.1");
    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 203);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let r = env.http.get(&url).header("X-TFS-FedAuthRedirect", "Suppress").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["typeKey"], "UnauthorizedRequestException");
    let r =
        env.http.get(&url).bearer_auth("not-a-token").header("X-TFS-FedAuthRedirect", "Suppress").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_pat_cannot_manage_pats() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let created = env.create_pat(&t, "fabrikam", "full", "app_token", 5).await;
    let secret = created["patToken"]["token"].as_str().unwrap();
    let url = env.devops("/fabrikam/_apis/tokens/pats?api-version=7.1-preview.1");
    let r = env
        .http
        .get(&url)
        .basic_auth("", Some(secret))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("Microsoft Entra access token"));
    let r = env.http.get(&url).basic_auth("", Some(secret)).send().await.unwrap();
    assert_eq!(r.status(), 203, "without Suppress the sign-in page");
    // …but the same PAT authenticates an ordinary call.
    let r = env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("", Some(secret)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn scopes_and_membership_are_enforced() {
    let env = start().await;
    let read_only = env.user_token(ALICE, &["vso.pats"]).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &read_only).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .pat_api(Method::POST, "fabrikam", "api-version=7.2-preview.1", &read_only)
        .json(&serde_json::json!({"displayName": "x", "scope": "vso.code", "validTo": "2099-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let other = env.user_token(ALICE, &["vso.code"]).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &other).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let impersonation = env.user_token(ALICE, &["user_impersonation"]).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &impersonation).send().await.unwrap();
    assert_eq!(r.status(), 403, "vso.pats replaced user_impersonation");
    let bob = env.pats_token(BOB).await;
    let r = env.pat_api(Method::GET, "contoso", "api-version=7.2-preview.1", &bob).send().await.unwrap();
    assert_eq!(r.status(), 401, "bob is not a member of contoso");
    let r = env.pat_api(Method::GET, "nowhere", "api-version=7.2-preview.1", &bob).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn api_versions_are_negotiated() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    for (q, status, key) in [
        ("", 400, "VssVersionNotSpecifiedException"),
        ("api-version=7.1", 400, "VssInvalidPreviewVersionException"),
        ("api-version=8.0-preview.1", 400, "VssVersionOutOfRangeException"),
    ] {
        let r = env.pat_api(Method::GET, "fabrikam", q, &t).send().await.unwrap();
        assert_eq!(r.status(), status, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["typeKey"], key);
    }
    let r = env
        .http
        .get(env.devops("/fabrikam/_apis/Tokens/Pats?api-version=6.1-preview"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "paths match case-insensitively, as in the spec examples");
}

#[tokio::test]
async fn malformed_body_gets_the_vss_envelope() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let r =
        env.pat_api(Method::POST, "fabrikam", "api-version=7.2-preview.1", &t).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["typeKey"], "JsonReaderException");
    assert_eq!(body["$id"], "1");
    assert!(body["message"].as_str().unwrap().starts_with("TF400898"));
}
