//! The vault's section of the `--state` file (`"keyVault"`): every secret with all its versions (values,
//! content types, tags, attributes, the expiry events already raised for each), soft-deleted secrets with
//! their dates and pending deletes/recoveries. Saving borrows the vault (no copy of the values); loading
//! validates the section and names the entry that is wrong.
//!
//! Version ids are random (128-bit UUIDs), so nothing about their generation needs saving. The delete /
//! recover delay is configuration (`--keyvault-async-delay-ms`) and is not saved.

use super::vault::{Deleted, Secret, Vault, check_name, key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The state file's key holding the vault.
pub const SECTION: &str = "keyVault";
/// The layout of the section this emulator writes and reads.
pub const FORMAT: u32 = 1;

/// The section as written: borrows the vault.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultSnapshot<'a> {
    format: u32,
    secrets: Vec<&'a Secret>,
    deleted: Vec<&'a Deleted>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VaultSection {
    format: u32,
    #[serde(default)]
    secrets: Vec<Secret>,
    #[serde(default)]
    deleted: Vec<Deleted>,
}

impl Vault {
    /// The vault as the state file holds it.
    pub fn snapshot(&self) -> VaultSnapshot<'_> {
        VaultSnapshot {
            format: FORMAT,
            secrets: self.secrets.values().collect(),
            deleted: self.deleted.values().collect(),
        }
    }

    /// Rebuilds a vault from the state file's section. The error names the entry that is not valid
    /// (`secrets[2] "name": …`); it never quotes a value.
    pub fn from_snapshot(section: serde_json::Value) -> Result<Vault, String> {
        let s: VaultSection = serde_json::from_value(section).map_err(|e| e.to_string())?;
        if s.format != FORMAT {
            return Err(format!("format {} is not supported (this emulator reads format {FORMAT})", s.format));
        }
        let mut secrets = BTreeMap::new();
        for (i, secret) in s.secrets.into_iter().enumerate() {
            check_secret(&secret).map_err(|e| format!("secrets[{i}] {:?}: {e}", secret.name))?;
            let k = key(&secret.name);
            if secrets.contains_key(&k) {
                return Err(format!(
                    "secrets[{i}] {:?}: the name appears twice (names are case-insensitive)",
                    secret.name
                ));
            }
            secrets.insert(k, secret);
        }
        let mut deleted = BTreeMap::new();
        for (i, d) in s.deleted.into_iter().enumerate() {
            let name = d.secret.name.clone();
            check_secret(&d.secret).map_err(|e| format!("deleted[{i}] {name:?}: {e}"))?;
            if d.scheduled_purge_date < d.deleted_date {
                return Err(format!("deleted[{i}] {name:?}: scheduledPurgeDate is before deletedDate"));
            }
            let k = key(&name);
            if secrets.contains_key(&k) || deleted.contains_key(&k) {
                return Err(format!("deleted[{i}] {name:?}: the name is also held elsewhere in the vault"));
            }
            deleted.insert(k, d);
        }
        let mut vault = Vault::default();
        vault.secrets = secrets;
        vault.deleted = deleted;
        Ok(vault)
    }
}

fn check_secret(s: &Secret) -> Result<(), String> {
    check_name(&s.name).map_err(|e| e.message)?;
    if s.versions.is_empty() {
        return Err("the secret has no versions".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for (j, v) in s.versions.iter().enumerate() {
        if v.id.is_empty() || !v.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("versions[{j}]: the version id {:?} is not valid", v.id));
        }
        if !ids.insert(v.id.to_ascii_lowercase()) {
            return Err(format!("versions[{j}]: the version id {} appears twice", v.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::vault::{SetParams, UpdateParams};
    use time::OffsetDateTime;

    fn sp(v: &str) -> SetParams {
        SetParams { value: v.into(), ..Default::default() }
    }

    #[test]
    fn round_trips_versions_deleted_secrets_and_expiry_bookkeeping() {
        let mut kv = Vault::default();
        let t0 = OffsetDateTime::now_utc();
        let (_, v1) = kv.set("Alpha", sp("one"), t0).unwrap();
        let tags = Some(BTreeMap::from([("owner".to_string(), "alice".to_string())]));
        let p = SetParams {
            content_type: Some("text/plain".into()),
            tags,
            exp: Some(t0.unix_timestamp() + 99),
            ..sp("two")
        };
        let (_, v2) = kv.set("alpha", p, t0).unwrap();
        kv.update("alpha", Some(&v1.id), UpdateParams { enabled: Some(false), ..Default::default() }, t0).unwrap();
        kv.set("gone", sp("three"), t0).unwrap();
        kv.delete("gone", t0).unwrap();
        if let Some((_, v)) = kv.current_versions_mut().next() {
            v.near_expiry_sent_for = v.exp;
        }
        let json = serde_json::to_value(kv.snapshot()).unwrap();
        let mut back = Vault::from_snapshot(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(back.snapshot()).unwrap(), json);
        let (name, got) = back.get("ALPHA", None, t0).unwrap();
        assert_eq!((name.as_str(), got.id.as_str(), got.value.as_str()), ("Alpha", v2.id.as_str(), "two"));
        assert_eq!(got.near_expiry_sent_for, v2.exp);
        assert_eq!(back.get("alpha", Some(&v1.id), t0).unwrap_err().inner, Some("SecretDisabled"));
        let later = t0 + time::Duration::seconds(1);
        assert_eq!(back.get_deleted("gone", later).unwrap().secret.versions[0].value, "three");
    }

    #[test]
    fn refuses_broken_sections_naming_the_entry() {
        let v = |id: &str| serde_json::json!({"id": id, "value": "x", "enabled": true, "created": 1, "updated": 1});
        let cases = [
            (serde_json::json!({"format": 2}), "format 2 is not supported"),
            (
                serde_json::json!({"format": 1, "secrets": [{"name": "a/b", "versions": [v("1")]}]}),
                "secrets[0] \"a/b\"",
            ),
            (serde_json::json!({"format": 1, "secrets": [{"name": "a", "versions": []}]}), "no versions"),
            (
                serde_json::json!({"format": 1, "secrets": [{"name": "a", "versions": [v("1")]}, {"name": "A", "versions": [v("2")]}]}),
                "secrets[1] \"A\": the name appears twice",
            ),
            (
                serde_json::json!({"format": 1, "secrets": [{"name": "a", "versions": [v("1"), v("1")]}]}),
                "appears twice",
            ),
            (serde_json::json!({"format": 1, "secrets": "nope"}), "invalid type"),
            (serde_json::json!({"format": 1, "extra": 1}), "unknown field"),
            (
                serde_json::json!({"format": 1, "secrets": [{"name": "a", "versions": [{"id": "1", "value": "x", "enabled": true, "created": 1, "updated": 1, "vaule": "typo"}]}]}),
                "unknown field `vaule`",
            ),
        ];
        for (section, want) in cases {
            let e = Vault::from_snapshot(section.clone()).err().unwrap_or_default();
            assert!(e.contains(want), "{section}: {e}");
        }
    }

    #[test]
    fn debug_output_never_shows_values() {
        let mut kv = Vault::default();
        kv.set("s", sp("very-secret-value-1234"), OffsetDateTime::now_utc()).unwrap();
        let shown = format!("{kv:?} {:?}", Vault::from_snapshot(serde_json::to_value(kv.snapshot()).unwrap()));
        assert!(!shown.contains("very-secret-value-1234"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
