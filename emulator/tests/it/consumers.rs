//! The consumer side over real HTTP: service endpoints, variable groups, the GitHub Actions secrets API
//! (HTTPS, sealed boxes), who may call them (PATs, delegated and app-only Entra tokens), and the control API
//! (values, pipeline runs, workflow runs, webhook consumers, faults, persistence).

use crate::support::*;
use base64::Engine;
use patrol_emulator::EmulatorConfig;
use reqwest::Method;
use serde_json::{Value, json};

pub const EP_FEED: &str = "0f6a6f2e-1c7b-4d5e-9f00-000000000001";
pub const EP_GENERIC: &str = "0f6a6f2e-1c7b-4d5e-9f00-000000000002";
pub const GROUP: i32 = 7;
pub const KV_GROUP: i32 = 8;
/// An application added to the organization but granted nothing.
pub const SP_MEMBER: &str = "22222222-3333-4444-5555-666666666666";
/// An application not added to the organization.
pub const SP_STRANGER: &str = "33333333-4444-5555-6666-777777777777";
pub const GH_TOKEN: &str = "github_pat_11AAAAAAA0patrolTestToken0_writewritewritewritewritewritewritewritewrite";
pub const GH_READ_TOKEN: &str = "github_pat_11AAAAAAA0patrolTestToken0_readreadreadreadreadreadreadreadreadreadread";

pub struct World {
    pub env: Env,
    /// The PAT every consumer holds at the start.
    pub pat: String,
    /// A second active PAT (the "rotated" one).
    pub new_pat: String,
}

pub fn in_300_days() -> String {
    patrol_emulator::wire::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(300))
}

pub fn consumer_seed(pat: &str, new_pat: &str) -> patrol_emulator::seed::Seed {
    let mut s = seed();
    let valid_to = in_300_days();
    let extra: patrol_emulator::seed::Seed = serde_json::from_value(json!({
        "apps": [
            { "clientId": SP_MEMBER, "displayName": "member-sp", "clientSecret": "member-secret-0123456789" },
            { "clientId": SP_STRANGER, "displayName": "stranger-sp", "clientSecret": "stranger-secret-0123456789" }
        ],
        "pats": [
            { "owner": ALICE, "organization": "fabrikam", "displayName": "feed", "scope": "vso.packaging", "validTo": valid_to, "token": pat },
            { "owner": ALICE, "organization": "fabrikam", "displayName": "feed-2", "scope": "vso.packaging", "validTo": valid_to, "token": new_pat }
        ],
        "consumers": {
            "projects": [{ "organization": "fabrikam", "name": "web" }, { "organization": "fabrikam", "name": "api" }],
            "appMembers": [{ "organization": "fabrikam", "clientId": SP_MEMBER }],
            "serviceEndpoints": [
                { "organization": "fabrikam", "projects": ["web", "api"], "id": EP_FEED, "name": "feed-conn",
                  "type": "externalnpmregistry", "url": "https://pkgs.dev.azure.com/fabrikam/_packaging/feed/npm/registry/",
                  "scheme": "Token", "parameters": { "apitoken": pat }, "administrators": [APP_ID, ALICE] },
                { "organization": "fabrikam", "projects": ["web"], "id": EP_GENERIC, "name": "generic-conn",
                  "type": "generic", "url": "https://example.test/", "scheme": "UsernamePassword",
                  "parameters": { "username": "build", "password": pat }, "administrators": [ADMIN] }
            ],
            "variableGroups": [
                { "organization": "fabrikam", "projects": ["web"], "id": GROUP, "name": "release-secrets",
                  "variables": { "AZDO_PAT": { "value": pat, "isSecret": true }, "OTHER_SECRET": { "value": "keep-me", "isSecret": true }, "PLAIN": { "value": "hello" } },
                  "administrators": [APP_ID] },
                { "organization": "fabrikam", "projects": ["web"], "id": KV_GROUP, "name": "vault-linked", "type": "AzureKeyVault",
                  "keyVault": { "serviceEndpointId": EP_GENERIC, "vault": "patrol-emu" },
                  "variables": { "azdo-pat": { "isSecret": true } }, "administrators": [APP_ID] }
            ],
            "github": {
                "tokens": [
                    { "token": GH_TOKEN, "label": "patrol", "repositories": ["octo/app"], "organizations": ["octo"] },
                    { "token": GH_READ_TOKEN, "label": "reader", "repositories": ["octo/app"], "permission": "read" }
                ],
                "repositories": [{ "name": "octo/app", "environments": ["prod"], "secrets": [{ "name": "AZDO_PAT", "value": pat }] }],
                "organizations": [{ "login": "octo" }]
            }
        }
    }))
    .unwrap();
    s.apps.extend(extra.apps);
    s.pats.extend(extra.pats);
    s.consumers = extra.consumers;
    s
}

pub async fn world() -> World {
    world_with(EmulatorConfig::default()).await
}

pub async fn world_with(config: EmulatorConfig) -> World {
    let pat = patrol_emulator::patsecret::generate(2026, 11);
    let new_pat = patrol_emulator::patsecret::generate(2026, 12);
    let env = start_with(EmulatorConfig { seed: Some(consumer_seed(&pat, &new_pat)), ..config }).await;
    World { env, pat, new_pat }
}

