//! One invocation, from request bytes to reply bytes, independent of the HTTP server (so it can be tested
//! and benchmarked in-process): open the invocation's span, align the clock with the host's `UtcNow`,
//! parse and validate the input, call [`Functions`], and build the envelope with the captured `Logs`.

use super::envelope::{Envelope, HttpOutput, Reply};
use super::eventgrid::EventInput;
use super::functions::{Failure, FailureKind, FunctionName, Functions, Invocation, Outcome, Report, Status};
use super::http::HttpInput;
use super::lenient::{self, PayloadError};
use super::payload::Request;
use super::timer::TimerRun;
use crate::clock::Clock;
use crate::telemetry::LogCapture;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The protocol core shared by the server, the tests and the benchmark.
#[derive(Clone)]
pub struct Handler {
    functions: Arc<dyn Functions>,
    clock: Clock,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("clock", &self.clock).finish_non_exhaustive()
    }
}

/// What a function produced, before the envelope is built.
type Produced = Result<(Map<String, Value>, Value), Reply>;

impl Handler {
    pub fn new(functions: Arc<dyn Functions>, clock: Clock) -> Self {
        Self { functions, clock }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Runs one invocation. `invocation_id` is the `X-Azure-Functions-InvocationId` header.
    pub async fn invoke(&self, function: FunctionName, invocation_id: Option<&str>, body: &[u8]) -> Reply {
        let received = Instant::now();
        let (id, id_problem) = invocation_id_or_new(invocation_id);
        let span = tracing::error_span!("invocation", invocation_id = %id, function = function.as_str());
        let capture = LogCapture::attach(&span);
        let produced = async {
            if let Some(problem) = id_problem {
                tracing::warn!("X-Azure-Functions-InvocationId {problem}; using a fresh id");
            }
            self.run(function, &id, received, body).await
        }
        .instrument(span)
        .await;
        match produced {
            Ok((outputs, return_value)) => {
                let logs = capture.map(|c| c.take()).unwrap_or_default();
                Reply::envelope(&Envelope { outputs, logs, return_value })
            }
            Err(reply) => reply,
        }
    }

    async fn run(&self, function: FunctionName, id: &str, received: Instant, body: &[u8]) -> Produced {
        let malformed = |e: PayloadError| {
            tracing::warn!("rejected a malformed invocation: {e}");
            Reply::error(400, format!("malformed {function} invocation: {e}"), Some(function.as_str()), Some(id))
        };
        let request = Request::parse(body).map_err(malformed)?;
        match request.sys.utc_now {
            // Far-off years would make later date arithmetic overflow; no host or emulator sends them.
            Some(now) if !(1970..=9000).contains(&now.year()) => {
                tracing::warn!(host_now = %rfc3339(now), "ignored Metadata.sys.UtcNow: implausible year");
            }
            Some(now) if self.clock.observe(now) => {
                tracing::info!(host_now = %rfc3339(now), "aligned patrol's clock with the host's UtcNow");
            }
            _ => {}
        }
        if let Some(name) = request.sys.method_name.as_deref().filter(|n| !n.eq_ignore_ascii_case(function.as_str())) {
            tracing::warn!("Metadata.sys.MethodName is {} but the request was for {function}", lenient::shown(name));
        }
        let invocation =
            Invocation { id: id.to_owned(), function, host_now: request.sys.utc_now, retry: request.retry, received };
        match function {
            FunctionName::RotateTimer => {
                let timer = TimerRun::from_request(&request).map_err(malformed)?;
                log_received(&timer);
                let outcome =
                    crate::telemetry::with_trigger("RotateTimer", self.functions.rotate_timer(&invocation, timer))
                        .await;
                self.plain(&invocation, outcome)
            }
            FunctionName::EventGridSecretChanged => {
                let outcome = match EventInput::from_request(&request).map_err(malformed)? {
                    EventInput::Secret(event) => {
                        log_received(&event);
                        crate::telemetry::with_trigger(
                            "EventGridSecretChanged",
                            self.functions.secret_changed(&invocation, event),
                        )
                        .await
                    }
                    EventInput::NotASecret { event_type, subject } => Ok(Report::new(
                        Status::Ignored,
                        format!(
                            "ignored {} about {}: not a Key Vault secret event",
                            lenient::shown(&event_type),
                            lenient::shown(&subject)
                        ),
                    )),
                };
                self.plain(&invocation, outcome)
            }
            FunctionName::RotateHttp => {
                let res = match HttpInput::from_request(&request).map_err(malformed)? {
                    Err(bad) => {
                        tracing::info!(status = bad.status, "refused the request: {}", bad.message);
                        let out = HttpOutput::json(bad.status, &json!({ "error": bad.message }));
                        match bad.allow {
                            Some(allow) => out.with_header("Allow", allow),
                            None => out,
                        }
                    }
                    Ok(input) => {
                        let outcome = match input {
                            HttpInput::Rotate(rotate) => {
                                log_received(&rotate);
                                crate::telemetry::with_trigger(
                                    "RotateHttp",
                                    self.functions.rotate_http(&invocation, rotate),
                                )
                                .await
                            }
                            // The signature and the signed bytes are never serialized (`AckRequest`).
                            HttpInput::Ack(ack) => {
                                log_received(&ack);
                                crate::telemetry::with_trigger(
                                    "RotateHttp",
                                    self.functions.acknowledge(&invocation, ack),
                                )
                                .await
                            }
                        };
                        match outcome {
                            Ok(report) => {
                                log_report(&invocation, &report);
                                HttpOutput::json(report.status.http_status(), &report)
                            }
                            Err(failure) => {
                                log_failure(&invocation, &failure);
                                HttpOutput::json(
                                    failure.http_status(),
                                    &json!({ "error": failure.message, "kind": failure.kind }),
                                )
                            }
                        }
                    }
                };
                let mut outputs = Map::new();
                outputs.insert("res".to_owned(), serde_json::to_value(&res).unwrap_or(Value::Null));
                Ok((outputs, Value::Null))
            }
        }
    }

    /// Timer and Event Grid: a report becomes `ReturnValue`; a failure fails the invocation (500), so the
    /// host records it and Event Grid redelivers.
    fn plain(&self, invocation: &Invocation, outcome: Outcome) -> Produced {
        match outcome {
            Ok(report) if report.status == Status::Failed => {
                log_report(invocation, &report);
                // Why, per token at risk (names and reasons only: never a value).
                let why: Vec<String> = report.detail["at_risk"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| Some(format!("{}: {}", r["secret"].as_str()?, r["why"].as_str()?)))
                    .collect();
                let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
                Err(Reply::error(
                    500,
                    format!("{} failed: {}{why}", invocation.function, report.summary),
                    Some(invocation.function.as_str()),
                    Some(&invocation.id),
                ))
            }
            Ok(report) => {
                log_report(invocation, &report);
                Ok((Map::new(), serde_json::to_value(&report).unwrap_or(Value::Null)))
            }
            Err(failure) => {
                log_failure(invocation, &failure);
                Err(Reply::error(
                    500,
                    format!("{} failed: {}", invocation.function, failure.message),
                    Some(invocation.function.as_str()),
                    Some(&invocation.id),
                ))
            }
        }
    }
}

/// The validated input, as JSON, at debug level (`PATROL_LOG=info,patrol=debug`): what the handler
/// understood, whatever the engine then does. Free when debug is off. Inputs hold no secret values.
fn log_received(input: &impl serde::Serialize) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let json = serde_json::to_string(input).unwrap_or_default();
        tracing::debug!(input = %json, "received");
    }
}

