//! The Azure DevOps client: PAT Lifecycle (`tokens/pats`), Token Admin and audit log APIs.
//!
//! [`PatApi`] is what the rotation engine sees: one owner's PATs in one organization, authenticated with
//! that owner's delegated Entra access token (handed out by the `auth` module). The HTTP implementation lives in this
//! module and is tested against `patrol-emulator` over real HTTP. Rules it keeps:
//! - success means 2xx **and** `patTokenError == "none"` **and**, on Create, a token present;
//! - redirects off, `X-TFS-FedAuthRedirect: Suppress`, `Accept: application/json`; HTML or 203 is an
//!   authentication failure;
//! - one rate limiter per identity honouring `Retry-After` (also on 2xx) and `X-RateLimit-*`; retries with
//!   backoff and jitter only for idempotent calls; **Create is never blindly retried**.

pub mod audit;
pub mod connector;
pub mod http;
pub mod models;
pub mod pats;
pub mod probe;
pub mod ratelimit;
pub mod retry;
pub mod token;
pub mod tokenadmin;
pub mod wire;

pub use connector::{Endpoints, HttpConnector};
pub use models::*;
pub use pats::{ApiVersion, HttpPatApi, Reconciled, create_reconciling, reconcile_create};

use crate::domain::{AuthorizationId, OrgName, OwnerId};
use async_trait::async_trait;
use std::sync::Arc;

/// One owner's PATs in one organization.
#[async_trait]
pub trait PatApi: Send + Sync {
    /// The organization and owner this handle acts for.
    fn organization(&self) -> &OrgName;
    fn owner(&self) -> &OwnerId;

    /// Every PAT matching `filter`, following `continuationToken` with the same filters on every page.
    async fn list(&self, filter: DisplayFilter) -> Result<Vec<Pat>, DevOpsError>;

    /// One PAT; `Ok(None)` when Azure DevOps does not know the id (for this owner).
    async fn get(&self, id: AuthorizationId) -> Result<Option<Pat>, DevOpsError>;

    /// Creates a PAT. Never retried blindly: when the outcome is unknown (connection lost after sending)
    /// the error is [`DevOpsError::Uncertain`] and the caller must list and reconcile by display name.
    async fn create(&self, request: &CreatePat) -> Result<CreatedPat, DevOpsError>;

    /// Updates a PAT (name, scope or validTo); clamping is reported in the returned drift.
    async fn update(&self, request: &UpdatePat) -> Result<UpdatedPat, DevOpsError>;

    /// Revokes a PAT. Revoking one that is already revoked or unknown is not an error.
    async fn revoke(&self, id: AuthorizationId) -> Result<(), DevOpsError>;
}

/// Hands out [`PatApi`] handles per (owner, organization); sign-in state is shared per owner.
pub trait Connector: Send + Sync {
    fn pats(&self, owner: &OwnerId, organization: &OrgName) -> Arc<dyn PatApi>;

    /// Tests a new PAT before it becomes current (`None`: no test, e.g. a fake without Azure DevOps).
    fn probe(&self) -> Option<Arc<dyn probe::PatProbe>> {
        None
    }

    /// Azure DevOps calls so far, all identities together (metrics; zero for fakes).
    fn call_counters(&self) -> crate::metrics::CallCounters {
        crate::metrics::CallCounters::default()
    }
}
