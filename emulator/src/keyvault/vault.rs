//! The emulated vault's state and rules, free of HTTP: secrets and their versions, soft delete with
//! asynchronous completion, recovery, purge, retention, and the service's error codes and messages.
//!
//! Every operation takes the current (virtual) time and returns either a value or a [`KvError`] carrying
//! the HTTP status, `error.code`, optional `innererror.code` and message the real service sends.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;

/// Soft-delete retention, as a new vault's default.
pub const RECOVERABLE_DAYS: i64 = 90;
pub const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
/// Key Vault's limit on a secret value.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;

/// An error as Key Vault reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError {
    pub status: u16,
    pub code: &'static str,
    pub inner: Option<&'static str>,
    pub message: String,
}

impl KvError {
    pub fn new(status: u16, code: &'static str, inner: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status, code, inner, message: message.into() }
    }

    pub fn not_found(name: &str) -> Self {
        Self::new(
            404,
            "SecretNotFound",
            None,
            format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    pub fn version_not_found(name: &str, version: &str) -> Self {
        Self::not_found(&format!("{name}/{version}"))
    }

    pub fn deleted_but_recoverable(name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            Some("ObjectIsDeletedButRecoverable"),
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        )
    }

    pub fn being_deleted(name: &str) -> Self {
        Self::new(409, "Conflict", None, format!("Secret {name} is currently being deleted."))
    }

    pub fn being_recovered(name: &str) -> Self {
        Self::new(409, "Conflict", None, format!("Secret {name} is currently being recovered."))
    }

    pub fn disabled(op: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            Some("SecretDisabled"),
            format!("Operation {op} is not allowed on a disabled secret."),
        )
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "BadParameter", None, message)
    }
}

/// One version of a secret. Its `Debug` output leaves the value out (values are secrets).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Version {
    pub id: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    /// Event Grid bookkeeping: expiry events already raised for this version (and for which `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_expiry_sent_for: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_sent_for: Option<i64>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("nbf", &self.nbf)
            .field("exp", &self.exp)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .field("near_expiry_sent_for", &self.near_expiry_sent_for)
            .field("expired_sent_for", &self.expired_sent_for)
            .finish()
    }
}

/// A secret: its name as first created (names are case-insensitive, case-preserving) and its versions in
/// creation order (the last is current).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    pub versions: Vec<Version>,
    /// While a recovery is finishing, the secret is not yet visible.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub available_at: Option<OffsetDateTime>,
}

impl Secret {
    pub fn current(&self) -> Option<&Version> {
        self.versions.last()
    }
}

/// A soft-deleted secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deleted {
    pub secret: Secret,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
    /// The delete finishes asynchronously: until then the secret is in neither collection.
    #[serde(with = "time::serde::rfc3339")]
    pub completes_at: OffsetDateTime,
}

/// Values for a new version (`Debug` leaves the value out).
#[derive(Clone, Default)]
pub struct SetParams {
    pub value: String,
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

impl std::fmt::Debug for SetParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetParams")
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("nbf", &self.nbf)
            .field("exp", &self.exp)
            .finish()
    }
}

/// Changes to a version's properties (the value never changes).
#[derive(Debug, Clone, Default)]
pub struct UpdateParams {
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

/// The vault.
#[derive(Debug)]
pub struct Vault {
    pub(super) secrets: BTreeMap<String, Secret>,
    pub(super) deleted: BTreeMap<String, Deleted>,
    /// How long a delete or a recovery takes to finish.
    pub async_delay: Duration,
    /// Notified after every change (the `--state` writer saves then).
    changes: Arc<Notify>,
}

impl Default for Vault {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            deleted: BTreeMap::new(),
            async_delay: Duration::milliseconds(500),
            changes: Arc::new(Notify::new()),
        }
    }
}

/// Validates a name from a URL path: 1–127 of `[0-9a-zA-Z-]`.
pub fn check_name(name: &str) -> Result<(), KvError> {
    if name.is_empty() || name.len() > 127 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(KvError::bad_parameter(format!(
            "The request URI contains an invalid name: {}. Secret names may contain only 0-9, a-z, A-Z and -, and must be 1 to 127 characters long.",
            name.chars().take(140).collect::<String>()
        )));
    }
    Ok(())
}

