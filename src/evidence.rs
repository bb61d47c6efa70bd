//! The audit evidence and the one decision it gates: what the audit log has shown about PATs, as the
//! ingestion persists it ([`Checkpoint`] under `audit/<org>/checkpoint`: how far the log was read, each PAT's
//! [`LastUse`] and [`UseProfile`]), and the pure evidence gate ([`gate_observed`]) that decides when a
//! rotated-away PAT may be revoked.
//!
//! Below both `audit` (which writes the checkpoint and gates its own responses) and `rotation` (whose plan
//! gates each drain through `rotation::evidence::decide`, which maps a drain onto [`Superseded`]).

use crate::domain::{AuthorizationId, OrgName};
use crate::notify::{Notice, Severity};
use crate::policy::EvidenceGate;
use crate::policy::audit::RevocationGate;
use crate::timestamp::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use time::{Duration, OffsetDateTime};

/// How long after patrol's own PAT change its audit event must be visible (`audit::ingest::PollConfig`'s
/// default `audit_delay`); the evidence gate counts uses as known up to a window's end less this.
pub const AUDIT_DELAY: Duration = Duration::minutes(30);

/// The last audited use of a PAT: when, from where, with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUse {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub ip: String,
    pub user_agent: String,
    pub action_id: String,
    pub entry_id: String,
}

/// Where a PAT's audited actions came from (persisted in the audit checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseProfile {
    /// User agent → last seen (unix seconds).
    #[serde(default)]
    pub user_agents: BTreeMap<String, i64>,
    /// Address range (IPv4 /24, IPv6 /48) → last seen.
    #[serde(default)]
    pub ranges: BTreeMap<String, i64>,
    /// Pipeline (from the entry's data: `PipelineName`, `DefinitionName`…) → last seen.
    #[serde(default)]
    pub pipelines: BTreeMap<String, i64>,
}

/// What is kept between polls, under `audit/<org>/checkpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The end of the last completed window.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub window_end: Option<OffsetDateTime>,
    /// Entry ids seen inside the overlap, with their timestamps (older ones are pruned).
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
    #[serde(default)]
    pub last_use: HashMap<AuthorizationId, LastUse>,
    /// Set when a window showed patrol's own PAT change but no entry from then on (auditing looks off);
    /// cleared by the next window that has any entry (new or already seen). The evidence gate treats it as
    /// "no evidence".
    #[serde(default)]
    pub auditing_off: bool,
    /// Since when the log has been read without a gap (the first window's start; reset when polls stopped
    /// for longer than the retention). "No audited use in N days" is said only once this is N days back.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub watched_since: Option<OffsetDateTime>,
    /// Per PAT: the distinct user agents, address ranges and pipelines its audited actions came from (the
    /// evidence for "looks shared"; bounded, entries older than the retention dropped).
    #[serde(default)]
    pub usage: HashMap<AuthorizationId, UseProfile>,
}

/// Where an organization's checkpoint is kept in the state store.
pub fn checkpoint_key(org: &OrgName) -> String {
    format!("audit/{}/checkpoint", org.as_str().to_ascii_lowercase())
}

/// The evidence gate's answer for one rotated-away PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum GateDecision {
    /// Not superseded, or its grace period has not ended: leave it.
    NotDue,
    /// Still in use recently: wait (until `quiet_hours` of silence, or the deadline).
    Wait {
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
        reason: String,
    },
    /// No audited use for `quiet_hours`: revoke.
    Revoke { reason: String },
    /// The deadline passed while it was still used: revoke and alert, naming the last caller.
    RevokeAtDeadline { alert: Notice },
}

/// A rotated-away PAT as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Superseded<'a> {
    /// How notices name it, e.g. `"previous PAT of ci-build" (<id>)`.
    pub label: &'a str,
    pub rotated_at: OffsetDateTime,
    /// When its grace period ends (never revoked before).
    pub grace_ends: OffsetDateTime,
}

