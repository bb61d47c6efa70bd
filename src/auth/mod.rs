//! Delegated Microsoft Entra sign-in for PAT owners.
//!
//! Owns: the device-code sign-in (`patrol login`), keeping each owner's refresh token in the secret store
//! (rotated on every use), and handing out access tokens for the Azure DevOps resource that are refreshed
//! proactively — at least five minutes before they expire — so a run of any length never sends an expired
//! token. `invalid_grant` / `interaction_required` become "owner must sign in again".
//!
//! - [`entra`] — the two Entra endpoints (`/devicecode`, `/token`) and their wire shapes;
//! - [`device_code`] — the interactive sign-in that stores the first refresh token;
//! - [`session`] — [`session::OwnerSession`], the per-owner [`TokenSource`] (single-flight refresh, rotated
//!   refresh tokens stored as new versions, refresh bookkeeping in version tags) and [`session::Sessions`].

pub mod app;
pub mod device_code;
pub mod entra;
pub mod migrate;
pub mod session;

use crate::devops::DevOpsError;
use crate::domain::OwnerId;
use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

/// The Azure DevOps resource (application id) in Microsoft Entra.
pub const DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";

/// The delegated scopes patrol asks owners for: read and manage their PATs, and a refresh token.
pub const PAT_SCOPES: &str =
    "499b84ac-1321-427f-aa17-267ca6975798/vso.pats 499b84ac-1321-427f-aa17-267ca6975798/vso.pats_manage offline_access";

/// The delegated scopes an organization administrator signs in with for compromise response and audit:
/// Token Admin (`vso.tokenadministration`) and the audit log (`vso.auditlog`), plus a refresh token.
pub const ADMIN_SCOPES: &str = "499b84ac-1321-427f-aa17-267ca6975798/vso.tokenadministration 499b84ac-1321-427f-aa17-267ca6975798/vso.auditlog offline_access";

/// The delegated scopes of an administrator who only reads the audit log (`patrol login --admin --audit-only`).
pub const AUDIT_SCOPES: &str = "499b84ac-1321-427f-aa17-267ca6975798/vso.auditlog offline_access";

/// An access token for the Azure DevOps resource. The value is only ever exposed to build a header.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: SecretString,
    pub expires_at: OffsetDateTime,
}

/// Hands out valid access tokens for one identity.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// The identity (also the key of its rate limiter).
    fn identity(&self) -> &OwnerId;

    /// A token valid for at least the refresh margin (five minutes) from now.
    async fn access_token(&self) -> Result<AccessToken, DevOpsError>;

    /// The service refused the current token (401): drop it so the next call gets a fresh one.
    fn invalidate(&self);
}

/// A fixed token (e.g. one minted by `az account get-access-token`, or by the emulator in tests). It is not
/// refreshed: once it is within a second of expiry it is refused rather than sent.
#[derive(Debug)]
pub struct StaticToken {
    identity: OwnerId,
    token: AccessToken,
    clock: crate::clock::Clock,
}

impl StaticToken {
    pub fn new(identity: OwnerId, token: AccessToken, clock: crate::clock::Clock) -> Self {
        Self { identity, token, clock }
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    fn identity(&self) -> &OwnerId {
        &self.identity
    }

    async fn access_token(&self) -> Result<AccessToken, DevOpsError> {
        if self.token.expires_at <= self.clock.now() + time::Duration::seconds(1) {
            return Err(DevOpsError::Unauthorized(format!(
                "the fixed access token for {} has expired; obtain a new one",
                self.identity
            )));
        }
        Ok(self.token.clone())
    }

    fn invalidate(&self) {}
}

/// Hands out the [`TokenSource`] of an identity (one per owner, shared by every client acting as it).
pub trait TokenSources: Send + Sync + std::fmt::Debug {
    fn for_identity(&self, identity: &OwnerId) -> std::sync::Arc<dyn TokenSource>;
}
