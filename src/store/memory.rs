//! An in-memory [`SecretStore`] with Key Vault's version semantics: every `set` makes a new current
//! version, old versions stay readable, properties can be updated. For tests and short-lived tools; nothing
//! survives the process.

use super::{NewVersion, PropertiesUpdate, SecretStore, SecretSummary, StoreError, StoredSecret, VersionProperties};
use crate::domain::SecretName;
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;
use time::OffsetDateTime;

#[derive(Debug, Default)]
struct Secret {
    /// Oldest first; the last is current.
    versions: Vec<(VersionProperties, SecretString)>,
}

/// Secrets held in this process only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    secrets: Mutex<HashMap<SecretName, Secret>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretName, Secret>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        super::tags::validate(&new.tags)?;
        let now = OffsetDateTime::now_utc();
        let props = VersionProperties {
            name: name.clone(),
            version: uuid::Uuid::new_v4().simple().to_string(),
            enabled: true,
            expires: new.expires,
            created: Some(now),
            updated: Some(now),
            content_type: new.content_type,
            tags: new.tags,
        };
        self.lock().entry(name.clone()).or_default().versions.push((props.clone(), value.clone()));
        Ok(props)
    }

    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        let map = self.lock();
        let Some(secret) = map.get(name) else { return Ok(None) };
        let found = match version {
            None => secret.versions.last(),
            Some(v) => secret.versions.iter().find(|(p, _)| p.version == v),
        };
        match found {
            None => Ok(None),
            Some((p, _)) if !p.enabled => Err(StoreError::Disabled { name: name.clone(), version: p.version.clone() }),
            Some((p, v)) => Ok(Some(StoredSecret { properties: p.clone(), value: v.clone() })),
        }
    }

    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter_map(|s| s.versions.last())
            .map(|(p, _)| SecretSummary {
                name: p.name.clone(),
                enabled: p.enabled,
                expires: p.expires,
                content_type: p.content_type.clone(),
                tags: p.tags.clone(),
            })
            .collect())
    }

    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        Ok(self.lock().get(name).map(|s| s.versions.iter().map(|(p, _)| p.clone()).collect()).unwrap_or_default())
    }

    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        let mut map = self.lock();
        let missing = || StoreError::Other {
            operation: "update",
            message: format!("secret {name} version {version} does not exist"),
        };
        let secret = map.get_mut(name).ok_or_else(missing)?;
        let (p, _) = secret.versions.iter_mut().find(|(p, _)| p.version == version).ok_or_else(missing)?;
        if let Some(tags) = update.tags {
            super::tags::validate(&tags)?;
            p.tags = tags;
        }
        if let Some(e) = update.enabled {
            p.enabled = e;
        }
        if let Some(x) = update.expires {
            p.expires = Some(x);
        }
        p.updated = Some(OffsetDateTime::now_utc());
        Ok(p.clone())
    }

    async fn delete(&self, name: &SecretName) -> Result<(), StoreError> {
        self.lock().remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn versions_like_key_vault() {
        let s = MemoryStore::new();
        let n = SecretName::parse("a").unwrap();
        assert!(s.get(&n, None).await.unwrap().is_none());
        let v1 = s.set(&n, &SecretString::from("one"), NewVersion::default()).await.unwrap();
        let v2 = s.set(&n, &SecretString::from("two"), NewVersion::default()).await.unwrap();
        assert_eq!(v1.version.len(), 32);
        assert_eq!(s.get(&n, None).await.unwrap().unwrap().value.expose_secret(), "two");
        assert_eq!(s.get(&n, Some(&v1.version)).await.unwrap().unwrap().value.expose_secret(), "one");
        s.update(&n, &v1.version, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.unwrap();
        assert!(matches!(s.get(&n, Some(&v1.version)).await, Err(StoreError::Disabled { .. })));
        assert_eq!(s.list_versions(&n).await.unwrap().len(), 2);
        assert_eq!(s.list().await.unwrap().len(), 1);
        assert_ne!(v1.version, v2.version);
    }
}
