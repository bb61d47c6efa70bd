//! Engine and state-machine tests on a fixed clock with the real file secret store and the real file
//! journal, and an in-memory Azure DevOps ([`super::fake`]) until patrol-emulator's DevOps side runs.

use super::engine::{Engine, RunOptions, SecretEvent, SecretEventKind};
use super::fake::{FakeDevOps, FlakyStore};
use super::journal::{self, parse_marker};
use super::lease::LocalLeases;
use super::machine::{Boundary, Faults};
use super::policy::Policy;
use crate::clock::Clock;
use crate::domain::{AuthorizationId, SecretName};
use crate::notify::Notice;
use crate::state::FileStateStore;
use crate::store::{FileSecretStore, SecretStore, tags};
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use time::Duration;
use time::macros::datetime;

struct World {
    _dir: tempfile::TempDir,
    clock: Clock,
    devops: FakeDevOps,
    store: Arc<FlakyStore<FileSecretStore>>,
    state: Arc<FileStateStore>,
    leases: Arc<LocalLeases>,
    policy: Arc<Policy>,
}

fn policy_text(n: usize) -> String {
    let mut text = String::from(
        "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\nnotify = [\"email:ops@contoso.com\"]\n",
    );
    for i in 0..n {
        // Mixed policies: 30/7/2, 14/3/1, 90/14/5, 7/2/0.
        let (v, r, g) = [(30, 7, 2), (14, 3, 1), (90, 14, 5), (7, 2, 0)][i % 4];
        text.push_str(&format!(
            "[[token]]\nsecret = \"tok-{i}\"\ndisplay_name = \"Token {i}\"\nvalidity_days = {v}\nrotate_before_days = {r}\ngrace_days = {g}\n"
        ));
    }
    text
}

fn world(n: usize) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(datetime!(2027-01-01 03:00 UTC));
    let fs = FileSecretStore::open(dir.path().join("vault"), &dir.path().join("store.key"), clock.clone()).unwrap();
    World {
        clock: clock.clone(),
        devops: FakeDevOps::new(clock),
        store: Arc::new(FlakyStore::new(fs)),
        state: Arc::new(FileStateStore::new(dir.path().join("state"))),
        leases: Arc::new(LocalLeases::default()),
        policy: Arc::new(Policy::parse(Path::new("patrol.toml"), &policy_text(n)).unwrap()),
        _dir: dir,
    }
}

impl World {
    fn engine(&self, faults: Option<Faults>) -> Engine {
        Engine::new(
            self.policy.clone(),
            Arc::new(self.devops.clone()),
            self.store.clone(),
            self.state.clone(),
            self.clock.clone(),
        )
        .with_leases(self.leases.clone())
        .with_concurrency(4)
        .with_faults(faults.map(Arc::new))
    }

    async fn run(&self) -> super::engine::RunSummary {
        self.engine(None).run(RunOptions::default()).await.unwrap()
    }

    fn secret(i: usize) -> SecretName {
        SecretName::parse(&format!("tok-{i}")).unwrap()
    }

    /// The authorization id the current version names, after checking the stored value is that PAT's.
    async fn current(&self, i: usize) -> Option<AuthorizationId> {
        let s = self.store.get(&Self::secret(i), None).await.unwrap()?;
        let id = AuthorizationId::parse(&s.properties.tags[tags::AUTHORIZATION_ID]).unwrap();
        assert_eq!(
            self.devops.token_of(id).as_deref(),
            Some(s.value.expose_secret()),
            "vault value is the PAT it names"
        );
        Some(id)
    }

