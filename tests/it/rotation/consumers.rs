//! Consumers end to end against patrol-emulator over real HTTP/TLS: a token feeding a service connection
//! (written with patrol's own app-only Entra identity), a variable group, a GitHub Actions secret (sealed
//! box the emulator opens), a copy in another secret, a signed webhook and a reference consumer. Each one
//! gets the new PAT after every rotation; the previous PAT is revoked only once every consumer moved (a
//! pipeline run after the update, the reference's lag); a consumer that loses its rights holds revocation
//! to the deadline and is named by the alerts; no PAT value appears in any report, notice, webhook body
//! or the journal.

use super::world::{ORG, OWNER, Setup, World};
use patrol::domain::{AuthorizationId, SecretName};
use patrol::notify::Notice;
use patrol::rotation::engine::RunOptions;
use secrecy::SecretString;
use serde_json::{Value, json};
use time::Duration;

pub(crate) const APP: &str = "7c1f0e2a-9b3d-4e5f-8a6b-0c1d2e3f4a5b";
pub(crate) const APP_SECRET: &str = "patrol-consumer-writer-secret-0123";
pub(crate) const EP: &str = "0f6a6f2e-1c7b-4d5e-9f00-00000000c0de";
pub(crate) const GH_TOKEN: &str = "github_pat_11AAAAAAA0patrolConsumerTest0_writewritewritewritewritewritewritewrite";
pub(crate) const HOOK_KEY: &str = "whsec-0123456789abcdef0123456789abcdef";

/// The consumer side every consumer test starts from: a service connection, a variable group and a GitHub
/// repository with an environment, all administered by patrol's app; `placeholder` is their current PAT.
pub(crate) fn seed(placeholder: &str) -> Value {
    json!({
        "organizations": [{ "name": ORG }],
        "users": [{ "upn": OWNER, "displayName": "Rotator", "organizations": [ORG] }],
        "apps": [{ "clientId": APP, "displayName": "patrol-func", "clientSecret": APP_SECRET }],
        "consumers": {
            "projects": [{ "organization": ORG, "name": "web" }],
            "appMembers": [{ "organization": ORG, "clientId": APP }],
            "serviceEndpoints": [{
                "organization": ORG, "projects": ["web"], "id": EP, "name": "npm-feed",
                "type": "externalnpmregistry", "url": "https://pkgs.dev.azure.com/fabrikam/_packaging/feed/npm/registry/",
                "scheme": "Token", "parameters": { "apitoken": placeholder }, "administrators": [APP]
            }],
            "variableGroups": [{
                "organization": ORG, "projects": ["web"], "id": 7, "name": "release-secrets",
                "variables": {
                    "AZDO_PAT": { "value": placeholder, "isSecret": true },
                    "OTHER_SECRET": { "value": "keep-me-0123456789abcdef", "isSecret": true },
                    "PLAIN": { "value": "hello" }
                },
                "administrators": [APP]
            }],
            "github": {
                "tokens": [{ "token": GH_TOKEN, "label": "patrol", "repositories": ["octo/app"] }],
                "repositories": [{ "name": "octo/app", "environments": ["prod"] }]
            }
        }
    })
}

/// The policy; with `ack` the webhook consumer acknowledges (its acknowledgement is its evidence of use).
fn policy_with(github_api: &str, ack: bool) -> String {
    let ack = if ack { "ack = true\n" } else { "" };
    format!(
        r#"[defaults]
organization = "{ORG}"
owner = "{OWNER}"
scopes = "vso.packaging"

[consumers]
github_credential = "patrol-github"
github_api = "{github_api}"
deadline_hours = 96

[[token]]
secret = "feed-pat"
display_name = "Feed"
validity_days = 30
rotate_before_days = 7
grace_days = 1

[[token.consumer]]
kind = "devops-service-connection"
project = "web"
connection = "npm-feed"
type = "externalnpmregistry"
scheme = "Token"

[[token.consumer]]
kind = "devops-variable-group"
project = "web"
group = 7
variable = "AZDO_PAT"

[[token.consumer]]
kind = "github-actions-secret"
repository = "octo/app"
environment = "prod"
name = "AZDO_PAT"

[[token.consumer]]
kind = "keyvault"
secret = "team-copy"

[[token.consumer]]
kind = "webhook"
url_secret = "hook-url"
signing_secret = "hook-key"
{ack}
[[token.consumer]]
kind = "reference"
description = "App Service web-prod"
lag_hours = 24
"#
    )
}