pub(super) fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn check_tags(tags: &Option<BTreeMap<String, String>>) -> Result<(), KvError> {
    if let Some(t) = tags {
        if t.len() > 15 {
            return Err(KvError::bad_parameter("The number of tags exceeds the maximum of 15."));
        }
        if t.iter().any(|(k, v)| k.is_empty() || k.chars().count() > 256 || v.chars().count() > 256) {
            return Err(KvError::bad_parameter("Tag names and values must be at most 256 characters long."));
        }
    }
    Ok(())
}

pub(super) fn check_content_type(ct: &Option<String>) -> Result<(), KvError> {
    if ct.as_ref().is_some_and(|c| c.chars().count() > 255) {
        return Err(KvError::bad_parameter("The content type must be at most 255 characters long."));
    }
    Ok(())
}

impl Vault {
    /// What is notified after every change (for the `--state` writer). Changes before the first wait are
    /// not lost: a notification is kept until someone waits.
    pub fn changes(&self) -> Arc<Notify> {
        Arc::clone(&self.changes)
    }

    /// Records that the vault changed (also used by the expiry-event evaluator for its bookkeeping).
    pub fn mark_changed(&self) {
        self.changes.notify_one();
    }

    /// Finishes deletes and recoveries whose time has come and purges deleted secrets past retention.
    pub fn settle(&mut self, now: OffsetDateTime) {
        let ts = now.unix_timestamp();
        let before = self.deleted.len();
        self.deleted.retain(|_, d| d.completes_at > now || d.scheduled_purge_date > ts);
        let mut changed = self.deleted.len() != before;
        for s in self.secrets.values_mut() {
            if s.available_at.is_some_and(|at| at <= now) {
                s.available_at = None;
                changed = true;
            }
        }
        if changed {
            self.mark_changed();
        }
    }

    fn pending_delete(&self, k: &str, now: OffsetDateTime) -> bool {
        self.deleted.get(k).is_some_and(|d| d.completes_at > now)
    }

    fn visible(&self, name: &str, now: OffsetDateTime) -> Result<&Secret, KvError> {
        match self.secrets.get(&key(name)) {
            Some(s) if s.available_at.is_none_or(|at| at <= now) => Ok(s),
            _ => Err(KvError::not_found(name)),
        }
    }

    pub fn set(&mut self, name: &str, p: SetParams, now: OffsetDateTime) -> Result<(String, Version), KvError> {
        check_name(name)?;
        if p.value.len() > MAX_VALUE_BYTES {
            return Err(KvError::bad_parameter(format!(
                "The secret value exceeds the maximum size of {MAX_VALUE_BYTES} bytes."
            )));
        }
        check_tags(&p.tags)?;
        check_content_type(&p.content_type)?;
        self.settle(now);
        let k = key(name);
        if self.pending_delete(&k, now) {
            return Err(KvError::being_deleted(name));
        }
        if self.deleted.contains_key(&k) {
            return Err(KvError::deleted_but_recoverable(name));
        }
        if self.secrets.get(&k).is_some_and(|s| s.available_at.is_some_and(|at| at > now)) {
            return Err(KvError::being_recovered(name));
        }
        let ts = now.unix_timestamp();
        let v = Version {
            id: new_version_id(),
            value: p.value,
            content_type: p.content_type,
            tags: p.tags,
            enabled: p.enabled.unwrap_or(true),
            nbf: p.nbf,
            exp: p.exp,
            created: ts,
            updated: ts,
            near_expiry_sent_for: None,
            expired_sent_for: None,
        };
        let secret = self.secrets.entry(k).or_insert_with(|| Secret {
            name: name.to_owned(),
            versions: Vec::new(),
            available_at: None,
        });
        secret.versions.push(v.clone());
        let name = secret.name.clone();
        self.mark_changed();
        Ok((name, v))
    }

