//! Notifications: what patrol tells people, to whom, and through which channel — once, on time, and never
//! with a secret in it.
//!
//! The rest of patrol only produces [`Notice`]s addressed to [`Target`]s ([`Addressed`]). This module
//! turns them into one digest per recipient per run, remembers which expiry thresholds were already
//! announced for which PAT, and delivers through SMTP (`lettre`), Microsoft Teams (Workflows / Adaptive
//! Card), Slack incoming webhooks, a generic JSON webhook, or a local mailbox file. Delivery retries with
//! backoff; a failing channel never fails a rotation — failures go into the run summary.

pub mod channel;
pub mod deliver;
pub mod digest;
pub mod expiry;
mod http;
pub mod mailbox;
pub mod redact;
pub mod render;
pub mod slack;
pub mod smtp;
pub mod teams;
pub mod webhook;

pub use deliver::{DeliveryOutcome, DeliveryPolicy, DeliveryReport, DeliveryStatus, Notifier};
pub use digest::{Digest, Report};
pub use expiry::{ExpiryLedger, Thresholds};

use crate::domain::{AuthorizationId, OwnerId, SecretName};
use serde::Serialize;
use time::OffsetDateTime;

/// Where a notice goes, as written in `patrol.toml` (`"email:team@contoso.com"`, `"teams"`, `"slack"`,
/// `"webhook"`). Channel credentials (SMTP password, webhook URLs) come from settings, never from here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub enum Target {
    Email(String),
    Teams,
    Slack,
    Webhook,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, crate::domain::DomainError> {
        let t = s.trim();
        match t {
            "teams" => Ok(Self::Teams),
            "slack" => Ok(Self::Slack),
            "webhook" => Ok(Self::Webhook),
            _ => match t.strip_prefix("email:") {
                Some(addr) if is_email(addr) => Ok(Self::Email(addr.to_ascii_lowercase())),
                _ => Err(crate::domain::DomainError::new(
                    "notification target",
                    s,
                    "must be email:<address>, teams, slack or webhook",
                )),
            },
        }
    }
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') && !s.chars().any(|c| c.is_whitespace() || c == ','),
        None => false,
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Email(a) => write!(f, "email:{a}"),
            Self::Teams => f.write_str("teams"),
            Self::Slack => f.write_str("slack"),
            Self::Webhook => f.write_str("webhook"),
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A PAT as notices refer to it (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatRef {
    pub display_name: String,
    pub authorization_id: AuthorizationId,
    pub organization: String,
    pub owner: OwnerId,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    /// The managing secret, `None` for a PAT patrol does not manage.
    pub secret: Option<SecretName>,
}

/// Something a person should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// `days_left` days before `validTo`, at the configured `threshold` (30/14/7/1 by default).
    ExpiryWarning {
        pat: PatRef,
        threshold_days: u32,
        days_left: i64,
    },
    RotationSucceeded {
        secret: SecretName,
        old_display_name: Option<String>,
        new_display_name: String,
        #[serde(with = "time::serde::rfc3339")]
        new_valid_to: OffsetDateTime,
        /// Where the new value lives, e.g. `https://kv.vault.azure.net/secrets/name/<version>`.
        stored_at: String,
    },
    RotationFailed {
        secret: SecretName,
        step: String,
        error: String,
        next: String,
    },
    PatExpired {
        pat: PatRef,
    },
    SignInRequired {
        owner: OwnerId,
        reason: String,
    },
    OutOfBandChange {
        secret: SecretName,
        description: String,
    },
    PolicyRefusal {
        secret: SecretName,
        error: String,
        explanation: String,
    },
    /// An audit-log finding.
    Finding {
        rule: String,
        severity: Severity,
        summary: String,
        evidence: Vec<String>,
        action: String,
    },
}

impl Notice {
    pub fn severity(&self) -> Severity {
        match self {
            Self::ExpiryWarning { threshold_days, .. } if *threshold_days <= 1 => Severity::Critical,
            Self::ExpiryWarning { .. } | Self::RotationFailed { .. } => Severity::Warning,
            Self::RotationSucceeded { .. } => Severity::Info,
            Self::PatExpired { .. }
            | Self::SignInRequired { .. }
            | Self::OutOfBandChange { .. }
            | Self::PolicyRefusal { .. } => Severity::Critical,
            Self::Finding { severity, .. } => *severity,
        }
    }
}

/// A notice and who should get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addressed {
    pub targets: Vec<Target>,
    pub notice: Notice,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("email:Ops@Contoso.com").unwrap(), Target::Email("ops@contoso.com".into()));
        assert_eq!(Target::parse("teams").unwrap(), Target::Teams);
        assert!(Target::parse("email:nope").is_err());
        assert!(Target::parse("pager").is_err());
    }
}
