//! Where each secret lives: patrol's own vault apart from the consumer vaults.
//!
//! - [`Stores`] — what the settings and the policy open: `own` (refresh tokens and patrol's credentials:
//!   `PATROL_OWN_KEYVAULT_URL`, else the default consumer vault with a warning, else the embedded store) and
//!   `consumer` (rotated PATs);
//! - [`VaultRouter`] — the consumer side as one [`SecretStore`]: a token's secret goes to the vault its
//!   `[[token]]` names (`vault = "…"`), anything else to the default consumer vault. In the two-vault layout
//!   it refuses to write a refresh token to any consumer vault, whatever the caller.

use super::{
    NewVersion, PropertiesUpdate, REFRESH_TOKEN_CONTENT_TYPE, SecretStore, SecretSummary, StoreError, StoredSecret,
    VersionProperties,
};
use crate::domain::SecretName;
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Secret names of owners' refresh tokens start with this (see `OwnerId::refresh_token_secret`).
pub const REFRESH_TOKEN_PREFIX: &str = "patrol-owner-";

/// The stores a process works with.
#[derive(Debug, Clone)]
pub struct Stores {
    /// patrol's own secrets: owners' refresh tokens, the SMTP password secret.
    pub own: Arc<dyn SecretStore>,
    /// patrol's own vault alone, without [`OwnWithLegacyReads`] (what the refresh-token move writes to).
    pub own_direct: Arc<dyn SecretStore>,
    /// Rotated PATs, routed to each token's consumer vault.
    pub consumer: Arc<dyn SecretStore>,
    /// Every consumer vault by name (empty with the embedded store).
    pub vaults: BTreeMap<String, Arc<dyn SecretStore>>,
    /// `own` is a separate vault from every consumer vault.
    pub separate: bool,
}

/// A consumer side spread over several vaults.
#[derive(Debug)]
pub struct VaultRouter {
    default: Arc<dyn SecretStore>,
    default_name: String,
    vaults: BTreeMap<String, Arc<dyn SecretStore>>,
    /// The vault of each token that names one.
    placement: BTreeMap<SecretName, String>,
    refuse_refresh_tokens: bool,
}

impl VaultRouter {
    /// `vaults` holds every consumer vault by name, `default_name` among them; `placement` maps a token's
    /// secret to its vault's name (each must be in `vaults`).
    pub fn new(
        vaults: BTreeMap<String, Arc<dyn SecretStore>>,
        default_name: &str,
        placement: BTreeMap<SecretName, String>,
        refuse_refresh_tokens: bool,
    ) -> Result<Self, String> {
        let default = vaults.get(default_name).cloned().ok_or_else(|| format!("no consumer vault {default_name:?}"))?;
        if let Some((secret, v)) = placement.iter().find(|(_, v)| !vaults.contains_key(*v)) {
            return Err(format!("secret {secret} is placed in vault {v:?}, which is not configured"));
        }
        Ok(Self { default, default_name: default_name.to_owned(), vaults, placement, refuse_refresh_tokens })
    }

    fn vault_name(&self, name: &SecretName) -> &str {
        self.placement.get(name).map(String::as_str).unwrap_or(&self.default_name)
    }

    fn route(&self, name: &SecretName) -> &Arc<dyn SecretStore> {
        self.vaults.get(self.vault_name(name)).unwrap_or(&self.default)
    }
}

/// Whether a secret is an owner's refresh token (by name or content type).
pub fn is_refresh_token(name: &SecretName, content_type: Option<&str>) -> bool {
    name.as_str().starts_with(REFRESH_TOKEN_PREFIX) || content_type == Some(REFRESH_TOKEN_CONTENT_TYPE)
}

#[async_trait]
impl SecretStore for VaultRouter {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        if self.refuse_refresh_tokens && is_refresh_token(name, new.content_type.as_deref()) {
            return Err(StoreError::Forbidden {
                name: name.clone(),
                message:
                    "refresh tokens are never written to a consumer vault (they belong in PATROL_OWN_KEYVAULT_URL)"
                        .into(),
            });
        }
        self.route(name).set(name, value, new).await
    }

    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        self.route(name).get(name, version).await
    }

    /// Each vault's secrets that are routed to it (a name is listed from one vault only).
    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        let mut out = Vec::new();
        for (vault, store) in &self.vaults {
            out.extend(store.list().await?.into_iter().filter(|s| self.vault_name(&s.name) == vault));
        }
        Ok(out)
    }

    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        self.route(name).list_versions(name).await
    }

    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        self.route(name).update(name, version, update).await
    }

    async fn delete(&self, name: &SecretName) -> Result<(), StoreError> {
        self.route(name).delete(name).await
    }
}

