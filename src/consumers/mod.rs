//! Consumers: every place a rotated PAT must reach besides its own Key Vault secret, and the proof that
//! it arrived and was used before the previous PAT is revoked.
//!
//! - [`policy`] (`crate::policy::consumers`, below this module) — `[[token.consumer]]` / `[consumers]` in
//!   `patrol.toml`, validated with file:line:field errors.
//! - [`state`] (`crate::state::deliveries`, beside the journal) — each consumer's delivery of the current
//!   PAT, kept in the token's journal record.
//! - [`gate`] — pure: may the previous PAT be revoked, given what the consumers did?
//! - [`view`] — pure: what operators see of each consumer (one view for every command and the report).
//! - [`ConsumerWriter`] — the effects (read the object's version marker, write, look for evidence), driven
//!   by the state machine (`rotation::machine`), which journals each write before it happens.

pub use crate::policy::consumers as policy;
pub use crate::state::deliveries as state;

pub mod ack;
pub mod check;
pub mod devops;
pub mod gate;
pub mod github;
pub mod vault;
pub mod view;
pub mod webhook;
pub mod writers;

pub use policy::{Consumer, ConsumerKind, ConsumerSettings, Consumers};

use crate::domain::{AuthorizationId, OperationId, SecretName};
use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

/// What a write is about (never the value).
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub secret: SecretName,
    pub vault_version: String,
    pub authorization_id: AuthorizationId,
    pub operation: Option<OperationId>,
}

/// Why a consumer could not be read or written. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// Worth retrying (5xx, 429, network): backoff, and the next run resumes.
    #[error("{0}")]
    Transient(String),
    /// The object is gone (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// No rights (401/403).
    #[error("access refused: {0}")]
    Forbidden(String),
    /// Someone changed the object since patrol read it (409, or its version marker moved).
    #[error("changed concurrently: {0}")]
    Conflict(String),
    /// The object is not what the policy says (type/scheme, a variable that is not secret, …).
    #[error("refused: {0}")]
    Refused(String),
    /// patrol is not set up to reach this consumer (no GitHub credential, no app identity, …).
    #[error("not configured: {0}")]
    NotConfigured(String),
}

impl ConsumerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// What the state machine does to consumers. One implementation talks to Azure DevOps, GitHub, Key Vault
/// and webhooks ([`writers::Writers`]); tests use doubles where no real consumer can run.
#[async_trait]
pub trait ConsumerWriter: Send + Sync {
    /// Reads the object and checks it is what the policy says; returns its version marker (`None` when
    /// the object has none yet, e.g. a GitHub secret that does not exist).
    async fn prepare(&self, c: &Consumer, ctx: &WriteContext) -> Result<Option<String>, ConsumerError>;

    /// After a crash while `Writing`: did the write land? `Some(marker after)` if it did.
    async fn landed(
        &self,
        c: &Consumer,
        before: Option<&str>,
        ctx: &WriteContext,
    ) -> Result<Option<Option<String>>, ConsumerError>;

    /// Writes the value, only if the object's marker is still `before` (else [`ConsumerError::Conflict`]);
    /// returns the marker after the write.
    async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
        ctx: &WriteContext,
    ) -> Result<Option<String>, ConsumerError>;

    /// Evidence that the consumer used the value written at `since` (service connection execution
    /// history, a webhook acknowledgement); `None` when there is none (yet) or the kind has none.
    async fn evidence(
        &self,
        c: &Consumer,
        since: OffsetDateTime,
        ctx: &WriteContext,
    ) -> Result<Option<state::UseEvidence>, ConsumerError>;
}

/// What a writer's `prepare` read, kept for the `write` that follows it in the same process (so the
/// object is not read twice on a token's critical path). Taken by the write; older than
/// [`Prepared::FRESH`] it is not used and the write reads the object again.
pub struct Prepared<T> {
    items: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, T)>>,
}

impl<T> Default for Prepared<T> {
    fn default() -> Self {
        Self { items: Default::default() }
    }
}

impl<T> Prepared<T> {
    pub const FRESH: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn put(&self, consumer: &str, v: T) {
        let mut m = self.items.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < Self::FRESH);
        m.insert(consumer.to_owned(), (std::time::Instant::now(), v));
    }

    pub fn take(&self, consumer: &str) -> Option<T> {
        let mut m = self.items.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(consumer).filter(|(at, _)| at.elapsed() < Self::FRESH).map(|(_, v)| v)
    }
}

/// What a person should do about a consumer that does not move, in words.
pub fn fix(c: &Consumer) -> String {
    match &c.kind {
        ConsumerKind::Keyvault { secret, vault } => format!(
            "Give patrol's identity Key Vault Secrets Officer on secret {secret}{}.",
            vault.as_deref().map(|v| format!(" in {v}")).unwrap_or_default()
        ),
        ConsumerKind::DevopsServiceConnection { organization, project, connection, .. } => format!(
            "Check service connection {connection} in {organization}/{project} exists, has the declared type and scheme, and that patrol's identity is an Administrator of it; then run a pipeline that uses it."
        ),
        ConsumerKind::DevopsVariableGroup { organization, project, group, variable, .. } => format!(
            "Check variable group {group} in {organization}/{project} exists, that {} is a secret variable, and that patrol's identity is an Administrator of the group.",
            variable.as_deref().unwrap_or("the variable")
        ),
        ConsumerKind::GithubActionsSecret { name, .. } => format!(
            "Check that patrol's GitHub credential may write Actions secret {name} (Secrets: read and write) and has not expired."
        ),
        ConsumerKind::Webhook { url_secret, ack, .. } => format!(
            "Check the endpoint stored in {url_secret} answers 2xx{}.",
            if *ack { " and acknowledges to RotateHttp" } else { "" }
        ),
        ConsumerKind::Reference { description, .. } => {
            format!("Restart or reconfigure {description} so it reads the new version.")
        }
    }
}

#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod policy_tests;
