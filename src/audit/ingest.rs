//! Audit-log ingestion: poll one organization's log with a window that overlaps the previous one,
//! de-duplicate by entry id, evaluate every rule page by page as the bytes are parsed, and persist the
//! checkpoint (window end, ids inside the overlap, each PAT's last use) in a [`StateStore`] with
//! compare-and-swap, so two instances never both advance it.
//!
//! Rate limits are the client's job (`crate::devops::audit::AuditClient` waits on `Retry-After` and
//! `X-RateLimit-*`). Auditing that is off shows up as an empty log: when patrol itself changed a PAT inside
//! the window, long enough ago for the log's ingestion delay, and the window holds no PAT lifecycle event
//! and no entry of any kind from that moment on — counting entries already seen in the previous, overlapping
//! window — the report says so plainly and how to turn auditing on. De-duplication and log delay can
//! therefore never produce the verdict (see [`auditing_off_hint`]).

use super::context::AuditContext;
use super::entry::{MalformedEntry, parse_page};
use super::finding::Finding;
use super::rules::{EvalStats, Evaluator};
use crate::devops::DevOpsError;
use crate::devops::audit::{AuditClient, AuditQuery};
use crate::domain::OrgName;
pub use crate::evidence::{Checkpoint, checkpoint_key};
use crate::policy::audit::AuditSettings;
use crate::state::{StateError, StateStore};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashSet;
use time::{Duration, OffsetDateTime};

/// The longest the service keeps audit events.
pub const RETENTION: Duration = Duration::days(90);
/// Upper bound on pages per poll, so a misbehaving service cannot keep patrol paging forever.
pub const MAX_PAGES: usize = 10_000;

/// Where pages come from: the audit client, as raw bodies (parsed here as a stream).
#[async_trait]
pub trait AuditPages: Send + Sync {
    async fn page(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        batch_size: u32,
        continuation: Option<&str>,
    ) -> Result<bytes::Bytes, DevOpsError>;
}

#[async_trait]
impl AuditPages for AuditClient {
    async fn page(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        batch_size: u32,
        continuation: Option<&str>,
    ) -> Result<bytes::Bytes, DevOpsError> {
        let q = AuditQuery { batch_size, ..AuditQuery::window(start, end) };
        self.query_page_bytes(&q, continuation).await
    }
}

/// How to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// How far each window reaches back before the previous window's end (late-arriving entries).
    pub overlap: Duration,
    /// How far the first poll reaches back (at most the 90-day retention).
    pub first_lookback: Duration,
    pub batch_size: u32,
    /// How long after patrol's own PAT change its audit event must be visible before its absence means
    /// auditing is off. Microsoft documents no latency for the query API; audit streams deliver "every half
    /// hour or less", so the default is 30 minutes. Never more than `overlap` is used: every change of
    /// patrol's is then judged in a window that still contains it.
    pub audit_delay: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            overlap: Duration::minutes(30),
            first_lookback: Duration::days(1),
            batch_size: 1000,
            audit_delay: crate::evidence::AUDIT_DELAY,
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Serialize)]
pub struct PollReport {
    pub organization: OrgName,
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub window_end: OffsetDateTime,
    pub pages: usize,
    /// Entries read, including duplicates from the overlap.
    pub entries: u64,
    pub duplicates: u64,
    /// Up to 20 entries that were skipped as unusable, and the total.
    pub malformed: Vec<String>,
    pub malformed_total: u64,
    pub stats: EvalStats,
    pub findings: Vec<Finding>,
    /// Set when the log looks switched off, with what to do about it.
    pub auditing_off: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("reading the audit log of {organization}: {source}")]
    DevOps { organization: OrgName, source: DevOpsError },
    #[error(
        "the audit log of {organization} is not readable by this identity ({source}); the caller needs \
         'View audit log' (Project Collection Administrators have it) and the vso.auditlog scope, and auditing \
         must be on (Organization settings → Policies → Log Audit Events)"
    )]
    NotAllowed { organization: OrgName, source: DevOpsError },
    #[error("audit log page {page} of {organization}: {message}")]
    Page { organization: OrgName, page: usize, message: String },
    #[error("audit checkpoint: {0}")]
    State(#[from] StateError),
    #[error("audit checkpoint of {organization} is corrupt: {message}")]
    Corrupt { organization: OrgName, message: String },
}