/// A timestamp for logs and messages.
pub(crate) use crate::timestamp::rfc3339;

/// Milliseconds since the invocation arrived, to the microsecond.
fn elapsed_ms(invocation: &Invocation) -> f64 {
    (invocation.received.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn log_report(invocation: &Invocation, report: &Report) {
    let elapsed_ms = elapsed_ms(invocation);
    let status = serde_json::to_value(report.status).ok();
    let status = status.as_ref().and_then(Value::as_str).unwrap_or("?");
    if report.status == Status::Failed {
        tracing::error!(status, elapsed_ms, "{}", report.summary);
    } else if report.status == Status::NotConfigured {
        tracing::warn!(status, elapsed_ms, "{}", report.summary);
    } else {
        tracing::info!(status, elapsed_ms, "{}", report.summary);
    }
}

fn log_failure(invocation: &Invocation, failure: &Failure) {
    let elapsed_ms = elapsed_ms(invocation);
    let kind = serde_json::to_value(failure.kind).ok();
    let kind = kind.as_ref().and_then(Value::as_str).unwrap_or("?");
    match failure.kind {
        // The caller's request cannot be served as asked; nothing is broken.
        FailureKind::NotFound | FailureKind::Conflict | FailureKind::Unauthorized => {
            tracing::warn!(kind, elapsed_ms, "{} refused: {}", invocation.function, failure.message);
        }
        FailureKind::Unavailable | FailureKind::Internal => {
            tracing::error!(kind, elapsed_ms, "{} failed: {}", invocation.function, failure.message);
        }
    }
}

/// The host's invocation id when it is a plausible id (it is logged, so it must not carry arbitrary
/// text), else a fresh one and why.
pub(crate) fn invocation_id_or_new(header: Option<&str>) -> (String, Option<&'static str>) {
    match header.map(str::trim) {
        Some(h) if !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            (h.to_owned(), None)
        }
        Some(_) => (uuid::Uuid::new_v4().to_string(), Some("is not an id")),
        None => (uuid::Uuid::new_v4().to_string(), Some("is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::functions::NotConfigured;
    use crate::handler::http::RotateRequest;

    fn handler() -> Handler {
        Handler::new(Arc::new(NotConfigured), Clock::system())
    }

    async fn call(f: FunctionName, body: &str) -> (u16, Value) {
        let r = handler().invoke(f, Some("5f0c0a31-0d6b-4a5e-9a53-6b8f6f1c0b7e"), body.as_bytes()).await;
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[tokio::test]
    async fn timer_says_not_configured() {
        let (status, v) = call(
            FunctionName::RotateTimer,
            r#"{"Data":{"myTimer":{"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{"sys":{"UtcNow":"2026-10-02T03:00:00Z"}}}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["ReturnValue"]["status"], "not-configured");
        assert!(v["ReturnValue"]["summary"].as_str().unwrap().contains("last run: never"));
        assert_eq!(v["Outputs"], json!({}));
    }

    #[tokio::test]
    async fn host_time_moves_the_clock() {
        let h = handler();
        let body = r#"{"Data":{"myTimer":{}},"Metadata":{"sys":{"UtcNow":"2031-05-06T07:08:09Z"}}}"#;
        h.invoke(FunctionName::RotateTimer, None, body.as_bytes()).await;
        let drift = h.clock().now() - time::macros::datetime!(2031-05-06 07:08:09 UTC);
        assert!(drift.abs() < time::Duration::seconds(5), "{drift}");
    }

    #[tokio::test]
    async fn implausible_host_times_are_not_followed() {
        let h = handler();
        let body = r#"{"Data":{"myTimer":{}},"Metadata":{"sys":{"UtcNow":"9999-12-31T00:00:00Z"}}}"#;
        let r = h.invoke(FunctionName::RotateTimer, None, body.as_bytes()).await;
        assert_eq!(r.status, 200);
        assert!(h.clock().now().year() < 9000);
    }

    #[tokio::test]
    async fn http_not_configured_is_503_in_res() {
        let (status, v) = call(
            FunctionName::RotateHttp,
            r#"{"Data":{"req":{"Method":"POST","Params":{"secret":"db-password"}}},"Metadata":{}}"#,
        )
        .await;
        assert_eq!(status, 200);
        let res = &v["Outputs"]["res"];
        assert_eq!(res["statusCode"], 503);
        let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["status"], "not-configured");
        assert_eq!(body["detail"]["received"], json!({"mode": "run", "secret": "db-password", "force": false}));
    }

    #[tokio::test]
    async fn malformed_is_400_naming_the_problem() {
        let (status, v) =
            call(FunctionName::EventGridSecretChanged, r#"{"Data":{"eventGridEvent":{"subject":"x"}}}"#).await;
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("Data.eventGridEvent.eventType: is missing"), "{v}");
        assert_eq!(v["invocationId"], "5f0c0a31-0d6b-4a5e-9a53-6b8f6f1c0b7e");
    }

    #[tokio::test]
    async fn non_secret_events_are_ignored_by_the_handler() {
        let (status, v) = call(
            FunctionName::EventGridSecretChanged,
            r#"{"Data":{"eventGridEvent":{"eventType":"Microsoft.KeyVault.KeyNearExpiry","subject":"k1","data":{"ObjectType":"Key"}}}}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["ReturnValue"]["status"], "ignored");
    }

    struct Failing;
    #[async_trait::async_trait]
    impl Functions for Failing {
        async fn rotate_timer(&self, _: &Invocation, _: TimerRun) -> Outcome {
            Err(Failure::new(super::super::functions::FailureKind::Unavailable, "Azure DevOps answered 503"))
        }
        async fn rotate_http(&self, _: &Invocation, _: RotateRequest) -> Outcome {
            Err(Failure::new(super::super::functions::FailureKind::NotFound, "no managed secret named x"))
        }
        async fn secret_changed(&self, _: &Invocation, _: crate::handler::eventgrid::SecretEvent) -> Outcome {
            Err(Failure::new(super::super::functions::FailureKind::Internal, "boom"))
        }
    }

    #[tokio::test]
    async fn failures_fail_timer_and_event_but_reach_http_callers() {
        let h = Handler::new(Arc::new(Failing), Clock::system());
        let r = h.invoke(FunctionName::RotateTimer, None, br#"{"Data":{"myTimer":{}}}"#).await;
        assert_eq!(r.status, 500);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "RotateTimer failed: Azure DevOps answered 503");
        let r = h.invoke(FunctionName::RotateHttp, None, br#"{"Data":{"req":{"Method":"POST"}}}"#).await;
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Outputs"]["res"]["statusCode"], 404);
        let ev =
            patrol_emulator::specs::read_spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
        let body = format!("{{\"Data\":{{\"eventGridEvent\":{ev}}}}}");
        let r = h.invoke(FunctionName::EventGridSecretChanged, None, body.as_bytes()).await;
        assert_eq!(r.status, 500);
    }

    /// A run that left tokens at risk (`Status::Failed`).
    struct AtRisk;
    impl AtRisk {
        fn report() -> Outcome {
            Ok(Report::new(Status::Failed, "2 token(s) planned: 2 failed; FAILED: 2 token(s) at risk: a, b")
                .with_detail(json!({ "failed": 2, "at_risk": [
                    { "secret": "a", "why": "its due rotation failed: secret store: refused", "sign_in": false },
                    { "secret": "b", "why": "it is blocked and its current PAT has 3 day(s) left", "sign_in": true }
                ] })))
        }
    }
    #[async_trait::async_trait]
    impl Functions for AtRisk {
        async fn rotate_timer(&self, _: &Invocation, _: TimerRun) -> Outcome {
            Self::report()
        }
        async fn rotate_http(&self, _: &Invocation, _: RotateRequest) -> Outcome {
            Self::report()
        }
        async fn secret_changed(&self, _: &Invocation, _: crate::handler::eventgrid::SecretEvent) -> Outcome {
            Self::report()
        }
    }

    #[tokio::test]
    async fn a_run_that_leaves_tokens_at_risk_fails_every_function() {
        let h = Handler::new(Arc::new(AtRisk), Clock::system());
        // Timer: the host sees a failed invocation (500) naming each token at risk and why.
        let r = h.invoke(FunctionName::RotateTimer, None, br#"{"Data":{"myTimer":{}}}"#).await;
        assert_eq!(r.status, 500);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(e.starts_with("RotateTimer failed: 2 token(s) planned"), "{e}");
        assert!(e.contains("a: its due rotation failed") && e.contains("b: it is blocked"), "{e}");
        // Event Grid: likewise (and Event Grid redelivers).
        let ev = json!({
            "id": "1f0c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "subject": "a", "eventTime": "2027-01-01T00:00:00Z",
            "eventType": "Microsoft.KeyVault.SecretNearExpiry", "dataVersion": "1", "metadataVersion": "1",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "data": { "Id": "https://kv.vault.azure.net/secrets/a/0123456789abcdef0123456789abcdef", "VaultName": "kv",
                      "ObjectType": "Secret", "ObjectName": "a", "Version": "0123456789abcdef0123456789abcdef",
                      "NBF": null, "EXP": null }
        });
        let body = json!({ "Data": { "eventGridEvent": ev } }).to_string();
        let r = h.invoke(FunctionName::EventGridSecretChanged, None, body.as_bytes()).await;
        assert_eq!(r.status, 500);
        // RotateHttp: the caller gets 500 with the whole report.
        let r = h.invoke(FunctionName::RotateHttp, None, br#"{"Data":{"req":{"Method":"POST"}}}"#).await;
        assert_eq!(r.status, 200, "the host envelope itself");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Outputs"]["res"]["statusCode"], 500);
        let res: Value = serde_json::from_str(v["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(res["status"], "failed");
        assert_eq!(res["detail"]["at_risk"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn invocation_ids() {
        assert_eq!(invocation_id_or_new(Some("abc-123")), ("abc-123".to_owned(), None));
        let (id, why) = invocation_id_or_new(Some("x\n{\"forged\":1}"));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(why, Some("is not an id"));
        assert_eq!(invocation_id_or_new(None).1, Some("is missing"));
    }
}
