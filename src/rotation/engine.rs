//! The engine: the entry points the three functions and the CLI call.
//!
//! - [`Engine::run`] — a full pass (`RotateTimer`, `POST RotateHttp`): inventory → plan → apply every
//!   entry that has work, at most `concurrency` tokens at once, each under its lease, within a time
//!   budget (a token not started in time is left for the next run; a started one is finished);
//! - [`Engine::rotate_one`] — one token, optionally forced (`POST rotate/{secret}?force=true`);
//! - [`Engine::on_event`] — a Key Vault event (`EventGridSecretChanged`);
//! - every entry point has a dry run that stops after planning.
//!
//! Under a token's lease the engine re-reads that token's vault version and journal and plans it again,
//! so two triggers racing for the same token (on two instances) end with exactly one rotation.

use super::history;
use super::inventory::{self, Inventory, TokenState};
use super::journal::Reason;
use super::lease::{LeaseError, Leases};
use super::machine::{Boundary, Faults, Machine, MachineError, TokenReport};
use super::plan::{Action, Entry, Plan, Requests, plan};
use super::policy::Policy;
pub use super::verdict::RunSummary;
use crate::clock::Clock;
use crate::devops::Connector;
use crate::domain::{AuthorizationId, SecretName};
use crate::notify::{Addressed, Notice, PatRef};
use crate::state::StateStore;
use crate::store::{SecretStore, tags};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("secret {0:?} is not managed by patrol (not in the policy)")]
    UnknownSecret(String),
    #[error("{0}")]
    BadInput(String),
    #[error("injected crash after {0:?}")]
    Crashed(Boundary),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A Key Vault event, as the handler parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEvent {
    pub kind: SecretEventKind,
    /// The vault's name (`VaultName`).
    pub vault: String,
    /// `ObjectName`.
    pub secret: String,
    /// `Version`.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEventKind {
    NearExpiry,
    Expired,
    NewVersionCreated,
}

/// How a run is asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub budget: Option<Duration>,
    pub only: Option<Vec<SecretName>>,
    pub requests: Requests,
}

/// The rotation engine. Built with [`Engine::new`] and the `with_*` methods (in production by
/// the composition root, `app`, from the settings); its parts are public for reading.
pub struct Engine {
    pub policy: Arc<Policy>,
    pub connector: Arc<dyn Connector>,
    pub store: Arc<dyn SecretStore>,
    pub state: Arc<dyn StateStore>,
    pub leases: Arc<dyn Leases>,
    pub clock: Clock,
    pub concurrency: usize,
    /// Vault names whose events are acted on; `None` accepts any (embedded store / tests).
    pub vaults: Option<Vec<String>>,
    pub faults: Option<Arc<Faults>>,
    /// Writes consumers (`None`: consumers that need a write are reported as not configured).
    pub consumers: Option<Arc<dyn crate::consumers::ConsumerWriter>>,
}

impl Engine {
    /// An engine over these parts: in-process leases ([`super::lease::LocalLeases`]), concurrency 8 (the
    /// `PATROL_MAX_CONCURRENCY` default), events from any vault, no injected faults, no consumer writers.
    pub fn new(
        policy: Arc<Policy>,
        connector: Arc<dyn Connector>,
        store: Arc<dyn SecretStore>,
        state: Arc<dyn StateStore>,
        clock: Clock,
    ) -> Self {
        Self {
            policy,
            connector,
            store,
            state,
            leases: Arc::new(super::lease::LocalLeases::default()),
            clock,
            concurrency: 8,
            vaults: None,
            faults: None,
            consumers: None,
        }
    }

