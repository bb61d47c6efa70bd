//! Tests of every rule: each fires on the entry it is about, with its sentence, and stays quiet otherwise.

use super::*;
use crate::audit::context::{KnownPat, PatrolAction};
use crate::audit::entry::parse_page;
use crate::domain::{OrgName, SecretName};
use crate::notify::Severity;
use crate::policy::audit::AuditPolicy;
use serde_json::{Value, json};
use time::macros::datetime;

const MANAGED: &str = "11111111-1111-4111-8111-111111111111";
const OLD: &str = "22222222-2222-4222-8222-222222222222";
const OTHER: &str = "33333333-3333-4333-8333-333333333333";
const OWNER: &str = "build@contoso.com";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const NOW: OffsetDateTime = datetime!(2026-03-04 12:00 UTC);

fn aid(s: &str) -> AuthorizationId {
    AuthorizationId::parse(s).unwrap()
}

fn ctx() -> AuditContext {
    let mut c = AuditContext::new();
    let base = KnownPat {
        authorization_id: aid(MANAGED),
        display_name: "ci-build (patrol:0123456789ab)".into(),
        owner: OwnerId::parse(OWNER).unwrap(),
        organization: OrgName::parse("fabrikam").unwrap(),
        secret: Some(SecretName::parse("ci-build").unwrap()),
        valid_from: datetime!(2026-03-01 00:00 UTC),
        valid_to: datetime!(2026-04-01 00:00 UTC),
        scope: "vso.code".into(),
        global: false,
        status: PatStatus::Current,
    };
    c.add_pat(base.clone());
    c.add_pat(KnownPat {
        authorization_id: aid(OLD),
        display_name: "ci-build (patrol:aaaaaaaaaaaa)".into(),
        valid_from: datetime!(2026-02-10 00:00 UTC),
        status: PatStatus::Superseded {
            rotated_at: datetime!(2026-03-01 00:00 UTC),
            grace_ends: datetime!(2026-03-02 00:00 UTC),
        },
        ..base.clone()
    });
    c.add_pat(KnownPat {
        authorization_id: aid(OTHER),
        display_name: "alice laptop".into(),
        secret: None,
        valid_from: datetime!(2026-02-15 00:00 UTC),
        ..base
    });
    c.add_action(PatrolAction {
        kind: Lifecycle::Create,
        organization: OrgName::parse("fabrikam").unwrap(),
        owner: OwnerId::parse(OWNER).unwrap(),
        display_name: "ci-build (patrol:0123456789ab)".into(),
        authorization_id: Some(aid(MANAGED)),
        at: datetime!(2026-03-01 00:00 UTC),
    });
    c
}

