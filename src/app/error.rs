//! [`StartupError`]: why the running parts could not be built from the settings — each naming the
//! setting (or file) that was wrong, so the CLI, `patrol serve` and the handler's first invocation all say
//! the same thing in the same words.

use crate::config::{ConfigError, ConfigErrors};
use crate::devops::DevOpsError;
use crate::rotation::policy::PolicyError;
pub use crate::rotation::shared::SharedError;
use crate::store::StoreError;

/// Why the parts could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Invalid settings (every one at once).
    #[error("invalid configuration: {0}")]
    Settings(ConfigErrors),
    /// The policy file (file:line:field).
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// A setting a part needs is missing or wrong (`PATROL_CLIENT_ID`, `PATROL_TENANT_ID`, …).
    #[error(transparent)]
    Setting(#[from] ConfigError),
    /// The secret store (patrol's own vault or a consumer vault, or the embedded file store).
    #[error("cannot open the secret store: {0}")]
    SecretStore(#[from] StoreError),
    /// The journal (state) store and the leases.
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// The HTTP client (`PATROL_CA_CERT`).
    #[error("cannot build the HTTP client (PATROL_CA_CERT): {0}")]
    HttpClient(DevOpsError),
    /// The Azure DevOps client.
    #[error("cannot build the Azure DevOps client: {0}")]
    Connector(DevOpsError),
    /// The Function App's own identity (`PATROL_KEYVAULT_CREDENTIAL` and its settings).
    #[error("the Function App's identity (PATROL_KEYVAULT_CREDENTIAL): {0}")]
    AppIdentity(String),
}

impl StartupError {
    /// Whether the fix is in the configuration (settings, policy) rather than in something unreachable or
    /// broken at run time (a store that cannot be opened): the CLI's exit code 2 vs 1.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, Self::SecretStore(_) | Self::Shared(_))
    }
}
