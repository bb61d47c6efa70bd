//! Unit-test doubles for the machine, used only until patrol-emulator's Azure DevOps side can be run
//! (the integration tests in `tests/it/rotation.rs` use the emulator over HTTP). [`FakeDevOps`] keeps
//! PATs in memory with Azure DevOps' rules that rotation depends on (tokens shown once, lifespan
//! clamping, revoke idempotent, Get/List of the caller's own PATs only); [`FlakyStore`] wraps a real
//! store and fails writes on demand.

use crate::devops::{
    Connector, CreatePat, CreatedPat, DevOpsError, DisplayFilter, Drift, Pat, PatApi, UpdatePat, UpdatedPat,
};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::store::{
    NewVersion, PropertiesUpdate, SecretStore, SecretSummary, StoreError, StoredSecret, VersionProperties,
};
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use time::Duration;

#[derive(Debug, Clone)]
pub struct FakePat {
    pub pat: Pat,
    pub owner: OwnerId,
    pub org: OrgName,
    pub revoked: bool,
    pub token: String,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub pats: BTreeMap<AuthorizationId, FakePat>,
    pub creates: u32,
    pub revokes: Vec<AuthorizationId>,
}

/// Azure DevOps in memory: every owner × organization.
#[derive(Debug, Clone)]
pub struct FakeDevOps {
    pub state: Arc<Mutex<FakeState>>,
    pub clock: crate::clock::Clock,
    /// Create succeeds but the answer is lost (`Uncertain`) this many more times.
    pub lose_create_answers: Arc<AtomicU32>,
    /// Maximum lifespan policy in days (clamps validTo).
    pub max_lifespan_days: Arc<AtomicU32>,
    pub sign_in_required: Arc<AtomicBool>,
    /// The new-PAT test (`Connector::probe`) refuses every PAT while set.
    pub refuse_tests: Arc<AtomicBool>,
    /// How many new-PAT tests were made.
    pub tests: Arc<AtomicU32>,
}

