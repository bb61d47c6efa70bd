//! Where the journal and the per-token leases live, chosen from the settings: the Function App's own
//! storage account (`AzureWebJobsStorage`, connection string or identity-based) shared by every
//! instance, or — without it, or with `PATROL_LEASE=local` — an in-process lock and the file journal
//! under `PATROL_STATE_DIR/state`. Used by the handler and the CLI alike, so both coordinate.

use super::blob::BlobAccount;
use super::lease::{Leases, LocalLeases};
use crate::config::{LeaseMode, Settings};
use crate::state::{FileStateStore, StateStore};
use std::sync::Arc;

/// The journal (state) store and the per-token lease provider.
pub type Shared = (Arc<dyn StateStore>, Arc<dyn Leases>);

/// The journal store and the lease provider the settings ask for.
pub fn from_settings(s: &Settings) -> Result<Shared, String> {
    match (s.lease, &s.host_storage) {
        (LeaseMode::Local, _) | (LeaseMode::Auto, None) => {
            Ok((Arc::new(FileStateStore::new(s.state_dir.join("state"))), Arc::new(LocalLeases::default())))
        }
        (_, Some(hs)) => {
            let blob = BlobAccount::from_host_storage(hs, s.ca_cert.as_deref())
                .map_err(|e| format!("AzureWebJobsStorage: {e}"))?;
            Ok((Arc::new(blob.state_store()), Arc::new(blob.leases())))
        }
        (LeaseMode::Blob, None) => Err("PATROL_LEASE=blob needs AzureWebJobsStorage".into()),
    }
}
