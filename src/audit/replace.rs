//! Replacing a managed PAT outside the normal schedule: a new organization-scoped PAT with the same owner,
//! organization, base name and scopes, stored as the secret's new current version **before** anything is
//! revoked — so an emergency revocation (break glass) or a global-PAT migration is not an outage.
//!
//! [`Replacer`] is the seam. The rotation engine (branch `rotation`, `Reason::Compromised` /
//! `Reason::GlobalMigration`) is meant to implement it with its crash-safe state machine; until it does,
//! [`DirectReplacer`] does the two steps directly (Create, reconciled when the outcome is uncertain; then
//! store with the same tags the engine writes). It never revokes: callers decide.

use super::managed::ManagedPat;
use crate::clock::Clock;
use crate::devops::{Connector, CreatePat, create_reconciling};
use crate::domain::{AuthorizationId, DisplayName, OperationId, Scopes, SecretName};
use crate::store::{NewVersion, PAT_CONTENT_TYPE, SecretStore, tags};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

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
}

#[async_trait]
pub trait Replacer: Send + Sync {
    /// Creates and stores a replacement for `pat`; does not revoke `pat`.
    async fn replace(&self, pat: &ManagedPat, reason: ReplaceReason) -> Result<Replacement, String>;
}

/// The display name without patrol's ` (patrol:<op>)` marker.
pub fn base_name(display_name: &str) -> &str {
    match display_name.strip_suffix(')').and_then(|r| r.rfind(" (patrol:").map(|i| &display_name[..i])) {
        Some(base) if !base.trim().is_empty() => base,
        _ => display_name,
    }
}

/// Creates the replacement through the owner's PAT API and stores it. See the module doc.
#[derive(Clone)]
pub struct DirectReplacer {
    pub connector: Arc<dyn Connector>,
    pub store: Arc<dyn SecretStore>,
    pub clock: Clock,
    /// Validity of the replacement (the service may clamp it; the granted `validTo` is stored).
    pub validity: Duration,
    /// How long the replaced PAT may still be used after a global migration.
    pub migration_grace: Duration,
}

#[async_trait]
impl Replacer for DirectReplacer {
    async fn replace(&self, pat: &ManagedPat, reason: ReplaceReason) -> Result<Replacement, String> {
        let scopes = Scopes::parse(&pat.scope)
            .map_err(|e| format!("{}: the stored scope cannot be requested again: {e}", pat.secret))?;
        let op = OperationId::new_random();
        let name = format!("{} (patrol:{op})", base_name(&pat.display_name));
        let display_name = DisplayName::parse(&name).map_err(|e| format!("{}: {e}", pat.secret))?;
        let now = self.clock.now();
        let request = CreatePat { display_name, scopes, valid_to: now + self.validity, all_orgs: false };
        let api = self.connector.pats(&pat.owner, &pat.organization);
        let created = create_reconciling(api.as_ref(), &request, now, 2)
            .await
            .map_err(|e| format!("{}: creating the replacement PAT failed: {e}", pat.secret))?
            .created;
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let revoke_after = match reason {
            ReplaceReason::Compromised => now,
            ReplaceReason::GlobalMigration => now + self.migration_grace,
        };
        let mut t = BTreeMap::new();
        t.insert(tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned());
        t.insert(tags::AUTHORIZATION_ID.to_owned(), created.pat.authorization_id.to_string());
        t.insert(tags::DISPLAY_NAME.to_owned(), name.clone());
        t.insert(tags::ORGANIZATION.to_owned(), pat.organization.to_string());
        t.insert(tags::OWNER.to_owned(), pat.owner.to_string());
        t.insert(tags::SCOPE.to_owned(), created.pat.scope.chars().take(tags::MAX_TAG_LEN).collect());
        t.insert(tags::VALID_TO.to_owned(), fmt(created.pat.valid_to));
        t.insert(tags::OPERATION_ID.to_owned(), op.to_string());
        t.insert(tags::PREVIOUS_AUTHORIZATION_ID.to_owned(), pat.authorization_id.to_string());
        t.insert(tags::PREVIOUS_REVOKE_AFTER.to_owned(), fmt(revoke_after));
        let new = NewVersion {
            content_type: Some(PAT_CONTENT_TYPE.to_owned()),
            expires: Some(created.pat.valid_to),
            not_before: None,
            tags: t,
        };
        let stored = match self.store.set(&pat.secret, &created.token, new).await {
            Ok(v) => v,
            Err(e) => {
                // Nobody holds the new value: do not leave a live, unstored PAT behind.
                let undo = api.revoke(created.pat.authorization_id).await;
                return Err(format!(
                    "{}: storing the replacement failed ({e}); the new PAT {} was {}",
                    pat.secret,
                    created.pat.authorization_id,
                    if undo.is_ok() { "revoked again" } else { "NOT revoked — revoke it by hand" }
                ));
            }
        };
        tracing::info!(secret = %pat.secret, reason = reason.as_str(), new = %created.pat.authorization_id,
            old = %pat.authorization_id, "replacement PAT created and stored");
        Ok(Replacement {
            secret: pat.secret.clone(),
            authorization_id: created.pat.authorization_id,
            display_name: name,
            valid_from: created.pat.valid_from,
            valid_to: created.pat.valid_to,
            version: stored.version,
            replaces: pat.authorization_id,
        })
    }
}

