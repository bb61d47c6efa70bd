//! Break glass against patrol-emulator over real HTTP: the owner's PAT API for signed-in owners, Token Admin
//! (as an organization administrator) for other users, pre-staged replacements stored before revocation,
//! the organization-wide revocation rule, and the dry run. Replacements are rotations through the real
//! rotation engine (journal in a temp dir). Every check of "revoked" is a consumer trying the PAT against
//! the emulator.

use super::audit::{ADMIN, Env, OWNER};
use patrol::audit::breakglass::{self, AdminApi, Request, Scope, Via};
use patrol::audit::managed::{ManagedPat, managed_pats};
use patrol::audit::replace::EngineReplacer;
use patrol::auth::{AccessToken, StaticToken, TokenSource, TokenSources};
use patrol::clock::Clock;
use patrol::devops::connector::{Endpoints, HttpConnector};
use patrol::devops::retry::RetryPolicy;
use patrol::devops::{ApiVersion, Connector};
use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use patrol::rotation::engine::Engine;
use patrol::rotation::policy::Policy;
use patrol::state::FileStateStore;
use patrol::store::memory::MemoryStore;
use patrol::store::{NewVersion, PAT_CONTENT_TYPE, SecretStore, tags};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Emulator-minted access tokens per identity.
#[derive(Debug)]
pub(crate) struct MintedTokens(pub(crate) HashMap<OwnerId, Arc<dyn TokenSource>>);

impl TokenSources for MintedTokens {
    fn for_identity(&self, identity: &OwnerId) -> Arc<dyn TokenSource> {
        self.0.get(identity).cloned().unwrap_or_else(|| {
            Arc::new(StaticToken::new(
                identity.clone(),
                AccessToken {
                    value: SecretString::from("not-signed-in"),
                    expires_at: time::OffsetDateTime::UNIX_EPOCH,
                },
                Clock::system(),
            ))
        })
    }
}

impl Env {
    /// A real connector whose identities hold emulator tokens with the given scopes.
    pub(crate) async fn connector(&self, clock: &Clock, who: &[(&str, &[&str])]) -> Arc<HttpConnector> {
        let mut map: HashMap<OwnerId, Arc<dyn TokenSource>> = HashMap::new();
        for (upn, scopes) in who {
            let token = self.token(upn, scopes).await;
            let id = OwnerId::parse(upn).unwrap();
            let t =
                AccessToken { value: SecretString::from(token), expires_at: clock.now() + time::Duration::hours(8) };
            map.insert(id.clone(), Arc::new(StaticToken::new(id, t, clock.clone())));
        }
        let endpoints = Endpoints {
            devops: url::Url::parse(&self.emu.endpoints().devops).unwrap(),
            audit: url::Url::parse(&self.emu.endpoints().audit).unwrap(),
            api_version: ApiVersion::Auto,
        };
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Arc::new(HttpConnector::new(client, clock.clone(), RetryPolicy::fast(), endpoints, Arc::new(MintedTokens(map))))
    }

    /// Whether a consumer can still use this PAT value (the emulator authenticates it).
    pub(crate) async fn works(&self, secret: &str) -> bool {
        let r = self
            .http
            .post(format!("{}/_control/pats/use", self.emu.endpoints().control))
            .json(&json!({ "token": secret, "organization": "fabrikam", "ipAddress": "10.20.0.1", "userAgent": "git/2.45" }))
            .send()
            .await
            .unwrap();
        r.status() == 200
    }

    pub(crate) async fn add_user(&self, upn: &str) -> String {
        let v = self.ctl("/_control/users", json!({ "upn": upn, "organizations": ["fabrikam"] })).await;
        v["descriptor"].as_str().unwrap().to_owned()
    }
}

pub(crate) const OWNER_SCOPES: &[&str] = &["vso.pats", "vso.pats_manage"];
pub(crate) const ADMIN_SCOPES: &[&str] = &["vso.tokenadministration", "vso.auditlog"];

