//! A lease lost in the middle of a rotation: the machine stops before its next external effect, leaves
//! the journal for the next holder, and the next run converges (one new PAT, nothing orphaned).

use super::engine::{Engine, RunOptions};
use super::fake::FakeDevOps;
use super::journal;
use super::lease::{LeaseError, LeaseGuard, Leases};
use super::policy::Policy;
use crate::clock::Clock;
use crate::devops::{Connector, CreatePat, CreatedPat, DevOpsError, DisplayFilter, Pat, PatApi, UpdatePat, UpdatedPat};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::state::FileStateStore;
use crate::store::{FileSecretStore, SecretStore, tags};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::macros::datetime;

/// Hands out guards sharing one "lost" flag the test controls.
#[derive(Debug, Default)]
struct FlagLeases {
    lost: Arc<AtomicBool>,
}

#[async_trait]
impl Leases for FlagLeases {
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError> {
        Ok(Some(LeaseGuard::new(key.to_owned(), Box::new(|| {}), self.lost.clone())))
    }
}

/// Azure DevOps whose Create answers normally but the lease is lost while it runs.
struct LoseOnCreate {
    inner: FakeDevOps,
    lost: Arc<AtomicBool>,
}

impl Connector for LoseOnCreate {
    fn pats(&self, owner: &OwnerId, organization: &OrgName) -> Arc<dyn PatApi> {
        Arc::new(LoseOnCreateApi { inner: self.inner.pats(owner, organization), lost: self.lost.clone() })
    }
}

struct LoseOnCreateApi {
    inner: Arc<dyn PatApi>,
    lost: Arc<AtomicBool>,
}

#[async_trait]
impl PatApi for LoseOnCreateApi {
    fn organization(&self) -> &OrgName {
        self.inner.organization()
    }
    fn owner(&self) -> &OwnerId {
        self.inner.owner()
    }
    async fn list(&self, filter: DisplayFilter) -> Result<Vec<Pat>, DevOpsError> {
        self.inner.list(filter).await
    }
    async fn get(&self, id: AuthorizationId) -> Result<Option<Pat>, DevOpsError> {
        self.inner.get(id).await
    }
    async fn create(&self, request: &CreatePat) -> Result<CreatedPat, DevOpsError> {
        let r = self.inner.create(request).await;
        self.lost.store(true, Ordering::SeqCst);
        r
    }
    async fn update(&self, request: &UpdatePat) -> Result<UpdatedPat, DevOpsError> {
        self.inner.update(request).await
    }
    async fn revoke(&self, id: AuthorizationId) -> Result<(), DevOpsError> {
        self.inner.revoke(id).await
    }
}

#[tokio::test]
async fn a_lease_lost_after_create_stops_before_the_vault_write_and_the_next_run_converges() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(datetime!(2027-01-01 03:00 UTC));
    let store: Arc<dyn SecretStore> = Arc::new(
        FileSecretStore::open(dir.path().join("vault"), &dir.path().join("store.key"), clock.clone()).unwrap(),
    );
    let state = Arc::new(FileStateStore::new(dir.path().join("state")));
    let policy = Arc::new(
        Policy::parse(
            Path::new("patrol.toml"),
            "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
             [[token]]\nsecret = \"tok-a\"\ndisplay_name = \"Token A\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n",
        )
        .unwrap(),
    );
    let devops = FakeDevOps::new(clock.clone());
    let leases = Arc::new(FlagLeases::default());
    let engine = |connector: Arc<dyn Connector>| {
        Engine::new(policy.clone(), connector, store.clone(), state.clone(), clock.clone())
            .with_leases(leases.clone())
            .with_concurrency(1)
    };
    let secret = SecretName::parse("tok-a").unwrap();

    // Run 1: the lease is lost while Create runs.
    let losing = engine(Arc::new(LoseOnCreate { inner: devops.clone(), lost: leases.lost.clone() }));
    let s = losing.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.rotated, 0, "{}", s.line());
    assert_eq!(devops.lock().creates, 1);
    assert!(store.get(&secret, None).await.unwrap().is_none(), "nothing written to the vault without the lease");
    assert!(devops.active().is_empty(), "the PAT whose value only this process had was revoked at once");
    let j = journal::load(state.as_ref(), &secret).await.unwrap().journal;
    assert!(j.operation.is_some(), "the journal keeps the in-flight operation for the next holder");

    // Run 2: a healthy lease; the journal is resumed and the token converges.
    leases.lost.store(false, Ordering::SeqCst);
    let s = engine(Arc::new(devops.clone())).run(RunOptions::default()).await.unwrap();
    assert_eq!(s.rotated, 1, "{}", s.line());
    let cur = store.get(&secret, None).await.unwrap().unwrap();
    let id = AuthorizationId::parse(&cur.properties.tags[tags::AUTHORIZATION_ID]).unwrap();
    let active = devops.active();
    assert_eq!(active.len(), 1, "exactly one live PAT: {active:?}");
    assert_eq!(active[0].pat.authorization_id, id);
    assert_eq!(devops.token_of(id).as_deref(), Some(cur.value.expose_secret()));
    assert!(journal::load(state.as_ref(), &secret).await.unwrap().journal.operation.is_none());
}

#[tokio::test]
async fn a_lease_lost_before_any_effect_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::starting_at(datetime!(2027-01-01 03:00 UTC));
    let store: Arc<dyn SecretStore> = Arc::new(
        FileSecretStore::open(dir.path().join("vault"), &dir.path().join("store.key"), clock.clone()).unwrap(),
    );
    let devops = FakeDevOps::new(clock.clone());
    let leases = Arc::new(FlagLeases::default());
    leases.lost.store(true, Ordering::SeqCst);
    let engine = Engine::new(
        Arc::new(
                Policy::parse(
                    Path::new("patrol.toml"),
                    "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
                     [[token]]\nsecret = \"tok-b\"\ndisplay_name = \"Token B\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n",
                )
                .unwrap(),
            ),
        Arc::new(devops.clone()),
        store.clone(),
        Arc::new(FileStateStore::new(dir.path().join("state"))),
        clock,
    )
        .with_leases(leases)
        .with_concurrency(1);
    let s = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((s.rotated, devops.lock().creates), (0, 0), "{}", s.line());
    assert!(s.reports.iter().any(|t| t.deferred.as_deref().is_some_and(|d| d.contains("lost"))), "{}", s.line());
}