/// The gate proper (pure). `observed_until` is how far the audit log has been read (`None`: no evidence at
/// all — never polled, unreadable, or auditing looks off). Quiet time only counts up to what was observed,
/// so a failing or stale poll can never make a PAT look unused (fail closed): it waits, and at the hard
/// deadline (`rotated_at + deadline_hours`) it is revoked with an alert naming the last caller.
pub fn gate_observed(
    pat: &Superseded<'_>,
    last_use: Option<&LastUse>,
    observed_until: Option<OffsetDateTime>,
    g: RevocationGate,
    now: OffsetDateTime,
) -> GateDecision {
    if now < pat.grace_ends {
        return GateDecision::NotDue;
    }
    let quiet = Duration::hours(g.quiet_hours.into());
    let deadline = pat.rotated_at + Duration::hours(g.deadline_hours.into());
    let last = last_use.filter(|u| u.at >= pat.rotated_at);
    let quiet_since = last.map(|u| u.at).unwrap_or(pat.rotated_at);
    let horizon = observed_until.map(|o| o.min(now));
    if let Some(h) = horizon
        && h - quiet_since >= quiet
    {
        let reason = match last {
            None => format!(
                "no audited use since the rotation at {} ({} hours without use; audit log read up to {})",
                rfc3339(pat.rotated_at),
                (h - pat.rotated_at).whole_hours(),
                rfc3339(h)
            ),
            Some(u) => format!(
                "last audited use at {} ({}), {} hours without use since (audit log read up to {})",
                rfc3339(u.at),
                caller(u),
                (h - u.at).whole_hours(),
                rfc3339(h)
            ),
        };
        return GateDecision::Revoke { reason };
    }
    if now >= deadline {
        return GateDecision::RevokeAtDeadline { alert: deadline_alert(pat, last, horizon, g) };
    }
    let (until, reason) = match (horizon, last) {
        (None, _) => (
            deadline,
            "no audit evidence (the audit log has not been read, cannot be read, or auditing looks off): \
             waiting, at the latest until the hard deadline"
                .to_owned(),
        ),
        // Quiet long enough by the clock, but the log was not read that far: the evidence lags.
        (Some(h), _) if quiet_since + quiet <= now => (
            deadline,
            format!(
                "the audit log was last read up to {}: no fresh evidence, waiting for a successful poll, at the \
                 latest until the hard deadline",
                rfc3339(h)
            ),
        ),
        (Some(_), Some(u)) => (
            (u.at + quiet).min(deadline),
            format!(
                "still used at {} ({}); a consumer has not switched to the new value yet",
                rfc3339(u.at),
                caller(u)
            ),
        ),
        (Some(_), None) => (
            (pat.rotated_at + quiet).min(deadline),
            format!("waiting for {} hours without use after the rotation", g.quiet_hours),
        ),
    };
    GateDecision::Wait { until, reason }
}

/// "IP x with user agent "y"", with placeholders for what the entry did not record.
fn caller(u: &LastUse) -> String {
    format!(
        "IP {} with user agent \"{}\"",
        if u.ip.is_empty() { "(not recorded)" } else { &u.ip },
        if u.user_agent.is_empty() { "(not recorded)" } else { &u.user_agent }
    )
}

/// The alert for a revocation at the hard deadline: critical when the PAT was still in use (naming the
/// last caller), a warning when there was no evidence either way.
fn deadline_alert(
    pat: &Superseded<'_>,
    last: Option<&LastUse>,
    horizon: Option<OffsetDateTime>,
    g: RevocationGate,
) -> Notice {
    match last {
        Some(u) => Notice::Finding {
            rule: DEADLINE_RULE.into(),
            severity: Severity::Critical,
            summary: format!(
                "PAT {} was revoked at its hard deadline ({} hours after the rotation) although it was still in \
                 use; the last caller, {} at {}, will now fail and must switch to the new value.",
                pat.label,
                g.deadline_hours,
                caller(u),
                rfc3339(u.at)
            ),
            evidence: vec![
                format!("audit entry {} ({}) at {}", u.entry_id, u.action_id, rfc3339(u.at)),
                format!("from {}", caller(u)),
                format!("rotated at {}", rfc3339(pat.rotated_at)),
            ],
            action: "revoked the previous PAT at the deadline".into(),
        },
        None => Notice::Finding {
            rule: DEADLINE_RULE.into(),
            severity: Severity::Warning,
            summary: format!(
                "PAT {} was revoked at its hard deadline ({} hours after the rotation) without audit evidence that \
                 it was unused; no caller is known.",
                pat.label, g.deadline_hours
            ),
            evidence: vec![
                match horizon {
                    Some(h) => {
                        format!("audit log read up to {}; no use of this PAT seen since the rotation", rfc3339(h))
                    }
                    None => "no audit evidence (log not read, unreadable, or auditing off)".to_owned(),
                },
                format!("rotated at {}", rfc3339(pat.rotated_at)),
            ],
            action: "revoked the previous PAT at the deadline".into(),
        },
    }
}

/// The rule name of the deadline alert.
pub const DEADLINE_RULE: &str = "revocation_deadline";

/// Whether a notice is the gate's deadline alert (it also goes to the `[audit]` recipients).
pub fn is_deadline_alert(n: &Notice) -> bool {
    matches!(n, Notice::Finding { rule, .. } if rule == DEADLINE_RULE)
}

/// What one organization's audit log has shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Uses are known up to here (the last completed window's end, less the log's delay); `None`: no evidence.
    #[serde(with = "time::serde::rfc3339::option")]
    pub observed_until: Option<OffsetDateTime>,
    pub last_use: HashMap<AuthorizationId, LastUse>,
    /// Why there is no evidence, when there is none.
    pub problem: Option<String>,
}

/// The plan's evidence input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub gate: EvidenceGate,
    /// By lower-case organization name.
    pub orgs: BTreeMap<String, Observed>,
}

/// A checkpoint as evidence: uses are known up to the window's end less the log's delay.
pub fn observed(cp: Checkpoint, delay: Duration) -> Observed {
    if cp.auditing_off {
        return Observed {
            observed_until: None,
            last_use: cp.last_use,
            problem: Some("auditing looks switched off in the organization".into()),
        };
    }
    Observed { observed_until: cp.window_end.map(|e| e - delay), last_use: cp.last_use, problem: None }
}