/// Stores a PAT as patrol would (tagged current version).
pub(crate) async fn store_managed(
    store: &dyn SecretStore,
    secret: &str,
    id: AuthorizationId,
    name: &str,
    value: &str,
    scope: &str,
) {
    let mut t = BTreeMap::new();
    t.insert(tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned());
    t.insert(tags::AUTHORIZATION_ID.to_owned(), id.to_string());
    t.insert(tags::DISPLAY_NAME.to_owned(), name.to_owned());
    t.insert(tags::ORGANIZATION.to_owned(), "fabrikam".to_owned());
    t.insert(tags::OWNER.to_owned(), OWNER.to_owned());
    t.insert(tags::SCOPE.to_owned(), scope.to_owned());
    let new = NewVersion { content_type: Some(PAT_CONTENT_TYPE.into()), tags: t, ..Default::default() };
    store.set(&SecretName::parse(secret).unwrap(), &SecretString::from(value.to_owned()), new).await.unwrap();
}

/// The rotation engine over the test's store and connector, a file journal under `dir`, and a policy with
/// `tokens` (secret, scopes) of [`OWNER`] in fabrikam.
pub(crate) fn engine(
    dir: &std::path::Path,
    store: Arc<dyn SecretStore>,
    connector: Arc<HttpConnector>,
    clock: &Clock,
    tokens: &[(&str, &str)],
    grace_days: u32,
) -> Arc<Engine> {
    let mut text = format!(
        "[defaults]\norganization = \"fabrikam\"\nowner = \"{OWNER}\"\nvalidity_days = 30\nrotate_before_days = 7\n\
         grace_days = {grace_days}\n"
    );
    for (secret, scopes) in tokens {
        text.push_str(&format!(
            "[[token]]\nsecret = \"{secret}\"\ndisplay_name = \"{secret}\"\nscopes = \"{scopes}\"\n"
        ));
    }
    let policy = Policy::parse(&dir.join("patrol.toml"), &text).unwrap();
    Arc::new(
        Engine::new(
            Arc::new(policy),
            connector,
            store,
            Arc::new(FileStateStore::new(dir.join("state"))),
            clock.clone(),
        )
        .with_concurrency(2),
    )
}

async fn current_value(store: &dyn SecretStore, secret: &str) -> String {
    store.get(&SecretName::parse(secret).unwrap(), None).await.unwrap().unwrap().value.expose_secret().to_owned()
}

fn org() -> OrgName {
    OrgName::parse("fabrikam").unwrap()
}

