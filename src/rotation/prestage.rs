//! Pre-staged replacements (break glass, global-PAT migration) through the engine: [`Engine::prestage`]
//! runs one token's rotation for a given reason through the journaled state machine, under the token's
//! lease, exactly as a forced rotation does — and is idempotent over a window: a rotation for the same
//! reason that completed at or after `since` counts as done, so rerunning an interrupted break glass
//! never replaces a token twice. It never revokes the replaced PAT (callers decide; a compromise rotation
//! leaves it draining with no grace, so the next run revokes it even if the caller never gets to).

use super::engine::{Engine, RunOptions};
use super::journal::{self, Completed, Journal, Reason};
use super::plan::Requests;
use crate::domain::{AuthorizationId, SecretName};
use time::OffsetDateTime;

/// A replacement that is created and stored as the secret's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prestaged {
    pub completed: Completed,
    /// The full display name of the new PAT (with patrol's marker).
    pub display_name: String,
    /// The PAT it replaced, when the journal knows it.
    pub replaced: Option<AuthorizationId>,
    /// `true` when this call made (or finished) it, `false` when an earlier run at or after `since` had.
    pub fresh: bool,
}

/// How many engine runs one pre-staging may take: an operation left in flight by a crash is finished by
/// the first (it may be for another reason), the rotation asked for by the second.
const MAX_RUNS: usize = 2;
/// How often, and how long each time, to wait for a token whose lease another instance holds.
const BUSY_WAITS: u32 = 30;
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn done_since(j: &Journal, reason: Reason, since: OffsetDateTime) -> Option<&Completed> {
    if j.operation.is_some() {
        return None;
    }
    j.last.as_ref().filter(|c| c.reason == reason && c.finished >= since)
}

impl Engine {
    /// Rotates `secret` for `reason` through the state machine unless a rotation for that reason already
    /// completed at or after `since` (see the module doc). Errors name the secret and what went wrong.
    pub async fn prestage(
        &self,
        secret: &SecretName,
        reason: Reason,
        since: OffsetDateTime,
    ) -> Result<Prestaged, String> {
        let token = self
            .policy
            .token(secret)
            .ok_or_else(|| format!("{secret} is not in the policy, so patrol cannot rotate it"))?;
        let mut fresh = false;
        let mut busy_waits = 0;
        let mut attempt = 0;
        while attempt <= MAX_RUNS {
            let loaded = journal::load(self.state.as_ref(), secret).await.map_err(|e| format!("{secret}: {e}"))?;
            if let Some(c) = done_since(&loaded.journal, reason, since) {
                let replaced = loaded.journal.drains.iter().find(|d| d.replaced_by.as_ref() == Some(&c.op));
                return Ok(Prestaged {
                    completed: c.clone(),
                    display_name: journal::marked_display_name(token.display_name.as_str(), &c.op),
                    replaced: replaced.map(|d| d.pat.authorization_id),
                    fresh,
                });
            }
            if fresh || attempt == MAX_RUNS {
                break;
            }
            let mut requests = Requests::default();
            requests.rotate.insert(secret.clone(), reason);
            let s = self
                .run(RunOptions { dry_run: false, budget: None, only: Some(vec![secret.clone()]), requests })
                .await
                .map_err(|e| format!("{secret}: {e}"))?;
            if !s.busy.is_empty() {
                // Another instance (the timer) is working on the token: wait for it rather than give up — a
                // break glass without its replacement would revoke the value consumers use.
                busy_waits += 1;
                if busy_waits > BUSY_WAITS {
                    return Err(format!("{secret}: another instance held the token's lease for too long; run again"));
                }
                tokio::time::sleep(BUSY_WAIT).await;
                continue;
            }
            attempt += 1;
            if let Some(err) = s.reports.iter().find_map(|r| r.error.clone()) {
                return Err(format!("{secret}: the {} rotation failed: {err}", reason.as_str()));
            }
            fresh = s.reports.iter().any(|r| r.rotated.as_ref().is_some_and(|c| c.reason == reason));
        }
        Err(format!("{secret}: the {} rotation did not complete (see the journal: patrol status)", reason.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::rotation::fake::FakeDevOps;
    use crate::rotation::lease::{Leases, LocalLeases};
    use crate::rotation::policy::Policy;
    use crate::state::FileStateStore;
    use crate::store::FileSecretStore;
    use std::sync::Arc;
    use time::macros::datetime;

    #[tokio::test]
    async fn waits_for_a_held_lease_rotates_once_per_window_and_again_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::starting_at(datetime!(2027-01-01 03:00 UTC));
        let store =
            FileSecretStore::open(dir.path().join("vault"), &dir.path().join("store.key"), clock.clone()).unwrap();
        let text = "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
                    [[token]]\nsecret = \"tok-0\"\ndisplay_name = \"Token 0\"\nvalidity_days = 30\n\
                    rotate_before_days = 7\ngrace_days = 2\n";
        let leases = Arc::new(LocalLeases::default());
        let engine = Engine::new(
            Arc::new(Policy::parse(std::path::Path::new("patrol.toml"), text).unwrap()),
            Arc::new(FakeDevOps::new(clock.clone())),
            Arc::new(store),
            Arc::new(FileStateStore::new(dir.path().join("state"))),
            clock.clone(),
        )
        .with_leases(leases.clone())
        .with_concurrency(2);
        let secret = SecretName::parse("tok-0").unwrap();
        assert!(engine.prestage(&SecretName::parse("nope").unwrap(), Reason::Compromised, clock.now()).await.is_err());
        assert_eq!(engine.run(RunOptions::default()).await.unwrap().rotated, 1);
        let first = engine.current_of(&secret).await.unwrap();

        // Another instance holds the token: prestage waits for it instead of giving up.
        let held = leases.try_acquire("token/tok-0").await.unwrap().unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            drop(held);
        });
        let since = clock.now();
        let p = engine.prestage(&secret, Reason::Compromised, since).await.unwrap();
        release.await.unwrap();
        assert!(p.fresh && p.completed.reason == Reason::Compromised);
        assert_eq!(p.replaced, Some(first));
        assert_eq!(engine.current_of(&secret).await, Some(p.completed.authorization_id));
        assert!(p.display_name.starts_with("Token 0 (patrol:"));

        // The same window again (a rerun): found, not made again.
        clock.advance(time::Duration::minutes(1));
        let again = engine.prestage(&secret, Reason::Compromised, since).await.unwrap();
        assert!(!again.fresh);
        assert_eq!(again.completed, p.completed);
        // A later window (a new break glass): a new rotation.
        let later = engine.prestage(&secret, Reason::Compromised, clock.now()).await.unwrap();
        assert!(later.fresh && later.completed.authorization_id != p.completed.authorization_id);
        assert_eq!(later.replaced, Some(p.completed.authorization_id));
    }
}
