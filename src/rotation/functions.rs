//! The rotation engine behind the custom handler: implements [`crate::handler::Functions`] for
//! `RotateTimer`, `RotateHttp` and `EventGridSecretChanged`, and hands every run's notices to the
//! notifications layer. Everything is built lazily on the first invocation (the host's readiness
//! probe must be answered at once), from [`Settings`].

use super::engine::{
    Engine, EngineError, RunOptions, RunSummary, SecretEvent as EngineEvent, SecretEventKind as EngineKind,
};
use super::plan::Requests;
use super::policy::Policy;
use crate::clock::Clock;
use crate::config::Settings;
use crate::handler::eventgrid::{SecretEvent, SecretEventKind};
use crate::handler::http::{RotateMode, RotateRequest};
use crate::handler::timer::TimerRun;
use crate::handler::{Failure, FailureKind, Functions, Invocation, Outcome, Report, Status};
use crate::notify::Notifier;
use crate::store::SecretStore;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

struct Runtime {
    engine: Engine,
    notifier: Notifier,
    /// The Azure DevOps connector (audit log readers and Token Admin live on it).
    http: Arc<crate::devops::connector::HttpConnector>,
    /// The policy's `[audit]` section, when it has one: the timer then also polls the audit log.
    audit: Option<crate::audit::AuditSettings>,
}

/// The handler's functions, backed by the engine.
pub struct RotationFunctions {
    settings: Settings,
    clock: Clock,
    runtime: OnceCell<Result<Runtime, String>>,
}

impl RotationFunctions {
    pub fn new(settings: Settings, clock: Clock) -> Self {
        Self { settings, clock, runtime: OnceCell::new() }
    }

    async fn runtime(&self) -> Result<&Runtime, Failure> {
        let r = self.runtime.get_or_init(|| async { self.build().await }).await;
        r.as_ref().map_err(|e| Failure::new(FailureKind::Unavailable, e.clone()))
    }

    async fn build(&self) -> Result<Runtime, String> {
        let s = &self.settings;
        let policy = Policy::load(&s.policy_file).map_err(|e| format!("policy: {e}"))?;
        // Key Vault when PATROL_KEYVAULT_URL is set (the file store is never opened then: the Function
        // App's root is read-only in Azure), otherwise the embedded file store.
        let store: Arc<dyn SecretStore> =
            crate::store::from_settings_with_clock(s, self.clock.clone()).map_err(|e| format!("secret store: {e}"))?;
        let (state, leases) = super::shared::from_settings(s)?;
        let client_id = s.client_id.clone().ok_or("PATROL_CLIENT_ID is not set (the Entra app owners sign in to)")?;
        let http = crate::devops::http::build_client(s.ca_cert.as_deref(), Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let entra = crate::auth::entra::EntraClient::new(http, s.entra_authority.clone(), &s.tenant_id, &client_id)
            .map_err(|e| e.to_string())?;
        let sessions = crate::auth::session::Sessions::new(
            Arc::new(entra),
            store.clone(),
            self.clock.clone(),
            crate::auth::session::SessionOptions::default(),
        );
        let connector = Arc::new(
            crate::devops::connector::HttpConnector::from_settings(s, self.clock.clone(), Arc::new(sessions))
                .map_err(|e| e.to_string())?,
        );
        // The audit pass is opt-in: it needs a reader signed in with vso.auditlog.
        let audit = match std::fs::read_to_string(&s.policy_file) {
            Ok(text) if text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("audit")) => Some(
                crate::audit::policy::from_policy_text(&text)
                    .and_then(|p| p.resolve().map_err(|e| e.to_string()))
                    .map_err(|e| format!("policy: {e}"))?,
            ),
            _ => None,
        };
        let vaults = s.keyvault.as_ref().map(|kv| {
            vec![kv.url.host_str().and_then(|h| h.split('.').next()).unwrap_or_default().to_ascii_lowercase()]
        });
        let notifier = Notifier::from_settings(s, Some(store.as_ref()), Some(state.clone()), self.clock.clone()).await;
        let consumers =
            crate::consumers::writers::for_policy(s, &policy, store.clone(), state.clone(), self.clock.clone());
        let engine = Engine {
            policy: Arc::new(policy),
            connector: connector.clone(),
            store,
            state,
            leases,
            clock: self.clock.clone(),
            concurrency: s.max_concurrency,
            vaults,
            faults: super::machine::Faults::from_env().map(Arc::new),
            consumers,
        };
        Ok(Runtime { engine, notifier, http: connector, audit })
    }

