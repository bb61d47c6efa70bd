//! Shared request plumbing for every Azure DevOps call: the HTTP client (redirects off, optional extra CA),
//! the headers that make Azure DevOps answer like an API (`X-TFS-FedAuthRedirect: Suppress`,
//! `Accept: application/json`), a fresh bearer token per attempt, the identity's rate limiter, the retry
//! loop, and the classification of answers (203 / redirects / HTML = authentication failure; the error
//! envelope on 4xx/5xx).

use super::models::DevOpsError;
use super::ratelimit::{RateLimiter, RateSignals};
use super::retry::{Decision, Idempotency, Outcome, RetryPolicy, decide};
use super::token::TokenSource;
use super::wire::VssError;
use crate::clock::Clock;
use bytes::Bytes;
use http::{HeaderMap, Method};
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Builds the HTTP client every Azure DevOps and Entra call uses: no redirects (a redirect is a sign-in
/// page), rustls, bounded timeouts, and `ca_cert` (PEM) trusted in addition to the built-in roots.
pub fn build_client(ca_cert: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, DevOpsError> {
    crate::net::client_builder(ca_cert, Duration::from_secs(10).min(timeout), timeout)
        .map_err(|e| DevOpsError::Transport(e.to_string()))?
        .user_agent(concat!("patrol/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DevOpsError::Transport(format!("cannot build the HTTP client: {e}")))
}

/// One request to make.
#[derive(Debug)]
pub struct Call<'a> {
    /// Named in errors and logs (e.g. `"Pats_Create"`).
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub body: Option<&'a serde_json::Value>,
    pub idempotency: Idempotency,
}

/// A successful (2xx, JSON or empty) answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Everything needed to call Azure DevOps as one identity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DevOpsHttp {
    client: reqwest::Client,
    clock: Clock,
    retry: RetryPolicy,
    tokens: Arc<dyn TokenSource>,
    limiter: Arc<RateLimiter>,
}

impl DevOpsHttp {
    pub fn new(
        client: reqwest::Client,
        clock: Clock,
        retry: RetryPolicy,
        tokens: Arc<dyn TokenSource>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self { client, clock, retry, tokens, limiter }
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    pub fn tokens(&self) -> &Arc<dyn TokenSource> {
        &self.tokens
    }

    /// Sends `call`, retrying what may be retried; returns a 2xx answer or the classified error.
    pub async fn send(&self, call: Call<'_>) -> Result<Answer, DevOpsError> {
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            self.limiter.acquire(self.retry.max_retry_after).await;
            let token = self.tokens.access_token().await?;
            let mut req = self
                .client
                .request(call.method.clone(), call.url.clone())
                .bearer_auth(token.value.expose_secret())
                .header("X-TFS-FedAuthRedirect", "Suppress")
                .header(http::header::ACCEPT, "application/json");
            if let Some(body) = call.body {
                req = req.json(body);
            }
            let (outcome, reply) = match req.send().await {
                Err(e) => {
                    let outcome = if e.is_connect() { Outcome::NotSent } else { Outcome::Lost };
                    (outcome, Err(e.without_url().to_string()))
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let now = self.clock.now();
                    self.limiter.observe(RateSignals::from_headers(status, &headers, now), now);
                    match resp.bytes().await {
                        Ok(body) => {
                            let host_offline = headers.contains_key("x-vss-hostofflineerror");
                            (Outcome::Status { status, host_offline }, Ok(Answer { status, headers, body }))
                        }
                        Err(e) => {
                            (Outcome::Lost, Err(format!("HTTP {status} but the body was cut off: {}", e.without_url())))
                        }
                    }
                }
            };
            if let Ok(a) = &reply
                && a.status == 401
                && !reauthenticated
            {
                // Nothing happened on the service side; a revoked or stale token gets one fresh try.
                tracing::info!(operation = call.operation, "Azure DevOps refused the access token; refreshing once");
                self.tokens.invalidate();
                reauthenticated = true;
                continue;
            }
            let jitter = rand::random::<f64>();
            match decide(&self.retry, call.idempotency, attempt, outcome, jitter) {
                Decision::Retry(backoff) => {
                    if let Outcome::Status { status: 429, .. } = outcome {
                        let wait = self.limiter.wait_time();
                        if wait > self.retry.max_retry_after {
                            return Err(throttled(&self.limiter, wait));
                        }
                        if wait.is_zero() {
                            tokio::time::sleep(backoff).await;
                        }
                    } else {
                        tokio::time::sleep(backoff).await;
                    }
                    tracing::warn!(
                        operation = call.operation,
                        attempt = attempt + 1,
                        outcome = ?outcome,
                        "retrying an Azure DevOps call"
                    );
                    attempt += 1;
                }
                Decision::Uncertain => {
                    let reason = match &reply {
                        Ok(a) => format!("HTTP {} after the request was sent", a.status),
                        Err(e) => e.clone(),
                    };
                    tracing::warn!(operation = call.operation, %reason, "outcome unknown; not retrying");
                    return Err(DevOpsError::Uncertain { operation: call.operation, reason });
                }
                Decision::Stop => {
                    return match reply {
                        Ok(answer) => classify(call.operation, answer, &self.limiter),
                        Err(e) => Err(DevOpsError::Transport(format!("{}: {e}", call.operation))),
                    };
                }
            }
        }
    }
}

fn throttled(limiter: &RateLimiter, wait: Duration) -> DevOpsError {
    let resource = limiter.snapshot().0.and_then(|s| s.resource).unwrap_or_else(|| "unspecified resource".into());
    DevOpsError::Throttled { retry_after_secs: wait.as_secs_f64().ceil() as u64, resource }
}

fn is_html(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.to_ascii_lowercase().contains("text/html") {
        return true;
    }
    let head: Vec<u8> = body.iter().copied().skip_while(u8::is_ascii_whitespace).take(15).collect();
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// Turns a final answer into success or a named error.
pub fn classify(operation: &'static str, answer: Answer, limiter: &RateLimiter) -> Result<Answer, DevOpsError> {
    let Answer { status, headers, body } = answer;
    if status == 203 {
        return Err(DevOpsError::Unauthorized(format!(
            "{operation}: HTTP 203 with a sign-in page — Azure DevOps did not accept the bearer token (it must be a delegated Microsoft Entra user token for the Azure DevOps resource with vso.pats / vso.pats_manage)"
        )));
    }
    if (300..400).contains(&status) {
        let to = headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("?");
        let to = to.split('?').next().unwrap_or(to);
        return Err(DevOpsError::Unauthorized(format!(
            "{operation}: HTTP {status} redirect to {to} — a sign-in redirect; the credentials were not accepted"
        )));
    }
    let html = is_html(&headers, &body);
    if (200..300).contains(&status) {
        if html {
            return Err(DevOpsError::Unauthorized(format!(
                "{operation}: an HTML page instead of JSON (HTTP {status}) — Azure DevOps answered with its sign-in page"
            )));
        }
        return Ok(Answer { status, headers, body });
    }
    let envelope = if html { None } else { VssError::parse(&body) };
    let message = envelope
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| if html { "an HTML page".into() } else { "no error message".into() });
    match status {
        401 => Err(DevOpsError::Unauthorized(format!("{operation}: HTTP 401: {message}"))),
        429 => Err(throttled(limiter, limiter.wait_time())),
        _ => Err(DevOpsError::Service {
            status,
            type_key: envelope.and_then(|e| e.type_key),
            message: format!("{operation}: {message}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn answer(status: u16, ct: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        Answer { status, headers, body: Bytes::from(body.to_owned()) }
    }

    #[test]
    fn sign_in_pages_are_authentication_failures() {
        let l = RateLimiter::new();
        let e = classify("Pats_List", answer(203, "text/html", "<html>sign in</html>"), &l).unwrap_err();
        assert!(matches!(e, DevOpsError::Unauthorized(ref m) if m.contains("203")), "{e}");
        let e = classify("Pats_List", answer(200, "text/html; charset=utf-8", "<html></html>"), &l).unwrap_err();
        assert!(matches!(e, DevOpsError::Unauthorized(_)));
        let e =
            classify("Pats_List", answer(200, "application/octet-stream", "  <!DOCTYPE html><html>"), &l).unwrap_err();
        assert!(matches!(e, DevOpsError::Unauthorized(_)));
        let mut a = answer(302, "text/html", "<html><title>Object moved</title></html>");
        a.headers.insert(
            http::header::LOCATION,
            HeaderValue::from_static(
                "https://spsprodweu5.vssps.visualstudio.com/_signin?realm=vssps.dev.azure.com&reply_to=x",
            ),
        );
        let e = classify("Pats_List", a, &l).unwrap_err();
        assert!(
            matches!(e, DevOpsError::Unauthorized(ref m) if m.contains("_signin") && !m.contains("reply_to")),
            "{e}"
        );
    }

    #[test]
    fn error_envelope_becomes_service_error() {
        let l = RateLimiter::new();
        let body = r#"{"$id":"1","innerException":null,"message":"TF400898: An Internal Error Occurred.","typeName":"Newtonsoft.Json.JsonReaderException, Newtonsoft.Json","typeKey":"JsonReaderException","errorCode":0,"eventId":0}"#;
        match classify("Pats_Create", answer(400, "application/json", body), &l).unwrap_err() {
            DevOpsError::Service { status, type_key, message } => {
                assert_eq!(status, 400);
                assert_eq!(type_key.as_deref(), Some("JsonReaderException"));
                assert!(message.contains("TF400898"));
            }
            other => panic!("{other:?}"),
        }
        let e = classify(
            "Pats_List",
            answer(
                401,
                "application/json",
                r#"{"message":"Service principals aren't allowed to perform this action."}"#,
            ),
            &l,
        )
        .unwrap_err();
        assert!(matches!(e, DevOpsError::Unauthorized(ref m) if m.contains("Service principals")));
        assert!(classify("Pats_List", answer(200, "application/json", "{}"), &l).is_ok());
        assert!(classify("Pats_Revoke", answer(204, "", ""), &l).is_ok());
    }
}
