//! The demo's view of Event Grid: a loopback relay between the emulator's Event Grid delivery and the
//! real handler that records each `EventGridSecretChanged` invocation (event type, secret, HTTP status,
//! the handler's outcome) while forwarding the Functions-host envelope byte for byte, and [`settle`],
//! which waits until every event the emulated vault raised has been delivered.
//!
//! The relay changes nothing on the wire: the emulator's `functions-host` delivery mode already builds
//! the host's `{"Data":{"eventGridEvent":…},"Metadata":{…}}` envelope; the relay only lets the demo tell
//! which event the handler answered how. Event payloads carry no secret values (version ids only).

use super::host;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use patrol_emulator::eventgrid::EventGrid;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One invocation the relay saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivered {
    /// Event type without the `Microsoft.KeyVault.` prefix (`SecretNewVersionCreated`, …).
    pub event: String,
    pub secret: String,
    /// The handler's HTTP status.
    pub http_status: u16,
    /// The handler's outcome: `completed`, `ignored`, `incomplete`, … (`?` when the reply was not JSON).
    pub status: String,
    pub summary: String,
}

#[derive(Clone)]
struct Relay {
    /// The handler instance currently serving (it changes when the Function App cold-starts).
    handler: Arc<Mutex<String>>,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Delivered>>>,
}

/// The running relay.
pub struct EventTap {
    /// Where Event Grid delivers (`http://127.0.0.1:<port>`); `/{function}` is forwarded to the handler.
    pub url: String,
    handler: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Delivered>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EventTap {
    /// Starts the relay on 127.0.0.1:0, forwarding to `handler` (`http://127.0.0.1:<port>`).
    pub async fn start(handler: &str, http: reqwest::Client) -> std::io::Result<Self> {
        let seen: Arc<Mutex<Vec<Delivered>>> = Arc::default();
        let handler = Arc::new(Mutex::new(handler.trim_end_matches('/').to_owned()));
        let relay = Relay { handler: handler.clone(), http, seen: seen.clone() };
        let app = axum::Router::new().route("/{function}", post(forward)).with_state(relay);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self { url, handler, seen, stop: Some(tx), task: Some(task) })
    }

    /// Forwards to another handler instance from now on.
    pub fn set_handler(&self, handler: &str) {
        *self.handler.lock().unwrap_or_else(|p| p.into_inner()) = handler.trim_end_matches('/').to_owned();
    }

    /// Everything seen so far (in delivery order).
    pub fn seen(&self) -> Vec<Delivered> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

async fn forward(
    State(relay): State<Relay>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Bytes) {
    let invocation: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event = &invocation["Data"]["eventGridEvent"];
    let event_type = event["eventType"].as_str().unwrap_or("?");
    let target = relay.handler.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut req = relay.http.post(format!("{target}/{function}")).body(body.clone());
    for (name, value) in headers.iter() {
        let n = name.as_str();
        if n == "content-type" || n == "user-agent" || n.starts_with("x-azure-functions-") {
            req = req.header(name.clone(), value.clone());
        }
    }
    let (status, reply) = match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(e) => {
            tracing::warn!("the handler did not answer an Event Grid invocation: {e}");
            (502, Bytes::new())
        }
    };
    let parsed: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
    let outcome = host::outcome(&parsed);
    relay.seen.lock().unwrap_or_else(|p| p.into_inner()).push(Delivered {
        event: event_type.trim_start_matches("Microsoft.KeyVault.").to_owned(),
        secret: event["subject"].as_str().unwrap_or("?").to_owned(),
        http_status: status,
        status: outcome["status"].as_str().unwrap_or("?").to_owned(),
        summary: outcome["summary"].as_str().or_else(|| outcome["error"].as_str()).unwrap_or("").to_owned(),
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (code, [("content-type", "application/json")], reply)
}

/// Waits until every event raised since the `from`-th (in `EventGrid::events`) was delivered with a 2xx
/// or given up on (dead-lettered or dropped), and nothing new was raised meanwhile. Fails after `limit`.
pub async fn settle(grid: &EventGrid, from: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let raised = grid.events();
        let deliveries = grid.deliveries();
        let mut dead = grid.dead_lettered();
        dead.extend(grid.dropped().into_iter().map(|d| d.event_id));
        let pending = raised
            .iter()
            .skip(from)
            .filter(|e| {
                !dead.contains(&e.id)
                    && !deliveries
                        .iter()
                        .any(|d| d.event_id == e.id && d.status.is_some_and(|s| (200..=204).contains(&s)))
            })
            .count();
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{pending} Key Vault event(s) still undelivered after {} s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