fn entry(id: &str, ts: &str, action: &str, extra: Value) -> Value {
    let mut e = json!({
        "id": id, "timestamp": ts, "actionId": action, "area": action.split('.').next().unwrap(),
        "category": "modify", "actorUPN": OWNER, "actorDisplayName": "Build Account",
        "authenticationMechanism": "AAD", "ipAddress": "10.20.1.1", "userAgent": "azure-cli/2.60", "details": "",
        "data": {}
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut e, extra) {
        m.extend(x);
    }
    e
}

fn pat_use(id: &str, ts: &str, pat: &str, extra: Value) -> Value {
    let mut e = entry(
        id,
        ts,
        "Git.RefUpdatePoliciesBypassed",
        json!({
            "authenticationMechanism": format!("PAT_Unscoped authorizationId: {pat}")
        }),
    );
    if let (Value::Object(m), Value::Object(x)) = (&mut e, extra) {
        m.extend(x);
    }
    e
}

fn run_with(settings: &AuditSettings, c: &AuditContext, entries: Vec<Value>) -> (Vec<Finding>, EvalOutcome) {
    let body = serde_json::to_vec(&json!({"decoratedAuditLogEntries": entries, "hasMore": false})).unwrap();
    let mut out = Vec::new();
    let mut ev = Evaluator::new(settings, c, NOW);
    parse_page(&body, |e| ev.observe(&e.unwrap(), &mut |f| out.push(f))).unwrap();
    let outcome = ev.finish(&mut |f| out.push(f));
    (out, outcome)
}

fn settings(toml_text: &str) -> AuditSettings {
    #[derive(serde::Deserialize)]
    struct F {
        #[serde(default)]
        audit: AuditPolicy,
    }
    toml::from_str::<F>(toml_text).unwrap().audit.resolve().unwrap()
}

fn run(entries: Vec<Value>) -> Vec<Finding> {
    run_with(&settings("[audit]\nallowed_cidrs = [\"10.20.0.0/16\"]"), &ctx(), entries).0
}

fn rules(f: &[Finding]) -> Vec<RuleId> {
    f.iter().map(|f| f.rule).collect()
}

#[test]
fn ordinary_use_is_quiet() {
    let f = run(vec![
        pat_use("1", "2026-03-04T10:00:00Z", MANAGED, json!({})),
        pat_use("2", "2026-03-04T10:05:00Z", OTHER, json!({"ipAddress": "8.8.8.8", "userAgent": BROWSER})),
        entry("3", "2026-03-04T10:06:00Z", "Project.CreateCompleted", json!({})),
    ]);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn outside_cidr() {
    let f = run(vec![pat_use("1", "2026-03-04T10:00:00Z", MANAGED, json!({"ipAddress": "203.0.113.9"}))]);
    assert_eq!(rules(&f), vec![RuleId::OutsideCidr]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("203.0.113.9") && f[0].summary.contains("10.20.0.0/16"), "{}", f[0].summary);
    assert_eq!(f[0].secret().unwrap().as_str(), "ci-build");
    assert_eq!(f[0].evidence.entry_id, "1");
    // Unmanaged PATs only with include_unmanaged; no CIDRs configured: the rule cannot fire.
    let s =
        settings("[audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\n[audit.rules.outside_cidr]\ninclude_unmanaged = true");
    let (f, _) =
        run_with(&s, &ctx(), vec![pat_use("2", "2026-03-04T10:00:00Z", OTHER, json!({"ipAddress": "203.0.113.9"}))]);
    assert_eq!(rules(&f), vec![RuleId::OutsideCidr]);
    let (f, _) = run_with(
        &settings(""),
        &ctx(),
        vec![pat_use("3", "2026-03-04T10:00:00Z", MANAGED, json!({"ipAddress": "203.0.113.9"}))],
    );
    assert!(f.is_empty());
}

#[test]
fn outside_hours() {
    let s = settings(
        "[audit]\nallowed_hours = { start = \"07:00\", end = \"19:00\", days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"] }",
    );
    let (f, _) = run_with(
        &s,
        &ctx(),
        vec![
            pat_use("1", "2026-03-04T12:00:00Z", MANAGED, json!({})),
            pat_use("2", "2026-03-04T03:00:00Z", MANAGED, json!({})),
            pat_use("3", "2026-03-07T12:00:00Z", MANAGED, json!({})), // a Saturday
        ],
    );
    assert_eq!(rules(&f), vec![RuleId::OutsideHours, RuleId::OutsideHours]);
    assert_eq!(f[0].evidence.entry_id, "2");
    assert!(f[1].summary.contains("mon,tue,wed,thu,fri"), "{}", f[1].summary);
}

#[test]
fn browser_user_agent() {
    let f = run(vec![pat_use("1", "2026-03-04T10:00:00Z", MANAGED, json!({"userAgent": BROWSER}))]);
    assert_eq!(rules(&f), vec![RuleId::BrowserUserAgent]);
    assert!(f[0].summary.contains("Firefox"), "{}", f[0].summary);
}

