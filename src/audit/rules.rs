//! The misuse rules: a pure evaluator over a stream of audit entries.
//!
//! `(entries, known-PAT context, settings, now) → findings`. [`Evaluator::observe`] looks at one entry and
//! emits the per-entry findings at once; [`Evaluator::finish`] emits the aggregate ones (a dormant PAT that
//! woke up) and returns the updated last-use record to persist. State is per PAT (last use, a burst window of
//! at most `max_actions + 1` timestamps), never per entry, so memory does not grow with the log.
//!
//! What is really in the audit log (see `docs/research` §4): PAT lifecycle events, and every *audited*
//! action with its `authenticationMechanism` — `PAT_… authorizationId: <id>` ties it to one PAT. Reads are
//! not audited, so usage rules see the PAT's state-changing actions only; the rule texts say so.

use super::context::{AuditContext, KnownPat, LastUse, Lifecycle, PatStatus};
use super::entry::{AuditEntry, AuthMechanism};
use super::finding::{Evidence, Finding, Subject, rfc3339};
use crate::domain::{AuthorizationId, OwnerId};
use crate::policy::audit::{AuditSettings, RuleId};
use std::collections::{HashMap, VecDeque};
use time::{Duration, OffsetDateTime};

/// Counts of one evaluation, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvalStats {
    pub entries: u64,
    pub pat_entries: u64,
    pub findings: u64,
}

/// What an evaluation leaves behind: counts and each PAT's last observed use (persist it for the next poll).
#[derive(Debug, Clone, Default)]
pub struct EvalOutcome {
    pub stats: EvalStats,
    pub last_use: HashMap<AuthorizationId, LastUse>,
}

/// Evaluates every rule on a stream of entries.
pub struct Evaluator<'c> {
    settings: &'c AuditSettings,
    ctx: &'c AuditContext,
    now: OffsetDateTime,
    last_use: HashMap<AuthorizationId, LastUse>,
    bursts: HashMap<AuthorizationId, VecDeque<OffsetDateTime>>,
    /// Per PAT: the earliest use in this batch, and its evidence when it ends a dormant period.
    earliest: HashMap<AuthorizationId, (OffsetDateTime, Option<(Evidence, OffsetDateTime)>)>,
    stats: EvalStats,
    dormant: Duration,
    burst_window: Duration,
    tolerance: Duration,
}

/// Convenience: evaluate a whole iterator and collect the findings (aggregate ones last).
pub fn evaluate<'a>(
    entries: impl IntoIterator<Item = AuditEntry<'a>>,
    settings: &AuditSettings,
    ctx: &AuditContext,
    now: OffsetDateTime,
) -> (Vec<Finding>, EvalOutcome) {
    let mut out = Vec::new();
    let mut ev = Evaluator::new(settings, ctx, now);
    for e in entries {
        ev.observe(&e, &mut |f| out.push(f));
    }
    let outcome = ev.finish(&mut |f| out.push(f));
    (out, outcome)
}

impl<'c> Evaluator<'c> {
    pub fn new(settings: &'c AuditSettings, ctx: &'c AuditContext, now: OffsetDateTime) -> Self {
        Self {
            settings,
            ctx,
            now,
            last_use: ctx.last_use.clone(),
            bursts: HashMap::new(),
            earliest: HashMap::new(),
            stats: EvalStats::default(),
            dormant: Duration::days(settings.dormant_days.into()),
            burst_window: Duration::minutes(settings.burst_window_minutes.into()),
            tolerance: Duration::minutes(settings.lifecycle_tolerance_minutes.into()),
        }
    }

