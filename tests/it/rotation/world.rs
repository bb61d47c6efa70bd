//! Shared helpers for the rotation scenarios against patrol-emulator: start the emulator in-process,
//! write a policy, open patrol's stores exactly as the CLI does (`cli::runtime::Local`), sign the owner in
//! with a real device code, move the virtual clock (control API) with patrol's clock following it, and ask
//! the emulator whether a value authenticates.

use patrol::auth::device_code::{LoginOptions, login};
use patrol::cli::runtime::Local;
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::devops::{DisplayFilter, Pat, PatApi};
use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use patrol::store::tags;
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const OWNER: &str = "rotator@fabrikam.test";
pub const ORG: &str = "fabrikam";
pub const CLIENT_ID: &str = "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6";

/// The settings a `patrol` process (or `Local`) gets to talk to `emu` with its state under `dir`.
pub fn env_pairs(dir: &Path, emu: &Emulator) -> Vec<(String, String)> {
    let e = emu.endpoints();
    let p = |f: &str| dir.join(f).display().to_string();
    vec![
        ("PATROL_POLICY_FILE".into(), p("patrol.toml")),
        ("PATROL_STATE_DIR".into(), p("state")),
        ("PATROL_STORE_KEY_FILE".into(), p("store.key")),
        ("PATROL_DEVOPS_URL".into(), e.devops.clone()),
        ("PATROL_AUDIT_URL".into(), e.audit.clone()),
        ("PATROL_ENTRA_AUTHORITY".into(), e.entra.clone()),
        ("PATROL_CA_CERT".into(), e.extra["ca_cert"].clone()),
        ("PATROL_TENANT_ID".into(), e.tenant.clone()),
        ("PATROL_CLIENT_ID".into(), CLIENT_ID.into()),
        ("PATROL_LEASE".into(), "local".into()),
        ("PATROL_LOG_FORMAT".into(), "text".into()),
    ]
}

pub fn settings_of(env: &[(String, String)]) -> Settings {
    Settings::from_source(&Source::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))).unwrap()
}

/// The owner signs in with a device code, which the emulator approves through its control API.
pub async fn sign_in(emu: &Emulator, local: &Local) {
    sign_in_with(emu, local, None).await
}

/// As [`sign_in`], consenting to `scopes` (default: the PAT scopes).
pub async fn sign_in_with(emu: &Emulator, local: &Local, scopes: Option<String>) {
    let owner = OwnerId::parse(OWNER).unwrap();
    let entra = local.entra().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let control = emu.endpoints().control.clone();
    let approver = tokio::spawn(async move {
        let code = rx.await.unwrap();
        reqwest::Client::new()
            .post(format!("{control}/_control/devicecodes/approve"))
            .json(&json!({ "userCode": code, "upn": OWNER }))
            .send()
            .await
            .unwrap();
    });
    let mut tx = Some(tx);
    let options = LoginOptions { scopes, poll_interval: Some(std::time::Duration::from_millis(50)) };
    login(&entra, local.own.as_ref(), &owner, &local.clock, &options, |p| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(p.user_code.clone());
        }
    })
    .await
    .unwrap();
    approver.await.unwrap();
}

/// The default seed: one organization, one owner who is a member.
pub fn seed() -> Value {
    json!({
        "organizations": [{ "name": ORG }],
        "users": [{ "upn": OWNER, "displayName": "Rotator", "organizations": [ORG] }]
    })
}

/// As [`seed`], the owner also an administrator of the organization (who may read its audit log).
pub fn admin_seed() -> Value {
    json!({
        "organizations": [{ "name": ORG }],
        "users": [{ "upn": OWNER, "displayName": "Rotator", "organizations": [ORG], "adminOf": [ORG] }]
    })
}

/// What an organization administrator consents to at sign-in: the PAT scopes and the audit log's.
pub fn admin_scopes() -> String {
    format!("{} {}", patrol::auth::PAT_SCOPES, patrol::auth::ADMIN_SCOPES)
}

