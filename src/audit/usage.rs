//! Stale, shared and dead PATs (issue 21): for every PAT in the inventory, managed or not, the last audited
//! use patrol has seen and how long the organization's log has been watched; "no audited use in N days"
//! once the log has been watched N days; PATs that look shared (several pipelines, user agents or declared
//! consumers); all-organization PATs, which stopped working on 2026-12-01.
//!
//! **"No audited use" is evidence, not proof.** The audit log records audited actions (changes of state),
//! not every use: a PAT that only reads (clones, package downloads, API GETs) leaves no entry at all. So a
//! PAT with no audited use may still be in daily use; it is a question for its owner, never an automatic
//! verdict. Every sentence this module writes says so.
//!
//! The optional response `revoke` (policy `[audit.stale] response = "revoke"`) never acts at once: the owner
//! is told the date and how to keep the PAT (use it, or list it under `keep`), and only after the notice
//! period, with the PAT still unused, the log still watched and auditing not looking off, and `dry_run`
//! off, is it revoked. Managed PATs are never revoked this way (the next rotation would replace them):
//! their owner decides between rotating on and retiring it. Shared PATs get a suggested split only.
//!
//! The pure part ([`assess`], [`looks_shared`], [`plan_notices`]) takes facts and returns verdicts; [`run`]
//! reads the checkpoints and the notice document, revokes what is due and saves.

use super::context::LastUse;
use super::entry::AuditEntry;
use super::finding::rfc3339;
use super::ingest::{Checkpoint, checkpoint_key};
use crate::devops::{Connector, GLOBAL_PAT_CUTOFF};
use crate::domain::{AuthorizationId, OrgName, OwnerId};
use crate::notify::{Addressed, Notice, Severity, Target};
use crate::state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::{Duration, OffsetDateTime};

/// The caveat shown wherever "no audited use" is.
pub use crate::report::NO_AUDITED_USE_CAVEAT as CAVEAT;

/// The most distinct values kept per kind and PAT (the oldest seen is dropped first).
const PROFILE_MAX: usize = 16;

pub use crate::evidence::UseProfile;

fn remember(map: &mut BTreeMap<String, i64>, value: &str, at: i64) {
    let v = value.trim();
    if v.is_empty() {
        return;
    }
    let e = map.entry(v.chars().take(200).collect()).or_insert(at);
    *e = (*e).max(at);
    while map.len() > PROFILE_MAX {
        let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else { break };
        map.remove(&oldest);
    }
}

/// The address range an address belongs to, as the report shows it.
pub fn range_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The product of a user agent (`git/2.45.1 (Linux)` → `git`), so an upgrade is not a second consumer.
pub fn product_of(user_agent: &str) -> String {
    user_agent.split(['/', ' ', '(']).next().unwrap_or_default().to_ascii_lowercase()
}

impl UseProfile {
    pub fn observe(&mut self, e: &AuditEntry<'_>) {
        let at = e.timestamp.unix_timestamp();
        remember(&mut self.user_agents, &e.user_agent, at);
        if let Some(ip) = e.ip() {
            remember(&mut self.ranges, &range_of(ip), at);
        }
        if let Some(p) = e.data.get(&["PipelineName", "DefinitionName", "BuildDefinitionName", "ReleaseDefinitionName"])
        {
            remember(&mut self.pipelines, p, at);
        }
    }

    /// Drops values last seen before `oldest`.
    pub fn prune(&mut self, oldest: OffsetDateTime) {
        let t = oldest.unix_timestamp();
        self.user_agents.retain(|_, s| *s >= t);
        self.ranges.retain(|_, s| *s >= t);
        self.pipelines.retain(|_, s| *s >= t);
    }

    pub fn is_empty(&self) -> bool {
        self.user_agents.is_empty() && self.ranges.is_empty() && self.pipelines.is_empty()
    }

    fn products(&self) -> BTreeSet<String> {
        self.user_agents.keys().map(|u| product_of(u)).filter(|p| !p.is_empty()).collect()
    }
}

pub use crate::policy::audit::{StalePolicy, StaleResponse};

impl StalePolicy {
    fn keeps(&self, pat: &UsagePat) -> bool {
        let id = pat.authorization_id.to_string();
        self.keep.iter().any(|k| k.trim().eq_ignore_ascii_case(&pat.display_name) || k.trim().eq_ignore_ascii_case(&id))
    }
}

