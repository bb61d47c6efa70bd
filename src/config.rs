//! patrol's one typed configuration, read from environment variables / Function App settings.
//!
//! Every setting is named `PATROL_…` (except the Functions host's own `AzureWebJobsStorage*`), listed once
//! in [`SETTINGS`] with its default and meaning — the README's settings table and
//! `local.settings.json.example` are checked against that list by the tests. An invalid value is refused
//! with a [`ConfigError`] naming the setting and what was wrong; secrets (SMTP password, webhook URLs,
//! client secrets) are held as [`SecretString`] and never printed.

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub description: &'static str,
}

/// Every setting patrol reads. Keep in sync with [`Settings::from_source`]; a test enforces that the README
/// and `local.settings.json.example` name each of them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        name: "PATROL_POLICY_FILE",
        default: "patrol.toml",
        description: "Path of the policy file that declares the managed tokens (relative paths resolve against the Function App root).",
    },
    SettingDoc {
        name: "PATROL_STATE_DIR",
        default: "$XDG_DATA_HOME/patrol/data (else ~/.local/share/patrol/data)",
        description: "Directory for local state when no Azure storage is configured: the embedded secret store, the rotation journal, notification state, audit checkpoints. Never the working directory: every `patrol` command run by a user sees the same state. With AzureWebJobsStorage set, the journal is the Function App's (blob) instead.",
    },
    SettingDoc {
        name: "PATROL_STORE_KEY_FILE",
        default: "$PATROL_STATE_DIR/../.patrol-store.key",
        description: "Encryption key of the embedded file secret store, kept apart from the data (created 0600 on first use).",
    },
    SettingDoc {
        name: "PATROL_DEVOPS_URL",
        default: "https://vssps.dev.azure.com",
        description: "Base URL of the Azure DevOps PAT Lifecycle and Token Admin APIs (point it at patrol-emulator to test).",
    },
    SettingDoc {
        name: "PATROL_DEVOPS_API_VERSION",
        default: "auto",
        description: "api-version of the PAT Lifecycle API: auto (7.2-preview.1, falling back to 7.1-preview.1 when the service refuses 7.2), 7.2-preview.1 or 7.1-preview.1.",
    },
    SettingDoc {
        name: "PATROL_AUDIT_URL",
        default: "https://auditservice.dev.azure.com",
        description: "Base URL of the Azure DevOps audit log API.",
    },
    SettingDoc {
        name: "PATROL_ENTRA_AUTHORITY",
        default: "https://login.microsoftonline.com",
        description: "Microsoft Entra authority host used for owner sign-in (device code) and refresh.",
    },
    SettingDoc {
        name: "PATROL_TENANT_ID",
        default: "organizations",
        description: "Entra tenant id or domain the PAT owners sign in to.",
    },
    SettingDoc {
        name: "PATROL_CLIENT_ID",
        default: "(none)",
        description: "Application (client) id of the Entra app registration owners sign in to, with delegated vso.pats and vso.pats_manage.",
    },
    SettingDoc {
        name: "PATROL_AUDIT_READER",
        default: "app when PATROL_KEYVAULT_URL is set",
        description: "Who reads the audit log: app (the Function App's own identity, added to the organization with View audit log) or the UPN of an administrator signed in with patrol login --admin.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_URL",
        default: "(none: embedded file store)",
        description: "The (default) consumer Key Vault, where rotated PATs go, e.g. https://myvault.vault.azure.net/. Without it patrol uses the embedded encrypted file store.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_NAME",
        default: "(the first label of PATROL_KEYVAULT_URL's host)",
        description: "Name of the consumer vault as Key Vault events report it (VaultName); only needed when the URL's host does not start with it (patrol-emulator).",
    },
    SettingDoc {
        name: "PATROL_CONSUMER_KEYVAULTS",
        default: "(none)",
        description: "Further consumer vaults a [[token]] may name with vault = \"<name>\": comma-separated name=https://url/ pairs. Events from every consumer vault are accepted.",
    },
    SettingDoc {
        name: "PATROL_OWN_KEYVAULT_URL",
        default: "(none: refresh tokens share the consumer vault, with a warning)",
        description: "patrol's own Key Vault, closed to consumers: owners' refresh tokens and patrol's credentials (SMTP password secret). Move existing refresh tokens with patrol migrate-refresh-tokens.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_CREDENTIAL",
        default: "managed-identity",
        description: "How patrol authenticates to Key Vault: managed-identity, developer-tools (az / azd), or client-secret.",
    },
    SettingDoc {
        name: "PATROL_MANAGED_IDENTITY_CLIENT_ID",
        default: "(none: system-assigned)",
        description: "Client id of a user-assigned managed identity for Key Vault.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_TENANT_ID",
        default: "(none)",
        description: "Tenant for the client-secret Key Vault credential.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_CLIENT_ID",
        default: "(none)",
        description: "Client id for the client-secret Key Vault credential.",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_CLIENT_SECRET",
        default: "(none)",
        description: "Client secret for the client-secret Key Vault credential (secret; never logged).",
    },
    SettingDoc {
        name: "PATROL_KEYVAULT_RECOVER_DELETED",
        default: "false",
        description: "When a managed secret is soft-deleted, recover it instead of failing with ObjectIsDeletedButRecoverable.",
    },
    SettingDoc {
        name: "PATROL_CONSUMER_CREDENTIAL",
        default: "managed-identity with Key Vault, else (none)",
        description: "The Function App's own Entra identity that writes Azure DevOps consumers (service connections, variable groups) for resource 499b84ac-1321-427f-aa17-267ca6975798: managed-identity, developer-tools, client-secret, or none.",
    },
    SettingDoc {
        name: "PATROL_CONSUMER_TENANT_ID",
        default: "PATROL_KEYVAULT_TENANT_ID",
        description: "Tenant for the client-secret consumer credential.",
    },
    SettingDoc {
        name: "PATROL_CONSUMER_CLIENT_ID",
        default: "PATROL_KEYVAULT_CLIENT_ID",
        description: "Client id for the client-secret consumer credential.",
    },
    SettingDoc {
        name: "PATROL_CONSUMER_CLIENT_SECRET",
        default: "PATROL_KEYVAULT_CLIENT_SECRET",
        description: "Client secret for the client-secret consumer credential (secret; never logged).",
    },
    SettingDoc {
        name: "PATROL_CA_CERT",
        default: "(none)",
        description: "Extra PEM CA certificate to trust (patrol-emulator's generated CA). Never needed in Azure.",
    },
    SettingDoc {
        name: "PATROL_SCHEDULE",
        default: "0 0 3 * * *",
        description: "NCRONTAB (6 fields, UTC) of RotateTimer, read by the Functions host from function.json.",
    },
    SettingDoc {
        name: "PATROL_LEASE",
        default: "auto",
        description: "Per-token lease: auto (blob lease in AzureWebJobsStorage when set, else in-process), blob, or local.",
    },
    SettingDoc { name: "PATROL_MAX_CONCURRENCY", default: "8", description: "How many tokens are rotated at once." },
    SettingDoc {
        name: "PATROL_INVOCATION_BUDGET_SECONDS",
        default: "480",
        description: "Time budget of one RotateTimer / RotateHttp invocation; work left over is picked up by the next run.",
    },
    SettingDoc {
        name: "PATROL_EVENT_BUDGET_SECONDS",
        default: "20",
        description: "Time budget of one EventGridSecretChanged invocation (Event Grid gives up after 30 s).",
    },
    SettingDoc {
        name: "PATROL_MAX_BODY_BYTES",
        default: "1048576",
        description: "Largest invocation body the handler accepts; larger ones get 413.",
    },
    SettingDoc { name: "PATROL_LOG", default: "info", description: "Log filter (tracing EnvFilter syntax)." },
    SettingDoc {
        name: "PATROL_LOG_FORMAT",
        default: "json",
        description: "Log format on stdout: json (for Application Insights) or text.",
    },
    SettingDoc {
        name: "PATROL_OTLP_ENDPOINT",
        default: "(none: no OTLP export)",
        description: "Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g. http://127.0.0.1:4318); metrics go to <url>/v1/metrics as protobuf. See docs/metrics.md.",
    },
    SettingDoc {
        name: "APPLICATIONINSIGHTS_CONNECTION_STRING",
        default: "(set by the Function App)",
        description: "Application Insights connection string; when set, metrics are also exported there (customMetrics). Never logged.",
    },
    SettingDoc {
        name: "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        default: "(none: instrumentation key)",
        description: "Authorization=AAD: metrics to Application Insights carry an Entra token of the Function App's identity (local auth off). Set by the template.",
    },
    SettingDoc {
        name: "PATROL_METRICS_FLUSH_TIMEOUT_MS",
        default: "2000",
        description: "Longest a RotateTimer invocation (before answering), a CLI run (before exiting) and patrol serve (at shutdown) wait for pending metrics to be exported; other invocations never wait (exported in the background within ~100 ms).",
    },
    SettingDoc {
        name: "PATROL_METRICS_QUEUE",
        default: "64",
        description: "Runs' metric batches waiting for the exporter; when full, a batch is dropped and counted (patrol.metrics.dropped).",
    },
    SettingDoc {
        name: "PATROL_METRICS_OWNER_LABEL",
        default: "hash",
        description: "How owners appear in metric labels: hash (first 16 hex of SHA-256 of the lower-case UPN), upn, or none.",
    },
    SettingDoc {
        name: "PATROL_SMTP_HOST",
        default: "(none: email off)",
        description: "SMTP server for email notifications.",
    },
    SettingDoc {
        name: "PATROL_SMTP_PORT",
        default: "587 (starttls), 465 (implicit), 25 (none)",
        description: "SMTP port.",
    },
    SettingDoc {
        name: "PATROL_SMTP_TLS",
        default: "starttls",
        description: "SMTP transport security: starttls, implicit or none (none only for loopback test servers).",
    },
    SettingDoc { name: "PATROL_SMTP_USERNAME", default: "(none)", description: "SMTP user name." },
    SettingDoc {
        name: "PATROL_SMTP_PASSWORD",
        default: "(none)",
        description: "SMTP password (secret; never logged). Alternatively PATROL_SMTP_PASSWORD_SECRET.",
    },
    SettingDoc {
        name: "PATROL_SMTP_PASSWORD_SECRET",
        default: "(none)",
        description: "Name of a secret in the secret store holding the SMTP password.",
    },
    SettingDoc {
        name: "PATROL_SMTP_FROM",
        default: "patrol@localhost",
        description: "Sender address of notification emails.",
    },
    SettingDoc {
        name: "PATROL_TEAMS_WEBHOOK_URL",
        default: "(none)",
        description: "Microsoft Teams Workflows webhook URL (Adaptive Card); secret.",
    },
    SettingDoc {
        name: "PATROL_SLACK_WEBHOOK_URL",
        default: "(none)",
        description: "Slack incoming webhook URL; secret.",
    },
    SettingDoc { name: "PATROL_WEBHOOK_URL", default: "(none)", description: "Generic JSON webhook URL; secret." },
    SettingDoc {
        name: "PATROL_MAILBOX_FILE",
        default: "(none)",
        description: "Append notifications to this local mailbox file (mbox) instead of or besides SMTP; used by patrol demo.",
    },
    SettingDoc {
        name: "PATROL_REPORT_RECIPIENTS",
        default: "(none)",
        description: "Comma-separated notification targets for the weekly report (e.g. email:sec@contoso.com,teams).",
    },
];

