//! Secret stores: where rotated PATs and owners' Entra refresh tokens live.
//!
//! One trait, [`SecretStore`], with two implementations:
//! - `keyvault` — Azure Key Vault through the official Azure SDK for Rust 1.x
//!   (`azure_security_keyvault_secrets`), one shared `SecretClient`, credential chosen by configuration;
//! - `file` — the embedded default for the CLI and `patrol demo`: an encrypted local store (key kept apart
//!   from the data, files `0600`, atomic writes, versions kept like Key Vault's).
//!
//! Versions behave like Key Vault's everywhere: every [`SecretStore::set`] creates a new version, the newest
//! is current, old versions can be disabled. Secret values only ever travel as [`SecretString`].

pub mod credential;
pub mod file;
pub mod keyvault;
pub mod memory;
pub mod routed;
pub mod tags;

pub use file::FileSecretStore;
pub use keyvault::KeyVaultSecretStore;

use crate::clock::Clock;
use crate::config::Settings;
use std::sync::Arc;

/// The store the settings ask for: Key Vault when `PATROL_KEYVAULT_URL` is set, otherwise the embedded
/// file store under `$PATROL_STATE_DIR/secrets` with its key in `PATROL_STORE_KEY_FILE`.
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn SecretStore>, StoreError> {
    from_settings_with_clock(settings, Clock::system())
}

/// As [`from_settings`], with patrol's clock (the handler's, aligned with the host's time): the file store
/// stamps versions with it, and Key Vault's loopback client-credentials grant reckons token expiry on it.
pub fn from_settings_with_clock(settings: &Settings, clock: Clock) -> Result<Arc<dyn SecretStore>, StoreError> {
    match &settings.keyvault {
        Some(kv) => Ok(Arc::new(KeyVaultSecretStore::connect_with_clock(
            kv,
            &settings.entra_authority,
            settings.ca_cert.as_deref(),
            None,
            clock,
        )?)),
        None => {
            Ok(Arc::new(FileSecretStore::open(settings.state_dir.join("secrets"), &settings.store_key_file, clock)?))
        }
    }
}

/// Where the policy places tokens' secrets (`vault = "…"` of a `[[token]]`), and where it says so, for the
/// errors of [`open`]. `rotation::policy::Policy::placement` makes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The policy file, as errors name it.
    pub file: String,
    /// Each token that names a vault.
    pub tokens: Vec<Placed>,
}

/// One token's placement: its secret, the vault, and its line and index among the policy's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub secret: SecretName,
    pub vault: String,
    pub line: usize,
    pub index: usize,
}

/// The own and consumer stores the settings name, placed by the policy's `vault = "…"` (see [`routed`]).
/// Errors name the setting or the policy field that is wrong.
pub fn open(settings: &Settings, clock: Clock, placed: Option<&Placement>) -> Result<routed::Stores, StoreError> {
    let placement: std::collections::BTreeMap<SecretName, String> =
        placed.map(|p| p.tokens.iter().map(|t| (t.secret.clone(), t.vault.clone())).collect()).unwrap_or_default();
    let unplaced = |secret: &SecretName, vault: &str| {
        let (file, line, i) = placed
            .and_then(|p| p.tokens.iter().find(|t| &t.secret == secret).map(|t| (p.file.clone(), t.line, t.index)))
            .unwrap_or_default();
        StoreError::Other {
            operation: "open",
            message: format!(
                "{file}:{line}: token[{i}].vault: {vault:?} is not a configured consumer vault (PATROL_KEYVAULT_NAME, PATROL_CONSUMER_KEYVAULTS)"
            ),
        }
    };
    if settings.consumer_vaults.is_empty() {
        if let Some((secret, vault)) = placement.iter().next() {
            return Err(unplaced(secret, vault));
        }
        let file = from_settings_with_clock(settings, clock)?;
        return Ok(routed::Stores {
            own: file.clone(),
            own_direct: file.clone(),
            consumer: file,
            vaults: Default::default(),
            separate: false,
        });
    }
    let mut vaults = std::collections::BTreeMap::new();
    for v in &settings.consumer_vaults {
        let store: Arc<dyn SecretStore> = Arc::new(KeyVaultSecretStore::connect_with_clock(
            &v.keyvault,
            &settings.entra_authority,
            settings.ca_cert.as_deref(),
            None,
            clock.clone(),
        )?);
        vaults.insert(v.name.clone(), store);
    }
    if let Some((secret, vault)) = placement.iter().find(|(_, v)| !vaults.contains_key(*v)) {
        return Err(unplaced(secret, vault));
    }
    let default_name = settings.consumer_vaults[0].name.clone();
    let (own, own_direct, separate): (Arc<dyn SecretStore>, Arc<dyn SecretStore>, bool) = match &settings.own_keyvault {
        Some(kv) => {
            let direct: Arc<dyn SecretStore> = Arc::new(KeyVaultSecretStore::connect_with_clock(
                kv,
                &settings.entra_authority,
                settings.ca_cert.as_deref(),
                None,
                clock.clone(),
            )?);
            let legacy = vaults[&default_name].clone();
            (Arc::new(routed::OwnWithLegacyReads { own: direct.clone(), legacy }), direct, true)
        }
        None => (vaults[&default_name].clone(), vaults[&default_name].clone(), false),
    };
    let router = routed::VaultRouter::new(vaults.clone(), &default_name, placement, separate)
        .map_err(|m| StoreError::Other { operation: "open", message: m })?;
    Ok(routed::Stores { own, own_direct, consumer: Arc::new(router), vaults, separate })
}