#[test]
fn consumer_lag_names_the_caller() {
    let f = run(vec![
        pat_use("in-grace", "2026-03-01T12:00:00Z", OLD, json!({})),
        pat_use("late", "2026-03-03T09:00:00Z", OLD, json!({"ipAddress": "10.20.3.4", "userAgent": "legacy-job/1.0"})),
    ]);
    assert_eq!(rules(&f), vec![RuleId::ConsumerLag]);
    assert!(f[0].summary.contains("10.20.3.4") && f[0].summary.contains("legacy-job/1.0"), "{}", f[0].summary);
    assert_eq!(f[0].subject.as_ref().unwrap().authorization_id, Some(aid(OLD)));
}

#[test]
fn dormant_then_active_once_per_pat_on_the_earliest_use() {
    // OTHER was created 2025-12-01 and never seen: its first use in March wakes it up.
    let mut c = ctx();
    let mut old = c.pat(&aid(OTHER)).unwrap().clone();
    old.valid_from = datetime!(2025-12-01 00:00 UTC);
    c.add_pat(old);
    let (f, _) = run_with(
        &settings(""),
        &c,
        vec![
            pat_use("b", "2026-03-04T11:00:00Z", OTHER, json!({})),
            pat_use("a", "2026-03-04T10:00:00Z", OTHER, json!({})),
        ],
    );
    assert_eq!(rules(&f), vec![RuleId::DormantActive]);
    assert_eq!(f[0].evidence.entry_id, "a");
    assert!(f[0].summary.contains("93 days"), "{}", f[0].summary);
    // With a recent last use carried over from the previous poll: quiet, and the last use moves forward.
    let mut c = ctx();
    c.last_use.insert(
        aid(OTHER),
        LastUse {
            at: datetime!(2026-03-01 00:00 UTC),
            ip: "10.20.0.1".into(),
            user_agent: "x".into(),
            action_id: "Git.X".into(),
            entry_id: "z".into(),
        },
    );
    let (f, out) = run_with(&settings(""), &c, vec![pat_use("c", "2026-03-04T10:00:00Z", OTHER, json!({}))]);
    assert!(f.is_empty(), "{f:#?}");
    assert_eq!(out.last_use[&aid(OTHER)].entry_id, "c");
    assert_eq!(out.stats.pat_entries, 1);
}

#[test]
fn burst_fires_once_per_window_in_either_order() {
    let s = settings("[audit.rules.burst]\nmax_actions = 3\nwindow_minutes = 1");
    let mk = |n: usize, desc: bool| {
        (0..n)
            .map(|i| {
                let k = if desc { n - 1 - i } else { i };
                pat_use(&format!("e{k}"), &format!("2026-03-04T10:00:{:02}Z", k * 5), MANAGED, json!({}))
            })
            .collect::<Vec<_>>()
    };
    for desc in [false, true] {
        let (f, _) = run_with(&s, &ctx(), mk(4, desc));
        assert_eq!(rules(&f), vec![RuleId::Burst], "desc={desc}");
        let (f, _) = run_with(&s, &ctx(), mk(3, desc));
        assert!(f.is_empty(), "desc={desc}");
    }
    // Spread over more than the window: quiet.
    let spread: Vec<_> = (0..6)
        .map(|k| pat_use(&format!("s{k}"), &format!("2026-03-04T10:{:02}:00Z", k * 2), MANAGED, json!({})))
        .collect();
    assert!(run_with(&s, &ctx(), spread).0.is_empty());
}

