//! Moving owners' refresh tokens out of consumer vaults into patrol's own vault
//! (`patrol migrate-refresh-tokens`), so consumers allowed to read a consumer vault can no longer read them.
//!
//! No owner signs in again: the current refresh token is copied as is (Entra keeps it valid). Per secret the
//! move is a journaled state machine in the state store (`migrations/refresh-tokens`), each step saved
//! *before* its effect and idempotent on replay, so a crash anywhere resumes on the next run:
//!
//! 1. `copying` — copy the current version to the own vault, tagged `migrated-from-vault` /
//!    `migrated-from-version` (skipped when the own vault already holds that copy, or a newer refresh token
//!    the owner obtained since);
//! 2. `disabling` — disable every version in the consumer vault (nothing readable is left behind, even
//!    where deletion is refused);
//! 3. `deleting` — delete the secret (Key Vault: soft delete, then purge where the identity may purge);
//! 4. `done`.

use super::session::TAG_REFRESHED_AT;
use crate::clock::Clock;
use crate::domain::SecretName;
use crate::state::{ETag, StateError, StateStore, crash_point};
use crate::store::routed::is_refresh_token;
use crate::store::{NewVersion, PropertiesUpdate, SecretStore, StoreError, tags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// State key of the migration journal.
pub const JOURNAL_KEY: &str = "migrations/refresh-tokens";
/// Tag on the copy: the consumer vault it came from.
pub const TAG_MIGRATED_FROM_VAULT: &str = "migrated-from-vault";
/// Tag on the copy: the consumer vault's version it copies.
pub const TAG_MIGRATED_FROM_VERSION: &str = "migrated-from-version";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("secret store ({vault}): {source}")]
    Store { vault: String, source: StoreError },
    #[error("migration journal: {0}")]
    State(#[from] StateError),
    #[error("migration journal {JOURNAL_KEY} is not readable JSON: {0}")]
    Corrupt(String),
}

/// Where one secret's move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Copying,
    Disabling,
    Deleting,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub step: Step,
    /// The consumer vault's current version when the move started (`None`: it had none enabled).
    pub source_version: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    /// `<vault>/<secret>` → entry.
    entries: BTreeMap<String, Entry>,
}

/// What happened to one refresh-token secret (never its value).
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub vault: String,
    pub secret: SecretName,
    /// `moved`, `kept-newer` (the own vault already held a newer refresh token) or `would-move` (dry run).
    pub outcome: &'static str,
    pub versions_disabled: usize,
}

struct Run<'a> {
    own: &'a dyn SecretStore,
    state: &'a dyn StateStore,
    clock: &'a Clock,
    journal: Journal,
    etag: Option<ETag>,
}

impl Run<'_> {
    async fn save(&mut self, key: &str, step: Step, source_version: Option<String>) -> Result<(), MigrateError> {
        self.journal.entries.insert(key.to_owned(), Entry { step, source_version, updated: self.clock.now() });
        let body = serde_json::to_vec(&self.journal).map_err(|e| MigrateError::Corrupt(e.to_string()))?;
        self.etag = Some(self.state.save(JOURNAL_KEY, &body, self.etag.as_ref()).await?);
        Ok(())
    }
}