impl Env {
    /// An app-only token (client credentials, `.default`) for Azure DevOps.
    pub async fn app_token(&self, client_id: &str) -> String {
        let v = self.post_ctl("/_control/app-tokens", json!({ "clientId": client_id, "resource": DEVOPS })).await;
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut rb = self.http.request(method, self.devops(path)).header("X-TFS-FedAuthRedirect", "Suppress");
        rb = match auth {
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Pat(p) => rb.basic_auth("", Some(p)),
            Auth::None => rb,
        };
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) },
            headers,
        )
    }

    pub async fn get_ctl(&self, path: &str) -> Value {
        let r = self.http.get(self.control(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }
}

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Bearer(&'a str),
    Pat(&'a str),
    None,
}

fn later(a: &Value, b: &Value) -> bool {
    let p = |v: &Value| patrol_emulator::wire::parse_time(v.as_str().unwrap()).unwrap();
    p(b) > p(a)
}

#[tokio::test]
async fn service_endpoints_are_listed_and_read_without_their_secrets() {
    let w = world().await;
    let env = &w.env;
    let t = env.app_token(APP_ID).await;
    let (s, list, _) = env
        .api(Method::GET, "/fabrikam/web/_apis/serviceendpoint/endpoints?api-version=7.1", Auth::Bearer(&t), None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["count"], 2);
    let feed = list["value"].as_array().unwrap().iter().find(|e| e["id"] == EP_FEED).unwrap();
    assert_eq!(feed["authorization"]["scheme"], "Token");
    assert!(
        feed["authorization"]["parameters"].as_object().unwrap().get("apitoken").is_none(),
        "lists leave confidential parameters out"
    );
    let generic = list["value"].as_array().unwrap().iter().find(|e| e["id"] == EP_GENERIC).unwrap();
    assert_eq!(generic["authorization"]["parameters"]["username"], "build");
    assert_eq!(feed["isShared"], true);

    let (_, by_name, _) = env
        .api(
            Method::GET,
            "/fabrikam/api/_apis/serviceendpoint/endpoints?endpointNames=FEED-CONN&api-version=7.2-preview.4",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(by_name["count"], 1, "names match case-insensitively, and only in the project");
    let (_, none, _) = env
        .api(
            Method::GET,
            "/fabrikam/api/_apis/serviceendpoint/endpoints?endpointNames=generic-conn&api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(none["count"], 0);
    let (_, typed, _) = env
        .api(
            Method::GET,
            "/fabrikam/web/_apis/serviceendpoint/endpoints?type=generic&authSchemes=UsernamePassword&api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(typed["count"], 1);
    let (_, managed, _) = env
        .api(
            Method::GET,
            "/fabrikam/web/_apis/serviceendpoint/endpoints?actionFilter=manage&api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(managed["count"], 1, "the app administers only feed-conn");

    let (s, one, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1"),
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["authorization"]["parameters"]["apitoken"], Value::Null);
    assert!(
        one["authorization"]["parameters"].as_object().unwrap().contains_key("apitoken"),
        "single reads return it as null"
    );
    assert!(!one.to_string().contains(&w.pat), "the PAT never comes back");
    let (s, missing, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{}?api-version=7.1", uuid::Uuid::new_v4()),
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!((s, missing), (200, Value::Null), "Azure DevOps answers an unknown endpoint with 200 and null");
    let (s, _, _) = env
        .api(Method::GET, "/fabrikam/nope/_apis/serviceendpoint/endpoints?api-version=7.1", Auth::Bearer(&t), None)
        .await;
    assert_eq!(s, 404);
    let (s, e, _) = env
        .api(Method::GET, "/fabrikam/web/_apis/serviceendpoint/endpoints?api-version=7.2", Auth::Bearer(&t), None)
        .await;
    assert_eq!((s, e["typeKey"].as_str()), (400, Some("VssInvalidPreviewVersionException")));
    let (s, e, _) = env
        .api(Method::GET, "/fabrikam/web/_apis/serviceendpoint/endpoints?api-version=6.0", Auth::Bearer(&t), None)
        .await;
    assert_eq!((s, e["typeKey"].as_str()), (400, Some("VssInvalidPreviewVersionException")), "released from 7.1 only");
    let (s, _, _) = env.api(Method::GET, "/fabrikam/web/_apis/serviceendpoint/endpoints", Auth::Bearer(&t), None).await;
    assert_eq!(s, 400, "api-version is required");
    // The api-version may come in Accept, as Microsoft's clients send it.
    let r = env
        .http
        .get(env.devops("/fabrikam/web/_apis/serviceendpoint/endpoints"))
        .bearer_auth(&t)
        .header("Accept", "application/json;api-version=7.1-preview.4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_service_endpoint_update_replaces_the_pat_and_keeps_secrets_sent_as_null() {
    let w = world().await;
    let env = &w.env;
    let t = env.app_token(APP_ID).await;
    let url = format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1");
    let (_, mut ep, _) = env.api(Method::GET, &url, Auth::Bearer(&t), None).await;
    let before = ep["modificationDate"].clone();
    ep["authorization"]["parameters"]["apitoken"] = json!(w.new_pat);
    let put = format!("/fabrikam/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1");
    let (s, updated, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&ep)).await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["authorization"]["parameters"]["apitoken"], Value::Null);
    assert!(later(&before, &updated["modificationDate"]));
    assert_eq!(updated["modifiedBy"]["uniqueName"], APP_ID);
    let held = env.get_ctl(&format!("/_control/consumers/service-endpoints/{EP_FEED}")).await;
    assert_eq!(held["parameters"]["apitoken"], json!(w.new_pat));
    assert_eq!(held["revision"], 1);

    // The PAT of the generic endpoint, sent back as null by its administrator, stays as it was.
    let admin = env.user_token(ADMIN, &["vso.serviceendpoint_manage"]).await;
    let (_, mut g, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_GENERIC}?api-version=7.1"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
    g["description"] = json!("renamed by a person");
    let (s, _, _) = env
        .api(
            Method::PUT,
            &format!("/fabrikam/_apis/serviceendpoint/endpoints/{EP_GENERIC}?api-version=7.1"),
            Auth::Bearer(&admin),
            Some(&g),
        )
        .await;
    assert_eq!(s, 200);
    let held = env.get_ctl(&format!("/_control/consumers/service-endpoints/{EP_GENERIC}")).await;
    assert_eq!(held["parameters"]["password"], json!(w.pat));
    assert_eq!(held["description"], "renamed by a person");

    // Refusals: wrong id in the body, a type change, a missing authorization, a deleted endpoint.
    let mut wrong = ep.clone();
    wrong["id"] = json!(EP_GENERIC);
    let (s, e, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&wrong)).await;
    assert_eq!((s, e["typeKey"].as_str()), (400, Some("ArgumentException")));
    let mut retyped = ep.clone();
    retyped["type"] = json!("generic");
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&retyped)).await.0, 400);
    let mut no_auth = ep.clone();
    no_auth.as_object_mut().unwrap().remove("authorization");
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&no_auth)).await.0, 400);
    let held = env.get_ctl(&format!("/_control/consumers/service-endpoints/{EP_FEED}")).await;
    assert_eq!(held["revision"], 1, "refused updates write nothing");
    let (s, _) = env.ctl(Method::DELETE, &format!("/_control/consumers/service-endpoints/{EP_FEED}"), json!({})).await;
    assert_eq!(s, 200);
    let (s, e, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&ep)).await;
    assert_eq!((s, e["typeKey"].as_str()), (404, Some("ServiceEndpointNotFoundException")));
    let (s, v, _) = env.api(Method::GET, &url, Auth::Bearer(&t), None).await;
    assert_eq!((s, v), (200, Value::Null));
}