    /// The per-token leases (shared with every other instance and the CLI in production).
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = leases;
        self
    }

    /// At most `n` tokens at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Only events from these vaults are acted on (`None`: any).
    pub fn with_vaults(mut self, vaults: Option<Vec<String>>) -> Self {
        self.vaults = vaults;
        self
    }

    /// Injected crashes at step boundaries (tests; `PATROL_TEST_CRASH_AFTER`).
    pub fn with_faults(mut self, faults: Option<Arc<Faults>>) -> Self {
        self.faults = faults;
        self
    }

    /// Who writes the consumers (`None`: consumers that need a write are reported as not configured).
    pub fn with_consumers(mut self, consumers: Option<Arc<dyn crate::consumers::ConsumerWriter>>) -> Self {
        self.consumers = consumers;
        self
    }

    /// What is true now; with evidence-gated revocation, also what the audit log has shown.
    pub async fn inventory(&self, only: Option<&[SecretName]>) -> Inventory {
        let mut inv = inventory::gather(
            &self.policy,
            only,
            self.store.as_ref(),
            self.state.as_ref(),
            self.connector.as_ref(),
            self.clock.now(),
            self.concurrency,
        )
        .await;
        inv.evidence = super::evidence::load(self.state.as_ref(), &self.policy).await;
        inv
    }

    /// The plan without doing anything.
    pub async fn plan(&self, only: Option<&[SecretName]>, requests: &Requests) -> Plan {
        let inv = self.inventory(only).await;
        plan(&inv, &self.policy, self.clock.now(), requests)
    }

    pub async fn run(&self, opts: RunOptions) -> Result<RunSummary, EngineError> {
        let started = Instant::now();
        let calls = self.connector.call_counters();
        let deadline = opts.budget.map(|b| started + b);
        let inv = Arc::new(self.inventory(opts.only.as_deref()).await);
        let the_plan = plan(&inv, &self.policy, self.clock.now(), &opts.requests);
        let mut summary = RunSummary::new(the_plan.clone(), opts.dry_run);
        summary.notices.extend(self.plan_notices(&inv, &the_plan));
        if opts.only.is_none() {
            // A full pass (timer, `patrol rotate`) also watches the PATs patrol does not manage.
            let expired = self.expired_pats(&inv).await;
            summary.notices.extend(super::alerts::unmanaged(&self.policy, &inv, &the_plan, &expired, self.clock.now()));
        }
        if opts.dry_run {
            summary.notices.extend(super::alerts::managed(&self.policy, &inv, &the_plan, &Default::default()));
            return Ok(summary.measured(&inv, started, self.connector.call_counters().since(&calls)));
        }
        let work: Vec<&Entry> = the_plan.entries.iter().filter(|e| !e.is_noop()).collect();
        let inv = &inv;
        let requests = &opts.requests;
        let futs: Vec<_> = work.into_iter().map(|entry| self.apply_entry(inv, entry, requests, deadline)).collect();
        let results: Vec<Result<Outcome, EngineError>> =
            futures::stream::iter(futs).buffer_unordered(self.concurrency.max(1)).collect().await;
        for r in results {
            match r? {
                Outcome::Busy(s) => summary.busy.push(s),
                Outcome::Deferred(s) => summary.deferred.push(s),
                Outcome::Done(report) => {
                    let token = self
                        .policy
                        .token(&SecretName::parse(&report.secret).map_err(|e| EngineError::BadInput(e.to_string()))?);
                    let targets = token.map(|t| t.notify.clone()).unwrap_or_default();
                    summary.rotated += usize::from(report.rotated.is_some());
                    summary.revoked += report.revoked.len();
                    summary.failed += usize::from(report.error.is_some());
                    if report.deferred.is_some()
                        && let Ok(s) = SecretName::parse(&report.secret)
                    {
                        summary.deferred.push(s);
                    }
                    for n in &report.notices {
                        let mut targets = targets.clone();
                        if let Some(g) = self.policy.gate.as_ref().filter(|_| crate::evidence::is_deadline_alert(n)) {
                            targets
                                .extend(g.notify.iter().filter(|t| !targets.contains(t)).cloned().collect::<Vec<_>>());
                        }
                        summary.notices.push(Addressed { targets, notice: n.clone() });
                    }
                    summary.reports.push(*report);
                }
            }
        }
        let rotated: std::collections::HashSet<SecretName> = summary
            .reports
            .iter()
            .filter(|r| r.rotated.is_some())
            .filter_map(|r| SecretName::parse(&r.secret).ok())
            .collect();
        summary.notices.extend(super::alerts::managed(&self.policy, inv, &the_plan, &rotated));
        summary.reports.sort_by(|a, b| a.secret.cmp(&b.secret));
        summary.busy.sort();
        summary.deferred.sort();
        summary.deferred.dedup();
        let valid_to =
            inv.tokens.iter().filter_map(|(s, ts)| ts.tag_time(tags::VALID_TO).map(|v| (s.clone(), v))).collect();
        summary.at_risk = super::verdict::at_risk(&summary, &self.policy, self.clock.now(), &valid_to);
        record_run(self, &summary).await;
        Ok(summary.measured(inv, started, self.connector.call_counters().since(&calls)))
    }

    /// Sign-in alerts that follow from the inventory alone (expiry alerts: `super::alerts`).
    fn plan_notices(&self, inv: &Inventory, _p: &Plan) -> Vec<Addressed> {
        let mut out = Vec::new();
        for o in inv.owners.iter().filter(|o| o.sign_in_required) {
            let targets: Vec<_> = self
                .policy
                .tokens
                .iter()
                .filter(|t| t.owner == o.owner)
                .flat_map(|t| t.notify.iter().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            out.push(Addressed {
                targets,
                notice: Notice::SignInRequired { owner: o.owner.clone(), reason: o.error.clone().unwrap_or_default() },
            });
        }
        out
    }

    /// Each listed owner's expired PATs (`displayFilterOption=expired`), for "PAT expired" alerts on PATs
    /// patrol does not manage. A listing that fails is skipped (logged): the next run announces them.
    async fn expired_pats(&self, inv: &Inventory) -> Vec<super::alerts::ExpiredListing> {
        let pairs: Vec<_> = inv.owners.iter().filter(|o| o.error.is_none()).collect();
        let futs: Vec<_> = pairs
            .into_iter()
            .map(|o| async move {
                match self.connector.pats(&o.owner, &o.organization).list(crate::devops::DisplayFilter::Expired).await {
                    Ok(pats) => Some((o.owner.clone(), o.organization.clone(), pats)),
                    Err(e) => {
                        tracing::warn!(owner = %o.owner, organization = %o.organization, error = %e,
                            "listing expired PATs failed; their expiry is announced by a later run");
                        None
                    }
                }
            })
            .collect();
        futures::stream::iter(futs)
            .buffer_unordered(self.concurrency.max(1))
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    async fn apply_entry(
        &self,
        inv: &Inventory,
        entry: &Entry,
        requests: &Requests,
        deadline: Option<Instant>,
    ) -> Result<Outcome, EngineError> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Outcome::Deferred(entry.secret.clone()));
        }
        let Some(token) = self.policy.token(&entry.secret) else {
            return Ok(Outcome::Busy(entry.secret.clone()));
        };
        if entry.actions.iter().all(|a| matches!(a, Action::Blocked { .. })) {
            let why = entry.actions.iter().map(Action::label).collect::<Vec<_>>().join("; ");
            return Ok(Outcome::Done(Box::new(TokenReport {
                secret: entry.secret.to_string(),
                error: Some(why),
                ..Default::default()
            })));
        }
        let Some(lease) = self.leases.try_acquire(&format!("token/{}", entry.secret)).await? else {
            return Ok(Outcome::Busy(entry.secret.clone()));
        };
        // Plan this token again on what is true now that the lease is held.
        let fresh: TokenState = inventory::token_state(self.store.as_ref(), self.state.as_ref(), &entry.secret).await;
        let before = inv.tokens.get(&entry.secret);
        let unchanged = before.is_some_and(|b| {
            b.current.as_ref().map(|c| &c.version) == fresh.current.as_ref().map(|c| &c.version)
                && b.journal_etag == fresh.journal_etag
        });
        let mut mini = Inventory {
            taken_at: self.clock.now(),
            tokens: Default::default(),
            owners: Vec::new(),
            evidence: inv.evidence.clone(),
        };
        match inv.owner_pats(&token.owner, &token.organization) {
            Some(o) if unchanged => mini.owners.push(o.clone()),
            _ => mini
                .owners
                .push(inventory::owner_pats(self.connector.as_ref(), &token.owner, &token.organization).await),
        }
        mini.tokens.insert(entry.secret.clone(), Box::new(fresh.clone()));
        let single = Policy {
            file: self.policy.file.clone(),
            tokens: vec![token.clone()],
            gate: self.policy.gate.clone(),
            audit: self.policy.audit.clone(),
        };
        let mut req = Requests::default();
        if let Some(r) = requests.rotate.get(&entry.secret) {
            // A forced request is satisfied by a rotation another trigger just finished.
            let already = !unchanged
                && fresh
                    .journal
                    .last
                    .as_ref()
                    .is_some_and(|l| before.is_some_and(|b| b.journal.last.as_ref() != Some(l)));
            if !already {
                req.rotate.insert(entry.secret.clone(), *r);
            }
        }
        let replanned = plan(&mini, &single, self.clock.now(), &req);
        let actions = replanned.entries.first().map(|e| e.actions.clone()).unwrap_or_default();
        let machine = Machine {
            token,
            connector: self.connector.as_ref(),
            store: self.store.as_ref(),
            state: self.state.as_ref(),
            clock: &self.clock,
            faults: self.faults.as_deref(),
            lease: Some(&lease),
            consumers: self.consumers.as_deref(),
        };
        // One span per token and operation: every line of this token's work (journal steps, Azure DevOps
        // calls, vault writes, consumer deliveries) carries the secret and, once journaled, the operation id.
        let span = tracing::info_span!(
            "rotation",
            secret = %entry.secret,
            organization = %token.organization,
            owner = %token.owner,
            operation_id = tracing::field::Empty,
        );
        if let Some(op) = &fresh.journal.operation {
            span.record("operation_id", tracing::field::display(&op.op));
        }
        let result = {
            use tracing::Instrument;
            let labels: Vec<String> = actions.iter().map(Action::label).collect();
            async {
                tracing::info!(actions = %labels.join("; "), "applying");
                machine.apply(&fresh, &actions, deadline).await
            }
            .instrument(span)
            .await
        };
        drop(lease);
        match result {
            Ok(mut report) => {
                super::machine::report_gated(&actions, &mut report);
                Ok(Outcome::Done(Box::new(report)))
            }
            Err(MachineError::Crashed(b)) => Err(EngineError::Crashed(b)),
            Err(e) => Ok(Outcome::Done(Box::new(TokenReport {
                secret: entry.secret.to_string(),
                error: Some(e.to_string()),
                ..Default::default()
            }))),
        }
    }

    fn managed(&self, secret: &str) -> Result<SecretName, EngineError> {
        let name =
            SecretName::parse(secret).map_err(|_| EngineError::UnknownSecret(secret.chars().take(127).collect()))?;
        if self.policy.token(&name).is_none() {
            return Err(EngineError::UnknownSecret(secret.to_owned()));
        }
        Ok(name)
    }

    /// One token: what is due for it, or a rotation whatever its state when `force`.
    pub async fn rotate_one(
        &self,
        secret: &str,
        force: bool,
        dry_run: bool,
        budget: Option<Duration>,
    ) -> Result<RunSummary, EngineError> {
        let name = self.managed(secret)?;
        let mut requests = Requests::default();
        if force {
            requests.rotate.insert(name.clone(), Reason::Forced);
        }
        self.run(RunOptions { dry_run, budget, only: Some(vec![name]), requests }).await
    }

    /// A Key Vault event. Acts only on the configured vault(s) and on managed secrets; duplicates and
    /// out-of-order deliveries are harmless because everything is re-planned under the token's lease.
    pub async fn on_event(
        &self,
        ev: &SecretEvent,
        dry_run: bool,
        budget: Option<Duration>,
    ) -> Result<RunSummary, EngineError> {
        let ignore = |why: String| {
            let mut s = RunSummary::new(Plan { at: self.clock.now(), entries: vec![], unmanaged: vec![] }, dry_run);
            s.ignored = Some(why);
            Ok(s)
        };
        if let Some(vaults) = &self.vaults
            && !vaults.iter().any(|v| v.eq_ignore_ascii_case(&ev.vault))
        {
            return ignore(format!("vault {:?} is not one patrol manages", ev.vault));
        }
        let Ok(name) = self.managed(&ev.secret) else {
            return ignore(format!("secret {:?} is not managed by patrol", ev.secret));
        };
        let ts = inventory::token_state(self.store.as_ref(), self.state.as_ref(), &name).await;
        let current_version = ts.current.as_ref().map(|c| c.version.clone());
        let is_current = ev.version.is_some() && ev.version == current_version;
        let version = ev.version.as_deref().unwrap_or("(none)");
        let mut requests = Requests::default();
        let mut extra = Vec::new();
        let token = self.policy.token(&name).cloned();
        match ev.kind {
            SecretEventKind::NearExpiry => {
                if !is_current {
                    return ignore(format!("version {version} of {name} is no longer current"));
                }
                // Rotated when the policy says it is due (the vault's 30-day warning would otherwise
                // re-trigger every PAT shorter-lived than 30 days forever).
            }
            SecretEventKind::Expired => {
                if !is_current {
                    return ignore(format!("version {version} of {name} is no longer current"));
                }
                requests.rotate.insert(name.clone(), Reason::Expired);
                if let (Some(t), Some(id)) = (&token, ts.current_authorization_id()) {
                    extra.push(Addressed {
                        targets: t.notify.clone(),
                        notice: Notice::PatExpired {
                            pat: PatRef {
                                display_name: ts.tag(tags::DISPLAY_NAME).unwrap_or(t.display_name.as_str()).to_owned(),
                                authorization_id: id,
                                organization: t.organization.to_string(),
                                owner: t.owner.clone(),
                                valid_to: ts.tag_time(tags::VALID_TO).unwrap_or_else(|| self.clock.now()),
                                secret: Some(name.clone()),
                            },
                        },
                    });
                }
            }
            SecretEventKind::NewVersionCreated => {
                if !is_current {
                    return ignore(format!("version {version} of {name} is no longer current"));
                }
                let op = ts.current_operation();
                let ours = op.as_ref().is_some_and(|op| {
                    ts.journal.operation.as_ref().is_some_and(|o| &o.op == op)
                        || ts.journal.last.as_ref().is_some_and(|l| &l.op == op)
                });
                if ours {
                    return ignore(format!("version {version} of {name} was written by patrol itself"));
                }
                if let Some(t) = &token
                    && ts.current_authorization_id().is_none()
                {
                    extra.push(Addressed {
                        targets: t.notify.clone(),
                        notice: Notice::OutOfBandChange {
                            secret: name.clone(),
                            description: format!(
                                "version {} was written outside patrol and names no PAT (no {} tag); patrol will replace it",
                                ev.version.as_deref().unwrap_or("?"),
                                tags::AUTHORIZATION_ID
                            ),
                        },
                    });
                }
                // With an authorization id the plan adopts it (and alerts).
            }
        }
        let mut s = self.run(RunOptions { dry_run, budget, only: Some(vec![name]), requests }).await?;
        s.notices.extend(extra);
        Ok(s)
    }

    /// The authorization id the secret's current version names (for callers that must never touch it).
    pub async fn current_of(&self, secret: &SecretName) -> Option<AuthorizationId> {
        inventory::token_state(self.store.as_ref(), self.state.as_ref(), secret).await.current_authorization_id()
    }
}

