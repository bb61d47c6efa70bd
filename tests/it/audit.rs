//! Audit ingestion and rules against patrol-emulator over real HTTP: consumers use PATs through the
//! emulator's control API (`/_control/pats/use`), leaks are simulated (`/_control/pats/{id}/discover`), and
//! patrol polls the audit API with its real client, checkpointing in a real file state store.

use patrol::audit::context::{AuditContext, KnownPat, Lifecycle, PatStatus, PatrolAction};
use patrol::audit::ingest::{PollConfig, checkpoint_key, poll};
use patrol::auth::{AccessToken, StaticToken};
use patrol::clock::Clock;
use patrol::devops::audit::AuditClient;
use patrol::devops::http::DevOpsHttp;
use patrol::devops::ratelimit::RateLimiter;
use patrol::devops::retry::RetryPolicy;
use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use patrol::policy::audit::{AuditPolicy, RuleId};
use patrol::state::{FileStateStore, StateStore};
use patrol_emulator::seed::Seed;
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) const DEVOPS: &str = "499b84ac-1321-427f-aa17-267ca6975798";
pub(crate) const OWNER: &str = "build@fabrikam.test";
pub(crate) const ADMIN: &str = "admin@fabrikam.test";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub(crate) struct Env {
    pub(crate) emu: Emulator,
    pub(crate) http: reqwest::Client,
}

impl Env {
    pub(crate) async fn start() -> Self {
        let seed: Seed = serde_json::from_value(json!({
            "organizations": [{ "name": "fabrikam" }],
            "users": [
                { "upn": OWNER, "displayName": "Build Account", "organizations": ["fabrikam"] },
                { "upn": ADMIN, "adminOf": ["fabrikam"] }
            ]
        }))
        .unwrap();
        let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..Default::default() }).await.unwrap();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { emu, http }
    }

    pub(crate) async fn ctl(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.emu.endpoints().control)).json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    pub(crate) async fn token(&self, upn: &str, scopes: &[&str]) -> String {
        let scope = scopes.iter().map(|s| format!("{DEVOPS}/{s}")).collect::<Vec<_>>().join(" ");
        let v = self.ctl("/_control/tokens", json!({ "upn": upn, "scope": scope })).await;
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a PAT as `upn` through the real PAT API; returns (authorization id, secret value).
    pub(crate) async fn create_pat(&self, upn: &str, name: &str, scope: &str) -> (AuthorizationId, String) {
        let token = self.token(upn, &["vso.pats", "vso.pats_manage"]).await;
        let valid_to = patrol_emulator::wire::format_time(self.emu.clock().now() + time::Duration::days(30));
        let r = self
            .http
            .post(format!("{}/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1", self.emu.endpoints().devops))
            .bearer_auth(token)
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .json(&json!({ "displayName": name, "scope": scope, "validTo": valid_to, "allOrgs": false }))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let pat = &v["patToken"];
        (
            AuthorizationId::parse(pat["authorizationId"].as_str().unwrap()).unwrap(),
            pat["token"].as_str().unwrap().to_owned(),
        )
    }

    pub(crate) async fn use_pat(&self, secret: &str, ip: &str, ua: &str) {
        self.ctl(
            "/_control/pats/use",
            json!({ "token": secret, "organization": "fabrikam", "ipAddress": ip, "userAgent": ua }),
        )
        .await;
    }

    pub(crate) async fn audit_client(&self, clock: &Clock) -> AuditClient {
        let token = self.token(ADMIN, &["vso.auditlog"]).await;
        let source = StaticToken::new(
            OwnerId::parse(ADMIN).unwrap(),
            AccessToken { value: SecretString::from(token), expires_at: clock.now() + time::Duration::hours(1) },
            clock.clone(),
        );
        let http = DevOpsHttp::new(
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            clock.clone(),
            RetryPolicy::fast(),
            Arc::new(source),
            Arc::new(RateLimiter::new()),
        );
        AuditClient::new(
            http,
            url::Url::parse(&self.emu.endpoints().audit).unwrap(),
            OrgName::parse("fabrikam").unwrap(),
        )
    }
}