#[tokio::test]
async fn execution_history_shows_pipeline_runs_and_a_run_on_a_dead_pat_fails() {
    let w = world().await;
    let env = &w.env;
    let run = |body: Value| async move {
        env.ctl(Method::POST, &format!("/_control/consumers/service-endpoints/{EP_FEED}/runs"), body).await
    };
    let (s, ok1) = run(json!({ "definition": "web-ci" })).await;
    assert_eq!((s, ok1["result"].as_str()), (200, Some("succeeded")), "{ok1}");
    assert!(ok1["authorizationId"].is_string());
    let (s, ok2) = run(json!({ "project": "api", "auditActionId": "Git.RefUpdatePoliciesBypassed" })).await;
    assert_eq!(s, 200, "{ok2}");
    // Someone puts a value that is not an active PAT in the endpoint: the next run fails.
    env.post_ctl(
        &format!("/_control/consumers/service-endpoints/{EP_FEED}/edit"),
        json!({ "by": ALICE, "parameters": { "apitoken": "not-a-pat" } }),
    )
    .await;
    let (s, failed) = run(json!({})).await;
    assert_eq!((s, failed["result"].as_str()), (422, Some("failed")), "{failed}");

    let t = env.app_token(APP_ID).await;
    let released = format!("/fabrikam/web/_apis/serviceendpoint/{EP_FEED}/executionhistory?api-version=7.1");
    let (s, e, _) = env.api(Method::GET, &released, Auth::Bearer(&t), None).await;
    assert_eq!(
        (s, e["typeKey"].as_str()),
        (400, Some("VssInvalidPreviewVersionException")),
        "execution history is preview"
    );
    let hist = format!("/fabrikam/web/_apis/serviceendpoint/{EP_FEED}/executionhistory?api-version=7.1-preview.1");
    let (s, h, _) = env.api(Method::GET, &hist, Auth::Bearer(&t), None).await;
    assert_eq!(s, 200, "{h}");
    let results: Vec<&str> =
        h["value"].as_array().unwrap().iter().map(|r| r["data"]["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["failed", "succeeded"], "newest first, only the project's runs");
    assert_eq!(h["value"][1]["data"]["definition"]["name"], "web-ci");
    let (_, page, headers) = env.api(Method::GET, &format!("{hist}&top=1"), Auth::Bearer(&t), None).await;
    assert_eq!(page["count"], 1);
    let next = headers.get("x-ms-continuationtoken").unwrap().to_str().unwrap().to_string();
    let (_, rest, headers) =
        env.api(Method::GET, &format!("{hist}&top=1&continuationToken={next}"), Auth::Bearer(&t), None).await;
    assert_eq!(rest["value"][0]["data"]["result"], "succeeded");
    assert!(headers.get("x-ms-continuationtoken").is_none());
    // The audited use was recorded with the PAT's authorization id.
    let auditor = env.user_token(ADMIN, &["vso.auditlog"]).await;
    let r = env
        .http
        .get(env.audit_url("/fabrikam/_apis/audit/auditlog?api-version=7.2-preview.1"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let log: Value = r.json().await.unwrap();
    assert!(log.to_string().contains(ok2["authorizationId"].as_str().unwrap()));
}

#[tokio::test]
async fn who_may_read_and_update_consumers() {
    let w = world().await;
    let env = &w.env;
    let put = format!("/fabrikam/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1");
    let get = format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1");
    let owner = env.app_token(APP_ID).await;
    let (_, ep, _) = env.api(Method::GET, &get, Auth::Bearer(&owner), None).await;

    // An application in the organization without the Administrator role reads but may not update.
    let member = env.app_token(SP_MEMBER).await;
    assert_eq!(env.api(Method::GET, &get, Auth::Bearer(&member), None).await.0, 200);
    let (s, e, _) = env.api(Method::PUT, &put, Auth::Bearer(&member), Some(&ep)).await;
    assert_eq!((s, e["typeKey"].as_str()), (403, Some("AccessDeniedException")), "{e}");
    // An application not added to the organization is refused outright.
    let stranger = env.app_token(SP_STRANGER).await;
    assert_eq!(env.api(Method::GET, &get, Auth::Bearer(&stranger), None).await.0, 401);
    // A user who is a member but not an administrator of the endpoint.
    let bob = env.user_token(BOB, &["vso.serviceendpoint_manage"]).await;
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&bob), Some(&ep)).await.0, 403);
    // A delegated token without a service endpoint scope.
    let pats_only = env.pats_token(ALICE).await;
    assert_eq!(env.api(Method::GET, &get, Auth::Bearer(&pats_only), None).await.0, 403);
    // Alice administers it: with a PAT carrying the manage scope she may update it; a read scope is not enough.
    let v = env
        .post_ctl("/_control/pats", json!({ "owner": ALICE, "organization": "fabrikam", "displayName": "m", "scope": "vso.serviceendpoint_manage", "validTo": in_300_days() }))
        .await;
    let manage_pat = v["token"].as_str().unwrap().to_string();
    assert_eq!(env.api(Method::PUT, &put, Auth::Pat(&manage_pat), Some(&ep)).await.0, 200);
    let v = env
        .post_ctl("/_control/pats", json!({ "owner": ALICE, "organization": "fabrikam", "displayName": "r", "scope": "vso.serviceendpoint", "validTo": in_300_days() }))
        .await;
    let read_pat = v["token"].as_str().unwrap().to_string();
    assert_eq!(env.api(Method::GET, &get, Auth::Pat(&read_pat), None).await.0, 200);
    assert_eq!(env.api(Method::PUT, &put, Auth::Pat(&read_pat), Some(&ep)).await.0, 401);
    assert_eq!(env.api(Method::GET, &get, Auth::None, None).await.0, 401);
    // Taking the role away (a fault patrol must report) turns the owner's update into 403; giving it back fixes it.
    env.put_ctl(
        &format!("/_control/consumers/service-endpoints/{EP_FEED}/administrators"),
        json!({ "remove": [APP_ID] }),
    )
    .await;
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&owner), Some(&ep)).await.0, 403);
    env.put_ctl(&format!("/_control/consumers/service-endpoints/{EP_FEED}/administrators"), json!({ "add": [APP_ID] }))
        .await;
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&owner), Some(&ep)).await.0, 200);

    // The same app-only token is still refused by the PAT Lifecycle API.
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &owner).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Service principals aren't allowed to perform this action.");
}