pub(super) struct Cons {
    pub(super) w: World,
}

impl Cons {
    pub(super) async fn start() -> Cons {
        Self::start_with(false).await
    }

    pub(super) async fn start_with(ack: bool) -> Cons {
        let placeholder = patrol_emulator::patsecret::generate(2026, 1);
        let setup = Setup::start(seed(&placeholder), "").await;
        let e = setup.emu.endpoints().clone();
        let github = e.extra["github"].clone();
        std::fs::write(setup.dir.path().join("patrol.toml"), policy_with(&github, ack)).unwrap();
        let mut setup = setup;
        setup.set("PATROL_CA_CERT", e.extra["ca_cert"].clone());
        setup.set("PATROL_CONSUMER_CREDENTIAL", "client-secret");
        setup.set("PATROL_CONSUMER_TENANT_ID", e.tenant.clone());
        setup.set("PATROL_CONSUMER_CLIENT_ID", APP);
        setup.set("PATROL_CONSUMER_CLIENT_SECRET", APP_SECRET);
        let w = World::open(setup, None, false).await;
        // patrol's own credentials for consumers live in its secret store.
        let put = |name: &str, value: String| {
            let store = w.local.store.clone();
            let name = SecretName::parse(name).unwrap();
            async move { store.set(&name, &SecretString::from(value), Default::default()).await.unwrap() }
        };
        put("patrol-github", GH_TOKEN.into()).await;
        put("hook-url", format!("{}/_control/consumers/webhooks/team-a", w.emu.endpoints().control)).await;
        put("hook-key", HOOK_KEY.into()).await;
        Cons { w }
    }

    pub(super) async fn ctl(&self, path: &str) -> Value {
        self.w.http.get(self.w.control(path)).send().await.unwrap().json().await.unwrap()
    }

    pub(super) async fn run(&self) -> patrol::rotation::engine::RunSummary {
        self.w.local.engine().unwrap().run(RunOptions::default()).await.unwrap()
    }

    pub(super) async fn pipeline_run(&self) -> Value {
        let r = self.w.post(&format!("consumers/service-endpoints/{EP}/runs"), json!({ "project": "web" })).await;
        r.json().await.unwrap()
    }

