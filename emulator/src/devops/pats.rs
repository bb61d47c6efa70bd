//! The PAT Lifecycle API (`/{org}/_apis/tokens/pats`, tokens 7.1-preview.1 / 7.2-preview.1): List with
//! filters, sort and keyset paging; Get; Create (the only response carrying the secret); Update;
//! Revoke (204). Business refusals are HTTP 200 with `patTokenError` (+ `patTokenErrorMessage` on 7.2).

use super::auth;
use super::errors::VssError;
use super::pat_rules::{self, CreateRequest, Refusal, UpdateRequest};
use super::version::{self, ApiVersion};
use crate::audit_log::{self, Actor};
use crate::context::Ctx;
use crate::http::ApiRequest;
use crate::patsecret;
use crate::state::{Org, PatRecord, PatStatus, State, User};
use crate::wire::format_time;
use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

const MIN_VERSION: ApiVersion = ApiVersion { major: 6, minor: 1 };
pub const DEFAULT_TOP: usize = 20;
pub const MAX_TOP: usize = 100;

pub fn handle(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    let v = match version::negotiate(req.api_version(), MIN_VERSION, "pats") {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let write = req.method != Method::GET;
    let mut state = ctx.state();
    let user = match auth::pat_api_user(ctx, &state, req, org, write) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = ctx.now();
    match req.method {
        Method::GET if req.query("authorizationId").is_some() => get(&state, req, org, &user, v, now),
        Method::GET => list(&state, req, org, &user, now),
        Method::POST => create(ctx, &mut state, req, org, &user, v, now),
        Method::PUT => update(ctx, &mut state, req, org, &user, v, now),
        Method::DELETE => revoke(ctx, &mut state, req, org, &user, now),
        _ => VssError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "HttpMethodNotAllowedException",
            "System.Web.Http.HttpResponseException",
            "The requested resource does not support this http method.",
        )
        .into_response(),
    }
}

/// `PatToken` on the wire (typed, so lists serialize without intermediate JSON values).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PatWire<'a> {
    display_name: &'a str,
    valid_to: String,
    scope: &'a str,
    target_accounts: &'a Option<Vec<Uuid>>,
    valid_from: String,
    authorization_id: Uuid,
    token: Option<&'a str>,
}

impl<'a> PatWire<'a> {
    fn new(p: &'a PatRecord, token: Option<&'a str>) -> Self {
        Self {
            display_name: &p.display_name,
            valid_to: format_time(p.valid_to),
            scope: &p.scope,
            target_accounts: &p.target_accounts,
            valid_from: format_time(p.valid_from),
            authorization_id: p.id,
            token,
        }
    }
}

/// `PatToken` on the wire; the secret only when given.
pub fn pat_json(p: &PatRecord, token: Option<&str>) -> Value {
    serde_json::to_value(PatWire::new(p, token)).unwrap_or(Value::Null)
}

fn result(pat: Option<Value>, error: Option<&Refusal>, v: ApiVersion) -> Response {
    let mut body = json!({
        "patToken": pat,
        "patTokenError": error.map(|e| e.error).unwrap_or("none"),
    });
    if v.at_least_7_2() {
        body["patTokenErrorMessage"] = json!(error.map(|e| e.message.as_str()));
    }
    (StatusCode::OK, Json(body)).into_response()
}

fn refusal(error: &'static str, message: &str) -> Refusal {
    Refusal { error, message: message.to_string() }
}

/// The caller's PAT with this id, visible from `org`.
fn find<'a>(state: &'a State, user: &User, org_id: Uuid, id: Uuid) -> Option<&'a PatRecord> {
    state.pats.get(&id).filter(|p| p.owner == user.id && p.visible_in(org_id))
}

fn org_id(state: &State, org: &str) -> Uuid {
    state.org(org).map(|o| o.id).unwrap_or_default()
}

