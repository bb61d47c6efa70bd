//! Stale and shared PATs against patrol-emulator (issue 21): consumers use PATs through the control API,
//! the virtual clock moves day by day past N days, patrol polls the audit log with its real client and
//! runs the stale/shared assessment and the announced revocation with its real connector.

use super::audit::{ADMIN, Env, OWNER};
use super::audit_breakglass::{ADMIN_SCOPES, OWNER_SCOPES};
use patrol::audit::context::{AuditContext, Lifecycle, PatrolAction};
use patrol::audit::ingest::{PollConfig, poll};
use patrol::audit::usage::{self, StalePolicy, StaleResponse, Step, UsagePat, UsageReport, Verdict};
use patrol::clock::Clock;
use patrol::devops::{Connector, DisplayFilter};
use patrol::domain::{AuthorizationId, OrgName, OwnerId};
use patrol::notify::Notice;
use patrol::policy::audit::AuditPolicy;
use patrol::state::{FileStateStore, StateStore};
use serde_json::{Value, json};

const ORG: &str = "fabrikam";

/// Creates a PAT valid for 200 days as OWNER through the real PAT API.
async fn create(env: &Env, name: &str) -> (AuthorizationId, String) {
    let token = env.token(OWNER, &["vso.pats", "vso.pats_manage"]).await;
    let valid_to = patrol_emulator::wire::format_time(env.emu.clock().now() + time::Duration::days(200));
    let v: Value = env
        .http
        .post(format!("{}/{ORG}/_apis/tokens/pats?api-version=7.2-preview.1", env.emu.endpoints().devops))
        .bearer_auth(token)
        .json(&json!({ "displayName": name, "scope": "vso.code", "validTo": valid_to, "allOrgs": false }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pat = &v["patToken"];
    (AuthorizationId::parse(pat["authorizationId"].as_str().unwrap()).unwrap(), pat["token"].as_str().unwrap().into())
}

/// A consumer's audited action with the PAT, optionally from a named pipeline.
async fn use_pat(env: &Env, secret: &str, ip: &str, ua: &str, pipeline: Option<&str>) {
    let data = pipeline.map(|p| json!({ "PipelineName": p })).unwrap_or(json!({}));
    env.ctl(
        "/_control/pats/use",
        json!({ "token": secret, "organization": ORG, "ipAddress": ip, "userAgent": ua, "data": data }),
    )
    .await;
}

async fn advance_days(env: &Env, clock: &Clock, days: i64) {
    env.ctl("/_control/clock/advance", json!({ "seconds": days * 86_400 })).await;
    clock.set(env.emu.clock().now());
}

/// One timer run: poll the log (fresh tokens: the clock moves on), list the owner's PATs, assess and respond.
async fn run_day(
    env: &Env,
    clock: &Clock,
    state: &FileStateStore,
    policy: &StalePolicy,
    actions: &[PatrolAction],
) -> UsageReport {
    // The emulator's clock also runs in real time: read the log up to now, so today's uses are in it.
    clock.set(env.emu.clock().now());
    let org = OrgName::parse(ORG).unwrap();
    let settings = AuditPolicy { stale: policy.clone(), ..Default::default() }.resolve().unwrap();
    let mut ctx = AuditContext::new();
    for a in actions {
        ctx.add_action(a.clone());
    }
    let client = env.audit_client(clock).await;
    poll(&client, state, &org, &settings, &mut ctx, PollConfig::default(), clock.now()).await.unwrap();
    let connector = env.connector(clock, &[(OWNER, OWNER_SCOPES), (ADMIN, ADMIN_SCOPES)]).await;
    let pats = inventory(connector.as_ref()).await;
    let listed = [(OwnerId::parse(OWNER).unwrap(), org.clone())].into();
    usage::run(state, connector.as_ref(), &pats, &listed, &settings.stale, &[], true, clock.now()).await
}

async fn inventory(connector: &dyn Connector) -> Vec<UsagePat> {
    let owner = OwnerId::parse(OWNER).unwrap();
    let org = OrgName::parse(ORG).unwrap();
    connector
        .pats(&owner, &org)
        .list(DisplayFilter::Active)
        .await
        .unwrap()
        .into_iter()
        .map(|p| UsagePat {
            global: p.is_global(),
            authorization_id: p.authorization_id,
            display_name: p.display_name,
            owner: owner.clone(),
            organization: org.clone(),
            secret: None,
            valid_from: p.valid_from,
            valid_to: p.valid_to,
            consumers: Vec::new(),
        })
        .collect()
}

fn verdict(r: &UsageReport, id: AuthorizationId) -> Option<&Verdict> {
    r.pats.iter().find(|p| p.authorization_id == id).map(|p| &p.verdict)
}

fn step(r: &UsageReport, id: AuthorizationId) -> Option<&Step> {
    r.steps.iter().find(|(i, _)| *i == id).map(|(_, s)| s)
}

#[tokio::test]
async fn daily_use_is_never_stale_unused_is_stale_after_n_watched_days_announced_then_revoked_unless_used() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let dir = tempfile::tempdir().unwrap();
    let state = FileStateStore::new(dir.path().join("state"));
    let policy =
        StalePolicy { days: 30, response: StaleResponse::Revoke, notice_days: 7, dry_run: false, keep: vec![] };
    let (daily_id, daily) = create(&env, "daily-sync").await;
    let (idle_id, idle) = create(&env, "old-nightly").await;
    let (shared_id, shared) = create(&env, "shared-deploy").await;
    // The PATs exist ten days before patrol starts watching: their quiet time before that proves nothing.
    advance_days(&env, &clock, 10).await;

    let mut announced_idle = None;
    let mut announced_shared = None;
    for day in 10..=50 {
        use_pat(&env, &daily, "10.20.0.5", "git/2.45", None).await;
        if day == 11 {
            use_pat(&env, &shared, "10.20.0.7", "AzurePipelines-Agent/3.248", Some("build-app")).await;
            use_pat(&env, &shared, "10.30.4.9", "AzurePipelines-Agent/3.248", Some("deploy-app")).await;
        }
        if day == 43 {
            // The owner keeps the announced shared PAT by using it.
            use_pat(&env, &shared, "10.20.0.7", "AzurePipelines-Agent/3.248", Some("build-app")).await;
        }
        let r = run_day(&env, &clock, &state, &policy, &[]).await;
        assert!(r.errors.is_empty(), "day {day}: {:?}", r.errors);
        assert_eq!(verdict(&r, daily_id), Some(&Verdict::Used), "day {day}: a PAT used every day is never stale");

        // Watched since day 9 (the first window reaches one day back): idle for 39 days before that
        // counts for nothing; stale only once the log has been watched 30 days.
        match verdict(&r, idle_id) {
            Some(Verdict::TooEarly { watched_days }) => {
                assert!(day < 39, "day {day}: still too early ({watched_days})")
            }
            Some(Verdict::NoAuditedUse { days }) => {
                assert!((39..=46).contains(&day), "day {day}: stale ({days})");
                if day == 39 {
                    assert!(matches!(step(&r, idle_id), Some(Step::Announce { .. })), "{:?}", r.steps);
                    let Notice::Finding { summary, action, evidence, .. } = &r.notices[0].notice else { panic!() };
                    assert!(summary.contains("old-nightly") && summary.contains("will revoke it on"), "{summary}");
                    assert!(action.contains("[audit.stale] keep") && action.contains("use it"), "{action}");
                    assert!(evidence.iter().any(|e| e.contains("evidence, not proof")), "{evidence:?}");
                    assert!(r.notices[0].targets.iter().any(|t| t.to_string().contains(OWNER)));
                    announced_idle = Some(day);
                } else if day == 46 {
                    // The notice period is over: revoked in this run.
                    assert_eq!(step(&r, idle_id), Some(&Step::Revoke { dry_run: false }));
                    assert!(!env.works_listed(&clock, idle_id).await, "not revoked when due");
                } else {
                    assert!(matches!(step(&r, idle_id), Some(Step::Wait { .. })), "day {day}: {:?}", r.steps);
                    assert!(env.works_listed(&clock, idle_id).await, "day {day}: revoked before the notice ended");
                }
                let row = r.rows.iter().find(|x| x.authorization_id == idle_id && x.kind == "no audited use").unwrap();
                assert!(row.evidence.iter().any(|e| e.contains("evidence, not proof")));
            }
            None => {
                assert!(day > 46, "day {day}: the idle PAT disappeared");
                assert!(!env.works_listed(&clock, idle_id).await);
            }
            other => panic!("day {day}: {other:?}"),
        }
        if day == 46 {
            assert_eq!(r.revoked.len(), 1, "{:?}", r.revoked);
            assert!(r.revoked[0].contains("old-nightly") && r.revoked[0].ends_with("revoked"));
        }

        // Used from two pipelines on day 11: listed as shared from then on, with the evidence.
        if day >= 11 {
            let row = r.rows.iter().find(|x| x.authorization_id == shared_id && x.kind == "shared");
            let row = row.unwrap_or_else(|| panic!("day {day}: not shown as shared: {:?}", r.rows));
            assert!(
                row.evidence.iter().any(|e| e.contains("2 pipelines: build-app, deploy-app")),
                "{:?}",
                row.evidence
            );
            assert!(row.what_to_do.contains("one managed token per consumer"));
        }
        assert!(!r.rows.iter().any(|x| x.authorization_id == daily_id), "day {day}: {:?}", r.rows);
        if day == 41 {
            assert!(matches!(step(&r, shared_id), Some(Step::Announce { .. })), "{:?}", r.steps);
            announced_shared = Some(day);
        }
        if day == 43 {
            assert!(matches!(step(&r, shared_id), Some(Step::Withdraw { .. })), "{:?}", r.steps);
        }
        advance_days(&env, &clock, 1).await;
    }
    assert_eq!((announced_idle, announced_shared), (Some(39), Some(41)));
    // Used meanwhile: never revoked.
    assert!(env.works_listed(&clock, shared_id).await && env.works_listed(&clock, daily_id).await);
    // No PAT value anywhere in the state patrol keeps.
    for f in walk(dir.path()) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for secret in [&daily, &idle, &shared] {
            assert!(!text.contains(secret.as_str()), "a PAT value in {}", f.display());
        }
    }
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn nothing_is_revoked_in_a_dry_run_or_while_auditing_looks_off() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let dir = tempfile::tempdir().unwrap();
    let state = FileStateStore::new(dir.path().join("state"));
    let dry = StalePolicy { days: 5, response: StaleResponse::Revoke, notice_days: 2, dry_run: true, keep: vec![] };
    let (idle_id, _idle) = create(&env, "forgotten").await;
    for day in 0..=7 {
        let r = run_day(&env, &clock, &state, &dry, &[]).await;
        if day == 5 {
            assert!(matches!(step(&r, idle_id), Some(Step::Announce { .. })), "{:?}", r.steps);
            let Notice::Finding { action, .. } = &r.notices[0].notice else { panic!() };
            assert!(action.contains("dry run"), "{action}");
        }
        if day == 7 {
            assert_eq!(step(&r, idle_id), Some(&Step::Revoke { dry_run: true }));
            assert!(r.revoked[0].contains("would be revoked now (dry run)"), "{:?}", r.revoked);
        }
        advance_days(&env, &clock, 1).await;
    }
    assert!(env.works_listed(&clock, idle_id).await, "a dry run revoked a PAT");

    // Dry run off, but auditing is switched off: patrol's own PAT change leaves no trace, the log looks off,
    // and the due revocation waits — there is no evidence either way.
    let live = StalePolicy { dry_run: false, ..dry };
    let r = env
        .http
        .put(format!("{}/_control/orgs/{ORG}/policy", env.emu.endpoints().control))
        .json(&json!({ "auditEnabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ours = PatrolAction {
        kind: Lifecycle::Create,
        organization: OrgName::parse(ORG).unwrap(),
        owner: OwnerId::parse(OWNER).unwrap(),
        display_name: "ci (patrol:0123456789ab)".into(),
        authorization_id: None,
        at: clock.now() + time::Duration::hours(1),
    };
    advance_days(&env, &clock, 1).await;
    for _ in 0..3 {
        let r = run_day(&env, &clock, &state, &live, std::slice::from_ref(&ours)).await;
        match verdict(&r, idle_id) {
            Some(Verdict::NoEvidence { reason }) => assert!(reason.contains("auditing looks switched off"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(step(&r, idle_id), Some(Step::Wait { .. })), "{:?}", r.steps);
        assert!(r.revoked.is_empty());
        advance_days(&env, &clock, 1).await;
    }
    assert!(env.works_listed(&clock, idle_id).await, "revoked while auditing looked off");
    env.emu.shutdown().await.unwrap();
}

/// A stale PAT announced for revocation, then revoked by someone else (its owner, in the portal) before the
/// notice period ends: the next run closes the notice with a record and tells the owner no action is needed —
/// no error, no revocation, nothing pending forever.
#[tokio::test]
async fn an_announced_pat_revoked_by_someone_else_closes_its_notice() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let dir = tempfile::tempdir().unwrap();
    let state = FileStateStore::new(dir.path().join("state"));
    let policy = StalePolicy { days: 5, response: StaleResponse::Revoke, notice_days: 7, dry_run: false, keep: vec![] };
    let (idle_id, _idle) = create(&env, "forgotten-script").await;
    let mut announced = false;
    for _ in 0..=7 {
        let r = run_day(&env, &clock, &state, &policy, &[]).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        if matches!(step(&r, idle_id), Some(Step::Announce { .. })) {
            announced = true;
            break;
        }
        advance_days(&env, &clock, 1).await;
    }
    assert!(announced, "the idle PAT was never announced");
    advance_days(&env, &clock, 2).await;
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES)]).await;
    connector.pats(&OwnerId::parse(OWNER).unwrap(), &OrgName::parse(ORG).unwrap()).revoke(idle_id).await.unwrap();

    let r = run_day(&env, &clock, &state, &policy, &[]).await;
    assert!(r.errors.is_empty() && r.revoked.is_empty(), "{:?} {:?}", r.errors, r.revoked);
    match step(&r, idle_id) {
        Some(Step::Close { why }) => assert!(why.contains("no longer among") && why.contains(OWNER), "{why}"),
        other => panic!("{other:?}: {:?}", r.steps),
    }
    assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
    let Notice::Finding { summary, action, severity, .. } = &r.notices[0].notice else { panic!() };
    assert_eq!(*severity, patrol::notify::Severity::Info);
    assert!(summary.contains("forgotten-script") && summary.contains("is closed"), "{summary}");
    assert!(action.contains("No action needed"), "{action}");
    assert!(r.notices[0].targets.iter().any(|t| t.to_string().contains(OWNER)));
    let (body, _) = state.load(usage::NOTICES_KEY).await.unwrap().unwrap();
    let notices: usage::Notices = serde_json::from_slice(&body).unwrap();
    assert!(notices.pending.is_empty(), "{notices:?}");
    let last = notices.closed.last().unwrap();
    assert_eq!(last.authorization_id, idle_id);
    assert!(last.outcome.starts_with("closed: "), "{}", last.outcome);

    // Closed once: the next runs say nothing more about it.
    advance_days(&env, &clock, 1).await;
    let r = run_day(&env, &clock, &state, &policy, &[]).await;
    assert!(step(&r, idle_id).is_none() && r.notices.is_empty(), "{:?} {:?}", r.steps, r.notices);
    env.emu.shutdown().await.unwrap();
}

