//! `EventGridSecretChanged`'s input: one Key Vault event (`Data.eventGridEvent`), in the Event Grid schema
//! (`eventType`, `subject`, `eventTime`, `data`) or the CloudEvents schema (`type`, `subject`, `time`,
//! `data`), as an object or a JSON string holding one.
//!
//! Key Vault's `data` is `{Id, VaultName, ObjectType, ObjectName, Version, NBF, EXP}`; `NBF`/`EXP` arrive as
//! numbers, numeric strings or null, and published samples have stray spaces in keys and values. Events
//! that are not about a secret (keys, certificates, access policy) become [`EventInput::NotASecret`], which
//! the handler answers itself without waking the rotation engine.

use super::lenient::{self, PayloadError};
use super::payload::Request;
use crate::domain::SecretName;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The binding name in `EventGridSecretChanged/function.json`.
pub const BINDING: &str = "eventGridEvent";

/// The Key Vault secret events patrol reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SecretEventKind {
    #[serde(rename = "Microsoft.KeyVault.SecretNewVersionCreated")]
    NewVersionCreated,
    #[serde(rename = "Microsoft.KeyVault.SecretNearExpiry")]
    NearExpiry,
    #[serde(rename = "Microsoft.KeyVault.SecretExpired")]
    Expired,
}

impl SecretEventKind {
    fn parse(event_type: &str) -> Option<Self> {
        let t = event_type.trim();
        [
            ("Microsoft.KeyVault.SecretNewVersionCreated", Self::NewVersionCreated),
            ("Microsoft.KeyVault.SecretNearExpiry", Self::NearExpiry),
            ("Microsoft.KeyVault.SecretExpired", Self::Expired),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(t))
        .map(|(_, k)| k)
    }
}

/// A Key Vault secret event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretEvent {
    /// Event Grid's event id (deliveries are at-least-once: the same id can arrive twice).
    pub id: String,
    #[serde(rename = "eventType")]
    pub kind: SecretEventKind,
    pub vault: String,
    pub secret: SecretName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub event_time: Option<OffsetDateTime>,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventInput {
    Secret(SecretEvent),
    /// Any other event (a key, a certificate, an access-policy change, an unknown type).
    NotASecret {
        event_type: String,
        subject: String,
    },
}

impl EventInput {
    pub fn from_request(req: &Request) -> Result<Self, PayloadError> {
        let (key, value) = req.binding(BINDING)?;
        let path = format!("Data.{key}");
        // A batch of one (an array binding, or a hand-made request) is accepted; the host dispatches
        // events one at a time, so a longer array is a misconfiguration worth failing loudly.
        let value = match value {
            Value::Array(items) if items.len() == 1 => &items[0],
            Value::Array(items) => {
                return Err(PayloadError::new(
                    path,
                    format!("holds {} events; expected one (use single dispatch: a non-array binding)", items.len()),
                ));
            }
            v => v,
        };
        if value.is_null() {
            return Err(PayloadError::new(path, "is null"));
        }
        let event = lenient::object(value, &path)?;
        Self::from_event(&event, &path)
    }

    fn from_event(event: &Map<String, Value>, path: &str) -> Result<Self, PayloadError> {
        let field = |k: &str| -> Result<Option<String>, PayloadError> {
            lenient::get(event, k).map(|v| lenient::string(v, &format!("{path}.{k}"))).transpose()
        };
        let (type_key, event_type) = match field("eventType")? {
            Some(t) => ("eventType", t),
            None => {
                ("type", field("type")?.ok_or_else(|| PayloadError::new(format!("{path}.eventType"), "is missing"))?)
            }
        };
        let subject = field("subject")?.unwrap_or_default();
        let data = match lenient::get(event, "data") {
            None => Map::new(),
            Some(v) => lenient::object(v, &format!("{path}.data"))?.into_owned(),
        };
        let dpath = format!("{path}.data");
        let dfield = |k: &str| -> Result<Option<String>, PayloadError> {
            let v = lenient::get(&data, k).map(|v| lenient::string(v, &format!("{dpath}.{k}"))).transpose()?;
            Ok(v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        };

        let kind = SecretEventKind::parse(&event_type);
        let object_type = dfield("ObjectType")?;
        let is_secret = object_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("Secret"));
        let Some(kind) = kind.filter(|_| is_secret) else {
            return Ok(Self::NotASecret { event_type, subject });
        };

        let id = field("id")?.unwrap_or_default();
        let vault = match dfield("VaultName")? {
            Some(v) => v,
            None => vault_from_id(dfield("Id")?.as_deref())
                .ok_or_else(|| PayloadError::new(format!("{dpath}.VaultName"), "is missing"))?,
        };
        let raw_name = match dfield("ObjectName")? {
            Some(n) => n,
            None if !subject.trim().is_empty() => subject.trim().to_owned(),
            None => return Err(PayloadError::new(format!("{dpath}.ObjectName"), "is missing (and so is subject)")),
        };
        let secret = SecretName::parse(&raw_name)
            .map_err(|e| PayloadError::new(format!("{dpath}.ObjectName"), e.to_string()))?;
        let version = dfield("Version")?;
        let not_before = lenient::unix_seconds(lenient::get(&data, "NBF"), &format!("{dpath}.NBF"))?;
        let expires = lenient::unix_seconds(lenient::get(&data, "EXP"), &format!("{dpath}.EXP"))?;
        let time_key = if type_key == "type" { "time" } else { "eventTime" };
        let event_time = lenient::opt_timestamp(
            lenient::get(event, time_key).or_else(|| lenient::get(event, "eventTime")),
            &format!("{path}.{time_key}"),
        )?;
        Ok(Self::Secret(SecretEvent { id, kind, vault, secret, version, not_before, expires, event_time }))
    }
}

