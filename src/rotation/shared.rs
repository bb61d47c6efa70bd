//! Where the journal and the per-token leases live, chosen from the settings: the Function App's own
//! storage account (`AzureWebJobsStorage`, connection string or identity-based) shared by every
//! instance, or — without it, or with `PATROL_LEASE=local` — OS file locks ([`FileLeases`], under
//! `PATROL_STATE_DIR/state/leases`) and the file journal under `PATROL_STATE_DIR/state`, which exclude
//! across the processes of one machine. Used by the handler and the CLI alike, so both coordinate.

use super::lease::{BlobLeases, FileLeases, Leases};
use crate::config::{HostStorage, KeyVaultCredential, LeaseMode, Settings};
use crate::state::blob::BlobAccount;
use crate::state::{FileStateStore, StateStore};
use std::sync::Arc;

/// Why the journal store and the leases could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// `AzureWebJobsStorage` could not be used.
    #[error("AzureWebJobsStorage: {0}")]
    HostStorage(String),
    /// `PATROL_LEASE=blob` without a storage account.
    #[error("PATROL_LEASE=blob needs AzureWebJobsStorage")]
    BlobWithoutStorage,
}

/// The journal (state) store and the per-token lease provider.
pub type Shared = (Arc<dyn StateStore>, Arc<dyn Leases>);

/// The journal store and the lease provider the settings ask for.
pub fn from_settings(s: &Settings) -> Result<Shared, SharedError> {
    match (s.lease, &s.host_storage) {
        (LeaseMode::Local, _) | (LeaseMode::Auto, None) => {
            let root = s.state_dir.join("state");
            Ok((Arc::new(FileStateStore::new(&root)), Arc::new(FileLeases::new(root.join("leases")))))
        }
        (_, Some(hs)) => {
            let blob = match (hs, &s.keyvault) {
                // An operator's machine pointed at a deployment (docs/deploy.md): the credential patrol uses
                // for Key Vault there (`developer-tools`: the operator's `az login`; or a client secret), not
                // the managed identity only the Function App has.
                (HostStorage::Identity { blob_service_uri, .. }, Some(kv))
                    if kv.credential != KeyVaultCredential::ManagedIdentity =>
                {
                    let http = crate::store::keyvault::http_client(s.ca_cert.as_deref())
                        .map_err(|e| SharedError::HostStorage(e.to_string()))?;
                    let credential = crate::store::credential::identity(
                        kv,
                        &s.entra_authority,
                        http.clone(),
                        crate::clock::Clock::system(),
                    )
                    .map_err(SharedError::HostStorage)?;
                    BlobAccount::with_credential(blob_service_uri, credential, http)
                }
                _ => BlobAccount::from_host_storage(hs, s.ca_cert.as_deref()),
            }
            .map_err(SharedError::HostStorage)?;
            Ok((Arc::new(blob.state_store()), Arc::new(BlobLeases::new(blob))))
        }
        (LeaseMode::Blob, None) => Err(SharedError::BlobWithoutStorage),
    }
}
