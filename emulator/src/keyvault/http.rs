//! HTTP for the Key Vault emulator: one dispatcher over the secrets paths, in the order the service checks
//! things — bearer token (401 + `WWW-Authenticate` challenge), RBAC (403), `api-version` (400), throttling
//! (429 + `Retry-After`), then the operation. Lists page with `$skiptoken` and `maxresults` (1–25).

use super::vault::{KvError, SetParams, UpdateParams};
use super::{KvState, evaluate_expiry, wire};
use crate::eventgrid::{KeyVaultEvent, SECRET_NEW_VERSION_CREATED};
use crate::tokens::{KEYVAULT_RESOURCE, Subject};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// API versions this emulator serves.
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"];
/// Key Vault's service limits per vault per 10 seconds.
pub const CREATE_LIMIT: u32 = 300;
pub const OTHER_LIMIT: u32 = 4000;

/// Fixed 10-second windows of real time, counting secret creates and other transactions apart.
#[derive(Debug)]
pub struct Limiter {
    window_start: std::time::Instant,
    creates: u32,
    others: u32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self { window_start: std::time::Instant::now(), creates: 0, others: 0 }
    }
}

impl Limiter {
    /// Counts a request; `false` when it is over the limit (throttled requests are not counted).
    fn admit(&mut self, create: bool) -> bool {
        if self.window_start.elapsed() >= std::time::Duration::from_secs(10) {
            *self = Self::default();
        }
        let (count, limit) = if create { (&mut self.creates, CREATE_LIMIT) } else { (&mut self.others, OTHER_LIMIT) };
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }
}

pub fn router(state: Arc<KvState>) -> axum::Router {
    axum::Router::new().fallback(
        move |public: Option<axum::Extension<crate::http::PublicHost>>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let origin = Origin::of(&state, public.map(|p| p.0.0));
                handle(&state, &origin, method, uri, headers, body)
            }
        },
    )
}

/// The vault's URL and the challenge's authority as the client addressed the vault: its loopback listener
/// and the emulator's Entra listener, or, through the proxy, `https://<vault>.vault.azure.net` and
/// `https://login.microsoftonline.com/<tenant>` as in Azure.
struct Origin {
    base: String,
    authority: String,
}

