//! Expiry alerts a run raises from its inventory and plan (pure; delivered, once per threshold, by
//! `notify::Notifier::deliver_run`, which records them in `notify/sent`).
//!
//! - PATs patrol does **not** manage (the plan's `unmanaged`, plus the owners' recently expired PATs): the
//!   30/14/7/1-day countdown ([`crate::notify::expiry::evaluate`]) and "PAT expired", to the targets of the
//!   owner's managed tokens in that organization, at the thresholds those tokens use.
//! - Managed tokens: patrol rotates them before they expire, so a countdown is noise. They are warned about
//!   only when rotation is overdue (the PAT is within `rotate_before_days` of expiry) and this run did not
//!   rotate it (it failed, was blocked, busy, deferred, or this is a dry run).

use super::inventory::Inventory;
use super::journal::parse_marker;
use super::plan::{Plan, references};
use super::policy::Policy;
use crate::devops::Pat;
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::notify::expiry::{Thresholds, evaluate};
use crate::notify::{Addressed, Notice, PatRef, Target};
use crate::store::tags;
use std::collections::{BTreeSet, HashSet};
use time::{Duration, OffsetDateTime};

/// An unmanaged PAT that expired longer ago than this is not announced as expired (the first run after
/// deployment does not dig up history; `notify/sent` keeps announcements for 90 days, so a window well
/// inside that can never announce the same expiry twice).
pub const EXPIRED_WINDOW: Duration = Duration::days(30);

/// One owner's expired PATs in one organization, as listed (`displayFilterOption=expired`).
pub type ExpiredListing = (OwnerId, OrgName, Vec<Pat>);

/// Who hears about an owner's unmanaged PATs in an organization, and at which thresholds: the targets and
/// thresholds of that owner's managed tokens there.
fn audience(policy: &Policy, owner: &OwnerId, org: &OrgName) -> (Vec<Target>, Thresholds) {
    let tokens: Vec<_> = policy.tokens.iter().filter(|t| &t.owner == owner && &t.organization == org).collect();
    let targets: BTreeSet<Target> = tokens.iter().flat_map(|t| t.notify.iter().cloned()).collect();
    let days: BTreeSet<u32> = tokens.iter().flat_map(|t| t.expiry_thresholds.iter().copied()).collect();
    let days: Vec<u32> = days.into_iter().collect();
    (targets.into_iter().collect(), Thresholds::new(&days).unwrap_or_default())
}

fn pat_ref(pat: &Pat, owner: &OwnerId, org: &OrgName) -> PatRef {
    PatRef {
        display_name: pat.display_name.clone(),
        authorization_id: pat.authorization_id,
        organization: org.to_string(),
        owner: owner.clone(),
        valid_to: pat.valid_to,
        secret: None,
    }
}

/// Countdown warnings for the plan's unmanaged PATs and "PAT expired" for the owners' unmanaged PATs that
/// expired within [`EXPIRED_WINDOW`]. PATs a managed token refers to, or that carry patrol's marker for a
/// managed token, are never "unmanaged".
pub fn unmanaged(
    policy: &Policy,
    inv: &Inventory,
    plan: &Plan,
    expired: &[ExpiredListing],
    now: OffsetDateTime,
) -> Vec<Addressed> {
    let mut out = Vec::new();
    for u in &plan.unmanaged {
        let (targets, thresholds) = audience(policy, &u.owner, &u.organization);
        if targets.is_empty() {
            continue;
        }
        if let Some(notice) = evaluate(&pat_ref(&u.pat, &u.owner, &u.organization), now, &thresholds) {
            out.push(Addressed { targets, notice });
        }
    }
    let referenced: HashSet<AuthorizationId> = inv.tokens.values().flat_map(|t| references(t)).collect();
    for (owner, org, pats) in expired {
        let (targets, _) = audience(policy, owner, org);
        if targets.is_empty() {
            continue;
        }
        let managed_name = |name: &str| {
            policy.tokens.iter().any(|t| {
                &t.owner == owner && &t.organization == org && t.display_name.as_str().eq_ignore_ascii_case(name)
            })
        };
        for pat in pats {
            if pat.valid_to > now
                || now - pat.valid_to > EXPIRED_WINDOW
                || referenced.contains(&pat.authorization_id)
                || parse_marker(&pat.display_name).is_some_and(|(base, _)| managed_name(base))
            {
                continue;
            }
            out.push(Addressed {
                targets: targets.clone(),
                notice: Notice::PatExpired { pat: pat_ref(pat, owner, org) },
            });
        }
    }
    out
}

/// Expiry warnings (and "PAT expired") for managed tokens whose rotation is overdue and which this run
/// did not rotate. The current PAT comes from the plan or, when the owner's PATs could not be listed
/// (sign-in required), from the current version's tags.
pub fn managed(policy: &Policy, inv: &Inventory, plan: &Plan, rotated: &HashSet<SecretName>) -> Vec<Addressed> {
    let mut out = Vec::new();
    for e in &plan.entries {
        let Some(token) = policy.token(&e.secret) else { continue };
        if rotated.contains(&e.secret) {
            continue;
        }
        let ts = inv.tokens.get(&e.secret);
        let id = e.current.as_ref().and_then(|c| c.authorization_id).or_else(|| ts?.current_authorization_id());
        let valid_to = e.current.as_ref().and_then(|c| c.valid_to).or_else(|| ts?.tag_time(tags::VALID_TO));
        let (Some(id), Some(valid_to)) = (id, valid_to) else { continue };
        if valid_to - plan.at > Duration::days(i64::from(token.rotate_before_days)) {
            continue; // patrol rotates it before it expires: no countdown
        }
        let display_name = ts
            .and_then(|t| t.tag(tags::DISPLAY_NAME).map(str::to_owned))
            .unwrap_or_else(|| token.display_name.to_string());
        let pat = PatRef {
            display_name,
            authorization_id: id,
            organization: token.organization.to_string(),
            owner: token.owner.clone(),
            valid_to,
            secret: Some(token.secret.clone()),
        };
        let thresholds = Thresholds::new(&token.expiry_thresholds).unwrap_or_default();
        if let Some(notice) = evaluate(&pat, plan.at, &thresholds) {
            out.push(Addressed { targets: token.notify.clone(), notice });
        }
    }
    out
}
