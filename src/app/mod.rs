//! The composition root: the one place that turns [`Settings`] and the [`Policy`] into the running parts —
//! secret stores (patrol's own vault and the consumer vaults), the journal (state) store and the per-token
//! leases, the Entra client and owners' sessions, the Function App's own identity, the Azure DevOps
//! connector, the consumer writers, the rotation [`Engine`] and the [`Notifier`]. `patrol serve` (through
//! [`functions`]), every CLI command, the demo and the integration tests' worlds build
//! their parts here, so they all run the same thing and fail to start with the same [`StartupError`].
//!
//! Nothing reaches the network here: clients are built, not used. [`App::open`] opens the stores;
//! the clients are built when a command asks for them (`patrol status` never needs `PATROL_CLIENT_ID`).

mod error;
pub mod functions;
#[cfg(test)]
mod layers_tests;

pub use error::{SharedError, StartupError};

use crate::audit::AuditSettings;
use crate::auth::app::{AppToken, Routed};
use crate::auth::entra::EntraClient;
use crate::auth::session::{SessionOptions, Sessions};
use crate::clock::Clock;
use crate::config::{ConfigErrors, Settings, Source};
use crate::devops::Connector;
use crate::devops::connector::HttpConnector;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::rotation::engine::Engine;
use crate::rotation::lease::Leases;
use crate::rotation::policy::Policy;
use crate::state::StateStore;
use crate::store::SecretStore;
use std::sync::Arc;
use std::time::Duration;

/// How long an HTTP call to Entra or Azure DevOps may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings, policy and stores: the parts every command and the Function App share, without any network
/// client (those are built on demand by the methods).
pub struct App {
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
    /// Opened for a read-only command ([`App::open_read_only`]): nothing it builds writes anything — the
    /// owners' sessions keep a refresh token Entra rotates in memory instead of storing it.
    pub read_only: bool,
}

/// The metrics pipeline the settings ask for (`PATROL_OTLP_ENDPOINT`, Application Insights), or `None`:
/// the one place patrol builds it — `patrol serve`, the demo and every CLI command that runs something.
/// Nothing is started before the first batch (`metrics::export`).
pub fn metrics(settings: &Settings) -> Option<Arc<Metrics>> {
    Metrics::from_settings(&settings.metrics, settings.ca_cert.as_deref())
}

/// Exports a CLI run's points (`patrol rotate`, `patrol audit`, `patrol revoke`) with the run's own
/// `patrol.invocations` (function `cli`) and `faas.invoke_duration`, and waits for the export at most the
/// flush bound (`PATROL_METRICS_FLUSH_TIMEOUT_MS`) so that the process does not exit before it; nothing
/// happens without `metrics`.
pub async fn export_cli_run(
    metrics: Option<&Metrics>,
    mut points: Vec<crate::metrics::Point>,
    outcome: &'static str,
    started: std::time::Instant,
) {
    use crate::metrics::{INVOKE_DURATION, Point, attr, invocation_point};
    let Some(metrics) = metrics else { return };
    points.push(invocation_point("cli", "other", outcome));
    points.push(
        Point::new(&INVOKE_DURATION, started.elapsed().as_secs_f64())
            .with(attr::TRIGGER, "other")
            .with(attr::FUNCTION, "cli")
            .with(attr::OUTCOME, outcome),
    );
    metrics.record(points);
    metrics.flush().await;
}

/// What the Function App's three functions run on (built once per instance, on the first invocation).
pub struct Running {
    pub engine: Engine,
    pub notifier: Notifier,
    /// The Azure DevOps connector with the owners' sessions and the Function App's own identity (audit log
    /// readers and Token Admin live on it).
    pub connector: Arc<HttpConnector>,
    /// The policy's `[audit]` section, when it has one: the timer then also polls the audit log.
    pub audit: Option<AuditSettings>,
    /// patrol's own store (webhook consumers' signing keys, for acknowledgements).
    pub own: Arc<dyn SecretStore>,
}

impl App {
    /// Reads the settings from the environment (every invalid setting at once, as the handler does at
    /// start) and opens the stores.
    pub fn from_env() -> Result<Self, StartupError> {
        let (settings, policy) = checked_settings_and_policy(true)?;
        Self::open_with(settings, clock_and(policy))
    }