/// A PAT of the inventory, as this module needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsagePat {
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub owner: OwnerId,
    pub organization: OrgName,
    /// The managed secret that holds it (`None`: not patrol's).
    pub secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    pub global: bool,
    /// Consumers the policy declares for it (`[[token.consumer]]`), by description.
    pub consumers: Vec<String>,
}

/// The engine's inventory as this module takes it: every active PAT of every listed (owner, organization),
/// with the managed secret that holds it (current, draining or being rotated) and its declared consumers.
pub fn pats_from_inventory(
    inv: &crate::rotation::inventory::Inventory,
    policy: &crate::rotation::policy::Policy,
) -> Vec<UsagePat> {
    let mut secret_of: HashMap<AuthorizationId, &crate::domain::SecretName> = HashMap::new();
    for (secret, ts) in &inv.tokens {
        for d in &ts.journal.drains {
            secret_of.insert(d.pat.authorization_id, secret);
        }
        if let Some(c) = &ts.journal.current {
            secret_of.insert(c.authorization_id, secret);
        }
        if let Some(id) = ts.current_authorization_id() {
            secret_of.insert(id, secret);
        }
    }
    let mut out = Vec::new();
    for o in inv.owners.iter().filter(|o| o.error.is_none()) {
        for p in &o.pats {
            let secret = secret_of.get(&p.authorization_id).copied();
            let consumers = secret
                .and_then(|s| policy.token(s))
                .map(|t| t.consumers.list.iter().map(|c| c.id.clone()).collect())
                .unwrap_or_default();
            out.push(UsagePat {
                authorization_id: p.authorization_id,
                display_name: p.display_name.clone(),
                owner: o.owner.clone(),
                organization: o.organization.clone(),
                secret: secret.map(|s| s.to_string()),
                valid_from: p.valid_from,
                valid_to: p.valid_to,
                global: p.is_global(),
                consumers,
            });
        }
    }
    out
}

/// What the log says about one organization.
#[derive(Debug, Clone, Default)]
pub struct OrgWatch {
    pub watched_since: Option<OffsetDateTime>,
    pub auditing_off: bool,
    pub last_use: HashMap<AuthorizationId, LastUse>,
    pub usage: HashMap<AuthorizationId, UseProfile>,
}

impl From<Checkpoint> for OrgWatch {
    fn from(cp: Checkpoint) -> Self {
        Self {
            watched_since: cp.window_end.and(cp.watched_since),
            auditing_off: cp.auditing_off,
            last_use: cp.last_use,
            usage: cp.usage,
        }
    }
}

/// One PAT's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// An audited use within the last N days.
    Used,
    /// No audited use in the last N days, with the log watched at least that long.
    NoAuditedUse { days: i64 },
    /// No audited use yet, but the log (or the PAT) is younger than N days: nothing to say yet.
    TooEarly { watched_days: i64 },
    /// The organization's log is not watched, or auditing looks off: no evidence either way.
    NoEvidence { reason: String },
    /// An all-organization PAT: stopped working on 2026-12-01.
    Dead,
}

/// The verdict for one PAT (pure).
pub fn assess(pat: &UsagePat, watch: Option<&OrgWatch>, days: u32, now: OffsetDateTime) -> Verdict {
    if pat.global && now >= GLOBAL_PAT_CUTOFF {
        return Verdict::Dead;
    }
    let n = Duration::days(days.into());
    let Some(w) = watch else {
        return Verdict::NoEvidence { reason: format!("patrol does not read the audit log of {}", pat.organization) };
    };
    let last = w.last_use.get(&pat.authorization_id);
    if last.is_some_and(|u| now - u.at < n) {
        return Verdict::Used;
    }
    if w.auditing_off {
        return Verdict::NoEvidence {
            reason: format!("auditing looks switched off in {}: the log cannot show use", pat.organization),
        };
    }
    let Some(since) = w.watched_since else {
        return Verdict::NoEvidence { reason: format!("the audit log of {} has not been read yet", pat.organization) };
    };
    // The quiet period starts at the last audited use, else when both the watch and the PAT existed.
    let quiet_from = match last {
        Some(u) => u.at.max(pat.valid_from),
        None => since.max(pat.valid_from),
    };
    let quiet = now - quiet_from;
    if quiet >= n && now - since >= n {
        Verdict::NoAuditedUse { days: quiet.whole_days() }
    } else {
        Verdict::TooEarly { watched_days: (now - since).whole_days().max(0) }
    }
}

