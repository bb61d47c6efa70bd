//! Control API routes for the Key Vault emulator and Event Grid delivery (merged into the emulator's
//! `/_control/…` listener): vault info, Key Vault faults, secret *version ids* (never values), raising
//! due expiry events now, the delivery target/mode, and the logs of raised events and delivery attempts.

use super::{Faults, KvState, evaluate_expiry, set_faults};
use crate::control::Body;
use crate::eventgrid::{DeliveryConfig, EventGrid};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest `duplicates` the control API accepts (each copy is a separate POST).
pub const MAX_DUPLICATES: u32 = 10;
/// Largest `Retry-After` a throttling fault may announce.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

#[derive(Clone)]
struct Shared {
    kv: Arc<KvState>,
    grid: EventGrid,
    ca_cert_path: String,
}

type Ctl = State<Shared>;

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg.into() }))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

pub fn router(kv: Arc<KvState>, grid: EventGrid, ca_cert_path: String) -> Router {
    Router::new()
        .route("/_control/keyvault", get(info))
        .route("/_control/keyvault/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/_control/keyvault/secrets", get(list_secrets))
        .route("/_control/keyvault/evaluate", post(evaluate))
        .route("/_control/eventgrid", get(get_delivery).put(put_delivery))
        .route("/_control/eventgrid/events", get(events))
        .route("/_control/eventgrid/deliveries", get(deliveries))
        .route("/_control/eventgrid/subscription", get(subscription))
        .route("/_control/eventgrid/validate", get(validate_manually))
        .with_state(Shared { kv, grid, ca_cert_path })
}

async fn info(State(s): Ctl) -> Response {
    ok(json!({
        "url": format!("{}/", s.kv.base_url),
        "vaultName": s.kv.vault_name,
        "authority": s.kv.authority,
        "caCert": s.ca_cert_path,
    }))
}

fn current_faults(kv: &KvState) -> Faults {
    kv.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn get_faults(State(s): Ctl) -> Response {
    ok(json!(current_faults(&s.kv)))
}

/// Checks Key Vault fault settings from a flag or the control API.
pub fn validate_faults(f: &Faults) -> Result<(), String> {
    if f.retry_after_secs > MAX_RETRY_AFTER_SECS {
        return Err(format!("retryAfterSecs {} is above the maximum of {MAX_RETRY_AFTER_SECS}", f.retry_after_secs));
    }
    if f.async_delay_ms < 0 {
        return Err(format!("asyncDelayMs {} is negative", f.async_delay_ms));
    }
    if f.forbidden_principals.iter().any(|p| p.trim().is_empty()) {
        return Err("forbiddenPrincipals contains an empty principal".into());
    }
    Ok(())
}

async fn put_faults(State(s): Ctl, Body(f): Body<Faults>) -> Response {
    if let Err(e) = validate_faults(&f) {
        return bad(e);
    }
    set_faults(&s.kv, f.clone());
    ok(json!(f))
}

async fn clear_faults(State(s): Ctl) -> Response {
    set_faults(&s.kv, Faults::default());
    ok(json!(Faults::default()))
}

/// Every live secret with its versions' ids and attributes. Values are never exposed here.
async fn list_secrets(State(s): Ctl) -> Response {
    let now = s.kv.clock.now();
    let mut vault = s.kv.vault.lock().unwrap_or_else(|p| p.into_inner());
    let names: Vec<String> = vault.list(now).into_iter().map(|(name, _)| name).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Ok((name, versions)) = vault.versions(&name, now) else { continue };
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "enabled": v.enabled,
                    "contentType": v.content_type,
                    "nbf": v.nbf,
                    "exp": v.exp,
                    "created": v.created,
                    "updated": v.updated,
                })
            })
            .collect();
        out.push(json!({ "name": name, "versions": versions }));
    }
    ok(json!({ "count": out.len(), "value": out }))
}

/// Raises due `SecretNearExpiry` / `SecretExpired` events now (the vault also does this every 200 ms).
async fn evaluate(State(s): Ctl) -> Response {
    evaluate_expiry(&s.kv);
    ok(json!({ "evaluated": true }))
}

