//! The lifecycle log: every PAT patrol created, rotated, revoked or retired, in the state store (`history/lifecycle`),
//! kept for [`KEEP`] and capped at [`MAX`] entries (newest win). Appended after every engine run that did
//! something (`engine::record_run`) and by break glass ([`record`]); read by the weekly report ([`since`]). Written
//! with compare-and-swap, so instances appending at once lose nothing. Never holds a secret value.

use crate::domain::{AuthorizationId, OrgName, OwnerId};
use crate::state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub const KEY: &str = "history/lifecycle";
/// How long events stay in the log (a weekly report plus margin).
pub const KEEP: Duration = Duration::days(35);
/// The most events the log keeps.
pub const MAX: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A token's first PAT (or one replacing a PAT that had gone missing).
    Created,
    Rotated,
    Revoked,
    /// A managed token retired by an operator (`patrol retire`): its current PAT revoked, its secret
    /// disabled, the token no longer rotated.
    Retired,
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: Kind,
    /// The managed secret, when there is one.
    pub secret: Option<String>,
    /// Whose PAT, where (`None` for a user reached through Token Admin by descriptor).
    pub owner: Option<OwnerId>,
    pub organization: OrgName,
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    /// The PAT a created or rotated one replaced.
    pub replaced: Option<AuthorizationId>,
    /// What triggered it (`RotateTimer`, `RotateHttp`, `EventGridSecretChanged`, `patrol rotate`,
    /// `patrol revoke`, …); `None` in events recorded before patrol kept it.
    #[serde(default)]
    pub by: Option<String>,
    /// Why, in a few words (the rotation reason; "grace over"; "break glass").
    pub detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    events: Vec<Event>,
}

/// Appends `events` (pruning old ones). Errors name the state key.
pub async fn record(state: &dyn StateStore, events: &[Event], now: OffsetDateTime) -> Result<(), String> {
    if events.is_empty() {
        return Ok(());
    }
    let err = |e: String| format!("lifecycle log {KEY}: {e}");
    for _ in 0..8 {
        let (mut log, etag) = match state.load(KEY).await.map_err(|e| err(e.to_string()))? {
            Some((b, t)) => (serde_json::from_slice::<Log>(&b).map_err(|e| err(format!("corrupt: {e}")))?, Some(t)),
            None => (Log::default(), None),
        };
        log.events.extend(events.iter().cloned());
        log.events.retain(|e| now - e.at <= KEEP);
        log.events.sort_by_key(|e| e.at);
        let excess = log.events.len().saturating_sub(MAX);
        log.events.drain(..excess);
        let body = serde_json::to_vec(&log).map_err(|e| err(e.to_string()))?;
        match state.save(KEY, &body, etag.as_ref()).await {
            Ok(_) => return Ok(()),
            Err(StateError::Conflict { .. }) => continue,
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Err(err("too many concurrent writers".into()))
}

/// Events at or after `from`, oldest first.
pub async fn since(state: &dyn StateStore, from: OffsetDateTime) -> Result<Vec<Event>, String> {
    let Some((body, _)) = state.load(KEY).await.map_err(|e| format!("lifecycle log {KEY}: {e}"))? else {
        return Ok(Vec::new());
    };
    let log: Log = serde_json::from_slice(&body).map_err(|e| format!("lifecycle log {KEY} is corrupt: {e}"))?;
    Ok(log.events.into_iter().filter(|e| e.at >= from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileStateStore;
    use time::macros::datetime;

    fn ev(at: OffsetDateTime, n: u128) -> Event {
        Event {
            at,
            kind: Kind::Revoked,
            secret: None,
            owner: None,
            organization: OrgName::parse("fabrikam").unwrap(),
            authorization_id: AuthorizationId::parse(&uuid::Uuid::from_u128(n).to_string()).unwrap(),
            display_name: "x".into(),
            scope: "vso.code".into(),
            valid_to: None,
            replaced: None,
            by: None,
            detail: "break glass".into(),
        }
    }

    #[tokio::test]
    async fn appends_prunes_old_events_and_reads_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let state = FileStateStore::new(dir.path());
        let t0 = datetime!(2026-10-01 00:00 UTC);
        record(&state, &[ev(t0, 1)], t0).await.unwrap();
        let t1 = t0 + Duration::days(20);
        record(&state, &[ev(t1, 2), ev(t1, 3)], t1).await.unwrap();
        assert_eq!(since(&state, t0).await.unwrap().len(), 3);
        assert_eq!(since(&state, t1).await.unwrap().len(), 2);
        let t2 = t0 + KEEP + Duration::days(1);
        record(&state, &[ev(t2, 4)], t2).await.unwrap();
        let all = since(&state, t0).await.unwrap();
        assert_eq!(all.iter().map(|e| e.authorization_id.to_string()).collect::<Vec<_>>().len(), 3, "t0 pruned");
        assert!(all.iter().all(|e| e.at >= t1));
    }
}