fn get(state: &State, req: &ApiRequest, org: &str, user: &User, v: ApiVersion, _now: OffsetDateTime) -> Response {
    let raw = req.query("authorizationId").unwrap_or_default();
    let Ok(id) = Uuid::parse_str(raw) else {
        return result(None, Some(&refusal("invalidAuthorizationId", "The authorizationId is not a valid GUID.")), v);
    };
    match find(state, user, org_id(state, org), id) {
        Some(p) => result(Some(pat_json(p, None)), None, v),
        None => result(
            None,
            Some(&refusal("authorizationNotFound", "No personal access token with this authorizationId was found.")),
            v,
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Filter {
    Active,
    Revoked,
    Expired,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum SortBy {
    DisplayName,
    DisplayDate,
    Status,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    f: Filter,
    s: SortBy,
    a: bool,
    k: String,
    i: Uuid,
}

fn parse_enum<T: Copy>(raw: Option<&str>, default: T, options: &[(&str, T)], name: &str) -> Result<T, VssError> {
    match raw {
        None => Ok(default),
        Some(r) => options
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(r))
            .map(|(_, v)| *v)
            .ok_or_else(|| VssError::argument(format!("The value '{r}' is not valid for {name}."))),
    }
}

/// What a list is ordered by (then by id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Name(String),
    Date(i128),
    Status(u8),
}

impl SortKey {
    fn of(p: &PatRecord, by: SortBy, now: OffsetDateTime) -> Self {
        match by {
            SortBy::DisplayName => Self::Name(p.display_name.to_lowercase()),
            SortBy::DisplayDate => Self::Date(p.valid_to.unix_timestamp_nanos()),
            SortBy::Status => Self::Status(match p.status(now) {
                PatStatus::Active => 0,
                PatStatus::Expired => 1,
                PatStatus::Revoked => 2,
            }),
        }
    }

    fn encode(&self) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Date(d) => d.to_string(),
            Self::Status(s) => s.to_string(),
        }
    }

    fn decode(by: SortBy, raw: &str) -> Option<Self> {
        Some(match by {
            SortBy::DisplayName => Self::Name(raw.to_string()),
            SortBy::DisplayDate => Self::Date(raw.parse().ok()?),
            SortBy::Status => Self::Status(raw.parse().ok()?),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PagedWire<'a> {
    continuation_token: String,
    pat_tokens: Vec<PatWire<'a>>,
}

fn list(state: &State, req: &ApiRequest, org: &str, user: &User, now: OffsetDateTime) -> Response {
    match list_inner(state, req, org, user, now) {
        Ok(bytes) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

fn list_inner(
    state: &State,
    req: &ApiRequest,
    org: &str,
    user: &User,
    now: OffsetDateTime,
) -> Result<Vec<u8>, VssError> {
    use Filter::*;
    let filter = parse_enum(
        req.query("displayFilterOption"),
        Active,
        &[("active", Active), ("revoked", Revoked), ("expired", Expired), ("all", All)],
        "displayFilterOption",
    )?;
    let sort = parse_enum(
        req.query("sortByOption"),
        SortBy::DisplayDate,
        &[("displayName", SortBy::DisplayName), ("displayDate", SortBy::DisplayDate), ("status", SortBy::Status)],
        "sortByOption",
    )?;
    let asc = match req.query("isSortAscending") {
        None => true,
        Some(r) => r
            .to_lowercase()
            .parse::<bool>()
            .map_err(|_| VssError::argument(format!("The value '{r}' is not valid for isSortAscending.")))?,
    };
    let top = match req.query("$top") {
        None => DEFAULT_TOP,
        Some(r) => match r.parse::<usize>() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => n,
            _ => return Err(VssError::argument(format!("$top must be between 1 and {MAX_TOP}; got '{r}'."))),
        },
    };
    let cursor = match req.query("continuationToken").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let cur: Cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| VssError::argument("The continuation token is not valid."))?;
            if cur.f != filter || cur.s != sort || cur.a != asc {
                return Err(VssError::argument(
                    "The continuation token was issued for different filtering options. Subsequent calls must supply the same displayFilterOption, sortByOption and isSortAscending.",
                ));
            }
            let key = SortKey::decode(sort, &cur.k)
                .ok_or_else(|| VssError::argument("The continuation token is not valid."))?;
            Some((key, cur.i))
        }
    };
    let oid = org_id(state, org);
    let mut rows: Vec<(SortKey, Uuid, &PatRecord)> = state
        .index
        .pats_by_owner
        .get(&user.id)
        .into_iter()
        .flatten()
        .filter_map(|id| state.pats.get(id))
        .filter(|p| p.visible_in(oid))
        .filter(|p| {
            matches!(
                (filter, p.status(now)),
                (All, _) | (Active, PatStatus::Active) | (Revoked, PatStatus::Revoked) | (Expired, PatStatus::Expired)
            )
        })
        .map(|p| (SortKey::of(p, sort, now), p.id, p))
        .filter(|(k, id, _)| match &cursor {
            None => true,
            Some((ck, ci)) if asc => (k, id) > (ck, ci),
            Some((ck, ci)) => (k, id) < (ck, ci),
        })
        .collect();
    rows.sort_unstable_by(|a, b| if asc { (&a.0, a.1).cmp(&(&b.0, b.1)) } else { (&b.0, b.1).cmp(&(&a.0, a.1)) });
    let more = rows.len() > top;
    rows.truncate(top);
    let continuation = match (more, rows.last()) {
        (true, Some((k, i, _))) => {
            let c = Cursor { f: filter, s: sort, a: asc, k: k.encode(), i: *i };
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap_or_default())
        }
        _ => String::new(),
    };
    let page = PagedWire {
        continuation_token: continuation,
        pat_tokens: rows.iter().map(|(_, _, p)| PatWire::new(p, None)).collect(),
    };
    serde_json::to_vec(&page).map_err(|e| VssError::unavailable(format!("serializing the list failed: {e}")))
}

