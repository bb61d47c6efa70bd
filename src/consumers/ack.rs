//! Webhook acknowledgements: a consumer that reloaded the new version POSTs a signed acknowledgement to
//! `RotateHttp` (`{"ack": {"secret", "version", "consumer"}}` with the same `X-Patrol-Timestamp` /
//! `X-Patrol-Signature` headers, signed with the consumer's key). [`receive`] checks it — a managed
//! secret, a webhook consumer of it with `ack = true`, a timestamp within [`WINDOW_SECS`] of patrol's
//! clock, the HMAC (constant-time, `hmac`'s `verify_slice`), the version the journal holds as current,
//! not a replay of the last recorded one — and records it in the state store
//! (`consumers/ack/<secret>/<consumer hash>`), where [`find`] reads it as the consumer's evidence of use.
//! Neither the key nor the signature is ever logged, returned or stored (only a digest of the signature,
//! to refuse replays).

use super::policy::{Consumer, ConsumerKind};
use super::state::UseEvidence;
use super::{ConsumerError, WriteContext};
use crate::domain::SecretName;
use crate::policy::ManagedToken;
use crate::state::StateStore;
use crate::store::SecretStore;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// One recorded acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub secret: String,
    pub version: String,
    pub consumer: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// SHA-256 of the signature header of the request recorded (never the signature): a request sent
    /// again byte for byte is refused as a replay.
    #[serde(default)]
    pub signature_digest: String,
}

/// How far an acknowledgement's `X-Patrol-Timestamp` may be from patrol's clock, either way.
pub const WINDOW_SECS: i64 = 300;

/// An acknowledgement as received (the handler's `AckRequest`, without its transport).
#[derive(Clone, Copy)]
pub struct Received<'a> {
    pub secret: &'a SecretName,
    pub version: &'a str,
    pub consumer: &'a str,
    pub timestamp: i64,
    /// `sha256=<hex>`.
    pub signature: &'a str,
    /// The signed body bytes.
    pub body: &'a [u8],
}

/// Why an acknowledgement was refused (the caller gets the matching 4xx/503 and this text, which never
/// holds the key, the signature or a secret value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 404: no such managed secret, or no webhook consumer of it that acknowledges.
    #[error("{0}")]
    NotFound(String),
    /// 401: stale or future timestamp, or a signature that does not match.
    #[error("{0}")]
    Unauthorized(String),
    /// 409: not the current version, or a replay of the acknowledgement already recorded.
    #[error("{0}")]
    Conflict(String),
    /// 503: the key or the state store could not be read.
    #[error("{0}")]
    Unavailable(String),
}