    /// Looks at one entry; per-entry findings go to `emit` immediately.
    pub fn observe(&mut self, e: &AuditEntry<'_>, emit: &mut dyn FnMut(Finding)) {
        self.stats.entries += 1;
        let mut n = 0u64;
        let mut em = |f: Finding| {
            n += 1;
            emit(f);
        };
        if let AuthMechanism::Pat { authorization_id } = e.auth() {
            self.stats.pat_entries += 1;
            self.pat_usage(e, authorization_id, &mut em);
        }
        let action = e.action_id.as_ref();
        if let Some(rest) = action.strip_prefix("Token.") {
            self.token_event(e, rest, &mut em);
        } else if action.starts_with("OrganizationPolicy.") {
            self.policy_event(e, &mut em);
        } else if let Some(rest) = action.strip_prefix("AuditLog.") {
            self.audit_event(e, rest, &mut em);
        }
        self.stats.findings += n;
    }

    /// Emits aggregate findings and returns the counts and updated last-use record.
    pub fn finish(mut self, emit: &mut dyn FnMut(Finding)) -> EvalOutcome {
        if let Some(rule) = self.settings.rule(RuleId::DormantActive) {
            let mut woke: Vec<_> =
                self.earliest.drain().filter_map(|(id, (_, cand))| cand.map(|(ev, prior)| (id, ev, prior))).collect();
            woke.sort_by_key(|(_, ev, _)| ev.timestamp);
            for (id, evidence, prior) in woke {
                let known = self.ctx.pat(&id);
                let idle_days = (evidence.timestamp - prior).whole_days();
                let name = pat_label(known, Some(id));
                let summary = format!(
                    "{name} had no audited activity for {idle_days} days (since {}) and was used again at {} from {}; \
                     a dormant PAT that suddenly acts may be in someone else's hands.",
                    rfc3339(prior),
                    rfc3339(evidence.timestamp),
                    where_from(&evidence.ip_address, &evidence.user_agent),
                );
                emit(Finding {
                    rule: RuleId::DormantActive,
                    severity: rule.severity,
                    summary,
                    subject: Some(subject_of(known, Some(id))),
                    evidence,
                    detected_at: self.now,
                });
                self.stats.findings += 1;
            }
        }
        EvalOutcome { stats: self.stats, last_use: self.last_use }
    }

    fn finding(&self, rule: RuleId, summary: String, subject: Option<Subject>, e: &AuditEntry<'_>) -> Option<Finding> {
        let r = self.settings.rule(rule)?;
        Some(Finding { rule, severity: r.severity, summary, subject, evidence: Evidence::of(e), detected_at: self.now })
    }

    fn usage_rule_applies(&self, rule: RuleId, known: Option<&KnownPat>) -> bool {
        match self.settings.rule(rule) {
            Some(r) => known.is_some_and(KnownPat::is_managed) || r.include_unmanaged,
            None => false,
        }
    }

