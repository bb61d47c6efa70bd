//! `webhook` consumers: a signed, timestamped notification that a secret has a new version — never the
//! value. `X-Patrol-Timestamp: <unix seconds>` and `X-Patrol-Signature: sha256=<hex HMAC-SHA256(key,
//! "{timestamp}.{body}")>`; the body names the secret, its new version, the PAT's authorization id and a
//! stable `id` (the same for a resend), so a receiver dedupes. The URL and the key live in patrol's store
//! (a webhook URL is a credential). Delivery is at least once: a crash after sending resends with the same id.

use super::policy::{Consumer, ConsumerKind};
use super::{ConsumerError, WriteContext};
use crate::store::SecretStore;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const TIMESTAMP_HEADER: &str = "X-Patrol-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Patrol-Signature";

/// `sha256=<hex>` over `"{timestamp}.{body}"`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature (constant time) and that the timestamp is within `tolerance_secs` of `now`.
pub fn verify(key: &[u8], timestamp: i64, body: &[u8], signature: &str, now: i64, tolerance_secs: i64) -> bool {
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Ok(raw) = hex::decode(hex_sig) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

/// The stable id of one notification.
pub fn delivery_id(ctx: &WriteContext, consumer: &str) -> String {
    let d = Sha256::digest(format!("{}|{}|{consumer}", ctx.secret, ctx.vault_version).as_bytes());
    hex::encode(&d[..16])
}

pub struct WebhookConsumers {
    client: reqwest::Client,
    store: Arc<dyn SecretStore>,
    clock: crate::clock::Clock,
}

impl std::fmt::Debug for WebhookConsumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConsumers").finish_non_exhaustive()
    }
}

impl WebhookConsumers {
    pub fn new(client: reqwest::Client, store: Arc<dyn SecretStore>, clock: crate::clock::Clock) -> Self {
        Self { client, store, clock }
    }

    async fn secret(&self, name: &crate::domain::SecretName, what: &str) -> Result<SecretString, ConsumerError> {
        match self.store.get(name, None).await {
            Ok(Some(s)) => Ok(s.value),
            Ok(None) => Err(ConsumerError::NotConfigured(format!("{what} {name} is not in patrol's secret store"))),
            Err(e) => Err(ConsumerError::Transient(format!("reading {what} {name}: {e}"))),
        }
    }

    pub async fn write(&self, c: &Consumer, ctx: &WriteContext) -> Result<Option<String>, ConsumerError> {
        let ConsumerKind::Webhook { url_secret, signing_secret, ack } = &c.kind else {
            return Err(ConsumerError::Refused("not a webhook consumer".into()));
        };
        let url = self.secret(url_secret, "the webhook URL").await?;
        let key = self.secret(signing_secret, "the webhook signing key").await?;
        let now = self.clock.now();
        let id = delivery_id(ctx, &c.id);
        let body = serde_json::to_vec(&json!({
            "type": "patrol.secret.new-version",
            "id": id,
            "consumer": c.id,
            "secret": ctx.secret.as_str(),
            "version": ctx.vault_version,
            "authorizationId": ctx.authorization_id.to_string(),
            "operation": ctx.operation.as_ref().map(|o| o.to_string()),
            "sentAt": crate::timestamp::rfc3339(now),
            "ackRequested": ack,
        }))
        .map_err(|e| ConsumerError::Refused(e.to_string()))?;
        let ts = now.unix_timestamp();
        let sent = self
            .client
            .post(url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(key.expose_secret().as_bytes(), ts, &body))
            .header("X-Patrol-Delivery", &id)
            .body(body)
            .send()
            .await
            // The error text may contain the URL (a credential): never include it.
            .map_err(|e| {
                ConsumerError::Transient(format!("{}: the webhook could not be reached ({})", c.id, kind_of(&e)))
            })?;
        let status = resp_status(&sent);
        match status {
            200..=299 => Ok(Some(id)),
            429 | 500..=599 => Err(ConsumerError::Transient(format!("{}: the webhook answered HTTP {status}", c.id))),
            401 | 403 => Err(ConsumerError::Forbidden(format!("{}: the webhook answered HTTP {status}", c.id))),
            404 | 410 => Err(ConsumerError::NotFound(format!("{}: the webhook answered HTTP {status}", c.id))),
            _ => Err(ConsumerError::Refused(format!("{}: the webhook answered HTTP {status}", c.id))),
        }
    }
}

fn resp_status(r: &reqwest::Response) -> u16 {
    r.status().as_u16()
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"secret":"x"}"#;
        let s = sign(b"key", 1_700_000_000, body);
        assert!(verify(b"key", 1_700_000_000, body, &s, 1_700_000_100, 300));
        assert!(!verify(b"key", 1_700_000_000, body, &s, 1_700_001_000, 300), "too old");
        assert!(!verify(b"other", 1_700_000_000, body, &s, 1_700_000_100, 300));
        assert!(!verify(b"key", 1_700_000_000, b"{}", &s, 1_700_000_100, 300));
    }
}