#[tokio::test]
async fn a_variable_group_update_keeps_null_secrets_drops_left_out_variables_and_moves_modified_on() {
    let w = world().await;
    let env = &w.env;
    let t = env.app_token(APP_ID).await;
    let get = format!("/fabrikam/web/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.1");
    let (s, g, _) = env.api(Method::GET, &get, Auth::Bearer(&t), None).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["variables"]["AZDO_PAT"], json!({ "value": null, "isSecret": true }));
    assert_eq!(g["variables"]["PLAIN"], json!({ "value": "hello" }));
    assert!(!g.to_string().contains(&w.pat));
    let body = json!({
        "name": g["name"], "description": g["description"], "type": "Vsts",
        "variables": { "AZDO_PAT": { "value": w.new_pat, "isSecret": true }, "OTHER_SECRET": { "value": null, "isSecret": true } },
        "variableGroupProjectReferences": g["variableGroupProjectReferences"],
    });
    let put = format!("/fabrikam/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.1");
    let (s, updated, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&body)).await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["variables"]["AZDO_PAT"]["value"], Value::Null);
    assert!(updated["variables"].get("PLAIN").is_none(), "the body replaces the variable set");
    assert!(later(&g["modifiedOn"], &updated["modifiedOn"]));
    let held = env.get_ctl(&format!("/_control/consumers/variable-groups/{GROUP}")).await;
    assert_eq!(held["variables"]["AZDO_PAT"]["value"], json!(w.new_pat));
    assert_eq!(held["variables"]["OTHER_SECRET"]["value"], "keep-me", "null keeps the stored secret");

    let (_, by_name, _) = env
        .api(
            Method::GET,
            "/fabrikam/web/_apis/distributedtask/variablegroups?groupName=release*&api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(by_name["count"], 1);
    let (_, by_ids, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/distributedtask/variablegroups?groupIds={GROUP},{KV_GROUP}&api-version=7.1"),
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(by_ids["count"], 2);
    let (_, page, headers) = env
        .api(
            Method::GET,
            "/fabrikam/web/_apis/distributedtask/variablegroups?$top=1&queryOrder=IdAscending&api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(page["value"][0]["id"], GROUP);
    assert_eq!(headers.get("x-ms-continuationtoken").unwrap(), &KV_GROUP.to_string());
    let (s, missing, _) = env
        .api(
            Method::GET,
            "/fabrikam/web/_apis/distributedtask/variablegroups/999?api-version=7.1",
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!((s, missing), (200, Value::Null));
    let (s, _, _) = env
        .api(
            Method::PUT,
            "/fabrikam/_apis/distributedtask/variablegroups/999?api-version=7.1",
            Auth::Bearer(&t),
            Some(&body),
        )
        .await;
    assert_eq!(s, 404);

    // A Key Vault-linked group takes its values from the vault: nothing to write there.
    let (_, kv, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/distributedtask/variablegroups/{KV_GROUP}?api-version=7.1"),
            Auth::Bearer(&t),
            None,
        )
        .await;
    assert_eq!(kv["type"], "AzureKeyVault");
    assert_eq!(kv["providerData"]["vault"], "patrol-emu");
    let kv_body = json!({ "name": "vault-linked", "type": "AzureKeyVault", "variables": { "azdo-pat": { "value": w.new_pat, "isSecret": true } } });
    let (s, _, _) = env
        .api(
            Method::PUT,
            &format!("/fabrikam/_apis/distributedtask/variablegroups/{KV_GROUP}?api-version=7.1"),
            Auth::Bearer(&t),
            Some(&kv_body),
        )
        .await;
    assert_eq!(s, 400);

    // A person edits the group: modifiedOn moves (what a conditional writer compares).
    let (_, before, _) = env.api(Method::GET, &get, Auth::Bearer(&t), None).await;
    env.post_ctl(
        &format!("/_control/consumers/variable-groups/{GROUP}/edit"),
        json!({ "by": ADMIN, "description": "edited by hand" }),
    )
    .await;
    let (_, after, _) = env.api(Method::GET, &get, Auth::Bearer(&t), None).await;
    assert!(later(&before["modifiedOn"], &after["modifiedOn"]));
    assert_eq!(after["modifiedBy"]["uniqueName"], ADMIN);
    // No rights: 403; a stranger app: 401.
    let member = env.app_token(SP_MEMBER).await;
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&member), Some(&body)).await.0, 403);
}