/// Polls one organization once: `ctx` says what patrol knows (its `last_use` is replaced by the checkpoint's).
pub async fn poll(
    source: &dyn AuditPages,
    state: &dyn StateStore,
    organization: &OrgName,
    settings: &AuditSettings,
    ctx: &mut AuditContext,
    cfg: PollConfig,
    now: OffsetDateTime,
) -> Result<PollReport, IngestError> {
    let key = checkpoint_key(organization);
    let (mut cp, etag) = match state.load(&key).await? {
        Some((body, tag)) => {
            let cp: Checkpoint = serde_json::from_slice(&body)
                .map_err(|e| IngestError::Corrupt { organization: organization.clone(), message: e.to_string() })?;
            (cp, Some(tag))
        }
        None => (Checkpoint::default(), None),
    };
    let oldest = now - RETENTION;
    let start = cp.window_end.map(|e| e - cfg.overlap).unwrap_or(now - cfg.first_lookback).max(oldest).min(now);
    let end = now;
    // Coverage is continuous when this window reaches back to the previous one's end.
    let continuous = cp.window_end.is_some_and(|e| start <= e);
    let watched_since = match cp.watched_since {
        Some(w) if continuous => w,
        _ => start,
    };
    for (id, u) in &cp.last_use {
        ctx.last_use.entry(*id).or_insert_with(|| u.clone());
    }

    let mut findings = Vec::new();
    let mut malformed = Vec::new();
    let (mut malformed_total, mut duplicates, mut entries) = (0u64, 0u64, 0u64);
    let mut seen_tokens = HashSet::new();
    // What the window holds, duplicates included: the auditing-off verdict must not depend on de-duplication.
    let mut token_events = 0u64;
    let mut latest: Option<OffsetDateTime> = None;
    let mut pages = 0usize;
    let ctx_ref: &AuditContext = ctx;
    let mut ev = Evaluator::new(settings, ctx_ref, now);
    let mut continuation: Option<String> = None;
    loop {
        let body = source.page(start, end, cfg.batch_size, continuation.as_deref()).await.map_err(|e| match e {
            DevOpsError::Unauthorized(_) | DevOpsError::Service { status: 403, .. } => {
                IngestError::NotAllowed { organization: organization.clone(), source: e }
            }
            e => IngestError::DevOps { organization: organization.clone(), source: e },
        })?;
        pages += 1;
        let info = parse_page(&body, |r| match r {
            Ok(e) => {
                if e.action_id.starts_with("Token.") {
                    token_events += 1;
                }
                latest = latest.max(Some(e.timestamp));
                let id = e.id.as_ref();
                if cp.seen.contains_key(id) {
                    duplicates += 1;
                    return;
                }
                cp.seen.insert(id.to_owned(), e.timestamp.unix_timestamp());
                if let super::entry::AuthMechanism::Pat { authorization_id: Some(authorization_id) } = e.auth() {
                    cp.usage.entry(authorization_id).or_default().observe(&e);
                }
                ev.observe(&e, &mut |f| findings.push(f));
            }
            Err(m) => {
                malformed_total += 1;
                if malformed.len() < 20 {
                    malformed.push(MalformedEntry::to_string(&m));
                }
            }
        })
        .map_err(|e| IngestError::Page {
            organization: organization.clone(),
            page: pages,
            message: e.to_string(),
        })?;
        entries += info.entries;
        match (info.has_more, info.continuation_token) {
            (true, Some(t)) => {
                if !seen_tokens.insert(t.clone()) || pages >= MAX_PAGES {
                    return Err(IngestError::Page {
                        organization: organization.clone(),
                        page: pages,
                        message: "the service repeated a continuation token or paged without end".into(),
                    });
                }
                continuation = Some(t);
            }
            (true, None) => {
                return Err(IngestError::Page {
                    organization: organization.clone(),
                    page: pages,
                    message: "hasMore without a continuationToken".into(),
                });
            }
            (false, _) => break,
        }
    }
    let outcome = ev.finish(&mut |f| findings.push(f));

    let window = Window { start, end, entries, token_events, latest };
    let auditing_off = auditing_off_hint(ctx, organization, &window, cfg.audit_delay.min(cfg.overlap));

    // Advance the checkpoint only after the whole window was read.
    let keep_from = (end - cfg.overlap).unix_timestamp();
    cp.seen.retain(|_, ts| *ts >= keep_from);
    cp.window_end = Some(end);
    cp.watched_since = Some(watched_since);
    cp.last_use = outcome.last_use;
    cp.usage.retain(|_, u| {
        u.prune(oldest);
        !u.is_empty()
    });
    // The verdict persists only as long as the log stays empty: any entry (new or seen before) is evidence
    // that auditing is on.
    cp.auditing_off = auditing_off.is_some() || (cp.auditing_off && entries == 0);
    let body = serde_json::to_vec(&cp)
        .map_err(|e| IngestError::Corrupt { organization: organization.clone(), message: e.to_string() })?;
    state.save(&key, &body, etag.as_ref()).await?;
    ctx.last_use = cp.last_use;

    Ok(PollReport {
        organization: organization.clone(),
        window_start: start,
        window_end: end,
        pages,
        entries,
        duplicates,
        malformed,
        malformed_total,
        stats: outcome.stats,
        findings,
        auditing_off,
    })
}

/// What one window of the log held, duplicates of the previous window included.
struct Window {
    start: OffsetDateTime,
    end: OffsetDateTime,
    entries: u64,
    token_events: u64,
    /// The newest entry's timestamp.
    latest: Option<OffsetDateTime>,
}

/// Auditing is off when patrol changed a PAT in this organization inside the window, at least `delay` before
/// its end (so the log had time to ingest it), and the window — counting entries already seen in the
/// previous one — has no PAT lifecycle event at all and no entry of any kind from the moment of that change
/// on. An entry after patrol's change proves the log was recording then; one seen before is still evidence.
fn auditing_off_hint(ctx: &AuditContext, organization: &OrgName, w: &Window, delay: Duration) -> Option<String> {
    if w.token_events > 0 {
        return None;
    }
    let ours = ctx.actions().find(|a| {
        a.at >= w.start && a.at <= w.end - delay && ctx.action_in(a, organization) && w.latest.is_none_or(|l| l < a.at)
    })?;
    let entries = w.entries;
    Some(format!(
        "Auditing looks switched off for organization {organization}: patrol changed PAT \"{}\" at {} but the audit \
         log has {} for that time, so misuse of PATs cannot be detected. An organization Owner or Project \
         Collection Administrator can turn it on under Organization settings → Policies → Security policies → \
         \"Log Audit Events\" (Microsoft Entra-backed organizations only).",
        ours.display_name,
        super::finding::rfc3339(ours.at),
        if entries == 0 { "no entries at all".to_owned() } else { "no entries since".to_owned() }
    ))
}