    /// Opens the policy and the stores the settings name.
    pub fn open(settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        Self::open_with(settings, (clock, None))
    }

    /// As [`App::open`], with the policy when the caller has already loaded it from `settings.policy_file`.
    fn open_with(settings: Settings, (clock, policy): (Clock, Option<Policy>)) -> Result<Self, StartupError> {
        let policy = match policy {
            Some(p) => p,
            None => Policy::load(&settings.policy_file)?,
        };
        // Key Vault when PATROL_KEYVAULT_URL is set (the file store is never opened then: the Function App's
        // root is read-only in Azure), otherwise the embedded file store. Refresh tokens and patrol's
        // credentials live in `own` (PATROL_OWN_KEYVAULT_URL), PATs in each token's consumer vault.
        let stores = crate::store::open(&settings, clock.clone(), Some(&policy.placement()))?;
        let (state, leases) = crate::rotation::shared::from_settings(&settings)?;
        Ok(Self {
            settings,
            clock,
            policy: Arc::new(policy),
            store: stores.consumer,
            own: stores.own,
            state,
            leases,
            read_only: false,
        })
    }

    /// As [`App::from_env`], for commands that only read (`plan`, `status`, `inventory`, `report`): they
    /// create nothing. Without Key Vault, a file store whose directory or key file does not exist is read
    /// as empty instead of being created (a missing store holds no secret, so nothing is lost). A missing
    /// `PATROL_CLIENT_ID` is not an error here (`patrol status` reports on sign-in instead of signing in);
    /// commands that reach Azure DevOps name it when they need it.
    pub fn from_env_read_only() -> Result<Self, StartupError> {
        let (settings, policy) = checked_settings_and_policy(false)?;
        Self::open_read_only_with(settings, clock_and(policy))
    }

    /// As [`App::open`], creating nothing and writing nothing (see [`App::from_env_read_only`]; the owners'
    /// sessions do not store the refresh tokens Entra rotates).
    pub fn open_read_only(settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        Self::open_read_only_with(settings, (clock, None))
    }

    fn open_read_only_with(settings: Settings, (clock, policy): (Clock, Option<Policy>)) -> Result<Self, StartupError> {
        let file_store_missing = settings.keyvault.is_none()
            && (!settings.state_dir.join("secrets").is_dir() || !settings.store_key_file.is_file());
        if !file_store_missing {
            return Ok(Self { read_only: true, ..Self::open_with(settings, (clock, policy))? });
        }
        let policy = match policy {
            Some(p) => p,
            None => Policy::load(&settings.policy_file)?,
        };
        let store: Arc<dyn SecretStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let (state, leases) = crate::rotation::shared::from_settings(&settings)?;
        Ok(Self {
            settings,
            clock,
            policy: Arc::new(policy),
            own: store.clone(),
            store,
            state,
            leases,
            read_only: true,
        })
    }

    /// The Entra client owners sign in with (`PATROL_CLIENT_ID` is needed from here on).
    pub fn entra(&self) -> Result<EntraClient, StartupError> {
        Ok(crate::auth::session::entra_from_settings(&self.settings, http_client(&self.settings)?)?)
    }

    /// The owners' sessions: each owner's refresh token in patrol's own store.
    pub fn sessions(&self) -> Result<Sessions, StartupError> {
        let options = SessionOptions { read_only: self.read_only, ..SessionOptions::default() };
        Ok(Sessions::new(Arc::new(self.entra()?), self.own.clone(), self.clock.clone(), options))
    }

    /// The Function App's own identity as an Azure DevOps caller (`None` without Key Vault).
    pub fn app_token(&self) -> Result<Option<AppToken>, StartupError> {
        AppToken::from_settings(&self.settings, http_client(&self.settings)?, self.clock.clone())
            .map_err(StartupError::AppIdentity)
    }

    /// The Azure DevOps connector, authenticating each owner with their stored refresh token.
    pub fn connector(&self) -> Result<Arc<dyn Connector>, StartupError> {
        let connector = HttpConnector::from_settings(&self.settings, self.clock.clone(), Arc::new(self.sessions()?))
            .map_err(StartupError::Connector)?;
        Ok(Arc::new(connector))
    }

