//! A finding: which rule fired, how bad it is, a sentence saying why, the PAT it concerns, and the audit
//! entry that proves it. Findings are owned (they outlive the page they came from) and serialisable for
//! `patrol audit --format json`; they never hold a secret (audit entries carry none).

use super::entry::AuditEntry;
use crate::domain::{AuthorizationId, OwnerId, SecretName};
use crate::notify::Severity;
use crate::policy::audit::RuleId;
use serde::Serialize;
use time::OffsetDateTime;

/// The PAT a finding is about, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub authorization_id: Option<AuthorizationId>,
    pub display_name: Option<String>,
    pub owner: Option<OwnerId>,
    /// The managing secret when patrol manages the PAT.
    pub secret: Option<SecretName>,
}

/// The audit entry behind a finding, reduced to what a person needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub entry_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub action_id: String,
    pub actor: String,
    pub authentication_mechanism: String,
    pub ip_address: String,
    pub user_agent: String,
    pub details: String,
    /// The entry's `data` map (scalar values).
    pub data: Vec<(String, String)>,
}

impl Evidence {
    pub fn of(e: &AuditEntry<'_>) -> Self {
        let actor = match (e.actor_display_name.is_empty(), e.actor_upn.is_empty()) {
            (false, false) => format!("{} <{}>", e.actor_display_name, e.actor_upn),
            (false, true) => e.actor_display_name.to_string(),
            (true, false) => e.actor_upn.to_string(),
            (true, true) => e.actor_user_id.to_string(),
        };
        Self {
            entry_id: e.id.to_string(),
            timestamp: e.timestamp,
            action_id: e.action_id.to_string(),
            actor,
            authentication_mechanism: e.authentication_mechanism.to_string(),
            ip_address: e.ip_address.to_string(),
            user_agent: e.user_agent.to_string(),
            details: e.details.to_string(),
            data: e.data.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }

    /// One line per fact, for notices and the CLI.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("audit entry {} at {}", self.entry_id, rfc3339(self.timestamp)),
            format!("action {} by {}", self.action_id, or_dash(&self.actor)),
            format!("authentication {}", or_dash(&self.authentication_mechanism)),
            format!("from IP {} with user agent {}", or_dash(&self.ip_address), or_dash(&self.user_agent)),
        ];
        if !self.details.is_empty() {
            out.push(format!("details: {}", self.details));
        }
        for (k, v) in &self.data {
            out.push(format!("data.{k} = {v}"));
        }
        out
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

pub(crate) use crate::timestamp::rfc3339;

/// One rule firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: RuleId,
    pub severity: Severity,
    /// Why it fired, as one sentence a person can act on.
    pub summary: String,
    pub subject: Option<Subject>,
    /// The entry that made it fire (for aggregate rules, the entry that crossed the line).
    pub evidence: Evidence,
    /// When patrol noticed.
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
}

impl Finding {
    /// A stable key: the same rule on the same entry is one finding, however often it is re-read.
    pub fn key(&self) -> String {
        format!("{}:{}", self.rule, self.evidence.entry_id)
    }

    /// The managed secret concerned, when there is one.
    pub fn secret(&self) -> Option<&SecretName> {
        self.subject.as_ref().and_then(|s| s.secret.as_ref())
    }
}