/// Moves every refresh token found in `consumer_vaults` (name → store) to `own`. With `dry_run`, only says
/// what would move and writes nothing.
pub async fn migrate_refresh_tokens(
    consumer_vaults: &BTreeMap<String, Arc<dyn SecretStore>>,
    own: &dyn SecretStore,
    state: &dyn StateStore,
    clock: &Clock,
    dry_run: bool,
) -> Result<Vec<Moved>, MigrateError> {
    let (journal, etag) = match state.load(JOURNAL_KEY).await? {
        None => (Journal::default(), None),
        Some((body, etag)) => {
            (serde_json::from_slice(&body).map_err(|e| MigrateError::Corrupt(e.to_string()))?, Some(etag))
        }
    };
    let mut run = Run { own, state, clock, journal, etag };
    let mut out = Vec::new();
    for (vault, store) in consumer_vaults {
        let err = |source| MigrateError::Store { vault: vault.clone(), source };
        let mut found: Vec<SecretName> = store
            .list()
            .await
            .map_err(err)?
            .into_iter()
            .filter(|s| is_refresh_token(&s.name, s.content_type.as_deref()))
            .map(|s| s.name)
            .collect();
        // Resume secrets whose move started even if a listing no longer shows them (deleted, not purged).
        for key in run.journal.entries.keys() {
            if let Some(name) = key.strip_prefix(&format!("{vault}/")).and_then(|n| SecretName::parse(n).ok())
                && run.journal.entries.get(key).is_some_and(|e| e.step != Step::Done)
                && !found.contains(&name)
            {
                found.push(name);
            }
        }
        found.sort();
        for name in found {
            if dry_run {
                out.push(Moved { vault: vault.clone(), secret: name, outcome: "would-move", versions_disabled: 0 });
                continue;
            }
            out.push(move_one(&mut run, vault, store.as_ref(), &name).await?);
        }
    }
    Ok(out)
}

async fn move_one(
    run: &mut Run<'_>,
    vault: &str,
    source: &dyn SecretStore,
    name: &SecretName,
) -> Result<Moved, MigrateError> {
    let key = format!("{vault}/{name}");
    let serr = |source| MigrateError::Store { vault: vault.to_owned(), source };
    let oerr = |source| MigrateError::Store { vault: "patrol's own vault".to_owned(), source };
    let mut entry = run.journal.entries.get(&key).cloned();
    let mut outcome = "moved";
    if entry.is_none() {
        let current = match source.get(name, None).await {
            Ok(c) => c,
            Err(StoreError::Disabled { .. }) => None,
            Err(e) => return Err(serr(e)),
        };
        run.save(&key, Step::Copying, current.map(|c| c.properties.version)).await?;
        entry = run.journal.entries.get(&key).cloned();
    }
    let Some(mut entry) = entry else { return Err(MigrateError::Corrupt(format!("entry {key} vanished"))) };

    if entry.step == Step::Copying {
        if let Some(version) = entry.source_version.clone() {
            let copied = match source.get(name, Some(&version)).await {
                Ok(c) => c,
                // Disabled by an earlier, interrupted run of this very step: nothing left to copy from it.
                Err(StoreError::Disabled { .. }) => None,
                Err(e) => return Err(serr(e)),
            };
            let mine = run.own.get(name, None).await.map_err(oerr)?;
            let already = mine.as_ref().is_some_and(|m| {
                m.properties.tags.get(TAG_MIGRATED_FROM_VERSION) == Some(&version)
                    && m.properties.tags.get(TAG_MIGRATED_FROM_VAULT).map(String::as_str) == Some(vault)
            });
            let newer = match (&mine, &copied) {
                (Some(m), Some(c)) => refreshed_at(&m.properties.tags) > refreshed_at(&c.properties.tags),
                _ => false,
            };
            if newer && !already {
                outcome = "kept-newer";
            }
            if let (Some(c), false, false) = (copied, already, newer) {
                let mut t = c.properties.tags.clone();
                t.insert(TAG_MIGRATED_FROM_VAULT.to_owned(), vault.to_owned());
                t.insert(TAG_MIGRATED_FROM_VERSION.to_owned(), version.clone());
                tags::validate(&t).map_err(oerr)?;
                let new = NewVersion {
                    content_type: c.properties.content_type.clone(),
                    expires: c.properties.expires,
                    not_before: None,
                    tags: t,
                };
                let previous = mine.map(|m| m.properties.version);
                let written = run.own.set(name, &c.value, new).await.map_err(oerr)?;
                // Only the current version of the own vault stays enabled.
                if let Some(prev) = previous.filter(|p| *p != written.version) {
                    let off = PropertiesUpdate { enabled: Some(false), ..Default::default() };
                    run.own.update(name, &prev, off).await.map_err(oerr)?;
                }
                tracing::info!(secret = %name, vault, "copied the refresh token to patrol's own vault");
            }
        }
        crash_point("refresh-token-copied");
        run.save(&key, Step::Disabling, entry.source_version.clone()).await?;
        entry.step = Step::Disabling;
    }

    let mut disabled = 0;
    if entry.step == Step::Disabling {
        for v in source.list_versions(name).await.map_err(serr)? {
            if v.enabled {
                let off = PropertiesUpdate { enabled: Some(false), ..Default::default() };
                source.update(name, &v.version, off).await.map_err(serr)?;
                disabled += 1;
            }
        }
        crash_point("refresh-token-disabled");
        run.save(&key, Step::Deleting, entry.source_version.clone()).await?;
        entry.step = Step::Deleting;
    }

    if entry.step == Step::Deleting {
        source.delete(name).await.map_err(serr)?;
        tracing::info!(secret = %name, vault, "deleted the refresh token from the consumer vault");
        crash_point("refresh-token-deleted");
        run.save(&key, Step::Done, entry.source_version.clone()).await?;
    }
    Ok(Moved { vault: vault.to_owned(), secret: name.clone(), outcome, versions_disabled: disabled })
}

