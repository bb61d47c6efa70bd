//! [`Writers`]: the production [`ConsumerWriter`], dispatching each consumer kind to its client —
//! Azure DevOps (the Function App's own identity), GitHub (patrol's GitHub credential from the store),
//! Key Vault copies, webhooks. `reference` consumers and Key Vault-linked groups are never written.

use super::devops::DevOpsConsumers;
use super::github::GithubConsumers;
use super::policy::{Consumer, ConsumerKind};
use super::state::UseEvidence;
use super::vault::VaultConsumers;
use super::webhook::WebhookConsumers;
use super::{ConsumerError, ConsumerWriter, WriteContext};
use crate::clock::Clock;
use crate::config::{KeyVaultSettings, Settings};
use crate::state::StateStore;
use crate::store::SecretStore;
use async_trait::async_trait;
use secrecy::SecretString;
use std::sync::Arc;
use time::OffsetDateTime;

/// The writer for a policy's consumers (`None` when no token declares any); a writer that cannot be built
/// is logged and left out, so every delivery reports "not configured" with the reason.
pub fn for_policy(
    settings: &Settings,
    policy: &crate::policy::Policy,
    own: Arc<dyn SecretStore>,
    consumer: Arc<dyn SecretStore>,
    state: Arc<dyn StateStore>,
    clock: Clock,
) -> Option<Arc<dyn ConsumerWriter>> {
    let consumers = policy.tokens.iter().find(|t| !t.consumers.is_empty())?.consumers.settings.clone();
    match Writers::from_settings(settings, &consumers, own, consumer, state, clock) {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::error!("consumer writers: {e}");
            None
        }
    }
}

pub struct Writers {
    pub devops: Option<DevOpsConsumers>,
    /// Why Azure DevOps consumers cannot be written, when `devops` is `None`.
    pub devops_missing: String,
    pub github: GithubConsumers,
    pub vault: VaultConsumers,
    pub webhook: WebhookConsumers,
    pub state: Arc<dyn StateStore>,
}

impl Writers {
    /// From the settings and the policy's `[consumers]` table.
    pub fn from_settings(
        settings: &Settings,
        consumers: &super::ConsumerSettings,
        own: Arc<dyn SecretStore>,
        consumer: Arc<dyn SecretStore>,
        state: Arc<dyn StateStore>,
        clock: Clock,
    ) -> Result<Self, String> {
        let client = crate::devops::http::build_client(settings.ca_cert.as_deref(), std::time::Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let (devops, devops_missing) = match &settings.consumer_identity {
            None => (
                None,
                "PATROL_CONSUMER_CREDENTIAL is not set: patrol has no identity to write Azure DevOps consumers"
                    .to_owned(),
            ),
            Some(id) => {
                let kv = KeyVaultSettings {
                    url: url::Url::parse("https://consumer-identity.invalid/").map_err(|e| e.to_string())?,
                    credential: id.credential,
                    managed_identity_client_id: id.managed_identity_client_id.clone(),
                    tenant_id: id.tenant_id.clone(),
                    client_id: id.client_id.clone(),
                    client_secret: id.client_secret.clone(),
                    recover_deleted: false,
                };
                let http =
                    crate::store::keyvault::http_client(settings.ca_cert.as_deref()).map_err(|e| e.to_string())?;
                let credential =
                    crate::store::credential::identity(&kv, &settings.entra_authority, http, clock.clone())
                        .map_err(|e| format!("PATROL_CONSUMER_CREDENTIAL: {e}"))?;
                (Some(DevOpsConsumers::new(client.clone(), &settings.devops_url, credential)), String::new())
            }
        };
        let opener: Option<Box<super::vault::VaultOpener>> = settings.keyvault.clone().map(|kv| {
            let authority = settings.entra_authority.clone();
            let ca = settings.ca_cert.clone();
            let clock = clock.clone();
            Box::new(move |url: &str| -> Result<Arc<dyn SecretStore>, String> {
                let other = KeyVaultSettings { url: url::Url::parse(url).map_err(|e| e.to_string())?, ..kv.clone() };
                let s = crate::store::KeyVaultSecretStore::connect_with_clock(
                    &other,
                    &authority,
                    ca.as_deref(),
                    None,
                    clock.clone(),
                )
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(s) as Arc<dyn SecretStore>)
            }) as Box<super::vault::VaultOpener>
        });
        Ok(Self {
            devops,
            devops_missing,
            github: GithubConsumers::new(
                client.clone(),
                &consumers.github_api,
                own.clone(),
                consumers.github_credential.clone(),
            ),
            vault: VaultConsumers::new(consumer, opener),
            webhook: WebhookConsumers::new(client, own, clock),
            state,
        })
    }