    fn pat_usage(&mut self, e: &AuditEntry<'_>, id: Option<AuthorizationId>, emit: &mut dyn FnMut(Finding)) {
        let ctx = self.ctx;
        let known = id.and_then(|i| ctx.pat(&i));
        let label = pat_label(known, id);
        let subject = || Some(subject_of(known, id));
        let managed = if known.is_some_and(KnownPat::is_managed) { "managed " } else { "" };

        if self.usage_rule_applies(RuleId::OutsideCidr, known)
            && !self.settings.allowed_cidrs.is_empty()
            && let Some(ip) = e.ip()
            && !self.settings.allowed_cidrs.iter().any(|n| n.contains(&ip))
        {
            let summary = format!(
                "{managed}{label} performed {} from {ip}, which is outside the allowed ranges ({}); the PAT may be \
                 used by someone outside your network.",
                e.action_id,
                self.settings.allowed_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            );
            emit_opt(emit, self.finding(RuleId::OutsideCidr, summary, subject(), e));
        }
        if self.usage_rule_applies(RuleId::OutsideHours, known)
            && let Some(h) = &self.settings.allowed_hours
            && !h.allows(e.timestamp)
        {
            let summary = format!(
                "{managed}{label} performed {} at {}, outside the allowed hours ({}).",
                e.action_id,
                rfc3339(e.timestamp),
                h.describe()
            );
            emit_opt(emit, self.finding(RuleId::OutsideHours, summary, subject(), e));
        }
        if self.usage_rule_applies(RuleId::BrowserUserAgent, known) && is_browser(&e.user_agent) {
            let summary = format!(
                "{managed}{label} was used with a web browser's user agent ({}); PATs are for scripts and \
                 services, so a person may have pasted it into a browser tool.",
                clip(&e.user_agent, 120)
            );
            emit_opt(emit, self.finding(RuleId::BrowserUserAgent, summary, subject(), e));
        }
        if let Some(k) = known
            && let PatStatus::Superseded { rotated_at, grace_ends } = k.status
            && e.timestamp > grace_ends
        {
            let summary = format!(
                "{label} was replaced by patrol at {} and its grace period ended at {}, yet it performed {} at {} \
                 from {}; a consumer is still on the old value.",
                rfc3339(rotated_at),
                rfc3339(grace_ends),
                e.action_id,
                rfc3339(e.timestamp),
                where_from(&e.ip_address, &e.user_agent)
            );
            emit_opt(emit, self.finding(RuleId::ConsumerLag, summary, subject(), e));
        }
        let Some(id) = id else { return };

        if self.usage_rule_applies(RuleId::Burst, known) {
            let max = self.settings.burst_max_actions as usize;
            let window = self.burst_window;
            let q = self.bursts.entry(id).or_default();
            // Entries arrive newest first (or oldest first); either way the window is |first - last|.
            q.push_back(e.timestamp);
            while let Some(front) = q.front() {
                if (e.timestamp - *front).abs() > window {
                    q.pop_front();
                } else {
                    break;
                }
            }
            if q.len() > max {
                q.clear();
                let summary = format!(
                    "{label} performed more than {max} audited actions within {} minutes (the last at {} from {}); \
                     a burst like this suggests automation that is not the PAT's usual consumer.",
                    self.settings.burst_window_minutes,
                    rfc3339(e.timestamp),
                    where_from(&e.ip_address, &e.user_agent)
                );
                emit_opt(emit, self.finding(RuleId::Burst, summary, subject(), e));
            }
        }

        // Dormancy is judged against the last use known before this batch (or the PAT's creation).
        let prior = self.ctx.last_use.get(&id).map(|u| u.at).or(known.map(|k| k.valid_from));
        if self.settings.rule(RuleId::DormantActive).is_some()
            && let Some(prior) = prior
        {
            let slot = self.earliest.entry(id).or_insert((e.timestamp, None));
            if e.timestamp <= slot.0 {
                slot.0 = e.timestamp;
                slot.1 = (e.timestamp - prior > self.dormant).then(|| (Evidence::of(e), prior));
            }
        }

        match self.last_use.get(&id) {
            Some(u) if u.at >= e.timestamp => {}
            _ => {
                self.last_use.insert(
                    id,
                    LastUse {
                        at: e.timestamp,
                        ip: e.ip_address.to_string(),
                        user_agent: e.user_agent.to_string(),
                        action_id: e.action_id.to_string(),
                        entry_id: e.id.to_string(),
                    },
                );
            }
        }
    }

