//! Key Vault's JSON on the wire (api-versions 2025-07-01 / 2026-04-01): request bodies, `SecretBundle`,
//! `SecretItem`, `DeletedSecretBundle`/`Item`, list results and `KeyVaultError`. Times are Unix seconds.

use super::vault::{Deleted, KvError, RECOVERABLE_DAYS, RECOVERY_LEVEL, Version};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AttributesIn {
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetBody {
    pub value: Option<String>,
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: Option<AttributesIn>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateBody {
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: Option<AttributesIn>,
}

#[derive(Debug, Deserialize)]
pub struct RestoreBody {
    pub value: Option<String>,
}

pub fn error_body(e: &KvError) -> Value {
    let mut err = json!({ "code": e.code, "message": e.message });
    if let Some(inner) = e.inner {
        err["innererror"] = json!({ "code": inner });
    }
    json!({ "error": err })
}

fn attributes(v: &Version) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), json!(v.enabled));
    if let Some(n) = v.nbf {
        a.insert("nbf".into(), json!(n));
    }
    if let Some(x) = v.exp {
        a.insert("exp".into(), json!(x));
    }
    a.insert("created".into(), json!(v.created));
    a.insert("updated".into(), json!(v.updated));
    a.insert("recoveryLevel".into(), json!(RECOVERY_LEVEL));
    a.insert("recoverableDays".into(), json!(RECOVERABLE_DAYS));
    Value::Object(a)
}

fn common(obj: &mut Map<String, Value>, v: &Version) {
    if let Some(ct) = &v.content_type {
        obj.insert("contentType".into(), json!(ct));
    }
    obj.insert("attributes".into(), attributes(v));
    if let Some(t) = &v.tags {
        obj.insert("tags".into(), json!(t));
    }
}

/// `SecretBundle`: with the value and the versioned id.
pub fn bundle(base: &str, name: &str, v: &Version) -> Value {
    let mut o = Map::new();
    o.insert("value".into(), json!(v.value));
    o.insert("id".into(), json!(format!("{base}/secrets/{name}/{}", v.id)));
    common(&mut o, v);
    Value::Object(o)
}

/// `SecretItem` for `GetSecrets` (base id, no version) or `GetSecretVersions` (versioned id).
pub fn item(base: &str, name: &str, v: &Version, with_version: bool) -> Value {
    let mut o = Map::new();
    let id = if with_version { format!("{base}/secrets/{name}/{}", v.id) } else { format!("{base}/secrets/{name}") };
    o.insert("id".into(), json!(id));
    common(&mut o, v);
    Value::Object(o)
}

fn deleted_fields(o: &mut Map<String, Value>, base: &str, d: &Deleted) {
    o.insert("recoveryId".into(), json!(format!("{base}/deletedsecrets/{}", d.secret.name)));
    o.insert("deletedDate".into(), json!(d.deleted_date));
    o.insert("scheduledPurgeDate".into(), json!(d.scheduled_purge_date));
}

/// `DeletedSecretBundle` (the current version; the service omits the value, as the spec example shows).
pub fn deleted_bundle(base: &str, d: &Deleted) -> Value {
    let Some(v) = d.secret.current() else { return json!({}) };
    let mut o = match item(base, &d.secret.name, v, true) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    deleted_fields(&mut o, base, d);
    Value::Object(o)
}

/// `DeletedSecretItem` (no value; base id).
pub fn deleted_item(base: &str, d: &Deleted) -> Value {
    let Some(v) = d.secret.current() else { return json!({}) };
    let mut o = match item(base, &d.secret.name, v, false) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    deleted_fields(&mut o, base, d);
    Value::Object(o)
}
