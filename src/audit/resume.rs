//! The break-glass run record, so an interrupted break glass is resumed rather than started again: state
//! document `breakglass/<org>/<scope hash>` holds when the run started and whether it finished. A run
//! that finds an unfinished record for the same organization and scope takes its start time as "since":
//! replacements the rotation engine completed since then are this break glass's own (kept, not replaced
//! or revoked again). An unfinished record older than [`RESUME_WITHIN`] is not resumed: a break glass
//! that much later is a new emergency. Written with compare-and-swap; a finished record is replaced by the
//! next run.

use super::breakglass::Scope;
use crate::domain::OrgName;
use crate::state::{ETag, StateStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// How long an interrupted break glass can be resumed.
pub const RESUME_WITHIN: Duration = Duration::hours(24);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// What was asked, in words (for people reading the state).
    scope: String,
    #[serde(with = "time::serde::rfc3339")]
    started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished: Option<OffsetDateTime>,
}

/// A break glass in progress.
#[derive(Debug, Clone)]
pub struct Begun {
    key: String,
    etag: ETag,
    record: Record,
    /// When this break glass (or the interrupted run it resumes) started.
    pub since: OffsetDateTime,
    /// Whether an unfinished earlier run was found and is resumed.
    pub resumed: bool,
}

/// The state key of a break glass of `scope` in `org` (the scope is hashed: descriptors and UPNs carry
/// characters state keys do not allow).
pub fn key(org: &OrgName, scope: &Scope) -> String {
    let digest = Sha256::digest(format!("{scope}").as_bytes());
    format!("breakglass/{}/{}", org.as_str().to_ascii_lowercase(), hex::encode(&digest[..12]))
}

/// Starts a break glass, or resumes the unfinished one of the same organization and scope.
pub async fn begin(state: &dyn StateStore, org: &OrgName, scope: &Scope, now: OffsetDateTime) -> Result<Begun, String> {
    let key = key(org, scope);
    let loaded = state.load(&key).await.map_err(|e| format!("break-glass record {key}: {e}"))?;
    let previous = match &loaded {
        Some((body, _)) => Some(
            serde_json::from_slice::<Record>(body).map_err(|e| format!("break-glass record {key} is corrupt: {e}"))?,
        ),
        None => None,
    };
    if let (Some(p), Some((_, etag))) = (&previous, &loaded)
        && p.finished.is_none()
        && now - p.started <= RESUME_WITHIN
    {
        tracing::warn!(key = %key, started = %super::finding::rfc3339(p.started), "resuming an unfinished break glass");
        return Ok(Begun { key, etag: etag.clone(), since: p.started, resumed: true, record: p.clone() });
    }
    let record = Record { scope: scope.to_string(), started: now, finished: None };
    let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    let etag = state
        .save(&key, &body, loaded.as_ref().map(|(_, t)| t))
        .await
        .map_err(|e| format!("break-glass record {key}: {e} (is another break glass of the same scope running?)"))?;
    Ok(Begun { key, etag, since: now, resumed: false, record })
}

/// Marks the break glass finished (the next one of the same scope starts afresh).
pub async fn finish(state: &dyn StateStore, begun: Begun, now: OffsetDateTime) -> Result<(), String> {
    let record = Record { finished: Some(now), ..begun.record };
    let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    state
        .save(&begun.key, &body, Some(&begun.etag))
        .await
        .map_err(|e| format!("break-glass record {}: {e}", begun.key))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerId;
    use crate::state::FileStateStore;
    use time::macros::datetime;

    #[tokio::test]
    async fn an_unfinished_run_is_resumed_and_a_finished_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = FileStateStore::new(dir.path());
        let org = OrgName::parse("Fabrikam").unwrap();
        let scope = Scope::Owner(OwnerId::parse("ci@fabrikam.test").unwrap());
        let k = key(&org, &scope);
        assert!(k.starts_with("breakglass/fabrikam/") && crate::state::validate_key(&k).is_ok(), "{k}");
        assert_ne!(k, key(&org, &Scope::Organization));
        let (t0, t1, t2) =
            (datetime!(2026-11-01 10:00 UTC), datetime!(2026-11-01 10:05 UTC), datetime!(2026-11-02 9:00 UTC));
        let first = begin(&state, &org, &scope, t0).await.unwrap();
        assert!(!first.resumed && first.since == t0);
        // The process died before `finish`: the rerun resumes from t0.
        let again = begin(&state, &org, &scope, t1).await.unwrap();
        assert!(again.resumed && again.since == t0);
        finish(&state, again, t1).await.unwrap();
        let next = begin(&state, &org, &scope, t2).await.unwrap();
        assert!(!next.resumed && next.since == t2);
        // An unfinished run more than a day old is a new emergency, not a resume.
        let t3 = t2 + RESUME_WITHIN + Duration::minutes(1);
        let late = begin(&state, &org, &scope, t3).await.unwrap();
        assert!(!late.resumed && late.since == t3);
        let next = begin(&state, &org, &scope, t3).await.unwrap();
        assert!(next.resumed);
        // A stale copy cannot finish over a newer run.
        let stale = Begun { since: t0, ..next.clone() };
        finish(&state, next, t3).await.unwrap();
        assert!(finish(&state, stale, t3).await.is_err());
    }
}