    /// The timer's audit pass (when the policy has `[audit]`). It runs **before** the rotation engine's
    /// pass, so the evidence that gates revoking previous PATs is fresh (a failed poll leaves the old
    /// checkpoint, which the gate then treats as stale: no revocation before the deadline). Failures here
    /// are reported, never fail the rotation.
    async fn timer_audit(&self, rt: &Runtime) -> serde_json::Map<String, serde_json::Value> {
        use crate::audit::pass;
        let mut out = serde_json::Map::new();
        let Some(settings) = &rt.audit else { return out };
        let now = self.clock.now();
        let Some(managed) = managed_or_skip(rt, "audit", "audit pass", &mut out).await else { return out };
        let policy = rt.engine.policy.clone();
        let actions = self.patrol_actions(rt).await;
        let targets_for = move |secret: &crate::domain::SecretName| {
            policy.token(secret).map(|t| t.notify.clone()).unwrap_or_default()
        };
        let input = pass::PassInput {
            settings,
            managed: &managed,
            actions,
            readers: Default::default(),
            targets_for: &targets_for,
            poll: Default::default(),
        };
        // "Rotate now" responses go through the engine's journaled state machine (crash-safe).
        let summary =
            pass::audit_pass(rt.http.as_ref(), rt.engine.state.as_ref(), rt.http.as_ref(), &rt.engine, input, now)
                .await;
        tracing::info!(
            organizations = summary.organizations.len(),
            findings = summary.findings.len(),
            errors = summary.errors.len(),
            "audit pass"
        );
        let delivery = if summary.notices.is_empty() {
            None
        } else {
            Some(rt.notifier.deliver_run(summary.notices.clone()).await)
        };
        out.insert(
            "audit".into(),
            json!({
                "organizations": summary.organizations,
                "findings": summary.findings.len(),
                "executed": summary.executed.len(),
                "outcomes": summary.executed,
                "dry_run": settings.dry_run,
                "errors": summary.errors,
                "notifications_delivered": delivery.as_ref().map(|d| d.all_delivered()),
            }),
        );
        out
    }

    /// The weekly report (when `PATROL_REPORT_RECIPIENTS` is set), after the rotation pass.
    async fn timer_weekly(&self, rt: &Runtime) -> serde_json::Map<String, serde_json::Value> {
        use crate::audit::weekly;
        let mut out = serde_json::Map::new();
        let recipients = &self.settings.notify.report_recipients;
        if recipients.is_empty() {
            return out;
        }
        let now = self.clock.now();
        let Some(managed) = managed_or_skip(rt, "weekly_report", "weekly report", &mut out).await else {
            return out;
        };
        let findings =
            weekly::findings_since(rt.engine.state.as_ref(), now - time::Duration::days(7)).await.unwrap_or_default();
        let thresholds = crate::cli::report::thresholds(&rt.engine.policy);
        let rows = weekly::token_rows(&managed, now);
        // Created, rotated and revoked PATs of the week (every engine run and break glass append to it).
        let events = super::history::since(rt.engine.state.as_ref(), now - weekly::PERIOD).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the weekly report goes out without the lifecycle log");
            Vec::new()
        });
        let outcome = weekly::send_if_due(rt.engine.state.as_ref(), &rt.notifier, recipients, now, || {
            weekly::build(now, rows, weekly::lifecycle_rows(&events), &findings, thresholds)
        })
        .await;
        out.insert(
            "weekly_report".into(),
            match outcome {
                Ok(o) => serde_json::to_value(o).unwrap_or_default(),
                Err(e) => json!({ "error": e.to_string() }),
            },
        );
        out
    }

    /// The PATs patrol itself created recently (from the journals), so the audit rules do not mistake
    /// patrol's own rotations for someone else managing the owner's tokens.
    async fn patrol_actions(&self, rt: &Runtime) -> Vec<crate::audit::context::PatrolAction> {
        use crate::audit::context::{Lifecycle, PatrolAction};
        let mut actions = Vec::new();
        for t in &rt.engine.policy.tokens {
            let Ok(loaded) = super::journal::load(rt.engine.state.as_ref(), &t.secret).await else { continue };
            if let Some(last) = loaded.journal.last {
                actions.push(PatrolAction {
                    kind: Lifecycle::Create,
                    organization: t.organization.clone(),
                    owner: t.owner.clone(),
                    display_name: super::journal::marked_display_name(t.display_name.as_str(), &last.op),
                    authorization_id: Some(last.authorization_id),
                    at: last.finished,
                });
            }
        }
        // Everything patrol created, rotated or revoked recently (engine runs, break glass, rotate-now): the
        // lifecycle log, so patrol's own revocations are not reported as someone else's.
        let from = self.clock.now() - crate::audit::weekly::LOG_KEEP;
        match super::history::since(rt.engine.state.as_ref(), from).await {
            Ok(events) => {
                for e in events {
                    let Some(owner) = e.owner else { continue };
                    actions.push(PatrolAction {
                        kind: match e.kind {
                            super::history::Kind::Revoked => Lifecycle::Revoke,
                            _ => Lifecycle::Create,
                        },
                        organization: e.organization,
                        owner,
                        display_name: e.display_name,
                        authorization_id: Some(e.authorization_id),
                        at: e.at,
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "the audit pass runs without the lifecycle log"),
        }
        actions
    }

    /// Remaining budget of an invocation (counted from when the handler received it).
    fn budget(inv: &Invocation, total: Duration) -> Duration {
        total.saturating_sub(inv.received.elapsed()).max(Duration::from_secs(1))
    }

    async fn finish(&self, rt: &Runtime, summary: RunSummary, planned: bool) -> Outcome {
        let notices = summary.notices.clone();
        let delivery =
            if summary.dry_run || notices.is_empty() { None } else { Some(rt.notifier.deliver_run(notices).await) };
        let status = if planned {
            Status::Planned
        } else if summary.ignored.is_some() {
            Status::Ignored
        } else if !summary.deferred.is_empty() || !summary.busy.is_empty() {
            Status::Incomplete
        } else {
            Status::Completed
        };
        let line = match &summary.ignored {
            Some(why) => format!("ignored: {why}"),
            None => summary.line(),
        };
        let mut detail = serde_json::to_value(&summary).unwrap_or_default();
        if let Some(d) = delivery {
            detail["notifications"] = json!({ "delivered": d.all_delivered(), "failures": d.failures().count() });
        }
        Ok(Report::new(status, line).with_detail(detail))
    }
}

fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::UnknownSecret(_) => Failure::new(FailureKind::NotFound, e.to_string()),
        EngineError::BadInput(_) => Failure::new(FailureKind::Internal, e.to_string()),
        EngineError::Lease(_) => Failure::new(FailureKind::Unavailable, e.to_string()),
        EngineError::Crashed(_) => Failure::new(FailureKind::Internal, e.to_string()),
    }
}

