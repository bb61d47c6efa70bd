//! Event Grid delivery of Key Vault events: envelopes as in Microsoft's samples (`eventgrid/keyvault/…` in
//! ../shared/specs), at-least-once
//! delivery to one configured subscriber URL with retries on non-2xx, optional duplicates and reordering.
//!
//! Three delivery shapes:
//! - [`DeliveryMode::FunctionsHost`] — as the Azure Functions host invokes a custom handler's Event Grid
//!   function: `POST {target}/{function}` with `{"Data":{"eventGridEvent":…},"Metadata":{"data":…,"sys":…}}`,
//!   one invocation per event;
//! - [`DeliveryMode::EventGridSchema`] — a raw Event Grid webhook: a JSON array of Event Grid-schema events;
//! - [`DeliveryMode::CloudEvents`] — a JSON array of CloudEvents 1.0 events (`application/cloudevents-batch+json`).
//!
//! Every event is also kept in a bounded log (`EventGrid::events`) so tests and the control API can see what
//! was raised even when nothing is subscribed. Retry delays are compressed (milliseconds, configurable) so
//! the real schedule (10 s, 30 s, 1 min, …) does not slow tests down.

use crate::clock::VirtualClock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

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
    EventGridSchema,
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
    /// Attempts per event before it is dead-lettered (Event Grid's default is 30).
    pub max_attempts: u32,
    /// Delay before each retry, in milliseconds (the last one repeats).
    pub retry_delays_ms: Vec<u64>,
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
            max_attempts: 8,
            retry_delays_ms: vec![100, 250, 500, 1000, 2000],
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

#[derive(Debug, Default)]
struct Shared {
    config: DeliveryConfig,
    raised: VecDeque<KeyVaultEvent>,
    deliveries: VecDeque<DeliveryRecord>,
    dead_lettered: Vec<String>,
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
}

impl EventGrid {
    /// Starts the delivery task; returns the control handle and the sink the vault raises events into.
    pub fn start(clock: VirtualClock, config: DeliveryConfig) -> (Self, EventSink) {
        let shared = Arc::new(Mutex::new(Shared { config, ..Default::default() }));
        let (tx, rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        tokio::spawn(deliver_loop(rx, Arc::clone(&shared), http, clock));
        (Self { shared: Arc::clone(&shared) }, EventSink { tx, shared })
    }

    pub fn config(&self) -> DeliveryConfig {
        self.lock().config.clone()
    }

    pub fn set_config(&self, config: DeliveryConfig) {
        self.lock().config = config;
    }

    /// Every event raised (most recent last, bounded).
    pub fn events(&self) -> Vec<KeyVaultEvent> {
        self.lock().raised.iter().cloned().collect()
    }

    /// Every delivery attempt (bounded).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().deliveries.iter().cloned().collect()
    }

    /// Ids of events given up on after `max_attempts`.
    pub fn dead_lettered(&self) -> Vec<String> {
        self.lock().dead_lettered.clone()
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
        if cfg.reorder {
            batch.reverse();
        }
        for event in batch {
            for _copy in 0..=cfg.duplicates {
                // Each copy is delivered independently, so a slow subscriber does not hold up the rest.
                let (http, shared, clock, copy_cfg, event) =
                    (http.clone(), Arc::clone(&shared), clock.clone(), cfg.clone(), event.clone());
                let handle = tokio::spawn(async move { deliver_one(&http, &shared, &clock, &copy_cfg, &event).await });
                if !cfg.reorder {
                    // In order unless asked otherwise: wait for this copy's first outcome.
                    let _ = handle.await;
                }
            }
        }
    }
}

async fn deliver_one(
    http: &reqwest::Client,
    shared: &Mutex<Shared>,
    clock: &VirtualClock,
    cfg: &DeliveryConfig,
    event: &KeyVaultEvent,
) {
    let Some(target) = cfg.target.as_deref() else { return };
    let max_attempts = cfg.max_attempts.max(1);
    for attempt in 1..=max_attempts {
        let request = match cfg.mode {
            DeliveryMode::FunctionsHost => {
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
                .header("aeg-delivery-count", (attempt - 1).to_string())
                .header("aeg-data-version", "1")
                .header("aeg-metadata-version", "1")
                .json(&json!([event_grid_envelope(event, cfg)])),
            DeliveryMode::CloudEvents => http
                .post(target)
                .header("content-type", "application/cloudevents-batch+json; charset=utf-8")
                .header("aeg-event-type", "Notification")
                .header("aeg-delivery-count", (attempt - 1).to_string())
                .body(json!([cloud_event_envelope(event, cfg)]).to_string()),
        };
        let (status, error) = match request.send().await {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = status.is_some_and(|s| (200..=204).contains(&s));
        {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            if s.deliveries.len() == LOG_CAPACITY {
                s.deliveries.pop_front();
            }
            s.deliveries.push_back(DeliveryRecord {
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                attempt,
                status,
                error,
            });
            if !ok && attempt == max_attempts {
                s.dead_lettered.push(event.id.clone());
            }
        }
        if ok {
            return;
        }
        if attempt < max_attempts {
            let idx = (attempt as usize - 1).min(cfg.retry_delays_ms.len().saturating_sub(1));
            let delay = cfg.retry_delays_ms.get(idx).copied().unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
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
}