#[test]
fn foreign_lifecycle_but_not_patrols_own() {
    let f = run(vec![
        // patrol's own create (matches the journaled action within tolerance): quiet.
        entry(
            "own",
            "2026-03-01T00:03:00Z",
            "Token.PatCreateEvent",
            json!({"data": {"DisplayName": "ci-build (patrol:0123456789ab)"}}),
        ),
        // someone else creates a PAT on the managed owner's account.
        entry(
            "foreign",
            "2026-03-04T09:00:00Z",
            "Token.PatCreateEvent",
            json!({"data": {"DisplayName": "my script"}, "ipAddress": "198.51.100.7"}),
        ),
        // a lifecycle event on an owner patrol does not manage: quiet.
        entry(
            "unrelated",
            "2026-03-04T09:00:00Z",
            "Token.PatCreateEvent",
            json!({"actorUPN": "bob@contoso.com", "data": {"DisplayName": "x"}}),
        ),
        // a revoke of the managed PAT that patrol did not do.
        entry(
            "revoke",
            "2026-03-04T09:30:00Z",
            "Token.PatRevokeEvent",
            json!({"data": {"DisplayName": "ci-build (patrol:0123456789ab)"}}),
        ),
    ]);
    assert_eq!(rules(&f), vec![RuleId::ForeignLifecycle, RuleId::ForeignLifecycle]);
    assert_eq!(f[0].evidence.entry_id, "foreign");
    assert!(f[0].summary.contains("\"my script\"") && f[0].summary.contains("build@contoso.com"), "{}", f[0].summary);
    assert_eq!(f[1].secret().unwrap().as_str(), "ci-build", "matched to the managed PAT by name");
    assert!(f[1].summary.contains("revoked"));
}

#[test]
fn leak_events_are_critical() {
    let f = run(vec![
        entry(
            "d",
            "2026-03-04T09:00:00Z",
            "Token.PatPublicDiscoveryEvent",
            json!({"actorUPN": "", "authenticationMechanism": "",
            "data": {"DisplayName": "ci-build (patrol:0123456789ab)", "OwnerName": OWNER}}),
        ),
        entry(
            "r",
            "2026-03-04T09:01:00Z",
            "Token.PatSystemRevokeEvent",
            json!({"actorUPN": "", "authenticationMechanism": "",
            "data": {"DisplayName": "someone else's", "OwnerName": "Carol"}}),
        ),
    ]);
    assert_eq!(rules(&f), vec![RuleId::Leak, RuleId::Leak]);
    assert!(f.iter().all(|f| f.severity == Severity::Critical));
    assert_eq!(f[0].secret().unwrap().as_str(), "ci-build");
    assert!(
        f[0].summary.contains("public repository") && f[0].summary.contains("managed by patrol"),
        "{}",
        f[0].summary
    );
    assert!(f[1].secret().is_none());
    assert!(f[1].summary.contains("Carol"), "{}", f[1].summary);
}

#[test]
fn broad_pats_from_data_or_inventory() {
    let f = run(vec![
        entry(
            "full",
            "2026-03-04T09:00:00Z",
            "Token.PatCreateEvent",
            json!({"actorUPN": "bob@contoso.com", "data": {"DisplayName": "all", "Scope": "app_token"}}),
        ),
        entry(
            "global",
            "2026-03-04T09:00:00Z",
            "Token.PatUpdateEvent",
            json!({"actorUPN": "bob@contoso.com", "data": {"DisplayName": "g", "AllOrgs": true}}),
        ),
        entry(
            "narrow",
            "2026-03-04T09:00:00Z",
            "Token.PatCreateEvent",
            json!({"actorUPN": "bob@contoso.com", "data": {"DisplayName": "n", "Scope": "vso.code vso.build"}}),
        ),
    ]);
    assert_eq!(rules(&f), vec![RuleId::BroadPat, RuleId::BroadPat]);
    assert!(f[0].summary.contains("full-access"));
    assert!(f[1].summary.contains("all organizations") && f[1].summary.contains("2026-12-01"));
    // Inventory says a known PAT is global although the event has no data.
    let mut c = ctx();
    let mut g = c.pat(&aid(OTHER)).unwrap().clone();
    g.global = true;
    c.add_pat(g);
    let (f, _) = run_with(
        &settings(""),
        &c,
        vec![entry(
            "inv",
            "2026-03-04T09:00:00Z",
            "Token.PatCreateEvent",
            json!({"data": {"DisplayName": "alice laptop"}}),
        )],
    );
    assert_eq!(rules(&f), vec![RuleId::BroadPat, RuleId::ForeignLifecycle]);
}