    /// Every invariant that must hold between runs for token `i`.
    async fn check(&self, i: usize) {
        let now = self.clock.now();
        let id = self.current(i).await.expect("every token has a current secret");
        let active: Vec<_> = self
            .devops
            .active()
            .into_iter()
            .filter(|p| p.pat.display_name.starts_with(&format!("Token {i} ")))
            .collect();
        let cur = active.iter().find(|p| p.pat.authorization_id == id).expect("the current PAT is active");
        assert!(cur.pat.valid_to > now);
        let j = journal::load(self.state.as_ref(), &Self::secret(i)).await.unwrap().journal;
        assert!(j.operation.is_none(), "no rotation left half-done: {:?}", j.operation);
        for p in &active {
            if p.pat.authorization_id == id {
                continue;
            }
            // Any other active PAT must be a previous one still within its grace.
            let d = j.drains.iter().find(|d| d.pat.authorization_id == p.pat.authorization_id);
            assert!(
                d.is_some_and(|d| d.revoke_after > now - Duration::days(1)),
                "token {i}: stray active PAT {:?}",
                p.pat.display_name
            );
        }
    }
}

#[tokio::test]
async fn first_run_creates_then_nothing_until_due() {
    let w = world(2);
    let s = w.run().await;
    assert_eq!(s.rotated, 2, "{}", s.line());
    assert_eq!(w.devops.lock().creates, 2);
    w.check(0).await;
    let again = w.run().await;
    assert_eq!(again.rotated, 0);
    assert!(again.plan.entries.iter().all(|e| e.is_noop()), "{}", again.plan.table());
    // The written version carries patrol's tags.
    let v = w.store.get(&World::secret(0), None).await.unwrap().unwrap().properties;
    assert_eq!(v.tags[tags::MANAGED_BY], "patrol");
    let (base, op) = parse_marker(&v.tags[tags::DISPLAY_NAME]).unwrap();
    assert_eq!(base, "Token 0");
    assert_eq!(v.tags[tags::OPERATION_ID], op.as_str());
}

#[tokio::test]
async fn a_simulated_year_of_daily_runs() {
    let w = world(4);
    let mut rotations = 0usize;
    for day in 0..365 {
        let s = w.run().await;
        assert_eq!(s.failed, 0, "day {day}: {:?}", s.reports);
        rotations += s.rotated;
        for i in 0..4 {
            w.check(i).await;
        }
        w.clock.advance(Duration::days(1));
    }
    // Each rotation made exactly one PAT; nothing else was created.
    assert_eq!(w.devops.lock().creates as usize, rotations);
    // Roughly 365 / (validity - rotate_before) rotations per token.
    assert!(rotations > 4 * 10, "{rotations}");
}

#[tokio::test]
async fn crash_at_every_boundary_converges() {
    for b in Boundary::ALL {
        let w = world(1);
        w.run().await; // first PAT
        let first = w.current(0).await.unwrap();
        w.clock.advance(Duration::days(24)); // due (30/7)
        let r = w.engine(Some(Faults::crash_after(b))).run(RunOptions::default()).await;
        let crashed = matches!(r, Err(super::engine::EngineError::Crashed(x)) if x == b);
        if !crashed {
            // The boundaries after the rotation need the grace to end first.
            assert!(matches!(b, Boundary::PreviousRevoked | Boundary::PreviousDisabled), "{b:?}: {r:?}");
            w.clock.advance(Duration::days(3));
            let r = w.engine(Some(Faults::crash_after(b))).run(RunOptions::default()).await;
            assert!(matches!(r, Err(super::engine::EngineError::Crashed(x)) if x == b), "{b:?}: {r:?}");
        }
        // Restarted processes converge.
        for _ in 0..2 {
            let s = w.run().await;
            assert_eq!(s.failed, 0, "{b:?}: {:?}", s.reports);
        }
        w.clock.advance(Duration::days(3));
        w.run().await;
        w.check(0).await;
        let now_current = w.current(0).await.unwrap();
        assert_ne!(now_current, first, "{b:?}: rotated");
        let active: Vec<_> = w.devops.active();
        assert_eq!(
            active.len(),
            1,
            "{b:?}: exactly one live PAT, got {:?}",
            active.iter().map(|p| &p.pat.display_name).collect::<Vec<_>>()
        );
        assert!(w.devops.lock().pats[&first].revoked, "{b:?}: previous revoked");
        // The previous version is disabled, the current one enabled.
        let versions = w.store.list_versions(&World::secret(0)).await.unwrap();
        for v in versions {
            let names_first = v.tags.get(tags::AUTHORIZATION_ID).is_some_and(|s| *s == first.to_string());
            if names_first {
                assert!(!v.enabled, "{b:?}: previous version disabled");
            }
        }
    }
}