/// `https://<vault>.vault.azure.net/secrets/<name>/<version>` → `<vault>`.
fn vault_from_id(id: Option<&str>) -> Option<String> {
    let url = url::Url::parse(id?).ok()?;
    let host = url.host_str()?;
    host.split('.').next().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    use patrol_emulator::specs::read_spec;
    use std::sync::LazyLock;

    // Microsoft's samples, read from ../shared/specs (or PATROL_SPECS_DIR) when a test first uses them.
    static SPEC_EVENT: LazyLock<String> =
        LazyLock::new(|| read_spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json"));
    static SPEC_CLOUD_EVENT: LazyLock<String> =
        LazyLock::new(|| read_spec("eventgrid/keyvault/cloud-events-schema/secret_new_version_created.json"));

    fn spec(raw: &str) -> Value {
        serde_json::from_str(raw.trim_start_matches('\u{feff}')).unwrap()
    }

    fn parse(event: Value) -> Result<EventInput, PayloadError> {
        let body = json!({"Data": {"eventGridEvent": event}, "Metadata": {"data": {}, "sys": {}}});
        EventInput::from_request(&Request::parse(body.to_string().as_bytes()).unwrap())
    }

    fn secret(event: Value) -> SecretEvent {
        match parse(event).unwrap() {
            EventInput::Secret(s) => s,
            other => panic!("not a secret event: {other:?}"),
        }
    }

    #[test]
    fn the_spec_sample() {
        let e = secret(spec(&SPEC_EVENT));
        assert_eq!(e.id, "00eccf70-95a7-4e7c-8299-2eb17ee9ad64");
        assert_eq!(e.kind, SecretEventKind::NewVersionCreated);
        assert_eq!((e.vault.as_str(), e.secret.as_str()), ("sample-kv", "newsecret"));
        assert_eq!(e.version.as_deref(), Some("ee059b2bb5bc48398a53b168c6cdcb10"));
        assert_eq!(e.not_before.unwrap().unix_timestamp(), 1559081980);
        assert_eq!(e.expires.unwrap().unix_timestamp(), 1559082102);
        assert_eq!(e.event_time, Some(time::macros::datetime!(2019-07-25 01:08:33.1036736 UTC)));
    }

    #[test]
    fn the_cloud_events_sample_means_the_same() {
        let a = secret(spec(&SPEC_EVENT));
        let b = secret(spec(&SPEC_CLOUD_EVENT));
        assert_eq!(a, b);
    }

    #[test]
    fn as_a_json_string_or_a_batch_of_one() {
        let a = secret(spec(&SPEC_EVENT));
        assert_eq!(secret(Value::String(SPEC_EVENT.to_owned())), a);
        assert_eq!(secret(json!([spec(&SPEC_EVENT)])), a);
        let e = parse(json!([spec(&SPEC_EVENT), spec(&SPEC_EVENT)])).unwrap_err();
        assert!(e.problem.contains("holds 2 events"), "{e}");
    }

    #[test]
    fn nbf_and_exp_as_numbers_strings_or_null() {
        let mut ev = spec(&SPEC_EVENT);
        ev["data"]["NBF"] = json!(1559081980);
        ev["data"]["EXP"] = Value::Null;
        let e = secret(ev.clone());
        assert_eq!(e.not_before.unwrap().unix_timestamp(), 1559081980);
        assert_eq!(e.expires, None);
        ev["data"].as_object_mut().unwrap().remove("EXP");
        assert_eq!(secret(ev.clone()).expires, None);
        ev["data"]["EXP"] = json!("next tuesday");
        assert_eq!(parse(ev).unwrap_err().path, "Data.eventGridEvent.data.EXP");
    }

    #[test]
    fn the_documented_typos() {
        // Learn's sample: "ObjectName " with a trailing space, " ee05…" with a leading space, string NBF/EXP.
        let e = secret(json!({
            "id": "1", "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
            "subject": "newsecret", "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
            "eventTime": "2019-07-25T01:08:33.1036736Z",
            "data": { "Id": "https://sample-kv.vault.azure.net/secrets/newsecret/ee05", "vaultName": "sample-kv",
                      "objectType": "Secret", "ObjectName ": "newsecret", "Version": " ee05", "NBF": "1559081980", "EXP": "1559082102" },
            "dataVersion": "1", "metadataVersion": "1"
        }));
        assert_eq!((e.secret.as_str(), e.version.as_deref()), ("newsecret", Some("ee05")));
    }

    #[test]
    fn near_expiry_and_expired() {
        for (t, kind) in [
            ("Microsoft.KeyVault.SecretNearExpiry", SecretEventKind::NearExpiry),
            ("microsoft.keyvault.secretexpired", SecretEventKind::Expired),
        ] {
            let mut ev = spec(&SPEC_EVENT);
            ev["eventType"] = json!(t);
            assert_eq!(secret(ev).kind, kind);
        }
    }

    #[test]
    fn other_events_are_not_secrets() {
        for (t, object_type) in [
            ("Microsoft.KeyVault.KeyNewVersionCreated", "Key"),
            ("Microsoft.KeyVault.CertificateNearExpiry", "Certificate"),
            ("Microsoft.KeyVault.VaultAccessPolicyChanged", "Vault"),
            ("Microsoft.KeyVault.SecretNewVersionCreated", "Key"),
            ("Microsoft.EventGrid.SubscriptionValidationEvent", "Secret"),
        ] {
            let mut ev = spec(&SPEC_EVENT);
            ev["eventType"] = json!(t);
            ev["data"]["ObjectType"] = json!(object_type);
            assert!(matches!(parse(ev).unwrap(), EventInput::NotASecret { .. }), "{t}/{object_type}");
        }
        let validation = spec(&read_spec("eventgrid/subscription-validation/subscription_validation_event.json"));
        assert!(matches!(parse(validation).unwrap(), EventInput::NotASecret { .. }));
    }

    #[test]
    fn fallbacks_and_errors() {
        let mut ev = spec(&SPEC_EVENT);
        let data = ev["data"].as_object_mut().unwrap();
        data.remove("ObjectName");
        data.remove("VaultName");
        let e = secret(ev.clone());
        assert_eq!((e.vault.as_str(), e.secret.as_str()), ("sample-kv", "newsecret"), "from Id and subject");
        ev["subject"] = json!("bad/name");
        assert_eq!(parse(ev).unwrap_err().path, "Data.eventGridEvent.data.ObjectName");
        let e = parse(json!({"subject": "x"})).unwrap_err();
        assert_eq!(e.path, "Data.eventGridEvent.eventType");
        assert!(parse(json!("not json")).is_err());
        assert!(parse(Value::Null).is_err());
    }

    fn unix_repr() -> impl Strategy<Value = (Option<i64>, u8)> {
        // (value, representation): 0 number, 1 numeric string, 2 null, 3 absent.
        (proptest::option::of(0i64..4_000_000_000), 0u8..4).prop_map(|(v, r)| {
            if v.is_none() {
                (None, r.max(2))
            } else if r >= 2 {
                (None, r)
            } else {
                (v, r)
            }
        })
    }

    proptest! {
        #[test]
        fn nbf_exp_in_any_form_with_the_event_as_object_or_string(
            (nbf, nbf_r) in unix_repr(), (exp, exp_r) in unix_repr(), as_string in any::<bool>(),
        ) {
            let mut ev = spec(&SPEC_EVENT);
            for (key, v, r) in [("NBF", nbf, nbf_r), ("EXP", exp, exp_r)] {
                let data = ev["data"].as_object_mut().unwrap();
                match (v, r) {
                    (Some(v), 0) => { data.insert(key.into(), json!(v)); }
                    (Some(v), _) => { data.insert(key.into(), json!(v.to_string())); }
                    (None, 2) => { data.insert(key.into(), Value::Null); }
                    (None, _) => { data.remove(key); }
                }
            }
            let ev = if as_string { Value::String(ev.to_string()) } else { ev };
            let e = secret(ev);
            prop_assert_eq!(e.not_before.map(|t| t.unix_timestamp()), nbf);
            prop_assert_eq!(e.expires.map(|t| t.unix_timestamp()), exp);
        }

        #[test]
        fn key_case_does_not_matter(flips in proptest::collection::vec(any::<bool>(), 64)) {
            fn recase(v: &Value, flips: &mut impl Iterator<Item = bool>) -> Value {
                match v {
                    Value::Object(m) => Value::Object(m.iter().map(|(k, v)| {
                        let k = if flips.next().unwrap_or(false) { k.to_ascii_uppercase() } else { k.to_ascii_lowercase() };
                        (k, recase(v, flips))
                    }).collect()),
                    other => other.clone(),
                }
            }
            let want = secret(spec(&SPEC_EVENT));
            let mut it = flips.into_iter().cycle();
            prop_assert_eq!(secret(recase(&spec(&SPEC_EVENT), &mut it)), want);
        }
    }
}
