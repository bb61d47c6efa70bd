//! The audit log API (`auditservice.dev.azure.com/{org}/_apis/audit/auditlog`, 7.2): query a time window
//! page by page (`startTime`, `endTime`, `batchSize`, `continuationToken`, `hasMore`), accepting both the
//! spec example's `{"value": {…}}` wrapper and the unwrapped shape real responses use.
//!
//! [`AuditClient::pages`] is a stream of pages so a consumer (the audit rules engine) can process and
//! checkpoint one page at a time instead of holding a 90-day log in memory.

use super::http::{Call, DevOpsHttp};
use super::models::DevOpsError;
use super::retry::Idempotency;
use super::wire::{self, parse_timestamp};
use crate::domain::{AuthorizationId, OrgName};
use futures::Stream;
use http::Method;
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use time::OffsetDateTime;
use url::Url;

pub const API_VERSION: &str = "7.2-preview.1";
/// Largest batch the client asks for.
pub const MAX_BATCH: u32 = 1000;

/// One `DecoratedAuditLogEntry`. Undocumented or absent fields are `None`; `data` is kept whole.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub activity_id: Option<String>,
    #[serde(default, rename = "actorCUID")]
    pub actor_cuid: Option<String>,
    #[serde(default)]
    pub actor_user_id: Option<String>,
    #[serde(default)]
    pub actor_client_id: Option<String>,
    #[serde(default, rename = "actorUPN")]
    pub actor_upn: Option<String>,
    #[serde(default)]
    pub actor_display_name: Option<String>,
    #[serde(default)]
    pub authentication_mechanism: Option<String>,
    #[serde(deserialize_with = "tolerant_time", serialize_with = "time::serde::rfc3339::serialize")]
    pub timestamp: OffsetDateTime,
    #[serde(default)]
    pub scope_type: Option<String>,
    #[serde(default)]
    pub scope_display_name: Option<String>,
    #[serde(default)]
    pub scope_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    pub action_id: String,
    #[serde(default)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub area: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub category_display_name: Option<String>,
}

fn tolerant_time<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let s = String::deserialize(d)?;
    parse_timestamp(&s).map_err(serde::de::Error::custom)
}

/// What `authenticationMechanism` says. The format is undocumented; observed values include `""`, `AAD`,
/// `AAD_Cookie`, `FedAuth`, `SSH`, `S2S_ServicePrincipal`, `UserAuthToken`,
/// `SessionToken_Unscoped authorizationId: <id>` and `PAT_Unscoped authorizationId: <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMechanism {
    /// A personal access token (`PAT…`), with its authorization id when one could be read.
    Pat { authorization_id: Option<AuthorizationId> },
    /// A session token (`SessionToken…`), with its authorization id when present.
    SessionToken { authorization_id: Option<AuthorizationId> },
    /// Anything else (interactive sign-in, SSH, service principals, empty for the service itself).
    Other,
}

impl AuthMechanism {
    pub fn parse(raw: &str) -> Self {
        let s = raw.trim_start();
        let head = s.get(..3);
        if head.is_some_and(|h| h.eq_ignore_ascii_case("pat")) {
            return Self::Pat { authorization_id: authorization_id_in(s) };
        }
        if s.get(..12).is_some_and(|h| h.eq_ignore_ascii_case("sessiontoken")) {
            return Self::SessionToken { authorization_id: authorization_id_in(s) };
        }
        Self::Other
    }

    pub fn is_pat(&self) -> bool {
        matches!(self, Self::Pat { .. })
    }

    pub fn pat_id(&self) -> Option<AuthorizationId> {
        match self {
            Self::Pat { authorization_id } => *authorization_id,
            _ => None,
        }
    }
}

