//! Event Grid delivery against a webhook receiver that performs the real handshakes: subscription
//! validation (eventgrid schema; also manual validation through `validationUrl`), the CloudEvents OPTIONS
//! abuse protection, one CloudEvent per request unless batching is on, concurrent deliveries, Event Grid's
//! retry policy on the virtual clock and dead-lettering.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use patrol_emulator::clock::VirtualClock;
use patrol_emulator::eventgrid::{
    DeliveryConfig, DeliveryMode, EventGrid, EventSink, KeyVaultEvent, RetryPolicy, SECRET_NEW_VERSION_CREATED,
    Validation,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver got: (content type, body, when).
type Got = Arc<Mutex<Vec<(String, Value, Instant)>>>;

/// How the receiver behaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Statuses for the first notifications (then 200).
    statuses: Arc<Mutex<Vec<u16>>>,
    /// Notifications whose subject is in this list are answered after this delay.
    slow: Arc<Mutex<Vec<(String, Duration)>>>,
    /// Answer the validation event wrongly.
    refuse_validation: bool,
}

async fn receiver(b: Behaviour) -> (String, Got) {
    let got: Got = Arc::default();
    let app = axum::Router::new().fallback({
        let got = got.clone();
        move |method: Method, headers: HeaderMap, body: Bytes| {
            let (got, b) = (got.clone(), b.clone());
            async move { handle(&got, &b, method, headers, body).await }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn handle(got: &Got, b: &Behaviour, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // CloudEvents HTTP webhook abuse protection.
    if method == Method::OPTIONS {
        let origin = header("webhook-request-origin");
        return (StatusCode::OK, [("WebHook-Allowed-Origin", origin)]).into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Event Grid subscription validation.
    if header("aeg-event-type") == "SubscriptionValidation" {
        assert_eq!(v[0]["eventType"], "Microsoft.EventGrid.SubscriptionValidationEvent");
        let code = v[0]["data"]["validationCode"].as_str().unwrap().to_owned();
        let answer = if b.refuse_validation { "wrong".to_owned() } else { code };
        return (StatusCode::OK, axum::Json(json!({ "validationResponse": answer }))).into_response();
    }
    let subject = v.get("subject").or_else(|| v.get(0).and_then(|e| e.get("subject")));
    let delay = subject
        .and_then(|s| b.slow.lock().unwrap().iter().find(|(n, _)| Some(n.as_str()) == s.as_str()).map(|(_, d)| *d));
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    got.lock().unwrap().push((header("content-type"), v, Instant::now()));
    let status = {
        let mut s = b.statuses.lock().unwrap();
        if s.is_empty() { 200 } else { s.remove(0) }
    };
    StatusCode::from_u16(status).unwrap().into_response()
}

/// A receiver that performs the handshakes and accepts everything (for other test modules).
pub async fn handshaking_subscriber() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let (url, got) = receiver(Behaviour::default()).await;
    let simple: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let (g, s) = (got.clone(), simple.clone());
    tokio::spawn(async move {
        loop {
            let items: Vec<(String, Value)> =
                g.lock().unwrap().drain(..).map(|(_, v, _)| ("/api/events".to_owned(), v)).collect();
            s.lock().unwrap().extend(items);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (url, simple)
}

fn event(subject: &str, clock: &VirtualClock) -> KeyVaultEvent {
    KeyVaultEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: SECRET_NEW_VERSION_CREATED.into(),
        vault_name: "patrol-emu".into(),
        vault_url: "https://127.0.0.1:1/".into(),
        object_name: subject.into(),
        version: "0123456789abcdef0123456789abcdef".into(),
        nbf: None,
        exp: None,
        time: clock.now(),
    }
}

fn grid(
    target: &str,
    mode: DeliveryMode,
    tweak: impl FnOnce(&mut DeliveryConfig),
) -> (EventGrid, EventSink, VirtualClock) {
    let clock = VirtualClock::new();
    let mut cfg = DeliveryConfig {
        target: Some(target.to_owned()),
        mode,
        topic: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/patrol-emu".into(),
        ..DeliveryConfig::default()
    };
    tweak(&mut cfg);
    let (g, sink) = EventGrid::start(clock.clone(), cfg);
    (g, sink, clock)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn eventgrid_mode_validates_the_subscription_before_delivering() {
    let (url, got) = receiver(Behaviour::default()).await;
    let (g, sink, clock) = grid(&url, DeliveryMode::EventGridSchema, |_| {});
    until("validation", || g.validation() == Validation::Succeeded).await;
    sink.raise(vec![event("a", &clock)]);
    until("delivery", || got.lock().unwrap().len() == 1).await;
    let (ct, body, _) = got.lock().unwrap()[0].clone();
    assert_eq!(ct, "application/json");
    assert_eq!(body.as_array().unwrap().len(), 1, "batching off: an array of one event");
    assert_eq!(body[0]["eventType"], SECRET_NEW_VERSION_CREATED);

    // A receiver that does not echo the code: the subscription fails and nothing is delivered.
    let (bad_url, bad_got) = receiver(Behaviour { refuse_validation: true, ..Behaviour::default() }).await;
    let (g, sink, clock) = grid(&bad_url, DeliveryMode::EventGridSchema, |_| {});
    until("failed validation", || matches!(g.validation(), Validation::Failed { .. })).await;
    sink.raise(vec![event("b", &clock)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bad_got.lock().unwrap().is_empty());
    assert!(g.deliveries().iter().any(|d| d.error.as_deref().is_some_and(|e| e.contains("not validated"))));
}

#[tokio::test]
async fn manual_validation_through_the_validation_url() {
    // The emulator's control API serves validationUrl.
    let env = crate::support::start().await;
    // Capture the validation event with a receiver that records it and answers nothing useful.
    let captured: Arc<Mutex<Option<Value>>> = Arc::default();
    let app = axum::Router::new().fallback({
        let captured = captured.clone();
        move |body: Bytes| {
            let captured = captured.clone();
            async move {
                *captured.lock().unwrap() = serde_json::from_slice(&body).ok();
                StatusCode::ACCEPTED
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manual = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    env.put_ctl("/_control/eventgrid", json!({ "target": manual, "mode": "eventgrid" })).await;
    until("validation event", || captured.lock().unwrap().is_some()).await;
    let (_, sub) = env.ctl(reqwest::Method::GET, "/_control/eventgrid/subscription", Value::Null).await;
    until("202 is not a validation", || matches!(env.emu.eventgrid().validation(), Validation::Failed { .. })).await;
    assert!(sub["state"] == "pending" || sub["state"] == "failed", "{sub}");
    let v = captured.lock().unwrap().clone().unwrap();
    let validation_url = v[0]["data"]["validationUrl"].as_str().unwrap().to_owned();
    assert!(validation_url.starts_with(&env.emu.endpoints().control), "{validation_url}");
    let r = env.http.get(&validation_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.emu.eventgrid().validation(), Validation::Succeeded);
    let r = env.http.get(&validation_url).send().await.unwrap();
    assert_eq!(r.status(), 404, "a code validates once");
}

#[tokio::test]
async fn cloudevents_handshake_single_events_and_batches() {
    let (url, got) = receiver(Behaviour::default()).await;
    let (g, sink, clock) = grid(&url, DeliveryMode::CloudEvents, |_| {});
    until("OPTIONS handshake", || g.validation() == Validation::Succeeded).await;
    sink.raise(vec![event("one", &clock), event("two", &clock)]);
    until("two deliveries", || got.lock().unwrap().len() == 2).await;
    for (ct, body, _) in got.lock().unwrap().iter() {
        assert_eq!(ct, "application/cloudevents+json; charset=utf-8");
        assert!(body.is_object(), "one event per request: {body}");
        assert_eq!(body["specversion"], "1.0");
    }
    got.lock().unwrap().clear();
    g.set_config(DeliveryConfig { batching: true, ..g.config() });
    until("OPTIONS handshake", || g.validation() == Validation::Succeeded).await;
    sink.raise(vec![event("three", &clock), event("four", &clock)]);
    until("one batch", || got.lock().unwrap().len() == 1).await;
    let (ct, body, _) = got.lock().unwrap()[0].clone();
    assert_eq!(ct, "application/cloudevents-batch+json; charset=utf-8");
    assert_eq!(body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn deliveries_run_concurrently() {
    let b = Behaviour::default();
    b.slow
        .lock()
        .unwrap()
        .extend([("slow1".to_owned(), Duration::from_secs(3)), ("slow2".to_owned(), Duration::from_secs(3))]);
    let (url, got) = receiver(b).await;
    let (g, sink, clock) = grid(&url, DeliveryMode::EventGridSchema, |_| {});
    until("validation", || g.validation() == Validation::Succeeded).await;
    sink.raise(vec![event("slow1", &clock)]);
    sink.raise(vec![event("slow2", &clock)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let raised = Instant::now();
    sink.raise(vec![event("fast", &clock)]);
    until("the fast event", || got.lock().unwrap().iter().any(|(_, b, _)| b[0]["subject"] == "fast")).await;
    assert!(raised.elapsed() < Duration::from_secs(2), "not held up by the two slow deliveries");
    assert!(got.lock().unwrap().len() == 1, "the slow ones are still pending");
}

#[tokio::test]
async fn retries_follow_event_grid_on_the_virtual_clock_and_dead_letter() {
    let b = Behaviour::default();
    b.statuses.lock().unwrap().extend([503, 400]);
    let (url, got) = receiver(b).await;
    let (g, sink, clock) = grid(&url, DeliveryMode::EventGridSchema, |c| c.retry = RetryPolicy::EventGrid);
    until("validation", || g.validation() == Validation::Succeeded).await;
    let e = event("retried", &clock);
    sink.raise(vec![e.clone()]);
    until("first attempt", || got.lock().unwrap().len() == 1).await;
    // After a 503, Event Grid waits at least 30 s: nothing before the virtual clock gets there.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    clock.advance(time::Duration::seconds(29));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "not before 30 s");
    clock.advance(time::Duration::seconds(2));
    until("second attempt", || got.lock().unwrap().len() == 2).await;
    // The 400 is retried (no dead-letter destination) only after 5 minutes.
    clock.advance(time::Duration::seconds(299));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(got.lock().unwrap().len(), 2);
    clock.advance(time::Duration::seconds(2));
    until("third attempt, accepted", || got.lock().unwrap().len() == 3).await;
    let attempts: Vec<(u32, Option<u16>)> =
        g.deliveries().iter().filter(|d| d.event_id == e.id).map(|d| (d.attempt, d.status)).collect();
    assert_eq!(attempts, [(1, Some(503)), (2, Some(400)), (3, Some(200))]);
    assert!(g.dead_lettered().is_empty() && g.dropped().is_empty());

    // With a dead-letter destination, a 400 is dead-lettered at once.
    let b = Behaviour::default();
    b.statuses.lock().unwrap().push(400);
    let (url, got) = receiver(b).await;
    let (g, sink, clock) = grid(&url, DeliveryMode::EventGridSchema, |c| c.dead_letter = true);
    until("validation", || g.validation() == Validation::Succeeded).await;
    let e = event("poison", &clock);
    sink.raise(vec![e.clone()]);
    until("dead-lettered", || g.dead_lettered() == [e.id.clone()]).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!(g.dead_letters()[0].attempts, 1);
}