/// Why configuration was refused: the setting and what was wrong (the value only when it is not secret).
#[derive(Debug, thiserror::Error)]
#[error("setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: &str, problem: impl Into<String>) -> Self {
        Self { setting: setting.to_owned(), problem: problem.into() }
    }
}

/// Where values come from: the process environment, or a map in tests.
#[derive(Debug, Clone, Default)]
pub struct Source(BTreeMap<String, String>);

impl Source {
    pub fn from_env() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    /// This source with `name` set to `value`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A set, non-blank value (blank app settings count as unset, as in the Azure portal).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn url(&self, name: &str, default: &str) -> Result<Url, ConfigError> {
        let raw = self.get(name).unwrap_or(default);
        parse_url(name, raw)
    }

    fn opt_url(&self, name: &str) -> Result<Option<Url>, ConfigError> {
        self.get(name).map(|raw| parse_url(name, raw)).transpose()
    }

    fn number<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let v: T = raw.parse().map_err(|_| ConfigError::new(name, format!("{raw:?} is not a whole number")))?;
        if v < min || v > max {
            return Err(ConfigError::new(name, format!("{v} is outside {min}..={max}")));
        }
        Ok(v)
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::new(name, format!("{other:?} is not true or false"))),
        }
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.get(name).map(|v| SecretString::from(v.to_owned()))
    }

    fn choice<T: Copy>(&self, name: &str, default: T, options: &[(&str, T)]) -> Result<T, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let lower = raw.to_ascii_lowercase();
        options.iter().find(|(k, _)| *k == lower).map(|(_, v)| *v).ok_or_else(|| {
            let allowed: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
            ConfigError::new(name, format!("{raw:?} is not one of {}", allowed.join(", ")))
        })
    }
}

