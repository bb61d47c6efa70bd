//! Audit log and Token Admin: recorded Token.* events, PAT-authenticated actions, paging, retention,
//! administrators only.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

pub async fn audit_query(env: &Env, token: &str, query: &str) -> (u16, Value) {
    let r = env
        .http
        .get(env.audit_url(&format!("/fabrikam/_apis/audit/auditlog?api-version=7.2-preview.1&{query}")))
        .bearer_auth(token)
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn all_entries(env: &Env, token: &str, batch: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cont = String::new();
    loop {
        let (s, page) = audit_query(env, token, &format!("batchSize={batch}&continuationToken={cont}")).await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["decoratedAuditLogEntries"].as_array().unwrap().iter().cloned());
        if !page["hasMore"].as_bool().unwrap() {
            let last = page["continuationToken"].as_str().unwrap();
            assert!(out.is_empty() || !last.is_empty(), "the last page has a token too, as in the spec's example");
            break;
        }
        cont = page["continuationToken"].as_str().unwrap().to_string();
    }
    out
}

#[tokio::test]
async fn token_events_pat_usage_and_discovery_are_audited() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let c = env.create_pat(&t, "fabrikam", "deploy", "vso.code", 1).await;
    let id = c["patToken"]["authorizationId"].as_str().unwrap().to_string();
    let secret = c["patToken"]["token"].as_str().unwrap().to_string();
    env.pat_api(Method::PUT, "fabrikam", "api-version=7.2-preview.1", &t)
        .json(&json!({ "authorizationId": id, "displayName": "deploy2" }))
        .send()
        .await
        .unwrap();
    let used = env
        .post_ctl(
            "/_control/pats/use",
            json!({ "token": secret, "organization": "fabrikam", "actionId": "Git.RefUpdatePoliciesBypassed", "ipAddress": "203.0.113.9", "userAgent": "curl/8.0" }),
        )
        .await;
    assert_eq!(used["authorizationId"], id.as_str());
    let c2 = env.create_pat(&t, "fabrikam", "leaky", "vso.code", 5).await;
    let leaked = c2["patToken"]["authorizationId"].as_str().unwrap().to_string();
    let d = env.post_ctl(&format!("/_control/pats/{leaked}/discover"), json!({})).await;
    assert_eq!(d["revoked"], true);
    env.advance(86_400 + 1).await;

    let admin = env.user_token(ADMIN, &["vso.auditlog"]).await;
    let entries = all_entries(&env, &admin, 2).await;
    let actions: Vec<&str> = entries.iter().map(|e| e["actionId"].as_str().unwrap()).collect();
    for a in [
        "Token.PatCreateEvent",
        "Token.PatUpdateEvent",
        "Git.RefUpdatePoliciesBypassed",
        "Token.PatPublicDiscoveryEvent",
        "Token.PatSystemRevokeEvent",
        "Token.PatExpiredEvent",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let usage = entries.iter().find(|e| e["actionId"] == "Git.RefUpdatePoliciesBypassed").unwrap();
    assert_eq!(usage["authenticationMechanism"], format!("PAT_Unscoped authorizationId: {id}"));
    assert_eq!(usage["ipAddress"], "203.0.113.9");
    assert_eq!(usage["userAgent"], "curl/8.0");
    assert_eq!(usage["actorUPN"], ALICE);
    let times: Vec<&str> = entries.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let ids: std::collections::HashSet<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), entries.len(), "no entry repeats across pages");

    // The same window as a download, JSON and CSV.
    for (format, marker) in [("json", "\"actionId\":\"Token.PatCreateEvent\""), ("csv", "\"Token.PatCreateEvent\"")] {
        let r = env
            .http
            .get(env.audit_url(&format!("/fabrikam/_apis/audit/downloadlog?format={format}&api-version=7.2-preview.1")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains(marker), "{format}: {text}");
        assert_eq!(text.matches("Token.PatCreateEvent").count(), 2, "{format}");
    }

    // A revoked PAT can no longer be used.
    let (s, _) = env
        .ctl(
            Method::POST,
            "/_control/pats/use",
            json!({ "token": c2["patToken"]["token"], "organization": "fabrikam" }),
        )
        .await;
    assert_eq!(s, 401);

    // 90-day retention.
    env.advance(91 * 86_400).await;
    let admin = env.user_token(ADMIN, &["vso.auditlog"]).await;
    assert!(all_entries(&env, &admin, 50).await.is_empty());
}

