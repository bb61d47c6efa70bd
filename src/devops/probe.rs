//! The new-PAT test: before a freshly created PAT is stored as current, patrol makes one side-effect-free
//! authenticated read in the token's organization with it — `GET {org}/_apis/connectionData`, the call
//! Microsoft's own clients make first with any credential, readable by a PAT of any scope — over Basic auth
//! (`:` + PAT). An answer without the caller's identity, a 401/403, a 203 sign-in page or HTML is a
//! refusal; a 5xx, 429 or a transport failure is "could not test" and is retried a few times.

use crate::domain::OrgName;
use async_trait::async_trait;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use url::Url;

/// What the test of a new PAT showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Azure DevOps authenticated the PAT and named its user.
    Accepted,
    /// Azure DevOps refused it: it must never become current.
    Refused(String),
    /// Azure DevOps could not be asked (5xx, throttled, unreachable) — nothing is known.
    Unavailable(String),
}

/// Tests a PAT with one side-effect-free read.
#[async_trait]
pub trait PatProbe: Send + Sync {
    async fn test(&self, organization: &OrgName, pat: &SecretString) -> ProbeOutcome;
}

/// The organization host for ordinary REST calls: `https://dev.azure.com/` when the PAT Lifecycle API is at
/// `https://vssps.dev.azure.com/`; the same URL otherwise (patrol-emulator serves both on one address).
pub fn organization_base(devops_url: &Url) -> Url {
    let mut u = devops_url.clone();
    if let Some(host) = u.host_str().map(str::to_owned)
        && let Some(rest) = host.strip_prefix("vssps.")
    {
        let _ = u.set_host(Some(rest));
    }
    u
}

/// [`PatProbe`] over HTTP.
#[derive(Debug, Clone)]
pub struct HttpPatProbe {
    client: reqwest::Client,
    base: Url,
    attempts: u32,
    backoff: Duration,
}

impl HttpPatProbe {
    pub fn new(client: reqwest::Client, devops_url: &Url) -> Self {
        Self { client, base: organization_base(devops_url), attempts: 3, backoff: Duration::from_millis(500) }
    }

    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    async fn once(&self, organization: &OrgName, pat: &SecretString) -> ProbeOutcome {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/{}/_apis/connectionData", self.base.path().trim_end_matches('/'), organization));
        url.set_query(Some("connectOptions=0&lastChangeId=-1&lastChangeId64=-1"));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{}", pat.expose_secret()));
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Basic {basic}"))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Basic"));
        auth.set_sensitive(true);
        let sent = self
            .client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json; api-version=7.1")
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::Unavailable(format!("could not reach Azure DevOps: {}", e)),
        };
        let status = resp.status().as_u16();
        let html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("text/html"));
        match status {
            200 if !html => {
                let body: serde_json::Value = match resp.json().await {
                    Ok(v) => v,
                    Err(e) => return ProbeOutcome::Unavailable(format!("connectionData was not JSON: {}", e)),
                };
                if body.pointer("/authenticatedUser/id").and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty()) {
                    ProbeOutcome::Accepted
                } else {
                    ProbeOutcome::Refused("connectionData named no authenticated user (anonymous access)".into())
                }
            }
            200 | 203 => ProbeOutcome::Refused(format!("HTTP {status}: a sign-in page instead of an answer")),
            300..=399 => ProbeOutcome::Refused(format!("HTTP {status}: redirected to sign-in")),
            401 | 403 => {
                let msg = resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                ProbeOutcome::Refused(format!(
                    "HTTP {status}{}",
                    if msg.is_empty() { String::new() } else { format!(": {msg}") }
                ))
            }
            429 | 500..=599 => ProbeOutcome::Unavailable(format!("HTTP {status}")),
            s => ProbeOutcome::Refused(format!("HTTP {s}")),
        }
    }
}

#[async_trait]
impl PatProbe for HttpPatProbe {
    async fn test(&self, organization: &OrgName, pat: &SecretString) -> ProbeOutcome {
        let mut last = ProbeOutcome::Unavailable("not tried".into());
        for attempt in 0..self.attempts {
            if attempt > 0 {
                let backoff = crate::backoff::Backoff::exponential(self.backoff, self.backoff * 64).with_jitter(0.0);
                tokio::time::sleep(backoff.delay(attempt - 1, 0.0)).await;
            }
            last = self.once(organization, pat).await;
            if !matches!(last, ProbeOutcome::Unavailable(_)) {
                return last;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_organization_host_of_the_pat_api() {
        let u = organization_base(&Url::parse("https://vssps.dev.azure.com/").unwrap());
        assert_eq!(u.as_str(), "https://dev.azure.com/");
        let e = organization_base(&Url::parse("http://127.0.0.1:8080/").unwrap());
        assert_eq!(e.as_str(), "http://127.0.0.1:8080/");
    }
}