/// Finds `authorizationId` (any case), an optional `:`/`=` and whitespace, then a GUID of 32–36 hex digits
/// and hyphens (`authorizationId:\s*([0-9a-f-]{32,36})`, written by hand to stay allocation-free).
fn authorization_id_in(s: &str) -> Option<AuthorizationId> {
    const KEY: &str = "authorizationid";
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + KEY.len() <= bytes.len() {
        if bytes[i..i + KEY.len()].eq_ignore_ascii_case(KEY.as_bytes()) {
            let mut j = i + KEY.len();
            while j < bytes.len() && (bytes[j] == b':' || bytes[j] == b'=' || bytes[j].is_ascii_whitespace()) {
                j += 1;
            }
            let start = j;
            while j < bytes.len() && j - start < 36 && (bytes[j].is_ascii_hexdigit() || bytes[j] == b'-') {
                j += 1;
            }
            if j - start >= 32
                && let Some(id) = s.get(start..j).and_then(|g| AuthorizationId::parse(g).ok())
            {
                return Some(id);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

impl AuditEntry {
    /// The `authenticationMechanism`, parsed by the one defensive parser of its undocumented format
    /// ([`AuthMechanism`], also used by audit-log ingestion).
    fn mechanism(&self) -> AuthMechanism {
        AuthMechanism::parse(self.authentication_mechanism.as_deref().unwrap_or(""))
    }

    /// Whether the action was done with a PAT (`authenticationMechanism` starting with `PAT`).
    pub fn by_pat(&self) -> bool {
        self.mechanism().is_pat()
    }

    /// The PAT behind the action, from `"PAT_Unscoped authorizationId: <id>"` (or a session token's), or
    /// from `data.AuthorizationId` on `Token.*` events.
    pub fn authorization_id(&self) -> Option<AuthorizationId> {
        let from_mechanism = match self.mechanism() {
            AuthMechanism::Pat { authorization_id } | AuthMechanism::SessionToken { authorization_id } => {
                authorization_id
            }
            AuthMechanism::Other => None,
        };
        from_mechanism.or_else(|| {
            self.data
                .as_ref()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorizationId"))
                .and_then(|(_, v)| v.as_str())
                .and_then(|s| AuthorizationId::parse(s).ok())
        })
    }
}

/// One page of the log.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub continuation_token: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResult {
    #[serde(default)]
    decorated_audit_log_entries: Option<Vec<AuditEntry>>,
    #[serde(default)]
    continuation_token: Option<String>,
    #[serde(default)]
    has_more: Option<bool>,
}

/// Parses an `AuditLogQueryResult`, wrapped in `{"value": …}` or not (pure).
pub fn parse_page(body: &[u8]) -> Result<AuditPage, DevOpsError> {
    let mut v: serde_json::Value = wire::parse_json("AuditLog_Query", body)?;
    if v.get("decoratedAuditLogEntries").is_none()
        && let Some(inner) = v.get_mut("value").filter(|i| i.is_object())
    {
        v = inner.take();
    }
    let w: WireResult = serde_json::from_value(v).map_err(|e| {
        DevOpsError::Protocol(format!("AuditLog_Query: not an AuditLogQueryResult ({})", super::wire::json_error(&e)))
    })?;
    let continuation_token = w.continuation_token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    Ok(AuditPage {
        entries: w.decorated_audit_log_entries.unwrap_or_default(),
        has_more: w.has_more.unwrap_or(false),
        continuation_token,
    })
}

/// A query window.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub start_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    pub batch_size: u32,
    pub skip_aggregation: bool,
}

impl AuditQuery {
    pub fn window(start: OffsetDateTime, end: OffsetDateTime) -> Self {
        Self { start_time: Some(start), end_time: Some(end), batch_size: 200, skip_aggregation: false }
    }
}

/// The audit log of one organization.
#[derive(Debug, Clone)]
pub struct AuditClient {
    http: DevOpsHttp,
    base: Url,
    organization: OrgName,
}

impl AuditClient {
    pub fn new(http: DevOpsHttp, base: Url, organization: OrgName) -> Self {
        Self { http, base, organization }
    }

    pub fn organization(&self) -> &OrgName {
        &self.organization
    }

    fn url(&self, query: &AuditQuery, continuation: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([self.organization.as_str(), "_apis", "audit", "auditlog"]);
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(t) = query.start_time {
                q.append_pair("startTime", &wire::format_timestamp(t));
            }
            if let Some(t) = query.end_time {
                q.append_pair("endTime", &wire::format_timestamp(t));
            }
            q.append_pair("batchSize", &query.batch_size.clamp(1, MAX_BATCH).to_string());
            if query.skip_aggregation {
                q.append_pair("skipAggregation", "true");
            }
            if let Some(c) = continuation {
                q.append_pair("continuationToken", c);
            }
            q.append_pair("api-version", API_VERSION);
        }
        url
    }

    /// One page's raw body, for consumers that parse it as a stream (the audit module's streaming `entry::parse_page`);
    /// same request, retries and rate limiting as [`AuditClient::query_page`].
    pub async fn query_page_bytes(
        &self,
        query: &AuditQuery,
        continuation: Option<&str>,
    ) -> Result<bytes::Bytes, DevOpsError> {
        let call = Call {
            operation: "AuditLog_Query",
            method: Method::GET,
            url: self.url(query, continuation),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        Ok(self.http.send(call).await?.body)
    }

    /// One page.
    pub async fn query_page(&self, query: &AuditQuery, continuation: Option<&str>) -> Result<AuditPage, DevOpsError> {
        let call = Call {
            operation: "AuditLog_Query",
            method: Method::GET,
            url: self.url(query, continuation),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        let answer = self.http.send(call).await?;
        parse_page(&answer.body)
    }

    /// Every page of the window, lazily: the next page is fetched only when the consumer asks for it.
    /// Ends after the page with `hasMore: false`; an error ends the stream after being yielded.
    pub fn pages(&self, query: AuditQuery) -> impl Stream<Item = Result<AuditPage, DevOpsError>> + Send + '_ {
        struct St {
            next: Option<Option<String>>,
            seen: HashSet<String>,
        }
        let init = St { next: Some(None), seen: HashSet::new() };
        futures::stream::unfold(init, move |mut st| {
            let query = query.clone();
            async move {
                let continuation = st.next.take()?;
                match self.query_page(&query, continuation.as_deref()).await {
                    Err(e) => Some((Err(e), st)),
                    Ok(page) => {
                        if page.has_more {
                            match page.continuation_token.clone() {
                                None => {
                                    let e = DevOpsError::Protocol(
                                        "AuditLog_Query: hasMore without a continuationToken".into(),
                                    );
                                    return Some((Err(e), st));
                                }
                                Some(t) if !st.seen.insert(t.clone()) => {
                                    let e = DevOpsError::Protocol("AuditLog_Query repeated a continuationToken".into());
                                    return Some((Err(e), st));
                                }
                                Some(t) => st.next = Some(Some(t)),
                            }
                        }
                        Some((Ok(page), st))
                    }
                }
            }
        })
    }

    /// Every entry of the window (for small windows; prefer [`AuditClient::pages`]).
    pub async fn query_all(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, DevOpsError> {
        use futures::TryStreamExt;
        let pages: Vec<AuditPage> = self.pages(query).try_collect().await?;
        Ok(pages.into_iter().flat_map(|p| p.entries).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_wrapped_and_unwrapped() {
        let v = patrol_emulator::specs::spec_json(
            "azure-devops/audit/7.2/httpExamples/auditLog/GET__AuditLog_QueryLog_by_date.json",
        );
        let body = &v["responses"]["200"]["body"];
        let wrapped = parse_page(&serde_json::to_vec(body).unwrap()).unwrap();
        assert!(!wrapped.entries.is_empty());
        let inner = body.get("value").cloned().unwrap_or_else(|| body.clone());
        let unwrapped = parse_page(&serde_json::to_vec(&inner).unwrap()).unwrap();
        assert_eq!(wrapped.entries, unwrapped.entries);
        assert_eq!(wrapped.has_more, unwrapped.has_more);
        let e = &wrapped.entries[0];
        assert_eq!(e.action_id, "AuditLog.AccessLog");
        assert!(!e.by_pat());
    }

    #[test]
    fn pat_mechanism_names_the_authorization() {
        let body = br#"{"decoratedAuditLogEntries":[{"id":"1;2;3","actionId":"Git.RefUpdatePoliciesBypassed",
            "timestamp":"2026-11-01T10:00:00.1234567Z",
            "authenticationMechanism":"PAT_Unscoped authorizationId: 4ab5764f-4193-4f1d-b995-64144880b7d7",
            "ipAddress":"203.0.113.9","userAgent":"curl/8"}],"hasMore":true,"continuationToken":"abc"}"#;
        let p = parse_page(body).unwrap();
        assert!(p.has_more);
        assert_eq!(p.continuation_token.as_deref(), Some("abc"));
        let e = &p.entries[0];
        assert!(e.by_pat());
        assert_eq!(e.authorization_id().unwrap().to_string(), "4ab5764f-4193-4f1d-b995-64144880b7d7");
        let body = br#"{"decoratedAuditLogEntries":[{"id":"x","actionId":"Token.PatCreateEvent","timestamp":"2026-11-01T10:00:00Z",
            "authenticationMechanism":"AAD","data":{"AuthorizationId":"4ab5764f-4193-4f1d-b995-64144880b7d7"}}]}"#;
        let p = parse_page(body).unwrap();
        assert!(!p.has_more);
        assert!(!p.entries[0].by_pat());
        assert!(p.entries[0].authorization_id().is_some());
    }
}