/// [`super::respond::RotateNow`] without the rotation engine: replace (create + store) through a
/// [`Replacer`], then revoke the suspect PAT at once. The rotation engine's `Reason::Compromised` run is
/// meant to take this over (journaled, crash-safe); this one is not journaled — a crash between the store
/// and the revoke leaves the suspect PAT alive, and the next finding on it rotates again.
pub struct ReplaceAndRevoke {
    pub replacer: Arc<dyn Replacer>,
    pub connector: Arc<dyn Connector>,
    pub store: Arc<dyn SecretStore>,
}

#[async_trait]
impl super::respond::RotateNow for ReplaceAndRevoke {
    async fn rotate_now(&self, secret: &SecretName, suspect: AuthorizationId, reason: &str) -> Result<String, String> {
        let managed = super::managed::managed_pats(self.store.as_ref())
            .await
            .map_err(|e| format!("reading the managed secrets failed: {e}"))?;
        let pat = managed.into_iter().find(|m| &m.secret == secret).ok_or_else(|| {
            format!("{secret} is not a managed secret in the store (no patrol tags on its current version)")
        })?;
        let mut done = Vec::new();
        // Rotate only when the suspect is the current value; a suspect previous PAT is only revoked.
        if pat.authorization_id == suspect {
            let r = self.replacer.replace(&pat, ReplaceReason::Compromised).await?;
            done.push(format!("stored replacement PAT {} as version {} of {secret}", r.authorization_id, r.version));
        }
        self.connector.pats(&pat.owner, &pat.organization).revoke(suspect).await.map_err(|e| {
            format!(
                "{}revoking suspect PAT {suspect} failed: {e}",
                done.join("; ") + if done.is_empty() { "" } else { "; " }
            )
        })?;
        done.push(format!("revoked suspect PAT {suspect} ({reason})"));
        Ok(done.join("; "))
    }

    async fn current_of(&self, secret: &SecretName) -> Result<Option<AuthorizationId>, String> {
        let current = self.store.get(secret, None).await.map_err(|e| format!("reading {secret} failed: {e}"))?;
        Ok(current
            .as_ref()
            .and_then(|c| c.properties.tags.get(crate::store::tags::AUTHORIZATION_ID))
            .and_then(|s| AuthorizationId::parse(s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_name_strips_only_patrols_marker() {
        assert_eq!(base_name("ci (patrol:0123456789ab)"), "ci");
        assert_eq!(base_name("ci (build)"), "ci (build)");
        assert_eq!(base_name(" (patrol:x)"), " (patrol:x)");
        assert_eq!(base_name("plain"), "plain");
    }
}
