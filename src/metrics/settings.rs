//! The metrics settings (`PATROL_OTLP_ENDPOINT`, Application Insights, owner labels), parsed by `config`.

use secrecy::SecretString;
use std::time::Duration;
use url::Url;

/// How owners appear in metric labels (`PATROL_METRICS_OWNER_LABEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerLabel {
    /// First 16 hex digits of SHA-256 of the lower-case UPN: pseudonymous, stable, joinable by who knows the UPN.
    #[default]
    Hash,
    Upn,
    None,
}

/// Where and how metrics are exported. Nothing is built unless an endpoint or a connection string is set.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `PATROL_OTLP_ENDPOINT`: the collector's base URL.
    pub otlp_endpoint: Option<Url>,
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING` (holds the instrumentation key: never printed).
    pub appinsights: Option<SecretString>,
    /// `APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD` (optionally `;ClientId=<user-assigned>`).
    pub appinsights_aad: Option<AadAuth>,
    pub flush_timeout: Duration,
    pub queue: usize,
    pub owner_label: OwnerLabel,
}

/// Entra authentication of Application Insights ingestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadAuth {
    /// A user-assigned managed identity's client id; `None`: the system-assigned identity.
    pub client_id: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            appinsights: None,
            appinsights_aad: None,
            flush_timeout: Duration::from_millis(2000),
            queue: 64,
            owner_label: OwnerLabel::Hash,
        }
    }
}
