//! The [`Notifier`]: takes a run's addressed notices, drops expiry announcements already made, builds one
//! digest per target, delivers each through its channel with retries and backoff, and returns a
//! [`DeliveryReport`] for the run summary. It never fails and never panics on its caller: a missing or
//! failing channel is logged and reported, and the rotation goes on.
//!
//! Routing: `email:…` goes to SMTP when configured and to the mailbox file when configured (both when
//! both are); `teams`, `slack` and `webhook` go to their configured webhook. A target whose channel is not
//! configured is reported as `not_configured`.

use super::channel::{Channel, SendError};
use super::digest::{Digest, Message, Report, group};
use super::expiry::{ExpiryLedger, OnceKey};
use super::mailbox::MailboxChannel;
use super::redact::Redactor;
use super::slack::SlackChannel;
use super::smtp::{SmtpChannel, parse_from};
use super::teams::TeamsChannel;
use super::webhook::WebhookChannel;
use super::{Addressed, Target};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::SecretName;
use crate::state::StateStore;
use crate::store::SecretStore;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How hard delivery tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    /// The wait between attempts: doubling from 0.5 s up to 8 s, a fifth of it random (a `Retry-After`
    /// from the channel lengthens it, up to `backoff.max`).
    pub backoff: Backoff,
    /// Upper bound of one attempt (connect, TLS, send).
    pub attempt_timeout: Duration,
    /// Upper bound of one `deliver_run` / `send_report`: no attempt starts after it, so a dead mail
    /// server cannot eat the invocation's time budget.
    pub run_budget: Duration,
    /// Messages sent at once.
    pub concurrency: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Backoff::exponential(Duration::from_millis(500), Duration::from_secs(8)).with_jitter(0.2),
            attempt_timeout: Duration::from_secs(30),
            run_budget: Duration::from_secs(120),
            concurrency: 8,
        }
    }
}

impl DeliveryPolicy {
    /// The wait before attempt `n + 1` (n ≥ 1): the backoff, or the channel's `Retry-After` when longer
    /// (capped at `backoff.max`).
    fn wait_before(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let wait = self.backoff.delay_random(n.saturating_sub(1));
        retry_after.map_or(wait, |ra| ra.min(self.backoff.max).max(wait))
    }
}

/// What happened to one target's message on one channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    Failed {
        error: String,
    },
    /// The target names a channel that is not configured (or could not be set up: `reason`).
    NotConfigured {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryOutcome {
    pub target: String,
    pub channel: &'static str,
    /// Notices in the message.
    pub notices: usize,
    pub attempts: u32,
    #[serde(flatten)]
    pub status: DeliveryStatus,
}

/// The delivery part of a run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryReport {
    pub outcomes: Vec<DeliveryOutcome>,
    /// (notice, target) pairs not sent because they were announced before.
    pub suppressed_repeats: usize,
    /// The sent-state could not be read or written (announcements may repeat until it is fixed).
    pub state_error: Option<String>,
}

impl DeliveryReport {
    pub fn all_delivered(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == DeliveryStatus::Delivered) && self.state_error.is_none()
    }

    pub fn failures(&self) -> impl Iterator<Item = &DeliveryOutcome> {
        self.outcomes.iter().filter(|o| o.status != DeliveryStatus::Delivered)
    }
}

/// A configured channel, or why it could not be set up.
/// A channel as the settings configured it: the channel, or why it could not be set up.
type Slot = Result<Arc<dyn Channel>, String>;

/// Whether a channel serves a target.
type Serves = fn(&Target) -> bool;

/// Every kind of channel, with the targets it serves: a target is delivered through each configured channel
/// that serves it (an email through SMTP and the mailbox file). A new channel is a row here, its
/// constructor (below, one per channel) and its [`Channel`] implementation.
const ROUTES: [(&str, Serves); 5] = [
    ("smtp", |t| matches!(t, Target::Email(_))),
    ("mailbox", |t| matches!(t, Target::Email(_))),
    ("teams", |t| matches!(t, Target::Teams)),
    ("slack", |t| matches!(t, Target::Slack)),
    ("webhook", |t| matches!(t, Target::Webhook)),
];