enum Outcome {
    Done(Box<TokenReport>),
    Busy(SecretName),
    Deferred(SecretName),
}

/// The events of one engine run: each completed rotation (with the PAT it replaced, from the journal) and
/// each previous PAT revoked.
pub async fn of_run(engine: &Engine, summary: &RunSummary) -> Vec<history::Event> {
    let now = engine.clock.now();
    let mut out = Vec::new();
    for r in &summary.reports {
        let Ok(secret) = SecretName::parse(&r.secret) else { continue };
        let Some(token) = engine.policy.token(&secret) else { continue };
        let scope = token.scopes.as_str().to_owned();
        if let Some(c) = &r.rotated {
            let replaced = match super::journal::load(engine.state.as_ref(), &secret).await {
                Ok(l) => l
                    .journal
                    .drains
                    .iter()
                    .find(|d| d.replaced_by.as_ref() == Some(&c.op))
                    .map(|d| d.pat.authorization_id),
                Err(_) => None,
            };
            out.push(history::Event {
                at: c.finished,
                kind: if c.reason == Reason::Missing && replaced.is_none() {
                    history::Kind::Created
                } else {
                    history::Kind::Rotated
                },
                secret: Some(secret.to_string()),
                owner: Some(token.owner.clone()),
                organization: token.organization.clone(),
                authorization_id: c.authorization_id,
                display_name: super::journal::marked_display_name(token.display_name.as_str(), &c.op),
                scope: scope.clone(),
                valid_to: Some(c.valid_to),
                replaced,
                by: crate::trigger::trigger(),
                detail: c.reason.as_str().to_owned(),
            });
        }
        for id in &r.revoked {
            out.push(history::Event {
                at: now,
                kind: history::Kind::Revoked,
                secret: Some(secret.to_string()),
                owner: Some(token.owner.clone()),
                organization: token.organization.clone(),
                authorization_id: *id,
                display_name: format!("previous PAT of {secret}"),
                scope: scope.clone(),
                valid_to: None,
                replaced: None,
                by: crate::trigger::trigger(),
                detail: "previous PAT, grace over".into(),
            });
        }
    }
    out
}