    fn token_event(&mut self, e: &AuditEntry<'_>, rest: &str, emit: &mut dyn FnMut(Finding)) {
        let ctx = self.ctx;
        let name = e.data.get(&["DisplayName", "TokenDisplayName", "PatDisplayName", "Name"]).unwrap_or("");
        let owner_upn = e.data.get(&["OwnerUPN", "OwnerUpn", "OwnerPrincipalName", "UserPrincipalName"]);
        let owner_name = e.data.get(&["OwnerName", "Owner", "UserName"]);
        let data_id = e
            .data
            .get(&["AuthorizationId", "AuthorizationID", "TokenId", "PatId"])
            .and_then(|s| AuthorizationId::parse(s).ok());
        // The token's owner: named in data for admin/system events, otherwise the actor (users manage their own).
        let owner_text = owner_upn.or(owner_name.filter(|n| n.contains('@'))).unwrap_or(e.actor_upn.as_ref());
        let owner = OwnerId::parse(owner_text).ok();
        let known = data_id
            .and_then(|i| ctx.pat(&i))
            .or_else(|| (!name.is_empty()).then(|| ctx.pat_by_name(owner.as_ref(), name)).flatten());
        let id = data_id.or(known.map(|k| k.authorization_id));
        let label = if name.is_empty() { pat_label(known, id) } else { format!("PAT \"{}\"", clip(name, 100)) };
        let owner_label = owner
            .as_ref()
            .map(|o| o.to_string())
            .or(owner_name.map(str::to_owned))
            .unwrap_or_else(|| "an unknown owner".into());
        let subject = Subject {
            authorization_id: id,
            display_name: (!name.is_empty()).then(|| name.to_owned()).or(known.map(|k| k.display_name.clone())),
            owner: owner.clone().or(known.map(|k| k.owner.clone())),
            secret: known.and_then(|k| k.secret.clone()),
        };
        let managed_note = if subject.secret.is_some() { " It is managed by patrol." } else { "" };

        match rest {
            "PatPublicDiscoveryEvent" => {
                let summary = format!(
                    "{label} of {owner_label} was discovered in a public repository: its value is leaked and must be \
                     replaced.{managed_note}"
                );
                emit_opt(emit, self.finding(RuleId::Leak, summary, Some(subject), e));
                return;
            }
            "PatSystemRevokeEvent" => {
                let summary = format!(
                    "{label} of {owner_label} was revoked by Azure DevOps itself (leak protection): its value was \
                     exposed and its consumers now fail.{managed_note}"
                );
                emit_opt(emit, self.finding(RuleId::Leak, summary, Some(subject), e));
                return;
            }
            _ => {}
        }
        let Some(kind) = Lifecycle::from_action(e.action_id.as_ref()) else { return };

        if matches!(kind, Lifecycle::Create | Lifecycle::Update) {
            let scope = e.data.get(&["Scope", "Scopes", "TokenScope", "Scopes_Display"]);
            let full = scope.map(|s| s.split([' ', ',']).any(|x| x.trim() == "app_token")).unwrap_or(false)
                || known.is_some_and(|k| k.scope.split_whitespace().any(|x| x == "app_token"));
            let all_orgs = e
                .data
                .get(&["AllOrgs", "IsGlobal", "Global"])
                .map(|v| v.eq_ignore_ascii_case("true"))
                .or_else(|| e.data.get(&["TargetAccounts"]).map(|v| v.is_empty() || v == "null"))
                .unwrap_or(false)
                || known.is_some_and(|k| k.global);
            if full || all_orgs {
                let what = match (full, all_orgs) {
                    (true, true) => "full-access (app_token) and valid in all organizations",
                    (true, false) => "full-access (app_token)",
                    _ => "valid in all organizations (global; these stop working on 2026-12-01)",
                };
                let verb = if kind == Lifecycle::Create { "created" } else { "changed to be" };
                let summary = format!(
                    "{label} of {owner_label} was {verb} {what}; such a PAT opens far more than one job needs."
                );
                emit_opt(emit, self.finding(RuleId::BroadPat, summary, Some(subject.clone()), e));
            }
        }

        // Revoking a superseded PAT once its grace has ended is patrol's own drain step: expected, not foreign.
        let expected_drain = kind == Lifecycle::Revoke
            && known.is_some_and(|k| {
                matches!(k.status, PatStatus::Superseded { grace_ends, .. } if e.timestamp + self.tolerance >= grace_ends)
            });
        if let Some(o) = owner.as_ref().and_then(|o| ctx.managed_owner(o.as_str())).cloned()
            && !expected_drain
            && !ctx.patrol_did(kind, &o, name, id, e.timestamp, self.tolerance)
        {
            let verb = match kind {
                Lifecycle::Create => "created",
                Lifecycle::Update => "changed or regenerated",
                Lifecycle::Revoke => "revoked",
            };
            let by = Evidence::of(e).actor;
            let summary = format!(
                "{label} on {o}'s account was {verb} by {} at {}, and patrol did not do it; someone else is \
                 managing tokens of an account patrol manages.{managed_note}",
                if by.is_empty() { "an unknown actor".to_owned() } else { by },
                rfc3339(e.timestamp)
            );
            emit_opt(emit, self.finding(RuleId::ForeignLifecycle, summary, Some(subject), e));
        }
    }

