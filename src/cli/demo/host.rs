//! Plays the Functions host towards the real handler: POSTs the host's JSON envelopes for `RotateTimer`
//! and `RotateHttp` to `http://127.0.0.1:<port>/<Function>` with `Metadata.sys.UtcNow` set to the
//! emulator's virtual time, as the host does, and reads the `{"Outputs","Logs","ReturnValue"}` reply;
//! starts and stops the handler as the host does for each Function App instance.

use crate::app::functions::RotationFunctions;
use crate::clock::Clock;
use crate::config::Settings;
use crate::handler::{Handler, server};
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

fn sys(function: &str, now: OffsetDateTime) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": crate::timestamp::rfc3339(now),
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}

/// The timer trigger's payload (binding `timer`).
pub fn timer(now: OffsetDateTime, last: Option<OffsetDateTime>) -> Value {
    let fmt = crate::timestamp::rfc3339;
    let status =
        last.map(|l| json!({ "Last": fmt(l), "Next": fmt(now + time::Duration::days(1)), "LastUpdated": fmt(l) }));
    json!({
        "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": status, "IsPastDue": false } },
        "Metadata": { "sys": sys("RotateTimer", now) }
    })
}

/// The HTTP trigger's payload for `GET|POST /api/rotate/{secret?}?force=…`.
pub fn http(now: OffsetDateTime, method: &str, secret: Option<&str>, force: bool) -> Value {
    let mut query = serde_json::Map::new();
    if force {
        query.insert("force".into(), json!("true"));
    }
    let path = secret.map_or_else(|| "rotate".to_owned(), |s| format!("rotate/{s}"));
    let req = json!({
        "Url": format!("http://localhost:7071/api/{path}{}", if force { "?force=true" } else { "" }),
        "Method": method,
        "Query": query.clone(),
        "Headers": { "Content-Type": ["application/json"] },
        "Params": secret.map_or_else(|| json!({}), |s| json!({ "secret": s })),
        "Identities": [],
    });
    json!({
        "Data": { "req": req },
        "Metadata": { "Query": query, "Headers": { "Content-Type": "application/json" }, "Params": req["Params"].clone(), "sys": sys("RotateHttp", now) }
    })
}

/// The HTTP trigger's payload for a webhook consumer's signed acknowledgement: `POST /api/rotate/{secret}`
/// with the body exactly as signed and the `X-Patrol-Timestamp` / `X-Patrol-Signature` headers, as the
/// Functions host passes it on.
pub fn http_ack(now: OffsetDateTime, secret: &str, body: &str, timestamp: i64, signature: &str) -> Value {
    let headers = json!({
        "Content-Type": ["application/json"],
        crate::consumers::webhook::TIMESTAMP_HEADER: [timestamp.to_string()],
        crate::consumers::webhook::SIGNATURE_HEADER: [signature],
    });
    let req = json!({
        "Url": format!("http://localhost:7071/api/rotate/{secret}"),
        "Method": "POST",
        "Query": {},
        "Headers": headers,
        "Params": { "secret": secret },
        "Identities": [],
        "Body": body,
    });
    json!({
        "Data": { "req": req },
        "Metadata": { "Query": {}, "Headers": { "Content-Type": "application/json" }, "Params": req["Params"].clone(), "sys": sys("RotateHttp", now) }
    })
}

/// POSTs one invocation and returns the reply envelope.
pub async fn invoke(client: &reqwest::Client, base: &str, function: &str, payload: &Value) -> Result<Value, String> {
    let resp = client
        .post(format!("{base}/{function}"))
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(payload)
        .send()
        .await
        .map_err(|e| format!("{function}: the handler did not answer: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("{function}: the reply is not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!("{function}: the handler answered HTTP {status}: {body}"));
    }
    Ok(body)
}

/// `ReturnValue` of a timer / Event Grid reply, or the parsed body of `RotateHttp`'s `res` output.
pub fn outcome(reply: &Value) -> Value {
    if let Some(body) = reply["Outputs"]["res"]["body"].as_str() {
        return serde_json::from_str(body).unwrap_or(Value::Null);
    }
    reply["ReturnValue"].clone()
}

/// The real custom handler with the real rotation engine, served on 127.0.0.1:0 as the Functions host
/// starts it (one per Function App instance: a new one after a scale to zero).
pub struct RunningHandler {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl RunningHandler {
    pub async fn start(settings: &Settings, clock: &Clock) -> std::io::Result<Self> {
        let functions = RotationFunctions::new(settings.clone(), clock.clone());
        let metrics = crate::app::metrics(settings);
        let functions = crate::handler::metered::Metered::wrap(Arc::new(functions), metrics.clone());
        let handler = Handler::new(functions, clock.clone());
        let listener = server::bind(0).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(handler, settings.max_body_bytes);
        let task = tokio::spawn(server::serve(listener, app, async {
            let _ = stop_rx.await;
        }));
        Ok(Self { base, stop, task, metrics })
    }

    /// Stops it (the instance goes away with its caches: tokens, clients), as `patrol serve` stops: the
    /// metrics not yet exported go out first, within the flush bound.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        if let Some(m) = &self.metrics {
            m.flush().await;
        }
    }
}