#[tokio::test]
async fn faults_on_consumer_apis_are_one_shot_and_shaped_like_azure() {
    let w = world().await;
    let env = &w.env;
    let t = env.app_token(APP_ID).await;
    let get = format!("/fabrikam/web/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.1");
    let (_, g, _) = env.api(Method::GET, &get, Auth::Bearer(&t), None).await;
    let body = json!({ "name": g["name"], "type": "Vsts", "variables": { "AZDO_PAT": { "value": w.new_pat, "isSecret": true } } });
    let put = format!("/fabrikam/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.1");
    env.post_ctl(
        "/_control/consumers/faults",
        json!({ "api": "variableGroups", "target": GROUP.to_string(), "status": 409, "method": "PUT" }),
    )
    .await;
    let (s, e, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&body)).await;
    assert_eq!(s, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("modified by another user"));
    let held = env.get_ctl(&format!("/_control/consumers/variable-groups/{GROUP}")).await;
    assert_eq!(held["variables"]["AZDO_PAT"]["value"], json!(w.pat), "a refused write changes nothing");
    assert_eq!(env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&body)).await.0, 200);

    env.post_ctl(
        "/_control/consumers/faults",
        json!({ "api": "serviceEndpoints", "target": EP_FEED, "status": 503, "count": 2 }),
    )
    .await;
    let (_, pending) = env.ctl(Method::GET, "/_control/consumers/faults", json!({})).await;
    assert_eq!(pending["pending"][0]["remaining"], 2);
    let (_, ep, _) = env
        .api(
            Method::GET,
            &format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1"),
            Auth::Bearer(&t),
            None,
        )
        .await;
    let put_ep = format!("/fabrikam/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1");
    for _ in 0..2 {
        let (s, e, _) = env.api(Method::PUT, &put_ep, Auth::Bearer(&t), Some(&ep)).await;
        assert_eq!((s, e["typeKey"].as_str()), (503, Some("ServiceUnavailableException")));
    }
    assert_eq!(env.api(Method::PUT, &put_ep, Auth::Bearer(&t), Some(&ep)).await.0, 200);
    let (s, _) = env
        .ctl(
            Method::POST,
            "/_control/consumers/faults",
            json!({ "api": "variableGroups", "target": "7", "status": 418 }),
        )
        .await;
    assert_eq!(s, 400);
    // The group deleted by a person: patrol's read sees null, its write 404.
    env.ctl(Method::DELETE, &format!("/_control/consumers/variable-groups/{GROUP}"), json!({})).await;
    assert_eq!(env.api(Method::GET, &get, Auth::Bearer(&t), None).await.1, Value::Null);
    let (s, e, _) = env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&body)).await;
    assert_eq!((s, e["typeKey"].as_str()), (404, Some("VariableGroupNotFoundException")));
}

// ----- GitHub -------------------------------------------------------------------------------------------

pub fn github_client(env: &Env) -> reqwest::Client {
    let pem = std::fs::read(&env.emu.endpoints().extra["ca_cert"]).unwrap();
    reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap()
}