fn parse_url(name: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::new(name, format!("{raw:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(name, format!("{raw:?} must be an http or https URL")));
    }
    Ok(url)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyVaultCredential {
    ManagedIdentity,
    DeveloperTools,
    ClientSecret,
}

/// The Function App's own Entra identity for Azure DevOps consumer writes (`PATROL_CONSUMER_*`).
#[derive(Debug, Clone)]
pub struct ConsumerIdentity {
    pub credential: KeyVaultCredential,
    pub managed_identity_client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseMode {
    Auto,
    Blob,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    Starttls,
    Implicit,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Json,
    Text,
}

/// Key Vault settings; absent means the embedded file store.
#[derive(Debug, Clone)]
pub struct KeyVaultSettings {
    pub url: Url,
    pub credential: KeyVaultCredential,
    pub managed_identity_client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub recover_deleted: bool,
}

/// The Function App's own storage (`AzureWebJobsStorage`), used for per-token blob leases and the journal.
#[derive(Debug, Clone)]
pub enum HostStorage {
    /// A connection string (`UseDevelopmentStorage=true` for Azurite, or `AccountName=…;AccountKey=…`).
    ConnectionString(SecretString),
    /// Identity-based: `AzureWebJobsStorage__accountName` or `__blobServiceUri`.
    Identity { blob_service_uri: Url, client_id: Option<String> },
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub password_secret: Option<String>,
    pub from: String,
}

#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    pub smtp: Option<SmtpSettings>,
    pub teams_webhook_url: Option<SecretString>,
    pub slack_webhook_url: Option<SecretString>,
    pub webhook_url: Option<SecretString>,
    pub mailbox_file: Option<PathBuf>,
    pub report_recipients: Vec<String>,
}

/// patrol's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy_file: PathBuf,
    pub state_dir: PathBuf,
    pub store_key_file: PathBuf,
    pub devops_url: Url,
    pub devops_api_version: ApiVersion,
    pub audit_url: Url,
    pub entra_authority: Url,
    pub tenant_id: String,
    pub client_id: Option<String>,
    /// `PATROL_AUDIT_READER`: who reads the audit log (`app` or an administrator's UPN); `None`: nobody.
    pub audit_reader: Option<crate::domain::OwnerId>,
    /// The default consumer vault (`PATROL_KEYVAULT_URL`): rotated PATs.
    pub keyvault: Option<KeyVaultSettings>,
    /// patrol's own vault (`PATROL_OWN_KEYVAULT_URL`): refresh tokens, patrol's credentials.
    pub own_keyvault: Option<KeyVaultSettings>,
    /// Every consumer vault, the default first, by the name events report.
    pub consumer_vaults: Vec<NamedVault>,
    /// The identity that writes Azure DevOps consumers (`None`: not configured).
    pub consumer_identity: Option<ConsumerIdentity>,
    pub ca_cert: Option<PathBuf>,
    pub schedule: String,
    pub lease: LeaseMode,
    pub host_storage: Option<HostStorage>,
    pub max_concurrency: usize,
    pub invocation_budget: Duration,
    pub event_budget: Duration,
    pub max_body_bytes: usize,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub notify: NotifySettings,
    /// Metrics export (`PATROL_OTLP_ENDPOINT`, Application Insights); see the `metrics` module.
    pub metrics: MetricsSettings,
}

pub use crate::metrics::settings::{AadAuth, MetricsSettings, OwnerLabel};

impl MetricsSettings {
    /// Whether any exporter is configured.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some() || self.appinsights.is_some()
    }

    fn from_source(src: &Source, errs: &mut Errs) -> Self {
        let appinsights_aad = match src.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") {
            None => None,
            Some(raw) => errs.or(parse_aad(raw).map(Some), None),
        };
        Self {
            otlp_endpoint: errs.or(src.opt_url("PATROL_OTLP_ENDPOINT"), None),
            appinsights: src.secret("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            appinsights_aad,
            flush_timeout: Duration::from_millis(
                errs.or(src.number("PATROL_METRICS_FLUSH_TIMEOUT_MS", 2000u64, 10, 60_000), 2000),
            ),
            queue: errs.or(src.number("PATROL_METRICS_QUEUE", 64usize, 1, 100_000), 64),
            owner_label: errs.or(
                src.choice(
                    "PATROL_METRICS_OWNER_LABEL",
                    OwnerLabel::Hash,
                    &[("hash", OwnerLabel::Hash), ("upn", OwnerLabel::Upn), ("none", OwnerLabel::None)],
                ),
                OwnerLabel::Hash,
            ),
        }
    }
}

/// `Authorization=AAD[;ClientId=<guid>]`, as the Application Insights SDKs read it.
fn parse_aad(raw: &str) -> Result<AadAuth, ConfigError> {
    const NAME: &str = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING";
    let mut aad = false;
    let mut client_id = None;
    for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "authorization" if v.trim().eq_ignore_ascii_case("aad") => aad = true,
            "clientid" if !v.trim().is_empty() => client_id = Some(v.trim().to_owned()),
            _ => {
                return Err(ConfigError::new(
                    NAME,
                    format!("{part:?} is not understood; expected Authorization=AAD[;ClientId=<client id>]"),
                ));
            }
        }
    }
    if !aad {
        return Err(ConfigError::new(NAME, "expected Authorization=AAD[;ClientId=<client id>]"));
    }
    Ok(AadAuth { client_id })
}

/// Every error of a configuration at once (see [`Settings::from_source_all`]).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors, handing back a stand-in value so parsing goes on and every error is reported.
#[derive(Default)]
struct Errs(Vec<ConfigError>);

impl Errs {
    fn or<T>(&mut self, r: Result<T, ConfigError>, stand_in: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            stand_in
        })
    }

    fn push(&mut self, setting: &str, problem: impl Into<String>) {
        self.0.push(ConfigError::new(setting, problem));
    }
}

/// A URL no setting ever holds, standing in for one that was refused.
fn stand_in_url() -> Url {
    Url::parse("https://invalid.invalid/").unwrap_or_else(|_| unreachable!("a constant URL parses"))
}