    /// Every consumer holds `value`; the other secret variable is untouched.
    pub(super) async fn all_hold(&self, value: &str) {
        let ep = self.ctl(&format!("consumers/service-endpoints/{EP}")).await.to_string();
        assert!(ep.contains(value), "service connection holds the current PAT");
        let g = self.ctl("consumers/variable-groups/7").await.to_string();
        assert!(g.contains(value), "variable group holds the current PAT");
        assert!(g.contains("keep-me-0123456789abcdef"), "the other secret variable is kept");
        let gh = self.ctl("consumers/github/secrets?repository=octo/app&environment=prod").await.to_string();
        assert!(gh.contains(value), "GitHub environment secret holds the current PAT (sealed box opened)");
        let copy = self.w.local.store.get(&SecretName::parse("team-copy").unwrap(), None).await.unwrap().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&copy.value), value);
    }

    pub(super) fn revoked(&self, pats: &[patrol::devops::Pat], id: AuthorizationId) -> bool {
        !pats.iter().any(|p| p.authorization_id == id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consumer_is_delivered_and_the_previous_pat_goes_only_after_the_last_one_moved() {
    let c = Cons::start().await;
    let first = c.run().await;
    assert_eq!((first.rotated, first.failed), (1, 0), "{:?}", first.reports);
    let (old, old_value) = c.w.current("feed-pat").await.unwrap();
    c.all_hold(&old_value).await;
    let hooks = c.ctl("consumers/webhooks/team-a").await;
    let received = hooks["received"].as_array().unwrap();
    assert_eq!(received.len(), 1, "{hooks}");

    // Due: rotated and delivered to every consumer in the same run.
    c.w.advance(Duration::days(24)).await;
    let s = c.run().await;
    assert_eq!((s.rotated, s.failed), (1, 0), "{:?}", s.reports);
    let (new, new_value) = c.w.current("feed-pat").await.unwrap();
    assert_ne!(new, old);
    c.all_hold(&new_value).await;
    // The webhook got a signed notification naming the new version, never the value.
    let hooks = c.ctl("consumers/webhooks/team-a").await;
    let last = hooks["received"].as_array().unwrap().last().unwrap().clone();
    let body = last["body"].as_str().map(str::to_owned).unwrap_or_else(|| last["body"].to_string());
    assert!(body.contains("feed-pat") && !body.contains(&new_value) && !body.contains(&old_value), "{body}");
    let headers = last["headers"].to_string().to_lowercase();
    assert!(headers.contains("x-patrol-signature") && headers.contains("sha256="), "{headers}");

    // Grace (1 day) and the reference's lag (24 h) over, but no pipeline has used the connection: kept.
    c.w.advance(Duration::hours(25)).await;
    let s = c.run().await;
    assert!(!c.revoked(&c.w.pats(patrol::devops::DisplayFilter::Active).await, old), "{:?}", s.reports);
    let plan = serde_json::to_string(&s.plan).unwrap();
    assert!(plan.contains("no pipeline run seen using the connection"), "{plan}");

    // A pipeline run uses the connection (with the new PAT): evidence, then the previous PAT is revoked.
    let run = c.pipeline_run().await;
    assert_eq!(run["result"], "succeeded", "{run}");
    let s1 = c.run().await;
    let s2 = c.run().await;
    let active = c.w.pats(patrol::devops::DisplayFilter::Active).await;
    assert!(c.revoked(&active, old), "{:?} {:?}", s1.reports, s2.reports);
    assert!(!c.revoked(&active, new));

    // No PAT value in any report, notice, webhook body or the journal.
    let mut secrets = c.w.minted().await;
    secrets.push(HOOK_KEY.into());
    secrets.push(GH_TOKEN.into());
    secrets.retain(|s| s.len() >= 20);
    let journal = std::fs::read_dir(c.w.dir.path().join("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "secrets")
        .flat_map(|d| walk(&d.path()))
        .collect::<Vec<_>>();
    let mut texts = vec![
        format!("{:?}{:?}{:?}", first.reports, s.reports, s2.reports),
        format!("{:?}{:?}", s1.notices, s2.notices),
        serde_json::to_string(&c.ctl("consumers/webhooks/team-a").await["received"]).unwrap(),
    ];
    texts.extend(journal);
    for t in &texts {
        for secret in &secrets {
            assert!(!t.contains(secret.as_str()), "a secret leaked: {}", &t[..t.len().min(200)]);
        }
    }
    assert!(secrets.contains(&new_value), "the scan knows the PATs");
}

pub(super) fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_rights_holds_revocation_to_the_deadline_and_is_named() {
    let c = Cons::start().await;
    assert_eq!(c.run().await.failed, 0);
    let (old, _) = c.w.current("feed-pat").await.unwrap();
    // Someone takes patrol's Administrator role on the variable group away.
    let r =
        c.w.http
            .put(c.w.control("consumers/variable-groups/7/administrators"))
            .json(&json!({ "remove": [APP] }))
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    c.w.advance(Duration::days(24)).await;
    let s = c.run().await;
    assert_eq!(s.rotated, 1, "{:?}", s.reports);
    let failed: Vec<_> = s
        .notices
        .iter()
        .filter_map(|a| match &a.notice {
            Notice::RotationFailed { step, error, next, .. } => Some((step.clone(), error.clone(), next.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "deliver variable-group:fabrikam/web/7/AZDO_PAT");
    // Operators see it: `patrol status` lists each consumer's state.
    let status = serde_json::to_value(patrol::cli::status::gather(&c.w.local).await).unwrap();
    let rows = status["tokens"][0]["consumers"].as_array().unwrap().clone();
    let state = |id: &str| rows.iter().find(|r| r["consumer"] == id).map(|r| r["state"].clone()).unwrap();
    assert_eq!(state("variable-group:fabrikam/web/7/AZDO_PAT"), "failing", "{rows:?}");
    assert_eq!(state("service-connection:fabrikam/web/npm-feed"), "delivered", "{rows:?}");
    assert_eq!(state("reference:app-service-web-prod"), "reads-vault", "{rows:?}");
    assert!(failed[0].1.contains("403"), "{failed:?}");
    assert!(failed[0].2.contains("Administrator of the group"), "{failed:?}");
    // The other consumers moved; a pipeline ran; still the previous PAT stays while the group lacks it.
    c.pipeline_run().await;
    let mut deadline = None;
    for day in 1..=5 {
        c.w.advance(Duration::days(1)).await;
        c.pipeline_run().await;
        let s = c.run().await;
        let active = c.w.pats(patrol::devops::DisplayFilter::Active).await;
        if day < 4 {
            assert!(!c.revoked(&active, old), "day {day}: held");
        }
        for n in s.notices.iter().map(|a| &a.notice) {
            if let Notice::Finding { rule, evidence, .. } = n
                && rule == "consumer-deadline"
            {
                deadline = Some(evidence.clone());
            }
        }
    }
    assert!(c.revoked(&c.w.pats(patrol::devops::DisplayFilter::Active).await, old), "revoked at the deadline");
    let evidence = deadline.expect("the deadline alert");
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert!(evidence[0].starts_with("variable-group:fabrikam/web/7/AZDO_PAT"), "{evidence:?}");
}

/// `patrol rotate [args]` as a child process; returns (exit code, stdout+stderr).
fn patrol(env: &[(String, String)], crash: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("rotate").args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(b) = crash {
        cmd.env("PATROL_TEST_CRASH_AFTER", b);
    }
    let out = cmd.output().expect("run patrol");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patrol_process_killed_at_every_consumer_step_converges_without_a_visible_second_write() {
    let c = Cons::start().await;
    let (code, out) = patrol(&c.w.env, None, &[]);
    assert_eq!(code, 0, "first rotation: {out}");
    let copy = SecretName::parse("team-copy").unwrap();
    let mut transcript = out;
    // The five written consumers — service connection, variable group, GitHub, the vault copy, the webhook —
    // are written side by side, so the nth to reach a boundary is any of them: every n is crashed at.
    for boundary in ["consumer-writing", "consumer-written"] {
        for nth in 1..=5 {
            let at = format!("{boundary}:{nth}");
            let (old, _) = c.w.current("feed-pat").await.unwrap();
            let ep_rev = c.ctl(&format!("consumers/service-endpoints/{EP}")).await["revision"].as_u64().unwrap();
            let vg_rev = c.ctl("consumers/variable-groups/7").await["revision"].as_u64().unwrap();
            let copies = c.w.local.store.list_versions(&copy).await.unwrap().len();
            let hooks_before = c.ctl("consumers/webhooks/team-a").await["received"].as_array().unwrap().len();
            let (code, out) = patrol(&c.w.env, Some(&at), &["feed-pat", "--force"]);
            transcript.push_str(&out);
            assert_eq!(code, 86, "{at}: the process reached the boundary: {out}");
            for _ in 0..2 {
                let (code, out) = patrol(&c.w.env, None, &[]);
                transcript.push_str(&out);
                assert!(code == 0 || code == 1, "{at}: restart: {out}");
            }
            let (new, value) = c.w.current("feed-pat").await.unwrap();
            assert_ne!(new, old, "{at}: rotated");
            c.all_hold(&value).await;
            // Exactly one write per consumer for this rotation, crash or not.
            let ep = c.ctl(&format!("consumers/service-endpoints/{EP}")).await["revision"].as_u64().unwrap();
            let vg = c.ctl("consumers/variable-groups/7").await["revision"].as_u64().unwrap();
            assert_eq!((ep - ep_rev, vg - vg_rev), (1, 1), "{at}: one visible write each");
            assert_eq!(c.w.local.store.list_versions(&copy).await.unwrap().len(), copies + 1, "{at}: one copy");
            // The webhook is at least once: a resend after a crash carries the same delivery id and version.
            let hooks = c.ctl("consumers/webhooks/team-a").await["received"].as_array().unwrap().clone();
            let ids: std::collections::BTreeSet<String> =
                hooks[hooks_before..].iter().map(|h| format!("{}/{}", h["body"]["id"], h["body"]["version"])).collect();
            assert_eq!(ids.len(), 1, "{at}: one notification (resends share its id): {ids:?}");
            // The previous PAT is kept: its grace has not passed and no pipeline used the connection.
            let active = c.w.pats(patrol::devops::DisplayFilter::Active).await;
            assert!(!c.revoked(&active, old), "{at}: previous kept while consumers have not all moved");
        }
    }
    for secret in c.w.minted().await.iter().filter(|s| s.len() >= 20) {
        assert!(!transcript.contains(secret.as_str()), "a secret in patrol's output");
    }
}
