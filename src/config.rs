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
        default: ".patrol",
        description: "Directory for local state when no Azure storage is configured: the embedded secret store, the rotation journal, notification state, audit checkpoints.",
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
        name: "PATROL_KEYVAULT_URL",
        default: "(none: embedded file store)",
        description: "Key Vault URL, e.g. https://myvault.vault.azure.net/. Without it patrol uses the embedded encrypted file store.",
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
    pub devops_api_version: crate::devops::ApiVersion,
    pub audit_url: Url,
    pub entra_authority: Url,
    pub tenant_id: String,
    pub client_id: Option<String>,
    pub keyvault: Option<KeyVaultSettings>,
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
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::from_env())
    }

    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let app_root = src.get("FUNCTIONS_APP_ROOT_PATH").map(PathBuf::from);
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            match (&app_root, p.is_relative()) {
                (Some(root), true) => root.join(p),
                _ => p,
            }
        };
        let policy_file = resolve(src.get("PATROL_POLICY_FILE").unwrap_or("patrol.toml"));
        let state_dir = PathBuf::from(src.get("PATROL_STATE_DIR").unwrap_or(".patrol"));
        let store_key_file = match src.get("PATROL_STORE_KEY_FILE") {
            Some(p) => PathBuf::from(p),
            None => {
                let parent = state_dir.parent().filter(|p| !p.as_os_str().is_empty());
                parent.map(|p| p.join(".patrol-store.key")).unwrap_or_else(|| PathBuf::from(".patrol-store.key"))
            }
        };

        let keyvault = match src.opt_url("PATROL_KEYVAULT_URL")? {
            None => None,
            Some(url) => {
                if url.scheme() != "https" {
                    return Err(ConfigError::new(
                        "PATROL_KEYVAULT_URL",
                        "must be https (the Key Vault SDK refuses plain HTTP)",
                    ));
                }
                let credential = src.choice(
                    "PATROL_KEYVAULT_CREDENTIAL",
                    KeyVaultCredential::ManagedIdentity,
                    &[
                        ("managed-identity", KeyVaultCredential::ManagedIdentity),
                        ("developer-tools", KeyVaultCredential::DeveloperTools),
                        ("client-secret", KeyVaultCredential::ClientSecret),
                    ],
                )?;
                let kv = KeyVaultSettings {
                    url,
                    credential,
                    managed_identity_client_id: src.get("PATROL_MANAGED_IDENTITY_CLIENT_ID").map(str::to_owned),
                    tenant_id: src.get("PATROL_KEYVAULT_TENANT_ID").map(str::to_owned),
                    client_id: src.get("PATROL_KEYVAULT_CLIENT_ID").map(str::to_owned),
                    client_secret: src.secret("PATROL_KEYVAULT_CLIENT_SECRET"),
                    recover_deleted: src.boolean("PATROL_KEYVAULT_RECOVER_DELETED", false)?,
                };
                if credential == KeyVaultCredential::ClientSecret {
                    for (name, present) in [
                        ("PATROL_KEYVAULT_TENANT_ID", kv.tenant_id.is_some()),
                        ("PATROL_KEYVAULT_CLIENT_ID", kv.client_id.is_some()),
                        ("PATROL_KEYVAULT_CLIENT_SECRET", kv.client_secret.is_some()),
                    ] {
                        if !present {
                            return Err(ConfigError::new(
                                name,
                                "is required when PATROL_KEYVAULT_CREDENTIAL=client-secret",
                            ));
                        }
                    }
                }
                Some(kv)
            }
        };

        let consumer_identity = {
            let default = if keyvault.is_some() { "managed-identity" } else { "none" };
            let choice = src.get("PATROL_CONSUMER_CREDENTIAL").unwrap_or(default);
            let credential = match choice {
                "none" => None,
                "managed-identity" => Some(KeyVaultCredential::ManagedIdentity),
                "developer-tools" => Some(KeyVaultCredential::DeveloperTools),
                "client-secret" => Some(KeyVaultCredential::ClientSecret),
                other => {
                    return Err(ConfigError::new(
                        "PATROL_CONSUMER_CREDENTIAL",
                        format!("{other:?} must be managed-identity, developer-tools, client-secret or none"),
                    ));
                }
            };
            match credential {
                None => None,
                Some(credential) => {
                    let kv = keyvault.as_ref();
                    let pick = |own: &str, f: fn(&KeyVaultSettings) -> Option<String>| {
                        src.get(own).map(str::to_owned).or_else(|| kv.and_then(f))
                    };
                    let id = ConsumerIdentity {
                        credential,
                        managed_identity_client_id: src.get("PATROL_MANAGED_IDENTITY_CLIENT_ID").map(str::to_owned),
                        tenant_id: pick("PATROL_CONSUMER_TENANT_ID", |k| k.tenant_id.clone()),
                        client_id: pick("PATROL_CONSUMER_CLIENT_ID", |k| k.client_id.clone()),
                        client_secret: src
                            .secret("PATROL_CONSUMER_CLIENT_SECRET")
                            .or_else(|| kv.and_then(|k| k.client_secret.clone())),
                    };
                    if credential == KeyVaultCredential::ClientSecret {
                        for (name, present) in [
                            ("PATROL_CONSUMER_TENANT_ID", id.tenant_id.is_some()),
                            ("PATROL_CONSUMER_CLIENT_ID", id.client_id.is_some()),
                            ("PATROL_CONSUMER_CLIENT_SECRET", id.client_secret.is_some()),
                        ] {
                            if !present {
                                return Err(ConfigError::new(
                                    name,
                                    "is required when PATROL_CONSUMER_CREDENTIAL=client-secret",
                                ));
                            }
                        }
                    }
                    Some(id)
                }
            }
        };

        let ca_cert = src.get("PATROL_CA_CERT").map(PathBuf::from);
        if let Some(p) = ca_cert.as_ref().filter(|p| !p.is_file()) {
            return Err(ConfigError::new("PATROL_CA_CERT", format!("{} is not a readable file", p.display())));
        }

        let host_storage = if let Some(cs) = src.get("AzureWebJobsStorage") {
            Some(HostStorage::ConnectionString(SecretString::from(cs.to_owned())))
        } else if let Some(uri) = src.opt_url("AzureWebJobsStorage__blobServiceUri")? {
            Some(HostStorage::Identity {
                blob_service_uri: uri,
                client_id: src.get("AzureWebJobsStorage__clientId").map(str::to_owned),
            })
        } else if let Some(account) = src.get("AzureWebJobsStorage__accountName") {
            let uri =
                parse_url("AzureWebJobsStorage__accountName", &format!("https://{account}.blob.core.windows.net"))?;
            Some(HostStorage::Identity {
                blob_service_uri: uri,
                client_id: src.get("AzureWebJobsStorage__clientId").map(str::to_owned),
            })
        } else {
            None
        };
        let lease = src.choice(
            "PATROL_LEASE",
            LeaseMode::Auto,
            &[("auto", LeaseMode::Auto), ("blob", LeaseMode::Blob), ("local", LeaseMode::Local)],
        )?;
        if lease == LeaseMode::Blob && host_storage.is_none() {
            return Err(ConfigError::new(
                "PATROL_LEASE",
                "is blob but neither AzureWebJobsStorage nor AzureWebJobsStorage__accountName is set",
            ));
        }

        let schedule = src.get("PATROL_SCHEDULE").unwrap_or("0 0 3 * * *").to_owned();
        if schedule.split_whitespace().count() != 6 {
            return Err(ConfigError::new(
                "PATROL_SCHEDULE",
                format!(
                    "{schedule:?} must be an NCRONTAB expression with 6 fields (second minute hour day month weekday)"
                ),
            ));
        }

        let smtp = match src.get("PATROL_SMTP_HOST") {
            None => None,
            Some(host) => {
                let tls = src.choice(
                    "PATROL_SMTP_TLS",
                    SmtpTls::Starttls,
                    &[("starttls", SmtpTls::Starttls), ("implicit", SmtpTls::Implicit), ("none", SmtpTls::None)],
                )?;
                let default_port = match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Implicit => 465,
                    SmtpTls::None => 25,
                };
                Some(SmtpSettings {
                    host: host.to_owned(),
                    port: src.number("PATROL_SMTP_PORT", default_port, 1, u16::MAX)?,
                    tls,
                    username: src.get("PATROL_SMTP_USERNAME").map(str::to_owned),
                    password: src.secret("PATROL_SMTP_PASSWORD"),
                    password_secret: src.get("PATROL_SMTP_PASSWORD_SECRET").map(str::to_owned),
                    from: src.get("PATROL_SMTP_FROM").unwrap_or("patrol@localhost").to_owned(),
                })
            }
        };
        let webhook = |name: &str| -> Result<Option<SecretString>, ConfigError> {
            // Validate without echoing the value: webhook URLs embed credentials.
            match src.get(name) {
                None => Ok(None),
                Some(raw) => match Url::parse(raw) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(SecretString::from(raw.to_owned()))),
                    _ => Err(ConfigError::new(name, "is not an http(s) URL (value not shown: it is a secret)")),
                },
            }
        };
        let notify = NotifySettings {
            smtp,
            teams_webhook_url: webhook("PATROL_TEAMS_WEBHOOK_URL")?,
            slack_webhook_url: webhook("PATROL_SLACK_WEBHOOK_URL")?,
            webhook_url: webhook("PATROL_WEBHOOK_URL")?,
            mailbox_file: src.get("PATROL_MAILBOX_FILE").map(PathBuf::from),
            report_recipients: src
                .get("PATROL_REPORT_RECIPIENTS")
                .map(|s| s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect())
                .unwrap_or_default(),
        };

        Ok(Self {
            policy_file,
            state_dir,
            store_key_file,
            devops_url: src.url("PATROL_DEVOPS_URL", "https://vssps.dev.azure.com")?,
            devops_api_version: src.choice(
                "PATROL_DEVOPS_API_VERSION",
                crate::devops::ApiVersion::Auto,
                &[
                    ("auto", crate::devops::ApiVersion::Auto),
                    ("7.2-preview.1", crate::devops::ApiVersion::V72),
                    ("7.1-preview.1", crate::devops::ApiVersion::V71),
                ],
            )?,
            audit_url: src.url("PATROL_AUDIT_URL", "https://auditservice.dev.azure.com")?,
            entra_authority: src.url("PATROL_ENTRA_AUTHORITY", "https://login.microsoftonline.com")?,
            tenant_id: src.get("PATROL_TENANT_ID").unwrap_or("organizations").to_owned(),
            client_id: src.get("PATROL_CLIENT_ID").map(str::to_owned),
            keyvault,
            consumer_identity,
            ca_cert,
            schedule,
            lease,
            host_storage,
            max_concurrency: src.number("PATROL_MAX_CONCURRENCY", 8usize, 1, 256)?,
            invocation_budget: Duration::from_secs(src.number(
                "PATROL_INVOCATION_BUDGET_SECONDS",
                480u64,
                5,
                86_400,
            )?),
            event_budget: Duration::from_secs(src.number("PATROL_EVENT_BUDGET_SECONDS", 20u64, 1, 29)?),
            max_body_bytes: src.number("PATROL_MAX_BODY_BYTES", 1_048_576usize, 1024, 64 * 1_048_576)?,
            log_filter: src.get("PATROL_LOG").unwrap_or("info").to_owned(),
            log_format: src.choice(
                "PATROL_LOG_FORMAT",
                LogFormat::Json,
                &[("json", LogFormat::Json), ("text", LogFormat::Text)],
            )?,
            notify,
        })
    }
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
    fn secret_webhooks_are_not_echoed() {
        let e = Settings::from_source(&Source::from_pairs([("PATROL_SLACK_WEBHOOK_URL", "hunter2-not-a-url")]))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let s = Settings::from_source(&Source::from_pairs([("PATROL_SLACK_WEBHOOK_URL", "https://hooks.example/T/x")]))
            .unwrap();
        assert_eq!(s.notify.slack_webhook_url.unwrap().expose_secret(), "https://hooks.example/T/x");
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
