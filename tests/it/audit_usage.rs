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
use patrol::state::FileStateStore;
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
    usage::run(state, connector.as_ref(), &pats, &settings.stale, &[], true, clock.now()).await
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