    /// The Azure DevOps connector for owners and administrators (their sessions) and for the Function App's
    /// own identity (`app`: audit log, Token Admin).
    pub fn routed_connector(&self) -> Result<Arc<HttpConnector>, StartupError> {
        let tokens = Routed { sessions: Arc::new(self.sessions()?), app: self.app_token()?.map(Arc::new) };
        let connector = HttpConnector::from_settings(&self.settings, self.clock.clone(), Arc::new(tokens))
            .map_err(StartupError::Connector)?;
        Ok(Arc::new(connector))
    }

    /// The rotation engine over `connector`, under the leases and journal the settings name (shared with
    /// the Function App), with the consumer writers the policy needs.
    pub fn engine_on(&self, connector: Arc<dyn Connector>) -> Engine {
        Engine::new(self.policy.clone(), connector, self.store.clone(), self.state.clone(), self.clock.clone())
            .with_leases(self.leases.clone())
            .with_concurrency(self.settings.max_concurrency)
            // Test hook only (PATROL_TEST_CRASH_AFTER): exits the process at a step boundary.
            .with_faults(crate::rotation::machine::Faults::from_env().map(Arc::new))
            .with_consumers(crate::consumers::writers::for_policy(
                &self.settings,
                &self.policy,
                self.own.clone(),
                self.store.clone(),
                self.state.clone(),
                self.clock.clone(),
            ))
    }

    /// The rotation engine with the owners' connector ([`App::connector`]).
    pub fn engine(&self) -> Result<Engine, StartupError> {
        Ok(self.engine_on(self.connector()?))
    }

    /// The notifier configured by the settings (SMTP, chat webhooks, mailbox file).
    pub async fn notifier(&self) -> Notifier {
        Notifier::from_settings(&self.settings, Some(self.own.as_ref()), Some(self.state.clone()), self.clock.clone())
            .await
    }

    /// The metrics pipeline the settings ask for ([`metrics`]).
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        metrics(&self.settings)
    }

    /// The policy's `[audit]` section (validated with the policy), when it has one.
    pub fn audit(&self) -> Option<&AuditSettings> {
        self.policy.audit.as_ref()
    }

    /// What the Function App runs: the engine with the routed connector, acting only on the consumer
    /// vaults' events, the notifier and the `[audit]` settings.
    pub async fn running(&self) -> Result<Running, StartupError> {
        let connector = self.routed_connector()?;
        let engine = self.engine_on(connector.clone()).with_vaults(self.settings.managed_vault_names());
        Ok(Running {
            engine,
            notifier: self.notifier().await,
            connector,
            audit: self.audit().cloned(),
            own: self.own.clone(),
        })
    }
}

fn http_client(s: &Settings) -> Result<reqwest::Client, StartupError> {
    crate::devops::http::build_client(s.ca_cert.as_deref(), HTTP_TIMEOUT).map_err(StartupError::HttpClient)
}

/// The settings from the environment with every problem at once: each invalid setting, then what the
/// environment makes unworkable ([`Settings::environment_errors`]); the same checks the handler runs at
/// start. Without `needs_sign_in`, a missing `PATROL_CLIENT_ID` is not one of them.
pub fn checked_settings(needs_sign_in: bool) -> Result<Settings, StartupError> {
    Ok(checked_settings_and_policy(needs_sign_in)?.0)
}

/// The system clock, and the policy when it was loaded already.
fn clock_and(policy: Option<Policy>) -> (Clock, Option<Policy>) {
    (Clock::system(), policy)
}