impl FakeDevOps {
    pub fn new(clock: crate::clock::Clock) -> Self {
        Self {
            state: Arc::default(),
            clock,
            lose_create_answers: Arc::default(),
            max_lifespan_days: Arc::new(AtomicU32::new(365)),
            sign_in_required: Arc::default(),
            refuse_tests: Arc::default(),
            tests: Arc::default(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PATs that are neither revoked nor expired.
    pub fn active(&self) -> Vec<FakePat> {
        let now = self.clock.now();
        self.lock().pats.values().filter(|p| !p.revoked && p.pat.valid_to > now).cloned().collect()
    }

    pub fn token_of(&self, id: AuthorizationId) -> Option<String> {
        self.lock().pats.get(&id).map(|p| p.token.clone())
    }
}

impl Connector for FakeDevOps {
    fn pats(&self, owner: &OwnerId, organization: &OrgName) -> Arc<dyn PatApi> {
        Arc::new(FakeApi { fake: self.clone(), owner: owner.clone(), org: organization.clone() })
    }

    fn probe(&self) -> Option<Arc<dyn crate::devops::probe::PatProbe>> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait]
impl crate::devops::probe::PatProbe for FakeDevOps {
    async fn test(&self, organization: &OrgName, pat: &SecretString) -> crate::devops::probe::ProbeOutcome {
        use crate::devops::probe::ProbeOutcome;
        use secrecy::ExposeSecret;
        self.tests.fetch_add(1, Ordering::SeqCst);
        if self.refuse_tests.load(Ordering::SeqCst) {
            return ProbeOutcome::Refused("HTTP 401: refused by the test double".into());
        }
        let now = self.clock.now();
        let ok =
            self.lock().pats.values().any(|p| {
                p.token == pat.expose_secret() && !p.revoked && p.pat.valid_to > now && &p.org == organization
            });
        if ok { ProbeOutcome::Accepted } else { ProbeOutcome::Refused("HTTP 401: unknown PAT".into()) }
    }
}

pub struct FakeApi {
    fake: FakeDevOps,
    owner: OwnerId,
    org: OrgName,
}

impl FakeApi {
    fn check(&self) -> Result<(), DevOpsError> {
        if self.fake.sign_in_required.load(Ordering::SeqCst) {
            return Err(DevOpsError::SignInRequired { owner: self.owner.clone(), reason: "invalid_grant".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl PatApi for FakeApi {
    fn organization(&self) -> &OrgName {
        &self.org
    }
    fn owner(&self) -> &OwnerId {
        &self.owner
    }

    async fn list(&self, filter: DisplayFilter) -> Result<Vec<Pat>, DevOpsError> {
        self.check()?;
        let now = self.fake.clock.now();
        let st = self.fake.lock();
        Ok(st
            .pats
            .values()
            .filter(|p| p.owner == self.owner && p.org == self.org)
            .filter(|p| match filter {
                DisplayFilter::Active => !p.revoked && p.pat.valid_to > now,
                DisplayFilter::Revoked => p.revoked,
                DisplayFilter::Expired => !p.revoked && p.pat.valid_to <= now,
                DisplayFilter::All => true,
            })
            .map(|p| p.pat.clone())
            .collect())
    }

    async fn get(&self, id: AuthorizationId) -> Result<Option<Pat>, DevOpsError> {
        self.check()?;
        let st = self.fake.lock();
        Ok(st.pats.get(&id).filter(|p| p.owner == self.owner && p.org == self.org).map(|p| p.pat.clone()))
    }

    async fn create(&self, request: &CreatePat) -> Result<CreatedPat, DevOpsError> {
        self.check()?;
        let now = self.fake.clock.now();
        let max = now + Duration::days(self.fake.max_lifespan_days.load(Ordering::SeqCst) as i64);
        let valid_to = request.valid_to.min(max);
        let id = AuthorizationId::from_uuid(uuid::Uuid::new_v4());
        let token = format!("{}AZDO{}", crate::rotation::fake::random(76), crate::rotation::fake::random(4));
        let pat = Pat {
            authorization_id: id,
            display_name: request.display_name.to_string(),
            scope: request.scopes.to_string(),
            target_accounts: if request.all_orgs { None } else { Some(vec![uuid::Uuid::nil()]) },
            valid_from: now,
            valid_to,
        };
        {
            let mut st = self.fake.lock();
            st.creates += 1;
            st.pats.insert(
                id,
                FakePat {
                    pat: pat.clone(),
                    owner: self.owner.clone(),
                    org: self.org.clone(),
                    revoked: false,
                    token: token.clone(),
                },
            );
        }
        if self.fake.lose_create_answers.load(Ordering::SeqCst) > 0 {
            self.fake.lose_create_answers.fetch_sub(1, Ordering::SeqCst);
            return Err(DevOpsError::Uncertain { operation: "create", reason: "connection reset".into() });
        }
        let mut drift = Vec::new();
        if valid_to < request.valid_to {
            drift.push(Drift::ValidToClamped { requested: request.valid_to, granted: valid_to });
        }
        Ok(CreatedPat { pat, token: SecretString::from(token), drift })
    }

    async fn update(&self, _request: &UpdatePat) -> Result<UpdatedPat, DevOpsError> {
        Err(DevOpsError::Protocol("update is not used by rotation".into()))
    }

    async fn revoke(&self, id: AuthorizationId) -> Result<(), DevOpsError> {
        self.check()?;
        let mut st = self.fake.lock();
        st.revokes.push(id);
        if let Some(p) = st.pats.get_mut(&id).filter(|p| p.owner == self.owner && p.org == self.org) {
            p.revoked = true;
        }
        Ok(())
    }
}

pub fn random(n: usize) -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..n).map(|_| (b'a' + r.random_range(0..26u8)) as char).collect()
}

/// A real store whose writes can be made to fail.
#[derive(Debug)]
pub struct FlakyStore<S> {
    pub inner: S,
    pub fail_sets: AtomicU32,
    /// Write, then report failure anyway (a lost answer).
    pub lose_set_answers: AtomicU32,
}

impl<S> FlakyStore<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, fail_sets: AtomicU32::new(0), lose_set_answers: AtomicU32::new(0) }
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

#[async_trait]
impl<S: SecretStore> SecretStore for FlakyStore<S> {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        if take(&self.fail_sets) {
            return Err(StoreError::Other { operation: "set", message: "injected failure".into() });
        }
        let r = self.inner.set(name, value, new).await;
        if r.is_ok() && take(&self.lose_set_answers) {
            return Err(StoreError::Other { operation: "set", message: "injected lost answer".into() });
        }
        r
    }
    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        self.inner.get(name, version).await
    }
    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        self.inner.list().await
    }
    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        self.inner.list_versions(name).await
    }
    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        self.inner.update(name, version, update).await
    }
}