/// The SMTP channel (`PATROL_SMTP_*`); its password is added to the redactor.
async fn smtp_channel(
    n: &crate::config::NotifySettings,
    secrets: Option<&dyn SecretStore>,
    ca: &Result<Option<Vec<u8>>, String>,
    redactor: &mut Redactor,
) -> Option<Slot> {
    let s = n.smtp.as_ref()?;
    Some(
        async {
            let password = match (&s.password, &s.password_secret) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(name)) => Some(smtp_password_from_store(name, secrets).await?),
                (None, None) => None,
            };
            if let Some(p) = &password {
                redactor.add(p);
            }
            let ca = ca.clone()?;
            SmtpChannel::new(s, password, ca.as_deref()).map(|c| Arc::new(c) as Arc<dyn Channel>)
        }
        .await,
    )
}

/// The mailbox file (`PATROL_MAILBOX_FILE`), from the SMTP sender when there is one.
fn mailbox_channel(n: &crate::config::NotifySettings) -> Option<Slot> {
    let from = n.smtp.as_ref().map_or("patrol@localhost", |s| s.from.as_str());
    let path = n.mailbox_file.as_ref()?;
    Some(parse_from(from).map(|f| Arc::new(MailboxChannel::new(path.clone(), f)) as Arc<dyn Channel>))
}

/// A chat or generic webhook at `url` (Teams, Slack, the signed webhook).
fn webhook_channel(
    url: &Option<secrecy::SecretString>,
    client: &Result<reqwest::Client, String>,
    make: fn(reqwest::Client, secrecy::SecretString) -> Arc<dyn Channel>,
) -> Option<Slot> {
    url.as_ref().map(|u| client.clone().map(|c| make(c, u.clone())))
}

/// State of one run: its deadline, and channels found unreachable (retries exhausted on a transient
/// error), which are not tried again for the other recipients of the same run.
struct Run {
    deadline: tokio::time::Instant,
    broken: std::sync::Mutex<Vec<(&'static str, String)>>,
}

impl Run {
    fn new(budget: Duration) -> Self {
        Self { deadline: tokio::time::Instant::now() + budget, broken: std::sync::Mutex::new(Vec::new()) }
    }

    fn broken(&self, channel: &str) -> Option<String> {
        let b = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.iter().find(|(c, _)| *c == channel).map(|(_, e)| e.clone())
    }

    fn mark_broken(&self, channel: &'static str, error: &str) {
        let mut b = self.broken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !b.iter().any(|(c, _)| *c == channel) {
            b.push((channel, error.to_owned()));
        }
    }
}

/// Delivers notices and reports. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The configured channels, by their [`ROUTES`] name.
    channels: Vec<(&'static str, Slot)>,
    ledger: Option<ExpiryLedger>,
    redactor: Redactor,
    retry: DeliveryPolicy,
    clock: Clock,
}

impl Notifier {
    /// A notifier for `settings`. The SMTP password comes from `PATROL_SMTP_PASSWORD` or, with
    /// `PATROL_SMTP_PASSWORD_SECRET`, from `secrets`. `state` keeps the once-only expiry announcements
    /// (without it they are sent every run). A channel that cannot be set up is reported on each delivery
    /// to it; this never fails.
    pub async fn from_settings(
        settings: &Settings,
        secrets: Option<&dyn SecretStore>,
        state: Option<Arc<dyn StateStore>>,
        clock: Clock,
    ) -> Self {
        let n = &settings.notify;
        let mut redactor = Redactor::new();
        for url in [&n.teams_webhook_url, &n.slack_webhook_url, &n.webhook_url].into_iter().flatten() {
            redactor.add(url);
        }
        let ca = match &settings.ca_cert {
            None => Ok(None),
            Some(p) => std::fs::read(p).map(Some).map_err(|e| format!("PATROL_CA_CERT {}: {e}", p.display())),
        };

        let client = ca.clone().and_then(|ca| super::http::client(ca.as_deref()));
        let channels = [
            ("smtp", smtp_channel(n, secrets, &ca, &mut redactor).await),
            ("mailbox", mailbox_channel(n)),
            ("teams", webhook_channel(&n.teams_webhook_url, &client, |c, u| Arc::new(TeamsChannel::new(c, u)))),
            ("slack", webhook_channel(&n.slack_webhook_url, &client, |c, u| Arc::new(SlackChannel::new(c, u)))),
            ("webhook", webhook_channel(&n.webhook_url, &client, |c, u| Arc::new(WebhookChannel::new(c, u)))),
        ];
        Self {
            channels: channels.into_iter().filter_map(|(name, slot)| slot.map(|s| (name, s))).collect(),
            ledger: state.map(ExpiryLedger::new),
            redactor,
            retry: DeliveryPolicy::default(),
            clock,
        }
    }

