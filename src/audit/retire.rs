//! Retiring a managed token (`patrol retire`, issue 21): the answer to "a managed PAT nobody uses". It
//! revokes the token's PATs (the current one and any previous one still draining) through the owner's
//! delegated session, disables every enabled version of its secret, and records the retirement — in the
//! token's journal, where every later plan finds it (`plan::Action::Retired`: never a silent re-create,
//! whatever the vault or the listing say), and in the lifecycle log (`patrol history`).
//!
//! Crash-safe like every effect: under the token's lease, the intent (which PATs) is journaled **before** the
//! first revocation, every effect is idempotent (a revoked PAT revokes again as a no-op, a disabled version
//! stays disabled), and the command run again resumes from the journal until `done` and `recorded`.
//!
//! Refused without `force` when something still depends on the token: declared consumers (a written copy of
//! the PAT is revoked, a reader of the vault finds the secret disabled), or an audited use within the
//! `[audit.stale] days` window. "No audited use" is evidence, not proof, so the survey says what the log shows
//! either way; the decision stays the operator's.

use super::usage::{self, UsagePat, Verdict};
use crate::devops::{Connector, DevOpsError, DisplayFilter, Pat};
use crate::rotation::history::{self, Event, Kind};
use crate::rotation::inventory::token_state;
use crate::rotation::journal::{self, PatVersion, Retirement};
use crate::rotation::lease::Leases;
use crate::rotation::policy::ManagedToken;
use crate::state::StateStore;
use crate::state::crash_point;
use crate::store::{PropertiesUpdate, SecretStore};
use serde::Serialize;
use time::OffsetDateTime;

/// Why a retirement did not happen (or not completely). Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    /// The owner must sign in first (exit 3).
    #[error("{0}")]
    SignIn(String),
    /// It could not be done now, or not completely (exit 1); a rerun resumes it.
    #[error("{0}")]
    Failed(String),
}

/// One PAT the retirement revokes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetiredPat {
    pub authorization_id: crate::domain::AuthorizationId,
    /// `current` or `previous` (still draining).
    pub role: String,
    /// From the owner's listing; `None` when the PAT is no longer listed (already revoked or expired).
    pub display_name: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    /// Revoked by this command (or a run before it).
    pub revoked: bool,
}

/// What `patrol retire` found and did (`--format json`; `docs/cli.md`).
#[derive(Debug, Clone, Serialize)]
pub struct RetireReport {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub secret: String,
    pub owner: String,
    pub organization: String,
    pub dry_run: bool,
    /// `would-retire`, `refused`, `retired`, `already-retired` or `not-confirmed`.
    pub outcome: String,
    pub pats: Vec<RetiredPat>,
    /// Vault versions disabled (or, in a dry run, that would be).
    pub versions: Vec<String>,
    /// Declared consumers (`[[token.consumer]]`): each would break.
    pub consumers: Vec<String>,
    /// What the audit log says about the current PAT (with the caveat where it says "no audited use").
    pub evidence: Vec<String>,
    /// Why it is refused without `--force`.
    pub blockers: Vec<String>,
    pub notes: Vec<String>,
}

impl RetireReport {
    /// The confirmation question (what will happen, in one sentence).
    pub fn confirmation(&self) -> String {
        format!(
            "Retire {}: revoke {} PAT(s) of {} in {}, disable {} vault version(s), and never rotate it again?",
            self.secret,
            self.pats.len(),
            self.owner,
            self.organization,
            self.versions.len()
        )
    }
}

/// What the command works with (the same parts the engine uses).
pub struct RetireContext<'a> {
    pub token: &'a ManagedToken,
    pub connector: &'a dyn Connector,
    pub store: &'a dyn SecretStore,
    pub state: &'a dyn StateStore,
    pub leases: &'a dyn Leases,
    /// `[audit.stale] days`: an audited use this recent blocks the retirement (without `force`).
    pub stale_days: u32,
    pub now: OffsetDateTime,
}

