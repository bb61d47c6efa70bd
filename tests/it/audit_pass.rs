//! The timer's audit pass and the weekly report against patrol-emulator: policy and audit-stream changes
//! recorded through the control API, a managed PAT used from outside the allowed ranges (critical → rotate
//! now through the rotation engine's journaled state machine), the notices with their outcomes, the findings log, and the
//! weekly report delivered to a mailbox file exactly once a week.

use super::audit::{ADMIN, Env, OWNER};
use super::audit_breakglass::{ADMIN_SCOPES, OWNER_SCOPES, engine, store_managed};
use patrol::audit::context::{Lifecycle, PatrolAction};
use patrol::audit::ingest::PollConfig;
use patrol::audit::managed::managed_pats;
use patrol::audit::pass::{PassInput, audit_pass};
use patrol::audit::weekly::{self, WeeklyOutcome};
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::domain::{OrgName, OwnerId, SecretName};
use patrol::notify::{Notice, Notifier, Target};
use patrol::policy::audit::{AuditPolicy, RuleId};
use patrol::report;
use patrol::state::{FileStateStore, StateStore};
use patrol::store::SecretStore;
use patrol::store::memory::MemoryStore;
use secrecy::ExposeSecret;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[tokio::test]
async fn timer_pass_detects_tampering_rotates_on_critical_and_sends_the_weekly_report_once() {
    let env = Env::start().await;
    let clock = Clock::starting_at(env.emu.clock().now());
    let connector = env.connector(&clock, &[(OWNER, OWNER_SCOPES), (ADMIN, ADMIN_SCOPES)]).await;
    let store: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateStore> = Arc::new(FileStateStore::new(dir.path().join("state")));
    let (id, value) = env.create_pat(OWNER, "ci-build (patrol:0123456789ab)", "vso.code").await;
    store_managed(store.as_ref(), "ci-build", id, "ci-build (patrol:0123456789ab)", &value, "vso.code").await;

    // What happens in the organization: an admin loosens a policy, the audit stream is deleted, and the
    // managed PAT is used from an address outside the allowed ranges.
    let admin_action = |action: &str| json!({ "actionId": action, "actorUpn": ADMIN, "ipAddress": "198.51.100.7" });
    env.ctl("/_control/orgs/fabrikam/audit", admin_action("OrganizationPolicy.PolicyValueUpdated")).await;
    env.ctl("/_control/orgs/fabrikam/audit", admin_action("AuditLog.StreamDeleted")).await;
    env.use_pat(&value, "203.0.113.9", "git/2.45").await;
    env.ctl("/_control/clock/advance", json!({ "seconds": 60 })).await;
    clock.set(env.emu.clock().now());

    let policy: AuditPolicy = toml::from_str(
        "allowed_cidrs = [\"10.20.0.0/16\"]\nnotify = [\"email:security@fabrikam.test\"]\nresponse = { critical = \"rotate\" }",
    )
    .unwrap();
    let settings = policy.resolve().unwrap();
    let managed = managed_pats(store.as_ref()).await.unwrap();
    // "Rotate now" is the engine's compromise rotation (the current version was stored outside patrol: the
    // engine adopts it first), then the suspect revoked.
    let rotator = engine(dir.path(), store.clone(), connector.clone(), &clock, &[("ci-build", "vso.code")], 2);
    let targets_for = |_: &SecretName| vec![Target::parse("email:build-team@fabrikam.test").unwrap()];
    let mut readers = BTreeMap::new();
    readers.insert(OrgName::parse("fabrikam").unwrap(), OwnerId::parse(ADMIN).unwrap());
    let input = PassInput {
        settings: &settings,
        managed: &managed,
        // patrol created the managed PAT itself (the rotation journal says so): not a foreign lifecycle event.
        actions: vec![PatrolAction {
            kind: Lifecycle::Create,
            organization: OrgName::parse("fabrikam").unwrap(),
            owner: OwnerId::parse(OWNER).unwrap(),
            display_name: "ci-build (patrol:0123456789ab)".into(),
            authorization_id: Some(id),
            at: clock.now(),
        }],
        readers,
        default_reader: None,
        targets_for: &targets_for,
        poll: PollConfig::default(),
        unwatched: &[],
        only: &[],
        respond: true,
    };
    let summary =
        audit_pass(connector.as_ref(), state.as_ref(), connector.as_ref(), rotator.as_ref(), input, clock.now()).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let mut rules: Vec<RuleId> = summary.findings.iter().map(|f| f.rule).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![RuleId::OutsideCidr, RuleId::PolicyChange, RuleId::AuditTampering],
        "{:#?}",
        summary.findings
    );

    // Critical outside_cidr → rotated now: a new value is stored and works; the suspect is revoked.
    assert_eq!(summary.executed.len(), 1, "{:#?}", summary.executed);
    assert!(summary.executed[0].outcome.is_ok(), "{:?}", summary.executed[0].outcome);
    let new_value = store
        .get(&SecretName::parse("ci-build").unwrap(), None)
        .await
        .unwrap()
        .unwrap()
        .value
        .expose_secret()
        .to_owned();
    assert_ne!(new_value, value);
    assert!(env.works(&new_value).await && !env.works(&value).await);
    // The notice reports the action with its outcome and goes to the policy's and the token's recipients.
    let rotated = summary
        .notices
        .iter()
        .find(|a| matches!(&a.notice, Notice::Finding { rule, .. } if rule == "outside_cidr"))
        .unwrap();
    let Notice::Finding { action, evidence, .. } = &rotated.notice else { unreachable!() };
    assert!(action.contains("rotate ci-build now") && action.contains("— done:"), "{action}");
    assert!(evidence.iter().any(|e| e.contains("203.0.113.9")), "{evidence:?}");
    assert_eq!(rotated.targets.len(), 2);
    let json = serde_json::to_string(&summary).unwrap();
    assert!(!json.contains(&value) && !json.contains(&new_value), "a PAT value in the pass summary");

    // The weekly report: sent once to the recipients (mailbox file), with the week's findings.
    let mbox = dir.path().join("mail.mbox");
    let settings = Settings::from_source(&Source::from_pairs([
        ("PATROL_MAILBOX_FILE", mbox.to_str().unwrap()),
        ("PATROL_REPORT_RECIPIENTS", "email:security@fabrikam.test"),
    ]))
    .unwrap();
    let notifier = Notifier::from_settings(&settings, None, Some(state.clone()), clock.clone()).await;
    let recipients = settings.notify.report_recipients.clone();
    let now = clock.now();
    let findings = weekly::findings_since(state.as_ref(), now - weekly::PERIOD).await.unwrap();
    assert_eq!(findings.len(), 3);
    let managed = managed_pats(store.as_ref()).await.unwrap();
    let pats = weekly::managed_rows(&managed, &rotator.policy, now);
    let model = |now, pats: &[report::PatRow], findings: &[report::LoggedFinding]| {
        report::weekly(report::build(report::Inputs {
            title: String::new(),
            now,
            policy: &rotator.policy,
            pats,
            listing: &[],
            journals: &[],
            events: &[],
            findings,
            consumers: vec![],
            usage: vec![],
        }))
    };
    let data = || model(now, &pats, &findings);
    let sent = weekly::send_if_due(state.as_ref(), &notifier, &recipients, now, data).await.unwrap();
    assert!(matches!(sent, WeeklyOutcome::Sent { delivered: 1, .. }), "{sent:?}");
    let mail = std::fs::read_to_string(&mbox).unwrap();
    assert!(mail.contains("patrol weekly report") && mail.contains("security@fabrikam.test"));
    assert!(
        mail.contains("audit stream") || mail.contains("AuditLog.StreamDeleted"),
        "findings missing from the report"
    );
    assert!(!mail.contains(&value) && !mail.contains(&new_value));
    let again =
        weekly::send_if_due(state.as_ref(), &notifier, &recipients, now + time::Duration::days(1), data).await.unwrap();
    assert!(matches!(again, WeeklyOutcome::NotDue { .. }), "{again:?}");
    let next_week = now + time::Duration::days(7);
    let data2 = || model(next_week, &[], &[]);
    let third = weekly::send_if_due(state.as_ref(), &notifier, &recipients, next_week, data2).await.unwrap();
    assert!(matches!(third, WeeklyOutcome::Sent { .. }), "{third:?}");
    env.emu.shutdown().await.unwrap();
}