    /// Gets a version (`None`: the current one). A disabled version is refused with `SecretDisabled`.
    pub fn get(
        &mut self,
        name: &str,
        version: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(String, Version), KvError> {
        check_name(name)?;
        self.settle(now);
        let s = self.visible(name, now)?;
        let v = match version {
            None => s.current().ok_or_else(|| KvError::not_found(name))?,
            Some(ver) => s
                .versions
                .iter()
                .find(|v| v.id.eq_ignore_ascii_case(ver))
                .ok_or_else(|| KvError::version_not_found(name, ver))?,
        };
        if !v.enabled {
            return Err(KvError::disabled("get"));
        }
        Ok((s.name.clone(), v.clone()))
    }

    pub fn update(
        &mut self,
        name: &str,
        version: Option<&str>,
        p: UpdateParams,
        now: OffsetDateTime,
    ) -> Result<(String, Version), KvError> {
        check_name(name)?;
        check_tags(&p.tags)?;
        check_content_type(&p.content_type)?;
        self.settle(now);
        self.visible(name, now)?;
        let Some(s) = self.secrets.get_mut(&key(name)) else { return Err(KvError::not_found(name)) };
        let secret_name = s.name.clone();
        let v = match version {
            None => s.versions.last_mut().ok_or_else(|| KvError::not_found(name))?,
            Some(ver) => s
                .versions
                .iter_mut()
                .find(|v| v.id.eq_ignore_ascii_case(ver))
                .ok_or_else(|| KvError::version_not_found(name, ver))?,
        };
        if p.content_type.is_some() {
            v.content_type = p.content_type;
        }
        if p.tags.is_some() {
            v.tags = p.tags;
        }
        if let Some(e) = p.enabled {
            v.enabled = e;
        }
        if p.nbf.is_some() {
            v.nbf = p.nbf;
        }
        if p.exp.is_some() {
            v.exp = p.exp;
        }
        v.updated = now.unix_timestamp();
        let v = v.clone();
        self.mark_changed();
        Ok((secret_name, v))
    }

    /// Current secrets (each with its current version), ordered by name.
    pub fn list(&mut self, now: OffsetDateTime) -> Vec<(String, Version)> {
        self.settle(now);
        self.secrets
            .values()
            .filter(|s| s.available_at.is_none_or(|at| at <= now))
            .filter_map(|s| s.current().map(|v| (s.name.clone(), v.clone())))
            .collect()
    }

    /// All versions of a secret, in creation order. An unknown secret lists as empty, as the service does.
    pub fn versions(&mut self, name: &str, now: OffsetDateTime) -> Result<(String, Vec<Version>), KvError> {
        check_name(name)?;
        self.settle(now);
        Ok(match self.visible(name, now) {
            Ok(s) => (s.name.clone(), s.versions.clone()),
            Err(_) => (name.to_owned(), Vec::new()),
        })
    }

    /// Deletes a secret (all versions). Returns the deleted record at once; the delete completes later.
    pub fn delete(&mut self, name: &str, now: OffsetDateTime) -> Result<Deleted, KvError> {
        check_name(name)?;
        self.settle(now);
        let k = key(name);
        self.visible(name, now)?;
        let Some(secret) = self.secrets.remove(&k) else { return Err(KvError::not_found(name)) };
        let ts = now.unix_timestamp();
        let d = Deleted {
            secret,
            deleted_date: ts,
            scheduled_purge_date: ts + RECOVERABLE_DAYS * 86_400,
            completes_at: now + self.async_delay,
        };
        self.deleted.insert(k, d.clone());
        self.mark_changed();
        Ok(d)
    }

    pub fn get_deleted(&mut self, name: &str, now: OffsetDateTime) -> Result<Deleted, KvError> {
        check_name(name)?;
        self.settle(now);
        match self.deleted.get(&key(name)) {
            Some(d) if d.completes_at <= now => Ok(d.clone()),
            _ => Err(KvError::not_found(name)),
        }
    }

    pub fn list_deleted(&mut self, now: OffsetDateTime) -> Vec<Deleted> {
        self.settle(now);
        self.deleted.values().filter(|d| d.completes_at <= now).cloned().collect()
    }

    /// Recovers a deleted secret; it becomes visible again after the asynchronous delay.
    pub fn recover(&mut self, name: &str, now: OffsetDateTime) -> Result<(String, Version), KvError> {
        check_name(name)?;
        self.settle(now);
        let k = key(name);
        if self.pending_delete(&k, now) {
            return Err(KvError::being_deleted(name));
        }
        let Some(mut d) = self.deleted.remove(&k) else { return Err(KvError::not_found(name)) };
        d.secret.available_at = Some(now + self.async_delay);
        let out = d.secret.current().map(|v| (d.secret.name.clone(), v.clone()));
        self.secrets.insert(k, d.secret);
        self.mark_changed();
        out.ok_or_else(|| KvError::not_found(name))
    }

    pub fn purge(&mut self, name: &str, now: OffsetDateTime) -> Result<(), KvError> {
        check_name(name)?;
        self.settle(now);
        let k = key(name);
        if self.pending_delete(&k, now) {
            return Err(KvError::being_deleted(name));
        }
        self.deleted.remove(&k).ok_or_else(|| KvError::not_found(name))?;
        self.mark_changed();
        Ok(())
    }

    /// Restores a backed-up secret (all versions) under its name.
    pub fn restore(&mut self, secret: Secret, now: OffsetDateTime) -> Result<(String, Version), KvError> {
        self.settle(now);
        let k = key(&secret.name);
        if self.secrets.contains_key(&k) {
            return Err(KvError::new(
                409,
                "Conflict",
                None,
                format!("Secret {} already exists in this key vault.", secret.name),
            ));
        }
        if self.deleted.contains_key(&k) {
            return Err(KvError::deleted_but_recoverable(&secret.name));
        }
        let cur = secret.current().cloned().ok_or_else(|| KvError::bad_parameter("The backup holds no versions."))?;
        let name = secret.name.clone();
        self.secrets.insert(k, Secret { available_at: None, ..secret });
        self.mark_changed();
        Ok((name, cur))
    }

    /// The whole secret, for backup.
    pub fn backup(&mut self, name: &str, now: OffsetDateTime) -> Result<Secret, KvError> {
        check_name(name)?;
        self.settle(now);
        self.visible(name, now).cloned()
    }

    /// Mutable access to each current version, for the expiry-event evaluator.
    pub fn current_versions_mut(&mut self) -> impl Iterator<Item = (&str, &mut Version)> {
        self.secrets
            .values_mut()
            .filter(|s| s.available_at.is_none())
            .filter_map(|s| s.versions.last_mut().map(|v| (s.name.as_str(), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(v: &str) -> SetParams {
        SetParams { value: v.into(), ..Default::default() }
    }

    #[test]
    fn soft_delete_lifecycle() {
        let mut kv = Vault::default();
        let t0 = OffsetDateTime::now_utc();
        let (_, v1) = kv.set("Alpha", sp("1"), t0).unwrap();
        kv.set("alpha", sp("2"), t0).unwrap();
        assert_eq!(kv.get("ALPHA", None, t0).unwrap().1.value, "2");
        assert_eq!(kv.get("alpha", Some(&v1.id), t0).unwrap().0, "Alpha");
        kv.delete("alpha", t0).unwrap();
        // Delete still running.
        assert_eq!(kv.get_deleted("alpha", t0).unwrap_err().status, 404);
        assert_eq!(kv.set("alpha", sp("3"), t0).unwrap_err().message, "Secret alpha is currently being deleted.");
        assert_eq!(kv.purge("alpha", t0).unwrap_err().status, 409);
        let t1 = t0 + Duration::seconds(1);
        assert!(kv.get_deleted("alpha", t1).is_ok());
        let e = kv.set("alpha", sp("3"), t1).unwrap_err();
        assert_eq!((e.status, e.inner), (409, Some("ObjectIsDeletedButRecoverable")));
        kv.recover("alpha", t1).unwrap();
        assert_eq!(kv.get("alpha", None, t1).unwrap_err().status, 404);
        let t2 = t1 + Duration::seconds(1);
        assert_eq!(kv.get("alpha", None, t2).unwrap().1.value, "2");
        kv.delete("alpha", t2).unwrap();
        let t3 = t2 + Duration::seconds(1);
        kv.purge("alpha", t3).unwrap();
        kv.set("alpha", sp("new"), t3).unwrap();
    }

    #[test]
    fn retention_purges_automatically_and_disabled_is_forbidden() {
        let mut kv = Vault::default();
        let t0 = OffsetDateTime::now_utc();
        let (_, v) = kv.set("s", sp("x"), t0).unwrap();
        kv.update("s", Some(&v.id), UpdateParams { enabled: Some(false), ..Default::default() }, t0).unwrap();
        let e = kv.get("s", None, t0).unwrap_err();
        assert_eq!((e.status, e.code, e.inner), (403, "Forbidden", Some("SecretDisabled")));
        kv.delete("s", t0).unwrap();
        let later = t0 + Duration::days(RECOVERABLE_DAYS) + Duration::seconds(1);
        assert_eq!(kv.get_deleted("s", later).unwrap_err().status, 404);
        kv.set("s", sp("y"), later).unwrap();
        assert_eq!(check_name("a/b").unwrap_err().code, "BadParameter");
    }
}
