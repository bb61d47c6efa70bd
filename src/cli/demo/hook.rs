//! The demo's webhook consumer: a small receiver on 127.0.0.1:0 that does what a real consumer must — checks
//! the `X-Patrol-Signature` HMAC over `"{timestamp}.{body}"` with the shared key and the timestamp's age
//! (five minutes, on the virtual clock), answers 401 when either is wrong, and otherwise records which secret
//! has a new version (it would reload it from the vault now). Its URL carries a random path, like a real
//! webhook URL, and is a credential: it lives only in the vault and is never printed.

use crate::clock::Clock;
use crate::consumers::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// How old a notification's timestamp may be.
pub const TOLERANCE_SECS: i64 = 300;

/// One notification the receiver got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    pub verified: bool,
    /// From the body (when verified): the secret, its new version, the notification id.
    pub secret: Option<String>,
    pub version: Option<String>,
    pub id: Option<String>,
    /// The consumer the notification names (`webhook:<url secret>`), for its acknowledgement.
    pub consumer: Option<String>,
    /// Whether patrol asked for an acknowledgement (`ack = true`).
    pub ack_requested: bool,
    /// The body and headers as received, for the demo's leak scan (never printed).
    #[serde(skip)]
    pub raw: String,
}

#[derive(Clone)]
struct Receiver {
    key: Arc<SecretString>,
    clock: Clock,
    seen: Arc<Mutex<Vec<Received>>>,
}

pub struct HookReceiver {
    /// `http://127.0.0.1:<port>/hooks/<random>` — a credential.
    pub url: SecretString,
    seen: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ts = header(TIMESTAMP_HEADER).and_then(|t| t.parse::<i64>().ok());
    let sig = header(SIGNATURE_HEADER);
    let verified = match (ts, &sig) {
        (Some(ts), Some(sig)) => {
            verify(r.key.expose_secret().as_bytes(), ts, &body, sig, r.clock.now().unix_timestamp(), TOLERANCE_SECS)
        }
        _ => false,
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str| verified.then(|| parsed[k].as_str().map(str::to_owned)).flatten();
    let raw = format!("{headers:?}{}", String::from_utf8_lossy(&body));
    r.seen.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
        verified,
        secret: field("secret"),
        version: field("version"),
        id: field("id"),
        consumer: field("consumer"),
        ack_requested: verified && parsed["ackRequested"] == Value::Bool(true),
        raw,
    });
    if verified { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
}

impl HookReceiver {
    pub async fn start(key: SecretString, clock: Clock) -> std::io::Result<Self> {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let path = format!("/hooks/{}", uuid::Uuid::new_v4().simple());
        let r = Receiver { key: Arc::new(key), clock, seen: seen.clone() };
        let app = axum::Router::new().route(&path, post(receive)).with_state(r);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = SecretString::from(format!("http://{}{path}", listener.local_addr()?));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self { url, seen, stop: Some(tx), task: Some(task) })
    }

    pub fn seen(&self) -> Vec<Received> {
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
