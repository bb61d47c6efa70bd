//! `keyvault` consumers: more secrets (in the token's vault or another one) that must hold the same value.
//! Each copy is a new version tagged `copy-of` / `source-version` (never `managed-by`: a copy is not a
//! managed token), so a write that landed before a crash is recognised by its tag and never repeated.

use super::policy::{Consumer, ConsumerKind};
use super::{ConsumerError, WriteContext};
use crate::domain::SecretName;
use crate::store::{NewVersion, PAT_CONTENT_TYPE, SecretStore, StoreError};
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const COPY_OF: &str = "copy-of";
pub const SOURCE_VERSION: &str = "source-version";

/// Builds a store for another vault URL (`None` when patrol cannot reach other vaults, e.g. no Key Vault
/// credential is configured).
pub type VaultOpener = dyn Fn(&str) -> Result<Arc<dyn SecretStore>, String> + Send + Sync;

pub struct VaultConsumers {
    own: Arc<dyn SecretStore>,
    opener: Option<Box<VaultOpener>>,
    others: std::sync::Mutex<HashMap<String, Arc<dyn SecretStore>>>,
}

impl std::fmt::Debug for VaultConsumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultConsumers").finish_non_exhaustive()
    }
}

fn map(e: StoreError, what: &str) -> ConsumerError {
    match e {
        StoreError::Forbidden { .. } => ConsumerError::Forbidden(format!("{what}: {e}")),
        StoreError::Throttled { .. } | StoreError::Other { .. } => ConsumerError::Transient(format!("{what}: {e}")),
        _ => ConsumerError::Refused(format!("{what}: {e}")),
    }
}

impl VaultConsumers {
    pub fn new(own: Arc<dyn SecretStore>, opener: Option<Box<VaultOpener>>) -> Self {
        Self { own, opener, others: Default::default() }
    }

    fn target(&self, c: &Consumer) -> Result<(Arc<dyn SecretStore>, SecretName), ConsumerError> {
        let ConsumerKind::Keyvault { vault, secret } = &c.kind else {
            return Err(ConsumerError::Refused("not a keyvault consumer".into()));
        };
        let store = match vault {
            None => self.own.clone(),
            Some(url) => {
                let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
                match others.get(url) {
                    Some(s) => s.clone(),
                    None => {
                        let opener = self.opener.as_ref().ok_or_else(|| {
                            ConsumerError::NotConfigured(format!(
                                "{}: patrol has no Key Vault credential to reach {url}",
                                c.id
                            ))
                        })?;
                        let s = opener(url).map_err(|e| ConsumerError::NotConfigured(format!("{}: {e}", c.id)))?;
                        others.insert(url.clone(), s.clone());
                        s
                    }
                }
            }
        };
        Ok((store, secret.clone()))
    }

    async fn copy_of(&self, c: &Consumer, ctx: &WriteContext) -> Result<Option<String>, ConsumerError> {
        let (store, name) = self.target(c)?;
        let versions = store.list_versions(&name).await.map_err(|e| map(e, &c.id))?;
        Ok(versions
            .into_iter()
            .find(|v| {
                v.tags.get(SOURCE_VERSION).is_some_and(|s| s == &ctx.vault_version)
                    && v.tags.get(COPY_OF).is_some_and(|s| s == ctx.secret.as_str())
            })
            .map(|v| v.version))
    }

    pub async fn prepare(&self, c: &Consumer, _: &WriteContext) -> Result<Option<String>, ConsumerError> {
        let (store, name) = self.target(c)?;
        let current = store.get(&name, None).await.map_err(|e| map(e, &c.id))?;
        Ok(current.map(|s| s.properties.version))
    }

    /// Checks a copy's target without writing (`super::check`): its versions can be listed (properties
    /// only, no value is read), and it is not a managed token's own secret.
    pub async fn check(&self, c: &Consumer, p: &mut super::check::Probe) -> Result<(), ConsumerError> {
        let (store, name) = self.target(c)?;
        let versions = store.list_versions(&name).await.map_err(|e| map(e, &c.id))?;
        p.reachable = Some(true);
        if versions.iter().any(|v| v.tags.contains_key(crate::store::tags::MANAGED_BY)) {
            return Err(ConsumerError::Refused(format!(
                "{}: secret {name} is a managed token's own secret (tagged managed-by); a copy must go elsewhere",
                c.id
            )));
        }
        p.right_type = Some(true);
        p.note(if versions.is_empty() {
            format!("secret {name} does not exist yet (patrol creates it)")
        } else {
            format!("secret {name} has {} version(s)", versions.len())
        });
        p.note("Key Vault cannot say without a write whether patrol may set the secret");
        Ok(())
    }

    pub async fn landed(&self, c: &Consumer, ctx: &WriteContext) -> Result<Option<Option<String>>, ConsumerError> {
        Ok(self.copy_of(c, ctx).await?.map(Some))
    }

    pub async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        ctx: &WriteContext,
    ) -> Result<Option<String>, ConsumerError> {
        if let Some(v) = self.copy_of(c, ctx).await? {
            return Ok(Some(v));
        }
        let (store, name) = self.target(c)?;
        let mut tags = BTreeMap::new();
        tags.insert(COPY_OF.to_owned(), ctx.secret.to_string());
        tags.insert(SOURCE_VERSION.to_owned(), ctx.vault_version.clone());
        tags.insert(crate::store::tags::AUTHORIZATION_ID.to_owned(), ctx.authorization_id.to_string());
        let new = NewVersion { content_type: Some(PAT_CONTENT_TYPE.to_owned()), expires: None, not_before: None, tags };
        let props = store.set(&name, value, new).await.map_err(|e| map(e, &c.id))?;
        Ok(Some(props.version))
    }
}