fn known(id: AuthorizationId, name: &str, secret: Option<&str>, env: &Env) -> KnownPat {
    let now = env.emu.clock().now();
    KnownPat {
        authorization_id: id,
        display_name: name.into(),
        owner: OwnerId::parse(OWNER).unwrap(),
        organization: OrgName::parse("fabrikam").unwrap(),
        secret: secret.map(|s| SecretName::parse(s).unwrap()),
        valid_from: now - time::Duration::hours(1),
        valid_to: now + time::Duration::days(30),
        scope: "vso.code".into(),
        global: false,
        status: PatStatus::Current,
    }
}

fn settings() -> patrol::audit::AuditSettings {
    let p: AuditPolicy = toml::from_str("allowed_cidrs = [\"10.20.0.0/16\"]").unwrap();
    p.resolve().unwrap()
}

#[tokio::test]
async fn rules_fire_on_simulated_consumer_use_and_polls_deduplicate() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let org = OrgName::parse("fabrikam").unwrap();
    let (managed, managed_secret) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    let (old, old_secret) = env.create_pat(OWNER, "ci-build (patrol:aaaaaaaaaaaa)", "vso.code").await;

    let mut ctx = AuditContext::new();
    ctx.add_pat(known(managed, "ci-build (patrol:0123456789ab)", Some("ci-build"), &env));
    let now = env.emu.clock().now();
    ctx.add_pat(KnownPat {
        status: PatStatus::Superseded {
            rotated_at: now - time::Duration::hours(1),
            grace_ends: now - time::Duration::minutes(1),
        },
        ..known(old, "ci-build (patrol:aaaaaaaaaaaa)", Some("ci-build"), &env)
    });
    for (id, name) in [(managed, "ci-build (patrol:0123456789ab)"), (old, "ci-build (patrol:aaaaaaaaaaaa)")] {
        ctx.add_action(PatrolAction {
            kind: Lifecycle::Create,
            organization: org.clone(),
            owner: OwnerId::parse(OWNER).unwrap(),
            display_name: name.into(),
            authorization_id: Some(id),
            at: now,
        });
    }

    // Consumers: an ordinary one, one outside the allowed ranges, one in a browser, one still on the old PAT.
    env.use_pat(&managed_secret, "10.20.1.1", "git/2.45").await;
    env.use_pat(&managed_secret, "203.0.113.9", "git/2.45").await;
    env.use_pat(&managed_secret, "10.20.1.2", BROWSER).await;
    env.use_pat(&old_secret, "10.20.7.7", "legacy-job/1.0").await;
    // Someone creates a PAT on the managed owner's account; then a leak.
    let (_foreign, _) = env.create_pat(OWNER, "my script", "vso.code").await;
    env.ctl(&format!("/_control/pats/{managed}/discover"), json!({})).await;

    let dir = tempfile::tempdir().unwrap();
    let store = FileStateStore::new(dir.path());
    let client = env.audit_client(&clock).await;
    let report =
        poll(&client, &store, &org, &settings(), &mut ctx, PollConfig::default(), env.emu.clock().now()).await.unwrap();
    let mut rules: Vec<RuleId> = report.findings.iter().map(|f| f.rule).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            RuleId::OutsideCidr,
            RuleId::BrowserUserAgent,
            RuleId::ConsumerLag,
            RuleId::ForeignLifecycle,
            RuleId::Leak,
            RuleId::Leak
        ],
        "{:#?}",
        report.findings
    );
    let lag = report.findings.iter().find(|f| f.rule == RuleId::ConsumerLag).unwrap();
    assert!(lag.summary.contains("10.20.7.7") && lag.summary.contains("legacy-job/1.0"), "{}", lag.summary);
    let leak = report.findings.iter().find(|f| f.rule == RuleId::Leak).unwrap();
    assert_eq!(leak.secret().unwrap().as_str(), "ci-build");
    assert!(report.auditing_off.is_none());
    assert_eq!(report.duplicates, 0);
    assert!(ctx.last_use.contains_key(&managed));

    // Nothing secret in findings.
    let json = serde_json::to_string(&report).unwrap();
    for s in [&managed_secret, &old_secret] {
        assert!(!json.contains(s.as_str()), "a PAT value leaked into the report");
    }

    // The checkpoint is persisted; the next poll overlaps but reports nothing twice.
    assert!(store.load(&checkpoint_key(&org)).await.unwrap().is_some());
    env.ctl("/_control/clock/advance", json!({ "seconds": 60 })).await;
    // The leaked PAT was revoked by the service; the lagging consumer tries again from elsewhere.
    env.use_pat(&old_secret, "198.51.100.1", "git/2.45").await;
    env.ctl("/_control/clock/advance", json!({ "seconds": 1 })).await;
    let report2 =
        poll(&client, &store, &org, &settings(), &mut ctx, PollConfig::default(), env.emu.clock().now()).await.unwrap();
    assert!(report2.duplicates >= report.stats.entries, "{} duplicates", report2.duplicates);
    let rules2: Vec<RuleId> = report2.findings.iter().map(|f| f.rule).collect();
    assert_eq!(rules2, vec![RuleId::OutsideCidr, RuleId::ConsumerLag], "{:#?}", report2.findings);
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn auditing_off_is_reported_plainly() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let org = OrgName::parse("fabrikam").unwrap();
    let r = env
        .http
        .put(format!("{}/_control/orgs/fabrikam/policy", env.emu.endpoints().control))
        .json(&json!({ "auditEnabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (id, _) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    let mut ctx = AuditContext::new();
    ctx.add_pat(known(id, "ci-build (patrol:0123456789ab)", Some("ci-build"), &env));
    ctx.add_action(PatrolAction {
        kind: Lifecycle::Create,
        organization: org.clone(),
        owner: OwnerId::parse(OWNER).unwrap(),
        display_name: "ci-build (patrol:0123456789ab)".into(),
        authorization_id: Some(id),
        at: env.emu.clock().now(),
    });
    env.ctl("/_control/clock/advance", json!({ "seconds": 3600 })).await;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStateStore::new(dir.path());
    let client = env.audit_client(&clock).await;
    let report =
        poll(&client, &store, &org, &settings(), &mut ctx, PollConfig::default(), env.emu.clock().now()).await.unwrap();
    let msg = report.auditing_off.expect("auditing off detected");
    assert!(msg.contains("Log Audit Events") && msg.contains("fabrikam"), "{msg}");
    assert_eq!(report.entries, 0);
    env.emu.shutdown().await.unwrap();
}

/// The remaining usage and lifecycle rules against the emulator's simulated consumers: use outside the
/// allowed hours, a burst of audited actions, a dormant PAT waking up, and a full-access PAT created.
#[tokio::test]
async fn hours_burst_dormant_and_broad_rules_fire_on_simulated_usage() {
    let env = Env::start().await;
    let org = OrgName::parse("fabrikam").unwrap();
    let (managed, managed_secret) = env.create_pat(OWNER, "nightly (patrol:0123456789ab)", "vso.code").await;
    let mut ctx = AuditContext::new();
    ctx.add_pat(known(managed, "nightly (patrol:0123456789ab)", Some("nightly"), &env));
    ctx.add_action(PatrolAction {
        kind: Lifecycle::Create,
        organization: org.clone(),
        owner: OwnerId::parse(OWNER).unwrap(),
        display_name: "nightly (patrol:0123456789ab)".into(),
        authorization_id: Some(managed),
        at: env.emu.clock().now(),
    });
    // Allowed hours: a one-hour window that starts two hours from now (so "now" is outside it).
    let start = env.emu.clock().now() + time::Duration::hours(2);
    let end = start + time::Duration::hours(1);
    let hhmm = |t: time::OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let policy: AuditPolicy = toml::from_str(&format!(
        "allowed_cidrs = [\"10.20.0.0/16\"]\n\
         allowed_hours = {{ start = \"{}\", end = \"{}\" }}\n\
         [rules.burst]\nmax_actions = 3\nwindow_minutes = 10\n\
         [rules.dormant_active]\ndays = 2\n",
        hhmm(start),
        hhmm(end)
    ))
    .unwrap();
    let settings = policy.resolve().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStateStore::new(dir.path());
    let clock = Clock::starting_at(env.emu.clock().now());
    let client = env.audit_client(&clock).await;

    // Five audited actions in a minute from an allowed address: a burst, and outside the allowed hours.
    for _ in 0..5 {
        env.use_pat(&managed_secret, "10.20.1.1", "git/2.45").await;
    }
    env.ctl("/_control/clock/advance", json!({ "seconds": 1 })).await;
    let first =
        poll(&client, &store, &org, &settings, &mut ctx, PollConfig::default(), env.emu.clock().now()).await.unwrap();
    let rules: std::collections::BTreeSet<RuleId> = first.findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&RuleId::Burst), "{:#?}", first.findings);
    assert!(rules.contains(&RuleId::OutsideHours), "{:#?}", first.findings);
    assert!(!rules.contains(&RuleId::DormantActive), "first use is not a dormant PAT waking up");

    // Three quiet days, then the PAT is used again: dormant for longer than 2 days.
    env.ctl("/_control/clock/advance", json!({ "seconds": 3 * 86_400 })).await;
    env.use_pat(&managed_secret, "10.20.1.1", "git/2.45").await;
    // Someone creates a full-access PAT on the same account (known to the inventory as app_token).
    let (broad, _) = env.create_pat(OWNER, "admin everything", "app_token").await;
    ctx.add_pat(KnownPat { scope: "app_token".into(), ..known(broad, "admin everything", None, &env) });
    env.ctl("/_control/clock/advance", json!({ "seconds": 1 })).await;
    // Three days later the first access token has expired; a reader signs in again.
    clock.set(env.emu.clock().now());
    let client = env.audit_client(&clock).await;
    let second =
        poll(&client, &store, &org, &settings, &mut ctx, PollConfig::default(), env.emu.clock().now()).await.unwrap();
    let rules: std::collections::BTreeSet<RuleId> = second.findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&RuleId::DormantActive), "{:#?}", second.findings);
    assert!(rules.contains(&RuleId::BroadPat), "{:#?}", second.findings);
    let json = serde_json::to_string(&(first, second)).unwrap();
    assert!(!json.contains(&managed_secret), "a PAT value leaked into a finding");
    env.emu.shutdown().await.unwrap();
}

