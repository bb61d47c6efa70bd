//! The Function App's own identity (its managed identity in Azure) as an Azure DevOps caller, for the two
//! APIs that accept a service principal / managed identity added to the organization: the audit log ("View
//! audit log") and Token Admin (Project Collection Administrators). The PAT Lifecycle API refuses such
//! identities, so owners still sign in (delegated, PAT scopes only).
//!
//! The identity is the credential configured for Key Vault (`PATROL_KEYVAULT_CREDENTIAL`), asked only for
//! the Azure DevOps resource (`499b84ac-…/.default`: app-only tokens carry no scopes; what the identity may
//! do is what it was granted in the organization). Inside patrol it goes by the reserved identity
//! [`app_identity`], so the connector's per-identity clients and rate limiters apply unchanged;
//! [`Routed`] hands out its token source for that identity and the owners' sessions for everyone else.

use super::{AccessToken, DEVOPS_RESOURCE, TokenSource, TokenSources};
use crate::devops::DevOpsError;
use crate::domain::OwnerId;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use secrecy::SecretString;
use std::sync::Arc;

pub use crate::domain::{APP, app_identity, parse_identity};

/// How an identity is shown to people.
pub fn describe(identity: &OwnerId) -> String {
    if *identity == app_identity() { "app (the Function App's identity)".into() } else { identity.to_string() }
}

/// The scope asked for: the Azure DevOps resource, app-only.
pub const DEVOPS_DEFAULT_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

/// Access tokens of the Function App's identity for Azure DevOps.
pub struct AppToken {
    identity: OwnerId,
    credential: Arc<dyn TokenCredential>,
}

impl std::fmt::Debug for AppToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppToken").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl AppToken {
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        debug_assert!(DEVOPS_DEFAULT_SCOPE.starts_with(DEVOPS_RESOURCE));
        Self { identity: app_identity(), credential }
    }

    /// From the settings: the Key Vault credential's identity (`None` without `PATROL_KEYVAULT_URL`).
    pub fn from_settings(
        settings: &crate::config::Settings,
        http: reqwest::Client,
        clock: crate::clock::Clock,
    ) -> Result<Option<Self>, String> {
        let Some(kv) = &settings.keyvault else { return Ok(None) };
        let credential = crate::store::credential::identity(kv, &settings.entra_authority, http, clock)?;
        Ok(Some(Self::new(credential)))
    }
}

#[async_trait]
impl TokenSource for AppToken {
    fn identity(&self) -> &OwnerId {
        &self.identity
    }

    async fn access_token(&self) -> Result<AccessToken, DevOpsError> {
        // The azure_identity credentials (and patrol's client-credentials grant) cache and renew tokens.
        let t = self.credential.get_token(&[DEVOPS_DEFAULT_SCOPE], None).await.map_err(|e| {
            DevOpsError::Unauthorized(format!("the Function App's identity could not get an Azure DevOps token: {e}"))
        })?;
        Ok(AccessToken { value: SecretString::from(t.token.secret().to_owned()), expires_at: t.expires_on })
    }

    fn invalidate(&self) {}
}

/// The owners' (and administrators') sessions, and the Function App's identity under [`app_identity`].
#[derive(Debug)]
pub struct Routed {
    pub sessions: Arc<dyn TokenSources>,
    pub app: Option<Arc<AppToken>>,
}

/// Refuses every call: the Function App's identity is not configured.
#[derive(Debug)]
struct NoAppIdentity(OwnerId);

#[async_trait]
impl TokenSource for NoAppIdentity {
    fn identity(&self) -> &OwnerId {
        &self.0
    }

    async fn access_token(&self) -> Result<AccessToken, DevOpsError> {
        Err(DevOpsError::Unauthorized(
            "the Function App's own identity is not configured (it is the Key Vault credential: set \
             PATROL_KEYVAULT_URL and PATROL_KEYVAULT_CREDENTIAL), so it cannot read the audit log or \
             administer tokens"
                .into(),
        ))
    }

    fn invalidate(&self) {}
}

impl TokenSources for Routed {
    fn for_identity(&self, identity: &OwnerId) -> Arc<dyn TokenSource> {
        if *identity == app_identity() {
            return match &self.app {
                Some(a) => a.clone(),
                None => Arc::new(NoAppIdentity(identity.clone())),
            };
        }
        self.sessions.for_identity(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_identity_parses_and_app_maps_to_it() {
        assert_eq!(parse_identity("APP").unwrap(), app_identity());
        assert_eq!(parse_identity("sec@fabrikam.test").unwrap().as_str(), "sec@fabrikam.test");
        assert!(parse_identity("nobody").is_err());
        assert!(describe(&app_identity()).contains("Function App"));
    }
}
