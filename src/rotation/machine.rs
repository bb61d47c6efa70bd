//! The per-token state machine: carries out one token's plan entry by driving its journal record
//! through intent → created → (stored) → verified → (draining → previous revoked) → done, writing the
//! record **before** every external effect. Every step is idempotent and resumes after a crash:
//!
//! - at `intent` (Create may or may not have happened): list the owner's PATs, revoke every PAT carrying
//!   this operation's marker (its value is lost), abandon the operation and retry under a new one;
//! - at `created` (the value was only in memory): if a vault version carries the operation's tag it was
//!   stored, otherwise revoke the PAT and retry;
//! - a store write that fails revokes the new PAT at once; a lost Create response is reconciled by
//!   listing before anything else;
//! - verification (Get, read-only, no effect) goes out side by side with the vault write, and the record
//!   goes from `created` straight to done in one write once both have answered; `stored` is written only
//!   when verification is left for a later run (the new PAT not visible yet, or Get failed). A crash in
//!   between resumes from `created`, whose recovery finds the vault version by its operation tag;
//! - nothing revokes the PAT the secret's current version names: every revocation re-reads the store
//!   first ([`Machine::guard`]).
//!
//! - the token's lease is consulted before every external effect (Create, the vault write, a revocation,
//!   disabling a version): a lost lease stops the token's work with its journal intact, and the next
//!   holder resumes from it ([`MachineError::LeaseLost`]).
//!
//! [`Faults`] lets tests abort the machine right after any step boundary, as a crash would.

use super::inventory::TokenState;
use super::journal::{Completed, Drain, Failure, Loaded, Operation, PatVersion, Reason, Step, marked_display_name};
use super::lease::LeaseGuard;
use super::plan::{Action, drains};
use super::policy::ManagedToken;
use crate::clock::Clock;
use crate::consumers::gate::{self, ConsumerGate};
use crate::consumers::state::{Delivery, DeliveryStep, backoff};
use crate::consumers::{Consumer, ConsumerError, ConsumerWriter, WriteContext};
use crate::devops::probe::ProbeOutcome;
use crate::devops::{Connector, CreatePat, DevOpsError, DisplayFilter, Drift, Pat, PatApi};
use crate::domain::{AuthorizationId, DisplayName, OperationId, OrgName, OwnerId};
use crate::notify::{Notice, Severity};
use crate::state::StateStore;
use crate::store::{NewVersion, PAT_CONTENT_TYPE, PropertiesUpdate, SecretStore, StoreError, tags};
use secrecy::SecretString;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// How many times one rotation abandons an operation (and revokes its PAT) before giving up for this run.
pub const MAX_ATTEMPTS: u32 = 3;

/// The points right after which a test can make the machine stop dead, as if the process were killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    IntentSaved,
    CreateReturned,
    CreatedSaved,
    StoreReturned,
    /// Get (verification) returned; the finishing record is not written yet.
    Verified,
    Finished,
    PreviousRevoked,
    PreviousDisabled,
    /// A consumer's `writing` record is saved; the write has not been sent.
    ConsumerWriting,
    /// The consumer write returned; `delivered` is not recorded yet.
    ConsumerWritten,
}

impl Boundary {
    pub const ALL: [Boundary; 8] = [
        Self::IntentSaved,
        Self::CreateReturned,
        Self::CreatedSaved,
        Self::StoreReturned,
        Self::Verified,
        Self::Finished,
        Self::PreviousRevoked,
        Self::PreviousDisabled,
    ];

    /// The consumer-delivery boundaries (reached only by tokens with consumers to write).
    pub const CONSUMER: [Boundary; 2] = [Self::ConsumerWriting, Self::ConsumerWritten];
}

/// Fault injection: crash once after the named boundary. Also settable from the environment of a
/// `patrol` process (`PATROL_TEST_CRASH_AFTER=<boundary>`, used by the kill test), where "crash" means
/// the process exits at once with status 86.
#[derive(Debug, Default)]
pub struct Faults {
    crash_after: Mutex<Option<Boundary>>,
    exit_process: bool,
    /// Hits of the boundary to let pass before crashing (`consumer-written:3` crashes at the third).
    skip: Mutex<u32>,
}

impl Faults {
    pub fn crash_after(b: Boundary) -> Self {
        Self { crash_after: Mutex::new(Some(b)), exit_process: false, skip: Mutex::new(0) }
    }

    /// Crash at the `nth` (1-based) time the boundary is reached.
    pub fn crash_at_nth(b: Boundary, nth: u32) -> Self {
        Self { crash_after: Mutex::new(Some(b)), exit_process: false, skip: Mutex::new(nth.saturating_sub(1)) }
    }

    /// From `PATROL_TEST_CRASH_AFTER`, exiting the process at the boundary. Compiled only into test builds
    /// (cargo feature `test-hooks`, which `cargo test` turns on); elsewhere always `None`.
    #[cfg(feature = "test-hooks")]
    pub fn from_env() -> Option<Self> {
        let env = std::env::var("PATROL_TEST_CRASH_AFTER").ok()?;
        let (raw, nth) = match env.split_once(':') {
            Some((b, n)) => (b.to_owned(), n.parse::<u32>().ok()?),
            None => (env.clone(), 1),
        };
        let b = Boundary::ALL
            .into_iter()
            .chain(Boundary::CONSUMER)
            .find(|b| serde_json::to_value(b).ok().and_then(|v| v.as_str().map(|s| s == raw)).unwrap_or(false))?;
        Some(Self { crash_after: Mutex::new(Some(b)), exit_process: true, skip: Mutex::new(nth.saturating_sub(1)) })
    }

    /// Without the `test-hooks` feature there is no crash hook.
    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> Option<Self> {
        None
    }

