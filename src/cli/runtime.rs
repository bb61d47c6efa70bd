//! The parts a CLI command works with, built from the settings exactly as the Function App builds them:
//! the policy, the secret store, the state store (journal), the Azure DevOps connector with owner
//! sessions, and the rotation [`Engine`]. Nothing is built until a command needs it.

use super::CliError;
use crate::auth::entra::EntraClient;
use crate::auth::session::{SessionOptions, Sessions};
use crate::clock::Clock;
use crate::config::Settings;
use crate::devops::Connector;
use crate::devops::connector::HttpConnector;
use crate::notify::Notifier;
use crate::rotation::engine::Engine;
use crate::rotation::lease::Leases;
use crate::rotation::policy::Policy;
use crate::state::StateStore;
use crate::store::SecretStore;
use std::sync::Arc;
use std::time::Duration;

/// Settings, policy and stores, without any network client.
pub struct Local {
    pub settings: Settings,
    pub clock: Clock,
    pub policy: Arc<Policy>,
    /// The consumer side: rotated PATs, each in its token's consumer vault.
    pub store: Arc<dyn SecretStore>,
    /// patrol's own secrets: owners' refresh tokens, the SMTP password (`PATROL_OWN_KEYVAULT_URL`; the same
    /// store as `store` in the one-vault layout and with the embedded store).
    pub own: Arc<dyn SecretStore>,
    pub state: Arc<dyn StateStore>,
    /// The same per-token leases the Function App takes (blob leases in `AzureWebJobsStorage` when it is
    /// configured), so a CLI rotation and the Function App never work on one token at once.
    pub leases: Arc<dyn Leases>,
}

impl Local {
    /// Reads the settings from the environment (every invalid setting at once, as the handler does at
    /// start) and opens the stores.
    pub fn from_env() -> Result<Self, CliError> {
        Self::open(checked_settings(true)?, Clock::system())
    }

    pub fn open(settings: Settings, clock: Clock) -> Result<Self, CliError> {
        let policy = Policy::load(&settings.policy_file)?;
        let stores = crate::store::open(&settings, clock.clone(), Some(&policy))
            .map_err(|e| CliError::failed(format!("cannot open the secret store: {e}")))?;
        let (state, leases) = crate::rotation::shared::from_settings(&settings).map_err(CliError::failed)?;
        Ok(Self { settings, clock, policy: Arc::new(policy), store: stores.consumer, own: stores.own, state, leases })
    }

    /// As [`Local::from_env`], for commands that only read (`plan`, `status`, `inventory`, `report`): they
    /// create nothing. Without Key Vault, a file store whose directory or key file does not exist is read
    /// as empty instead of being created (a missing store holds no secret, so nothing is lost). A missing
    /// `PATROL_CLIENT_ID` is not an error here (`patrol status` reports on sign-in instead of signing in);
    /// commands that reach Azure DevOps name it when they need it.
    pub fn from_env_read_only() -> Result<Self, CliError> {
        Self::open_read_only(checked_settings(false)?, Clock::system())
    }

    pub fn open_read_only(settings: Settings, clock: Clock) -> Result<Self, CliError> {
        let file_store_missing = settings.keyvault.is_none()
            && (!settings.state_dir.join("secrets").is_dir() || !settings.store_key_file.is_file());
        if !file_store_missing {
            return Self::open(settings, clock);
        }
        let policy = Policy::load(&settings.policy_file)?;
        let store: Arc<dyn SecretStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let (state, leases) = crate::rotation::shared::from_settings(&settings).map_err(CliError::failed)?;
        Ok(Self { settings, clock, policy: Arc::new(policy), own: store.clone(), store, state, leases })
    }

    /// The Entra client owners sign in with.
    pub fn entra(&self) -> Result<EntraClient, CliError> {
        let s = &self.settings;
        let client_id = s.client_id.as_deref().ok_or_else(|| {
            CliError::usage(
                "setting PATROL_CLIENT_ID: not set (the application id of the Entra app registration owners sign in to)",
            )
        })?;
        let http = crate::devops::http::build_client(s.ca_cert.as_deref(), Duration::from_secs(60))
            .map_err(|e| CliError::usage(format!("cannot build the HTTP client: {e}")))?;
        EntraClient::new(http, s.entra_authority.clone(), &s.tenant_id, client_id)
            .map_err(|e| CliError::usage(format!("invalid Entra settings: {e}")))
    }

    /// The Azure DevOps connector, authenticating each owner with their stored refresh token.
    pub fn connector(&self) -> Result<Arc<dyn Connector>, CliError> {
        let sessions =
            Sessions::new(Arc::new(self.entra()?), self.own.clone(), self.clock.clone(), SessionOptions::default());
        let connector = HttpConnector::from_settings(&self.settings, self.clock.clone(), Arc::new(sessions))
            .map_err(|e| CliError::usage(format!("cannot build the Azure DevOps client: {e}")))?;
        Ok(Arc::new(connector))
    }

    /// The rotation engine, under the leases and journal the settings name (shared with the Function App).
    pub fn engine(&self) -> Result<Engine, CliError> {
        let s = &self.settings;
        Ok(Engine {
            policy: self.policy.clone(),
            connector: self.connector()?,
            store: self.store.clone(),
            state: self.state.clone(),
            leases: self.leases.clone(),
            clock: self.clock.clone(),
            concurrency: s.max_concurrency,
            vaults: None,
            // Test hook only (PATROL_TEST_CRASH_AFTER), as in the handler: exits the process at a step boundary.
            faults: crate::rotation::machine::Faults::from_env().map(Arc::new),
            consumers: crate::consumers::writers::for_policy(
                &self.settings,
                &self.policy,
                self.own.clone(),
                self.store.clone(),
                self.state.clone(),
                self.clock.clone(),
            ),
        })
    }

    /// The notifier configured by the settings (SMTP, chat webhooks, mailbox file).
    pub async fn notifier(&self) -> Notifier {
        Notifier::from_settings(&self.settings, Some(self.own.as_ref()), Some(self.state.clone()), self.clock.clone())
            .await
    }
}

/// The settings from the environment with every problem at once: each invalid setting, then what the
/// environment makes unworkable ([`Settings::environment_errors`]); the same checks the handler runs at start.
pub fn checked_settings(needs_sign_in: bool) -> Result<Settings, CliError> {
    let src = crate::config::Source::from_env();
    let settings =
        Settings::from_source_all(&src).map_err(|e| CliError::usage(format!("invalid configuration: {e}")))?;
    // An invalid policy is named first (file:line:field): the checks below read it leniently.
    if settings.policy_file.is_file() {
        Policy::load(&settings.policy_file)?;
    }
    let errs: Vec<_> = settings
        .environment_errors(&src)
        .into_iter()
        .filter(|e| needs_sign_in || e.setting != "PATROL_CLIENT_ID")
        .collect();
    if !errs.is_empty() {
        return Err(CliError::usage(format!("invalid configuration: {}", crate::config::ConfigErrors(errs))));
    }
    for w in settings.trust_warnings() {
        tracing::warn!("{w}");
    }
    Ok(settings)
}