/// As [`checked_settings`], with the policy it validated (`None` when the policy file does not exist), so
/// that a command parses it once (10,000 tokens take tens of milliseconds to parse and validate).
fn checked_settings_and_policy(needs_sign_in: bool) -> Result<(Settings, Option<Policy>), StartupError> {
    let src = Source::from_env();
    let settings = Settings::from_source_all(&src).map_err(StartupError::Settings)?;
    // An invalid policy is named first (file:line:field): the checks below read it leniently.
    let policy = if settings.policy_file.is_file() { Some(Policy::load(&settings.policy_file)?) } else { None };
    let errs: Vec<_> = settings
        .environment_errors(&src)
        .into_iter()
        .filter(|e| needs_sign_in || e.setting != "PATROL_CLIENT_ID")
        .collect();
    if !errs.is_empty() {
        return Err(StartupError::Settings(ConfigErrors(errs)));
    }
    for w in settings.trust_warnings() {
        tracing::warn!("{w}");
    }
    Ok((settings, policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
                          validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\
                          [[token]]\nsecret = \"tok-a\"\ndisplay_name = \"Token A\"\n";

    fn settings(dir: &std::path::Path, policy: &str, extra: &[(&str, &str)]) -> Settings {
        let file = dir.join("patrol.toml");
        std::fs::write(&file, policy).unwrap();
        let (file, state) = (file.display().to_string(), dir.join("state").display().to_string());
        let mut pairs = vec![("PATROL_POLICY_FILE", file.as_str()), ("PATROL_STATE_DIR", state.as_str())];
        pairs.extend_from_slice(extra);
        Settings::from_source(&Source::from_pairs(pairs)).unwrap()
    }

    #[tokio::test]
    async fn a_missing_client_id_is_named_once_the_same_way_for_every_caller() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(settings(dir.path(), POLICY, &[]), Clock::system()).unwrap();
        // Stores open without it (read-only commands need no sign-in) …
        assert_eq!(app.policy.tokens.len(), 1);
        // … every part that signs owners in names it.
        let errs = [
            app.entra().err().unwrap(),
            app.connector().err().unwrap(),
            app.routed_connector().err().unwrap(),
            app.engine().err().unwrap(),
            app.running().await.err().unwrap(),
        ];
        for e in errs {
            assert!(matches!(&e, StartupError::Setting(c) if c.setting == "PATROL_CLIENT_ID"), "{e:?}");
            assert!(e.to_string().starts_with("setting PATROL_CLIENT_ID: not set"), "{e}");
            assert!(e.is_configuration());
        }
    }

    #[tokio::test]
    async fn the_running_parts_follow_the_settings_and_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let with_audit = format!("{POLICY}[audit]\nallowed_cidrs = [\"10.0.0.0/8\"]\n");
        let s = settings(
            dir.path(),
            &with_audit,
            &[("PATROL_CLIENT_ID", "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c11"), ("PATROL_MAX_CONCURRENCY", "3")],
        );
        let app = App::open(s, Clock::system()).unwrap();
        let audit = app.audit().expect("[audit] is resolved with the policy");
        assert_eq!(audit.allowed_cidrs.len(), 1);
        let running = app.running().await.unwrap();
        assert_eq!(running.audit.as_ref(), Some(audit));
        assert_eq!(running.engine.concurrency, 3);
        assert_eq!(running.engine.vaults, None, "the embedded store: events from any vault");
        assert!(running.engine.consumers.is_none(), "no consumers in the policy");
        assert_eq!(app.engine().unwrap().concurrency, 3);

        let plain = tempfile::tempdir().unwrap();
        let app = App::open(settings(plain.path(), POLICY, &[]), Clock::system()).unwrap();
        assert!(app.audit().is_none(), "no [audit]: the timer does not poll the audit log");
    }

    #[test]
    fn an_invalid_policy_and_an_unusable_lease_setting_are_typed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = App::open(settings(dir.path(), "[[token]]\nsecret = 3\n", &[]), Clock::system()).err().unwrap();
        assert!(matches!(e, StartupError::Policy(_)), "{e:?}");
        assert!(e.to_string().starts_with("invalid policy: "), "{e}");
        // PATROL_LEASE=blob without a storage account (refused with the settings too; here as the root sees it).
        let mut s = settings(dir.path(), POLICY, &[]);
        (s.lease, s.host_storage) = (crate::config::LeaseMode::Blob, None);
        let e = App::open(s, Clock::system()).err().unwrap();
        assert!(matches!(e, StartupError::Shared(SharedError::BlobWithoutStorage)), "{e:?}");
        assert!(e.to_string().contains("AzureWebJobsStorage"), "{e}");
        assert!(!e.is_configuration(), "a store that cannot be opened is exit 1 in the CLI");
    }
}