/// Moves the emulator's virtual clock forward through its control API (patrol's clocks are not touched).
pub async fn advance_clock(http: &reqwest::Client, emu: &Emulator, by: time::Duration) {
    let r = http
        .post(format!("{}/_control/clock/advance", emu.endpoints().control))
        .json(&json!({ "seconds": by.whole_seconds() }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "advance: {}", r.status());
}

/// A consumer uses a PAT (`body` as `/_control/pats/use` takes it): whether it authenticated.
pub async fn use_pat(http: &reqwest::Client, emu: &Emulator, body: Value) -> bool {
    let r = http.post(format!("{}/_control/pats/use", emu.endpoints().control)).json(&body).send().await.unwrap();
    match r.status().as_u16() {
        200..=299 => true,
        401 => false,
        s => panic!("pats/use answered {s}"),
    }
}

/// Every secret the emulator minted (PATs, tokens), for scanning output.
pub async fn minted(http: &reqwest::Client, emu: &Emulator) -> Vec<String> {
    let url = format!("{}/_control/secrets", emu.endpoints().control);
    let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    let mut out = Vec::new();
    collect_strings(&v, &mut out);
    out.retain(|s| s.len() >= 20);
    out
}

/// The first half of every scenario: an emulator started with a seed, a temp dir holding the policy as
/// `patrol.toml`, and patrol's settings for both, to which a scenario may add before anything is opened.
pub struct Setup {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub async fn start(seed: Value, policy: &str) -> Setup {
        Self::start_with(seed, policy, EmulatorConfig::default()).await
    }

    pub async fn start_with(seed: Value, policy: &str, config: EmulatorConfig) -> Setup {
        let seed = serde_json::from_value(seed).unwrap();
        let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..config }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("patrol.toml"), policy).unwrap();
        let env = env_pairs(dir.path(), &emu);
        Setup { emu, dir, env }
    }

    /// Sets a setting, replacing an earlier value of it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// Announcements go to a mailbox file in the temp dir; returns its path.
    pub fn mailbox(&mut self) -> PathBuf {
        let mailbox = self.dir.path().join("mailbox.mbox");
        self.set("PATROL_MAILBOX_FILE", mailbox.display().to_string());
        mailbox
    }
}

/// An emulator, a policy file, patrol's stores opened in-process, and a signed-in owner.
pub struct World {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    /// patrol's settings, as a `patrol serve` process of the scenario gets them.
    pub env: Vec<(String, String)>,
    pub local: Local,
    pub api: Arc<dyn PatApi>,
    pub http: reqwest::Client,
}

impl World {
    pub async fn start(seed: Value, policy: &str) -> World {
        Self::start_with(seed, policy, EmulatorConfig::default(), |_| {}, false).await
    }

    /// As [`World::start`] with patrol's in-memory secret store instead of the embedded file store (whose
    /// reads decrypt every version: too slow for a year of daily rotations in a debug build).
    pub async fn start_in_memory(seed: Value, policy: &str) -> World {
        Self::start_with(seed, policy, EmulatorConfig::default(), |_| {}, true).await
    }

    /// `edit_env` may change patrol's settings before the stores are opened.
    pub async fn start_with(
        seed: Value,
        policy: &str,
        config: EmulatorConfig,
        edit_env: impl FnOnce(&mut Vec<(String, String)>),
        in_memory: bool,
    ) -> World {
        let mut setup = Setup::start_with(seed, policy, config).await;
        edit_env(&mut setup.env);
        Self::open(setup, None, in_memory).await
    }

    /// Opens patrol's stores for `setup` on the emulator's clock and signs the owner in, consenting to
    /// `scopes` (default: the PAT scopes); `in_memory` as in [`World::start_in_memory`].
    pub async fn open(setup: Setup, scopes: Option<String>, in_memory: bool) -> World {
        let Setup { emu, dir, env } = setup;
        // patrol's clock follows the emulator's virtual clock (as the host's UtcNow would make it).
        let clock = Clock::starting_at(emu.clock().now());
        let mut local = Local::open(settings_of(&env), clock).unwrap();
        if in_memory {
            local.store = Arc::new(patrol::store::memory::MemoryStore::new());
            local.own = local.store.clone();
        }
        sign_in_with(&emu, &local, scopes).await;
        let owner = OwnerId::parse(OWNER).unwrap();
        let api = local.connector().unwrap().pats(&owner, &OrgName::parse(ORG).unwrap());
        World { emu, dir, env, local, api, http: reqwest::Client::new() }
    }

    pub fn control(&self, path: &str) -> String {
        format!("{}/_control/{path}", self.emu.endpoints().control)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.control(path)).json(&body).send().await.unwrap()
    }

    /// Moves the virtual clock forward through the control API; patrol's clock follows.
    pub async fn advance(&self, by: time::Duration) {
        advance_clock(&self.http, &self.emu, by).await;
        self.local.clock.set(self.emu.clock().now());
    }

    /// Whether `value` authenticates in the organization right now (a consumer using the PAT).
    pub async fn authenticates(&self, value: &str) -> bool {
        use_pat(&self.http, &self.emu, json!({ "token": value, "organization": ORG })).await
    }

    /// The secret's current version: the PAT it names and its value.
    pub async fn current(&self, secret: &str) -> Option<(AuthorizationId, String)> {
        let s = self.local.store.get(&SecretName::parse(secret).unwrap(), None).await.unwrap()?;
        let id = AuthorizationId::parse(&s.properties.tags[tags::AUTHORIZATION_ID]).unwrap();
        Some((id, s.value.expose_secret().to_owned()))
    }

    pub async fn pats(&self, filter: DisplayFilter) -> Vec<Pat> {
        self.api.list(filter).await.unwrap()
    }

    /// Every secret the emulator minted (PATs, tokens), for scanning output.
    pub async fn minted(&self) -> Vec<String> {
        minted(&self.http, &self.emu).await
    }
}

pub fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}