pub async fn gh(
    env: &Env,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut rb = client
        .request(method, format!("{}{path}", env.emu.endpoints().extra["github"]))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28");
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (s, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// Seals `value` for the public key the way GitHub's documentation says (libsodium sealed box).
pub fn seal(public_key_b64: &str, value: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pk = crypto_box::PublicKey::from_slice(&b64.decode(public_key_b64).unwrap()).unwrap();
    b64.encode(pk.seal(&mut crypto_box::aead::OsRng, value.as_bytes()).unwrap())
}

#[tokio::test]
async fn github_secrets_are_written_as_sealed_boxes_the_emulator_opens() {
    let w = world().await;
    let env = &w.env;
    let c = github_client(env);
    assert!(env.emu.endpoints().extra["github"].starts_with("https://"));
    let (s, key) = gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets/public-key", Some(GH_TOKEN), None).await;
    assert_eq!(s, 200, "{key}");
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(key["key"].as_str().unwrap()).unwrap().len(), 32);
    let put = |name: &'static str, value: String, key_id: Value| {
        let body = json!({ "encrypted_value": seal(key["key"].as_str().unwrap(), &value), "key_id": key_id });
        let c = c.clone();
        async move {
            gh(env, &c, Method::PUT, &format!("/repos/octo/app/actions/secrets/{name}"), Some(GH_TOKEN), Some(&body))
                .await
        }
    };
    assert_eq!(put("NEW_ONE", "first".into(), key["key_id"].clone()).await.0, 201);
    assert_eq!(put("AZDO_PAT", w.new_pat.clone(), key["key_id"].clone()).await.0, 204, "an existing secret is updated");
    let held = env.get_ctl("/_control/consumers/github/secrets?repository=octo/app").await;
    let v: Vec<(&str, &str)> = held["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["value"].as_str().unwrap()))
        .collect();
    assert!(v.contains(&("AZDO_PAT", w.new_pat.as_str())) && v.contains(&("NEW_ONE", "first")), "{held}");

    let (s, one) = gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets/azdo_pat", Some(GH_TOKEN), None).await;
    assert_eq!(s, 200);
    assert_eq!(one["name"], "AZDO_PAT");
    assert!(one.get("value").is_none() && !one.to_string().contains(&w.new_pat));
    let (_, list) = gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", Some(GH_TOKEN), None).await;
    assert_eq!(list["total_count"], 2);

    // A value sealed for another key, a stale key id, bad names, read-only and missing tokens.
    let other = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
    let wrong = base64::engine::general_purpose::STANDARD.encode(other.public_key().as_bytes());
    let body = json!({ "encrypted_value": seal(&wrong, "x"), "key_id": key["key_id"] });
    assert_eq!(gh(env, &c, Method::PUT, "/repos/octo/app/actions/secrets/X", Some(GH_TOKEN), Some(&body)).await.0, 422);
    env.post_ctl("/_control/consumers/github/rotate-key", json!({ "repository": "octo/app" })).await;
    assert_eq!(put("AZDO_PAT", "stale".into(), key["key_id"].clone()).await.0, 422, "the old key id no longer works");
    let body = json!({ "encrypted_value": "AAAA", "key_id": "1" });
    assert_eq!(
        gh(env, &c, Method::PUT, "/repos/octo/app/actions/secrets/GITHUB_X", Some(GH_TOKEN), Some(&body)).await.0,
        422
    );
    let (s, e) =
        gh(env, &c, Method::PUT, "/repos/octo/app/actions/secrets/AZDO_PAT", Some(GH_READ_TOKEN), Some(&body)).await;
    assert_eq!((s, e["message"].as_str()), (403, Some("Resource not accessible by personal access token")));
    assert_eq!(gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", None, None).await.0, 401);
    assert_eq!(
        gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", Some("github_pat_unknown_0000000000000"), None)
            .await
            .0,
        401
    );
    assert_eq!(gh(env, &c, Method::GET, "/repos/octo/other/actions/secrets", Some(GH_TOKEN), None).await.0, 404);
    let r = c
        .get(format!("{}/repos/octo/app/actions/secrets", env.emu.endpoints().extra["github"]))
        .bearer_auth(GH_TOKEN)
        .header("X-GitHub-Api-Version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let held = env.get_ctl("/_control/consumers/github/secrets?repository=octo/app").await;
    assert!(!held.to_string().contains("stale"), "refused writes change nothing");
}

#[tokio::test]
async fn github_environment_and_organization_secrets_and_workflow_runs() {
    let w = world().await;
    let env = &w.env;
    let c = github_client(env);
    let (_, k) =
        gh(env, &c, Method::GET, "/repos/octo/app/environments/prod/secrets/public-key", Some(GH_TOKEN), None).await;
    let body = json!({ "encrypted_value": seal(k["key"].as_str().unwrap(), &w.new_pat), "key_id": k["key_id"] });
    assert_eq!(
        gh(env, &c, Method::PUT, "/repos/octo/app/environments/prod/secrets/AZDO_PAT", Some(GH_TOKEN), Some(&body))
            .await
            .0,
        201
    );
    assert_eq!(
        gh(env, &c, Method::GET, "/repos/octo/app/environments/nope/secrets", Some(GH_TOKEN), None).await.0,
        404
    );

    let (_, repo) = gh(env, &c, Method::GET, "/repos/octo/app", Some(GH_TOKEN), None).await;
    let (_, ok) = gh(env, &c, Method::GET, "/orgs/octo/actions/secrets/public-key", Some(GH_TOKEN), None).await;
    let body = json!({
        "encrypted_value": seal(ok["key"].as_str().unwrap(), &w.new_pat), "key_id": ok["key_id"],
        "visibility": "selected", "selected_repository_ids": [repo["id"]],
    });
    assert_eq!(
        gh(env, &c, Method::PUT, "/orgs/octo/actions/secrets/ORG_PAT", Some(GH_TOKEN), Some(&body)).await.0,
        201
    );
    let (_, s) = gh(env, &c, Method::GET, "/orgs/octo/actions/secrets/ORG_PAT", Some(GH_TOKEN), None).await;
    assert_eq!(s["visibility"], "selected");
    let mut no_vis = body.clone();
    no_vis.as_object_mut().unwrap().remove("visibility");
    assert_eq!(
        gh(env, &c, Method::PUT, "/orgs/octo/actions/secrets/ORG_PAT", Some(GH_TOKEN), Some(&no_vis)).await.0,
        422
    );
    assert_eq!(
        gh(env, &c, Method::GET, "/orgs/octo/actions/secrets", Some(GH_READ_TOKEN), None).await.0,
        404,
        "the read token has no organization access"
    );

    // Workflow runs: the environment secret wins over the repository's (still the old PAT).
    let run = |env_name: Option<&str>, secret: &str| json!({ "repository": "octo/app", "environment": env_name, "secret": secret, "devopsOrganization": "fabrikam" });
    let (s, r) = env.ctl(Method::POST, "/_control/consumers/github/workflow-runs", run(Some("prod"), "azdo_pat")).await;
    assert_eq!((s, r["source"].as_str(), r["result"].as_str()), (200, Some("environment"), Some("succeeded")), "{r}");
    let (s, r) = env.ctl(Method::POST, "/_control/consumers/github/workflow-runs", run(None, "ORG_PAT")).await;
    assert_eq!((s, r["source"].as_str()), (200, Some("organization")));
    let (s, _) = env.ctl(Method::POST, "/_control/consumers/github/workflow-runs", run(None, "MISSING")).await;
    assert_eq!(s, 404);
    // Revoke the repository secret's PAT: a workflow reading it fails.
    let token = env.pats_token(ALICE).await;
    let list = env.pat_api(Method::GET, "fabrikam", "api-version=7.1-preview.1", &token).send().await.unwrap();
    let list: Value = list.json().await.unwrap();
    let feed =
        list["patTokens"].as_array().unwrap().iter().find(|p| p["displayName"] == "feed").unwrap()["authorizationId"]
            .clone();
    let r = env
        .pat_api(
            Method::DELETE,
            "fabrikam",
            &format!("api-version=7.1-preview.1&authorizationId={}", feed.as_str().unwrap()),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, r) = env.ctl(Method::POST, "/_control/consumers/github/workflow-runs", run(None, "AZDO_PAT")).await;
    assert_eq!((s, r["result"].as_str()), (422, Some("failed")), "{r}");
    let held = env.get_ctl("/_control/consumers/github/secrets?repository=octo/app&environment=prod").await;
    assert_eq!(held["value"][0]["reads"], 1);

    // Faults: the repository deleted, a one-shot 503.
    env.post_ctl("/_control/consumers/faults", json!({ "api": "githubSecrets", "target": "octo/app", "status": 503 }))
        .await;
    assert_eq!(gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", Some(GH_TOKEN), None).await.0, 503);
    assert_eq!(gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", Some(GH_TOKEN), None).await.0, 200);
    let (s, _) = env.ctl(Method::DELETE, "/_control/consumers/github/repositories/octo/app", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets/public-key", Some(GH_TOKEN), None).await.0,
        404
    );
}

#[tokio::test]
async fn webhook_consumers_receive_and_acknowledge_with_a_signed_callback() {
    use hmac::Mac;
    let w = world().await;
    let env = &w.env;
    // patrol's side: a loopback server capturing the acknowledgement.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(axum::http::HeaderMap, String)>();
    let app = axum::Router::new().route(
        "/api/RotateHttp",
        axum::routing::post(move |h: axum::http::HeaderMap, b: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((h, b));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let r = env
        .http
        .post(env.control("/_control/consumers/webhooks/billing-app"))
        .header("X-Patrol-Signature", "sha256=abc")
        .json(&json!({ "secret": "azdo-feed", "version": "v2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack = env
        .post_ctl(
            "/_control/consumers/webhooks/billing-app/ack",
            json!({ "url": format!("http://{addr}/api/RotateHttp"), "body": { "ack": "azdo-feed", "version": "v2" }, "hmacKey": "shared-key" }),
        )
        .await;
    assert_eq!(ack["status"], 202);
    let (headers, body) = rx.recv().await.unwrap();
    let ts = headers["x-patrol-timestamp"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"shared-key").unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    assert_eq!(
        headers["x-patrol-signature"].to_str().unwrap(),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let seen = env.get_ctl("/_control/consumers/webhooks/billing-app").await;
    assert_eq!(seen["received"][0]["body"]["version"], "v2");
    assert_eq!(seen["received"][0]["headers"]["x-patrol-signature"], "sha256=abc");
    assert_eq!(seen["acks"][0]["status"], 202);
    let (s, _) = env
        .ctl(
            Method::POST,
            "/_control/consumers/webhooks/billing-app/ack",
            json!({ "url": "http://example.com/", "body": {} }),
        )
        .await;
    assert_eq!(s, 400, "acknowledgements stay on loopback");
    env.post_ctl("/_control/consumers/faults", json!({ "api": "webhooks", "target": "billing-app", "status": 503 }))
        .await;
    let r =
        env.http.post(env.control("/_control/consumers/webhooks/billing-app")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn consumers_survive_a_restart_with_state_and_seeding_names_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let w = world_with(EmulatorConfig { state_path: Some(path.clone()), ..Default::default() }).await;
    let c = github_client(&w.env);
    let (_, key) =
        gh(&w.env, &c, Method::GET, "/repos/octo/app/actions/secrets/public-key", Some(GH_TOKEN), None).await;
    w.env.emu.shutdown().await.unwrap();
    let env = start_with(EmulatorConfig { state_path: Some(path.clone()), ..Default::default() }).await;
    let c = github_client(&env);
    let (s, again) =
        gh(&env, &c, Method::GET, "/repos/octo/app/actions/secrets/public-key", Some(GH_TOKEN), None).await;
    assert_eq!((s, &again), (200, &key), "the key pair and the token survive");
    let body =
        json!({ "encrypted_value": seal(again["key"].as_str().unwrap(), "after-restart"), "key_id": again["key_id"] });
    assert_eq!(
        gh(&env, &c, Method::PUT, "/repos/octo/app/actions/secrets/AZDO_PAT", Some(GH_TOKEN), Some(&body)).await.0,
        204
    );
    let held = env.get_ctl(&format!("/_control/consumers/service-endpoints/{EP_FEED}")).await;
    assert_eq!(held["parameters"]["apitoken"], json!(w.pat));

    let (s, e) = env
        .ctl(
            Method::POST,
            "/_control/consumers/seed",
            json!({ "serviceEndpoints": [{ "organization": "fabrikam", "projects": ["web"], "name": "x", "type": "generic", "scheme": "UsernamePassword", "administrators": ["nobody@fabrikam.test"] }] }),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("serviceEndpoints[0]: administrators:"), "{e}");
    let (s, e) = env
        .ctl(
            Method::POST,
            "/_control/consumers/seed",
            json!({ "github": { "tokens": [{ "permission": "admin", "repositories": ["o/r"] }] } }),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("github.tokens[0]"), "{e}");
    let (s, applied) = env
        .ctl(
            Method::POST,
            "/_control/consumers/seed",
            json!({ "github": { "tokens": [{ "repositories": ["octo/new"] }] }, "variableGroups": [{ "organization": "fabrikam", "projects": ["web"], "name": "g2", "variables": { "A": { "value": "1" } }, "administrators": [APP_ID] }] }),
        )
        .await;
    assert_eq!(s, 200, "{applied}");
    assert!(applied["githubTokens"][0]["token"].as_str().unwrap().starts_with("github_pat_"));
    assert!(applied["variableGroups"][0]["id"].as_i64().unwrap() > i64::from(KV_GROUP));
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_control_dump_shows_values_but_no_key_material() {
    let w = world().await;
    let dump = w.env.get_ctl("/_control/consumers").await;
    let text = dump.to_string();
    assert!(text.contains(&w.pat), "values are readable on the control API");
    assert!(!text.contains("secretKey") && !text.contains("\"hash\""));
}

/// The binary with a seed file carrying consumers: the ready line names the `github` listener, the seeded
/// consumers answer, and nothing the consumers hold reaches the log, even at debug level.
#[tokio::test]
async fn the_binary_serves_seeded_consumers_and_never_logs_their_values() {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let pat = patrol_emulator::patsecret::generate(2026, 11);
    let new_pat = patrol_emulator::patsecret::generate(2026, 12);
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, serde_json::to_vec(&consumer_seed(&pat, &new_pat)).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_patrol-emulator"))
        .args(["--seed", seed_path.to_str().unwrap(), "--ca-cert", dir.path().join("ca.pem").to_str().unwrap()])
        .env("PATROL_EMULATOR_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    let github = ready["github"].as_str().unwrap().to_string();
    assert!(github.starts_with("https://127.0.0.1:"));
    let http = reqwest::Client::new();
    let control = ready["control"].as_str().unwrap();
    let v: Value = http
        .post(format!("{control}/_control/app-tokens"))
        .json(&json!({ "clientId": APP_ID, "resource": DEVOPS }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = v["access_token"].as_str().unwrap();
    let devops = ready["devops"].as_str().unwrap();
    let ep: Value = http
        .get(format!("{devops}/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ep["name"], "feed-conn");
    let mut ep2 = ep.clone();
    ep2["authorization"]["parameters"]["apitoken"] = json!(new_pat);
    let r = http
        .put(format!("{devops}/fabrikam/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.1"))
        .bearer_auth(t)
        .json(&ep2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pem = std::fs::read(ready["ca_cert"].as_str().unwrap()).unwrap();
    let c = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap();
    let key: Value = c
        .get(format!("{github}/repos/octo/app/actions/secrets/public-key"))
        .bearer_auth(GH_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = json!({ "encrypted_value": seal(key["key"].as_str().unwrap(), &new_pat), "key_id": key["key_id"] });
    let r = c
        .put(format!("{github}/repos/octo/app/actions/secrets/AZDO_PAT"))
        .bearer_auth(GH_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    crate::control::send_sigterm(child.id());
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(log.contains("service endpoint updated") && log.contains("github secret written"), "{log}");
    for secret in [pat.as_str(), new_pat.as_str(), GH_TOKEN, "keep-me", t] {
        assert!(!log.contains(secret), "a consumer value reached the log");
    }
}

/// "Committed but the response is lost" on the consumer writes (what patrol's crash tests need): the value
/// is written, the connection closes without an answer; latency applies to the GitHub listener too.
#[tokio::test]
async fn lost_responses_and_latency_reach_consumer_writes() {
    let w = world().await;
    let env = &w.env;
    let c = github_client(env);
    let (_, key) = gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets/public-key", Some(GH_TOKEN), None).await;
    env.post_ctl(
        "/_control/faults/once",
        json!({ "kind": "loseResponse", "service": "github", "method": "PUT", "pathContains": "/actions/secrets/AZDO_PAT" }),
    )
    .await;
    let body = json!({ "encrypted_value": seal(key["key"].as_str().unwrap(), &w.new_pat), "key_id": key["key_id"] });
    let r = c
        .put(format!("{}/repos/octo/app/actions/secrets/AZDO_PAT", env.emu.endpoints().extra["github"]))
        .bearer_auth(GH_TOKEN)
        .json(&body)
        .send()
        .await;
    assert!(r.is_err(), "no response");
    let held = env.get_ctl("/_control/consumers/github/secrets?repository=octo/app").await;
    assert_eq!(held["value"][0]["value"], json!(w.new_pat), "but the write happened");

    let t = env.app_token(APP_ID).await;
    env.post_ctl(
        "/_control/faults/once",
        json!({ "kind": "loseResponse", "service": "devops", "method": "PUT", "pathContains": "/distributedtask/variablegroups/" }),
    )
    .await;
    let b = json!({ "name": "release-secrets", "type": "Vsts", "variables": { "AZDO_PAT": { "value": w.new_pat, "isSecret": true } } });
    let r = env
        .http
        .put(env.devops(&format!("/fabrikam/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.1")))
        .bearer_auth(&t)
        .json(&b)
        .send()
        .await;
    assert!(r.is_err());
    let held = env.get_ctl(&format!("/_control/consumers/variable-groups/{GROUP}")).await;
    assert_eq!(held["variables"]["AZDO_PAT"]["value"], json!(w.new_pat));

    env.put_ctl("/_control/faults", json!({ "latencyMs": 150, "services": ["github"] })).await;
    let started = std::time::Instant::now();
    assert_eq!(gh(env, &c, Method::GET, "/repos/octo/app/actions/secrets", Some(GH_TOKEN), None).await.0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    let stats = env.get_ctl("/_control/stats").await;
    assert_eq!(stats["requests"]["github"], 3);
    assert_eq!(stats["responsesLost"], 2);
    assert_eq!((stats["serviceEndpoints"].as_u64(), stats["variableGroups"].as_u64()), (Some(2), Some(2)));
}
