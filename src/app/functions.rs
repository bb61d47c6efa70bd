//! The three functions' use cases, above both `rotation` and `audit`: implements
//! [`crate::handler::Functions`] for `RotateTimer` (audit pass → engine run → weekly report), `RotateHttp`
//! (engine run or one token) and `EventGridSecretChanged` (the engine on one event), and hands every run's
//! notices to the notifications layer. Everything is built lazily on the first invocation (the host's readiness
//! probe must be answered at once), from [`Settings`].

use super::StartupError;
use crate::clock::Clock;
use crate::config::Settings;
use crate::handler::eventgrid::{SecretEvent, SecretEventKind};
use crate::handler::http::{AckRequest, RotateMode, RotateRequest};
use crate::handler::timer::TimerRun;
use crate::handler::{Failure, FailureKind, Functions, Invocation, Outcome, Report, Status};
use crate::rotation::engine::{
    EngineError, RunOptions, RunSummary, SecretEvent as EngineEvent, SecretEventKind as EngineKind,
};
use crate::rotation::plan::Requests;
use crate::rotation::policy::Policy;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The parts the functions run on, built by the composition root ([`crate::app`]).
type Runtime = crate::app::Running;

/// The handler's functions, backed by the engine.
pub struct RotationFunctions {
    settings: Settings,
    clock: Clock,
    runtime: OnceCell<Result<Runtime, StartupError>>,
}

impl RotationFunctions {
    pub fn new(settings: Settings, clock: Clock) -> Self {
        Self { settings, clock, runtime: OnceCell::new() }
    }

    async fn runtime(&self) -> Result<&Runtime, Failure> {
        let r = self.runtime.get_or_init(|| async { self.build().await }).await;
        r.as_ref().map_err(|e| Failure::new(FailureKind::Unavailable, e.to_string()))
    }

    async fn build(&self) -> Result<Runtime, StartupError> {
        // Owners' sessions and the Function App's own identity (audit log, Token Admin); the audit pass is
        // opt-in (the policy's `[audit]`): it needs a reader signed in with vso.auditlog.
        super::App::open(self.settings.clone(), self.clock.clone())?.running().await
    }