#[tokio::test]
async fn store_failure_revokes_the_new_pat_at_once() {
    let w = world(1);
    w.run().await;
    let first = w.current(0).await.unwrap();
    w.clock.advance(Duration::days(24));
    w.store.fail_sets.store(1, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.failed, 1);
    assert!(s.notices.iter().any(|n| matches!(&n.notice, Notice::RotationFailed { step, .. } if step == "store")));
    assert_eq!(w.current(0).await, Some(first), "the current secret is untouched");
    let st = w.devops.lock().pats.clone();
    assert_eq!(st.values().filter(|p| !p.revoked).count(), 1, "the new PAT was revoked");
    assert!(!st[&first].revoked);
    drop(st);
    let s = w.run().await;
    assert_eq!(s.rotated, 1);
    w.check(0).await;
}

#[tokio::test]
async fn a_lost_store_answer_is_not_mistaken_for_a_failure() {
    let w = world(1);
    w.store.lose_set_answers.store(1, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.rotated, 1, "{:?}", s.reports);
    assert!(s.reports[0].revoked.is_empty(), "the stored PAT must not be revoked");
    w.check(0).await;
}

#[tokio::test]
async fn lost_create_answers_are_reconciled_by_marker() {
    let w = world(1);
    w.devops.lose_create_answers.store(2, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.rotated, 1, "{:?}", s.reports);
    assert_eq!(s.reports[0].revoked.len(), 2, "both PATs whose answers were lost are revoked");
    assert_eq!(w.devops.lock().creates, 3);
    assert_eq!(w.devops.active().len(), 1);
    w.check(0).await;
}

#[tokio::test]
async fn lifespan_clamping_is_reported() {
    let w = world(1);
    w.devops.max_lifespan_days.store(10, Ordering::SeqCst);
    let s = w.run().await;
    let done = s.reports[0].rotated.clone().unwrap();
    assert_eq!(done.drift.len(), 1, "{:?}", done.drift);
    assert!(done.drift[0].contains("clamped"));
    assert!(s.notices.iter().any(|n| matches!(&n.notice, Notice::Finding { rule, .. } if rule == "rotation-drift")));
    // Clamped to 10 days: due again after 3 (rotate_before 7).
    w.clock.advance(Duration::days(4));
    assert_eq!(w.run().await.rotated, 1);
}