fn refreshed_at(t: &BTreeMap<String, String>) -> Option<OffsetDateTime> {
    t.get(TAG_REFRESHED_AT).and_then(|v| crate::timestamp::parse_opt(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerId;
    use crate::state::FileStateStore;
    use crate::store::memory::MemoryStore;
    use secrecy::{ExposeSecret, SecretString};

    #[tokio::test]
    async fn moves_copies_disables_deletes_and_a_rerun_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = FileStateStore::new(dir.path().join("state"));
        let consumer: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
        let own = MemoryStore::new();
        let clock = Clock::system();
        let owner = OwnerId::parse("alice@contoso.com").unwrap();
        let now = clock.now();
        for v in ["rt-old-value-1", "rt-current-value-2"] {
            crate::auth::session::store_refresh_token(
                consumer.as_ref(),
                &owner,
                &SecretString::from(v),
                "2026-01-01T00:00:00Z",
                "x",
                now,
            )
            .await
            .unwrap();
        }
        let pat = SecretName::parse("ci-pat").unwrap();
        consumer.set(&pat, &SecretString::from("pat"), NewVersion::default()).await.unwrap();
        let vaults = BTreeMap::from([("kv-consumer".to_owned(), consumer.clone())]);

        let dry = migrate_refresh_tokens(&vaults, &own, &state, &clock, true).await.unwrap();
        assert_eq!(dry.len(), 1);
        assert!(own.list().await.unwrap().is_empty(), "a dry run writes nothing");
        assert!(state.load(JOURNAL_KEY).await.unwrap().is_none());

        let moved = migrate_refresh_tokens(&vaults, &own, &state, &clock, false).await.unwrap();
        assert_eq!((moved.len(), moved[0].outcome), (1, "moved"));
        let name = owner.refresh_token_secret();
        let copy = own.get(&name, None).await.unwrap().unwrap();
        assert_eq!(copy.value.expose_secret(), "rt-current-value-2");
        assert_eq!(copy.properties.tags[TAG_MIGRATED_FROM_VAULT], "kv-consumer");
        assert!(consumer.get(&name, None).await.unwrap().is_none(), "nothing left in the consumer vault");
        assert!(consumer.get(&pat, None).await.unwrap().is_some(), "PATs stay");
        let again = migrate_refresh_tokens(&vaults, &own, &state, &clock, false).await.unwrap();
        assert!(again.is_empty());
        assert_eq!(own.list_versions(&name).await.unwrap().len(), 1);
    }
}
