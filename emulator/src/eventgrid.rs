//! Event Grid delivery of Key Vault events: envelopes as in Microsoft's samples (`eventgrid/keyvault/…` in
//! ../shared/specs), at-least-once delivery to one configured subscriber URL, concurrently (one request per
//! event unless batching is on), with Event Grid's retry policy, dead-lettering, optional duplicates and
//! reordering.
//!
//! Three delivery shapes:
//! - [`DeliveryMode::FunctionsHost`] — as the Azure Functions host invokes a custom handler's Event Grid
//!   function: `POST {target}/{function}` with `{"Data":{"eventGridEvent":…},"Metadata":{"data":…,"sys":…}}`,
//!   one invocation per event;
//! - [`DeliveryMode::EventGridSchema`] — a raw Event Grid webhook: a JSON array of Event Grid-schema events,
//!   after the subscription-validation handshake (`SubscriptionValidationEvent`, answered with
//!   `{"validationResponse": code}`, or a GET of `validationUrl`);
//! - [`DeliveryMode::CloudEvents`] — CloudEvents 1.0 after the HTTP-webhook abuse-protection handshake
//!   (`OPTIONS` with `WebHook-Request-Origin`, answered with `WebHook-Allowed-Origin`): one event per
//!   request (`application/cloudevents+json`), or `application/cloudevents-batch+json` arrays with batching.
//!
//! Retries ([`RetryPolicy::EventGrid`], the default) follow Event Grid's documented policy on the virtual
//! clock: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, then hourly, at least 30 s after a 503, 2 min after
//! a 408, 5 min after a 400/401/403/404; 400 and 413 are dead-lettered at once when dead-lettering is on;
//! at most `maxAttempts` (30) within `eventTtlMinutes` (1440); then the event is dead-lettered (when on)
//! or dropped. [`RetryPolicy::Fast`] keeps compressed real-time delays for tests.
//!
//! Every event is also kept in a bounded log (`EventGrid::events`) so tests and the control API can see what
//! was raised even when nothing is subscribed.

use crate::clock::VirtualClock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

/// The event type of Event Grid's subscription-validation handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// The origin Event Grid names in the CloudEvents abuse-protection handshake.
pub const WEBHOOK_ORIGIN: &str = "eventgrid.azure.net";

pub const SECRET_NEW_VERSION_CREATED: &str = "Microsoft.KeyVault.SecretNewVersionCreated";
pub const SECRET_NEAR_EXPIRY: &str = "Microsoft.KeyVault.SecretNearExpiry";
pub const SECRET_EXPIRED: &str = "Microsoft.KeyVault.SecretExpired";

/// How many raised events the log keeps.
const LOG_CAPACITY: usize = 1000;

/// One Key Vault event as raised by the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyVaultEvent {
    pub id: String,
    pub event_type: String,
    pub vault_name: String,
    /// The vault's base URL, used to build `data.Id`.
    pub vault_url: String,
    pub object_name: String,
    pub version: String,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    #[default]
    FunctionsHost,
    #[serde(alias = "eventgrid")]
    EventGridSchema,
    #[serde(alias = "cloudevents")]
    CloudEvents,
}

impl std::str::FromStr for DeliveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "functions-host" => Ok(Self::FunctionsHost),
            "eventgrid" | "event-grid-schema" | "webhook" => Ok(Self::EventGridSchema),
            "cloudevents" | "cloud-events" => Ok(Self::CloudEvents),
            other => Err(format!("{other:?} is not one of functions-host, eventgrid, cloudevents")),
        }
    }
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RetryPolicy {
    /// Event Grid's documented schedule and per-status rules, on the virtual clock.
    #[default]
    EventGrid,
    /// `retryDelaysMs` in real milliseconds, for tests (400/413 still dead-letter at once when on).
    Fast,
}

impl std::str::FromStr for RetryPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "event-grid" | "eventgrid" => Ok(Self::EventGrid),
            "fast" => Ok(Self::Fast),
            other => Err(format!("{other:?} is not one of event-grid, fast")),
        }
    }
}

