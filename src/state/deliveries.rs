//! Delivery state of each consumer, kept in the token's journal record (`deliveries`) and written
//! **before** every consumer write, so a crash between writing a consumer and recording it is resolved by
//! looking at the consumer (its version marker moved: the write landed) instead of writing again.

use crate::domain::AuthorizationId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where one consumer's delivery of the current PAT stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum DeliveryStep {
    /// Not written yet.
    Pending,
    /// About to write; `before` is the object's version marker (modificationDate / modifiedOn / updated_at /
    /// vault version) read just before. After a crash: marker moved → the write landed; unchanged → write.
    Writing {
        #[serde(with = "time::serde::rfc3339")]
        started: OffsetDateTime,
        before: Option<String>,
    },
    /// The consumer holds the new value (`after`: its version marker after the write).
    Delivered {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        after: Option<String>,
    },
    /// Nothing to write (a `reference`, a Key Vault-linked variable group): it reads the vault itself.
    ReadsVault,
}

impl DeliveryStep {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Writing { .. } => "writing",
            Self::Delivered { .. } => "delivered",
            Self::ReadsVault => "reads-vault",
        }
    }
}

/// Evidence that a consumer used the new value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseEvidence {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// In words, e.g. "pipeline run 42 (Build) started 2027-01-02T10:00:00Z".
    pub what: String,
}

/// One consumer's delivery of one PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The consumer's id (`policy::consumers::Consumer::id`).
    pub consumer: String,
    pub authorization_id: AuthorizationId,
    /// The vault version whose value is delivered.
    pub vault_version: String,
    /// When the PAT became current (the lag of a reference consumer counts from here).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(flatten)]
    pub step: DeliveryStep,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Not retried before this time (backoff across runs).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub alerted_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub evidence: Option<UseEvidence>,
}

impl Delivery {
    pub fn new(consumer: &str, authorization_id: AuthorizationId, vault_version: &str, since: OffsetDateTime) -> Self {
        Self {
            consumer: consumer.to_owned(),
            authorization_id,
            vault_version: vault_version.to_owned(),
            since,
            step: DeliveryStep::Pending,
            attempts: 0,
            failing_since: None,
            last_error: None,
            next_attempt: None,
            alerted_at: None,
            evidence: None,
        }
    }

    pub fn delivered_at(&self) -> Option<OffsetDateTime> {
        match self.step {
            DeliveryStep::Delivered { at, .. } => Some(at),
            _ => None,
        }
    }

    /// A write is still owed (and may be tried at `now`).
    pub fn write_due(&self, now: OffsetDateTime) -> bool {
        matches!(self.step, DeliveryStep::Pending | DeliveryStep::Writing { .. })
            && self.next_attempt.is_none_or(|t| t <= now)
    }
}

/// Backoff across runs after the `attempts`-th failed attempt: 5 min, 15 min, 45 min, … capped at 6 h.
pub fn backoff(attempts: u32) -> time::Duration {
    let rule = crate::backoff::Backoff::exponential(
        std::time::Duration::from_secs(5 * 60),
        std::time::Duration::from_secs(6 * 3600),
    )
    .with_factor(3)
    .with_jitter(0.0);
    time::Duration::try_from(rule.delay(attempts.saturating_sub(1), 0.0)).unwrap_or(time::Duration::hours(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), time::Duration::minutes(5));
        assert_eq!(backoff(2), time::Duration::minutes(15));
        assert_eq!(backoff(3), time::Duration::minutes(45));
        assert_eq!(backoff(20), time::Duration::hours(6));
    }

    #[test]
    fn a_delivery_round_trips_with_its_step() {
        let mut d = Delivery::new(
            "webhook:x",
            AuthorizationId::from_uuid(uuid::Uuid::new_v4()),
            "0123",
            time::macros::datetime!(2027-01-01 00:00 UTC),
        );
        d.step = DeliveryStep::Writing { started: d.since, before: Some("v1".into()) };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["step"], "writing");
        assert_eq!(serde_json::from_value::<Delivery>(json).unwrap(), d);
    }
}
