//! Posting JSON to a webhook whose URL is a secret: the URL is never logged or put in an error, redirects
//! are not followed (a redirect would carry the message to another host), and the response is classified
//! into retryable or permanent.

use super::channel::SendError;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// Longest `Retry-After` honoured; longer requests are treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The HTTP client for webhooks: bounded timeouts, no redirects, optional extra CA (`PATROL_CA_CERT`).
pub fn client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("patrol/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("PATROL_CA_CERT: {e}"))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| format!("cannot build the webhook HTTP client: {e}"))
}

/// Posts `body` as JSON to the secret `url`; 2xx is success.
pub async fn post_json(
    client: &reqwest::Client,
    channel: &str,
    url: &SecretString,
    body: &serde_json::Value,
) -> Result<(), SendError> {
    let resp = client.post(url.expose_secret()).json(body).send().await.map_err(|e| {
        let retryable = e.is_timeout() || e.is_connect() || e.is_request();
        let e = e.without_url();
        let msg = format!("{channel} webhook request failed: {e}");
        if retryable { SendError::retryable(msg) } else { SendError::permanent(msg) }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    let text = resp.text().await.unwrap_or_default();
    let snippet: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    let message = format!("{channel} webhook answered HTTP {}: {snippet}", status.as_u16());
    let retryable =
        status.as_u16() == 408 || status.as_u16() == 425 || status.as_u16() == 429 || status.is_server_error();
    Err(SendError { retryable, retry_after, message })
}