/// Issue 20, defect 4: auditing that is on is never reported off because of de-duplication (patrol's own
/// create events were seen in the previous, overlapping window) or the log's ingestion delay; and the
/// checkpoint never keeps a verdict the log contradicts.
#[tokio::test]
async fn auditing_on_is_not_reported_off_across_overlapping_windows_or_the_log_delay() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let org = OrgName::parse("fabrikam").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStateStore::new(dir.path());
    let mut ctx = AuditContext::new();
    let ours = |ctx: &mut AuditContext, id, name: &str, at| {
        ctx.add_pat(known(id, name, Some("ci-build"), &env));
        ctx.add_action(PatrolAction {
            kind: Lifecycle::Create,
            organization: org.clone(),
            owner: OwnerId::parse(OWNER).unwrap(),
            display_name: name.into(),
            authorization_id: Some(id),
            at,
        });
    };

    // patrol rotates a PAT at T0; the timer polls 2, 22 and 42 minutes later (windows overlap by 30 minutes,
    // so the create event of T0 is a duplicate in the later polls).
    let t0 = env.emu.clock().now();
    let (id, _) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    ours(&mut ctx, id, "ci-build (patrol:0123456789ab)", t0);
    for wait in [2, 20, 20] {
        env.ctl("/_control/clock/advance", json!({ "seconds": wait * 60 })).await;
        let now = env.emu.clock().now();
        let r = poll(&env.audit_client(&clock).await, &store, &org, &settings(), &mut ctx, PollConfig::default(), now)
            .await
            .unwrap();
        assert!(r.auditing_off.is_none(), "after {wait} more minutes: {:?}", r.auditing_off);
        assert!(!checkpoint_says_off(&store, &org).await);
    }

    // The log now lags 20 minutes behind (ingestion delay). patrol rotates again at T1; a poll 16 minutes
    // later cannot see the event yet, which is no evidence of anything.
    let r = env
        .http
        .put(format!("{}/_control/orgs/fabrikam/policy", env.emu.endpoints().control))
        .json(&json!({ "auditDelaySecs": 1200 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t1 = env.emu.clock().now();
    let (id2, _) = env.create_pat(OWNER, "ci-build (patrol:bbbbbbbbbbbb)", "vso.code").await;
    ours(&mut ctx, id2, "ci-build (patrol:bbbbbbbbbbbb)", t1);
    for wait in [16, 20] {
        env.ctl("/_control/clock/advance", json!({ "seconds": wait * 60 })).await;
        let now = env.emu.clock().now();
        let r = poll(&env.audit_client(&clock).await, &store, &org, &settings(), &mut ctx, PollConfig::default(), now)
            .await
            .unwrap();
        assert!(r.auditing_off.is_none(), "{wait} minutes into the delay: {:?}", r.auditing_off);
        assert!(!checkpoint_says_off(&store, &org).await);
    }

    // Auditing really switched off: patrol's next change is never logged → reported once it is old enough,
    // and the checkpoint keeps it while the log stays empty; when auditing is back, the first entry clears it.
    let r = env
        .http
        .put(format!("{}/_control/orgs/fabrikam/policy", env.emu.endpoints().control))
        .json(&json!({ "auditEnabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.ctl("/_control/clock/advance", json!({ "seconds": 60 * 60 })).await;
    let t2 = env.emu.clock().now();
    let (id3, _) = env.create_pat(OWNER, "ci-build (patrol:cccccccccccc)", "vso.code").await;
    ours(&mut ctx, id3, "ci-build (patrol:cccccccccccc)", t2);
    env.ctl("/_control/clock/advance", json!({ "seconds": 31 * 60 })).await;
    let r = poll(
        &env.audit_client(&clock).await,
        &store,
        &org,
        &settings(),
        &mut ctx,
        PollConfig::default(),
        env.emu.clock().now(),
    )
    .await
    .unwrap();
    assert!(r.auditing_off.is_some_and(|m| m.contains("Log Audit Events")), "auditing off went unnoticed");
    assert!(checkpoint_says_off(&store, &org).await);
    env.ctl("/_control/clock/advance", json!({ "seconds": 20 * 60 })).await;
    poll(
        &env.audit_client(&clock).await,
        &store,
        &org,
        &settings(),
        &mut ctx,
        PollConfig::default(),
        env.emu.clock().now(),
    )
    .await
    .unwrap();
    assert!(checkpoint_says_off(&store, &org).await, "an empty log is no evidence that auditing is back");
    let r = env
        .http
        .put(format!("{}/_control/orgs/fabrikam/policy", env.emu.endpoints().control))
        .json(&json!({ "auditEnabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.create_pat(OWNER, "someone's script", "vso.code").await;
    env.ctl("/_control/clock/advance", json!({ "seconds": 60 })).await;
    let r = poll(
        &env.audit_client(&clock).await,
        &store,
        &org,
        &settings(),
        &mut ctx,
        PollConfig::default(),
        env.emu.clock().now(),
    )
    .await
    .unwrap();
    assert!(r.auditing_off.is_none());
    assert!(!checkpoint_says_off(&store, &org).await, "the checkpoint kept a verdict the log contradicts");
    env.emu.shutdown().await.unwrap();
}

async fn checkpoint_says_off(store: &FileStateStore, org: &OrgName) -> bool {
    let (body, _) = store.load(&checkpoint_key(org)).await.unwrap().unwrap();
    serde_json::from_slice::<patrol::audit::ingest::Checkpoint>(&body).unwrap().auditing_off
}