fn parse_body<T: for<'de> Deserialize<'de>>(req: &ApiRequest) -> Result<T, Response> {
    serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")).into_response())
}

fn actor(user: &User, req: &ApiRequest) -> Actor {
    Actor::user(user, "AAD", Some(req.client_ip()), req.user_agent())
}

fn create(
    ctx: &Ctx,
    state: &mut State,
    req: &ApiRequest,
    org: &str,
    user: &User,
    v: ApiVersion,
    now: OffsetDateTime,
) -> Response {
    let body: CreateRequest = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(o) = state.org(org).map(Org::light) else { return super::unknown_org(org) };
    let new = match pat_rules::check_create(state, user, &o, &body, now) {
        Ok(n) => n,
        Err(e) => return result(None, Some(&e), v),
    };
    let secret = patsecret::generate(now.year(), u8::from(now.month()));
    ctx.secrets.record("pat", &secret);
    let hash = patsecret::hash(&secret);
    let rec = PatRecord {
        id: Uuid::new_v4(),
        owner: user.id,
        org: o.id,
        display_name: new.display_name,
        scope: new.scope,
        target_accounts: if new.global { None } else { Some(vec![o.id]) },
        valid_from: now,
        valid_to: new.valid_to,
        revoked_at: None,
        revoked_by: None,
        hash: hex::encode(hash),
        expired_recorded: false,
    };
    let body = pat_json(&rec, Some(&secret));
    let ev = audit_log::pat_event("Token.PatCreateEvent", &rec, user, now);
    state.insert_pat(rec, hash);
    audit_log::record(state, &org.to_lowercase(), &actor(user, req), ev, now);
    ctx.changed();
    result(Some(body), None, v)
}

fn update(
    ctx: &Ctx,
    state: &mut State,
    req: &ApiRequest,
    org: &str,
    user: &User,
    v: ApiVersion,
    now: OffsetDateTime,
) -> Response {
    let body: UpdateRequest = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(o) = state.org(org).map(Org::light) else { return super::unknown_org(org) };
    let Some(id) = body.authorization_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()) else {
        return result(None, Some(&refusal("invalidAuthorizationId", "A valid authorizationId is required.")), v);
    };
    let Some(pat) = find(state, user, o.id, id).cloned() else {
        return result(
            None,
            Some(&refusal("authorizationNotFound", "No personal access token with this authorizationId was found.")),
            v,
        );
    };
    let changes = match pat_rules::check_update(state, user, &o, &pat, &body, now) {
        Ok(c) => c,
        Err(e) => return result(None, Some(&e), v),
    };
    if let Some(t) = changes.valid_to {
        state.set_valid_to(id, t);
    }
    let Some(p) = state.pats.get_mut(&id) else { return super::unknown_org(org) };
    if let Some(n) = changes.display_name {
        p.display_name = n;
    }
    if let Some(s) = changes.scope {
        p.scope = s;
    }
    match changes.global {
        Some(true) => p.target_accounts = None,
        Some(false) if p.target_accounts.is_none() => p.target_accounts = Some(vec![o.id]),
        _ => {}
    }
    let updated = p.clone();
    let ev = audit_log::pat_event("Token.PatUpdateEvent", &updated, user, now);
    audit_log::record(state, &org.to_lowercase(), &actor(user, req), ev, now);
    ctx.changed();
    result(Some(pat_json(&updated, None)), None, v)
}

fn revoke(ctx: &Ctx, state: &mut State, req: &ApiRequest, org: &str, user: &User, now: OffsetDateTime) -> Response {
    let Some(raw) = req.query("authorizationId") else {
        return VssError::argument("The authorizationId query parameter is required.").into_response();
    };
    let Ok(id) = Uuid::parse_str(raw) else {
        return VssError::argument(format!("The authorizationId '{raw}' is not a valid GUID.")).into_response();
    };
    let oid = org_id(state, org);
    let Some(pat) = find(state, user, oid, id).cloned() else {
        return VssError::not_found(
            "SessionTokenNotFoundException",
            format!("No personal access token with authorizationId {id} was found."),
        )
        .into_response();
    };
    if state.mark_revoked(id, now, crate::state::Revoker::Owner) {
        let ev = audit_log::pat_event("Token.PatRevokeEvent", &pat, user, now);
        audit_log::record(state, &org.to_lowercase(), &actor(user, req), ev, now);
        ctx.changed();
    }
    StatusCode::NO_CONTENT.into_response()
}