/// Whether `host` names this machine: `localhost`, `*.localhost`, or a loopback address (IPv6 with or
/// without brackets). patrol allows plain http, SMTP without TLS and its own token grant only there.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// [`is_loopback_host`] for a URL's host (a URL without a host is not loopback).
pub fn is_loopback_url(url: &Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// Key Vault names: 3–24 of `[0-9a-zA-Z-]`, starting with a letter.
fn is_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

/// The vault name in `https://<name>.vault.azure.net/`, as Key Vault events report it.
fn vault_name_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let first = host.split('.').next()?.to_ascii_lowercase();
    (host.contains('.') && is_vault_name(&first) && host.parse::<std::net::IpAddr>().is_err()).then_some(first)
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::from_env())
    }

    /// As [`Settings::from_source`], with every invalid setting reported (what the handler and the CLI use).
    pub fn from_env_all() -> Result<Self, ConfigErrors> {
        Self::from_source_all(&Source::from_env())
    }

    /// The settings, or the first problem found (see [`Settings::from_source_all`] for all of them).
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        Self::from_source_all(src).map_err(|mut e| e.0.remove(0))
    }

    /// The settings, or every problem found — each naming its setting. Beyond each value's syntax this
    /// refuses settings that cannot work or would fail open: a client id that is not a GUID, a webhook over
    /// plain http to a remote host, SMTP without TLS to a remote host, an invalid log filter, one vault
    /// configured twice.
    pub fn from_source_all(src: &Source) -> Result<Self, ConfigErrors> {
        let mut errs = Errs::default();
        let app_root = src.get("FUNCTIONS_APP_ROOT_PATH").map(PathBuf::from);
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            match (&app_root, p.is_relative()) {
                (Some(root), true) => root.join(p),
                _ => p,
            }
        };
        let policy_file = resolve(src.get("PATROL_POLICY_FILE").unwrap_or("patrol.toml"));
        // Never relative to the working directory by default: every command of one user shares one state.
        let state_dir = match src.get("PATROL_STATE_DIR") {
            Some(d) => PathBuf::from(d),
            None => default_state_dir(src).unwrap_or_default(),
        };
        let store_key_file = match src.get("PATROL_STORE_KEY_FILE") {
            Some(p) => PathBuf::from(p),
            None => {
                let parent = state_dir.parent().filter(|p| !p.as_os_str().is_empty());
                parent.map(|p| p.join(".patrol-store.key")).unwrap_or_else(|| PathBuf::from(".patrol-store.key"))
            }
        };

        // Every vault shares one credential (the Function App's identity).
        let credential = errs.or(
            src.choice(
                "PATROL_KEYVAULT_CREDENTIAL",
                KeyVaultCredential::ManagedIdentity,
                &[
                    ("managed-identity", KeyVaultCredential::ManagedIdentity),
                    ("developer-tools", KeyVaultCredential::DeveloperTools),
                    ("client-secret", KeyVaultCredential::ClientSecret),
                ],
            ),
            KeyVaultCredential::ManagedIdentity,
        );
        let recover_deleted = errs.or(src.boolean("PATROL_KEYVAULT_RECOVER_DELETED", false), false);
        let vault_at = |url: Url| KeyVaultSettings {
            url,
            credential,
            managed_identity_client_id: src.get("PATROL_MANAGED_IDENTITY_CLIENT_ID").map(str::to_owned),
            tenant_id: src.get("PATROL_KEYVAULT_TENANT_ID").map(str::to_owned),
            client_id: src.get("PATROL_KEYVAULT_CLIENT_ID").map(str::to_owned),
            client_secret: src.secret("PATROL_KEYVAULT_CLIENT_SECRET"),
            recover_deleted,
        };
        let https_vault = |errs: &mut Errs, name: &str, raw: &str| -> Option<Url> {
            match parse_url(name, raw) {
                Err(e) => {
                    errs.0.push(e);
                    None
                }
                Ok(u) if u.scheme() != "https" => {
                    errs.push(name, "must be https (the Key Vault SDK refuses plain HTTP)");
                    None
                }
                Ok(u) => Some(u),
            }
        };
        let keyvault =
            src.get("PATROL_KEYVAULT_URL").and_then(|raw| https_vault(&mut errs, "PATROL_KEYVAULT_URL", raw));
        let own_keyvault =
            src.get("PATROL_OWN_KEYVAULT_URL").and_then(|raw| https_vault(&mut errs, "PATROL_OWN_KEYVAULT_URL", raw));
        let mut consumer_vaults = Vec::new();
        if let Some(url) = &keyvault {
            let name = match src.get("PATROL_KEYVAULT_NAME") {
                Some(n) if is_vault_name(n) => Some(n.to_ascii_lowercase()),
                Some(n) => {
                    errs.push(
                        "PATROL_KEYVAULT_NAME",
                        format!("{n:?} is not a Key Vault name (3-24 letters, digits, '-')"),
                    );
                    None
                }
                // As Key Vault names it (`<name>.vault.azure.net`), else the host's first label (loopback
                // emulators: set PATROL_KEYVAULT_NAME to the emulated vault's name).
                None => vault_name_of(url)
                    .or_else(|| url.host_str().and_then(|h| h.split('.').next()).map(str::to_ascii_lowercase)),
            };
            if let Some(name) = name {
                consumer_vaults.push(NamedVault { name, keyvault: vault_at(url.clone()) });
            }
        }
        if let Some(list) = src.get("PATROL_CONSUMER_KEYVAULTS") {
            const S: &str = "PATROL_CONSUMER_KEYVAULTS";
            if keyvault.is_none() {
                errs.push(S, "needs PATROL_KEYVAULT_URL (the default consumer vault) as well");
            }
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((name, raw)) = part.split_once('=') else {
                    errs.push(S, format!("{part:?} is not name=https://url/"));
                    continue;
                };
                let name = name.trim().to_ascii_lowercase();
                if !is_vault_name(&name) {
                    errs.push(S, format!("{name:?} is not a Key Vault name (3-24 letters, digits, '-')"));
                    continue;
                }
                if consumer_vaults.iter().any(|v: &NamedVault| v.name == name) {
                    errs.push(S, format!("vault {name:?} is named twice"));
                    continue;
                }
                if let Some(url) = https_vault(&mut errs, S, raw.trim()) {
                    consumer_vaults.push(NamedVault { name, keyvault: vault_at(url) });
                }
            }
        }
        if let Some(own) = &own_keyvault {
            if keyvault.is_none() {
                errs.push(
                    "PATROL_OWN_KEYVAULT_URL",
                    "needs PATROL_KEYVAULT_URL as well (patrol's own vault holds refresh tokens; PATs go to the consumer vault)",
                );
            }
            if let Some(v) = consumer_vaults.iter().find(|v| same_vault(&v.keyvault.url, own)) {
                errs.push(
                    "PATROL_OWN_KEYVAULT_URL",
                    format!("is the consumer vault {:?}: patrol's own vault must be a different vault", v.name),
                );
            }
        }
        if (keyvault.is_some() || own_keyvault.is_some()) && credential == KeyVaultCredential::ClientSecret {
            for name in ["PATROL_KEYVAULT_TENANT_ID", "PATROL_KEYVAULT_CLIENT_ID", "PATROL_KEYVAULT_CLIENT_SECRET"] {
                if src.get(name).is_none() {
                    errs.push(name, "is required when PATROL_KEYVAULT_CREDENTIAL=client-secret");
                }
            }
        }

        let consumer_identity = {
            let default = if keyvault.is_some() { "managed-identity" } else { "none" };
            let choice = src.get("PATROL_CONSUMER_CREDENTIAL").unwrap_or(default);
            let credential = match choice {
                "none" => None,
                "managed-identity" => Some(KeyVaultCredential::ManagedIdentity),
                "developer-tools" => Some(KeyVaultCredential::DeveloperTools),
                "client-secret" => Some(KeyVaultCredential::ClientSecret),
                other => {
                    errs.push(
                        "PATROL_CONSUMER_CREDENTIAL",
                        format!("{other:?} must be managed-identity, developer-tools, client-secret or none"),
                    );
                    None
                }
            };
            match credential {
                None => None,
                Some(credential) => {
                    // Unless set on their own, the Key Vault credential's (the Function App's identity).
                    let pick = |own: &str, kv: &str| src.get(own).or_else(|| src.get(kv)).map(str::to_owned);
                    let id = ConsumerIdentity {
                        credential,
                        managed_identity_client_id: src.get("PATROL_MANAGED_IDENTITY_CLIENT_ID").map(str::to_owned),
                        tenant_id: pick("PATROL_CONSUMER_TENANT_ID", "PATROL_KEYVAULT_TENANT_ID"),
                        client_id: pick("PATROL_CONSUMER_CLIENT_ID", "PATROL_KEYVAULT_CLIENT_ID"),
                        client_secret: src
                            .secret("PATROL_CONSUMER_CLIENT_SECRET")
                            .or_else(|| src.secret("PATROL_KEYVAULT_CLIENT_SECRET")),
                    };
                    if credential == KeyVaultCredential::ClientSecret {
                        for (name, present) in [
                            ("PATROL_CONSUMER_TENANT_ID", id.tenant_id.is_some()),
                            ("PATROL_CONSUMER_CLIENT_ID", id.client_id.is_some()),
                            ("PATROL_CONSUMER_CLIENT_SECRET", id.client_secret.is_some()),
                        ] {
                            if !present {
                                errs.push(name, "is required when PATROL_CONSUMER_CREDENTIAL=client-secret");
                            }
                        }
                    }
                    Some(id)
                }
            }
        };

        let ca_cert = src.get("PATROL_CA_CERT").map(PathBuf::from);
        if let Some(p) = ca_cert.as_ref().filter(|p| !p.is_file()) {
            errs.push("PATROL_CA_CERT", format!("{} is not a readable file", p.display()));
        }

        let host_storage = if let Some(cs) = src.get("AzureWebJobsStorage") {
            Some(HostStorage::ConnectionString(SecretString::from(cs.to_owned())))
        } else if let Some(uri) = errs.or(src.opt_url("AzureWebJobsStorage__blobServiceUri"), None) {
            Some(HostStorage::Identity {
                blob_service_uri: uri,
                client_id: src.get("AzureWebJobsStorage__clientId").map(str::to_owned),
            })
        } else if let Some(account) = src.get("AzureWebJobsStorage__accountName") {
            let uri = errs.or(
                parse_url("AzureWebJobsStorage__accountName", &format!("https://{account}.blob.core.windows.net")),
                stand_in_url(),
            );
            Some(HostStorage::Identity {
                blob_service_uri: uri,
                client_id: src.get("AzureWebJobsStorage__clientId").map(str::to_owned),
            })
        } else {
            None
        };
        let lease = errs.or(
            src.choice(
                "PATROL_LEASE",
                LeaseMode::Auto,
                &[("auto", LeaseMode::Auto), ("blob", LeaseMode::Blob), ("local", LeaseMode::Local)],
            ),
            LeaseMode::Auto,
        );
        if lease == LeaseMode::Blob && host_storage.is_none() {
            errs.push(
                "PATROL_LEASE",
                "is blob but neither AzureWebJobsStorage nor AzureWebJobsStorage__accountName is set",
            );
        }

        let schedule = src.get("PATROL_SCHEDULE").unwrap_or("0 0 3 * * *").to_owned();
        if schedule.split_whitespace().count() != 6 {
            errs.push(
                "PATROL_SCHEDULE",
                format!(
                    "{schedule:?} must be an NCRONTAB expression with 6 fields (second minute hour day month weekday)"
                ),
            );
        }

        let smtp = match src.get("PATROL_SMTP_HOST") {
            None => None,
            Some(host) => {
                let tls = errs.or(
                    src.choice(
                        "PATROL_SMTP_TLS",
                        SmtpTls::Starttls,
                        &[("starttls", SmtpTls::Starttls), ("implicit", SmtpTls::Implicit), ("none", SmtpTls::None)],
                    ),
                    SmtpTls::Starttls,
                );
                if tls == SmtpTls::None && !is_loopback_host(host) {
                    errs.push(
                        "PATROL_SMTP_TLS",
                        format!(
                            "is none but PATROL_SMTP_HOST {host:?} is not a loopback address: mail and the SMTP password would cross the network in clear text"
                        ),
                    );
                }
                let default_port = match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Implicit => 465,
                    SmtpTls::None => 25,
                };
                Some(SmtpSettings {
                    host: host.to_owned(),
                    port: errs.or(src.number("PATROL_SMTP_PORT", default_port, 1, u16::MAX), default_port),
                    tls,
                    username: src.get("PATROL_SMTP_USERNAME").map(str::to_owned),
                    password: src.secret("PATROL_SMTP_PASSWORD"),
                    password_secret: src.get("PATROL_SMTP_PASSWORD_SECRET").map(str::to_owned),
                    from: src.get("PATROL_SMTP_FROM").unwrap_or("patrol@localhost").to_owned(),
                })
            }
        };
        let mut webhook = |name: &str| -> Option<SecretString> {
            // Validate without echoing the value: webhook URLs embed credentials.
            let raw = src.get(name)?;
            match Url::parse(raw) {
                Ok(u) if u.scheme() == "https" => Some(SecretString::from(raw.to_owned())),
                Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(is_loopback_host) => {
                    Some(SecretString::from(raw.to_owned()))
                }
                Ok(u) if u.scheme() == "http" => {
                    errs.push(
                        name,
                        "is a plain http URL to a remote host; use https (http is accepted only on loopback) (value not shown: it is a secret)",
                    );
                    None
                }
                _ => {
                    errs.push(name, "is not an http(s) URL (value not shown: it is a secret)");
                    None
                }
            }
        };
        let teams_webhook_url = webhook("PATROL_TEAMS_WEBHOOK_URL");
        let slack_webhook_url = webhook("PATROL_SLACK_WEBHOOK_URL");
        let webhook_url = webhook("PATROL_WEBHOOK_URL");
        let notify = NotifySettings {
            smtp,
            teams_webhook_url,
            slack_webhook_url,
            webhook_url,
            mailbox_file: src.get("PATROL_MAILBOX_FILE").map(PathBuf::from),
            report_recipients: src
                .get("PATROL_REPORT_RECIPIENTS")
                .map(|s| s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect())
                .unwrap_or_default(),
        };

        let client_id = src.get("PATROL_CLIENT_ID").map(str::to_owned);
        if let Some(id) = client_id.as_deref().filter(|id| uuid::Uuid::try_parse(id).is_err()) {
            errs.push(
                "PATROL_CLIENT_ID",
                format!("{id:?} is not a GUID (the Application (client) ID of the Entra app registration)"),
            );
        }
        let log_filter = src.get("PATROL_LOG").unwrap_or("info").to_owned();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            errs.push("PATROL_LOG", format!("{log_filter:?} is not a valid log filter: {e}"));
        }

        let settings = Self {
            policy_file,
            state_dir,
            store_key_file,
            devops_url: errs.or(src.url("PATROL_DEVOPS_URL", "https://vssps.dev.azure.com"), stand_in_url()),
            devops_api_version: errs.or(
                src.choice(
                    "PATROL_DEVOPS_API_VERSION",
                    ApiVersion::Auto,
                    &[
                        ("auto", ApiVersion::Auto),
                        ("7.2-preview.1", ApiVersion::V72),
                        ("7.1-preview.1", ApiVersion::V71),
                    ],
                ),
                ApiVersion::Auto,
            ),
            audit_url: errs.or(src.url("PATROL_AUDIT_URL", "https://auditservice.dev.azure.com"), stand_in_url()),
            entra_authority: errs
                .or(src.url("PATROL_ENTRA_AUTHORITY", "https://login.microsoftonline.com"), stand_in_url()),
            tenant_id: src.get("PATROL_TENANT_ID").unwrap_or("organizations").to_owned(),
            client_id,
            audit_reader: match src.get("PATROL_AUDIT_READER").map(str::trim).filter(|v| !v.is_empty()) {
                Some(v) => errs.or(
                    crate::domain::parse_identity(v).map(Some).map_err(|e| {
                        ConfigError::new("PATROL_AUDIT_READER", format!("{e}; expected app or an administrator's UPN"))
                    }),
                    None,
                ),
                // The Function App's own identity exists when Key Vault is configured (its credential).
                None => keyvault.is_some().then(crate::domain::app_identity),
            },
            keyvault: keyvault.map(vault_at),
            own_keyvault: own_keyvault.map(vault_at),
            consumer_vaults,
            consumer_identity,
            ca_cert,
            schedule,
            lease,
            host_storage,
            max_concurrency: errs.or(src.number("PATROL_MAX_CONCURRENCY", 8usize, 1, 256), 8),
            invocation_budget: Duration::from_secs(
                errs.or(src.number("PATROL_INVOCATION_BUDGET_SECONDS", 480u64, 5, 86_400), 480),
            ),
            event_budget: Duration::from_secs(errs.or(src.number("PATROL_EVENT_BUDGET_SECONDS", 20u64, 1, 29), 20)),
            max_body_bytes: errs
                .or(src.number("PATROL_MAX_BODY_BYTES", 1_048_576usize, 1024, 64 * 1_048_576), 1_048_576),
            log_filter,
            log_format: errs.or(
                src.choice(
                    "PATROL_LOG_FORMAT",
                    LogFormat::Json,
                    &[("json", LogFormat::Json), ("text", LogFormat::Text)],
                ),
                LogFormat::Json,
            ),
            notify,
            metrics: MetricsSettings::from_source(src, &mut errs),
        };
        if errs.0.is_empty() { Ok(settings) } else { Err(ConfigErrors(errs.0)) }
    }

    /// Names of the consumer vaults whose Key Vault events patrol acts on; `None` with the embedded store
    /// (no vault: nothing to tell apart).
    pub fn managed_vault_names(&self) -> Option<Vec<String>> {
        (!self.consumer_vaults.is_empty()).then(|| self.consumer_vaults.iter().map(|v| v.name.clone()).collect())
    }

    /// Whether consumers can read owners' refresh tokens: Key Vault is configured without a separate
    /// `PATROL_OWN_KEYVAULT_URL`, so refresh tokens share the vault consumers read PATs from. `patrol status`,
    /// the handler's start and `patrol check` report these warnings.
    pub fn trust_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(kv), None) = (&self.keyvault, &self.own_keyvault) {
            out.push(format!(
                "refresh tokens share the consumer vault {}: any consumer allowed to read that vault (e.g. a variable \
                 group linked to Key Vault, which needs Get and List on the whole vault) can read owners' Entra refresh \
                 tokens and mint PATs with them. Create a vault only patrol can read, set PATROL_OWN_KEYVAULT_URL to it \
                 and run `patrol migrate-refresh-tokens` (docs/deploy.md).",
                kv.url
            ));
        }
        out
    }

    /// Checks that need the file system or the host's environment, run when the handler starts and before a
    /// CLI command opens anything: a policy that declares tokens needs `PATROL_CLIENT_ID`; a Function App in
    /// Azure (`WEBSITE_INSTANCE_ID` set) needs Key Vault, its app root being read-only; the embedded store
    /// needs a writable `PATROL_STATE_DIR`.
    pub fn environment_errors(&self, src: &Source) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.client_id.is_none() && policy_declares_tokens(&self.policy_file) {
            errs.push(ConfigError::new(
                "PATROL_CLIENT_ID",
                format!(
                    "is not set, but {} declares tokens: owners sign in to this Entra app registration (its Application (client) ID)",
                    self.policy_file.display()
                ),
            ));
        }
        let needs_state_dir = self.keyvault.is_none() || self.host_storage.is_none() || self.lease == LeaseMode::Local;
        if needs_state_dir && self.state_dir.as_os_str().is_empty() {
            errs.push(ConfigError::new(
                "PATROL_STATE_DIR",
                "is not set and there is no home directory (XDG_DATA_HOME or HOME) for its default: set it to the \
                 directory patrol keeps its state in, or set AzureWebJobsStorage (and PATROL_KEYVAULT_URL) to use a \
                 deployment's state (docs/deploy.md)",
            ));
        }
        if self.keyvault.is_none() {
            if src.get("WEBSITE_INSTANCE_ID").is_some() {
                errs.push(ConfigError::new(
                    "PATROL_KEYVAULT_URL",
                    "is required in Azure: the embedded file store cannot work in a Function App (its files are read-only and not shared between instances)",
                ));
            } else if !self.state_dir.as_os_str().is_empty()
                && let Some(problem) = unwritable_dir(&self.state_dir)
            {
                errs.push(ConfigError::new(
                    "PATROL_STATE_DIR",
                    format!("{}: {problem} (the embedded secret store lives there)", self.state_dir.display()),
                ));
            }
        }
        errs
    }
}