/// `patrol audit` shows the stale, shared and dead PATs of the organizations it read, as `inventory` does, in
/// every format, with the caveat; it judges on the timer's checkpoint joined with the window it read, and
/// writes nothing.
#[tokio::test]
async fn patrol_audit_shows_the_stale_shared_dead_section_with_the_caveat() {
    use clap::Parser;
    use patrol::cli::audit_cmds::{self, AuditArgs, AuditRuntime};
    use patrol::store::SecretStore;
    use patrol::store::memory::MemoryStore;
    use std::sync::Arc;
    #[derive(Parser)]
    enum T {
        Audit(AuditArgs),
    }
    let env = Env::start().await;
    let (managed_id, managed) = create(&env, "ci-build (patrol:0123456789ab)").await;
    let (idle_id, _idle) = create(&env, "old-script").await;
    let clock = Clock::starting_at(env.emu.clock().now());
    advance_days(&env, &clock, 35).await;
    use_pat(&env, &managed, "10.20.0.5", "git/2.45", None).await;
    clock.set(env.emu.clock().now());
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES), (ADMIN, ADMIN_SCOPES)]).await;
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    super::audit_breakglass::store_managed(
        store.as_ref(),
        "ci-build",
        managed_id,
        "ci-build (patrol:0123456789ab)",
        &managed,
        "vso.code",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let engine = super::audit_breakglass::engine(
        dir.path(),
        store.clone(),
        connector.clone(),
        &clock,
        &[("ci-build", "vso.code")],
        2,
    );
    let audit = patrol::policy::audit::from_policy_text("[[token]]\nsecret = \"ci-build\"\n[audit]\n").unwrap();
    let rt = AuditRuntime {
        clock: clock.clone(),
        store,
        state: engine.state.clone(),
        connector,
        audit: audit.resolve().unwrap(),
        engine,
        audit_reader: None,
        metrics: None,
    };
    let run = |format: &'static str| {
        let T::Audit(a) =
            T::try_parse_from(["t", "audit", "--since", "40d", "--reader", ADMIN, "--format", format]).unwrap();
        a
    };
    let mut out = Vec::new();
    assert_eq!(audit_cmds::run_audit(&rt, &run("table"), &mut out).await.unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Stale, shared and dead PATs") && text.contains("evidence, not proof"), "{text}");
    assert!(text.contains("* no audited use \"old-script\"") && text.contains("what to do:"), "{text}");
    let section = &text[text.find("Stale, shared and dead PATs").unwrap()..];
    assert!(!section.contains("ci-build"), "the managed PAT was used today: {section}");
    assert!(!text.contains(&managed), "a PAT value in the output");

    let mut out = Vec::new();
    assert_eq!(audit_cmds::run_audit(&rt, &run("markdown"), &mut out).await.unwrap(), 0);
    let md = String::from_utf8(out).unwrap();
    assert!(md.contains("## Stale, shared and dead PATs") && md.contains("evidence, not proof"), "{md}");
    assert!(md.contains("| no audited use | old-script |"), "{md}");

    let mut out = Vec::new();
    assert_eq!(audit_cmds::run_audit(&rt, &run("json"), &mut out).await.unwrap(), 0);
    let v: Value = serde_json::from_slice(&out).unwrap();
    crate::schemas::assert_valid("audit", &v);
    let rows = v[0]["stale_shared_dead"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["kind"], "no audited use");
    assert_eq!(rows[0]["authorization_id"], idle_id.to_string());
    assert!(
        rows[0]["evidence"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("evidence, not proof"))
    );
    // Read-only: no checkpoint and no announcement written.
    let org = OrgName::parse(ORG).unwrap();
    assert!(rt.state.load(&patrol::audit::ingest::checkpoint_key(&org)).await.unwrap().is_none());
    assert!(rt.state.load(usage::NOTICES_KEY).await.unwrap().is_none());
    env.emu.shutdown().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

impl Env {
    /// Whether the PAT is still active, by listing the owner's PATs (no audited use is recorded).
    async fn works_listed(&self, clock: &Clock, id: AuthorizationId) -> bool {
        let connector = self.connector(clock, &[(OWNER, OWNER_SCOPES)]).await;
        inventory(connector.as_ref()).await.iter().any(|p| p.authorization_id == id)
    }
}