/// Checks an acknowledgement and records it. `token` is the managed token named by the request (`None`:
/// not managed), `current_version` the vault version the token's journal holds as current.
pub async fn receive(
    token: Option<&ManagedToken>,
    current_version: Option<&str>,
    own: &dyn SecretStore,
    state: &dyn StateStore,
    now: OffsetDateTime,
    r: Received<'_>,
) -> Result<Ack, Refused> {
    let token = token.ok_or_else(|| Refused::NotFound(format!("secret {} is not managed by patrol", r.secret)))?;
    let consumer = token.consumers.get(r.consumer);
    let signing_secret = match consumer.map(|c| &c.kind) {
        Some(ConsumerKind::Webhook { signing_secret, ack: true, .. }) => signing_secret,
        Some(ConsumerKind::Webhook { .. }) => {
            return Err(Refused::NotFound(format!(
                "consumer {} of {} does not acknowledge (set ack = true on it in patrol.toml)",
                r.consumer, r.secret
            )));
        }
        Some(_) | None => {
            return Err(Refused::NotFound(format!(
                "{} is not a webhook consumer of {} (the consumer id is \"webhook:<url_secret>\", as in the notification's \"consumer\")",
                r.consumer, r.secret
            )));
        }
    };
    let skew = now.unix_timestamp() - r.timestamp;
    if skew.abs() > WINDOW_SECS {
        return Err(Refused::Unauthorized(format!(
            "the {} header is {} s {} patrol's clock (at most {WINDOW_SECS} s either way): sign with the current time",
            super::webhook::TIMESTAMP_HEADER,
            skew.abs(),
            if skew > 0 { "behind" } else { "ahead of" }
        )));
    }
    let signing_key = match own.get(signing_secret, None).await {
        Ok(Some(k)) => k.value,
        Ok(None) => {
            return Err(Refused::Unavailable(format!(
                "the signing key of {} ({signing_secret}) is not in patrol's secret store",
                r.consumer
            )));
        }
        Err(e) => return Err(Refused::Unavailable(format!("reading the signing key of {}: {e}", r.consumer))),
    };
    let sig = r.signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(signing_key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    drop(signing_key);
    mac.update(r.timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(r.body);
    // `verify_slice` compares in constant time (`subtle`).
    if sig.is_none_or(|s| mac.verify_slice(&s).is_err()) {
        return Err(Refused::Unauthorized(format!(
            "the {} does not match: sign \"{{timestamp}}.{{body}}\" with the consumer's key (HMAC-SHA256, hex, prefixed sha256=)",
            super::webhook::SIGNATURE_HEADER
        )));
    }
    match current_version {
        Some(v) if v == r.version => {}
        Some(v) => {
            return Err(Refused::Conflict(format!(
                "version {} is not the current version of {} (current: {v}); acknowledge the version of the latest notification",
                r.version, r.secret
            )));
        }
        None => return Err(Refused::Conflict(format!("{} has no current version yet", r.secret))),
    }
    let digest = hex::encode(Sha256::digest(r.signature.as_bytes()));
    let k = key(r.secret, r.consumer);
    let unavailable = |e: crate::state::StateError| Refused::Unavailable(format!("recording the acknowledgement: {e}"));
    let existing = state.load(&k).await.map_err(unavailable)?;
    if let Some((body, _)) = &existing
        && serde_json::from_slice::<Ack>(body).is_ok_and(|a| a.signature_digest == digest)
    {
        return Err(Refused::Conflict(
            "this acknowledgement was already recorded (a replay): sign a new one with the current time".into(),
        ));
    }
    let ack = Ack {
        secret: r.secret.to_string(),
        version: r.version.to_owned(),
        consumer: r.consumer.to_owned(),
        at: now,
        signature_digest: digest,
    };
    let body = serde_json::to_vec(&ack).map_err(|e| Refused::Unavailable(e.to_string()))?;
    state.save(&k, &body, existing.as_ref().map(|(_, e)| e)).await.map_err(unavailable)?;
    Ok(ack)
}

pub fn key(secret: &SecretName, consumer: &str) -> String {
    let h = Sha256::digest(consumer.as_bytes());
    format!("consumers/ack/{secret}/{}", hex::encode(&h[..12]))
}

/// Records an acknowledgement (last one wins).
pub async fn record(state: &dyn StateStore, secret: &SecretName, ack: &Ack) -> Result<(), String> {
    let k = key(secret, &ack.consumer);
    let body = serde_json::to_vec(ack).map_err(|e| e.to_string())?;
    let etag = state.load(&k).await.map_err(|e| e.to_string())?.map(|(_, e)| e);
    state.save(&k, &body, etag.as_ref()).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The acknowledgement of the version being delivered, made at or after `since`.
pub async fn find(
    state: &dyn StateStore,
    c: &Consumer,
    since: OffsetDateTime,
    ctx: &WriteContext,
) -> Result<Option<UseEvidence>, ConsumerError> {
    let Some((body, _)) = state
        .load(&key(&ctx.secret, &c.id))
        .await
        .map_err(|e| ConsumerError::Transient(format!("reading acknowledgements: {e}")))?
    else {
        return Ok(None);
    };
    let Ok(ack) = serde_json::from_slice::<Ack>(&body) else { return Ok(None) };
    Ok((ack.version == ctx.vault_version && ack.at >= since - time::Duration::minutes(5))
        .then(|| UseEvidence { at: ack.at, what: format!("acknowledged version {} at {}", ack.version, fmt(ack.at)) }))
}

fn fmt(t: OffsetDateTime) -> String {
    crate::timestamp::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::state::FileStateStore;
    use crate::store::memory::MemoryStore;
    use secrecy::SecretString;
    use time::macros::datetime;

    const POLICY: &str = "[defaults]\norganization = \"fabrikam\"\nowner = \"a@contoso.com\"\nscopes = \"vso.code\"\n\
        validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n[[token]]\nsecret = \"feed-pat\"\n\
        display_name = \"Feed\"\n[[token.consumer]]\nkind = \"webhook\"\nurl_secret = \"hook-url\"\n\
        signing_secret = \"hook-key\"\nack = true\n[[token.consumer]]\nkind = \"webhook\"\n\
        url_secret = \"quiet-url\"\nsigning_secret = \"hook-key\"\n";
    const KEY: &str = "whsec-unit-0123456789abcdef";
    const NOW: OffsetDateTime = datetime!(2027-01-02 03:04:05 UTC);

    struct Fixture {
        policy: Policy,
        own: MemoryStore,
        state: FileStateStore,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let own = MemoryStore::new();
        own.set(&SecretName::parse("hook-key").unwrap(), &SecretString::from(KEY), Default::default()).await.unwrap();
        Fixture {
            policy: Policy::parse(std::path::Path::new("patrol.toml"), POLICY).unwrap(),
            own,
            state: FileStateStore::new(dir.path()),
            _dir: dir,
        }
    }

    fn body(secret: &str, version: &str, consumer: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"ack": {"secret": secret, "version": version, "consumer": consumer}}))
            .unwrap()
    }

    impl Fixture {
        async fn send(
            &self,
            key: &str,
            ts: i64,
            (secret, version, consumer): (&str, &str, &str),
            current: Option<&str>,
        ) -> Result<Ack, Refused> {
            let b = body(secret, version, consumer);
            let sig = super::super::webhook::sign(key.as_bytes(), ts, &b);
            let name = SecretName::parse(secret).unwrap();
            let r = Received { secret: &name, version, consumer, timestamp: ts, signature: &sig, body: &b };
            receive(self.policy.token(&name), current, &self.own, &self.state, NOW, r).await
        }
    }

    const OK: (&str, &str, &str) = ("feed-pat", "v2", "webhook:hook-url");

    #[tokio::test]
    async fn a_signed_fresh_ack_of_the_current_version_is_recorded_once() {
        let f = fixture().await;
        let ts = NOW.unix_timestamp() - 30;
        let a = f.send(KEY, ts, OK, Some("v2")).await.unwrap();
        assert_eq!((a.version.as_str(), a.at), ("v2", NOW));
        let (stored, _) = f.state.load(&key(&SecretName::parse("feed-pat").unwrap(), OK.2)).await.unwrap().unwrap();
        let stored = String::from_utf8(stored).unwrap();
        assert!(
            !stored.contains(KEY)
                && !stored.contains(&super::super::webhook::sign(KEY.as_bytes(), ts, &body(OK.0, OK.1, OK.2)))
        );
        // The same request again is a replay; a new signature (a new timestamp) is accepted.
        assert!(matches!(f.send(KEY, ts, OK, Some("v2")).await, Err(Refused::Conflict(m)) if m.contains("replay")));
        assert!(f.send(KEY, ts + 1, OK, Some("v2")).await.is_ok());
    }

    #[tokio::test]
    async fn every_refusal_says_what_was_wrong_and_records_nothing() {
        let f = fixture().await;
        let ts = NOW.unix_timestamp();
        type Case = (Result<Ack, Refused>, fn(&Refused) -> bool, &'static str);
        let cases: Vec<Case> = vec![
            (
                f.send("wrong-key", ts, OK, Some("v2")).await,
                |e| matches!(e, Refused::Unauthorized(_)),
                "does not match",
            ),
            (f.send(KEY, ts - 301, OK, Some("v2")).await, |e| matches!(e, Refused::Unauthorized(_)), "301 s behind"),
            (f.send(KEY, ts + 400, OK, Some("v2")).await, |e| matches!(e, Refused::Unauthorized(_)), "ahead of"),
            (f.send(KEY, ts, OK, Some("v3")).await, |e| matches!(e, Refused::Conflict(_)), "not the current version"),
            (f.send(KEY, ts, OK, None).await, |e| matches!(e, Refused::Conflict(_)), "no current version"),
            (
                f.send(KEY, ts, ("other-pat", "v2", OK.2), Some("v2")).await,
                |e| matches!(e, Refused::NotFound(_)),
                "not managed",
            ),
            (
                f.send(KEY, ts, ("feed-pat", "v2", "webhook:nope"), Some("v2")).await,
                |e| matches!(e, Refused::NotFound(_)),
                "is not a webhook consumer",
            ),
            (
                f.send(KEY, ts, ("feed-pat", "v2", "webhook:quiet-url"), Some("v2")).await,
                |e| matches!(e, Refused::NotFound(_)),
                "ack = true",
            ),
        ];
        for (r, kind, words) in cases {
            let e = r.unwrap_err();
            assert!(kind(&e) && e.to_string().contains(words), "{e:?} should say {words:?}");
            assert!(!e.to_string().contains(KEY));
        }
        assert!(f.state.list("consumers/ack/").await.unwrap().is_empty(), "nothing recorded");
    }
}