/// Checks a delivery configuration: the target must be an http(s) URL on a loopback host (the emulator
/// only talks to 127.0.0.1), at least one attempt, a bounded number of duplicates.
pub fn validate_delivery(c: &DeliveryConfig) -> Result<(), String> {
    if let Some(t) = &c.target {
        let url = reqwest::Url::parse(t).map_err(|e| format!("target {t:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("target {t:?} must be an http or https URL"));
        }
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if !loopback {
            return Err(format!("target {t:?} is not on a loopback host; the emulator delivers to loopback only"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("target must not carry credentials".into());
        }
    }
    if c.max_attempts == 0 || c.max_attempts > 30 {
        return Err("maxAttempts must be between 1 and 30 (Event Grid's limits)".into());
    }
    if c.event_ttl_minutes == 0 || c.event_ttl_minutes > 1440 {
        return Err("eventTtlMinutes must be between 1 and 1440 (Event Grid's limits)".into());
    }
    if c.retry_delays_ms.iter().any(|d| *d > 60_000) {
        return Err("retryDelaysMs must each be at most 60000 (the fast policy is for tests)".into());
    }
    if c.duplicates > MAX_DUPLICATES {
        return Err(format!("duplicates {} is above the maximum of {MAX_DUPLICATES}", c.duplicates));
    }
    if c.function.is_empty() || !c.function.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!("function {:?} must be a non-empty name of [A-Za-z0-9_-]", c.function));
    }
    Ok(())
}

async fn get_delivery(State(s): Ctl) -> Response {
    ok(json!(s.grid.config()))
}

async fn put_delivery(State(s): Ctl, Body(mut c): Body<DeliveryConfig>) -> Response {
    if let Err(e) = validate_delivery(&c) {
        return bad(e);
    }
    if c.topic.is_empty() {
        c.topic = s.grid.config().topic;
    }
    s.grid.set_config(c.clone());
    ok(json!(c))
}

async fn events(State(s): Ctl) -> Response {
    let ev = s.grid.events();
    ok(json!({ "count": ev.len(), "value": ev }))
}

async fn deliveries(State(s): Ctl) -> Response {
    ok(json!({
        "value": s.grid.deliveries(),
        "deadLettered": s.grid.dead_lettered(),
        "deadLetters": s.grid.dead_letters(),
        "dropped": s.grid.dropped(),
    }))
}

/// The subscription's handshake state (`notRequired`, `pending`, `succeeded`, `failed` with a reason).
async fn subscription(State(s): Ctl) -> Response {
    ok(json!(s.grid.validation()))
}

#[derive(serde::Deserialize)]
struct ManualValidation {
    code: String,
}

/// The `validationUrl` of the validation event: a GET within 5 minutes validates the subscription.
async fn validate_manually(State(s): Ctl, axum::extract::Query(q): axum::extract::Query<ManualValidation>) -> Response {
    if s.grid.validate_manually(&q.code) {
        ok(json!({ "validated": true }))
    } else {
        (StatusCode::NOT_FOUND, Json(json!({ "error": "no pending validation with this code (or it expired)" })))
            .into_response()
    }
}

/// `GET|PUT|DELETE /_control/keyvault/rbac` (the primary vault) and `/_control/keyvaults/{name}/rbac` (any
/// hosted vault): the vault's role assignments. PUT takes `[{"principal", "role", "secret"?}]` and turns
/// RBAC on; DELETE turns it off (every authenticated caller admitted again).
pub fn rbac_router(vaults: Vec<Arc<KvState>>) -> Router {
    use axum::extract::Path;
    let vaults = Arc::new(vaults);
    let find = |vaults: &[Arc<KvState>], name: Option<&str>| -> Option<Arc<KvState>> {
        match name {
            None => vaults.first().cloned(),
            Some(n) => vaults.iter().find(|v| v.vault_name.eq_ignore_ascii_case(n)).cloned(),
        }
    };
    async fn show(kv: Option<Arc<KvState>>) -> Response {
        let Some(kv) = kv else {
            return (StatusCode::NOT_FOUND, Json(json!({"error": "no such vault"}))).into_response();
        };
        let r = kv.rbac.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ok(json!({ "vaultName": kv.vault_name, "enforced": r.is_some(), "assignments": r.unwrap_or_default() }))
    }
    async fn put(kv: Option<Arc<KvState>>, body: Body<Vec<super::rbac::RoleAssignment>>) -> Response {
        let Some(kv) = kv else {
            return (StatusCode::NOT_FOUND, Json(json!({"error": "no such vault"}))).into_response();
        };
        let assignments = body.0;
        if let Err(e) = super::rbac::validate(&assignments) {
            return bad(e);
        }
        *kv.rbac.lock().unwrap_or_else(|p| p.into_inner()) = Some(assignments);
        show(Some(kv)).await
    }
    async fn clear(kv: Option<Arc<KvState>>) -> Response {
        let Some(kv) = kv else {
            return (StatusCode::NOT_FOUND, Json(json!({"error": "no such vault"}))).into_response();
        };
        *kv.rbac.lock().unwrap_or_else(|p| p.into_inner()) = None;
        show(Some(kv)).await
    }
    let (v1, v2, v3, v4, v5, v6) =
        (vaults.clone(), vaults.clone(), vaults.clone(), vaults.clone(), vaults.clone(), vaults);
    Router::new()
        .route(
            "/_control/keyvault/rbac",
            get(move || show(find(&v1, None)))
                .put(move |b: Body<Vec<super::rbac::RoleAssignment>>| put(find(&v2, None), b))
                .delete(move || clear(find(&v3, None))),
        )
        .route(
            "/_control/keyvaults/{name}/rbac",
            get(move |Path(n): Path<String>| show(find(&v4, Some(&n))))
                .put(move |Path(n): Path<String>, b: Body<Vec<super::rbac::RoleAssignment>>| {
                    put(find(&v5, Some(&n)), b)
                })
                .delete(move |Path(n): Path<String>| clear(find(&v6, Some(&n)))),
        )
}