    fn policy_event(&mut self, e: &AuditEntry<'_>, emit: &mut dyn FnMut(Finding)) {
        let name = e.data.get(&["PolicyName", "Policy", "Name"]).unwrap_or("");
        let value = e.data.get(&["PolicyValue", "Value", "NewValue"]).unwrap_or("");
        let what = if name.is_empty() { e.details.to_string() } else { format!("\"{name}\" = {value:?}") };
        let audit_off = name.to_ascii_lowercase().contains("audit")
            && ["false", "off", "disabled", "0"].iter().any(|v| value.eq_ignore_ascii_case(v));
        let by = Evidence::of(e).actor;
        if audit_off {
            let summary = format!(
                "Auditing was turned off for the organization by {by} ({what}); from now on misuse leaves no trace \
                 and patrol cannot watch PATs."
            );
            emit_opt(emit, self.finding(RuleId::AuditTampering, summary, None, e));
        } else {
            let summary = format!(
                "Organization policy changed ({}: {what}) by {by}; policy changes can weaken PAT restrictions.",
                e.action_id
            );
            emit_opt(emit, self.finding(RuleId::PolicyChange, summary, None, e));
        }
    }

    fn audit_event(&mut self, e: &AuditEntry<'_>, rest: &str, emit: &mut dyn FnMut(Finding)) {
        let lower = rest.to_ascii_lowercase();
        if lower.starts_with("stream") && (lower.contains("disabled") || lower.contains("deleted")) {
            let by = Evidence::of(e).actor;
            let summary = format!(
                "The audit stream was {} ({} by {by}); audit events may no longer reach your SIEM.",
                if lower.contains("deleted") { "deleted" } else { "disabled" },
                e.action_id
            );
            emit_opt(emit, self.finding(RuleId::AuditTampering, summary, None, e));
        }
    }
}

fn emit_opt(emit: &mut dyn FnMut(Finding), f: Option<Finding>) {
    if let Some(f) = f {
        emit(f);
    }
}

fn pat_label(known: Option<&KnownPat>, id: Option<AuthorizationId>) -> String {
    match (known, id) {
        (Some(k), _) => format!("PAT \"{}\" ({}) of {}", clip(&k.display_name, 100), k.authorization_id, k.owner),
        (None, Some(id)) => format!("PAT {id}"),
        (None, None) => "a PAT (authorization id not recorded)".to_owned(),
    }
}

fn subject_of(known: Option<&KnownPat>, id: Option<AuthorizationId>) -> Subject {
    Subject {
        authorization_id: id.or(known.map(|k| k.authorization_id)),
        display_name: known.map(|k| k.display_name.clone()),
        owner: known.map(|k| k.owner.clone()),
        secret: known.and_then(|k| k.secret.clone()),
    }
}

fn where_from(ip: &str, ua: &str) -> String {
    let ip = if ip.is_empty() { "an unrecorded address" } else { ip };
    if ua.is_empty() { format!("IP {ip}") } else { format!("IP {ip} with user agent \"{}\"", clip(ua, 120)) }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

/// A web browser's user agent: `Mozilla/…` plus a rendering engine or browser token (the Sentinel "PAT used
/// with Browser" heuristic). PowerShell's `Mozilla/5.0 (…) WindowsPowerShell/5.1` is not a browser.
pub fn is_browser(ua: &str) -> bool {
    if !ua.contains("Mozilla/") {
        return false;
    }
    const ENGINES: [&str; 9] =
        ["Gecko/", "AppleWebKit/", "Trident/", "Presto/", "Chrome/", "Firefox/", "Safari/", "Edg/", "OPR/"];
    ENGINES.iter().any(|t| ua.contains(t))
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