/// patrol's own vault during the upgrade from the one-vault layout: refresh tokens not moved yet
/// (`patrol migrate-refresh-tokens`) are still read from the default consumer vault, so the Function App can
/// be switched to its own vault before or after the move without any owner having to sign in again. Only
/// refresh tokens are looked up there, and nothing is ever written there: the next refresh stores the new
/// token in the own vault (and disables the consumer vault's version, so it can no longer be read).
#[derive(Debug)]
pub struct OwnWithLegacyReads {
    pub own: Arc<dyn SecretStore>,
    pub legacy: Arc<dyn SecretStore>,
}

#[async_trait]
impl SecretStore for OwnWithLegacyReads {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        self.own.set(name, value, new).await
    }

    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        match self.own.get(name, version).await? {
            None if is_refresh_token(name, None) => {
                let found = self.legacy.get(name, version).await;
                if let Ok(Some(_)) = &found {
                    tracing::warn!(secret = %name, "refresh token read from the consumer vault: run `patrol migrate-refresh-tokens`");
                }
                found
            }
            found => Ok(found),
        }
    }

    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        self.own.list().await
    }

    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        self.own.list_versions(name).await
    }

    /// A version the own vault does not have is the consumer vault's (read through [`Self::get`]): disabling
    /// it there is the only change ever made to the consumer vault.
    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        let own_has = self.own.list_versions(name).await?.iter().any(|v| v.version == version);
        let disable_only = update.enabled == Some(false) && update.expires.is_none() && update.tags.is_none();
        if !own_has && disable_only && is_refresh_token(name, None) {
            return self.legacy.update(name, version, update).await;
        }
        self.own.update(name, version, update).await
    }

    async fn delete(&self, name: &SecretName) -> Result<(), StoreError> {
        self.own.delete(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn n(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn tokens_go_to_their_vault_and_refresh_tokens_never_to_a_consumer_vault() {
        let a: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
        let b: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
        let vaults = BTreeMap::from([("kv-a".to_owned(), a.clone()), ("kv-b".to_owned(), b.clone())]);
        let placement = BTreeMap::from([(n("team-pat"), "kv-b".to_owned())]);
        let r = VaultRouter::new(vaults.clone(), "kv-a", placement.clone(), true).unwrap();
        let v = SecretString::from("value-1");
        r.set(&n("team-pat"), &v, NewVersion::default()).await.unwrap();
        r.set(&n("ci-pat"), &v, NewVersion::default()).await.unwrap();
        assert!(b.get(&n("team-pat"), None).await.unwrap().is_some());
        assert!(a.get(&n("team-pat"), None).await.unwrap().is_none());
        assert!(a.get(&n("ci-pat"), None).await.unwrap().is_some());
        let mut listed: Vec<String> = r.list().await.unwrap().into_iter().map(|s| s.name.to_string()).collect();
        listed.sort();
        assert_eq!(listed, ["ci-pat", "team-pat"]);
        let e = r.set(&n("patrol-owner-x"), &v, NewVersion::default()).await.unwrap_err();
        assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
        let rt = NewVersion { content_type: Some(REFRESH_TOKEN_CONTENT_TYPE.into()), ..Default::default() };
        assert!(r.set(&n("anything"), &v, rt).await.is_err());
        assert!(a.list().await.unwrap().iter().all(|s| !s.name.as_str().starts_with(REFRESH_TOKEN_PREFIX)));
        // A placement in an unknown vault is refused.
        let bad = BTreeMap::from([(n("x"), "kv-c".to_owned())]);
        assert!(VaultRouter::new(vaults, "kv-a", bad, true).is_err());
    }

    #[tokio::test]
    async fn the_own_vault_reads_unmoved_refresh_tokens_from_the_consumer_vault_and_writes_only_itself() {
        let own: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
        let legacy: Arc<dyn SecretStore> = Arc::new(MemoryStore::new());
        let s = OwnWithLegacyReads { own: own.clone(), legacy: legacy.clone() };
        let rt = n("patrol-owner-alice");
        let old = legacy.set(&rt, &SecretString::from("rt-1"), NewVersion::default()).await.unwrap();
        legacy.set(&n("ci-pat"), &SecretString::from("pat"), NewVersion::default()).await.unwrap();
        assert!(s.get(&rt, None).await.unwrap().is_some(), "read through");
        assert!(s.get(&n("ci-pat"), None).await.unwrap().is_none(), "only refresh tokens");
        // What the session does on refresh: write the new token, disable the superseded version.
        s.set(&rt, &SecretString::from("rt-2"), NewVersion::default()).await.unwrap();
        let off = PropertiesUpdate { enabled: Some(false), ..Default::default() };
        s.update(&rt, &old.version, off).await.unwrap();
        assert!(legacy.list_versions(&rt).await.unwrap().iter().all(|v| !v.enabled));
        assert_eq!(legacy.list_versions(&rt).await.unwrap().len(), 1, "nothing written to the consumer vault");
        assert_eq!(own.list_versions(&rt).await.unwrap().len(), 1);
    }
}