/// Why a PAT looks shared, or `None` (pure). Declared consumers count; from the log, two or more pipelines
/// or two or more user-agent products (an upgrade of one tool is not a second consumer). Address ranges are
/// shown as supporting evidence only: hosted build agents change addresses.
pub fn looks_shared(pat: &UsagePat, profile: Option<&UseProfile>) -> Option<Vec<String>> {
    let mut evidence = Vec::new();
    if pat.consumers.len() >= 2 {
        evidence.push(format!(
            "{} consumers declared in the policy: {}",
            pat.consumers.len(),
            pat.consumers.join(", ")
        ));
    }
    if let Some(p) = profile {
        if p.pipelines.len() >= 2 {
            evidence.push(format!(
                "audited actions from {} pipelines: {}",
                p.pipelines.len(),
                p.pipelines.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let products = p.products();
        if products.len() >= 2 {
            evidence.push(format!(
                "audited actions from {} different clients: {}",
                products.len(),
                p.user_agents.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !evidence.is_empty() && p.ranges.len() >= 2 {
            evidence.push(format!(
                "from {} address ranges: {}",
                p.ranges.len(),
                p.ranges.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    (!evidence.is_empty()).then_some(evidence)
}

/// A revocation announced to a stale PAT's owner (state document [`NOTICES_KEY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub display_name: String,
    pub owner: OwnerId,
    pub organization: OrgName,
    #[serde(with = "time::serde::rfc3339")]
    pub announced_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub revoke_on: OffsetDateTime,
}

/// What happened to announcements, kept for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub owner: OwnerId,
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notices {
    #[serde(default)]
    pub pending: BTreeMap<AuthorizationId, Announcement>,
    /// The last 200 closed announcements (revoked, kept because used, kept on request, gone).
    #[serde(default)]
    pub closed: Vec<Closed>,
}

pub const NOTICES_KEY: &str = "audit/stale-notices";

/// One step the notice machine takes for a PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Tell the owner; revoke on `revoke_on` unless used or kept.
    Announce {
        #[serde(with = "time::serde::rfc3339")]
        revoke_on: OffsetDateTime,
    },
    /// The notice period is over and the PAT is still without audited use: revoke (or, in a dry run, say so).
    Revoke { dry_run: bool },
    /// Waiting: the date has not come, or there is no evidence now (auditing off, log unread).
    Wait { why: String },
    /// The announcement is withdrawn (used since, listed under `keep`, response no longer `revoke`).
    Withdraw { why: String },
    /// The announced PAT is no longer among its owner's active PATs (revoked by someone else, expired or
    /// deleted) before patrol revoked it: the notice is closed, nothing more happens.
    Close { why: String },
}

/// What to do for each PAT under `response = "revoke"` (pure). Only unmanaged, organization-scoped PATs with
/// evidence are announced; an announcement whose PAT has evidence of use again, or is kept, is withdrawn; one
/// whose PAT is gone from a complete listing of its owner (`listed`: the (owner, organization) pairs whose
/// active PATs were all listed) is closed. A pair that could not be listed says nothing: its announcements wait.
pub fn plan_notices(
    pats: &[(UsagePat, Verdict)],
    pending: &BTreeMap<AuthorizationId, Announcement>,
    listed: &BTreeSet<(OwnerId, OrgName)>,
    policy: &StalePolicy,
    now: OffsetDateTime,
) -> Vec<(AuthorizationId, Step)> {
    let mut out = Vec::new();
    for (id, a) in pending {
        if !pats.iter().any(|(p, _)| p.authorization_id == *id)
            && listed.contains(&(a.owner.clone(), a.organization.clone()))
        {
            out.push((
                *id,
                Step::Close {
                    why: format!(
                        "no longer among {}'s active PATs in {} (revoked by someone else, expired or deleted) before \
                         the announced revocation on {}",
                        a.owner,
                        a.organization,
                        rfc3339(a.revoke_on)
                    ),
                },
            ));
        }
    }
    for (pat, verdict) in pats {
        let id = pat.authorization_id;
        let announced = pending.get(&id);
        let eligible = policy.response == StaleResponse::Revoke && pat.secret.is_none() && !pat.global;
        if let Some(a) = announced {
            if let Some(secret) = pat.secret.as_deref() {
                out.push((id, Step::Withdraw { why: format!("now managed by patrol (secret {secret})") }));
            } else if !eligible {
                out.push((id, Step::Withdraw { why: "the policy's stale response is no longer revoke".into() }));
            } else if policy.keeps(pat) {
                out.push((id, Step::Withdraw { why: "listed under [audit.stale] keep".into() }));
            } else {
                match verdict {
                    Verdict::Used => out.push((id, Step::Withdraw { why: "used since the announcement".into() })),
                    Verdict::NoAuditedUse { .. } if now >= a.revoke_on => {
                        out.push((id, Step::Revoke { dry_run: policy.dry_run }))
                    }
                    Verdict::NoAuditedUse { .. } => {
                        out.push((id, Step::Wait { why: format!("revocation due on {}", rfc3339(a.revoke_on)) }))
                    }
                    Verdict::NoEvidence { reason } => out.push((id, Step::Wait { why: reason.clone() })),
                    Verdict::TooEarly { .. } => {
                        out.push((id, Step::Wait { why: "the log has not been watched long enough".into() }))
                    }
                    Verdict::Dead => {}
                }
            }
        } else if eligible && !policy.keeps(pat) && matches!(verdict, Verdict::NoAuditedUse { .. }) {
            out.push((id, Step::Announce { revoke_on: now + Duration::days(policy.notice_days.into()) }));
        }
    }
    out
}

/// One row of the report's section, for every stale, shared or dead PAT.
pub use crate::report::UsageRow as Row;

/// Everything [`run`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageReport {
    /// Per PAT: last audited use, since when the log is watched, verdict.
    pub pats: Vec<PatUsage>,
    pub rows: Vec<Row>,
    pub steps: Vec<(AuthorizationId, Step)>,
    /// Revocations done (or, dry run, that would have been).
    pub revoked: Vec<String>,
    pub notices: Vec<Addressed>,
    pub errors: Vec<String>,
}

/// One PAT's usage facts, as `inventory` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatUsage {
    pub authorization_id: AuthorizationId,
    pub last_use: Option<LastUse>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub watched_since: Option<OffsetDateTime>,
    pub verdict: Verdict,
    /// A pending revocation announcement's date.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoke_on: Option<OffsetDateTime>,
}

/// The owner's address for notices: their UPN.
fn owner_target(owner: &OwnerId) -> Vec<Target> {
    Target::parse(&format!("email:{owner}")).map(|t| vec![t]).unwrap_or_default()
}

/// What `patrol audit` judges staleness on (pure): the timer's checkpoint (how long the log has been watched,
/// every use it saw) joined with the window the command just read (`fresh`, a throwaway checkpoint). The
/// coverage is continuous from the older start only when the timer's last window reaches the fresh one;
/// the latest use of each PAT wins; auditing looks off when either says so.
pub fn merge_watch(timer: Option<Checkpoint>, fresh: Checkpoint) -> Checkpoint {
    let Some(t) = timer else { return fresh };
    let mut out = fresh.clone();
    let continuous = matches!((t.window_end, fresh.watched_since), (Some(end), Some(start)) if end >= start);
    if continuous {
        out.watched_since = match (t.watched_since, fresh.watched_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for (id, u) in t.last_use {
        match out.last_use.get(&id) {
            Some(f) if f.at >= u.at => {}
            _ => {
                out.last_use.insert(id, u);
            }
        }
    }
    for (id, p) in t.usage {
        let e = out.usage.entry(id).or_default();
        for (k, v) in p.user_agents {
            remember(&mut e.user_agents, &k, v);
        }
        for (k, v) in p.ranges {
            remember(&mut e.ranges, &k, v);
        }
        for (k, v) in p.pipelines {
            remember(&mut e.pipelines, &k, v);
        }
    }
    out.auditing_off = t.auditing_off || fresh.auditing_off;
    out
}

/// Reads each organization's audit checkpoint (`None` where patrol has never read the log).
pub async fn watches(
    state: &dyn StateStore,
    orgs: impl IntoIterator<Item = OrgName>,
) -> (HashMap<OrgName, OrgWatch>, Vec<String>) {
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for org in orgs.into_iter().collect::<BTreeSet<_>>() {
        match state.load(&checkpoint_key(&org)).await {
            Ok(Some((body, _))) => match serde_json::from_slice::<Checkpoint>(&body) {
                Ok(cp) => {
                    out.insert(org, OrgWatch::from(cp));
                }
                Err(e) => errors.push(format!("audit checkpoint of {org} is corrupt: {e}")),
            },
            Ok(None) => {}
            Err(e) => errors.push(format!("reading the audit checkpoint of {org}: {e}")),
        }
    }
    (out, errors)
}

/// The (owner, organization) pairs of an inventory whose active PATs were all listed.
pub fn listed_pairs(inv: &crate::rotation::inventory::Inventory) -> BTreeSet<(OwnerId, OrgName)> {
    inv.owners.iter().filter(|o| o.error.is_none()).map(|o| (o.owner.clone(), o.organization.clone())).collect()
}

/// Assesses every PAT, and with `respond` (the timer) announces, withdraws, closes and revokes as the policy
/// says, persisting the announcements. `respond = false` (CLI) changes nothing. `listed`: the (owner,
/// organization) pairs whose active PATs `pats` holds completely (an announced PAT missing from one of them
/// is gone, and its notice is closed).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    state: &dyn StateStore,
    connector: &dyn Connector,
    pats: &[UsagePat],
    listed: &BTreeSet<(OwnerId, OrgName)>,
    policy: &StalePolicy,
    notify: &[Target],
    respond: bool,
    now: OffsetDateTime,
) -> UsageReport {
    let mut report = UsageReport::default();
    let (watch, errors) = watches(state, pats.iter().map(|p| p.organization.clone())).await;
    report.errors.extend(errors);
    let assessed: Vec<(UsagePat, Verdict)> =
        pats.iter().map(|p| (p.clone(), assess(p, watch.get(&p.organization), policy.days, now))).collect();

    let (mut notices, etag) = match state.load(NOTICES_KEY).await {
        Ok(Some((b, t))) => match serde_json::from_slice::<Notices>(&b) {
            Ok(n) => (n, Some(t)),
            Err(e) => {
                report
                    .errors
                    .push(format!("{NOTICES_KEY} is corrupt ({e}); no stale PAT is revoked until it is fixed"));
                return report;
            }
        },
        Ok(None) => (Notices::default(), None),
        Err(e) => {
            report.errors.push(format!("reading {NOTICES_KEY}: {e}; no stale PAT is revoked this run"));
            (Notices::default(), None)
        }
    };
    let steps = plan_notices(&assessed, &notices.pending, listed, policy, now);
    let mut changed = false;
    for (id, step) in &steps {
        if let Step::Close { why } = step {
            if !respond {
                continue;
            }
            let Some(a) = notices.pending.remove(id) else { continue };
            notices.closed.push(Closed {
                authorization_id: *id,
                display_name: a.display_name.clone(),
                owner: a.owner.clone(),
                outcome: format!("closed: {why}"),
                at: now,
            });
            changed = true;
            report.notices.push(Addressed {
                targets: notify.iter().cloned().chain(owner_target(&a.owner)).collect(),
                notice: Notice::Finding {
                    rule: "stale_pat".into(),
                    severity: Severity::Info,
                    summary: format!(
                        "The revocation patrol announced for PAT \"{}\" of {} in {} is closed: the PAT is {why}.",
                        a.display_name, a.owner, a.organization
                    ),
                    evidence: vec![format!("announced on {}", rfc3339(a.announced_at))],
                    action: "No action needed: patrol will not revoke anything for this notice.".into(),
                },
            });
            continue;
        }
        let Some((pat, _)) = assessed.iter().find(|(p, _)| p.authorization_id == *id) else { continue };
        let targets: Vec<Target> = notify.iter().cloned().chain(owner_target(&pat.owner)).collect();
        let name = &pat.display_name;
        match step {
            Step::Announce { revoke_on } => {
                if !respond {
                    continue;
                }
                notices.pending.insert(
                    *id,
                    Announcement {
                        display_name: name.clone(),
                        owner: pat.owner.clone(),
                        organization: pat.organization.clone(),
                        announced_at: now,
                        revoke_on: *revoke_on,
                    },
                );
                changed = true;
                report.notices.push(Addressed {
                    targets,
                    notice: Notice::Finding {
                        rule: "stale_pat".into(),
                        severity: Severity::Warning,
                        summary: format!(
                            "PAT \"{name}\" of {} in {} has no audited use in {} days; patrol will revoke it on {} \
                             unless it is used or kept.",
                            pat.owner,
                            pat.organization,
                            policy.days,
                            rfc3339(*revoke_on)
                        ),
                        evidence: vec![CAVEAT.into()],
                        action: format!(
                            "To keep it: use it for an audited action before {}, or add \"{name}\" to [audit.stale] keep \
                             in patrol.toml.{}",
                            rfc3339(*revoke_on),
                            if policy.dry_run { " (dry run: patrol will only say what it would revoke)" } else { "" }
                        ),
                    },
                });
            }
            Step::Withdraw { why } => {
                if !respond {
                    continue;
                }
                notices.pending.remove(id);
                notices.closed.push(Closed {
                    authorization_id: *id,
                    display_name: name.clone(),
                    owner: pat.owner.clone(),
                    outcome: format!("kept: {why}"),
                    at: now,
                });
                changed = true;
            }
            Step::Wait { .. } | Step::Close { .. } => {}
            Step::Revoke { dry_run } => {
                let sentence = format!("PAT \"{name}\" of {} in {}", pat.owner, pat.organization);
                if *dry_run || !respond {
                    report.revoked.push(format!("{sentence}: would be revoked now (dry run)"));
                    continue;
                }
                match connector.pats(&pat.owner, &pat.organization).revoke(*id).await {
                    Ok(()) => {
                        notices.pending.remove(id);
                        notices.closed.push(Closed {
                            authorization_id: *id,
                            display_name: name.clone(),
                            owner: pat.owner.clone(),
                            outcome: format!(
                                "revoked: no audited use in {} days and the notice period ended",
                                policy.days
                            ),
                            at: now,
                        });
                        changed = true;
                        report.revoked.push(format!("{sentence}: revoked"));
                        report.notices.push(Addressed {
                            targets,
                            notice: Notice::Finding {
                                rule: "stale_pat".into(),
                                severity: Severity::Warning,
                                summary: format!(
                                    "{sentence} was revoked: no audited use in {} days and the notice period ended.",
                                    policy.days
                                ),
                                evidence: vec![CAVEAT.into()],
                                action:
                                    "revoked; create a new PAT (or let patrol manage one) if something still needed it"
                                        .into(),
                            },
                        });
                    }
                    Err(e) => report.errors.push(format!("revoking stale {sentence}: {e}")),
                }
            }
        }
    }
    let excess = notices.closed.len().saturating_sub(200);
    notices.closed.drain(..excess);
    if changed && respond {
        match serde_json::to_vec(&notices) {
            Ok(body) => {
                if let Err(e) = state.save(NOTICES_KEY, &body, etag.as_ref()).await {
                    let e: StateError = e;
                    report.errors.push(format!("saving {NOTICES_KEY}: {e}"));
                }
            }
            Err(e) => report.errors.push(format!("encoding {NOTICES_KEY}: {e}")),
        }
    }

    for (pat, verdict) in &assessed {
        let w = watch.get(&pat.organization);
        let last = w.and_then(|w| w.last_use.get(&pat.authorization_id)).cloned();
        report.pats.push(PatUsage {
            authorization_id: pat.authorization_id,
            last_use: last.clone(),
            watched_since: w.and_then(|w| w.watched_since),
            verdict: verdict.clone(),
            revoke_on: notices.pending.get(&pat.authorization_id).map(|a| a.revoke_on),
        });
        report.rows.extend(rows_for(
            pat,
            verdict,
            last.as_ref(),
            w,
            policy,
            notices.pending.get(&pat.authorization_id),
        ));
    }
    report.steps = steps;
    report
}

/// The report rows of one PAT (pure).
pub fn rows_for(
    pat: &UsagePat,
    verdict: &Verdict,
    last: Option<&LastUse>,
    watch: Option<&OrgWatch>,
    policy: &StalePolicy,
    pending: Option<&Announcement>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let row = |kind: &str, evidence: Vec<String>, what_to_do: String| Row {
        kind: kind.into(),
        authorization_id: pat.authorization_id,
        display_name: pat.display_name.clone(),
        owner: pat.owner.to_string(),
        organization: pat.organization.to_string(),
        secret: pat.secret.clone(),
        evidence,
        what_to_do,
    };
    match verdict {
        Verdict::Dead => rows.push(row(
            "dead",
            vec!["all-organization PAT: these stopped working on 2026-12-01".into()],
            format!(
                "Revoke it; if something still needs access, create an organization-scoped PAT for {} (or let \
                 patrol manage one) and move its consumers.",
                pat.organization
            ),
        )),
        Verdict::NoAuditedUse { days } => {
            let mut evidence = vec![match last {
                Some(u) => format!(
                    "last audited use {} from {} ({}), {days} days ago",
                    rfc3339(u.at),
                    if u.ip.is_empty() { "-" } else { &u.ip },
                    if u.user_agent.is_empty() { "-" } else { &u.user_agent }
                ),
                None => format!("no audited use since the log is watched ({days} days)"),
            }];
            if let Some(since) = watch.and_then(|w| w.watched_since) {
                evidence.push(format!("audit log watched since {}", rfc3339(since)));
            }
            evidence.push(CAVEAT.into());
            let what = if pat.secret.is_some() {
                format!(
                    "Managed by patrol (secret {}): ask its owner whether anything still uses it; keep rotating it, \
                     or retire it: remove its [[token]] from patrol.toml, revoke the PAT (`patrol revoke`) and \
                     disable the secret.",
                    pat.secret.as_deref().unwrap_or("-")
                )
            } else if let Some(a) = pending {
                format!(
                    "Announced: patrol revokes it on {}{} unless it is used or added to [audit.stale] keep.",
                    rfc3339(a.revoke_on),
                    if policy.dry_run { " (dry run: it will only say so)" } else { "" }
                )
            } else {
                "Ask its owner whether anything still uses it; revoke it if not (or set [audit.stale] response = \
                 \"revoke\" to have patrol announce and revoke such PATs)."
                    .into()
            };
            rows.push(row("no audited use", evidence, what));
        }
        _ => {}
    }
    if let Some(evidence) = looks_shared(pat, watch.and_then(|w| w.usage.get(&pat.authorization_id))) {
        rows.push(row(
            "shared",
            evidence,
            "Split it: one managed token per consumer (a [[token]] each, with its own secret), so revoking one \
             consumer's PAT is surgical. patrol takes no action on shared PATs."
                .into(),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn pat(valid_from: OffsetDateTime) -> UsagePat {
        UsagePat {
            authorization_id: AuthorizationId::parse("0f8e4b5a-1111-2222-3333-444455556666").unwrap(),
            display_name: "nightly".into(),
            owner: OwnerId::parse("alice@fabrikam.test").unwrap(),
            organization: OrgName::parse("fabrikam").unwrap(),
            secret: None,
            valid_from,
            valid_to: valid_from + Duration::days(365),
            global: false,
            consumers: Vec::new(),
        }
    }

    fn used(at: OffsetDateTime) -> LastUse {
        LastUse {
            at,
            ip: "10.0.0.1".into(),
            user_agent: "git/2.45".into(),
            action_id: "x".into(),
            entry_id: "e".into(),
        }
    }

    #[test]
    fn stale_only_once_watched_long_enough_and_never_while_auditing_is_off() {
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let p = pat(t0 - Duration::days(200));
        let mut w = OrgWatch { watched_since: Some(t0), ..Default::default() };
        assert_eq!(assess(&p, Some(&w), 30, t0 + Duration::days(29)), Verdict::TooEarly { watched_days: 29 });
        assert_eq!(assess(&p, Some(&w), 30, t0 + Duration::days(30)), Verdict::NoAuditedUse { days: 30 });
        w.last_use.insert(p.authorization_id, used(t0 + Duration::days(10)));
        assert_eq!(assess(&p, Some(&w), 30, t0 + Duration::days(30)), Verdict::Used);
        assert_eq!(assess(&p, Some(&w), 30, t0 + Duration::days(40)), Verdict::NoAuditedUse { days: 30 });
        w.auditing_off = true;
        assert!(matches!(assess(&p, Some(&w), 30, t0 + Duration::days(40)), Verdict::NoEvidence { .. }));
        assert!(matches!(assess(&p, None, 30, t0), Verdict::NoEvidence { .. }));
        // A PAT younger than N days is not stale, however long the log is watched.
        let young = pat(t0 + Duration::days(20));
        let w = OrgWatch { watched_since: Some(t0), ..Default::default() };
        assert!(matches!(assess(&young, Some(&w), 30, t0 + Duration::days(40)), Verdict::TooEarly { .. }));
        let mut g = pat(t0);
        g.global = true;
        assert_eq!(assess(&g, Some(&w), 30, t0), Verdict::Dead);
    }

    #[test]
    fn revoke_is_announced_then_due_and_withdrawn_when_used_or_kept() {
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let p = pat(t0 - Duration::days(100));
        let policy = StalePolicy { response: StaleResponse::Revoke, dry_run: false, ..Default::default() };
        let stale = vec![(p.clone(), Verdict::NoAuditedUse { days: 31 })];
        let listed: BTreeSet<(OwnerId, OrgName)> = [(p.owner.clone(), p.organization.clone())].into();
        let steps = plan_notices(&stale, &BTreeMap::new(), &listed, &policy, t0);
        assert_eq!(steps, vec![(p.authorization_id, Step::Announce { revoke_on: t0 + Duration::days(14) })]);
        let mut pending = BTreeMap::new();
        pending.insert(
            p.authorization_id,
            Announcement {
                display_name: p.display_name.clone(),
                owner: p.owner.clone(),
                organization: p.organization.clone(),
                announced_at: t0,
                revoke_on: t0 + Duration::days(14),
            },
        );
        assert!(matches!(
            plan_notices(&stale, &pending, &listed, &policy, t0 + Duration::days(13))[0].1,
            Step::Wait { .. }
        ));
        assert_eq!(
            plan_notices(&stale, &pending, &listed, &policy, t0 + Duration::days(14))[0].1,
            Step::Revoke { dry_run: false }
        );
        let off = vec![(p.clone(), Verdict::NoEvidence { reason: "auditing looks switched off".into() })];
        assert!(matches!(
            plan_notices(&off, &pending, &listed, &policy, t0 + Duration::days(20))[0].1,
            Step::Wait { .. }
        ));
        let used = vec![(p.clone(), Verdict::Used)];
        assert!(matches!(
            plan_notices(&used, &pending, &listed, &policy, t0 + Duration::days(20))[0].1,
            Step::Withdraw { .. }
        ));
        let kept = StalePolicy { keep: vec!["NIGHTLY".into()], ..policy.clone() };
        assert!(matches!(
            plan_notices(&stale, &pending, &listed, &kept, t0 + Duration::days(20))[0].1,
            Step::Withdraw { .. }
        ));
        // Managed PATs are never announced; `alert` announces nothing.
        let mut m = p.clone();
        m.secret = Some("ci".into());
        assert!(
            plan_notices(&[(m, Verdict::NoAuditedUse { days: 40 })], &BTreeMap::new(), &listed, &policy, t0).is_empty()
        );
        assert!(plan_notices(&stale, &BTreeMap::new(), &listed, &StalePolicy::default(), t0).is_empty());
        // Gone from a complete listing of its owner: closed; from a listing that failed: nothing is said.
        let later = t0 + Duration::days(3);
        assert!(
            matches!(&plan_notices(&[], &pending, &listed, &policy, later)[..], [(_, Step::Close { why })] if why.contains("no longer among"))
        );
        assert!(plan_notices(&[], &pending, &BTreeSet::new(), &policy, later).is_empty());
    }

    #[test]
    fn shared_needs_two_pipelines_or_clients_not_just_addresses() {
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let p = pat(t0);
        let mut prof = UseProfile::default();
        remember(&mut prof.user_agents, "git/2.45", 1);
        remember(&mut prof.user_agents, "git/2.46", 2);
        remember(&mut prof.ranges, "10.0.0.0/24", 1);
        remember(&mut prof.ranges, "10.0.9.0/24", 2);
        assert_eq!(looks_shared(&p, Some(&prof)), None);
        remember(&mut prof.pipelines, "build-a", 1);
        remember(&mut prof.pipelines, "deploy-b", 2);
        let ev = looks_shared(&p, Some(&prof)).unwrap();
        assert!(ev[0].contains("2 pipelines: build-a, deploy-b") && ev[1].contains("address ranges"), "{ev:?}");
        assert_eq!(range_of("2001:db8:1:2::7".parse().unwrap()), "2001:db8:1::/48");
        assert_eq!(product_of("Mozilla/5.0 (X11)"), "mozilla");
    }

    #[test]
    fn audit_joins_the_timers_watch_only_when_continuous_and_keeps_the_latest_use() {
        let t = datetime!(2026-12-02 00:00 UTC);
        let p = pat(t - Duration::days(100));
        let fresh = Checkpoint {
            window_end: Some(t),
            watched_since: Some(t - Duration::days(1)),
            last_use: [(p.authorization_id, used(t - Duration::hours(2)))].into(),
            ..Default::default()
        };
        let timer = Checkpoint {
            window_end: Some(t - Duration::hours(3)),
            watched_since: Some(t - Duration::days(50)),
            last_use: [(p.authorization_id, used(t - Duration::days(9)))].into(),
            ..Default::default()
        };
        let m = merge_watch(Some(timer.clone()), fresh.clone());
        assert_eq!(m.watched_since, Some(t - Duration::days(50)));
        assert_eq!(m.last_use[&p.authorization_id].at, t - Duration::hours(2));
        // A gap between the timer's last window and the fresh one: only the fresh window counts.
        let gap = Checkpoint { window_end: Some(t - Duration::days(3)), ..timer };
        assert_eq!(merge_watch(Some(gap), fresh.clone()).watched_since, Some(t - Duration::days(1)));
        assert_eq!(merge_watch(None, fresh.clone()), fresh);
    }

    #[test]
    fn policy_problems_name_the_field() {
        let p = StalePolicy { days: 0, notice_days: 100, keep: vec![" ".into()], ..Default::default() };
        let fields: Vec<String> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["stale.days", "stale.notice_days", "stale.keep[0]"]);
    }
}