    /// The timer's audit pass (when the policy has `[audit]`). It runs **before** the rotation engine's
    /// pass, so the evidence that gates revoking previous PATs is fresh (a failed poll leaves the old
    /// checkpoint, which the gate then treats as stale: no revocation before the deadline). Failures here
    /// are reported, never fail the rotation.
    async fn timer_audit(
        &self,
        rt: &Runtime,
    ) -> (serde_json::Map<String, serde_json::Value>, Vec<crate::audit::usage::Row>, Vec<crate::metrics::Point>) {
        use crate::audit::pass;
        let mut out = serde_json::Map::new();
        let Some(settings) = &rt.audit else { return (out, Vec::new(), Vec::new()) };
        let now = self.clock.now();
        // The same inputs `patrol audit` gathers: the managed PATs (policy ⋈ journal ⋈ vault), the managed
        // tokens that cannot be watched, patrol's own recent actions.
        let inputs = pass::inputs(&rt.engine.policy, rt.engine.store.as_ref(), rt.engine.state.as_ref(), now).await;
        let policy = rt.engine.policy.clone();
        let targets_for = move |secret: &crate::domain::SecretName| {
            policy.token(secret).map(|t| t.notify.clone()).unwrap_or_default()
        };
        let input = pass::PassInput {
            settings,
            managed: &inputs.managed.pats,
            actions: inputs.actions,
            readers: Default::default(),
            default_reader: self.settings.audit_reader.clone(),
            targets_for: &targets_for,
            poll: Default::default(),
            unwatched: &inputs.managed.unwatched,
            only: &[],
            respond: true,
        };
        // "Rotate now" responses go through the engine's journaled state machine (crash-safe).
        let mut summary = pass::audit_pass(
            rt.connector.as_ref(),
            rt.engine.state.as_ref(),
            rt.connector.as_ref(),
            &rt.engine,
            input,
            now,
        )
        .await;
        summary.errors.extend(inputs.managed.errors);
        let points = if self.settings.metrics.enabled() {
            crate::audit::measure::pass_points(&summary, rt.engine.state.as_ref(), now, false).await
        } else {
            Vec::new()
        };
        // Stale, shared and dead PATs (issue 21): the inventory joined with the checkpoints just written;
        // announcements and due revocations as `[audit.stale]` says (with its own dry run).
        let inventory = rt.engine.inventory(None).await;
        let usage = crate::audit::usage::run(
            rt.engine.state.as_ref(),
            rt.connector.as_ref(),
            &crate::audit::usage::pats_from_inventory(&inventory, &rt.engine.policy),
            &crate::audit::usage::listed_pairs(&inventory),
            &settings.stale,
            &settings.notify,
            true,
            now,
        )
        .await;
        summary.notices.extend(usage.notices.iter().cloned());
        summary.errors.extend(usage.errors.iter().cloned());
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
                "stale_shared_dead": usage.rows.len(),
                "stale_revoked": usage.revoked,
            }),
        );
        (out, usage.rows, points)
    }

    /// The weekly report (when `PATROL_REPORT_RECIPIENTS` is set), after the rotation pass.
    async fn timer_weekly(
        &self,
        rt: &Runtime,
        usage: Vec<crate::audit::usage::Row>,
    ) -> serde_json::Map<String, serde_json::Value> {
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
        let state = rt.engine.state.as_ref();
        let policy = &rt.engine.policy;
        let findings = weekly::findings_since(state, now - crate::report::PERIOD).await.unwrap_or_default();
        let pats = weekly::managed_rows(&managed, policy, now);
        // Created, rotated and revoked PATs of the week (every engine run and break glass append to it).
        let events = crate::rotation::history::since(state, now - crate::report::PERIOD).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the weekly report goes out without the lifecycle log");
            Vec::new()
        });
        // The journals (failed rotations, consumers' deliveries), as `patrol report` reads them.
        let journals = crate::report::journals(state, policy).await;
        let consumers = policy
            .tokens
            .iter()
            .filter(|t| !t.consumers.is_empty())
            .filter_map(|t| {
                let j = journals.iter().find(|j| j.secret == t.secret)?;
                let current = managed
                    .iter()
                    .find(|m| m.secret == t.secret)
                    .map(|m| m.authorization_id)
                    .or(j.current.as_ref().map(|c| c.authorization_id));
                Some(crate::consumers::view::TokenConsumers {
                    secret: t.secret.to_string(),
                    consumers: crate::consumers::view::token_view(t, j, current, now),
                })
            })
            .collect();
        let outcome = weekly::send_if_due(state, &rt.notifier, recipients, now, || {
            // The one report model (`patrol report`'s rules and words), mailed as its weekly view.
            crate::report::weekly(crate::report::build(crate::report::Inputs {
                title: String::new(),
                now,
                policy,
                pats: &pats,
                listing: &[],
                journals: &journals,
                events: &events,
                findings: &findings,
                consumers,
                usage,
            }))
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
        } else if !summary.at_risk.is_empty() {
            // The failed-invocation rule (`rotation::verdict`): a token left at risk fails the invocation.
            Status::Failed
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
        // Metrics only when exported (`handler::metered` takes them); nothing is computed otherwise.
        let points = if self.settings.metrics.enabled() {
            crate::rotation::measure::run_points(&summary, rt.engine.state.as_ref()).await
        } else {
            Vec::new()
        };
        Ok(Report::new(status, line).with_detail(detail).with_metrics(points))
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
        let (mut extras, usage, audit_points) = self.timer_audit(rt).await;
        let budget = Self::budget(inv, self.settings.invocation_budget);
        let s =
            rt.engine.run(RunOptions { budget: Some(budget), ..Default::default() }).await.map_err(engine_failure)?;
        extras.extend(self.timer_weekly(rt, usage).await);
        let mut report = self.finish(rt, s, false).await?.with_metrics(audit_points);
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
                        requests.rotate.insert(t.secret.clone(), crate::rotation::journal::Reason::Forced);
                    }
                }
                rt.engine.run(RunOptions { dry_run, budget, only: None, requests }).await
            }
        }
        .map_err(engine_failure)?;
        self.finish(rt, s, dry_run).await
    }

    async fn acknowledge(&self, _inv: &Invocation, ack: AckRequest) -> Outcome {
        // The handler reads the headers the consumers' notifications are signed with.
        const _: () = assert!(
            crate::handler::http::ACK_SIGNATURE_HEADER.len() == crate::consumers::webhook::SIGNATURE_HEADER.len()
                && crate::handler::http::ACK_TIMESTAMP_HEADER.len()
                    == crate::consumers::webhook::TIMESTAMP_HEADER.len()
        );
        let rt = self.runtime().await?;
        let token = rt.engine.policy.token(&ack.secret);
        let current = match token {
            Some(_) => crate::rotation::journal::load(rt.engine.state.as_ref(), &ack.secret)
                .await
                .map_err(|e| Failure::new(FailureKind::Unavailable, format!("reading the journal: {e}")))?
                .journal
                .current
                .and_then(|c| c.vault_version),
            None => None,
        };
        let received = crate::consumers::ack::Received {
            secret: &ack.secret,
            version: &ack.version,
            consumer: &ack.consumer,
            timestamp: ack.timestamp,
            signature: &ack.signature,
            body: &ack.body,
        };
        let now = self.clock.now();
        match crate::consumers::ack::receive(
            token,
            current.as_deref(),
            rt.own.as_ref(),
            rt.engine.state.as_ref(),
            now,
            received,
        )
        .await
        {
            Ok(a) => Ok(Report::new(
                Status::Completed,
                format!(
                    "recorded the acknowledgement of {} version {} by {}; it counts as the consumer's evidence of use",
                    a.secret, a.version, a.consumer
                ),
            )
            .with_detail(json!({ "acknowledged": { "secret": a.secret, "version": a.version, "consumer": a.consumer, "at": crate::handler::invoke::rfc3339(a.at) } }))),
            Err(e) => {
                use crate::consumers::ack::Refused;
                let kind = match &e {
                    Refused::NotFound(_) => FailureKind::NotFound,
                    Refused::Unauthorized(_) => FailureKind::Unauthorized,
                    Refused::Conflict(_) => FailureKind::Conflict,
                    Refused::Unavailable(_) => FailureKind::Unavailable,
                };
                Err(Failure::new(kind, format!("acknowledgement refused: {e}")))
            }
        }
    }

    async fn secret_changed(&self, inv: &Invocation, event: SecretEvent) -> Outcome {
        if let Some(why) = foreign_vault(&self.settings, &event.vault) {
            return Ok(Report::new(Status::Ignored, format!("ignored: {why}")));
        }
        let rt = self.runtime().await?;
        if let Some(why) = wrong_vault(&self.settings, &rt.engine.policy, &event.vault, &event.secret) {
            return Ok(Report::new(Status::Ignored, format!("ignored: {why}")));
        }
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

/// Why an event from `vault` is not patrol's business, if it is not: with Key Vault configured, only the
/// consumer vaults' events are (patrol's own vault has no subscription and is never acted on).
pub fn foreign_vault(settings: &Settings, vault: &str) -> Option<String> {
    let names = settings.managed_vault_names()?;
    (!names.iter().any(|n| n.eq_ignore_ascii_case(vault)))
        .then(|| format!("vault {vault:?} is not a consumer vault patrol manages ({})", names.join(", ")))
}

/// Why an event about `secret` from the consumer vault `vault` is not about the managed token of that name, if
/// it is not: the token's PAT lives in another consumer vault (a same-named secret elsewhere is not patrol's).
pub fn wrong_vault(
    settings: &Settings,
    policy: &Policy,
    vault: &str,
    secret: &crate::domain::SecretName,
) -> Option<String> {
    let default = settings.consumer_vaults.first()?;
    let token = policy.token(secret)?;
    let home = token.vault.as_deref().unwrap_or(&default.name);
    (!home.eq_ignore_ascii_case(vault)).then(|| format!("secret {secret} is managed in vault {home:?}, not {vault:?}"))
}

/// Answers events from vaults patrol does not manage with `ignored` before the functions behind it build
/// anything (policy, stores, clients): a broken policy, a missing setting or no policy at all must never turn
/// a foreign event into a failure Event Grid redelivers for a day. Everything else passes through.
pub struct ForeignVaultGate {
    settings: Settings,
    inner: Arc<dyn Functions>,
}

impl ForeignVaultGate {
    pub fn new(settings: Settings, inner: Arc<dyn Functions>) -> Self {
        Self { settings, inner }
    }
}

#[async_trait]
impl Functions for ForeignVaultGate {
    async fn rotate_timer(&self, inv: &Invocation, timer: TimerRun) -> Outcome {
        self.inner.rotate_timer(inv, timer).await
    }

    async fn rotate_http(&self, inv: &Invocation, req: RotateRequest) -> Outcome {
        self.inner.rotate_http(inv, req).await
    }

    async fn acknowledge(&self, inv: &Invocation, ack: AckRequest) -> Outcome {
        self.inner.acknowledge(inv, ack).await
    }

    async fn secret_changed(&self, inv: &Invocation, event: SecretEvent) -> Outcome {
        if let Some(why) = foreign_vault(&self.settings, &event.vault) {
            tracing::info!(vault = %event.vault, secret = %event.secret, "event from a vault patrol does not manage ignored");
            return Ok(Report::new(Status::Ignored, format!("ignored: {why}")));
        }
        self.inner.secret_changed(inv, event).await
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
    // The one definition of "managed" (policy ⋈ journal ⋈ vault) the audit pass uses too.
    let m = crate::audit::managed::managed(&rt.engine.policy, rt.engine.store.as_ref(), rt.engine.state.as_ref()).await;
    if m.pats.is_empty() && !m.errors.is_empty() {
        let e = m.errors.join("; ");
        tracing::warn!(error = %e, "{what} skipped: cannot list managed PATs");
        out.insert(key.into(), json!({ "error": e }));
        return None;
    }
    Some(m.pats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::domain::SecretName;

    #[test]
    fn events_count_only_from_the_vault_a_token_lives_in() {
        let s = Settings::from_source(&Source::from_pairs([
            ("PATROL_KEYVAULT_URL", "https://consumer-kv.vault.azure.net/"),
            ("PATROL_CONSUMER_KEYVAULTS", "team-kv=https://team-kv.vault.azure.net/"),
        ]))
        .unwrap();
        let policy = Policy::parse(
            std::path::Path::new("patrol.toml"),
            "[defaults]\norganization = \"fabrikam\"\nowner = \"a@contoso.com\"\nscopes = \"vso.code\"\n\
             validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n[[token]]\nsecret = \"ci-pat\"\n\
             display_name = \"CI\"\n[[token]]\nsecret = \"team-pat\"\ndisplay_name = \"Team\"\nvault = \"team-kv\"\n",
        )
        .unwrap();
        let n = |s: &str| SecretName::parse(s).unwrap();
        assert_eq!(foreign_vault(&s, "Team-KV"), None);
        assert!(foreign_vault(&s, "patrol-own").is_some(), "patrol's own vault is not a consumer vault");
        assert_eq!(wrong_vault(&s, &policy, "consumer-kv", &n("ci-pat")), None);
        assert_eq!(wrong_vault(&s, &policy, "team-kv", &n("team-pat")), None);
        assert!(wrong_vault(&s, &policy, "team-kv", &n("ci-pat")).is_some());
        assert!(wrong_vault(&s, &policy, "consumer-kv", &n("team-pat")).is_some());
        assert_eq!(wrong_vault(&s, &policy, "team-kv", &n("unmanaged")), None, "the engine says unmanaged");
    }
}