fn listing_error(t: &ManagedToken, e: DevOpsError) -> RetireError {
    match e {
        DevOpsError::SignInRequired { reason, .. } => RetireError::SignIn(format!(
            "{} must sign in ({reason}): patrol revokes the token's PATs with the owner's session — \
             `patrol login --owner {}`",
            t.owner, t.owner
        )),
        other => RetireError::Failed(format!("listing the PATs of {} in {} failed: {other}", t.owner, t.organization)),
    }
}

/// The survey: which PATs and versions, what depends on the token. Reads only.
pub async fn survey(cx: &RetireContext<'_>) -> Result<RetireReport, RetireError> {
    let t = cx.token;
    let ts = token_state(cx.store, cx.state, &t.secret).await;
    if let Some(e) = &ts.error {
        return Err(RetireError::Failed(format!("{}: {e}", t.secret)));
    }
    let mut report = RetireReport {
        at: cx.now,
        secret: t.secret.to_string(),
        owner: t.owner.to_string(),
        organization: t.organization.to_string(),
        dry_run: true,
        outcome: "would-retire".into(),
        pats: Vec::new(),
        versions: Vec::new(),
        consumers: t.consumers.list.iter().map(|c| format!("{} ({})", c.id, c.kind_name())).collect(),
        evidence: Vec::new(),
        blockers: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(op) = &ts.journal.operation {
        return Err(RetireError::Failed(format!(
            "a rotation of {} is in flight (operation {}): let it finish (`patrol rotate {}`) before retiring it",
            t.secret, op.op, t.secret
        )));
    }
    let listed: Vec<Pat> = cx
        .connector
        .pats(&t.owner, &t.organization)
        .list(DisplayFilter::Active)
        .await
        .map_err(|e| listing_error(t, e))?;
    let retired = ts.journal.retired.as_ref();
    let pats: Vec<(PatVersion, &str)> = match retired {
        Some(r) => r
            .pats
            .iter()
            .map(|p| (p.clone(), if r.current == Some(p.authorization_id) { "current" } else { "previous" }))
            .collect(),
        None => to_revoke(t, &ts)
            .into_iter()
            .map(|(p, current)| (p, if current { "current" } else { "previous" }))
            .collect(),
    };
    for (p, role) in &pats {
        let l = listed.iter().find(|x| x.authorization_id == p.authorization_id);
        report.pats.push(RetiredPat {
            authorization_id: p.authorization_id,
            role: (*role).into(),
            display_name: l.map(|x| x.display_name.clone()),
            valid_to: l.map(|x| x.valid_to),
            revoked: retired.is_some_and(|r| r.done) || (retired.is_some() && l.is_none()),
        });
    }
    for v in cx.store.list_versions(&t.secret).await.map_err(|e| RetireError::Failed(format!("{}: {e}", t.secret)))? {
        if v.enabled {
            report.versions.push(v.version);
        }
    }
    report.versions.sort();
    if let Some(r) = retired {
        if r.done && r.recorded {
            report.outcome = "already-retired".into();
            report.notes.push(format!(
                "{} was retired on {} ({}); delete its [[token]] block from the policy",
                t.secret,
                crate::timestamp::rfc3339(r.at),
                r.reason
            ));
            return Ok(report);
        }
        report.notes.push(format!(
            "resuming the retirement started on {} (journaled): it revokes, disables and records what is left",
            crate::timestamp::rfc3339(r.at)
        ));
        // Decided already: the intent is journaled and PATs may be revoked; no second look at the blockers.
        return Ok(report);
    }
    if !t.consumers.list.is_empty() {
        let written = t.consumers.list.iter().filter(|c| c.is_written()).count();
        report.blockers.push(format!(
            "{} consumer(s) are declared for it ({written} hold a copy patrol writes, which would be revoked; the \
             others read the secret, which would be disabled): {}. Move them off it and remove their \
             [[token.consumer]] tables first, or pass --force",
            t.consumers.list.len(),
            report.consumers.join(", ")
        ));
    }
    // What the audit log says about the current PAT.
    if let Some(cur) = pats
        .iter()
        .find(|(_, r)| *r == "current")
        .and_then(|(p, _)| listed.iter().find(|x| x.authorization_id == p.authorization_id))
    {
        let pat = UsagePat {
            authorization_id: cur.authorization_id,
            display_name: cur.display_name.clone(),
            owner: t.owner.clone(),
            organization: t.organization.clone(),
            secret: Some(t.secret.to_string()),
            valid_from: cur.valid_from,
            valid_to: cur.valid_to,
            global: cur.is_global(),
            consumers: Vec::new(),
        };
        let (watch, errors) = usage::watches(cx.state, [t.organization.clone()]).await;
        report.notes.extend(errors);
        let w = watch.get(&t.organization);
        let last = w.and_then(|w| w.last_use.get(&cur.authorization_id));
        match usage::assess(&pat, w, cx.stale_days, cx.now) {
            Verdict::Used => {
                let u = last.map(|u| {
                    format!(
                        "{} from {} ({})",
                        crate::timestamp::rfc3339(u.at),
                        if u.ip.is_empty() { "-" } else { &u.ip },
                        if u.user_agent.is_empty() { "-" } else { &u.user_agent }
                    )
                });
                report.evidence.push(format!("last audited use {}", u.unwrap_or_else(|| "-".into())));
                report.blockers.push(format!(
                    "the audit log shows it in use within the last {} days ({}): ask its owner, or pass --force",
                    cx.stale_days, report.evidence[0]
                ));
            }
            Verdict::NoAuditedUse { days } => {
                report.evidence.push(format!("no audited use in {days} days"));
                report.evidence.push(usage::CAVEAT.into());
            }
            Verdict::TooEarly { watched_days } => {
                report.evidence.push(format!(
                    "no audited use yet, but the audit log has been watched only {watched_days} day(s): no evidence \
                     either way — ask its owner"
                ));
                report.evidence.push(usage::CAVEAT.into());
            }
            Verdict::NoEvidence { reason } => {
                report.evidence.push(format!("no evidence either way ({reason}) — ask its owner"));
            }
            Verdict::Dead => {
                report.evidence.push("an all-organization PAT: these stopped working on 2026-12-01".into())
            }
        }
    } else if pats.is_empty() {
        report.notes.push(format!("{} holds no PAT patrol knows: nothing to revoke", t.secret));
    }
    if !report.blockers.is_empty() {
        report.outcome = "refused".into();
    }
    Ok(report)
}

/// The PAT the secret's current version (or, without it, the journal) names.
fn current_of(ts: &crate::rotation::inventory::TokenState) -> Option<crate::domain::AuthorizationId> {
    ts.current_authorization_id().or(ts.journal.current.as_ref().map(|c| c.authorization_id))
}

/// The token's PATs to revoke (pure): the current one first (`true`), then every previous one still draining.
pub fn to_revoke(t: &ManagedToken, ts: &crate::rotation::inventory::TokenState) -> Vec<(PatVersion, bool)> {
    let mut out: Vec<(PatVersion, bool)> = Vec::new();
    if let Some(id) = current_of(ts) {
        let known = ts.journal.current.as_ref().filter(|c| c.authorization_id == id).cloned();
        out.push((
            known.unwrap_or_else(|| PatVersion {
                authorization_id: id,
                owner: t.owner.clone(),
                organization: t.organization.clone(),
                vault_version: ts.current.as_ref().map(|c| c.version.clone()),
            }),
            true,
        ));
    }
    // The journal's current PAT when the vault names another one (an out-of-band version not adopted yet).
    if let Some(j) = &ts.journal.current
        && !out.iter().any(|(p, _)| p.authorization_id == j.authorization_id)
    {
        out.push((j.clone(), false));
    }
    for d in crate::rotation::plan::drains(t, ts) {
        if !out.iter().any(|(p, _)| p.authorization_id == d.pat.authorization_id) {
            out.push((d.pat, false));
        }
    }
    out
}

/// Surveys, then (unless `dry_run` or refused) retires: journal the intent, revoke, disable, record.
/// `confirm` is asked with the survey before anything is written (not for a dry run, not when resuming).
pub async fn retire(
    cx: &RetireContext<'_>,
    reason: &str,
    dry_run: bool,
    force: bool,
    confirm: &mut dyn FnMut(&RetireReport) -> bool,
) -> Result<RetireReport, RetireError> {
    let t = cx.token;
    let mut report = survey(cx).await?;
    if dry_run || report.outcome == "already-retired" {
        return Ok(report);
    }
    if !report.blockers.is_empty() && !force {
        return Ok(report);
    }
    let resuming = report.notes.iter().any(|n| n.starts_with("resuming"));
    if !resuming && !confirm(&report) {
        report.outcome = "not-confirmed".into();
        return Ok(report);
    }
    report.dry_run = false;
    if !report.blockers.is_empty() {
        report.notes.push(format!("--force: retired despite: {}", report.blockers.join("; ")));
    }

    let key = format!("token/{}", t.secret);
    let Some(lease) =
        cx.leases.try_acquire(&key).await.map_err(|e| RetireError::Failed(format!("taking the lease {key}: {e}")))?
    else {
        return Err(RetireError::Failed(format!(
            "{} is busy (a rotation holds its lease): try again in a minute",
            t.secret
        )));
    };
    let held = |before: &str| {
        if lease.is_lost() {
            Err(RetireError::Failed(format!(
                "the lease {key} was lost before {before}; the retirement is journaled: run the same command again"
            )))
        } else {
            Ok(())
        }
    };
    let save_err = |e: journal::JournalError| RetireError::Failed(format!("writing the journal of {}: {e}", t.secret));
    let mut loaded = journal::load(cx.state, &t.secret)
        .await
        .map_err(|e| RetireError::Failed(format!("reading the journal of {}: {e}", t.secret)))?;
    if let Some(op) = &loaded.journal.operation {
        return Err(RetireError::Failed(format!(
            "a rotation of {} is in flight (operation {}): let it finish (`patrol rotate {}`) before retiring it",
            t.secret, op.op, t.secret
        )));
    }
    // 1. The intent, before any effect: from here on no plan rotates or re-creates the token.
    if loaded.journal.retired.is_none() {
        let ts = token_state(cx.store, cx.state, &t.secret).await;
        let pats = to_revoke(t, &ts);
        loaded.journal.retired = Some(Box::new(Retirement {
            at: cx.now,
            by: crate::trigger::trigger(),
            reason: reason.to_owned(),
            current: pats.iter().find(|(_, c)| *c).map(|(p, _)| p.authorization_id),
            pats: pats.into_iter().map(|(p, _)| p).collect(),
            done: false,
            recorded: false,
        }));
        loaded.save(cx.state).await.map_err(save_err)?;
        tracing::info!(secret = %t.secret, "retirement journaled");
    }
    crash_point("retire-intent");
    let Some(r) = loaded.journal.retired.clone() else {
        return Err(RetireError::Failed(format!("the retirement of {} vanished from its journal", t.secret)));
    };

    if !r.done {
        // 2. Revoke every PAT through its owner's session (a PAT already revoked is a no-op).
        for p in &r.pats {
            held("a revocation")?;
            cx.connector.pats(&p.owner, &p.organization).revoke(p.authorization_id).await.map_err(|e| match e {
                DevOpsError::SignInRequired { reason, .. } => RetireError::SignIn(format!(
                    "{} must sign in to revoke PAT {} ({reason}): `patrol login --owner {}`, then run the same \
                     command again (the retirement is journaled)",
                    p.owner, p.authorization_id, p.owner
                )),
                other => RetireError::Failed(format!(
                    "revoking PAT {} of {} in {} failed: {other}; the retirement is journaled: run the same command \
                     again",
                    p.authorization_id, p.owner, p.organization
                )),
            })?;
            tracing::info!(secret = %t.secret, pat = %p.authorization_id, "revoked (retirement)");
        }
        crash_point("retire-revoked");
        // 3. Disable every enabled version of the secret: a consumer reading it finds it disabled, not a dead PAT.
        let versions = cx.store.list_versions(&t.secret).await.map_err(|e| {
            RetireError::Failed(format!("listing the versions of {}: {e}; run the command again", t.secret))
        })?;
        let mut disabled = Vec::new();
        for v in versions.into_iter().filter(|v| v.enabled) {
            held("disabling a version")?;
            cx.store
                .update(&t.secret, &v.version, PropertiesUpdate { enabled: Some(false), ..Default::default() })
                .await
                .map_err(|e| {
                    RetireError::Failed(format!(
                        "disabling version {} of {}: {e}; the retirement is journaled: run the same command again",
                        v.version, t.secret
                    ))
                })?;
            disabled.push(v.version);
        }
        crash_point("retire-disabled");
        held("journaling the retirement as done")?;
        let j = &mut loaded.journal;
        if let Some(r) = j.retired.as_mut() {
            r.done = true;
        }
        j.current = None;
        j.drains.clear();
        j.deliveries.clear();
        loaded.save(cx.state).await.map_err(save_err)?;
        crash_point("retire-done");
        if !disabled.is_empty() {
            disabled.sort();
            report.versions = disabled;
        }
    }
    for p in &mut report.pats {
        p.revoked = true;
    }

    // 4. The lifecycle log (`patrol history`), once: a rerun finds the events already there.
    if !r.recorded {
        let events = events_of(t, &r);
        let already = history::since(cx.state, r.at).await.unwrap_or_default();
        let missing: Vec<Event> = events.into_iter().filter(|e| !already.contains(e)).collect();
        match history::record(cx.state, &missing, cx.now).await {
            Ok(()) => {
                if let Some(x) = loaded.journal.retired.as_mut() {
                    x.recorded = true;
                }
                loaded.save(cx.state).await.map_err(save_err)?;
            }
            Err(e) => report.notes.push(format!(
                "the lifecycle log was not updated ({e}): run the same command again to record the retirement"
            )),
        }
    }
    drop(lease);
    report.outcome = "retired".into();
    tracing::info!(secret = %t.secret, pats = r.pats.len(), "retired");
    Ok(report)
}

/// The lifecycle events of a retirement (pure): `retired` for the token's current PAT, `revoked` for the
/// previous ones it took with it; all at the time of the intent, so a rerun produces the same events.
pub fn events_of(t: &ManagedToken, r: &Retirement) -> Vec<Event> {
    let mut out: Vec<Event> = r
        .pats
        .iter()
        .map(|p| {
            let current = r.current == Some(p.authorization_id);
            Event {
                at: r.at,
                kind: if current { Kind::Retired } else { Kind::Revoked },
                secret: Some(t.secret.to_string()),
                owner: Some(p.owner.clone()),
                organization: p.organization.clone(),
                authorization_id: p.authorization_id,
                display_name: if current {
                    t.display_name.to_string()
                } else {
                    format!("previous PAT of {}", t.secret)
                },
                scope: t.scopes.as_str().to_owned(),
                valid_to: None,
                replaced: None,
                by: r.by.clone(),
                detail: if current {
                    format!("retired: {}", r.reason)
                } else {
                    "revoked with its retired token".into()
                },
            }
        })
        .collect();
    out.sort_by_key(|e| e.kind != Kind::Retired);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::plan::tests::{NOW, id, managed, policy_of};
    use time::Duration;

    /// An audited use within `[audit.stale] days` refuses the retirement (nothing changed); `--force` retires
    /// anyway and says what it overrode; the PAT is revoked and every version disabled.
    #[tokio::test]
    async fn recent_audited_use_refuses_without_force_and_force_retires() {
        use crate::evidence::{Checkpoint, LastUse, checkpoint_key};
        use crate::rotation::fake::FakeDevOps;
        use crate::rotation::lease::LocalLeases;
        use crate::state::FileStateStore;
        use crate::store::memory::MemoryStore;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::clock::Clock::starting_at(NOW);
        let policy = Arc::new(policy_of(1));
        let devops = FakeDevOps::new(clock.clone());
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let state = Arc::new(FileStateStore::new(dir.path().join("state")));
        let engine = crate::rotation::engine::Engine::new(
            policy.clone(),
            Arc::new(devops.clone()),
            store.clone(),
            state.clone(),
            clock.clone(),
        );
        assert_eq!(engine.run(Default::default()).await.unwrap().rotated, 1);
        let current = devops.active()[0].pat.authorization_id;
        let t = &policy.tokens[0];
        let cp = Checkpoint {
            window_end: Some(NOW),
            watched_since: Some(NOW - Duration::days(60)),
            last_use: [(
                current,
                LastUse {
                    at: NOW - Duration::days(2),
                    ip: "10.1.2.3".into(),
                    user_agent: "git/2.45".into(),
                    action_id: "Git.RefUpdatePoliciesBypassed".into(),
                    entry_id: "e1".into(),
                },
            )]
            .into(),
            ..Default::default()
        };
        state.save(&checkpoint_key(&t.organization), &serde_json::to_vec(&cp).unwrap(), None).await.unwrap();
        let leases = LocalLeases::default();
        let cx = RetireContext {
            token: t,
            connector: &devops,
            store: store.as_ref(),
            state: state.as_ref(),
            leases: &leases,
            stale_days: 30,
            now: NOW,
        };
        let mut yes = |_: &RetireReport| true;
        let r = retire(&cx, "unused", false, false, &mut yes).await.unwrap();
        assert_eq!(r.outcome, "refused", "{r:?}");
        assert!(
            r.blockers[0].contains("in use within the last 30 days") && r.blockers[0].contains("10.1.2.3"),
            "{r:?}"
        );
        assert_eq!(devops.active().len(), 1, "a refused retirement revoked");
        assert!(crate::rotation::journal::load(state.as_ref(), &t.secret).await.unwrap().journal.retired.is_none());

        let r = retire(&cx, "owner confirmed", false, true, &mut yes).await.unwrap();
        assert_eq!(r.outcome, "retired", "{r:?}");
        assert!(r.notes.iter().any(|n| n.starts_with("--force: retired despite")), "{r:?}");
        assert!(devops.active().is_empty());
        assert!(store.list_versions(&t.secret).await.unwrap().iter().all(|v| !v.enabled));
        let events = history::since(state.as_ref(), NOW - Duration::days(1)).await.unwrap();
        assert!(events.iter().any(|e| e.kind == Kind::Retired && e.authorization_id == current));
    }

    #[test]
    fn the_current_pat_first_then_every_draining_one_and_one_retired_event() {
        let policy = policy_of(1);
        let t = &policy.tokens[0];
        let mut ts = managed("tok-0", id(1), NOW + Duration::days(20));
        ts.journal.drains.push(crate::rotation::journal::Drain {
            pat: PatVersion {
                authorization_id: id(7),
                owner: t.owner.clone(),
                organization: t.organization.clone(),
                vault_version: None,
            },
            revoke_after: NOW + Duration::days(1),
            replaced_by: None,
        });
        let pats = to_revoke(t, &ts);
        assert_eq!(
            pats.iter().map(|(p, c)| (p.authorization_id, *c)).collect::<Vec<_>>(),
            [(id(1), true), (id(7), false)]
        );
        let r = Retirement {
            at: NOW,
            by: Some("patrol retire".into()),
            reason: "unused".into(),
            current: Some(id(1)),
            pats: pats.into_iter().map(|(p, _)| p).collect(),
            done: true,
            recorded: false,
        };
        let ev = events_of(t, &r);
        assert_eq!(
            ev.iter().map(|e| (e.kind, e.authorization_id)).collect::<Vec<_>>(),
            [(Kind::Retired, id(1)), (Kind::Revoked, id(7))]
        );
        assert!(
            ev[0].detail.contains("unused")
                && ev.iter().all(|e| e.at == NOW && e.by.as_deref() == Some("patrol retire"))
        );
        // The same retirement gives the same events (a rerun finds them already logged).
        assert_eq!(events_of(t, &r), ev);
    }
}