    fn devops(&self) -> Result<&DevOpsConsumers, ConsumerError> {
        self.devops.as_ref().ok_or_else(|| ConsumerError::NotConfigured(self.devops_missing.clone()))
    }
}

impl Writers {
    /// Checks one consumer without writing anything (`patrol consumers --check`, `super::check`).
    pub async fn check(&self, c: &Consumer) -> (super::check::Probe, Result<(), ConsumerError>) {
        let mut p = super::check::Probe::default();
        let r = match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } | ConsumerKind::DevopsVariableGroup { .. } => {
                match self.devops() {
                    Ok(d) => d.check(c, &mut p).await,
                    Err(e) => Err(e),
                }
            }
            ConsumerKind::GithubActionsSecret { .. } => self.github.check(c, &mut p).await,
            ConsumerKind::Keyvault { .. } => self.vault.check(c, &mut p).await,
            ConsumerKind::Webhook { .. } => self.webhook.check(c, &mut p).await,
            ConsumerKind::Reference { lag_hours, .. } => {
                p.note(format!("reads the vault itself, lag declared as {lag_hours} h; nothing to reach"));
                Ok(())
            }
        };
        if let Err(e) = &r {
            p.failed(e);
        }
        (p, r)
    }
}

#[async_trait]
impl ConsumerWriter for Writers {
    async fn prepare(&self, c: &Consumer, ctx: &WriteContext) -> Result<Option<String>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } | ConsumerKind::DevopsVariableGroup { .. } => {
                self.devops()?.prepare(c).await
            }
            ConsumerKind::GithubActionsSecret { .. } => self.github.prepare(c).await,
            ConsumerKind::Keyvault { .. } => self.vault.prepare(c, ctx).await,
            ConsumerKind::Webhook { .. } | ConsumerKind::Reference { .. } => Ok(None),
        }
    }

    async fn landed(
        &self,
        c: &Consumer,
        before: Option<&str>,
        ctx: &WriteContext,
    ) -> Result<Option<Option<String>>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } | ConsumerKind::DevopsVariableGroup { .. } => {
                self.devops()?.landed(c, before).await
            }
            ConsumerKind::GithubActionsSecret { .. } => self.github.landed(c, before).await,
            ConsumerKind::Keyvault { .. } => self.vault.landed(c, ctx).await,
            // Unknown: resend (same delivery id; receivers dedupe).
            ConsumerKind::Webhook { .. } | ConsumerKind::Reference { .. } => Ok(None),
        }
    }

    async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
        ctx: &WriteContext,
    ) -> Result<Option<String>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } | ConsumerKind::DevopsVariableGroup { .. } => {
                self.devops()?.write(c, value, before).await
            }
            ConsumerKind::GithubActionsSecret { .. } => self.github.write(c, value, before).await,
            ConsumerKind::Keyvault { .. } => self.vault.write(c, value, ctx).await,
            ConsumerKind::Webhook { .. } => self.webhook.write(c, ctx).await,
            ConsumerKind::Reference { .. } => Ok(None),
        }
    }

    async fn evidence(
        &self,
        c: &Consumer,
        since: OffsetDateTime,
        ctx: &WriteContext,
    ) -> Result<Option<UseEvidence>, ConsumerError> {
        match &c.kind {
            ConsumerKind::DevopsServiceConnection { .. } => self.devops()?.evidence(c, since, ctx).await,
            ConsumerKind::Webhook { ack: true, .. } => super::ack::find(self.state.as_ref(), c, since, ctx).await,
            _ => Ok(None),
        }
    }
}
