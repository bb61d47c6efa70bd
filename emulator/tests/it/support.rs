//! Test helpers: start an emulator with a standard seed, an HTTP client that does not follow redirects,
//! and shortcuts for minting tokens through the control API.

#![allow(dead_code)]

use patrol_emulator::seed::Seed;
use patrol_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

pub const DEVOPS: &str = "499b84ac-1321-427f-aa17-267ca6975798";
pub const ALICE: &str = "alice@fabrikam.test";
pub const BOB: &str = "bob@fabrikam.test";
pub const ADMIN: &str = "admin@fabrikam.test";
pub const APP_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const APP_SECRET: &str = "app-secret-0123456789abcdef";
pub const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

pub fn seed() -> Seed {
    serde_json::from_value(json!({
        "organizations": [{ "name": "fabrikam" }, { "name": "contoso" }],
        "users": [
            { "upn": ALICE, "displayName": "Alice", "organizations": ["fabrikam", "contoso"] },
            { "upn": BOB, "organizations": ["fabrikam"] },
            { "upn": ADMIN, "adminOf": ["fabrikam"] }
        ],
        "apps": [{ "clientId": APP_ID, "displayName": "patrol-sp", "clientSecret": APP_SECRET }]
    }))
    .unwrap()
}

pub struct Env {
    pub emu: Emulator,
    pub http: reqwest::Client,
}

pub async fn start() -> Env {
    start_with(EmulatorConfig { seed: Some(seed()), ..Default::default() }).await
}

pub async fn start_with(config: EmulatorConfig) -> Env {
    let emu = Emulator::start(config).await.unwrap();
    // Trusts the emulator's CA (Entra and Key Vault are HTTPS) and nothing else.
    let ca = reqwest::Certificate::from_pem(emu.keyvault().ca_cert_pem.as_bytes()).unwrap();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).tls_certs_only([ca]).build().unwrap();
    Env { emu, http }
}

impl Env {
    pub fn devops(&self, path: &str) -> String {
        format!("{}{path}", self.emu.endpoints().devops)
    }

    pub fn audit_url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.endpoints().audit)
    }

    pub fn entra(&self, path: &str) -> String {
        format!("{}{path}", self.emu.endpoints().entra)
    }

    pub fn control(&self, path: &str) -> String {
        format!("{}{path}", self.emu.endpoints().control)
    }

    pub async fn ctl(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.request(method, self.control(path)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_ctl(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.ctl(reqwest::Method::POST, path, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    pub async fn put_ctl(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.ctl(reqwest::Method::PUT, path, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    /// A delegated access token for `upn` with the given Azure DevOps scopes.
    pub async fn user_token(&self, upn: &str, scopes: &[&str]) -> String {
        let scope = scopes.iter().map(|s| format!("{DEVOPS}/{s}")).collect::<Vec<_>>().join(" ");
        let v = self.post_ctl("/_control/tokens", json!({ "upn": upn, "scope": scope })).await;
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn pats_token(&self, upn: &str) -> String {
        self.user_token(upn, &["vso.pats", "vso.pats_manage"]).await
    }

    /// A PAT API request with a bearer token and `X-TFS-FedAuthRedirect: Suppress`.
    pub fn pat_api(&self, method: reqwest::Method, org: &str, query: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.devops(&format!("/{org}/_apis/tokens/pats?{query}")))
            .bearer_auth(token)
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("Accept", "application/json")
    }

    pub async fn create_pat(&self, token: &str, org: &str, name: &str, scope: &str, days: i64) -> Value {
        let valid_to = patrol_emulator::wire::format_time(self.emu.clock().now() + time::Duration::days(days));
        let r = self
            .pat_api(reqwest::Method::POST, org, "api-version=7.2-preview.1", token)
            .json(&json!({ "displayName": name, "scope": scope, "validTo": valid_to, "allOrgs": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn advance(&self, secs: i64) {
        self.post_ctl("/_control/clock/advance", json!({ "seconds": secs })).await;
    }
}