use crate::domain::SecretName;
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Content type patrol puts on every PAT version it writes.
pub const PAT_CONTENT_TYPE: &str = "application/vnd.patrol.azure-devops-pat";
/// Content type of an owner's Entra refresh token.
pub const REFRESH_TOKEN_CONTENT_TYPE: &str = "application/vnd.patrol.entra-refresh-token";

/// What to write as a new version.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub content_type: Option<String>,
    pub expires: Option<OffsetDateTime>,
    pub not_before: Option<OffsetDateTime>,
    pub tags: BTreeMap<String, String>,
}

/// Properties of one version (never the value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionProperties {
    pub name: SecretName,
    /// Key Vault's 32-hex-character version id (the file store uses the same format).
    pub version: String,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated: Option<OffsetDateTime>,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Properties of a secret as listed (Key Vault's list does not name the current version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretSummary {
    pub name: SecretName,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A version with its value.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub properties: VersionProperties,
    pub value: SecretString,
}

/// A change to a version's properties (the value of a version never changes).
#[derive(Debug, Clone, Default)]
pub struct PropertiesUpdate {
    pub enabled: Option<bool>,
    pub expires: Option<OffsetDateTime>,
    /// Replaces the whole tag set when present.
    pub tags: Option<BTreeMap<String, String>>,
}

/// What went wrong, in words an operator can act on. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "secret {name} was deleted but can still be recovered (ObjectIsDeletedButRecoverable); recover it or purge it, or set PATROL_KEYVAULT_RECOVER_DELETED=true"
    )]
    DeletedButRecoverable { name: SecretName },
    #[error("secret {name} version {version} is disabled")]
    Disabled { name: SecretName, version: String },
    #[error("access to secret {name} was refused: {message}")]
    Forbidden { name: SecretName, message: String },
    #[error("the secret store is throttling requests; retry after {retry_after_secs}s")]
    Throttled { retry_after_secs: u64 },
    #[error("tag {tag:?}: {problem}")]
    InvalidTag { tag: String, problem: String },
    #[error("secret store failure during {operation}: {message}")]
    Other { operation: &'static str, message: String },
}

/// The secret store patrol writes rotated PATs and refresh tokens to.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// Writes a new version and makes it current; returns its properties (with the new version id).
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError>;

    /// Reads a version (the current one when `version` is `None`). `Ok(None)` when the secret or version
    /// does not exist.
    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError>;

    /// Every secret in the store (all pages).
    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError>;

    /// Every version of one secret (all pages), in no particular order.
    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError>;

    /// Updates one version's properties (e.g. disable the version whose PAT was revoked).
    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError>;

    /// Deletes a secret with all its versions (Key Vault: soft delete, then purge where allowed). `Ok` when
    /// it does not exist. Stores that cannot delete say so.
    async fn delete(&self, name: &SecretName) -> Result<(), StoreError> {
        Err(StoreError::Other { operation: "delete", message: format!("this store cannot delete secret {name}") })
    }
}