#[test]
fn policy_changes_and_tampering() {
    let f = run(vec![
        entry(
            "p",
            "2026-03-04T09:00:00Z",
            "OrganizationPolicy.PolicyValueUpdated",
            json!({"data": {"PolicyName": "Restrict global personal access token creation", "PolicyValue": "false"}}),
        ),
        entry(
            "a",
            "2026-03-04T09:00:00Z",
            "OrganizationPolicy.PolicyValueUpdated",
            json!({"data": {"PolicyName": "Log Audit Events", "PolicyValue": "Off"}}),
        ),
        entry("s", "2026-03-04T09:00:00Z", "AuditLog.StreamDeleted", json!({})),
        entry("sys", "2026-03-04T09:00:00Z", "AuditLog.StreamDisabledBySystem", json!({})),
        entry("read", "2026-03-04T09:00:00Z", "AuditLog.AccessLog", json!({})),
    ]);
    assert_eq!(
        rules(&f),
        vec![RuleId::PolicyChange, RuleId::AuditTampering, RuleId::AuditTampering, RuleId::AuditTampering]
    );
    assert!(f[0].summary.contains("Restrict global"), "{}", f[0].summary);
    assert_eq!(f[1].severity, Severity::Critical);
    assert!(f[2].summary.contains("deleted") && f[3].summary.contains("disabled"));
}

#[test]
fn disabled_rules_and_severity_overrides() {
    let s = settings(
        "[audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\n[audit.rules.outside_cidr]\nenabled = false\n[audit.rules.browser_user_agent]\nseverity = \"info\"",
    );
    let (f, out) = run_with(
        &s,
        &ctx(),
        vec![pat_use("1", "2026-03-04T10:00:00Z", MANAGED, json!({"ipAddress": "203.0.113.9", "userAgent": BROWSER}))],
    );
    assert_eq!(rules(&f), vec![RuleId::BrowserUserAgent]);
    assert_eq!(f[0].severity, Severity::Info);
    assert_eq!(out.stats, EvalStats { entries: 1, pat_entries: 1, findings: 1 });
}

#[test]
fn evaluate_convenience_matches_streaming() {
    let body = serde_json::to_vec(&json!({"decoratedAuditLogEntries": [
        pat_use("1", "2026-03-04T10:00:00Z", MANAGED, json!({"userAgent": BROWSER}))
    ]}))
    .unwrap();
    let mut entries = Vec::new();
    parse_page(&body, |e| entries.push(e.unwrap())).unwrap();
    let (f, out) = evaluate(entries, &AuditSettings::default(), &ctx(), NOW);
    assert_eq!(rules(&f), vec![RuleId::BrowserUserAgent]);
    assert_eq!(f[0].detected_at, NOW);
    assert_eq!(out.stats.findings, 1);
}

#[test]
fn revoking_a_drained_previous_pat_is_patrols_own_step() {
    let f = run(vec![
        // patrol drains the superseded PAT after its grace ended (2026-03-02): expected, quiet.
        entry(
            "drain",
            "2026-03-02T03:00:00Z",
            "Token.PatRevokeEvent",
            json!({"data": {"DisplayName": "ci-build (patrol:aaaaaaaaaaaa)", "AuthorizationId": OLD}}),
        ),
        // the same PAT revoked a day before its grace ended: someone else did it.
        entry(
            "early",
            "2026-03-01T01:00:00Z",
            "Token.PatRevokeEvent",
            json!({"data": {"DisplayName": "ci-build (patrol:aaaaaaaaaaaa)", "AuthorizationId": OLD}}),
        ),
    ]);
    assert_eq!(rules(&f), vec![RuleId::ForeignLifecycle], "{f:#?}");
    assert_eq!(f[0].evidence.entry_id, "early");
}