#[tokio::test]
async fn audit_log_is_for_administrators() {
    let env = start().await;
    let alice = env.user_token(ALICE, &["vso.auditlog"]).await;
    let (s, _) = audit_query(&env, &alice, "").await;
    assert_eq!(s, 401);
    let admin_wrong_scope = env.user_token(ADMIN, &["vso.pats"]).await;
    let (s, _) = audit_query(&env, &admin_wrong_scope, "").await;
    assert_eq!(s, 403);
    let admin = env.user_token(ADMIN, &["vso.auditlog"]).await;
    let (s, _) = audit_query(&env, &admin, "batchSize=0").await;
    assert_eq!(s, 400);
    let (s, v) = audit_query(&env, &admin, "startTime=2020-01-01T00:00:00Z&endTime=2020-01-02T00:00:00Z").await;
    assert_eq!((s, v["hasMore"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn token_admin_lists_and_revokes_a_users_pats() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = env.create_pat(&t, "fabrikam", &format!("p{i}"), "vso.code", 5).await;
        ids.push(c["patToken"]["authorizationId"].as_str().unwrap().to_string());
        let _ = c;
    }
    let user =
        env.post_ctl("/_control/users", json!({ "upn": "carol@fabrikam.test", "organizations": ["fabrikam"] })).await;
    assert!(user["descriptor"].as_str().unwrap().starts_with("aad."));
    let admin = env.user_token(ADMIN, &["vso.tokenadministration"]).await;
    let alice_descriptor = {
        let s = env.emu.context().state();
        s.user_by_upn(ALICE).unwrap().descriptor()
    };
    let mut listed = Vec::new();
    let mut cont = String::new();
    loop {
        let r = env
            .http
            .get(env.devops(&format!(
                "/fabrikam/_apis/TokenAdmin/PersonalAccessTokens/{alice_descriptor}?pageSize=2&continuationToken={cont}&api-version=7.2-preview.1"
            )))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        listed
            .extend(v["value"].as_array().unwrap().iter().map(|s| s["authorizationId"].as_str().unwrap().to_string()));
        match v["continuationToken"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);

    let body: Vec<Value> = ids[..2].iter().map(|i| json!({ "authorizationId": i })).collect();
    let r = env
        .http
        .post(env.devops("/fabrikam/_apis/tokenadmin/revocations?api-version=7.2-preview.1"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, active) = {
        let r = env
            .pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1&displayFilterOption=active", &t)
            .send()
            .await
            .unwrap();
        (0, r.json::<Value>().await.unwrap())
    };
    assert_eq!(active["patTokens"].as_array().unwrap().len(), 3);
    let too_many: Vec<Value> = (0..101).map(|_| json!({ "authorizationId": uuid::Uuid::new_v4() })).collect();
    let r = env
        .http
        .post(env.devops("/fabrikam/_apis/tokenadmin/revocations?api-version=7.2-preview.1"))
        .bearer_auth(&admin)
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A revocation rule blocks matching PATs created before it.
    let c = env.create_pat(&t, "fabrikam", "proj", "vso.project", 5).await;
    let secret = c["patToken"]["token"].as_str().unwrap();
    let ok = env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("", Some(secret)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    env.advance(1).await;
    let r = env
        .http
        .post(env.devops("/fabrikam/_apis/tokenadmin/revocationrules?api-version=7.2-preview.1"))
        .bearer_auth(&admin)
        .json(&json!({ "scopes": "vso.project vso.packaging" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let blocked =
        env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("", Some(secret)).send().await.unwrap();
    assert_eq!(blocked.status(), 401);

    // Not an administrator.
    let alice_admin_scope = env.user_token(ALICE, &["vso.tokenadministration"]).await;
    let r = env
        .http
        .post(env.devops("/fabrikam/_apis/tokenadmin/revocations?api-version=7.2-preview.1"))
        .bearer_auth(&alice_admin_scope)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
