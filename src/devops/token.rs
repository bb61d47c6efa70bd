//! What a client sends as its bearer: an [`AccessToken`] for the Azure DevOps resource, handed out by a
//! [`TokenSource`] per identity ([`TokenSources`]). The `auth` module implements them (owners' delegated sessions,
//! the Function App's own identity, a fixed token); the clients here only ask.

use super::DevOpsError;
use crate::domain::OwnerId;
use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

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

/// Hands out the [`TokenSource`] of an identity (one per owner, shared by every client acting as it).
pub trait TokenSources: Send + Sync + std::fmt::Debug {
    fn for_identity(&self, identity: &OwnerId) -> std::sync::Arc<dyn TokenSource>;
}
