//! Test environment of the Azure DevOps client and sign-in tests: patrol-emulator started in-process on
//! ephemeral loopback ports, a seeded organization, the control API, patrol's clock kept in step with the
//! emulator's virtual clock, captured logs, and a leak scan against every secret the emulator minted.

use patrol::auth::entra::EntraClient;
use patrol::auth::session::{SessionOptions, Sessions, store_refresh_token};
use patrol::clock::Clock;
use patrol::devops::http::build_client;
use patrol::devops::retry::RetryPolicy;
use patrol::devops::{ApiVersion, Endpoints, HttpConnector};
use patrol::domain::{OrgName, OwnerId};
use patrol::store::SecretStore;
use patrol::store::memory::MemoryStore;
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

pub const CLIENT_ID: &str = "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c11";
pub const ORG: &str = "fabrikam";
pub const ALICE: &str = "alice@contoso.com";
pub const ADMIN: &str = "admin@contoso.com";
/// A user who belongs to no organization.
pub const CAROL: &str = "carol@contoso.com";
pub const ALICE_ID: &str = "2f7e1c3a-1111-4a5b-9c8d-0e1f2a3b4c5d";
pub const SP_CLIENT_ID: &str = "9a8b7c6d-2222-4e5f-8a9b-1c2d3e4f5a6b";

/// Everything the test binary logged (the process-wide capture in `support`).
#[derive(Clone)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub struct Env {
    pub emu: Emulator,
    pub control: Url,
    pub devops: Url,
    pub audit: Url,
    pub entra: Url,
    pub tenant: String,
    pub raw: reqwest::Client,
    pub clock: Clock,
    pub store: Arc<MemoryStore>,
    pub logs: Logs,
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

impl Env {
    /// Starts an emulator (default config) with `fabrikam`, alice (member), admin (administrator) and a
    /// service principal. Logs go to the process-wide capture.
    pub async fn start() -> Env {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> Env {
        let logs = Logs(crate::support::captured_logs());
        let emu = Emulator::start(config).await.unwrap();
        let ep = emu.endpoints().clone();
        let env = Env {
            control: url(&ep.control),
            devops: url(&ep.devops),
            audit: url(&ep.audit),
            entra: url(&ep.entra),
            tenant: ep.tenant.clone(),
            emu,
            raw: reqwest::Client::new(),
            clock: Clock::system(),
            store: Arc::new(MemoryStore::new()),
            logs,
        };
        env.clock.set(env.emu.clock().now());
        env.control_ok(
            "POST",
            "/_control/seed",
            json!({
                "organizations": [{ "name": ORG }],
                "users": [
                    { "upn": ALICE, "id": ALICE_ID, "displayName": "Alice", "organizations": [ORG] },
                    { "upn": ADMIN, "displayName": "Admin", "adminOf": [ORG] },
                    { "upn": CAROL, "displayName": "Carol" }
                ],
                "apps": [{ "clientId": SP_CLIENT_ID, "displayName": "ci-sp" }]
            }),
        )
        .await;
        env
    }

    /// A control call; panics unless it answers 2xx.
    pub async fn control_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.control(method, path, body).await;
        assert!((200..300).contains(&status), "control {method} {path}: {status} {v}");
        v
    }

    pub async fn control(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let u = self.control.join(path.trim_start_matches('/')).unwrap();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.raw.request(m, u);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Moves the emulator's virtual clock and patrol's clock together.
    pub async fn advance(&self, secs: i64) {
        self.control_ok("POST", "/_control/clock/advance", json!({ "seconds": secs })).await;
        self.clock.set(self.emu.clock().now());
    }

    pub async fn fault_once(&self, fault: Value) {
        self.control_ok("POST", "/_control/faults/once", fault).await;
    }

    /// Mints tokens for a seeded user as if they had signed in with patrol's client id.
    pub async fn mint(&self, upn: &str, lifetime_secs: Option<u64>) -> Value {
        self.mint_scopes(upn, Self::scopes_of(upn), lifetime_secs).await
    }

    /// Owners sign in for the PAT API; the administrator for Token Admin and the audit log.
    pub fn scopes_of(upn: &str) -> &'static str {
        if upn == ADMIN { patrol::auth::ADMIN_SCOPES } else { patrol::auth::PAT_SCOPES }
    }

    pub async fn mint_scopes(&self, upn: &str, scopes: &str, lifetime_secs: Option<u64>) -> Value {
        let mut body = json!({
            "upn": upn,
            "clientId": CLIENT_ID,
            "scope": scopes,
        });
        if let Some(l) = lifetime_secs {
            body["lifetimeSecs"] = json!(l);
        }
        self.control_ok("POST", "/_control/tokens", body).await
    }

    /// Puts a freshly minted refresh token for `upn` into the store, as `patrol login` would.
    pub async fn sign_in(&self, upn: &str) {
        let minted = self.mint(upn, None).await;
        let rt = SecretString::from(minted["refresh_token"].as_str().unwrap().to_owned());
        let owner = OwnerId::parse(upn).unwrap();
        store_refresh_token(
            self.store.as_ref(),
            &owner,
            &rt,
            "2026-01-01T00:00:00Z",
            Self::scopes_of(upn),
            self.clock.now(),
        )
        .await
        .unwrap();
    }

    pub fn http_client(&self) -> reqwest::Client {
        // Entra is HTTPS with the emulator's CA.
        let ca = std::path::PathBuf::from(&self.emu.endpoints().extra["ca_cert"]);
        build_client(Some(&ca), Duration::from_secs(10)).unwrap()
    }

    pub fn entra_client(&self) -> Arc<EntraClient> {
        Arc::new(EntraClient::new(self.http_client(), self.entra.clone(), &self.tenant, CLIENT_ID).unwrap())
    }

    pub fn sessions(&self) -> Arc<Sessions> {
        let store: Arc<dyn SecretStore> = self.store.clone();
        Arc::new(Sessions::new(self.entra_client(), store, self.clock.clone(), SessionOptions::default()))
    }

    pub fn connector_with(&self, tokens: Arc<dyn patrol::auth::TokenSources>, version: ApiVersion) -> HttpConnector {
        HttpConnector::new(
            self.http_client(),
            self.clock.clone(),
            RetryPolicy::fast(),
            Endpoints { devops: self.devops.clone(), audit: self.audit.clone(), api_version: version },
            tokens,
        )
    }

    pub fn connector(&self, sessions: &Arc<Sessions>) -> HttpConnector {
        self.connector_with(sessions.clone(), ApiVersion::Auto)
    }

    pub fn org(&self) -> OrgName {
        OrgName::parse(ORG).unwrap()
    }

    /// Every secret the emulator minted must be absent from the captured logs and from `extra` (error
    /// messages, debug output the test produced).
    pub async fn assert_no_leaks(&self, extra: &str) {
        let v = self.control_ok("GET", "/_control/secrets", Value::Null).await;
        let secrets = v["value"].as_array().unwrap();
        assert!(!secrets.is_empty(), "the emulator recorded no secrets; the leak scan would prove nothing");
        let logs = self.logs.text();
        assert!(!logs.is_empty(), "no logs were captured; the leak scan would prove nothing");
        for s in secrets {
            let value = s["value"].as_str().unwrap();
            assert!(!logs.contains(value), "a {} leaked into the logs", s["kind"]);
            assert!(!extra.contains(value), "a {} leaked into test output", s["kind"]);
        }
    }
}
