//! Delivery to consumers in the state machine, on a fixed clock with the real file stores and the
//! in-memory Azure DevOps, and a consumer double that keeps each consumer's value and version marker
//! (the HTTP writers are tested against patrol-emulator in `tests/it`).

use super::engine::{Engine, EngineError, RunOptions, RunSummary};
use super::fake::FakeDevOps;
use super::journal;
use super::lease::LocalLeases;
use super::machine::{Boundary, Faults};
use super::policy::Policy;
use crate::clock::Clock;
use crate::consumers::state::{DeliveryStep, UseEvidence};
use crate::consumers::{Consumer, ConsumerError, ConsumerWriter, WriteContext};
use crate::domain::{AuthorizationId, SecretName};
use crate::notify::Notice;
use crate::state::FileStateStore;
use crate::store::{FileSecretStore, SecretStore, tags};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Default, Clone)]
struct Object {
    value: String,
    version: u64,
    writes: u32,
}

#[derive(Default)]
struct Consumers {
    objects: Mutex<BTreeMap<String, Object>>,
    failing: Mutex<BTreeSet<String>>,
    /// Consumer id → when it was used (a pipeline run).
    used: Mutex<BTreeMap<String, OffsetDateTime>>,
}

impl Consumers {
    fn object(&self, id: &str) -> Object {
        self.objects.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl ConsumerWriter for Consumers {
    async fn prepare(&self, c: &Consumer, _: &WriteContext) -> Result<Option<String>, ConsumerError> {
        if self.failing.lock().unwrap().contains(&c.id) {
            return Err(ConsumerError::Forbidden(format!("{}: 403", c.id)));
        }
        Ok(Some(self.object(&c.id).version.to_string()))
    }

    async fn landed(
        &self,
        c: &Consumer,
        before: Option<&str>,
        _: &WriteContext,
    ) -> Result<Option<Option<String>>, ConsumerError> {
        let v = self.object(&c.id).version.to_string();
        Ok((Some(v.as_str()) != before).then_some(Some(v)))
    }

    async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
        _: &WriteContext,
    ) -> Result<Option<String>, ConsumerError> {
        let mut objects = self.objects.lock().unwrap();
        let o = objects.entry(c.id.clone()).or_default();
        if Some(o.version.to_string().as_str()) != before {
            return Err(ConsumerError::Conflict(c.id.clone()));
        }
        o.value = value.expose_secret().to_owned();
        o.version += 1;
        o.writes += 1;
        Ok(Some(o.version.to_string()))
    }

    async fn evidence(
        &self,
        c: &Consumer,
        since: OffsetDateTime,
        _: &WriteContext,
    ) -> Result<Option<UseEvidence>, ConsumerError> {
        Ok(self
            .used
            .lock()
            .unwrap()
            .get(&c.id)
            .filter(|t| **t >= since)
            .map(|t| UseEvidence { at: *t, what: "pipeline run 1".into() }))
    }
}

const POLICY: &str = r#"[defaults]
organization = "fabrikam"
owner = "svc@contoso.com"
scopes = "vso.code"
validity_days = 30
rotate_before_days = 7
grace_days = 1

[consumers]
deadline_hours = 72

[[token]]
secret = "tok"
display_name = "Token"

[[token.consumer]]
kind = "devops-service-connection"
project = "web"
connection = "feed"
type = "generic"
scheme = "UsernamePassword"

[[token.consumer]]
kind = "devops-variable-group"
project = "web"
group = 3
variable = "PAT"

[[token.consumer]]
kind = "keyvault"
secret = "team-copy"

[[token.consumer]]
kind = "reference"
description = "App Service"
lag_hours = 24
"#;

const SC: &str = "service-connection:fabrikam/web/feed";
const VG: &str = "variable-group:fabrikam/web/3/PAT";
const KV: &str = "keyvault:/team-copy";
const WRITTEN: [&str; 3] = [SC, VG, KV];

struct World {
    _dir: tempfile::TempDir,
    clock: Clock,
    devops: FakeDevOps,
    store: Arc<FileSecretStore>,
    state: Arc<FileStateStore>,
    leases: Arc<LocalLeases>,
    policy: Arc<Policy>,
    consumers: Arc<Consumers>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(datetime!(2027-01-01 03:00 UTC));
    let fs = FileSecretStore::open(dir.path().join("vault"), &dir.path().join("store.key"), clock.clone()).unwrap();
    World {
        clock: clock.clone(),
        devops: FakeDevOps::new(clock),
        store: Arc::new(fs),
        state: Arc::new(FileStateStore::new(dir.path().join("state"))),
        leases: Arc::new(LocalLeases::default()),
        policy: Arc::new(Policy::parse(Path::new("patrol.toml"), POLICY).unwrap()),
        consumers: Arc::default(),
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
        .with_concurrency(1)
        .with_faults(faults.map(Arc::new))
        .with_consumers(Some(self.consumers.clone()))
    }

    async fn run(&self) -> RunSummary {
        self.engine(None).run(RunOptions::default()).await.unwrap()
    }

    async fn current(&self) -> (AuthorizationId, String) {
        let s = self.store.get(&SecretName::parse("tok").unwrap(), None).await.unwrap().unwrap();
        (
            AuthorizationId::parse(&s.properties.tags[tags::AUTHORIZATION_ID]).unwrap(),
            s.value.expose_secret().to_owned(),
        )
    }

    fn revoked(&self, id: AuthorizationId) -> bool {
        self.devops.lock().pats[&id].revoked
    }

