//! The consumer gate on revoking a previous PAT (pure): the previous PAT is revoked only once every
//! consumer has the new value and, where evidence exists, used it — a service connection's pipeline run
//! after the update, a webhook consumer's signed acknowledgement — or a `reference` consumer's declared
//! lag has passed. At `[consumers] deadline_hours` after the rotation it is revoked anyway, with an alert
//! naming the consumers that did not move.

use super::policy::{Consumer, ConsumerKind};
use super::state::{Delivery, DeliveryStep};
use crate::domain::{AuthorizationId, SecretName};
use crate::notify::{Notice, Severity};
use crate::policy::ManagedToken;
use time::{Duration, OffsetDateTime};

/// What the consumers say about revoking the previous PAT now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerGate {
    /// No consumers, or every one moved (the reasons, in words).
    Ready(Vec<String>),
    /// Keep the previous PAT; look again by `until` at the latest.
    Wait { until: OffsetDateTime, reason: String },
    /// The deadline passed: revoke, and send `alert` naming the consumers that did not move.
    Deadline { alert: Notice, reason: String },
}

/// Whether one consumer moved to `current`: `Ok(why)` or `Err((why not, when it may move by itself))`.
pub fn moved(
    c: &Consumer,
    d: Option<&Delivery>,
    current: AuthorizationId,
    now: OffsetDateTime,
) -> Result<String, (String, Option<OffsetDateTime>)> {
    let Some(d) = d.filter(|d| d.authorization_id == current) else {
        return Err(("not delivered yet".into(), None));
    };
    if let Some(lag) = c.lag_hours() {
        let by = d.since + Duration::hours(i64::from(lag));
        return if now >= by {
            Ok(format!("its declared lag of {lag} h has passed"))
        } else {
            Err((format!("may lag up to {lag} h (until {})", fmt(by)), Some(by)))
        };
    }
    match &d.step {
        DeliveryStep::ReadsVault => Ok("reads the vault itself".into()),
        DeliveryStep::Pending | DeliveryStep::Writing { .. } => Err((
            match &d.last_error {
                Some(e) => {
                    format!("not delivered: failing since {}: {e}", d.failing_since.map(fmt).unwrap_or_default())
                }
                None => "not delivered yet".into(),
            },
            None,
        )),
        DeliveryStep::Delivered { at, .. } => {
            let needs_evidence = match &c.kind {
                ConsumerKind::DevopsServiceConnection { .. } => {
                    Some("no pipeline run seen using the connection since (each run looks again)")
                }
                ConsumerKind::Webhook { ack: true, .. } => {
                    Some("no acknowledgement recorded since (each run looks again)")
                }
                _ => None,
            };
            match (needs_evidence, &d.evidence) {
                (None, _) => Ok(format!("delivered at {}", fmt(*at))),
                (Some(_), Some(e)) => Ok(format!("delivered at {}, used: {}", fmt(*at), e.what)),
                (Some(missing), None) => Err((format!("delivered at {}, {missing}", fmt(*at)), None)),
            }
        }
    }
}

fn fmt(t: OffsetDateTime) -> String {
    crate::timestamp::rfc3339(t)
}

/// The gate for a previous PAT replaced at `rotated_at` by `current`.
pub fn decide(
    token: &ManagedToken,
    deliveries: &[Delivery],
    current: Option<AuthorizationId>,
    previous: AuthorizationId,
    rotated_at: OffsetDateTime,
    now: OffsetDateTime,
) -> ConsumerGate {
    let consumers = &token.consumers;
    if consumers.is_empty() {
        return ConsumerGate::Ready(Vec::new());
    }
    let Some(current) = current else {
        return ConsumerGate::Ready(vec!["no current PAT".into()]);
    };
    let deadline = rotated_at + Duration::hours(i64::from(consumers.settings.deadline_hours));
    let mut ok = Vec::new();
    let mut waiting: Vec<(&Consumer, String)> = Vec::new();
    let mut until = deadline;
    for c in &consumers.list {
        let d = deliveries.iter().find(|d| d.consumer == c.id);
        match moved(c, d, current, now) {
            Ok(why) => ok.push(format!("{}: {why}", c.id)),
            Err((why, by)) => {
                if let Some(by) = by {
                    until = until.min(by);
                }
                waiting.push((c, why));
            }
        }
    }
    if waiting.is_empty() {
        return ConsumerGate::Ready(ok);
    }
    let names: Vec<String> = waiting.iter().map(|(c, why)| format!("{} ({why})", c.id)).collect();
    if now >= deadline {
        return ConsumerGate::Deadline {
            reason: format!(
                "consumer deadline: {} hours after the rotation; not moved: {}",
                consumers.settings.deadline_hours,
                names.join("; ")
            ),
            alert: deadline_alert(&token.secret, previous, consumers.settings.deadline_hours, &waiting),
        };
    }
    ConsumerGate::Wait { until, reason: format!("consumers have not moved: {}", names.join("; ")) }
}

fn deadline_alert(
    secret: &SecretName,
    previous: AuthorizationId,
    hours: u32,
    waiting: &[(&Consumer, String)],
) -> Notice {
    Notice::Finding {
        rule: "consumer-deadline".into(),
        severity: Severity::Critical,
        summary: format!(
            "{secret}: previous PAT {previous} revoked at the consumer deadline ({hours} h); {} consumer(s) had not moved to the new PAT",
            waiting.len()
        ),
        evidence: waiting.iter().map(|(c, why)| format!("{}: {why}", c.id)).collect(),
        action: waiting.iter().map(|(c, _)| super::fix(c)).collect::<Vec<_>>().join(" "),
    }
}

/// The consumer gate for one drain of a token: `None` when it does not apply (no consumers, or the
/// previous PAT was replaced because it is compromised — that one is never held back for consumers).
pub fn for_drain(
    token: &ManagedToken,
    journal: &crate::state::journal::Journal,
    drain: &crate::state::journal::Drain,
    current: Option<AuthorizationId>,
    now: OffsetDateTime,
) -> Option<ConsumerGate> {
    if token.consumers.is_empty() {
        return None;
    }
    let last = journal.last.as_ref().filter(|l| drain.replaced_by.as_ref() == Some(&l.op));
    if last.is_some_and(|l| l.reason == crate::state::journal::Reason::Compromised) {
        return None;
    }
    let rotated_at =
        last.map(|l| l.finished).unwrap_or(drain.revoke_after - Duration::days(i64::from(token.grace_days)));
    Some(decide(token, &journal.deliveries, current, drain.pat.authorization_id, rotated_at, now))
}

/// The consumers of `token` that need the machine now: a write owed (`deliver`) or, while a previous
/// PAT waits for them, evidence of use still missing (`observe`).
pub fn due(
    token: &ManagedToken,
    journal: &crate::state::journal::Journal,
    current: Option<AuthorizationId>,
    waiting_drains: bool,
    now: OffsetDateTime,
) -> Vec<String> {
    let Some(current) = current else { return Vec::new() };
    let mut out = Vec::new();
    for c in &token.consumers.list {
        let d = journal.deliveries.iter().find(|d| d.consumer == c.id && d.authorization_id == current);
        let needed = match d {
            None => true,
            Some(d) if d.write_due(now) => true,
            Some(d) => {
                waiting_drains
                    && d.evidence.is_none()
                    && matches!(d.step, DeliveryStep::Delivered { .. })
                    && matches!(
                        c.kind,
                        ConsumerKind::DevopsServiceConnection { .. } | ConsumerKind::Webhook { ack: true, .. }
                    )
            }
        };
        if needed {
            out.push(c.id.clone());
        }
    }
    out
}
