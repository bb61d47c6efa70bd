//! The audit log API (audit 7.2): `auditlog` queries with `startTime`, `endTime`, `batchSize` and
//! `continuationToken` (newest first, `hasMore`), `downloadlog` (the window as a JSON array or CSV),
//! and `actions` listing the Token area's action ids.
//! Organization administrators with `vso.auditlog` only.

use super::auth;
use super::errors::VssError;
use super::version::{self, ApiVersion};
use crate::audit_log;
use crate::context::Ctx;
use crate::http::ApiRequest;
use crate::wire::parse_time;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const MIN_VERSION: ApiVersion = ApiVersion { major: 5, minor: 1 };
pub const DEFAULT_BATCH: usize = 200;
pub const MAX_BATCH: usize = 1000;
const REALM: &str = "auditservice.dev.azure.com";

/// Token-area actions the emulator records (and reports through `actions`).
pub const TOKEN_ACTIONS: &[(&str, &str)] = &[
    ("Token.PatCreateEvent", "create"),
    ("Token.PatUpdateEvent", "modify"),
    ("Token.PatRevokeEvent", "remove"),
    ("Token.PatExpiredEvent", "modify"),
    ("Token.PatPublicDiscoveryEvent", "access"),
    ("Token.PatSystemRevokeEvent", "remove"),
];

pub fn query(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    if let Err(e) = version::negotiate(req.api_version(), MIN_VERSION, "auditlog") {
        return e.into_response();
    }
    let state = ctx.state();
    if let Err(r) =
        auth::admin_caller(ctx, &state, req, org, auth::AUDIT_LOG_SCOPES, auth::AdminRight::ViewAuditLog, REALM)
    {
        return r;
    }
    let now = ctx.now();
    let time_arg = |name: &str| -> Result<Option<time::OffsetDateTime>, VssError> {
        match req.query(name).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(raw) => parse_time(raw)
                .map(Some)
                .ok_or_else(|| VssError::argument(format!("{name} '{raw}' is not a valid date."))),
        }
    };
    let (start, end) = match (time_arg("startTime"), time_arg("endTime")) {
        (Ok(s), Ok(e)) => (s.unwrap_or(now - audit_log::RETENTION), e.unwrap_or(now + time::Duration::seconds(1))),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if start > end {
        return VssError::argument("startTime must not be after endTime.").into_response();
    }
    let batch = match req.query("batchSize") {
        None => DEFAULT_BATCH,
        Some(r) => match r.parse::<usize>() {
            Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
            _ => {
                return VssError::argument(format!("batchSize must be between 1 and {MAX_BATCH}; got '{r}'."))
                    .into_response();
            }
        },
    };
    let Some(o) = state.org(org) else { return super::unknown_org(org) };
    // Entries still being ingested (the organization's audit delay) are not visible yet.
    let start = start.max(now - audit_log::RETENTION);
    let end = end.min(now - time::Duration::seconds(o.policy.audit_delay_secs.min(86_400) as i64)).max(start);
    let page = match audit_log::query(o, start, end, batch, req.query("continuationToken")) {
        Ok(p) => p,
        Err(e) => return VssError::argument(e.to_string()).into_response(),
    };
    let entries: Vec<Value> = page.entries.iter().map(|r| audit_log::to_wire(o, r)).collect();
    let has_more = page.has_more;
    let body = json!({
        "decoratedAuditLogEntries": entries,
        "continuationToken": page.continuation.unwrap_or_default(),
        "hasMore": has_more,
    });
    (StatusCode::OK, Json(body)).into_response()
}

pub fn actions(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    if let Err(e) = version::negotiate(req.api_version(), MIN_VERSION, "actions") {
        return e.into_response();
    }
    let state = ctx.state();
    if let Err(r) =
        auth::admin_caller(ctx, &state, req, org, auth::AUDIT_LOG_SCOPES, auth::AdminRight::ViewAuditLog, REALM)
    {
        return r;
    }
    let area = req.query("areaName");
    let value: Vec<Value> = TOKEN_ACTIONS
        .iter()
        .filter(|_| area.is_none_or(|a| a.eq_ignore_ascii_case("Token")))
        .map(|(id, cat)| json!({ "area": "Token", "category": cat, "actionId": id }))
        .collect();
    (StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response()
}

/// `GET downloadlog?format=json|csv&startTime=&endTime=` — every entry of the window, newest first.
pub fn download(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    if let Err(e) = version::negotiate(req.api_version(), MIN_VERSION, "downloadlog") {
        return e.into_response();
    }
    let state = ctx.state();
    if let Err(r) =
        auth::admin_caller(ctx, &state, req, org, auth::AUDIT_LOG_SCOPES, auth::AdminRight::ViewAuditLog, REALM)
    {
        return r;
    }
    let csv = match req.query("format").map(str::to_ascii_lowercase).as_deref() {
        Some("json") => false,
        Some("csv") => true,
        _ => return VssError::argument("format must be 'json' or 'csv'.").into_response(),
    };
    let now = ctx.now();
    let parse = |name: &str, default: time::OffsetDateTime| match req.query(name).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(raw) => parse_time(raw).ok_or_else(|| VssError::argument(format!("{name} '{raw}' is not a valid date."))),
    };
    let (start, end) =
        match (parse("startTime", now - audit_log::RETENTION), parse("endTime", now + time::Duration::seconds(1))) {
            (Ok(s), Ok(e)) => (s.max(now - audit_log::RETENTION), e),
            (Err(e), _) | (_, Err(e)) => return e.into_response(),
        };
    let Some(o) = state.org(org) else { return super::unknown_org(org) };
    let page = match audit_log::query(o, start, end, usize::MAX, None) {
        Ok(p) => p,
        Err(e) => return VssError::argument(e.to_string()).into_response(),
    };
    let entries: Vec<Value> = page.entries.iter().map(|r| audit_log::to_wire(o, r)).collect();
    let (body, content_type, ext) = if csv {
        let cols = [
            "id",
            "timestamp",
            "actorUPN",
            "actorDisplayName",
            "authenticationMechanism",
            "ipAddress",
            "userAgent",
            "area",
            "category",
            "actionId",
            "details",
        ];
        let mut out = cols.join(",");
        out.push_str("\r\n");
        for e in &entries {
            let row: Vec<String> = cols
                .iter()
                .map(|c| {
                    let v = match &e[*c] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    format!("\"{}\"", v.replace('"', "\"\""))
                })
                .collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
        (out.into_bytes(), "text/csv; charset=utf-8", "csv")
    } else {
        (serde_json::to_vec(&entries).unwrap_or_default(), "application/json; charset=utf-8", "json")
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(content_type));
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"audit_log.{ext}\"")) {
        r.headers_mut().insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    r
}