/// Records one PAT revoked outside a run (the audit layer's "rotate now" revokes the suspect itself);
/// a failure is logged.
pub async fn record_revoked(engine: &Engine, secret: &SecretName, id: AuthorizationId, detail: &str) {
    let now = engine.clock.now();
    let Some(token) = engine.policy.token(secret) else { return };
    let ev = history::Event {
        at: now,
        kind: history::Kind::Revoked,
        secret: Some(secret.to_string()),
        owner: Some(token.owner.clone()),
        organization: token.organization.clone(),
        authorization_id: id,
        display_name: format!("suspect PAT of {secret}"),
        scope: token.scopes.as_str().to_owned(),
        valid_to: None,
        replaced: None,
        by: crate::trigger::trigger(),
        detail: detail.to_owned(),
    };
    if let Err(e) = history::record(engine.state.as_ref(), &[ev], now).await {
        tracing::warn!(error = %e, "the lifecycle log was not updated (the weekly report will miss a revocation)");
    }
}

/// Records what an engine run did; a failure is logged, never fails the run.
pub async fn record_run(engine: &Engine, summary: &RunSummary) {
    if summary.dry_run {
        return;
    }
    let events = of_run(engine, summary).await;
    if let Err(e) = history::record(engine.state.as_ref(), &events, engine.clock.now()).await {
        tracing::warn!(error = %e, "the lifecycle log was not updated (the weekly report will miss this run)");
    }
}