    fn hit(&self, at: Boundary) -> Result<(), MachineError> {
        let mut g = self.crash_after.lock().unwrap_or_else(|p| p.into_inner());
        if *g == Some(at) {
            let mut skip = self.skip.lock().unwrap_or_else(|p| p.into_inner());
            if *skip > 0 {
                *skip -= 1;
                return Ok(());
            }
            *g = None;
            if self.exit_process {
                std::process::exit(86);
            }
            return Err(MachineError::Crashed(at));
        }
        Ok(())
    }
}

/// After a token's actions ran: every gated revocation that happened is reported with its evidence, and a
/// revocation at the deadline raises its alert. Waits are reported as such.
pub fn report_gated(actions: &[Action], report: &mut TokenReport) {
    for a in actions {
        match a {
            Action::RevokePrevious { authorization_id, evidence: Some(why), alert, .. }
                if report.revoked.contains(authorization_id) =>
            {
                report.done.push(format!("evidence for revoking previous {authorization_id}: {why}"));
                if let Some(n) = alert {
                    report.notices.push(n.clone());
                }
            }
            Action::WaitPrevious { authorization_id, until, reason, .. } => report.done.push(format!(
                "kept previous {authorization_id} (evidence gate, decided by {} at the latest): {reason}",
                crate::timestamp::rfc3339(*until)
            )),
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("journal: {0}")]
    Journal(#[from] super::journal::JournalError),
    #[error("secret store: {0}")]
    Store(#[from] StoreError),
    #[error("Azure DevOps: {0}")]
    DevOps(#[from] DevOpsError),
    #[error("injected crash after {0:?}")]
    Crashed(Boundary),
    #[error("lease {0} was lost before {1}; the token's work stops here and the next run resumes it")]
    LeaseLost(String, &'static str),
    #[error("refused to revoke {0}: the secret's current version names it")]
    WouldRevokeCurrent(AuthorizationId),
    #[error("{0}")]
    Other(String),
}

/// What happened to one token in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenReport {
    pub secret: String,
    pub done: Vec<String>,
    pub rotated: Option<Completed>,
    pub revoked: Vec<AuthorizationId>,
    pub error: Option<String>,
    /// Work that was left for the next run (time budget, not yet visible, …).
    pub deferred: Option<String>,
    #[serde(skip)]
    pub notices: Vec<Notice>,
}

/// Everything one token's machine needs.
pub struct Machine<'a> {
    pub token: &'a ManagedToken,
    pub connector: &'a dyn Connector,
    pub store: &'a dyn SecretStore,
    pub state: &'a dyn StateStore,
    pub clock: &'a Clock,
    pub faults: Option<&'a Faults>,
    /// The token's lease, checked before each external effect (`None`: not leased, e.g. a dry run).
    pub lease: Option<&'a LeaseGuard>,
    /// Writes the token's consumers (`None`: a consumer owed a write is reported as not configured).
    pub consumers: Option<&'a dyn ConsumerWriter>,
}

use crate::timestamp::rfc3339 as fmt_time;

impl Machine<'_> {
    fn fault(&self, b: Boundary) -> Result<(), MachineError> {
        match self.faults {
            Some(f) => f.hit(b),
            None => Ok(()),
        }
    }

    /// Errs when the lease could not be kept: another instance may hold the token now.
    fn held(&self, before: &'static str) -> Result<(), MachineError> {
        match self.lease {
            Some(l) if l.is_lost() => Err(MachineError::LeaseLost(l.key().to_owned(), before)),
            _ => Ok(()),
        }
    }

    fn pats(&self) -> Arc<dyn PatApi> {
        self.connector.pats(&self.token.owner, &self.token.organization)
    }

    fn pats_of(&self, owner: &OwnerId, org: &OrgName) -> Arc<dyn PatApi> {
        self.connector.pats(owner, org)
    }

    /// Refuses to go on if the secret's current version names `id`. Re-reads the store every time.
    async fn guard(&self, id: AuthorizationId) -> Result<(), MachineError> {
        let current = self.store.get(&self.token.secret, None).await?;
        let named = current
            .as_ref()
            .and_then(|c| c.properties.tags.get(tags::AUTHORIZATION_ID))
            .and_then(|s| AuthorizationId::parse(s).ok());
        if named == Some(id) { Err(MachineError::WouldRevokeCurrent(id)) } else { Ok(()) }
    }

    async fn revoke(&self, api: &dyn PatApi, id: AuthorizationId) -> Result<(), MachineError> {
        self.held("a revocation")?;
        self.guard(id).await?;
        api.revoke(id).await?;
        Ok(())
    }

    /// Carries out a plan entry's actions in order. A [`MachineError::Crashed`] is returned as is (the
    /// caller must stop as a dead process would); other errors end up in the report.
    pub async fn apply(
        &self,
        ts: &TokenState,
        actions: &[Action],
        deadline: Option<std::time::Instant>,
    ) -> Result<TokenReport, MachineError> {
        let mut report = TokenReport { secret: self.token.secret.to_string(), ..Default::default() };
        let mut loaded = Loaded { journal: ts.journal.clone(), etag: ts.journal_etag.clone() };
        for action in actions {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) && !matches!(action, Action::Resume { .. }) {
                report.deferred = Some(format!("time budget spent before: {}", action.label()));
                break;
            }
            let r = match action {
                Action::Blocked { why } => {
                    report.error = Some(why.clone());
                    Ok(())
                }
                Action::ReconcileOrphan { authorization_id, display_name } => {
                    self.revoke(self.pats().as_ref(), *authorization_id).await.map(|()| {
                        report.revoked.push(*authorization_id);
                        report.done.push(format!("revoked orphan {authorization_id} ({display_name})"));
                    })
                }
                Action::Resume { .. } => match self.drive(&mut loaded, &mut report, None).await {
                    Ok(()) => self.deliver(&mut loaded, &mut report, deadline).await,
                    e => e,
                },
                Action::Adopt { authorization_id, vault_version } => {
                    match self.adopt(&mut loaded, &mut report, *authorization_id, vault_version).await {
                        Ok(()) => self.deliver(&mut loaded, &mut report, deadline).await,
                        e => e,
                    }
                }
                Action::Deliver { .. } => self.deliver(&mut loaded, &mut report, deadline).await,
                Action::RevokePrevious { authorization_id, .. } => {
                    self.revoke_previous(&mut loaded, ts, &mut report, *authorization_id).await
                }
                // The evidence gate keeps this previous PAT for now: nothing to do (see `rotation::evidence`).
                Action::WaitPrevious { .. } => Ok(()),
                // Retired (`patrol retire`): nothing is done for it again; finishing an interrupted retirement
                // is the operator's command's job (`patrol retire`, in `audit/retire.rs`).
                Action::Retired { message, .. } => {
                    report.done.push(message.clone());
                    Ok(())
                }
                Action::Rotate { reason } => match self.rotate(&mut loaded, ts, &mut report, *reason).await {
                    Ok(()) if report.rotated.is_some() => self.deliver(&mut loaded, &mut report, deadline).await,
                    e => e,
                },
            };
            match r {
                Ok(()) => {}
                Err(e @ MachineError::Crashed(_)) => return Err(e),
                Err(e @ MachineError::LeaseLost(..)) => {
                    tracing::warn!(secret = %self.token.secret, "{e}");
                    report.deferred = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    let msg = e.to_string();
                    report.error = Some(msg.clone());
                    if matches!(e, MachineError::DevOps(DevOpsError::SignInRequired { .. })) {
                        report.notices.push(Notice::SignInRequired { owner: self.token.owner.clone(), reason: msg });
                    }
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn adopt(
        &self,
        loaded: &mut Loaded,
        report: &mut TokenReport,
        id: AuthorizationId,
        vault_version: &str,
    ) -> Result<(), MachineError> {
        let now = self.clock.now();
        let j = &mut loaded.journal;
        if let Some(old) = j.current.take().filter(|o| o.authorization_id != id) {
            j.drains.push(Drain {
                pat: old,
                revoke_after: now + Duration::days(self.token.grace_days as i64),
                replaced_by: None,
            });
        }
        j.current = Some(PatVersion {
            authorization_id: id,
            owner: self.token.owner.clone(),
            organization: self.token.organization.clone(),
            vault_version: Some(vault_version.to_owned()),
        });
        j.deliveries = fresh_deliveries(self.token, id, vault_version, now);
        loaded.save(self.state).await?;
        report.done.push(format!("adopted {id} from version {vault_version}"));
        report.notices.push(Notice::OutOfBandChange {
            secret: self.token.secret.clone(),
            description: format!(
                "version {vault_version} was written outside patrol; patrol adopted PAT {id} and will rotate it on schedule"
            ),
        });
        Ok(())
    }

    async fn revoke_previous(
        &self,
        loaded: &mut Loaded,
        ts: &TokenState,
        report: &mut TokenReport,
        id: AuthorizationId,
    ) -> Result<(), MachineError> {
        let drain = drains(self.token, ts).into_iter().find(|d| d.pat.authorization_id == id);
        let (owner, org) = match &drain {
            Some(d) => (d.pat.owner.clone(), d.pat.organization.clone()),
            None => (self.token.owner.clone(), self.token.organization.clone()),
        };
        // The consumers are asked again on the record as it is now (a delivery may have failed since the plan).
        if let Some(d) = &drain
            && let Some(ConsumerGate::Wait { reason, .. }) =
                gate::for_drain(self.token, &loaded.journal, d, ts.current_authorization_id(), self.clock.now())
        {
            report.done.push(format!("kept previous {id}: {reason}"));
            return Ok(());
        }
        // Make sure the drain is journaled (it may have come from vault tags only) before revoking.
        if let Some(d) = &drain
            && !loaded.journal.drains.iter().any(|x| x.pat.authorization_id == id)
        {
            loaded.journal.drains.push(d.clone());
            loaded.save(self.state).await?;
        }
        self.revoke(self.pats_of(&owner, &org).as_ref(), id).await?;
        self.fault(Boundary::PreviousRevoked)?;
        // Disable every enabled version that held it (never the current one: the guard above holds).
        let current_version = ts.current.as_ref().map(|c| c.version.clone());
        for v in self.store.list_versions(&self.token.secret).await? {
            let holds = v.tags.get(tags::AUTHORIZATION_ID).is_some_and(|s| s == &id.to_string());
            if holds && v.enabled && Some(&v.version) != current_version.as_ref() {
                self.held("disabling a version")?;
                self.store
                    .update(
                        &self.token.secret,
                        &v.version,
                        PropertiesUpdate { enabled: Some(false), ..Default::default() },
                    )
                    .await?;
            }
        }
        self.fault(Boundary::PreviousDisabled)?;
        loaded.journal.drains.retain(|d| d.pat.authorization_id != id);
        loaded.save(self.state).await?;
        report.revoked.push(id);
        report.done.push(format!("revoked previous {id} and disabled its version"));
        Ok(())
    }

    async fn rotate(
        &self,
        loaded: &mut Loaded,
        ts: &TokenState,
        report: &mut TokenReport,
        reason: Reason,
    ) -> Result<(), MachineError> {
        let now = self.clock.now();
        let previous = ts.current_authorization_id().map(|id| PatVersion {
            authorization_id: id,
            owner: ts.tag(tags::OWNER).and_then(|s| OwnerId::parse(s).ok()).unwrap_or_else(|| self.token.owner.clone()),
            organization: ts
                .tag(tags::ORGANIZATION)
                .and_then(|s| OrgName::parse(s).ok())
                .unwrap_or_else(|| self.token.organization.clone()),
            vault_version: ts.current.as_ref().map(|c| c.version.clone()),
        });
        let op = OperationId::new_random();
        loaded.journal.operation = Some(Box::new(Operation {
            op: op.clone(),
            reason,
            started: now,
            display_name: marked_display_name(self.token.display_name.as_str(), &op),
            scopes: self.token.scopes.as_str().to_owned(),
            requested_valid_to: now + Duration::days(self.token.validity_days as i64),
            all_orgs: self.token.all_orgs,
            previous,
            grace_days: if reason == Reason::Compromised { 0 } else { self.token.grace_days },
            attempt: 0,
            step: Step::Intent,
        }));
        loaded.save(self.state).await?;
        self.fault(Boundary::IntentSaved)?;
        self.drive(loaded, report, Some(())).await
    }

    /// Abandons the in-flight operation: revokes whatever PAT carries its marker or id, then either
    /// starts a fresh attempt (new operation id) or gives up for this run.
    async fn abandon(
        &self,
        loaded: &mut Loaded,
        known: Option<AuthorizationId>,
        report: &mut TokenReport,
    ) -> Result<bool, MachineError> {
        let Some(op) = loaded.journal.operation.clone() else { return Ok(false) };
        let api = self.pats();
        let mut victims: Vec<AuthorizationId> = known.into_iter().collect();
        for p in api.list(DisplayFilter::Active).await? {
            if p.display_name == op.display_name && !victims.contains(&p.authorization_id) {
                victims.push(p.authorization_id);
            }
        }
        for id in victims {
            self.revoke(api.as_ref(), id).await?;
            report.revoked.push(id);
            report.done.push(format!("revoked {id} of abandoned operation {}", op.op));
        }
        loaded.journal.abandon(op.op.clone());
        if op.attempt + 1 >= MAX_ATTEMPTS {
            loaded.journal.operation = None;
            loaded.journal.last_failure = Some(Box::new(Failure {
                step: op.step.name().into(),
                error: format!("gave up after {MAX_ATTEMPTS} attempts"),
                at: self.clock.now(),
            }));
            loaded.save(self.state).await?;
            return Ok(false);
        }
        let fresh = OperationId::new_random();
        let mut next = op.clone();
        next.display_name = marked_display_name(self.token.display_name.as_str(), &fresh);
        next.op = fresh;
        next.attempt = op.attempt + 1;
        next.step = Step::Intent;
        next.requested_valid_to = self.clock.now() + Duration::days(self.token.validity_days as i64);
        loaded.journal.operation = Some(next);
        loaded.save(self.state).await?;
        self.fault(Boundary::IntentSaved)?;
        Ok(true)
    }

    fn fail(&self, loaded: &mut Loaded, step: &str, error: &str) {
        loaded.journal.last_failure =
            Some(Box::new(Failure { step: step.into(), error: error.into(), at: self.clock.now() }));
    }

    /// Drives the in-flight operation to its end. `fresh` is `Some` when the Intent was written by this
    /// very call chain (no need to reconcile before Create).
    async fn drive(
        &self,
        loaded: &mut Loaded,
        report: &mut TokenReport,
        fresh: Option<()>,
    ) -> Result<(), MachineError> {
        let mut fresh = fresh.is_some();
        loop {
            let Some(op) = loaded.journal.operation.clone() else { return Ok(()) };
            match op.step {
                Step::Intent => {
                    if !fresh {
                        // Create may have happened: reconcile by marker, then retry under a new id.
                        if !self.abandon(loaded, None, report).await? {
                            report.error = Some("rotation abandoned after repeated failures".into());
                            return Ok(());
                        }
                        fresh = true;
                        continue;
                    }
                    match self.create_and_store(loaded, &op, report).await? {
                        Flow::Stop => return Ok(()),
                        Flow::Retry => {
                            fresh = false;
                            continue;
                        }
                    }
                }
                Step::Created { authorization_id, .. } => {
                    // The value died with the process that created it, unless it reached the vault.
                    if let Some((vault_version, valid_to)) = self.version_of(&op.op).await? {
                        let got = self.pats().get(authorization_id).await;
                        return self.finish(loaded, &op, authorization_id, &vault_version, valid_to, got, report).await;
                    }
                    if !self.abandon(loaded, Some(authorization_id), report).await? {
                        report.error = Some("rotation abandoned after repeated failures".into());
                        return Ok(());
                    }
                    fresh = true;
                }
                Step::Stored { authorization_id, ref vault_version, valid_to } => {
                    let got = self.pats().get(authorization_id).await;
                    return self.finish(loaded, &op, authorization_id, vault_version, valid_to, got, report).await;
                }
            }
        }
    }

    async fn version_of(&self, op: &OperationId) -> Result<Option<(String, OffsetDateTime)>, MachineError> {
        let versions = self.store.list_versions(&self.token.secret).await?;
        Ok(versions.into_iter().find(|v| v.tags.get(tags::OPERATION_ID).is_some_and(|t| t == op.as_str())).map(|v| {
            let valid_to = v
                .tags
                .get(tags::VALID_TO)
                .and_then(|s| crate::timestamp::parse_opt(s))
                .or(v.expires)
                .unwrap_or_else(|| self.clock.now());
            (v.version, valid_to)
        }))
    }

    /// Records that the vault holds the new PAT and only verification is left (for a later run).
    async fn set_stored(
        &self,
        loaded: &mut Loaded,
        authorization_id: AuthorizationId,
        vault_version: &str,
        valid_to: OffsetDateTime,
    ) -> Result<(), MachineError> {
        if let Some(op) = loaded.journal.operation.as_mut() {
            op.step = Step::Stored { authorization_id, vault_version: vault_version.to_owned(), valid_to };
        }
        loaded.save(self.state).await?;
        Ok(())
    }

    async fn create_and_store(
        &self,
        loaded: &mut Loaded,
        op: &Operation,
        report: &mut TokenReport,
    ) -> Result<Flow, MachineError> {
        let api = self.pats();
        let display_name = DisplayName::parse(&op.display_name).map_err(|e| MachineError::Other(e.to_string()))?;
        let request = CreatePat {
            display_name,
            scopes: self.token.scopes.clone(),
            valid_to: op.requested_valid_to,
            all_orgs: op.all_orgs,
        };
        self.held("Create")?;
        let created = match api.create(&request).await {
            Ok(c) => c,
            Err(DevOpsError::Uncertain { .. }) => {
                report.done.push(format!("Create for {} lost its answer; reconciling by marker", op.op));
                return Ok(Flow::Retry);
            }
            Err(DevOpsError::Refused { error, message }) if !error.is_transient() => {
                let explanation = error.explain();
                loaded.journal.operation = None;
                self.fail(
                    loaded,
                    "create",
                    &format!("{error}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()),
                );
                loaded.save(self.state).await?;
                report.notices.push(Notice::PolicyRefusal {
                    secret: self.token.secret.clone(),
                    error: error.to_string(),
                    explanation: explanation.clone(),
                });
                report.error = Some(format!("Azure DevOps refused Create: {error}: {explanation}"));
                return Ok(Flow::Stop);
            }
            Err(e @ DevOpsError::SignInRequired { .. }) | Err(e @ DevOpsError::Unauthorized(_)) => {
                // Nothing was created; the intent is dropped and the owner alerted.
                loaded.journal.operation = None;
                self.fail(loaded, "create", &e.to_string());
                loaded.save(self.state).await?;
                return Err(e.into());
            }
            Err(e) => {
                // Transient and nothing (known) happened: leave the intent; the next run reconciles and retries.
                self.fail(loaded, "create", &e.to_string());
                loaded.save(self.state).await?;
                report.deferred = Some(format!("Create failed transiently: {e}"));
                return Ok(Flow::Stop);
            }
        };
        self.fault(Boundary::CreateReturned)?;
        let new_id = created.pat.authorization_id;
        if let Some(o) = loaded.journal.operation.as_mut() {
            o.step = Step::Created { authorization_id: new_id, valid_to: created.pat.valid_to };
        }
        loaded.save(self.state).await?;
        self.fault(Boundary::CreatedSaved)?;
        // Get (verification) is read-only and needs only the new id, so it goes out side by side with the
        // new-PAT test; its answer is used only once the test passed and the vault write succeeded.
        let (tested, got) =
            futures::join!(self.test_new_pat(loaded, op, report, new_id, &created.token), api.get(new_id));
        if let Some(flow) = tested? {
            return Ok(flow);
        }

        let now = self.clock.now();
        let mut t = BTreeMap::new();
        t.insert(tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned());
        t.insert(tags::AUTHORIZATION_ID.to_owned(), new_id.to_string());
        t.insert(tags::DISPLAY_NAME.to_owned(), op.display_name.clone());
        t.insert(tags::ORGANIZATION.to_owned(), self.token.organization.to_string());
        t.insert(tags::OWNER.to_owned(), self.token.owner.to_string());
        t.insert(tags::SCOPE.to_owned(), created.pat.scope.chars().take(tags::MAX_TAG_LEN).collect());
        t.insert(tags::VALID_TO.to_owned(), fmt_time(created.pat.valid_to));
        t.insert(tags::OPERATION_ID.to_owned(), op.op.to_string());
        if let Some(prev) = &op.previous
            && prev.authorization_id != new_id
        {
            t.insert(tags::PREVIOUS_AUTHORIZATION_ID.to_owned(), prev.authorization_id.to_string());
            t.insert(tags::PREVIOUS_REVOKE_AFTER.to_owned(), fmt_time(now + Duration::days(op.grace_days as i64)));
        }
        let value: SecretString = created.token;
        let new = NewVersion {
            content_type: Some(PAT_CONTENT_TYPE.to_owned()),
            expires: Some(created.pat.valid_to),
            not_before: None,
            tags: t,
        };
        if let Err(lost) = self.held("the vault write") {
            // The value exists only in this process and may not be stored without the lease: the new PAT
            // is useless, so revoke it now (best effort; the next holder revokes it by marker otherwise).
            drop(value);
            let _ = self.pats().revoke(new_id).await;
            return Err(lost);
        }
        let stored = self.store.set(&self.token.secret, &value, new).await;
        drop(value);
        match stored {
            Ok(props) => {
                self.fault(Boundary::StoreReturned)?;
                let _ = created.drift;
                self.finish(loaded, op, new_id, &props.version, created.pat.valid_to, got, report).await?;
                Ok(Flow::Stop)
            }
            Err(store_err) => {
                // The write may have landed anyway (lost answer): look before revoking.
                if let Ok(Some((vault_version, valid_to))) = self.version_of(&op.op).await {
                    self.finish(loaded, op, new_id, &vault_version, valid_to, got, report).await?;
                    return Ok(Flow::Stop);
                }
                // It did not: the new PAT's value exists nowhere; revoke it at once.
                self.revoke(api.as_ref(), new_id).await?;
                report.revoked.push(new_id);
                loaded.journal.abandon(op.op.clone());
                loaded.journal.operation = None;
                self.fail(loaded, "store", &store_err.to_string());
                loaded.save(self.state).await?;
                report.notices.push(Notice::RotationFailed {
                    secret: self.token.secret.clone(),
                    step: "store".into(),
                    error: store_err.to_string(),
                    next: "the new PAT was revoked at once; the current PAT is untouched and the next run retries"
                        .into(),
                });
                report.error = Some(format!("storing the new PAT failed (it was revoked): {store_err}"));
                Ok(Flow::Stop)
            }
        }
    }

    /// Delivers the current PAT to every consumer owed a write (journaled before each write, resumed
    /// after a crash by asking the consumer whether the write landed) and looks for evidence of use while
    /// a previous PAT waits for it. Bounded by `deadline`; what is left is resumed by the next run.
    async fn deliver(
        &self,
        loaded: &mut Loaded,
        report: &mut TokenReport,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), MachineError> {
        if self.token.consumers.is_empty() {
            return Ok(());
        }
        let Some(current) = loaded.journal.current.clone() else { return Ok(()) };
        let Some(version) = current.vault_version.clone() else { return Ok(()) };
        let now = self.clock.now();
        // The record follows the policy: consumers added since are owed the current PAT, removed ones go.
        let before = loaded.journal.deliveries.clone();
        let j = &mut loaded.journal;
        j.deliveries.retain(|d| self.token.consumers.get(&d.consumer).is_some());
        for c in &self.token.consumers.list {
            let fresh =
                j.deliveries.iter().any(|d| d.consumer == c.id && d.authorization_id == current.authorization_id);
            if !fresh {
                j.deliveries.retain(|d| d.consumer != c.id);
                j.deliveries.extend(fresh_deliveries_for(c, current.authorization_id, &version, now));
            }
        }
        if j.deliveries != before {
            loaded.save(self.state).await?;
        }
        let ctx = WriteContext {
            secret: self.token.secret.clone(),
            vault_version: version.clone(),
            authorization_id: current.authorization_id,
            operation: loaded
                .journal
                .last
                .as_ref()
                .filter(|l| l.authorization_id == current.authorization_id)
                .map(|l| l.op.clone()),
        };
        let waiting = !loaded.journal.drains.is_empty();
        // The writes owed are sent to every consumer of the token at once; each consumer's own write is
        // still journaled (`writing`) before it is sent and recorded (`delivered`) after it returned, one
        // journal write at a time (the record is shared behind a lock).
        let now = self.clock.now();
        let due: Vec<(usize, &Consumer)> = self
            .token
            .consumers
            .list
            .iter()
            .filter_map(|c| {
                let i = loaded.journal.deliveries.iter().position(|d| d.consumer == c.id)?;
                loaded.journal.deliveries[i].write_due(now).then_some((i, c))
            })
            .collect();
        if let Some((_, first)) = due.first() {
            if deadline.is_some_and(|dl| std::time::Instant::now() >= dl) {
                report.deferred = Some(format!("time budget spent before delivering to {}", first.id));
                return Ok(());
            }
            let shared: Shared<'_> = tokio::sync::Mutex::new((&mut *loaded, &mut *report));
            let results =
                futures::future::join_all(due.iter().map(|(i, c)| self.deliver_one(&shared, *i, c, &ctx, deadline)))
                    .await;
            // A crash stops the machine as a dead process would; otherwise the first error.
            let mut first_error = None;
            for r in results {
                match r {
                    Err(e @ MachineError::Crashed(_)) => return Err(e),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                    Ok(()) => {}
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        for c in &self.token.consumers.list {
            let Some(i) = loaded.journal.deliveries.iter().position(|d| d.consumer == c.id) else { continue };
            if due.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let d = &loaded.journal.deliveries[i];
            if waiting
                && d.evidence.is_none()
                && let (Some(at), Some(w)) = (d.delivered_at(), self.consumers)
            {
                match w.evidence(c, at, &ctx).await {
                    Ok(Some(ev)) => {
                        report.done.push(format!("{} used the new PAT: {}", c.id, ev.what));
                        loaded.journal.deliveries[i].evidence = Some(ev);
                        loaded.save(self.state).await?;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(secret = %self.token.secret, consumer = %c.id, "evidence of use: {e}"),
                }
            }
        }
        Ok(())
    }

    async fn deliver_one(
        &self,
        sh: &Shared<'_>,
        i: usize,
        c: &Consumer,
        ctx: &WriteContext,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), MachineError> {
        let Some(w) = self.consumers else {
            let e = ConsumerError::NotConfigured("this process has no consumer writer".into());
            let mut g = sh.lock().await;
            let (loaded, report) = &mut *g;
            return self.consumer_failed(loaded, i, c, e, report).await;
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_deliver(sh, i, c, w, ctx).await {
                Ok(()) => {
                    let mut g = sh.lock().await;
                    let (loaded, report) = &mut *g;
                    let d = &mut loaded.journal.deliveries[i];
                    let recovered = d.failing_since.is_some();
                    d.attempts = 0;
                    d.failing_since = None;
                    d.last_error = None;
                    d.next_attempt = None;
                    d.alerted_at = None;
                    if recovered {
                        loaded.save(self.state).await?;
                    }
                    report.done.push(format!("delivered to {}", c.id));
                    return Ok(());
                }
                Err(DeliverError::Machine(e)) => return Err(e),
                Err(DeliverError::Consumer(e))
                    if e.is_transient()
                        && tries < CONSUMER_TRIES
                        && deadline.is_none_or(|dl| std::time::Instant::now() < dl) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200 << tries)).await;
                }
                Err(DeliverError::Consumer(e)) => {
                    let mut g = sh.lock().await;
                    let (loaded, report) = &mut *g;
                    return self.consumer_failed(loaded, i, c, e, report).await;
                }
            }
        }
    }

    async fn try_deliver(
        &self,
        sh: &Shared<'_>,
        i: usize,
        c: &Consumer,
        w: &dyn ConsumerWriter,
        ctx: &WriteContext,
    ) -> Result<(), DeliverError> {
        let step = sh.lock().await.0.journal.deliveries[i].step.clone();
        let before = match step {
            DeliveryStep::Writing { before, .. } => {
                // A write may have been sent by a process that died: ask the consumer before writing again.
                if let Some(after) = w.landed(c, before.as_deref(), ctx).await? {
                    let mut g = sh.lock().await;
                    g.0.journal.deliveries[i].step = DeliveryStep::Delivered { at: self.clock.now(), after };
                    g.0.save(self.state).await?;
                    report_landed(c);
                    return Ok(());
                }
                before
            }
            DeliveryStep::Pending => {
                let before = w.prepare(c, ctx).await?;
                self.held("a consumer write")?;
                {
                    let mut g = sh.lock().await;
                    g.0.journal.deliveries[i].step =
                        DeliveryStep::Writing { started: self.clock.now(), before: before.clone() };
                    g.0.save(self.state).await?;
                }
                self.fault(Boundary::ConsumerWriting)?;
                before
            }
            DeliveryStep::Delivered { .. } | DeliveryStep::ReadsVault => return Ok(()),
        };
        self.held("a consumer write")?;
        let value = self
            .store
            .get(&self.token.secret, Some(&ctx.vault_version))
            .await
            .map_err(MachineError::from)?
            .ok_or_else(|| {
                ConsumerError::Refused(format!("vault version {} of {} is gone", ctx.vault_version, ctx.secret))
            })?;
        let written = w.write(c, &value.value, before.as_deref(), ctx).await;
        drop(value);
        let after = match written {
            Ok(after) => after,
            Err(e) => {
                if !e.is_transient() {
                    // Refused outright: nothing was written, so the next attempt reads the object afresh.
                    sh.lock().await.0.journal.deliveries[i].step = DeliveryStep::Pending;
                }
                return Err(e.into());
            }
        };
        self.fault(Boundary::ConsumerWritten)?;
        let mut g = sh.lock().await;
        g.0.journal.deliveries[i].step = DeliveryStep::Delivered { at: self.clock.now(), after };
        g.0.save(self.state).await?;
        Ok(())
    }

    async fn consumer_failed(
        &self,
        loaded: &mut Loaded,
        i: usize,
        c: &Consumer,
        e: ConsumerError,
        report: &mut TokenReport,
    ) -> Result<(), MachineError> {
        let now = self.clock.now();
        let d = &mut loaded.journal.deliveries[i];
        d.attempts += 1;
        let since = *d.failing_since.get_or_insert(now);
        d.last_error = Some(e.to_string());
        d.next_attempt = Some(now + backoff(d.attempts));
        let alert = d.alerted_at.is_none_or(|t| now - t >= Duration::hours(24));
        if alert {
            d.alerted_at = Some(now);
        }
        let attempts = d.attempts;
        loaded.save(self.state).await?;
        let error =
            format!("delivering to {} failed (attempt {attempts}, failing since {}): {e}", c.id, fmt_time(since));
        tracing::warn!(secret = %self.token.secret, consumer = %c.id, "{error}");
        if alert {
            report.notices.push(Notice::RotationFailed {
                secret: self.token.secret.clone(),
                step: format!("deliver {}", c.id),
                error: error.clone(),
                next: format!(
                    "{} The previous PAT stays valid until every consumer has the new one (at most {} hours after the rotation); patrol retries with backoff.",
                    crate::consumers::fix(c),
                    self.token.consumers.settings.deadline_hours
                ),
            });
        }
        if e.is_transient() {
            report.deferred.get_or_insert(error);
        } else {
            report.error.get_or_insert(error);
        }
        Ok(())
    }

    /// The new-PAT test: one side-effect-free authenticated read with the new PAT before it is stored.
    /// `Some(Stop)` when it failed: the new PAT is revoked, the operation dropped, the old PAT untouched.
    async fn test_new_pat(
        &self,
        loaded: &mut Loaded,
        op: &Operation,
        report: &mut TokenReport,
        new_id: AuthorizationId,
        value: &SecretString,
    ) -> Result<Option<Flow>, MachineError> {
        let Some(probe) = self.connector.probe() else { return Ok(None) };
        let (refused, why) = match probe.test(&self.token.organization, value).await {
            ProbeOutcome::Accepted => {
                report.done.push(format!("tested new PAT {new_id}: Azure DevOps accepted it"));
                return Ok(None);
            }
            ProbeOutcome::Refused(why) => (true, why),
            ProbeOutcome::Unavailable(why) => (false, why),
        };
        let error = if refused {
            format!("Azure DevOps refused the new PAT {new_id} in {}: {why}", self.token.organization)
        } else {
            format!("the new PAT {new_id} could not be tested in {}: {why}", self.token.organization)
        };
        tracing::warn!(secret = %self.token.secret, step = "test", "{error}");
        self.revoke(self.pats().as_ref(), new_id).await?;
        report.revoked.push(new_id);
        loaded.journal.abandon(op.op.clone());
        loaded.journal.operation = None;
        self.fail(loaded, "test", &error);
        loaded.save(self.state).await?;
        report.notices.push(Notice::RotationFailed {
            secret: self.token.secret.clone(),
            step: "test".into(),
            error: error.clone(),
            next: if refused {
                "the new PAT was never stored and is revoked; the current PAT stays in place. Check the organization's \
                 PAT policies, Conditional Access and IP restrictions for the owner, then rerun"
                    .into()
            } else {
                "the new PAT was never stored and is revoked; the current PAT stays in place and the next run retries"
                    .into()
            },
        });
        if refused {
            report.error = Some(error);
        } else {
            report.deferred = Some(error);
        }
        Ok(Some(Flow::Stop))
    }

    /// Finishes the operation on the answer of Get for the new PAT (`got`): drift, drains, `current`,
    /// the completed record — one journal write. When the PAT is not visible yet or Get failed, records
    /// `stored` instead and leaves verification for a later run.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        loaded: &mut Loaded,
        op: &Operation,
        id: AuthorizationId,
        vault_version: &str,
        valid_to: OffsetDateTime,
        got: Result<Option<Pat>, DevOpsError>,
        report: &mut TokenReport,
    ) -> Result<(), MachineError> {
        let already_stored = matches!(
            loaded.journal.operation.as_ref().map(|o| &o.step),
            Some(Step::Stored { authorization_id, vault_version: v, .. }) if *authorization_id == id && v == vault_version
        );
        if !matches!(got, Ok(Some(_))) && !already_stored {
            // Verification is left for a later run: record that the vault holds the new PAT.
            self.set_stored(loaded, id, vault_version, valid_to).await?;
        }
        let Some(pat) = got? else {
            report.deferred = Some(format!("new PAT {id} is not visible yet; verification continues next run"));
            return Ok(());
        };
        self.fault(Boundary::Verified)?;
        let mut drift = Vec::new();
        if pat.valid_to + Duration::minutes(5) < op.requested_valid_to {
            drift.push(Drift::ValidToClamped { requested: op.requested_valid_to, granted: pat.valid_to });
        }
        if !self.token.scopes.matches_wire(&pat.scope) {
            drift.push(Drift::ScopeChanged { requested: op.scopes.clone(), granted: pat.scope.clone() });
        }
        if pat.is_global() != op.all_orgs {
            drift.push(Drift::TargetChanged { requested_global: op.all_orgs, granted_global: pat.is_global() });
        }
        let drift_text: Vec<String> = drift.iter().map(describe_drift).collect();
        for d in &drift_text {
            report.notices.push(Notice::Finding {
                rule: "rotation-drift".into(),
                severity: Severity::Warning,
                summary: format!("{}: {d}", self.token.secret),
                evidence: vec![format!("authorization id {id}"), format!("operation {}", op.op)],
                action: "check the organization's PAT policies or adjust patrol.toml".into(),
            });
        }
        let now = self.clock.now();
        let j = &mut loaded.journal;
        if let Some(prev) = op.previous.clone().filter(|p| p.authorization_id != id)
            && !j.drains.iter().any(|d| d.pat.authorization_id == prev.authorization_id)
        {
            j.drains.push(Drain {
                pat: prev,
                revoke_after: now + Duration::days(op.grace_days as i64),
                replaced_by: Some(op.op.clone()),
            });
        }
        // An adopted/previous "current" that is neither the new one nor draining is drained too.
        if let Some(old) = j.current.take().filter(|c| c.authorization_id != id)
            && !j.drains.iter().any(|d| d.pat.authorization_id == old.authorization_id)
        {
            j.drains.push(Drain {
                pat: old,
                revoke_after: now + Duration::days(op.grace_days as i64),
                replaced_by: Some(op.op.clone()),
            });
        }
        j.current = Some(PatVersion {
            authorization_id: id,
            owner: self.token.owner.clone(),
            organization: self.token.organization.clone(),
            vault_version: Some(vault_version.to_owned()),
        });
        j.deliveries = fresh_deliveries(self.token, id, vault_version, now);
        let done = Completed {
            op: op.op.clone(),
            reason: op.reason,
            authorization_id: id,
            vault_version: vault_version.to_owned(),
            valid_to,
            finished: now,
            drift: drift_text,
        };
        j.last = Some(done.clone());
        j.last_failure = None;
        j.operation = None;
        loaded.save(self.state).await?;
        self.fault(Boundary::Finished)?;
        report.done.push(format!("rotated ({}) to {id}, vault version {vault_version}", op.reason.as_str()));
        report.notices.push(Notice::RotationSucceeded {
            secret: self.token.secret.clone(),
            old_display_name: None,
            new_display_name: op.display_name.clone(),
            new_valid_to: valid_to,
            stored_at: format!("{}/{}", self.token.secret, vault_version),
        });
        report.rotated = Some(done);
        Ok(())
    }
}

enum Flow {
    Retry,
    Stop,
}

fn fresh_deliveries_for(c: &Consumer, id: AuthorizationId, vault_version: &str, now: OffsetDateTime) -> Vec<Delivery> {
    let mut d = Delivery::new(&c.id, id, vault_version, now);
    if !c.is_written() {
        d.step = DeliveryStep::ReadsVault;
    }
    vec![d]
}

fn report_landed(c: &Consumer) {
    tracing::info!(consumer = %c.id, "a consumer write sent before a crash had landed; not written again");
}

/// One delivery per consumer of `token` for a PAT that just became current.
pub(crate) fn fresh_deliveries(
    token: &ManagedToken,
    id: AuthorizationId,
    vault_version: &str,
    now: OffsetDateTime,
) -> Vec<Delivery> {
    token
        .consumers
        .list
        .iter()
        .map(|c| {
            let mut d = Delivery::new(&c.id, id, vault_version, now);
            if !c.is_written() {
                d.step = DeliveryStep::ReadsVault;
            }
            d
        })
        .collect()
}

/// The token's record and report, shared by the deliveries to its consumers (sent side by side).
type Shared<'a> = tokio::sync::Mutex<(&'a mut Loaded, &'a mut TokenReport)>;

/// Why one delivery attempt stopped.
enum DeliverError {
    Machine(MachineError),
    Consumer(ConsumerError),
}

impl From<MachineError> for DeliverError {
    fn from(e: MachineError) -> Self {
        Self::Machine(e)
    }
}

impl From<ConsumerError> for DeliverError {
    fn from(e: ConsumerError) -> Self {
        Self::Consumer(e)
    }
}

impl From<super::journal::JournalError> for DeliverError {
    fn from(e: super::journal::JournalError) -> Self {
        Self::Machine(e.into())
    }
}

/// In-invocation retries of a transient consumer failure before it is left to a later run.
const CONSUMER_TRIES: u32 = 3;

pub fn describe_drift(d: &Drift) -> String {
    match d {
        Drift::ValidToClamped { requested, granted } => {
            format!(
                "validTo clamped by an organization policy: asked {}, granted {}",
                fmt_time(*requested),
                fmt_time(*granted)
            )
        }
        Drift::ScopeChanged { requested, granted } => {
            format!("scopes changed: asked {requested:?}, granted {granted:?}")
        }
        Drift::TargetChanged { requested_global, granted_global } => {
            format!("organization scope changed: asked global={requested_global}, granted global={granted_global}")
        }
    }
}