/// Where and how events are delivered. Changeable at run time (control API, CLI flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeliveryConfig {
    /// Subscriber base URL (`None`: events are only logged). For `functions-host` the function name is
    /// appended as a path segment.
    pub target: Option<String>,
    pub mode: DeliveryMode,
    /// Function name for `functions-host` mode.
    pub function: String,
    /// Extra copies of every event (same `id`), as at-least-once delivery allows.
    pub duplicates: u32,
    /// Deliver each batch of events raised together in reverse order.
    pub reorder: bool,
    /// Attempts per event before it is dead-lettered or dropped (Event Grid's default is 30).
    pub max_attempts: u32,
    /// How failed deliveries are retried.
    pub retry: RetryPolicy,
    /// Fast policy: delay before each retry, in real milliseconds (the last one repeats).
    pub retry_delays_ms: Vec<u64>,
    /// Event time-to-live in minutes (Event Grid's default: 1440); older events are not retried.
    pub event_ttl_minutes: u32,
    /// A dead-letter destination is configured: events given up on (and 400/413 at once) are dead-lettered
    /// instead of dropped. Off by default, as in Event Grid.
    pub dead_letter: bool,
    /// Batching (off by default, as in Event Grid): events raised together go in one request
    /// (eventgrid and cloudevents modes; the Functions host invokes one event at a time).
    pub batching: bool,
    /// Send `NBF`/`EXP` as numeric strings, as the official sample shows, instead of numbers.
    pub times_as_strings: bool,
    /// ARM id of the vault (`topic` / `source`).
    pub topic: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            target: None,
            mode: DeliveryMode::FunctionsHost,
            function: "EventGridSecretChanged".into(),
            duplicates: 0,
            reorder: false,
            max_attempts: 30,
            retry: RetryPolicy::EventGrid,
            retry_delays_ms: vec![100, 250, 500, 1000, 2000],
            event_ttl_minutes: 1440,
            dead_letter: false,
            batching: false,
            times_as_strings: false,
            topic: String::new(),
        }
    }
}

/// A delivery attempt's outcome, for the log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// An event given up on: dead-lettered (with dead-lettering on) or dropped.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GivenUp {
    pub event_id: String,
    /// `MaxDeliveryAttemptsExceeded`, `TimeToLiveExceeded`, or the HTTP status that is not retried.
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
}

/// The subscription's handshake state (eventgrid and cloudevents modes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Validation {
    /// Functions-host mode (the host's extension validates) or no target.
    NotRequired,
    Pending,
    Succeeded,
    Failed {
        reason: String,
    },
}

#[derive(Debug)]
struct Shared {
    config: DeliveryConfig,
    raised: VecDeque<KeyVaultEvent>,
    deliveries: VecDeque<DeliveryRecord>,
    dead_lettered: Vec<GivenUp>,
    dropped: Vec<GivenUp>,
    validation: Validation,
    /// Bumped on every configuration change; a handshake only settles its own generation.
    generation: u64,
    /// The pending validation code (eventgrid mode) and when manual validation stops being accepted.
    validation_code: Option<(String, OffsetDateTime)>,
    /// Base URL of the control API, for `validationUrl`.
    validation_base: Option<String>,
}

/// What the vault uses to raise events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Vec<KeyVaultEvent>>,
    shared: Arc<Mutex<Shared>>,
}

impl EventSink {
    /// Raises events that happened together (delivered as one batch, possibly reordered).
    pub fn raise(&self, events: Vec<KeyVaultEvent>) {
        if events.is_empty() {
            return;
        }
        {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            for e in &events {
                if s.raised.len() == LOG_CAPACITY {
                    s.raised.pop_front();
                }
                s.raised.push_back(e.clone());
            }
        }
        let _ = self.tx.send(events);
    }
}

/// The Event Grid side: configuration, logs, and the delivery task.
#[derive(Debug, Clone)]
pub struct EventGrid {
    shared: Arc<Mutex<Shared>>,
    http: reqwest::Client,
    clock: VirtualClock,
    runtime: tokio::runtime::Handle,
}

