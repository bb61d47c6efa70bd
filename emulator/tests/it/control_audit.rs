//! `POST /_control/orgs/{org}/audit`: audited actions that are not a PAT's (policy changes, audit stream
//! changes) appear in the audit log API with the actor, area and data given — and not when auditing is off.

use super::support::{self, ADMIN};
use serde_json::{Value, json};

async fn log(env: &support::Env) -> Vec<Value> {
    let token = env.user_token(ADMIN, &["vso.auditlog"]).await;
    let v: Value = env
        .http
        .get(env.audit_url("/fabrikam/_apis/audit/auditlog?api-version=7.2-preview.1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["decoratedAuditLogEntries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn recorded_policy_and_stream_actions_appear_in_the_log() {
    let env = support::start().await;
    let body = json!({
        "actionId": "OrganizationPolicy.PolicyValueUpdated",
        "actorUpn": ADMIN,
        "details": "Policy Allow public projects was changed to On.",
        "data": { "PolicyName": "Policy.AllowAnonymousAccess", "PolicyValue": "ON" },
        "userAgent": "Mozilla/5.0"
    });
    env.post_ctl("/_control/orgs/fabrikam/audit", body).await;
    env.post_ctl("/_control/orgs/fabrikam/audit", json!({ "actionId": "AuditLog.StreamDisabledBySystem" })).await;
    let entries = log(&env).await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let policy = entries.iter().find(|e| e["actionId"] == "OrganizationPolicy.PolicyValueUpdated").unwrap();
    assert_eq!(policy["area"], "OrganizationPolicy");
    assert_eq!(policy["actorUPN"], ADMIN);
    assert_eq!(policy["authenticationMechanism"], "FedAuth");
    assert_eq!(policy["data"]["PolicyValue"], "ON");
    let stream = entries.iter().find(|e| e["actionId"] == "AuditLog.StreamDisabledBySystem").unwrap();
    assert_eq!(stream["actorDisplayName"], "Azure DevOps Services");

    let (status, _) =
        env.ctl(reqwest::Method::POST, "/_control/orgs/fabrikam/audit", json!({ "actionId": "nodot" })).await;
    assert_eq!(status, 400);
    let (status, _) = env.ctl(reqwest::Method::POST, "/_control/orgs/nope/audit", json!({ "actionId": "A.B" })).await;
    assert_eq!(status, 404);

    env.put_ctl("/_control/orgs/fabrikam/policy", json!({ "auditEnabled": false })).await;
    env.post_ctl("/_control/orgs/fabrikam/audit", json!({ "actionId": "AuditLog.StreamDeleted", "actorUpn": ADMIN }))
        .await;
    env.put_ctl("/_control/orgs/fabrikam/policy", json!({ "auditEnabled": true })).await;
    assert_eq!(log(&env).await.len(), 2, "an action was recorded while auditing was off");
    env.emu.shutdown().await.unwrap();
}