/// The default `PATROL_STATE_DIR`: `$XDG_DATA_HOME/patrol/data`, else `$HOME/.local/share/patrol/data`,
/// else (Windows) `%LOCALAPPDATA%\\patrol\\data`; `None` without any of them. The store key's default
/// (`$PATROL_STATE_DIR/../.patrol-store.key`) is then `…/patrol/.patrol-store.key`, beside the data.
pub fn default_state_dir(src: &Source) -> Option<PathBuf> {
    let absolute = |name: &str| src.get(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local").join("share")))
        .or_else(|| absolute("LOCALAPPDATA"))?;
    Some(base.join("patrol").join("data"))
}

/// Whether one URL and another address the same vault (scheme, host and port).
fn same_vault(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether a policy file exists and has a `[[token]]` (read leniently: a broken policy is reported when it
/// is used, not here).
fn policy_declares_tokens(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("token").and_then(|v| v.as_array()).map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// Why `dir` cannot hold the embedded store, if it cannot: it (or its nearest existing ancestor) must be a
/// directory that is not read-only. Nothing is written to find out.
fn unwritable_dir(dir: &std::path::Path) -> Option<String> {
    let mut probe = Some(dir);
    while let Some(p) = probe {
        match std::fs::metadata(p) {
            Ok(m) if !m.is_dir() => return Some(format!("{} is not a directory", p.display())),
            Ok(m) if m.permissions().readonly() => return Some(format!("{} is read-only", p.display())),
            Ok(_) => return None,
            Err(_) => probe = p.parent().filter(|q| !q.as_os_str().is_empty()),
        }
    }
    None
}

/// A named consumer vault (the name is what Key Vault events report as `VaultName`).
#[derive(Debug, Clone)]
pub struct NamedVault {
    pub name: String,
    pub keyvault: KeyVaultSettings,
}

/// Which `api-version` the PAT Lifecycle API is called with (`PATROL_DEVOPS_API_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ApiVersion {
    /// 7.2-preview.1, falling back to 7.1-preview.1 when the service refuses 7.2.
    Auto,
    V72,
    V71,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults() {
        let s = Settings::from_source(&Source::default()).unwrap();
        assert_eq!(s.devops_url.as_str(), "https://vssps.dev.azure.com/");
        assert!(s.keyvault.is_none());
        assert_eq!(s.max_concurrency, 8);
        assert_eq!(s.lease, LeaseMode::Auto);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Settings::from_source(&Source::from_pairs([("PATROL_MAX_CONCURRENCY", "lots")])).unwrap_err();
        assert_eq!(e.setting, "PATROL_MAX_CONCURRENCY");
        let e = Settings::from_source(&Source::from_pairs([("PATROL_KEYVAULT_URL", "http://kv")])).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        let e = Settings::from_source(&Source::from_pairs([("PATROL_SCHEDULE", "0 3 * * *")])).unwrap_err();
        assert_eq!(e.setting, "PATROL_SCHEDULE");
    }

    #[test]
    fn the_audit_reader_is_the_app_with_key_vault_an_administrator_or_nobody() {
        let s = Settings::from_source(&Source::default()).unwrap();
        assert_eq!(s.audit_reader, None, "without Key Vault there is no Function App identity to default to");
        let kv = ("PATROL_KEYVAULT_URL", "https://kv.vault.azure.net");
        let s = Settings::from_source(&Source::from_pairs([kv])).unwrap();
        assert_eq!(s.audit_reader, Some(crate::domain::app_identity()));
        let s =
            Settings::from_source(&Source::from_pairs([kv, ("PATROL_AUDIT_READER", "SecOps@Contoso.com")])).unwrap();
        assert_eq!(s.audit_reader.unwrap().as_str(), "secops@contoso.com");
        let e = Settings::from_source(&Source::from_pairs([("PATROL_AUDIT_READER", "secops")])).unwrap_err();
        assert_eq!(e.setting, "PATROL_AUDIT_READER");
        assert!(e.to_string().contains("app or an administrator"), "{e}");
    }

    #[test]
    fn secret_webhooks_are_not_echoed() {
        let e = Settings::from_source(&Source::from_pairs([("PATROL_SLACK_WEBHOOK_URL", "hunter2-not-a-url")]))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let s = Settings::from_source(&Source::from_pairs([("PATROL_SLACK_WEBHOOK_URL", "https://hooks.example/T/x")]))
            .unwrap();
        assert_eq!(s.notify.slack_webhook_url.unwrap().expose_secret(), "https://hooks.example/T/x");
    }

    fn all_errors(pairs: &[(&str, &str)]) -> Vec<String> {
        match Settings::from_source_all(&Source::from_pairs(pairs.iter().copied())) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| e.setting).collect(),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_all_at_once() {
        let errs = all_errors(&[
            ("PATROL_CLIENT_ID", "patrol-app"),
            ("PATROL_WEBHOOK_URL", "http://hooks.example.com/secret-path"),
            ("PATROL_SMTP_HOST", "smtp.example.com"),
            ("PATROL_SMTP_TLS", "none"),
            ("PATROL_LOG", "patrol=["),
            ("PATROL_MAX_CONCURRENCY", "lots"),
        ]);
        assert_eq!(
            errs,
            ["PATROL_SMTP_TLS", "PATROL_WEBHOOK_URL", "PATROL_CLIENT_ID", "PATROL_LOG", "PATROL_MAX_CONCURRENCY"]
        );
        let e =
            Settings::from_source_all(&Source::from_pairs([("PATROL_WEBHOOK_URL", "http://hooks.example.com/s3cr3t")]))
                .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        // Loopback is fine without TLS (test servers).
        assert!(
            all_errors(&[
                ("PATROL_CLIENT_ID", "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c11"),
                ("PATROL_WEBHOOK_URL", "http://127.0.0.1:8080/hook"),
                ("PATROL_SMTP_HOST", "localhost"),
                ("PATROL_SMTP_TLS", "none"),
            ])
            .is_empty()
        );
    }

    #[test]
    fn vaults_own_and_consumers() {
        let s = Settings::from_source(&Source::from_pairs([
            ("PATROL_KEYVAULT_URL", "https://contoso-pats.vault.azure.net/"),
            ("PATROL_CONSUMER_KEYVAULTS", "team-a=https://team-a-kv.vault.azure.net/, team-b=https://127.0.0.1:8443/"),
            ("PATROL_OWN_KEYVAULT_URL", "https://contoso-patrol.vault.azure.net/"),
        ]))
        .unwrap();
        assert_eq!(s.managed_vault_names().unwrap(), ["contoso-pats", "team-a", "team-b"]);
        assert!(s.trust_warnings().is_empty());
        let one = Settings::from_source(&Source::from_pairs([(
            "PATROL_KEYVAULT_URL",
            "https://contoso-pats.vault.azure.net/",
        )]))
        .unwrap();
        assert_eq!(one.trust_warnings().len(), 1);
        assert!(one.trust_warnings()[0].contains("PATROL_OWN_KEYVAULT_URL"));
        assert!(Settings::from_source(&Source::default()).unwrap().trust_warnings().is_empty(), "embedded store");
        assert_eq!(
            all_errors(&[
                ("PATROL_KEYVAULT_URL", "https://contoso-pats.vault.azure.net/"),
                ("PATROL_OWN_KEYVAULT_URL", "https://CONTOSO-pats.vault.azure.net"),
            ]),
            ["PATROL_OWN_KEYVAULT_URL"]
        );
        assert_eq!(
            all_errors(&[("PATROL_OWN_KEYVAULT_URL", "https://p.vault.azure.net/")]),
            ["PATROL_OWN_KEYVAULT_URL"]
        );
        assert_eq!(
            all_errors(&[("PATROL_KEYVAULT_URL", "https://127.0.0.1:9/"), ("PATROL_KEYVAULT_NAME", "9")]),
            ["PATROL_KEYVAULT_NAME"]
        );
        let emu = Settings::from_source(&Source::from_pairs([
            ("PATROL_KEYVAULT_URL", "https://127.0.0.1:9/"),
            ("PATROL_KEYVAULT_NAME", "Patrol-Emu"),
        ]))
        .unwrap();
        assert_eq!(emu.managed_vault_names().unwrap(), ["patrol-emu"]);
        assert_eq!(
            all_errors(&[
                ("PATROL_KEYVAULT_URL", "https://kv1.vault.azure.net/"),
                ("PATROL_CONSUMER_KEYVAULTS", "kv1=https://x.vault.azure.net/,bad")
            ]),
            ["PATROL_CONSUMER_KEYVAULTS", "PATROL_CONSUMER_KEYVAULTS"]
        );
    }

    #[test]
    fn the_environment_is_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("patrol.toml");
        std::fs::write(&policy, "[[token]]\nsecret = \"a\"\n").unwrap();
        let src = Source::from_pairs([
            ("PATROL_POLICY_FILE", policy.to_str().unwrap()),
            ("PATROL_STATE_DIR", dir.path().to_str().unwrap()),
            ("WEBSITE_INSTANCE_ID", "abc"),
        ]);
        let s = Settings::from_source(&src).unwrap();
        let names: Vec<String> = s.environment_errors(&src).into_iter().map(|e| e.setting).collect();
        assert_eq!(names, ["PATROL_CLIENT_ID", "PATROL_KEYVAULT_URL"]);
        // No policy, or a broken one: no client id needed to start.
        std::fs::write(&policy, "[[token]\n").unwrap();
        let src = Source::from_pairs([
            ("PATROL_POLICY_FILE", policy.to_str().unwrap()),
            ("PATROL_STATE_DIR", dir.path().to_str().unwrap()),
        ]);
        assert!(Settings::from_source(&src).unwrap().environment_errors(&src).is_empty());
    }

    #[test]
    fn the_default_state_dir_is_per_user_never_the_working_directory() {
        let s = |pairs: &[(&str, &str)]| Settings::from_source(&Source::from_pairs(pairs.iter().copied())).unwrap();
        let xdg = s(&[("XDG_DATA_HOME", "/x/data"), ("HOME", "/home/u")]);
        assert_eq!(xdg.state_dir, PathBuf::from("/x/data/patrol/data"));
        assert_eq!(xdg.store_key_file, PathBuf::from("/x/data/patrol/.patrol-store.key"));
        assert_eq!(s(&[("HOME", "/home/u")]).state_dir, PathBuf::from("/home/u/.local/share/patrol/data"));
        // A relative XDG_DATA_HOME is ignored (the XDG spec), as the working directory must never be used.
        assert_eq!(
            s(&[("XDG_DATA_HOME", "rel"), ("HOME", "/home/u")]).state_dir,
            PathBuf::from("/home/u/.local/share/patrol/data")
        );
        assert_eq!(s(&[("PATROL_STATE_DIR", "/srv/patrol")]).state_dir, PathBuf::from("/srv/patrol"));
        // No home and no setting: an error naming the setting, only where the state directory is needed.
        let src = Source::from_pairs([("PATROL_POLICY_FILE", "/nonexistent/patrol.toml")]);
        let none = Settings::from_source(&src).unwrap();
        assert!(none.environment_errors(&src).iter().any(|e| e.setting == "PATROL_STATE_DIR"));
    }

    #[test]
    fn every_setting_is_documented_in_readme() {
        let readme = include_str!("../README.md");
        let example = include_str!("../local.settings.json.example");
        for s in SETTINGS {
            assert!(readme.contains(s.name), "README.md does not document {}", s.name);
            assert!(example.contains(s.name), "local.settings.json.example does not mention {}", s.name);
        }
    }
}
