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
        for attempt in 0..=MAX_RUNS {
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
                return Err(format!("{secret}: another instance holds the token's lease; run again shortly"));
            }
            if let Some(err) = s.reports.iter().find_map(|r| r.error.clone()) {
                return Err(format!("{secret}: the {} rotation failed: {err}", reason.as_str()));
            }
            fresh = s.reports.iter().any(|r| r.rotated.as_ref().is_some_and(|c| c.reason == reason));
        }
        Err(format!("{secret}: the {} rotation did not complete (see the journal: patrol status)", reason.as_str()))
    }
}