    async fn journal(&self) -> journal::Journal {
        journal::load(self.state.as_ref(), &SecretName::parse("tok").unwrap()).await.unwrap().journal
    }

    fn use_connection(&self) {
        self.consumers.used.lock().unwrap().insert(SC.into(), self.clock.now());
    }

    /// First PAT delivered and used, then due again: returns the first PAT.
    async fn rotated_once(&self) -> AuthorizationId {
        self.run().await;
        let (first, _) = self.current().await;
        self.clock.advance(Duration::days(24));
        first
    }
}

#[tokio::test]
async fn every_consumer_gets_the_new_pat_and_revocation_waits_for_evidence_and_lag() {
    let w = world();
    let s = w.run().await;
    assert_eq!((s.rotated, s.failed), (1, 0), "{:?}", s.reports);
    let (first, value) = w.current().await;
    for id in WRITTEN {
        let o = w.consumers.object(id);
        assert_eq!((o.value.as_str(), o.writes), (value.as_str(), 1), "{id}");
    }
    let j = w.journal().await;
    assert_eq!(j.deliveries.len(), 4);
    assert!(j.deliveries.iter().any(|d| d.consumer.starts_with("reference:") && d.step == DeliveryStep::ReadsVault));

    // Due: rotate; every consumer gets the new value in the same run.
    w.clock.advance(Duration::days(24));
    let s = w.run().await;
    assert_eq!((s.rotated, s.failed), (1, 0), "{:?}", s.reports);
    let (second, value2) = w.current().await;
    for id in WRITTEN {
        let o = w.consumers.object(id);
        assert_eq!((o.value.as_str(), o.writes), (value2.as_str(), 2), "{id}: written once per rotation");
    }
    // Grace over (1 day) but no pipeline run used the connection and the App Service may lag 24 h: kept.
    w.clock.advance(Duration::days(1) + Duration::minutes(1));
    let s = w.run().await;
    assert!(!w.revoked(first), "{:?}", s.reports);
    let waits = format!("{:?}", s.plan.entries[0].actions);
    assert!(waits.contains(SC) && waits.contains("no pipeline run"), "{waits}");
    // A pipeline run uses the connection: the previous PAT is revoked (grace and lag have passed).
    w.clock.advance(Duration::hours(1));
    w.use_connection();
    let s = w.run().await; // collects the evidence
    let s2 = w.run().await; // revokes on it
    assert!(w.revoked(first), "{:?} {:?}", s.reports, s2.reports);
    assert!(!w.revoked(second));
    let j = w.journal().await;
    assert!(j.deliveries.iter().any(|d| d.consumer == SC && d.evidence.is_some()));
}

#[tokio::test]
async fn a_failing_consumer_holds_revocation_to_the_deadline_and_alerts_naming_it() {
    let w = world();
    let first = w.rotated_once().await;
    w.consumers.failing.lock().unwrap().insert(VG.into());
    w.use_connection();
    let s = w.run().await;
    assert_eq!(s.rotated, 1);
    let alerts: Vec<_> = s
        .reports
        .iter()
        .flat_map(|r| &r.notices)
        .filter_map(|n| match n {
            Notice::RotationFailed { step, next, .. } => Some((step.clone(), next.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0, format!("deliver {VG}"));
    assert!(alerts[0].1.contains("Administrator of the group"), "{}", alerts[0].1);
    // A week of daily runs: the previous PAT stays until the 72-hour deadline, then goes with an alert.
    let mut deadline_alert = None;
    for day in 1..=7 {
        w.clock.advance(Duration::days(1));
        w.use_connection();
        let s = w.run().await;
        if day < 3 {
            assert!(!w.revoked(first), "day {day}: held by the failing consumer");
        }
        for n in s.notices.iter().map(|a| &a.notice) {
            if let Notice::Finding { rule, evidence, .. } = n
                && rule == "consumer-deadline"
            {
                deadline_alert = Some(evidence.clone());
            }
        }
    }
    assert!(w.revoked(first), "revoked at the deadline");
    let evidence = deadline_alert.expect("a deadline alert");
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert!(evidence[0].starts_with(VG) && evidence[0].contains("403"), "{evidence:?}");
    // The consumer never got the new value and was never written.
    assert_eq!(w.consumers.object(VG).writes, 1);
}

#[tokio::test]
async fn a_crash_at_every_consumer_step_converges_without_a_second_write() {
    for (b, nth) in Boundary::CONSUMER.into_iter().flat_map(|b| (1..=3).map(move |n| (b, n))) {
        let w = world();
        let first = w.rotated_once().await;
        let r = w.engine(Some(Faults::crash_at_nth(b, nth))).run(RunOptions::default()).await;
        assert!(matches!(r, Err(EngineError::Crashed(x)) if x == b), "{b:?} #{nth}: {r:?}");
        // Restarted processes converge: every consumer holds the current PAT, each written once more.
        w.use_connection();
        for _ in 0..2 {
            let s = w.run().await;
            assert_eq!(s.failed, 0, "{b:?}: {:?}", s.reports);
        }
        let (_, value) = w.current().await;
        for id in WRITTEN {
            let o = w.consumers.object(id);
            assert_eq!((o.value.as_str(), o.writes), (value.as_str(), 2), "{b:?}: {id}");
        }
        assert!(!w.revoked(first), "{b:?}: grace not over");
        w.clock.advance(Duration::days(1) + Duration::hours(1));
        w.use_connection();
        w.run().await;
        w.run().await;
        assert!(w.revoked(first), "{b:?}: previous revoked once every consumer moved");
    }
}