#[tokio::test]
async fn break_glass_owner_then_user_with_prestaged_replacement_and_dry_run() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let dev = env.add_user("dev@fabrikam.test").await;
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES), (ADMIN, &["vso.tokenadministration"])]).await;
    let admin = connector.token_admin(&OwnerId::parse(ADMIN).unwrap(), &org());
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());

    let (managed_id, managed_value) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    let (_script, script_value) = env.create_pat(OWNER, "my script", "vso.code vso.build").await;
    let (dev_id, dev_value) = env.create_pat("dev@fabrikam.test", "dev laptop", "vso.code").await;
    store_managed(store.as_ref(), "ci-build", managed_id, "ci-build (patrol:0123456789ab)", &managed_value, "vso.code")
        .await;
    let managed: Vec<ManagedPat> = managed_pats(store.as_ref()).await.unwrap();
    assert_eq!(managed.len(), 1);

    // Dry run of everything of the owner: nothing changes.
    let req = Request {
        organization: org(),
        scope: Scope::Owner(OwnerId::parse(OWNER).unwrap()),
        descriptors: vec![],
        policy_owners: vec![],
        signable_owners: vec![OwnerId::parse(OWNER).unwrap()],
        prestage: true,
        revocation_rule: false,
    };
    let survey = breakglass::survey(&req, &managed, connector.as_ref(), None, clock.now()).await.unwrap();
    assert_eq!(survey.candidates.len(), 2, "{:#?}", survey.candidates);
    assert!(survey.confirmation().contains("Revoke 2 PAT(s) in organization fabrikam"), "{}", survey.confirmation());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("ci-build", "vso.code")], 2);
    let replacer = EngineReplacer { engine: &engine, since: clock.now() };
    let dry = breakglass::execute(&survey, connector.as_ref(), None, Some(&replacer), true, clock.now()).await;
    assert!(dry.dry_run && dry.rows.iter().all(|r| r.outcome == "would revoke"));
    assert!(dry.table().starts_with("DRY RUN"), "{}", dry.table());
    assert!(env.works(&managed_value).await && env.works(&script_value).await);
    assert_eq!(current_value(store.as_ref(), "ci-build").await, managed_value);

    // For real: the managed PAT gets a stored replacement first, then both are revoked.
    let report = breakglass::execute(&survey, connector.as_ref(), None, Some(&replacer), false, clock.now()).await;
    assert!(!report.failed(), "{}", report.table());
    assert_eq!(report.revoked(), 2);
    assert!(!env.works(&managed_value).await, "the managed PAT still works");
    assert!(!env.works(&script_value).await, "the owner's other PAT still works");
    let replacement = report.rows.iter().find_map(|r| r.replacement.clone()).expect("a replacement");
    let new_value = current_value(store.as_ref(), "ci-build").await;
    assert_ne!(new_value, managed_value);
    assert!(env.works(&new_value).await, "the pre-staged replacement does not work");
    let now_managed = managed_pats(store.as_ref()).await.unwrap();
    assert_eq!(now_managed[0].authorization_id, replacement.authorization_id);
    assert_eq!(now_managed[0].previous, Some(managed_id));
    assert!(now_managed[0].display_name.starts_with("ci-build (patrol:"));
    assert_eq!(report.actions.len(), 3, "one create and two revokes are recorded as patrol's own");
    // The report never carries a secret.
    let json = serde_json::to_string(&report).unwrap();
    let table = report.table();
    for s in [&managed_value, &script_value, &new_value] {
        assert!(!json.contains(s.as_str()) && !table.contains(s.as_str()));
    }

    // Another user's PATs through Token Admin, as the organization administrator.
    let req = Request { scope: Scope::User(dev.clone()), prestage: false, ..req };
    let survey = breakglass::survey(&req, &now_managed, connector.as_ref(), Some(&admin as &dyn AdminApi), clock.now())
        .await
        .unwrap();
    assert_eq!(survey.candidates.len(), 1, "{:#?}", survey);
    assert_eq!((survey.candidates[0].authorization_id, survey.candidates[0].via), (dev_id, Via::TokenAdmin));
    let report =
        breakglass::execute(&survey, connector.as_ref(), Some(&admin as &dyn AdminApi), None, false, clock.now()).await;
    assert_eq!(report.revoked(), 1, "{}", report.table());
    assert!(!env.works(&dev_value).await);
    assert!(env.works(&new_value).await, "revoking someone else's PAT touched the managed one");

    // A non-administrator cannot use Token Admin: the survey says so instead of pretending nothing exists.
    let owner_admin = connector.token_admin(&OwnerId::parse(OWNER).unwrap(), &org());
    let survey =
        breakglass::survey(&req, &now_managed, connector.as_ref(), Some(&owner_admin as &dyn AdminApi), clock.now())
            .await
            .unwrap();
    assert!(survey.candidates.is_empty());
    assert!(!survey.complete && survey.unlisted.len() == 1, "{:?}", survey.unlisted);
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn break_glass_one_pat_and_whole_organization_with_revocation_rule() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    env.add_user("other@fabrikam.test").await;
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES), (ADMIN, ADMIN_SCOPES)]).await;
    let admin = connector.token_admin(&OwnerId::parse(ADMIN).unwrap(), &org());
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    let (managed_id, managed_value) = env.create_pat(OWNER, "deploy (patrol:0123456789ab)", "vso.release").await;
    let (one_id, one_value) = env.create_pat(OWNER, "one-off", "vso.code").await;
    // A user nobody names: only the revocation rule reaches this PAT.
    let (_, unlisted_value) = env.create_pat("other@fabrikam.test", "unlisted", "vso.work").await;
    store_managed(store.as_ref(), "deploy", managed_id, "deploy (patrol:0123456789ab)", &managed_value, "vso.release")
        .await;
    let managed = managed_pats(store.as_ref()).await.unwrap();

    // One PAT.
    let req = Request {
        organization: org(),
        scope: Scope::Pat(one_id),
        descriptors: vec![],
        policy_owners: vec![],
        signable_owners: vec![OwnerId::parse(OWNER).unwrap()],
        prestage: true,
        revocation_rule: false,
    };
    let survey = breakglass::survey(&req, &managed, connector.as_ref(), None, clock.now()).await.unwrap();
    assert_eq!(survey.candidates.iter().map(|c| c.authorization_id).collect::<Vec<_>>(), vec![one_id]);
    let report = breakglass::execute(&survey, connector.as_ref(), None, None, false, clock.now()).await;
    assert_eq!(report.revoked(), 1);
    assert!(!env.works(&one_value).await && env.works(&managed_value).await);
    // Asking again for the same (now revoked) PAT is reported, not silently "done".
    let again = breakglass::survey(&req, &managed, connector.as_ref(), None, clock.now()).await.unwrap();
    assert!(again.candidates.is_empty() && again.errors[0].contains("not an active PAT"), "{:?}", again.errors);

    // Everything, with a replacement for the managed PAT and the rule for everyone else.
    env.ctl("/_control/clock/advance", json!({ "seconds": 5 })).await;
    clock.set(env.emu.clock().now());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("deploy", "vso.release")], 2);
    let replacer = EngineReplacer { engine: &engine, since: clock.now() };
    let req = Request { scope: Scope::Organization, revocation_rule: true, ..req };
    let survey = breakglass::survey(&req, &managed, connector.as_ref(), Some(&admin as &dyn AdminApi), clock.now())
        .await
        .unwrap();
    assert!(survey.confirmation().contains("refuse every PAT created before now"), "{}", survey.confirmation());
    let report = breakglass::execute(
        &survey,
        connector.as_ref(),
        Some(&admin as &dyn AdminApi),
        Some(&replacer),
        false,
        clock.now(),
    )
    .await;
    assert!(!report.failed(), "{}", report.table());
    assert!(report.revocation_rule.as_deref().unwrap().starts_with("created"), "{:?}", report.revocation_rule);
    assert!(!env.works(&managed_value).await);
    assert!(!env.works(&unlisted_value).await, "the revocation rule did not reach the unlisted user's PAT");
    let new_value = current_value(store.as_ref(), "deploy").await;
    assert!(env.works(&new_value).await, "the replacement was caught by the revocation rule");
    env.emu.shutdown().await.unwrap();
}