impl Origin {
    fn of(state: &KvState, public_host: Option<String>) -> Self {
        match public_host {
            Some(host) => {
                let tenant = state.authority.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
                Self {
                    base: format!("https://{host}"),
                    authority: format!("https://{}/{tenant}", crate::proxy::ENTRA_HOST),
                }
            }
            None => Self { base: state.base_url.clone(), authority: state.authority.clone() },
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut r =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body.to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

fn error_response(e: &KvError) -> Response {
    json_response(e.status, &wire::error_body(e))
}

fn challenge(origin: &Origin, message: &str) -> Response {
    let mut r = json_response(401, &json!({"error": {"code": "Unauthorized", "message": message}}));
    let value = format!(r#"Bearer authorization="{}", resource="{}""#, origin.authority, KEYVAULT_RESOURCE);
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle(state: &KvState, origin: &Origin, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut r = dispatch_checked(state, origin, &method, &uri, &headers, &body);
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        r.headers_mut().insert("x-ms-request-id", v);
    }
    if let Some(v) = headers.get("x-ms-client-request-id") {
        r.headers_mut().insert("x-ms-client-request-id", v.clone());
    }
    r.headers_mut().insert("x-ms-keyvault-service-version", HeaderValue::from_static("1.9.0.0 (patrol-emulator)"));
    r
}

fn dispatch_checked(
    state: &KvState,
    origin: &Origin,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    // 1. Bearer token.
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return challenge(origin, "AKV10000: Request is missing a Bearer or PoP token.");
    };
    let Some(token) = auth.strip_prefix("Bearer ").map(str::trim) else {
        return challenge(origin, "AKV10000: Request is missing a Bearer or PoP token.");
    };
    let grant = match state.issuer.validate(token) {
        Ok(g) => g,
        Err(crate::tokens::TokenProblem::Expired) => return challenge(origin, "AKV10032: Token expired."),
        Err(crate::tokens::TokenProblem::Unknown) => return challenge(origin, "AKV10032: Invalid issuer."),
    };
    if grant.resource.trim_end_matches('/') != KEYVAULT_RESOURCE {
        return challenge(origin, "AKV10022: Invalid audience.");
    }
    let principal = match &grant.subject {
        Subject::App { client_id } => client_id.clone(),
        Subject::User { upn } => upn.clone(),
    };
    let segs: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let action = action_of(method, &segs);
    // 2. Authorization (RBAC).
    if lock(&state.faults).forbidden_principals.contains(&principal) {
        return error_response(&KvError::new(
            403,
            "Forbidden",
            Some("ForbiddenByRbac"),
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={principal}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/patrol-emulator/providers/microsoft.keyvault/vaults/{}'",
                state.vault_name
            ),
        ));
    }
    // Role assignments per vault and per secret (when configured).
    let secret = match segs.as_slice() {
        ["secrets" | "deletedsecrets", name, ..] if !name.is_empty() => Some(*name),
        _ => None,
    };
    let admitted = super::rbac::allowed(lock(&state.rbac).as_deref(), &principal, action, secret);
    if !admitted {
        let scope = secret.map(|s| format!("/secrets/{s}")).unwrap_or_default();
        return error_response(&KvError::new(
            403,
            "Forbidden",
            Some("ForbiddenByRbac"),
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={principal}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/patrol-emulator/providers/microsoft.keyvault/vaults/{}{scope}'\r\nAssignment: (not found)\r\nVault: {};location=local",
                state.vault_name, state.vault_name
            ),
        ));
    }
    // 3. api-version.
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    match query.get("api-version") {
        None => {
            return error_response(&KvError::bad_parameter(
                "The api-version query parameter (?api-version=) is required for all requests",
            ));
        }
        Some(v) if !API_VERSIONS.contains(&v.as_str()) => {
            return error_response(&KvError::bad_parameter(format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version (2026-04-01)."
            )));
        }
        Some(_) => {}
    }
    // 4. Throttling: the fault knob first, then the real limits.
    let throttled = {
        let mut f = lock(&state.faults);
        if f.throttle_next > 0 {
            f.throttle_next -= 1;
            Some(f.retry_after_secs)
        } else {
            let create = *method == Method::PUT && segs.first() == Some(&"secrets");
            (!lock(&state.limiter).admit(create)).then_some(f.retry_after_secs.max(1))
        }
    };
    if let Some(secs) = throttled {
        let mut r = error_response(&KvError::new(
            429,
            "Throttled",
            None,
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        ));
        r.headers_mut().insert("retry-after", HeaderValue::from(secs));
        return r;
    }
    let result = dispatch(state, origin, method, &segs, &query, body);
    if *method != Method::GET {
        evaluate_expiry(state);
    }
    match result {
        Ok((status, Some(v))) => json_response(status, &v),
        Ok((status, None)) => StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The RBAC data action a request needs (for the 403 message).
fn action_of(method: &Method, segs: &[&str]) -> &'static str {
    match (method.as_str(), segs) {
        ("PUT", _) | ("PATCH", _) => "setSecret/action",
        ("GET", ["secrets"] | ["secrets", _, "versions"] | ["deletedsecrets"]) => "readMetadata/action",
        ("GET", _) => "getSecret/action",
        ("DELETE", ["secrets", _]) => "delete",
        ("DELETE", _) => "purge/action",
        ("POST", [_, _, "recover"]) => "recover/action",
        ("POST", [_, _, "backup"]) => "backup/action",
        ("POST", _) => "restore/action",
        _ => "readMetadata/action",
    }
}

type OpResult = Result<(u16, Option<Value>), KvError>;

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, KvError> {
    serde_json::from_slice(body).map_err(|e| KvError::bad_parameter(format!("The request body is not valid JSON: {e}")))
}

fn dispatch(
    state: &KvState,
    origin: &Origin,
    method: &Method,
    segs: &[&str],
    query: &HashMap<String, String>,
    body: &Bytes,
) -> OpResult {
    let now = state.clock.now();
    let base = origin.base.as_str();
    let m = method.as_str();
    match (m, segs) {
        ("GET", ["secrets"] | ["secrets", ""]) => {
            let items: Vec<Value> =
                lock(&state.vault).list(now).iter().map(|(n, v)| wire::item(base, n, v, false)).collect();
            page(state, origin, "secrets", items, query)
        }
        ("POST", ["secrets", "restore"]) => {
            let b: wire::RestoreBody = parse_body(body)?;
            let secret = decode_backup(b.value.as_deref().unwrap_or(""))?;
            let (name, v) = lock(&state.vault).restore(secret, now)?;
            let mut out = wire::bundle(base, &name, &v);
            if let Some(o) = out.as_object_mut() {
                o.remove("value");
            }
            Ok((200, Some(out)))
        }
        ("PUT", ["secrets", name]) => {
            let b: wire::SetBody = parse_body(body)?;
            let Some(value) = b.value else {
                return Err(KvError::bad_parameter("Property value is required."));
            };
            let a = b.attributes.unwrap_or_default();
            let p = SetParams {
                value,
                content_type: b.content_type,
                tags: b.tags,
                enabled: a.enabled,
                nbf: a.nbf,
                exp: a.exp,
            };
            let (name, v) = lock(&state.vault).set(name, p, now)?;
            state.events.raise(vec![KeyVaultEvent {
                id: uuid::Uuid::new_v4().to_string(),
                event_type: SECRET_NEW_VERSION_CREATED.into(),
                vault_name: state.vault_name.clone(),
                vault_url: state.base_url.clone(),
                object_name: name.clone(),
                version: v.id.clone(),
                nbf: v.nbf,
                exp: v.exp,
                time: now,
            }]);
            Ok((200, Some(wire::bundle(base, &name, &v))))
        }
        ("GET", ["secrets", name] | ["secrets", name, ""]) => {
            let (name, v) = lock(&state.vault).get(name, None, now)?;
            Ok((200, Some(wire::bundle(base, &name, &v))))
        }
        ("GET", ["secrets", name, "versions"]) => {
            let (name, versions) = lock(&state.vault).versions(name, now)?;
            let items = versions.iter().map(|v| wire::item(base, &name, v, true)).collect();
            page(state, origin, &format!("secrets/{name}/versions"), items, query)
        }
        ("GET", ["secrets", name, version]) => {
            let (name, v) = lock(&state.vault).get(name, Some(version), now)?;
            Ok((200, Some(wire::bundle(base, &name, &v))))
        }
        ("PATCH", ["secrets", name] | ["secrets", name, ""] | ["secrets", name, _]) => {
            let version = match segs {
                ["secrets", _, v] if !v.is_empty() => Some(*v),
                _ => None,
            };
            let b: wire::UpdateBody = if body.is_empty() { wire::UpdateBody::default() } else { parse_body(body)? };
            let a = b.attributes.unwrap_or_default();
            let p =
                UpdateParams { content_type: b.content_type, tags: b.tags, enabled: a.enabled, nbf: a.nbf, exp: a.exp };
            let (name, v) = lock(&state.vault).update(name, version, p, now)?;
            let mut out = wire::bundle(base, &name, &v);
            // UpdateSecret does not return the value.
            if let Some(o) = out.as_object_mut() {
                o.remove("value");
            }
            Ok((200, Some(out)))
        }
        ("DELETE", ["secrets", name]) => {
            let d = lock(&state.vault).delete(name, now)?;
            Ok((200, Some(wire::deleted_bundle(base, &d))))
        }
        ("POST", ["secrets", name, "backup"]) => {
            let s = lock(&state.vault).backup(name, now)?;
            Ok((200, Some(json!({ "value": encode_backup(&s) }))))
        }
        ("GET", ["deletedsecrets"] | ["deletedsecrets", ""]) => {
            let items = lock(&state.vault).list_deleted(now).iter().map(|d| wire::deleted_item(base, d)).collect();
            page(state, origin, "deletedsecrets", items, query)
        }
        ("GET", ["deletedsecrets", name]) => {
            let d = lock(&state.vault).get_deleted(name, now)?;
            Ok((200, Some(wire::deleted_bundle(base, &d))))
        }
        ("DELETE", ["deletedsecrets", name]) => {
            lock(&state.vault).purge(name, now)?;
            Ok((204, None))
        }
        ("POST", ["deletedsecrets", name, "recover"]) => {
            let (name, v) = lock(&state.vault).recover(name, now)?;
            let mut out = wire::bundle(base, &name, &v);
            if let Some(o) = out.as_object_mut() {
                o.remove("value");
            }
            Ok((200, Some(out)))
        }
        _ => Err(KvError::new(
            404,
            "NotFound",
            None,
            format!("The requested resource ({m} /{}) was not found in this key vault.", segs.join("/")),
        )),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SkipToken {
    #[serde(rename = "NextMarker")]
    next_marker: String,
    #[serde(rename = "TargetLocation")]
    target_location: u32,
    /// Emulator extension: this page is the empty one inserted by the `emptyPages` fault.
    #[serde(rename = "Empty", default)]
    empty: bool,
}

fn encode_token(offset: usize, empty: bool) -> String {
    let t = SkipToken { next_marker: offset.to_string(), target_location: 0, empty };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_token(s: &str) -> Result<(usize, bool), KvError> {
    let bad = || KvError::bad_parameter("The $skiptoken is invalid.");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| bad())?;
    let t: SkipToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((t.next_marker.parse().map_err(|_| bad())?, t.empty))
}

/// One page of a list, with `nextLink` while more remain.
fn page(state: &KvState, origin: &Origin, path: &str, items: Vec<Value>, query: &HashMap<String, String>) -> OpResult {
    let max = match query.get("maxresults") {
        None => 25,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(KvError::bad_parameter(format!(
                    "Invalid value for maxresults: {s}. The value must be between 1 and 25."
                )));
            }
        },
    };
    let (offset, empty_page) = match query.get("$skiptoken") {
        None => (0, false),
        Some(t) => decode_token(t)?,
    };
    let api = query.get("api-version").map(String::as_str).unwrap_or("2026-04-01");
    let link = |token: String| {
        let base = origin.base.replace("https://", "");
        // Like the service: an absolute URL with an explicit port.
        let host = if base.contains(':') { base } else { format!("{base}:443") };
        format!("https://{host}/{path}?api-version={api}&$skiptoken={token}&maxresults={max}")
    };
    if empty_page {
        return Ok((200, Some(json!({ "value": [], "nextLink": link(encode_token(offset, false)) }))));
    }
    let end = (offset + max).min(items.len());
    let slice: Vec<Value> = items.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut out = json!({ "value": slice });
    if end < items.len() {
        let empty = lock(&state.faults).empty_pages;
        out["nextLink"] = json!(link(encode_token(end, empty)));
    }
    // On the last page the service sends `"nextLink": null`; the spec types it as a string, so the
    // emulator leaves it out (clients treat both the same).
    Ok((200, Some(out)))
}

/// Backups are opaque to clients; this emulator's are base64url JSON with a marker prefix.
const BACKUP_PREFIX: &str = "PATROL-EMULATOR-BACKUP-V1.";

fn encode_backup(s: &super::vault::Secret) -> String {
    let versions: Vec<Value> = s
        .versions
        .iter()
        .map(|v| {
            json!({"id": v.id, "value": v.value, "contentType": v.content_type, "tags": v.tags, "enabled": v.enabled,
                   "nbf": v.nbf, "exp": v.exp, "created": v.created, "updated": v.updated})
        })
        .collect();
    let doc = json!({ "name": s.name, "versions": versions });
    format!("{BACKUP_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string()))
}

fn decode_backup(blob: &str) -> Result<super::vault::Secret, KvError> {
    let bad = || KvError::bad_parameter("Backup blob contains invalid or corrupt version.");
    let b64 = blob.strip_prefix(BACKUP_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let name = doc["name"].as_str().ok_or_else(bad)?.to_owned();
    super::vault::check_name(&name)?;
    let mut versions = Vec::new();
    for v in doc["versions"].as_array().ok_or_else(bad)? {
        versions.push(super::vault::Version {
            id: v["id"].as_str().ok_or_else(bad)?.to_owned(),
            value: v["value"].as_str().ok_or_else(bad)?.to_owned(),
            content_type: v["contentType"].as_str().map(str::to_owned),
            tags: serde_json::from_value(v["tags"].clone()).ok(),
            enabled: v["enabled"].as_bool().unwrap_or(true),
            nbf: v["nbf"].as_i64(),
            exp: v["exp"].as_i64(),
            created: v["created"].as_i64().unwrap_or(0),
            updated: v["updated"].as_i64().unwrap_or(0),
            near_expiry_sent_for: None,
            expired_sent_for: None,
        });
    }
    Ok(super::vault::Secret { name, versions, available_at: None })
}
