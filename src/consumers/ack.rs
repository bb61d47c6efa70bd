//! Webhook acknowledgements: a consumer that reloaded the new version POSTs a signed acknowledgement to
//! `RotateHttp` (`{"ack": {"secret", "version", "consumer"}}` with the same `X-Patrol-Timestamp` /
//! `X-Patrol-Signature` headers, signed with the consumer's key). It is recorded in the state store
//! (`consumers/ack/<secret>/<consumer hash>`) and counts as the consumer's evidence of use.

use super::policy::Consumer;
use super::state::UseEvidence;
use super::{ConsumerError, WriteContext};
use crate::domain::SecretName;
use crate::state::StateStore;
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