/// An existing all-organization PAT (seeded: made before such PATs were refused).
async fn create_global(env: &Env, name: &str) -> (AuthorizationId, String) {
    let valid_to = patrol_emulator::wire::format_time(env.emu.clock().now() + time::Duration::days(60));
    let v = env
        .ctl(
            "/_control/pats",
            json!({ "owner": OWNER, "organization": "fabrikam", "displayName": name, "scope": "vso.code",
                    "validTo": valid_to, "allOrgs": true }),
        )
        .await;
    (AuthorizationId::parse(v["authorizationId"].as_str().unwrap()).unwrap(), v["token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn migrate_global_replaces_managed_global_pats_with_organization_scoped_ones() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES)]).await;
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    let (gid, gvalue) = create_global(&env, "old-global (patrol:0123456789ab)").await;
    create_global(&env, "someone's script").await;
    store_managed(store.as_ref(), "old-global", gid, "old-global (patrol:0123456789ab)", &gvalue, "vso.code").await;
    let managed = managed_pats(store.as_ref()).await.unwrap();

    let (globals, errors) = patrol::audit::migrate::find_global(&managed, connector.as_ref(), clock.now()).await;
    assert!(errors.is_empty(), "{errors:?}");
    // Past 2026-12-01 they stopped working: said so, not "at risk" or "stops".
    if clock.now() >= patrol::devops::GLOBAL_PAT_CUTOFF {
        assert!(globals.iter().all(|g| g.stopped_working && g.status() == "stopped working on 2026-12-01"));
    }
    assert_eq!(globals.len(), 2, "{globals:#?}");
    assert!(globals.iter().all(|g| g.stops_on <= patrol::devops::GLOBAL_PAT_CUTOFF));
    // The normal rotation path: a global-migration rotation through the engine, grace from the policy.
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("old-global", "vso.code")], 2);
    let replacer = EngineReplacer { engine: &engine, since: clock.now() };
    let dry = patrol::audit::migrate::migrate(globals.clone(), &managed, &replacer, true, vec![]).await;
    assert!(dry.table().contains("would replace") && dry.table().contains("not managed"), "{}", dry.table());
    assert_eq!(current_value(store.as_ref(), "old-global").await, gvalue);

    crate::schemas::assert_valid("migrate-global", &serde_json::to_value(&dry).unwrap());
    let report = patrol::audit::migrate::migrate(globals, &managed, &replacer, false, vec![]).await;
    assert!(!report.failed(), "{}", report.table());
    // `patrol migrate-global --format json` prints this document: docs/schemas/migrate-global.schema.json.
    crate::schemas::assert_valid("migrate-global", &serde_json::to_value(&report).unwrap());
    let new = report.rows.iter().find_map(|r| r.replacement.clone()).unwrap();
    let pats = connector
        .pats(&OwnerId::parse(OWNER).unwrap(), &org())
        .list(patrol::devops::DisplayFilter::Active)
        .await
        .unwrap();
    let created = pats.iter().find(|p| p.authorization_id == new.authorization_id).unwrap();
    assert!(!created.is_global(), "the replacement is global too");
    // The old one drains (not revoked here): it still works, and the new value works.
    assert!(env.works(&gvalue).await);
    assert!(env.works(&current_value(store.as_ref(), "old-global").await).await);
    let now_managed = managed_pats(store.as_ref()).await.unwrap();
    assert_eq!(now_managed[0].previous, Some(gid));
    let drain = now_managed[0].previous_revoke_after.unwrap() - clock.now();
    assert!((drain - time::Duration::days(2)).abs() < time::Duration::minutes(1), "{drain}");
    env.emu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrate_global_exports_what_it_replaced_to_a_real_otlp_receiver() {
    use clap::Parser;
    use patrol::cli::audit_cmds::{self, AuditRuntime, MigrateGlobalArgs};
    #[derive(Parser)]
    enum T {
        MigrateGlobal(MigrateGlobalArgs),
    }
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES)]).await;
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    let (gid, gvalue) = create_global(&env, "old-global (patrol:0123456789ab)").await;
    store_managed(store.as_ref(), "old-global", gid, "old-global (patrol:0123456789ab)", &gvalue, "vso.code").await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("old-global", "vso.code")], 2);
    let receiver = crate::rotation::metrics::Receiver::start();
    let settings = patrol::config::Settings::from_source(&patrol::config::Source::from_pairs([(
        "PATROL_OTLP_ENDPOINT",
        receiver.url.as_str(),
    )]))
    .unwrap();
    let metrics = patrol::metrics::Metrics::from_settings(&settings.metrics, None);
    assert!(metrics.is_some(), "PATROL_OTLP_ENDPOINT builds a pipeline");
    let rt = AuditRuntime {
        clock: clock.clone(),
        store: store.clone(),
        state: engine.state.clone(),
        connector,
        audit: Default::default(),
        engine,
        audit_reader: None,
        metrics,
    };
    let T::MigrateGlobal(args) = T::try_parse_from(["t", "migrate-global", "--yes", "--format", "json"]).unwrap();
    let mut out = Vec::new();
    let code = audit_cmds::run_migrate_global(&rt, &args, &mut |_| panic!("--yes asks nothing"), &mut out).await;
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("\"replaced\""), "{out}");
    // Exported before the command returned (the CLI waits for its export within the flush bound).
    let pts = receiver.points_since(0);
    let count = |result: &str| {
        let p: Vec<&serde_json::Value> = pts
            .iter()
            .filter(|p| p["name"] == "patrol.run.tokens" && p["attributes"]["patrol.run.result"] == result)
            .collect();
        assert_eq!(p.len(), 1, "{result}: {pts:?}");
        assert_eq!(p[0]["attributes"]["patrol.run.dry_run"], false);
        p[0]["value"].as_f64().unwrap()
    };
    assert_eq!((count("rotated"), count("failed")), (1.0, 0.0), "{out}");
    let inv: Vec<&serde_json::Value> = pts.iter().filter(|p| p["name"] == "patrol.invocations").collect();
    assert_eq!(inv.len(), 1, "{pts:?}");
    assert_eq!(inv[0]["attributes"]["patrol.function"], "cli");
    assert_eq!(inv[0]["attributes"]["patrol.outcome"], "completed");
    let new_value = current_value(store.as_ref(), "old-global").await;
    assert_ne!(new_value, gvalue);
    for r in receiver.requests() {
        let text = r.to_string();
        assert!(!text.contains(&gvalue) && !text.contains(&new_value), "a PAT value was exported");
        assert!(!text.contains(OWNER), "a UPN was exported");
    }
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn cli_revoke_asks_first_and_audit_shows_findings() {
    use clap::Parser;
    use patrol::cli::audit_cmds::{self, AuditArgs, AuditRuntime, RevokeArgs};
    #[derive(Parser)]
    enum T {
        Audit(AuditArgs),
        Revoke(RevokeArgs),
    }
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES), (ADMIN, ADMIN_SCOPES)]).await;
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let (id, value) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    store_managed(store.as_ref(), "ci-build", id, "ci-build (patrol:0123456789ab)", &value, "vso.code").await;
    let policy = patrol::policy::audit::from_policy_text(
        "[[token]]\nsecret = \"ci-build\"\n[audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\n",
    )
    .unwrap();
    let engine = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("ci-build", "vso.code")], 2);
    let rt = AuditRuntime {
        clock: clock.clone(),
        store: store.clone(),
        state: engine.state.clone(),
        connector,
        audit: policy.resolve().unwrap(),
        engine,
        audit_reader: None,
        metrics: None,
    };
    env.use_pat(&value, "203.0.113.9", "curl/8.0").await;

    let T::Audit(a) =
        T::try_parse_from(["t", "audit", "--since", "1h", "--reader", ADMIN, "--format", "markdown"]).unwrap()
    else {
        panic!()
    };
    let mut out = Vec::new();
    assert_eq!(audit_cmds::run_audit(&rt, &a, &mut out).await.unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("`outside_cidr`") && text.contains("203.0.113.9"), "{text}");
    assert!(!text.contains(&value));
    let T::Audit(a) =
        T::try_parse_from(["t", "audit", "--since", "1h", "--reader", ADMIN, "--format", "json"]).unwrap()
    else {
        panic!()
    };
    let mut out = Vec::new();
    assert_eq!(audit_cmds::run_audit(&rt, &a, &mut out).await.unwrap(), 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    crate::schemas::assert_valid("audit", &v);
    assert!(v[0]["findings"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
    // Read-only: the timer's checkpoint was not written.
    assert!(rt.state.load(&patrol::audit::ingest::checkpoint_key(&org())).await.unwrap().is_none());

    let T::Revoke(r) = T::try_parse_from(["t", "revoke", "--org", "fabrikam", "--pat", &id.to_string()]).unwrap()
    else {
        panic!()
    };
    let mut asked = Vec::new();
    let mut out = Vec::new();
    let code = audit_cmds::run_revoke(
        &rt,
        &r,
        &mut |q: &str| {
            asked.push(q.to_owned());
            false
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, audit_cmds::EXIT_DECLINED);
    assert_eq!(asked.len(), 1, "confirmation was not asked");
    assert!(env.works(&value).await, "declined, yet revoked");
    let T::Revoke(r) =
        T::try_parse_from(["t", "revoke", "--org", "fabrikam", "--pat", &id.to_string(), "--yes", "--format", "json"])
            .unwrap()
    else {
        panic!()
    };
    let mut out = Vec::new();
    let code = audit_cmds::run_revoke(&rt, &r, &mut |_: &str| panic!("asked despite --yes"), &mut out).await.unwrap();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    crate::schemas::assert_valid("revoke", &v);
    assert_eq!(v["rows"][0]["outcome"], "revoked");
    assert_eq!(v["rows"][0]["secret"], "ci-build");
    assert!(!env.works(&value).await);
    env.emu.shutdown().await.unwrap();
}