#[async_trait]
impl Functions for RotationFunctions {
    async fn rotate_timer(&self, inv: &Invocation, _timer: TimerRun) -> Outcome {
        let rt = self.runtime().await?;
        // The audit pass first: the evidence gate (if on) judges previous PATs on what it just read.
        let mut extras = self.timer_audit(rt).await;
        let budget = Self::budget(inv, self.settings.invocation_budget);
        let s =
            rt.engine.run(RunOptions { budget: Some(budget), ..Default::default() }).await.map_err(engine_failure)?;
        extras.extend(self.timer_weekly(rt).await);
        let mut report = self.finish(rt, s, false).await?;
        if let Some(d) = report.detail.as_object_mut() {
            d.extend(extras);
        }
        Ok(report)
    }

    async fn rotate_http(&self, inv: &Invocation, req: RotateRequest) -> Outcome {
        let rt = self.runtime().await?;
        let budget = Some(Self::budget(inv, self.settings.invocation_budget));
        let dry_run = req.mode == RotateMode::Plan;
        let s = match &req.secret {
            Some(secret) => rt.engine.rotate_one(secret.as_str(), req.force, dry_run, budget).await,
            None => {
                let mut requests = Requests::default();
                if req.force {
                    for t in &rt.engine.policy.tokens {
                        requests.rotate.insert(t.secret.clone(), super::journal::Reason::Forced);
                    }
                }
                rt.engine.run(RunOptions { dry_run, budget, only: None, requests }).await
            }
        }
        .map_err(engine_failure)?;
        self.finish(rt, s, dry_run).await
    }

    async fn secret_changed(&self, inv: &Invocation, event: SecretEvent) -> Outcome {
        let rt = self.runtime().await?;
        let ev = EngineEvent {
            kind: match event.kind {
                SecretEventKind::NearExpiry => EngineKind::NearExpiry,
                SecretEventKind::Expired => EngineKind::Expired,
                SecretEventKind::NewVersionCreated => EngineKind::NewVersionCreated,
            },
            vault: event.vault.clone(),
            secret: event.secret.to_string(),
            version: event.version.clone(),
        };
        let budget = Some(Self::budget(inv, self.settings.event_budget));
        let s = rt.engine.on_event(&ev, false, budget).await.map_err(engine_failure)?;
        self.finish(rt, s, false).await
    }
}

/// The managed PATs a timer's `key` part (`what` in the log) works on; when they cannot be listed, the
/// part is skipped with a warning and `out[key]` names the error.
async fn managed_or_skip(
    rt: &Runtime,
    key: &str,
    what: &str,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<Vec<crate::audit::managed::ManagedPat>> {
    match crate::audit::managed::managed_pats(rt.engine.store.as_ref()).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "{what} skipped: cannot list managed PATs");
            out.insert(key.into(), json!({ "error": e.to_string() }));
            None
        }
    }
}
