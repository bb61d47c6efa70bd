//! Recording and querying audit log entries (pure over [`State`]): the Token.* events the PAT
//! operations emit, audited actions done with a PAT, 90-day retention on the virtual clock, and paging
//! newest-first with an opaque continuation token.

use crate::state::{AuditRecord, Org, PatRecord, State, User};
use base64::Engine;
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Audit events are kept 90 days (not configurable in the real service).
pub const RETENTION: Duration = Duration::days(90);

/// Who did something, as the audit log shows it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    pub upn: Option<String>,
    pub display_name: String,
    pub authentication_mechanism: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn user(u: &User, mechanism: &str, ip: Option<String>, user_agent: Option<String>) -> Self {
        Self {
            user_id: Some(u.id),
            client_id: None,
            upn: Some(u.upn.clone()),
            display_name: u.display_name.clone(),
            authentication_mechanism: mechanism.to_string(),
            ip_address: ip,
            user_agent,
        }
    }

    /// Azure DevOps itself (expiry, leak revocation).
    pub fn system() -> Self {
        Self {
            user_id: None,
            client_id: None,
            upn: None,
            display_name: "Azure DevOps Services".into(),
            authentication_mechanism: String::new(),
            ip_address: None,
            user_agent: None,
        }
    }
}

/// One event to record.
pub struct Event<'a> {
    pub action_id: &'a str,
    pub area: &'a str,
    pub category: &'a str,
    pub details: String,
    pub data: Map<String, Value>,
    pub at: OffsetDateTime,
}

/// `Token.Pat*Event` for a PAT; `owner` names the PAT's owner in the templates that mention one.
pub fn pat_event(action: &'static str, pat: &PatRecord, owner: &User, at: OffsetDateTime) -> Event<'static> {
    let name = &pat.display_name;
    let (category, details) = match action {
        "Token.PatCreateEvent" => ("create", format!("Personal Access Token \"{name}\" was created.")),
        "Token.PatUpdateEvent" => ("modify", format!("Personal Access Token \"{name}\" was updated.")),
        "Token.PatRevokeEvent" => ("remove", format!("Personal Access Token \"{name}\" was revoked.")),
        "Token.PatExpiredEvent" => ("modify", format!("Personal Access Token \"{name}\" expired.")),
        "Token.PatPublicDiscoveryEvent" => (
            "access",
            format!(
                "Personal Access Token \"{name}\" associated with user \"{}\" was discovered in a public repository.",
                owner.display_name
            ),
        ),
        "Token.PatSystemRevokeEvent" => (
            "remove",
            format!(
                "Personal Access Token \"{name}\" associated with user \"{}\" was revoked by the system.",
                owner.display_name
            ),
        ),
        _ => ("unknown", format!("Personal Access Token \"{name}\".")),
    };
    let mut data = Map::new();
    data.insert("DisplayName".into(), json!(name));
    data.insert("AuthorizationId".into(), json!(pat.id));
    data.insert("Scopes".into(), json!(pat.scope));
    data.insert("ValidTo".into(), json!(crate::wire::format_time(pat.valid_to)));
    data.insert("OwnerName".into(), json!(owner.display_name));
    data.insert("OwnerId".into(), json!(owner.id));
    data.insert("IsGlobal".into(), json!(pat.target_accounts.is_none()));
    Event { action_id: action, area: "Token", category, details, data, at }
}

/// Records an event in `org`'s log (if auditing is on there). Entries are kept ordered by time.
pub fn record(state: &mut State, org_key: &str, actor: &Actor, ev: Event<'_>, now: OffsetDateTime) {
    let seq = state.next_seq();
    let Some(org) = state.orgs.get_mut(org_key) else { return };
    if !org.policy.audit_enabled {
        return;
    }
    prune(org, now);
    let correlation = Uuid::new_v4();
    let rec = AuditRecord {
        seq,
        id: format!("{};{};{}", ev.at.unix_timestamp_nanos() / 100, org.id, correlation),
        correlation_id: correlation,
        activity_id: Uuid::new_v4(),
        actor_user_id: actor.user_id,
        actor_client_id: actor.client_id,
        actor_upn: actor.upn.clone(),
        actor_display_name: actor.display_name.clone(),
        authentication_mechanism: actor.authentication_mechanism.clone(),
        timestamp: ev.at,
        ip_address: actor.ip_address.clone(),
        user_agent: actor.user_agent.clone(),
        action_id: ev.action_id.to_string(),
        area: ev.area.to_string(),
        category: ev.category.to_string(),
        details: ev.details,
        data: ev.data,
    };
    let pos = org.audit.partition_point(|r| (r.timestamp, r.seq) <= (rec.timestamp, rec.seq));
    org.audit.insert(pos, rec);
}

/// Drops entries older than the retention period.
pub fn prune(org: &mut Org, now: OffsetDateTime) {
    let cutoff = now - RETENTION;
    let n = org.audit.partition_point(|r| r.timestamp < cutoff);
    if n > 0 {
        org.audit.drain(..n);
    }
}

/// A page of entries, newest first.
pub struct Page<'a> {
    pub entries: Vec<&'a AuditRecord>,
    /// Where the next page starts. Azure DevOps returns one on the last page too (the spec's example has a
    /// token with `hasMore: false`): clients must stop on `has_more`.
    pub continuation: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the continuation token is not valid for this query")]
pub struct BadContinuation;

/// Entries with `start <= timestamp < end`, newest first, at most `batch`, resuming after `continuation`.
pub fn query<'a>(
    org: &'a Org,
    start: OffsetDateTime,
    end: OffsetDateTime,
    batch: usize,
    continuation: Option<&str>,
) -> Result<Page<'a>, BadContinuation> {
    let resume = match continuation.filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_cursor(c).ok_or(BadContinuation)?),
        None => None,
    };
    let lo = org.audit.partition_point(|r| r.timestamp < start);
    let hi = org.audit.partition_point(|r| r.timestamp < end);
    let hi = match resume {
        Some(cur) => org.audit[..hi].partition_point(|r| (r.timestamp.unix_timestamp_nanos(), r.seq) < cur).max(lo),
        None => hi,
    };
    let window = &org.audit[lo..hi];
    let take = batch.min(window.len());
    let entries: Vec<&AuditRecord> = window.iter().rev().take(take).collect();
    let has_more = window.len() > take;
    let continuation = match entries.last() {
        Some(r) => Some(encode_cursor(r.timestamp.unix_timestamp_nanos(), r.seq)),
        None => continuation.filter(|c| !c.is_empty()).map(str::to_owned),
    };
    Ok(Page { entries, continuation, has_more })
}

