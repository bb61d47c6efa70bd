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

    /// Checks a webhook without sending anything (`super::check`): its URL and signing key are in patrol's
    /// store, the URL is https (plain http only to loopback), and its host resolves (to loopback for http).
    /// Nothing here names the URL or its host: a webhook URL is a credential.
    pub async fn check(&self, c: &Consumer, p: &mut super::check::Probe) -> Result<(), ConsumerError> {
        let ConsumerKind::Webhook { url_secret, signing_secret, .. } = &c.kind else {
            return Err(ConsumerError::Refused("not a webhook consumer".into()));
        };
        let url = self.secret(url_secret, "the webhook URL").await?;
        let key = self.secret(signing_secret, "the webhook signing key").await?;
        if key.expose_secret().trim().is_empty() {
            return Err(ConsumerError::NotConfigured(format!(
                "{}: the signing key in {signing_secret} is empty",
                c.id
            )));
        }
        let u = url::Url::parse(url.expose_secret().trim())
            .map_err(|e| ConsumerError::Refused(format!("{}: the value of {url_secret} is not a URL ({e})", c.id)))?;
        let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
            return Err(ConsumerError::Refused(format!("{}: the URL in {url_secret} names no host", c.id)));
        };
        let https = u.scheme() == "https";
        if !https && u.scheme() != "http" {
            return Err(ConsumerError::Refused(format!(
                "{}: the URL in {url_secret} must be https (plain http only to loopback)",
                c.id
            )));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| {
                ConsumerError::Transient(format!("{}: the host of the URL in {url_secret} does not resolve", c.id))
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ConsumerError::Transient(format!(
                "{}: the host of the URL in {url_secret} does not resolve",
                c.id
            )));
        }
        if !https && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(ConsumerError::Refused(format!(
                "{}: the URL in {url_secret} is plain http to a host that is not loopback; use https",
                c.id
            )));
        }
        p.right_type = Some(true);
        p.reachable = Some(true);
        p.note(format!(
            "URL ({}) and signing key in patrol's store; the host resolves; nothing was sent",
            if https { "https" } else { "http to loopback" }
        ));
        Ok(())
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

    #[tokio::test]
    async fn the_check_refuses_plain_http_off_loopback_and_names_no_url() {
        use crate::consumers::policy::{Consumer, ConsumerKind};
        use crate::domain::SecretName;
        let store = Arc::new(crate::store::memory::MemoryStore::new());
        let hooks = WebhookConsumers::new(reqwest::Client::new(), store.clone(), crate::clock::Clock::system());
        let c = Consumer {
            id: "webhook:hook-url".into(),
            kind: ConsumerKind::Webhook {
                url_secret: SecretName::parse("hook-url").unwrap(),
                signing_secret: SecretName::parse("hook-key").unwrap(),
                ack: false,
            },
            line: 1,
        };
        let set = |name: &'static str, v: &'static str| {
            let store = store.clone();
            async move {
                store.set(&SecretName::parse(name).unwrap(), &SecretString::from(v), Default::default()).await.unwrap()
            }
        };
        let mut p = crate::consumers::check::Probe::default();
        assert!(matches!(hooks.check(&c, &mut p).await, Err(ConsumerError::NotConfigured(_))), "no URL stored");
        set("hook-url", "http://10.1.2.3:8080/hooks/s3cr3t-path").await;
        set("hook-key", "k3y-0123456789").await;
        let mut p = crate::consumers::check::Probe::default();
        let e = hooks.check(&c, &mut p).await.unwrap_err();
        assert!(matches!(e, ConsumerError::Refused(_)), "{e}");
        assert!(!e.to_string().contains("10.1.2.3") && !e.to_string().contains("s3cr3t"), "{e}");
        set("hook-url", "ftp://127.0.0.1/x").await;
        assert!(matches!(hooks.check(&c, &mut Default::default()).await, Err(ConsumerError::Refused(_))));
        set("hook-url", "http://127.0.0.1:9/hooks/x").await;
        let mut p = crate::consumers::check::Probe::default();
        hooks.check(&c, &mut p).await.unwrap();
        assert_eq!((p.reachable, p.right_type), (Some(true), Some(true)));
        assert!(p.findings.iter().all(|f| !f.contains("127.0.0.1")), "{:?}", p.findings);
    }

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