    pub fn with_retry(mut self, retry: DeliveryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Registers more values that must never appear in a message (e.g. every PAT value of the run).
    pub fn with_secret(mut self, secret: &secrecy::SecretString) -> Self {
        self.redactor.add(secret);
        self
    }

    /// The channels a target is delivered through, with their names.
    fn route(&self, target: &Target) -> Vec<(&'static str, Option<&Slot>)> {
        ROUTES
            .iter()
            .filter(|(_, serves)| serves(target))
            .map(|(name, _)| (*name, self.channels.iter().find(|(n, _)| n == name).map(|(_, s)| s)))
            .collect()
    }

    /// Delivers a run's notices: one digest per target, expiry announcements once. Never fails.
    pub async fn deliver_run(&self, addressed: Vec<Addressed>) -> DeliveryReport {
        let now = self.clock.now();
        let mut report = DeliveryReport::default();

        // 1. Once-only announcements: claim (notice, target) pairs; drop the ones made before.
        let mut once: Vec<(OnceKey, Target)> = Vec::new();
        for a in &addressed {
            if let Some(k) = OnceKey::of(&a.notice) {
                for t in &a.targets {
                    if !once.iter().any(|(k2, t2)| k2 == &k && t2 == t) {
                        once.push((k.clone(), t.clone()));
                    }
                }
            }
        }
        let mut skip: Vec<(OnceKey, Target)> = Vec::new();
        let mut claimed: Vec<(OnceKey, Target)> = Vec::new();
        if let (Some(ledger), false) = (&self.ledger, once.is_empty()) {
            match ledger.claim(&once, now).await {
                Ok(fresh) => {
                    for (item, is_new) in once.into_iter().zip(fresh) {
                        if is_new { claimed.push(item) } else { skip.push(item) }
                    }
                }
                Err(e) => {
                    let msg = self.redactor.clean(&e.to_string());
                    tracing::error!(error = %msg, "notification state unavailable; expiry announcements may repeat");
                    report.state_error = Some(msg);
                }
            }
        }
        report.suppressed_repeats = skip.len();
        let addressed: Vec<Addressed> = addressed
            .into_iter()
            .filter_map(|mut a| {
                if let Some(k) = OnceKey::of(&a.notice) {
                    a.targets.retain(|t| !skip.iter().any(|(k2, t2)| k2 == &k && t2 == t));
                }
                (!a.targets.is_empty()).then_some(a)
            })
            .collect();

        // 2. One digest per target, delivered concurrently (bounded), within the run budget.
        let digests = group(&addressed);
        let run = Run::new(self.retry.run_budget);
        let run = &run;
        // Collected into a Vec first: a lazy `Map<Iter, closure>` inside the stream makes this future's
        // `Send`-ness depend on a higher-ranked closure bound the compiler cannot prove, so callers inside a
        // spawned (`Send`) task could not await `deliver_run`.
        let sends: Vec<_> = digests
            .iter()
            .map(|d| async move {
                let msg = d.message(&self.redactor, now);
                (d, self.deliver(run, &d.target, &msg, d.notices.len()).await)
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(sends).buffered(self.retry.concurrency.max(1)).collect().await;

        // 3. Release claims of targets nothing reached, so the next run tries again.
        let mut release = Vec::new();
        for (d, outcomes) in &results {
            let reached = outcomes.iter().any(|o| o.status == DeliveryStatus::Delivered);
            if !reached {
                release.extend(claimed_for(d, &claimed));
            }
        }
        if let (Some(ledger), false) = (&self.ledger, release.is_empty())
            && let Err(e) = ledger.release(&release).await
        {
            let msg = self.redactor.clean(&e.to_string());
            tracing::error!(error = %msg, "could not release failed expiry announcements; they will not be retried");
            report.state_error.get_or_insert(msg);
        }
        report.outcomes = results.into_iter().flat_map(|(_, o)| o).collect();
        report
    }

    /// Sends an arbitrary report (the weekly report) to `targets`. Never fails.
    pub async fn send_report(&self, targets: &[Target], report: &Report) -> DeliveryReport {
        let msg = report.message(&self.redactor);
        let mut unique: Vec<&Target> = Vec::new();
        for t in targets {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        let run = Run::new(self.retry.run_budget);
        let sends: Vec<_> = unique.into_iter().map(|t| self.deliver(&run, t, &msg, 0)).collect();
        let outcomes: Vec<Vec<DeliveryOutcome>> =
            futures::stream::iter(sends).buffered(self.retry.concurrency.max(1)).collect().await;
        let outcomes = outcomes.into_iter().flatten().collect();
        DeliveryReport { outcomes, ..DeliveryReport::default() }
    }

    /// Delivers `msg` to `target` on each channel routed for it.
    async fn deliver(&self, run: &Run, target: &Target, msg: &Message, notices: usize) -> Vec<DeliveryOutcome> {
        let route = self.route(target);
        let configured: Vec<_> = route.iter().filter(|(_, s)| s.is_some()).collect();
        if configured.is_empty() {
            let names: Vec<&str> = route.iter().map(|(n, _)| *n).collect();
            let reason = format!("no {} channel is configured", names.join(" or "));
            tracing::warn!(target = %target, reason = %reason, "notification not delivered");
            return vec![DeliveryOutcome {
                target: target.to_string(),
                channel: route.first().map_or("none", |(n, _)| *n),
                notices,
                attempts: 0,
                status: DeliveryStatus::NotConfigured { reason },
            }];
        }
        let mut out = Vec::new();
        for (name, slot) in configured {
            let outcome = match slot {
                Some(Ok(ch)) => self.send_with_retry(run, ch.as_ref(), target, msg, notices).await,
                Some(Err(reason)) => {
                    let reason = self.redactor.clean(reason);
                    tracing::error!(target = %target, channel = name, reason = %reason, "notification channel misconfigured");
                    DeliveryOutcome {
                        target: target.to_string(),
                        channel: name,
                        notices,
                        attempts: 0,
                        status: DeliveryStatus::NotConfigured { reason },
                    }
                }
                None => continue,
            };
            out.push(outcome);
        }
        out
    }

    async fn send_with_retry(
        &self,
        run: &Run,
        ch: &dyn Channel,
        target: &Target,
        msg: &Message,
        notices: usize,
    ) -> DeliveryOutcome {
        let outcome = |attempts, status| DeliveryOutcome {
            target: target.to_string(),
            channel: ch.name(),
            notices,
            attempts,
            status,
        };
        let failed = |attempts, error: String| {
            tracing::error!(target = %target, channel = ch.name(), attempts, error = %error, "notification delivery failed");
            outcome(attempts, DeliveryStatus::Failed { error })
        };
        if let Some(e) = run.broken(ch.name()) {
            return failed(
                0,
                format!("not attempted: {} was unreachable for another recipient in this run ({e})", ch.name()),
            );
        }
        let mut attempts = 0;
        loop {
            let left = run.deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return failed(
                    attempts,
                    format!("not attempted: the notification time budget of {:?} was used up", self.retry.run_budget),
                );
            }
            attempts += 1;
            let limit = self.retry.attempt_timeout.min(left);
            let result = match tokio::time::timeout(limit, ch.send(target, msg)).await {
                Ok(r) => r,
                Err(_) => Err(SendError::retryable(format!("{} attempt timed out after {limit:?}", ch.name()))),
            };
            match result {
                Ok(()) => {
                    tracing::info!(target = %target, channel = ch.name(), attempts, notices, "notification delivered");
                    return outcome(attempts, DeliveryStatus::Delivered);
                }
                Err(e) if e.retryable && attempts >= self.retry.max_attempts => {
                    // Server trouble that outlasted the retries: spare the other recipients the wait.
                    let error = self.redactor.clean(&e.message);
                    run.mark_broken(ch.name(), &error);
                    return failed(attempts, error);
                }
                Err(e) if e.retryable => {
                    let wait = self.retry.wait_before(attempts, e.retry_after);
                    tracing::warn!(
                        target = %target, channel = ch.name(), attempts, error = %self.redactor.clean(&e.message),
                        retry_in_ms = wait.as_millis() as u64, "notification attempt failed; retrying"
                    );
                    let left = run.deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(wait.min(left)).await;
                }
                Err(e) => return failed(attempts, self.redactor.clean(&e.message)),
            }
        }
    }
}

fn claimed_for(d: &Digest, claimed: &[(OnceKey, Target)]) -> Vec<(OnceKey, Target)> {
    claimed
        .iter()
        .filter(|(k, t)| t == &d.target && d.notices.iter().any(|n| OnceKey::of(n).as_ref() == Some(k)))
        .cloned()
        .collect()
}

async fn smtp_password_from_store(
    name: &str,
    secrets: Option<&dyn SecretStore>,
) -> Result<secrecy::SecretString, String> {
    let secret = SecretName::parse(name).map_err(|e| format!("PATROL_SMTP_PASSWORD_SECRET: {e}"))?;
    let store =
        secrets.ok_or_else(|| "PATROL_SMTP_PASSWORD_SECRET is set but no secret store is available".to_owned())?;
    match store.get(&secret, None).await {
        Ok(Some(s)) => Ok(s.value),
        Ok(None) => Err(format!("PATROL_SMTP_PASSWORD_SECRET names secret {secret}, which does not exist")),
        Err(e) => Err(format!("cannot read the SMTP password from secret {secret}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time: the run and report deliveries can be awaited inside spawned (`Send`) tasks, such as
    /// the handler's `async_trait` functions.
    #[allow(dead_code)]
    fn deliveries_are_send(n: &Notifier, targets: &[Target], r: &Report) {
        fn is_send<T: Send>(_: T) {}
        is_send(n.deliver_run(Vec::new()));
        is_send(n.send_report(targets, r));
    }

    #[tokio::test]
    async fn the_notifier_holds_the_configured_channels_and_routes_each_target_to_its_own() {
        let names: Vec<_> = ROUTES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["smtp", "mailbox", "teams", "slack", "webhook"]);
        let dir = tempfile::tempdir().unwrap();
        let mailbox = dir.path().join("mail.txt");
        let settings = crate::config::Settings::from_source(&crate::config::Source::from_pairs([
            ("PATROL_MAILBOX_FILE", mailbox.to_str().unwrap()),
            ("PATROL_TEAMS_WEBHOOK_URL", "https://contoso.webhook.office.com/x"),
        ]))
        .unwrap();
        let n = Notifier::from_settings(&settings, None, None, Clock::system()).await;
        let configured: Vec<_> = n.channels.iter().map(|(name, slot)| (*name, slot.is_ok())).collect();
        assert_eq!(configured, [("mailbox", true), ("teams", true)]);
        let route = |t: &Target| n.route(t).into_iter().map(|(name, s)| (name, s.is_some())).collect::<Vec<_>>();
        assert_eq!(route(&Target::Email("a@contoso.com".into())), [("smtp", false), ("mailbox", true)]);
        assert_eq!(route(&Target::Teams), [("teams", true)]);
        assert_eq!(route(&Target::Slack), [("slack", false)]);
        assert_eq!(route(&Target::Webhook), [("webhook", false)]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = DeliveryPolicy {
            max_attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_millis(350)).with_jitter(0.2),
            attempt_timeout: Duration::from_secs(1),
            ..DeliveryPolicy::default()
        };
        let b1 = p.wait_before(1, None);
        assert!(b1 >= Duration::from_millis(80) && b1 <= Duration::from_millis(100), "{b1:?}");
        let b2 = p.wait_before(2, None);
        assert!(b2 >= Duration::from_millis(160) && b2 <= Duration::from_millis(200), "{b2:?}");
        let b10 = p.wait_before(10, None);
        assert!(b10 >= Duration::from_millis(280) && b10 <= Duration::from_millis(350), "{b10:?}");
        assert_eq!(p.wait_before(1, Some(Duration::from_secs(60))), Duration::from_millis(350));
    }
}