fn encode_cursor(nanos: i128, seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{nanos}:{seq}"))
}

fn decode_cursor(s: &str) -> Option<(i128, u64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (a, b) = text.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The wire shape of one entry (`DecoratedAuditLogEntry`).
pub fn to_wire(org: &Org, r: &AuditRecord) -> Value {
    let category_display = match r.category.as_str() {
        "modify" => "Modify",
        "remove" => "Remove",
        "create" => "Create",
        "access" => "Access",
        "execute" => "Execute",
        _ => "Unknown",
    };
    json!({
        "id": r.id,
        "correlationId": r.correlation_id,
        "activityId": r.activity_id,
        "actorCUID": r.actor_user_id.unwrap_or(Uuid::nil()),
        "actorUserId": r.actor_user_id.unwrap_or(Uuid::nil()),
        "actorClientId": r.actor_client_id.unwrap_or(Uuid::nil()),
        "actorUPN": r.actor_upn,
        "actorDisplayName": r.actor_display_name,
        "actorImageUrl": null,
        "authenticationMechanism": r.authentication_mechanism,
        "timestamp": crate::wire::format_time(r.timestamp),
        "scopeType": "organization",
        "scopeDisplayName": format!("{} (Organization)", org.name),
        "scopeId": org.id,
        "projectId": null,
        "projectName": null,
        "ipAddress": r.ip_address,
        "userAgent": r.user_agent,
        "actionId": r.action_id,
        "data": r.data,
        "details": r.details,
        "area": r.area,
        "category": r.category,
        "categoryDisplayName": category_display,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OrgPolicy;

    fn org_with(n: usize, base: OffsetDateTime) -> State {
        let mut s = State::default();
        s.add_org("o", None, OrgPolicy::default()).unwrap();
        for i in 0..n {
            let ev = Event {
                action_id: "Test.Event",
                area: "Test",
                category: "access",
                details: format!("{i}"),
                data: Map::new(),
                at: base + Duration::minutes(i as i64),
            };
            record(&mut s, "o", &Actor::system(), ev, base);
        }
        s
    }

    #[test]
    fn pages_newest_first_without_gaps_or_repeats() {
        let base = time::macros::datetime!(2026-01-01 00:00 UTC);
        let s = org_with(25, base);
        let org = s.org("o").unwrap();
        let mut seen = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let p = query(org, base, base + Duration::days(1), 10, cont.as_deref()).unwrap();
            seen.extend(p.entries.iter().map(|r| r.details.clone()));
            assert!(p.continuation.is_some(), "every non-empty page has a token, the last one too");
            if !p.has_more {
                break;
            }
            cont = p.continuation;
        }
        let expected: Vec<String> = (0..25).rev().map(|i| i.to_string()).collect();
        assert_eq!(seen, expected);
        assert!(query(org, base, base, 10, Some("garbage!")).is_err());
    }

    #[test]
    fn retention_drops_entries_older_than_90_days() {
        let base = time::macros::datetime!(2026-01-01 00:00 UTC);
        let mut s = org_with(3, base);
        let later = base + Duration::days(91);
        let ev =
            Event { action_id: "X", area: "X", category: "access", details: "new".into(), data: Map::new(), at: later };
        record(&mut s, "o", &Actor::system(), ev, later);
        let org = s.org("o").unwrap();
        assert_eq!(org.audit.len(), 1);
        assert_eq!(org.audit[0].details, "new");
    }
}