#[tokio::test]
async fn concurrent_triggers_rotate_once() {
    let w = world(1);
    w.run().await;
    w.clock.advance(Duration::days(24));
    let (a, b) = (w.engine(None), w.engine(None));
    let (x, y) = tokio::join!(a.rotate_one("tok-0", true, false, None), b.run(RunOptions::default()));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.rotated + y.rotated, 1, "{} / {}", x.line(), y.line());
    assert_eq!(w.devops.lock().creates, 2);
    assert_eq!(w.store.list_versions(&World::secret(0)).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sign_in_required_blocks_and_alerts() {
    let w = world(1);
    w.devops.sign_in_required.store(true, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.rotated, 0);
    assert!(s.notices.iter().any(|n| matches!(n.notice, Notice::SignInRequired { .. })));
    assert_eq!(w.devops.lock().creates, 0);
    w.devops.sign_in_required.store(false, Ordering::SeqCst);
    assert_eq!(w.run().await.rotated, 1);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_unknown_secrets_are_refused() {
    let w = world(1);
    let e = w.engine(None);
    let s = e.run(RunOptions { dry_run: true, ..Default::default() }).await.unwrap();
    assert!(s.dry_run);
    assert_eq!(s.plan.entries[0].rotation(), Some(super::journal::Reason::Missing));
    assert_eq!(w.devops.lock().creates, 0);
    assert!(w.store.get(&World::secret(0), None).await.unwrap().is_none());
    assert!(matches!(e.rotate_one("nope", true, false, None).await, Err(super::engine::EngineError::UnknownSecret(_))));
    assert!(matches!(e.rotate_one("../x", true, false, None).await, Err(super::engine::EngineError::UnknownSecret(_))));
}

#[tokio::test]
async fn events_own_versions_ignored_out_of_band_adopted_expired_rotated() {
    let w = world(1);
    w.run().await;
    let e = w.engine(None);
    let cur = w.store.get(&World::secret(0), None).await.unwrap().unwrap().properties;
    let ev = |kind, version: &str| SecretEvent {
        kind,
        vault: "kv".into(),
        secret: "tok-0".into(),
        version: Some(version.into()),
    };
    // patrol's own version: ignored, and so is a duplicate.
    for _ in 0..2 {
        let s = e.on_event(&ev(SecretEventKind::NewVersionCreated, &cur.version), false, None).await.unwrap();
        assert!(s.ignored.as_deref().unwrap().contains("patrol itself"), "{:?}", s.ignored);
    }
    // Unmanaged secrets and unknown vaults are ignored.
    let mut other = ev(SecretEventKind::Expired, &cur.version);
    other.secret = "someone-else".into();
    assert!(e.on_event(&other, false, None).await.unwrap().ignored.is_some());

    // Out of band: someone stores a PAT made by hand, tagged with its authorization id.
    let hand = w.devops.connector_create("Token 0 by hand").await;
    let mut t = std::collections::BTreeMap::new();
    t.insert(tags::AUTHORIZATION_ID.to_owned(), hand.0.to_string());
    let v = w
        .store
        .set(&World::secret(0), &hand.1, crate::store::NewVersion { tags: t, ..Default::default() })
        .await
        .unwrap();
    let s = e.on_event(&ev(SecretEventKind::NewVersionCreated, &v.version), false, None).await.unwrap();
    assert!(s.notices.iter().any(|n| matches!(n.notice, Notice::OutOfBandChange { .. })), "{:?}", s.reports);
    assert_eq!(w.current(0).await, Some(hand.0));
    // An old version's event arriving late is harmless.
    let s = e.on_event(&ev(SecretEventKind::NearExpiry, &cur.version), false, None).await.unwrap();
    assert!(s.ignored.unwrap().contains("no longer current"));
    // Expired on the current version: rotate now, alert.
    let s = e.on_event(&ev(SecretEventKind::Expired, &v.version), false, None).await.unwrap();
    assert_eq!(s.rotated, 1, "{:?}", s.reports);
    assert!(s.notices.iter().any(|n| matches!(n.notice, Notice::PatExpired { .. })));
    // The adopted PAT is drained, not revoked at once.
    assert!(!w.devops.lock().pats[&hand.0].revoked);
}

impl FakeDevOps {
    /// A PAT created by hand (outside patrol) for the default owner.
    async fn connector_create(&self, name: &str) -> (AuthorizationId, secrecy::SecretString) {
        use crate::devops::{Connector, CreatePat};
        let api = self.pats(&"svc@contoso.com".parse().unwrap(), &"fabrikam".parse().unwrap());
        let c = api
            .create(&CreatePat {
                display_name: name.parse().unwrap(),
                scopes: "vso.code".parse().unwrap(),
                valid_to: self.clock.now() + Duration::days(30),
                all_orgs: false,
            })
            .await
            .unwrap();
        (c.pat.authorization_id, c.token)
    }
}

/// The failed-invocation rule (`rotation::verdict`): failures that leave a token needing a new PAT now
/// fail the run; a not-yet-due token blocked on sign-in does not (it is alerted and retried), until it is due.
#[tokio::test]
async fn runs_that_leave_tokens_at_risk_fail_and_others_do_not() {
    let w = world(4);
    let first = w.run().await;
    assert_eq!((first.rotated, first.failed), (4, 0), "{}", first.line());
    assert!(first.at_risk.is_empty(), "{:?}", first.at_risk);
    // Every token's rotation fails (the vault refuses every write): every token is at risk.
    // Day 80: every token is due or expired (the longest: 90 days, rotated 14 before).
    w.clock.advance(Duration::days(80));
    w.store.fail_sets.store(100, Ordering::SeqCst);
    let all_failed = w.run().await;
    assert_eq!(all_failed.failed, 4, "{}", all_failed.line());
    assert_eq!(all_failed.at_risk.len(), 4, "{:?}", all_failed.at_risk);
    assert!(
        all_failed.at_risk.iter().all(|r| r.why.contains("rotation failed") && !r.sign_in),
        "{:?}",
        all_failed.at_risk
    );
    assert!(all_failed.line().contains("FAILED: 4 token(s) at risk"), "{}", all_failed.line());
    w.store.fail_sets.store(0, Ordering::SeqCst);
    let healed = w.run().await;
    assert!(healed.at_risk.is_empty() && healed.rotated == 4, "{}", healed.line());

    // The owner must sign in again while nothing is due: blocked (failed), not at risk.
    w.devops.sign_in_required.store(true, Ordering::SeqCst);
    let blocked = w.run().await;
    assert_eq!(blocked.failed, 4, "{}", blocked.line());
    assert!(blocked.at_risk.is_empty(), "not due yet: {:?}", blocked.at_risk);
    // Still blocked once token 3 (7 days, rotated 2 before) is due: it alone is at risk, for sign-in.
    w.clock.advance(Duration::days(5) + Duration::hours(1));
    let due = w.run().await;
    let names: Vec<_> = due.at_risk.iter().map(|r| (r.secret.as_str(), r.sign_in)).collect();
    assert_eq!(names, vec![("tok-3", true)], "{:?}", due.at_risk);
}

#[tokio::test]
async fn a_refused_new_pat_never_becomes_current() {
    let w = world(1);
    w.run().await; // first PAT (tested and accepted)
    assert_eq!(w.devops.tests.load(Ordering::SeqCst), 1);
    let first = w.current(0).await.unwrap();
    let versions_before = w.store.list_versions(&World::secret(0)).await.unwrap().len();
    w.clock.advance(Duration::days(24)); // due
    w.devops.refuse_tests.store(true, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.rotated, 0, "{}", s.line());
    let report = &s.reports[0];
    assert!(report.error.as_deref().is_some_and(|e| e.contains("refused the new PAT")), "{report:?}");
    assert!(
        report.notices.iter().any(|n| matches!(n, Notice::RotationFailed { step, .. } if step == "test")),
        "an alert: {:?}",
        report.notices
    );
    // Never stored, revoked at once, the old PAT untouched and still current.
    assert_eq!(w.store.list_versions(&World::secret(0)).await.unwrap().len(), versions_before);
    assert_eq!(w.current(0).await, Some(first));
    let active = w.devops.active();
    assert_eq!(active.len(), 1, "the refused PAT is revoked");
    assert_eq!(active[0].pat.authorization_id, first);
    let j = journal::load(w.state.as_ref(), &World::secret(0)).await.unwrap().journal;
    assert!(j.operation.is_none());
    assert_eq!(j.last_failure.as_ref().map(|f| f.step.as_str()), Some("test"));
    // Once Azure DevOps accepts new PATs again, the next run rotates.
    w.devops.refuse_tests.store(false, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!(s.rotated, 1, "{}", s.line());
    assert_ne!(w.current(0).await, Some(first));
}

/// A managed token patrol will rotate before it expires gets no countdown (a 30-day PAT with a 30-day
/// threshold would otherwise warn "expires in 29 days" after every rotation); it is warned about once its
/// rotation is overdue and failing, and not when the run rotates it.
#[tokio::test]
async fn managed_tokens_are_warned_only_when_rotation_is_overdue() {
    let w = world(1);
    let warnings = |s: &super::engine::RunSummary| {
        s.notices
            .iter()
            .filter_map(|n| match &n.notice {
                Notice::ExpiryWarning { threshold_days, .. } => Some(*threshold_days),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(w.run().await.rotated, 1);
    for days in [1, 15] {
        w.clock.advance(Duration::days(days));
        let s = w.run().await;
        assert_eq!((s.rotated, warnings(&s)), (0, vec![]), "day {days}: {}", s.line());
    }
    // Day 24 (6 days left, rotation due at 7): the owner must sign in, so the rotation fails — warned.
    w.clock.advance(Duration::days(8));
    w.devops.sign_in_required.store(true, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!((s.rotated, warnings(&s)), (0, vec![7]), "{}", s.line());
    let dry = w.engine(None).run(RunOptions { dry_run: true, ..Default::default() }).await.unwrap();
    assert_eq!(warnings(&dry), vec![7], "a dry run rotates nothing");
    // Signed in again: this run rotates it, so no warning.
    w.devops.sign_in_required.store(false, Ordering::SeqCst);
    let s = w.run().await;
    assert_eq!((s.rotated, warnings(&s)), (1, vec![]), "{}", s.line());
}

/// The JSON lines Application Insights receives, written to memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

/// One rotation can be followed in the JSON logs: every journaled step is a line in the token's `rotation`
/// span, which carries the secret, organization, owner and operation id; no PAT value appears anywhere.
#[tokio::test]
async fn one_rotation_is_followed_by_its_span_in_the_json_logs_and_no_secret_is_logged() {
    use tracing_subscriber::layer::SubscriberExt;
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(crate::telemetry::json_layer(logs.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run in parallel without a subscriber: recompute each callsite's interest with this one in
    // place, so no line is lost to an interest cached before it was set.
    tracing::callsite::rebuild_interest_cache();

    let w = world(2);
    assert_eq!(w.run().await.rotated, 2);
    // Once every callsite of a rotation is registered, again (a test on another thread registering one at
    // the same moment, without a subscriber, can leave it cached as uninteresting).
    tracing::callsite::rebuild_interest_cache();
    w.clock.advance(Duration::days(24)); // tok-0 (30/7) is due
    let s = w.run().await;
    let done = s.reports.iter().find(|r| r.secret == "tok-0").and_then(|r| r.rotated.clone()).expect("tok-0 rotated");
    let op = done.op.to_string();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of_op: Vec<&serde_json::Value> = lines.iter().filter(|l| l["span"]["operation_id"] == op.as_str()).collect();
    for l in &of_op {
        assert_eq!(l["span"]["name"], "rotation", "{l}");
        assert_eq!(l["span"]["secret"], "tok-0", "{l}");
        assert_eq!(l["span"]["organization"], "fabrikam", "{l}");
        assert_eq!(l["span"]["owner"], "svc@contoso.com", "{l}");
    }
    let steps: Vec<&str> =
        of_op.iter().filter(|l| l["message"] == "journaled").filter_map(|l| l["step"].as_str()).collect();
    assert!(steps.starts_with(&["intent", "created"]), "each journaled step is a line of its span: {steps:?}\n{text}");
    // The other token's work is in its own span, never under this operation.
    assert!(lines.iter().any(|l| l["span"]["secret"] == "tok-1"), "{text}");
    assert!(of_op.iter().all(|l| l["span"]["secret"] != "tok-1"));

    // No PAT patrol minted, current or previous, appears in any line.
    let ids: Vec<AuthorizationId> = w.devops.lock().pats.keys().copied().collect();
    assert!(ids.len() >= 3);
    for id in ids {
        let value = w.devops.token_of(id).unwrap();
        assert!(!text.contains(&value), "a PAT value was logged");
    }
}