impl EventGrid {
    /// Starts the delivery task (and the subscription handshake, when the configuration needs one); returns
    /// the control handle and the sink the vault raises events into.
    pub fn start(clock: VirtualClock, config: DeliveryConfig) -> (Self, EventSink) {
        let shared = Arc::new(Mutex::new(Shared {
            config: DeliveryConfig::default(),
            raised: VecDeque::new(),
            deliveries: VecDeque::new(),
            dead_lettered: Vec::new(),
            dropped: Vec::new(),
            validation: Validation::NotRequired,
            generation: 0,
            validation_code: None,
            validation_base: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        // Event Grid waits 30 s for a response.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        tokio::spawn(deliver_loop(rx, Arc::clone(&shared), http.clone(), clock.clone()));
        let grid = Self { shared: Arc::clone(&shared), http, clock, runtime: tokio::runtime::Handle::current() };
        grid.set_config(config);
        (grid, EventSink { tx, shared })
    }

    pub fn config(&self) -> DeliveryConfig {
        self.lock().config.clone()
    }

    /// Replaces the subscription; in eventgrid and cloudevents modes the endpoint is validated first (as
    /// on subscription create/update) and nothing is delivered until it passed.
    pub fn set_config(&self, config: DeliveryConfig) {
        let needs = config.target.is_some() && config.mode != DeliveryMode::FunctionsHost;
        let generation = {
            let mut s = self.lock();
            s.generation += 1;
            s.config = config.clone();
            s.validation_code = None;
            s.validation = if needs { Validation::Pending } else { Validation::NotRequired };
            s.generation
        };
        if needs {
            let (shared, http, clock) = (Arc::clone(&self.shared), self.http.clone(), self.clock.clone());
            self.runtime.spawn(async move { handshake(&shared, &http, &clock, &config, generation).await });
        }
    }

    /// The base URL of the control API (`validationUrl` of the validation event points there).
    pub fn set_validation_base(&self, url: &str) {
        self.lock().validation_base = Some(url.trim_end_matches('/').to_owned());
    }

    /// The subscription's handshake state.
    pub fn validation(&self) -> Validation {
        self.lock().validation.clone()
    }

    /// Manual validation (a GET of `validationUrl`): accepted within 5 minutes of the validation event.
    pub fn validate_manually(&self, code: &str) -> bool {
        let now = self.clock.now();
        let mut s = self.lock();
        let ok = s.validation_code.as_ref().is_some_and(|(c, until)| c == code && now <= *until);
        if ok {
            s.validation = Validation::Succeeded;
            s.validation_code = None;
        }
        ok
    }

    /// Events given up on and dropped (no dead-letter destination).
    pub fn dropped(&self) -> Vec<GivenUp> {
        self.lock().dropped.clone()
    }

    /// Events dead-lettered, with the reason.
    pub fn dead_letters(&self) -> Vec<GivenUp> {
        self.lock().dead_lettered.clone()
    }

    /// Every event raised (most recent last, bounded).
    pub fn events(&self) -> Vec<KeyVaultEvent> {
        self.lock().raised.iter().cloned().collect()
    }

    /// Every delivery attempt (bounded).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().deliveries.iter().cloned().collect()
    }

    /// Ids of dead-lettered events.
    pub fn dead_lettered(&self) -> Vec<String> {
        self.lock().dead_lettered.iter().map(|d| d.event_id.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn time_value(t: Option<i64>, as_string: bool) -> Value {
    match (t, as_string) {
        (None, _) => Value::Null,
        (Some(t), true) => Value::String(t.to_string()),
        (Some(t), false) => json!(t),
    }
}

/// The event's `data` object (PascalCase keys, as Key Vault sends them).
pub fn data_of(e: &KeyVaultEvent, times_as_strings: bool) -> Value {
    json!({
        "Id": format!("{}/secrets/{}/{}", e.vault_url.trim_end_matches('/'), e.object_name, e.version),
        "VaultName": e.vault_name,
        "ObjectType": "Secret",
        "ObjectName": e.object_name,
        "Version": e.version,
        "NBF": time_value(e.nbf, times_as_strings),
        "EXP": time_value(e.exp, times_as_strings),
    })
}

/// The Event Grid-schema envelope.
pub fn event_grid_envelope(e: &KeyVaultEvent, cfg: &DeliveryConfig) -> Value {
    json!({
        "id": e.id,
        "topic": cfg.topic,
        "subject": e.object_name,
        "eventType": e.event_type,
        "eventTime": rfc3339(e.time),
        "data": data_of(e, cfg.times_as_strings),
        "dataVersion": "1",
        "metadataVersion": "1",
    })
}

/// The CloudEvents 1.0 envelope.
pub fn cloud_event_envelope(e: &KeyVaultEvent, cfg: &DeliveryConfig) -> Value {
    json!({
        "id": e.id,
        "source": cfg.topic,
        "subject": e.object_name,
        "type": e.event_type,
        "time": rfc3339(e.time),
        "data": data_of(e, cfg.times_as_strings),
        "specversion": "1.0",
    })
}

/// The body the Functions host posts to a custom handler for an Event Grid trigger.
pub fn functions_host_invocation(e: &KeyVaultEvent, cfg: &DeliveryConfig, now: OffsetDateTime) -> Value {
    json!({
        "Data": { "eventGridEvent": event_grid_envelope(e, cfg) },
        "Metadata": {
            "data": data_of(e, cfg.times_as_strings),
            "sys": {
                "MethodName": cfg.function,
                "UtcNow": rfc3339(now),
                "RandGuid": uuid::Uuid::new_v4().to_string(),
            }
        }
    })
}

async fn handshake(
    shared: &Mutex<Shared>,
    http: &reqwest::Client,
    clock: &VirtualClock,
    cfg: &DeliveryConfig,
    generation: u64,
) {
    let Some(target) = cfg.target.as_deref() else { return };
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    let outcome = match cfg.mode {
        DeliveryMode::FunctionsHost => return,
        DeliveryMode::EventGridSchema => {
            let code = uuid::Uuid::new_v4().to_string().to_uppercase();
            let base = {
                let mut s = lock();
                if s.generation != generation {
                    return;
                }
                s.validation_code = Some((code.clone(), clock.now() + time::Duration::minutes(5)));
                s.validation_base.clone()
            };
            let validation_url = base.map(|b| format!("{b}/_control/eventgrid/validate?code={code}"));
            let event = json!([{
                "id": uuid::Uuid::new_v4().to_string(),
                "topic": cfg.topic,
                "subject": "",
                "data": { "validationCode": code, "validationUrl": validation_url },
                "eventType": SUBSCRIPTION_VALIDATION,
                "eventTime": rfc3339(clock.now()),
                "metadataVersion": "1",
                "dataVersion": "1",
            }]);
            let r = http
                .post(target)
                .header("content-type", "application/json")
                .header("aeg-event-type", "SubscriptionValidation")
                .header("aeg-subscription-name", "PATROL-EMULATOR")
                .header("aeg-delivery-count", "0")
                .header("aeg-data-version", "1")
                .header("aeg-metadata-version", "1")
                .body(event.to_string())
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                    Ok(v) if v["validationResponse"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(&code)) => Ok(()),
                    Ok(_) => Err("the response did not echo the validationCode as validationResponse".to_owned()),
                    Err(e) => Err(format!("the response was not JSON: {e}")),
                },
                Ok(r) => Err(format!("the endpoint answered {} (Event Grid requires 200)", r.status().as_u16())),
                Err(e) => Err(format!("the endpoint could not be reached: {e}")),
            }
        }
        DeliveryMode::CloudEvents => {
            let r = http
                .request(reqwest::Method::OPTIONS, target)
                .header("WebHook-Request-Origin", WEBHOOK_ORIGIN)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let allowed = r.headers().get("webhook-allowed-origin").and_then(|v| v.to_str().ok());
                    match allowed {
                        Some(a) if a.trim() == "*" || a.trim().eq_ignore_ascii_case(WEBHOOK_ORIGIN) => Ok(()),
                        _ => Err("the OPTIONS response did not allow the origin (WebHook-Allowed-Origin)".to_owned()),
                    }
                }
                Ok(r) => Err(format!("the OPTIONS handshake was answered {}", r.status().as_u16())),
                Err(e) => Err(format!("the endpoint could not be reached: {e}")),
            }
        }
    };
    let mut s = lock();
    if s.generation != generation || s.validation != Validation::Pending {
        return; // replaced, or validated manually meanwhile
    }
    s.validation = match outcome {
        Ok(()) => {
            s.validation_code = None;
            Validation::Succeeded
        }
        Err(reason) => {
            tracing::warn!(%reason, "Event Grid subscription validation failed");
            Validation::Failed { reason }
        }
    };
}

/// Waits while the subscription's handshake is pending (bounded: Event Grid's 30 s response timeout plus
/// the 5 minutes manual validation may take); true when deliveries may go out.
async fn subscription_ready(shared: &Mutex<Shared>) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(330);
    loop {
        let v = shared.lock().unwrap_or_else(|p| p.into_inner()).validation.clone();
        match v {
            Validation::NotRequired | Validation::Succeeded => return true,
            Validation::Failed { .. } => return false,
            Validation::Pending if std::time::Instant::now() >= deadline => return false,
            Validation::Pending => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

async fn deliver_loop(
    mut rx: mpsc::UnboundedReceiver<Vec<KeyVaultEvent>>,
    shared: Arc<Mutex<Shared>>,
    http: reqwest::Client,
    clock: VirtualClock,
) {
    while let Some(mut batch) = rx.recv().await {
        let cfg = shared.lock().unwrap_or_else(|p| p.into_inner()).config.clone();
        if cfg.target.is_none() {
            continue;
        }
        if !subscription_ready(&shared).await {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            for e in &batch {
                push_record(&mut s, e, 0, None, Some("the subscription is not validated; nothing is delivered".into()));
            }
            continue;
        }
        if cfg.reorder {
            batch.reverse();
        }
        let groups: Vec<Vec<KeyVaultEvent>> = if cfg.batching && cfg.mode != DeliveryMode::FunctionsHost {
            batch.chunks(5000).map(<[KeyVaultEvent]>::to_vec).collect()
        } else {
            batch.into_iter().map(|e| vec![e]).collect()
        };
        for group in groups {
            for _copy in 0..=cfg.duplicates {
                // Every delivery runs on its own: a slow or failing subscriber holds up nothing else.
                let (http, shared, clock, cfg, group) =
                    (http.clone(), Arc::clone(&shared), clock.clone(), cfg.clone(), group.clone());
                tokio::spawn(async move { deliver(&http, &shared, &clock, &cfg, &group).await });
            }
        }
    }
}

fn push_record(s: &mut Shared, e: &KeyVaultEvent, attempt: u32, status: Option<u16>, error: Option<String>) {
    if s.deliveries.len() == LOG_CAPACITY {
        s.deliveries.pop_front();
    }
    s.deliveries.push_back(DeliveryRecord {
        event_id: e.id.clone(),
        event_type: e.event_type.clone(),
        attempt,
        status,
        error,
    });
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Retry after this long (virtual time for the Event Grid policy, real time for the fast one).
    RetryAfter(time::Duration),
    /// Give up: dead-letter (when on) or drop, for this reason.
    GiveUp(String),
}

/// Event Grid's documented retry schedule (best effort; the service randomizes a little).
const SCHEDULE_SECS: &[i64] = &[10, 30, 60, 300, 600, 1800, 3600];

/// The retry decision after attempt `attempt` (1-based) failed with `status` (`None`: no response).
pub fn next_step(cfg: &DeliveryConfig, attempt: u32, status: Option<u16>, age: time::Duration) -> Next {
    if cfg.dead_letter && matches!(status, Some(400 | 413)) {
        return Next::GiveUp(format!("{} (not retried)", status.unwrap_or_default()));
    }
    if attempt >= cfg.max_attempts.max(1) {
        return Next::GiveUp("MaxDeliveryAttemptsExceeded".into());
    }
    let delay = match cfg.retry {
        RetryPolicy::Fast => {
            let idx = (attempt as usize - 1).min(cfg.retry_delays_ms.len().saturating_sub(1));
            time::Duration::milliseconds(cfg.retry_delays_ms.get(idx).copied().unwrap_or(1000) as i64)
        }
        RetryPolicy::EventGrid => {
            let scheduled = SCHEDULE_SECS[(attempt as usize - 1).min(SCHEDULE_SECS.len() - 1)];
            let at_least = match status {
                Some(400 | 401 | 403 | 404) => 300,
                Some(408) => 120,
                Some(503) => 30,
                _ => 10,
            };
            time::Duration::seconds(scheduled.max(at_least))
        }
    };
    if cfg.retry == RetryPolicy::EventGrid && age + delay > time::Duration::minutes(i64::from(cfg.event_ttl_minutes)) {
        return Next::GiveUp("TimeToLiveExceeded".into());
    }
    Next::RetryAfter(delay)
}

/// Sleeps until the virtual clock reaches `due` (control-API clock moves are noticed within 100 ms).
async fn sleep_until_virtual(clock: &VirtualClock, due: OffsetDateTime) {
    loop {
        let left = due - clock.now();
        if !left.is_positive() {
            return;
        }
        let step = left.min(time::Duration::milliseconds(100));
        tokio::time::sleep(std::time::Duration::from_millis(step.whole_milliseconds().max(1) as u64)).await;
    }
}

fn request(
    http: &reqwest::Client,
    target: &str,
    cfg: &DeliveryConfig,
    clock: &VirtualClock,
    events: &[KeyVaultEvent],
    attempt: u32,
) -> Option<reqwest::RequestBuilder> {
    let count = (attempt - 1).to_string();
    Some(match cfg.mode {
        DeliveryMode::FunctionsHost => {
            let event = events.first()?;
            let url = format!("{}/{}", target.trim_end_matches('/'), cfg.function);
            // As the Functions host does: a fresh invocation id per attempt, its version and user agent.
            http.post(url)
                .header("content-type", "application/json; charset=utf-8")
                .header("x-azure-functions-invocationid", uuid::Uuid::new_v4().to_string())
                .header("x-azure-functions-hostversion", "4.1040.300.0")
                .header("user-agent", "Azure-Functions-Host/4.1040.300.0")
                .json(&functions_host_invocation(event, cfg, clock.now()))
        }
        DeliveryMode::EventGridSchema => http
            .post(target)
            .header("content-type", "application/json")
            .header("aeg-event-type", "Notification")
            .header("aeg-subscription-name", "PATROL-EMULATOR")
            .header("aeg-delivery-count", count)
            .header("aeg-data-version", "1")
            .header("aeg-metadata-version", "1")
            .json(&Value::Array(events.iter().map(|e| event_grid_envelope(e, cfg)).collect())),
        DeliveryMode::CloudEvents if cfg.batching => http
            .post(target)
            .header("content-type", "application/cloudevents-batch+json; charset=utf-8")
            .header("aeg-event-type", "Notification")
            .header("aeg-delivery-count", count)
            .body(Value::Array(events.iter().map(|e| cloud_event_envelope(e, cfg)).collect()).to_string()),
        DeliveryMode::CloudEvents => http
            .post(target)
            .header("content-type", "application/cloudevents+json; charset=utf-8")
            .header("aeg-event-type", "Notification")
            .header("aeg-delivery-count", count)
            .body(cloud_event_envelope(events.first()?, cfg).to_string()),
    })
}

/// Delivers one request's events until a 200–204, or gives up by the retry policy.
async fn deliver(
    http: &reqwest::Client,
    shared: &Mutex<Shared>,
    clock: &VirtualClock,
    cfg: &DeliveryConfig,
    events: &[KeyVaultEvent],
) {
    let Some(target) = cfg.target.as_deref() else { return };
    let Some(first) = events.first() else { return };
    for attempt in 1.. {
        let Some(req) = request(http, target, cfg, clock, events, attempt) else { return };
        let (status, error) = match req.send().await {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = status.is_some_and(|s| (200..=204).contains(&s));
        let next = if ok { None } else { Some(next_step(cfg, attempt, status, clock.now() - first.time)) };
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            for e in events {
                push_record(&mut s, e, attempt, status, error.clone());
            }
            if let Some(Next::GiveUp(reason)) = &next {
                for e in events {
                    let g = GivenUp {
                        event_id: e.id.clone(),
                        reason: reason.clone(),
                        attempts: attempt,
                        last_status: status,
                    };
                    if cfg.dead_letter {
                        s.dead_lettered.push(g);
                    } else {
                        s.dropped.push(g);
                    }
                }
                let bound = |v: &mut Vec<GivenUp>| {
                    if v.len() > LOG_CAPACITY {
                        v.drain(..v.len() - LOG_CAPACITY);
                    }
                };
                bound(&mut s.dead_lettered);
                bound(&mut s.dropped);
            }
        }
        match next {
            None | Some(Next::GiveUp(_)) => return,
            Some(Next::RetryAfter(d)) => match cfg.retry {
                RetryPolicy::Fast => {
                    tokio::time::sleep(std::time::Duration::from_millis(d.whole_milliseconds().max(0) as u64)).await
                }
                RetryPolicy::EventGrid => sleep_until_virtual(clock, clock.now() + d).await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_sample_shape() {
        let sample = crate::specs::spec_json("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
        let e = KeyVaultEvent {
            id: "00eccf70-95a7-4e7c-8299-2eb17ee9ad64".into(),
            event_type: SECRET_NEW_VERSION_CREATED.into(),
            vault_name: "sample-kv".into(),
            vault_url: "https://sample-kv.vault.azure.net/".into(),
            object_name: "newsecret".into(),
            version: "ee059b2bb5bc48398a53b168c6cdcb10".into(),
            nbf: Some(1559081980),
            exp: Some(1559082102),
            time: OffsetDateTime::from_unix_timestamp(1564016913).unwrap(),
        };
        let cfg = DeliveryConfig {
            topic: "/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv"
                .into(),
            times_as_strings: true,
            ..Default::default()
        };
        let ours = event_grid_envelope(&e, &cfg);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&sample));
        assert_eq!(ours["data"], sample["data"]);
        assert_eq!(ours["topic"], sample["topic"]);
        let numeric = data_of(&e, false);
        assert_eq!(numeric["EXP"], json!(1559082102));
    }

    #[test]
    fn retry_policy_follows_event_grid() {
        let cfg = DeliveryConfig::default();
        let zero = time::Duration::ZERO;
        let secs = |s: i64| Next::RetryAfter(time::Duration::seconds(s));
        assert_eq!((cfg.max_attempts, cfg.event_ttl_minutes, cfg.dead_letter, cfg.batching), (30, 1440, false, false));
        assert_eq!(next_step(&cfg, 1, Some(500), zero), secs(10));
        assert_eq!(next_step(&cfg, 2, None, zero), secs(30));
        assert_eq!(next_step(&cfg, 1, Some(503), zero), secs(30));
        assert_eq!(next_step(&cfg, 1, Some(408), zero), secs(120));
        assert_eq!(next_step(&cfg, 1, Some(404), zero), secs(300));
        assert_eq!(next_step(&cfg, 1, Some(400), zero), secs(300), "400 is retried without a dead-letter destination");
        assert_eq!(next_step(&cfg, 9, Some(500), zero), secs(3600));
        assert_eq!(next_step(&cfg, 30, Some(500), zero), Next::GiveUp("MaxDeliveryAttemptsExceeded".into()));
        assert_eq!(
            next_step(&cfg, 12, Some(500), time::Duration::hours(23) + time::Duration::minutes(30)),
            Next::GiveUp("TimeToLiveExceeded".into())
        );
        let dl = DeliveryConfig { dead_letter: true, ..DeliveryConfig::default() };
        assert!(matches!(next_step(&dl, 1, Some(400), zero), Next::GiveUp(_)));
        assert!(matches!(next_step(&dl, 1, Some(413), zero), Next::GiveUp(_)));
        assert_eq!(next_step(&dl, 1, Some(500), zero), secs(10));
        let fast =
            DeliveryConfig { retry: RetryPolicy::Fast, retry_delays_ms: vec![5, 7], ..DeliveryConfig::default() };
        assert_eq!(next_step(&fast, 1, Some(500), zero), Next::RetryAfter(time::Duration::milliseconds(5)));
        assert_eq!(next_step(&fast, 4, Some(503), zero), Next::RetryAfter(time::Duration::milliseconds(7)));
    }
}
