//! Replacing a managed PAT outside the normal schedule: a new organization-scoped PAT with the same owner,
//! organization, name and scopes, stored as the secret's new current version **before** anything is
//! revoked — so an emergency revocation (break glass) or a global-PAT migration is not an outage.
//!
//! [`Replacer`] is the seam; [`EngineReplacer`] is the one implementation: the rotation engine's journaled
//! state machine ([`Engine::prestage`](crate::rotation::engine::Engine): reason `compromised` or `global-migration`, the token's lease held),
//! so a crash at any point leaves either the old value current or the new one stored. It never revokes:
//! callers decide.

use super::managed::ManagedPat;
use crate::domain::{AuthorizationId, SecretName};
use crate::rotation::engine::Engine;
use crate::rotation::journal::Reason;
use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

/// Why a PAT is replaced out of schedule (the rotation journal's reasons of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceReason {
    /// Suspected compromised: the old PAT is revoked right after (break glass, rotate-now).
    Compromised,
    /// The old PAT is all-organization (stops working on 2026-12-01); it drains through the grace period.
    GlobalMigration,
}

impl ReplaceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compromised => "compromised",
            Self::GlobalMigration => "global-migration",
        }
    }
}

/// A replacement that is created and stored (the old PAT is still valid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replacement {
    pub secret: SecretName,
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    /// The secret version now holding it.
    pub version: String,
    /// The PAT it replaces.
    pub replaces: AuthorizationId,
    /// Made by an earlier, interrupted run of the same break glass (found in the journal, not made again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

#[async_trait]
pub trait Replacer: Send + Sync {
    /// Creates and stores a replacement for `pat`; does not revoke `pat`.
    async fn replace(&self, pat: &ManagedPat, reason: ReplaceReason) -> Result<Replacement, String>;
}

/// Replaces through the rotation engine (see the module doc). `since` makes it idempotent: a replacement
/// for the same reason that completed at or after `since` (an interrupted earlier run of the same break
/// glass) is returned instead of making another.
pub struct EngineReplacer<'a> {
    pub engine: &'a Engine,
    pub since: OffsetDateTime,
}

#[async_trait]
impl Replacer for EngineReplacer<'_> {
    async fn replace(&self, pat: &ManagedPat, reason: ReplaceReason) -> Result<Replacement, String> {
        let token =
            self.engine.policy.token(&pat.secret).ok_or_else(|| {
                format!("{} is not in the policy (patrol.toml), so patrol cannot rotate it", pat.secret)
            })?;
        if token.owner != pat.owner || !pat.in_organization(&token.organization) {
            return Err(format!(
                "{}: the stored PAT belongs to {} in {}, the policy names {} in {}",
                pat.secret, pat.owner, pat.organization, token.owner, token.organization
            ));
        }
        let r = match reason {
            ReplaceReason::Compromised => Reason::Compromised,
            ReplaceReason::GlobalMigration => Reason::GlobalMigration,
        };
        let p = self.engine.prestage(&pat.secret, r, self.since).await?;
        let c = &p.completed;
        // validFrom by the service's clock (the revocation rule is set against it); patrol's otherwise.
        let valid_from =
            match self.engine.connector.pats(&token.owner, &token.organization).get(c.authorization_id).await {
                Ok(Some(created)) => created.valid_from,
                _ => c.finished,
            };
        tracing::info!(secret = %pat.secret, reason = reason.as_str(), new = %c.authorization_id,
            old = ?p.replaced, resumed = !p.fresh, "replacement PAT created and stored through the rotation engine");
        Ok(Replacement {
            secret: pat.secret.clone(),
            authorization_id: c.authorization_id,
            display_name: p.display_name,
            valid_from,
            valid_to: c.valid_to,
            version: c.vault_version.clone(),
            replaces: p.replaced.unwrap_or(pat.authorization_id),
            resumed: !p.fresh,
        })
    }
}

/// The audit layer's "rotate now" (a compromised PAT), through the engine's journaled state machine: a
/// compromise rotation (grace 0) when the suspect is the secret's current PAT, then the suspect revoked.
/// A crash anywhere converges like any rotation: the suspect becomes the previous PAT with no grace and the
/// next run revokes it. The PAT the secret's current version names is never revoked.
#[async_trait::async_trait]
impl super::respond::RotateNow for Engine {
    async fn rotate_now(
        &self,
        secret: &SecretName,
        suspect: crate::domain::AuthorizationId,
        reason: &str,
    ) -> Result<String, String> {
        let token = self.policy.token(secret).ok_or_else(|| format!("{secret} is not managed by the policy"))?;
        // What the secret's current version names (the store, not the journal: a version written outside
        // patrol is current before any run has adopted it).
        let current = || async {
            let ts = crate::rotation::inventory::token_state(self.store.as_ref(), self.state.as_ref(), secret).await;
            match ts.error {
                Some(e) => Err(format!("reading the current version of {secret} failed: {e}")),
                None => Ok(ts.current_authorization_id()),
            }
        };
        let mut done = Vec::new();
        if current().await? == Some(suspect) {
            let mut requests = crate::rotation::plan::Requests::default();
            requests.rotate.insert(secret.clone(), Reason::Compromised);
            let s = self
                .run(crate::rotation::engine::RunOptions {
                    dry_run: false,
                    budget: None,
                    only: Some(vec![secret.clone()]),
                    requests,
                })
                .await
                .map_err(|e| e.to_string())?;
            if s.rotated == 0 {
                return Err(format!("the compromise rotation of {secret} did not complete: {}", s.line()));
            }
            done.push(format!("rotated {secret} (compromised) through the journaled state machine"));
        }
        if current().await? == Some(suspect) {
            return Err(format!("refusing to revoke {suspect}: it is still the current value of {secret}"));
        }
        self.connector.pats(&token.owner, &token.organization).revoke(suspect).await.map_err(|e| {
            let prefix = if done.is_empty() { String::new() } else { format!("{}; ", done.join("; ")) };
            format!("{prefix}revoking suspect PAT {suspect} failed: {e}")
        })?;
        crate::rotation::engine::record_revoked(self, secret, suspect, &format!("suspect: {reason}")).await;
        done.push(format!("revoked suspect PAT {suspect} ({reason})"));
        Ok(done.join("; "))
    }

    async fn current_of(&self, secret: &SecretName) -> Result<Option<crate::domain::AuthorizationId>, String> {
        match self.store.get(secret, None).await {
            Ok(v) => Ok(v
                .as_ref()
                .and_then(|c| c.properties.tags.get(crate::store::tags::AUTHORIZATION_ID))
                .and_then(|s| crate::domain::AuthorizationId::parse(s).ok())),
            Err(e) => Err(format!("reading {secret} failed: {e}")),
        }
    }

    async fn record_revoked(&self, secret: &SecretName, suspect: crate::domain::AuthorizationId, detail: &str) {
        crate::rotation::engine::record_revoked(self, secret, suspect, detail).await;
    }
}
