//! The PATs patrol manages: who owns each, where it is valid, and which previous PAT is still draining.
//!
//! One definition, shared by rotation and audit ([`managed`]): a PAT is managed when the policy names its
//! secret and the journal or the secret's current version identifies it — the same join the rotation
//! inventory makes. A PAT onboarded the documented way (its value in the vault with an `authorization-id`
//! tag) is therefore watched from day one, before patrol ever rotated it. A token the policy names whose
//! PAT cannot be identified is returned as [`Unwatched`], to be reported, never silently skipped. Secrets
//! patrol wrote (`managed-by=patrol` tags) that the policy no longer names stay watched too.
//! [`managed_pats`] (tags only) serves callers without a policy (break glass, `patrol migrate-global`).

use super::context::{KnownPat, PatStatus};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::rotation::inventory::token_state;
use crate::rotation::policy::Policy;
use crate::state::StateStore;
use crate::store::{PAT_CONTENT_TYPE, SecretStore, SecretSummary, StoreError, tags};
use serde::Serialize;
use time::OffsetDateTime;

/// One managed secret's current PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedPat {
    pub secret: SecretName,
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub organization: OrgName,
    pub owner: OwnerId,
    /// Space-separated, as Azure DevOps granted it.
    pub scope: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    /// The PAT this one replaced, while it may still be in use.
    pub previous: Option<AuthorizationId>,
    /// When the previous PAT's grace period ends.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_revoke_after: Option<OffsetDateTime>,
    /// When patrol replaced the previous PAT (the journal's last rotation), if known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub replaced_at: Option<OffsetDateTime>,
}

impl ManagedPat {
    /// Reads a secret's tags; `None` when the secret is not a PAT patrol wrote or lacks an essential tag.
    pub fn from_summary(s: &SecretSummary) -> Option<Self> {
        let tag = |k: &str| s.tags.get(k).map(String::as_str).filter(|v| !v.trim().is_empty());
        if tag(tags::MANAGED_BY) != Some(tags::MANAGED_BY_VALUE) {
            return None;
        }
        if s.content_type.as_deref().is_some_and(|c| c != PAT_CONTENT_TYPE) {
            return None;
        }
        let time = |k: &str| tag(k).and_then(crate::timestamp::parse_opt);
        Some(Self {
            secret: s.name.clone(),
            authorization_id: AuthorizationId::parse(tag(tags::AUTHORIZATION_ID)?).ok()?,
            display_name: tag(tags::DISPLAY_NAME).unwrap_or_default().to_owned(),
            organization: OrgName::parse(tag(tags::ORGANIZATION)?).ok()?,
            owner: OwnerId::parse(tag(tags::OWNER)?).ok()?,
            scope: tag(tags::SCOPE).unwrap_or_default().to_owned(),
            valid_to: time(tags::VALID_TO),
            previous: tag(tags::PREVIOUS_AUTHORIZATION_ID).and_then(|v| AuthorizationId::parse(v).ok()),
            previous_revoke_after: time(tags::PREVIOUS_REVOKE_AFTER),
            replaced_at: None,
        })
    }

    pub fn in_organization(&self, org: &OrgName) -> bool {
        self.organization.as_str().eq_ignore_ascii_case(org.as_str())
    }

    /// The current PAT as the audit rules know it.
    pub fn known(&self, now: OffsetDateTime) -> KnownPat {
        KnownPat {
            authorization_id: self.authorization_id,
            display_name: self.display_name.clone(),
            owner: self.owner.clone(),
            organization: self.organization.clone(),
            secret: Some(self.secret.clone()),
            valid_from: now,
            valid_to: self.valid_to.unwrap_or(now),
            scope: self.scope.clone(),
            global: false,
            status: PatStatus::Current,
        }
    }

    /// The previous PAT, superseded, while its id is recorded.
    pub fn known_previous(&self, now: OffsetDateTime) -> Option<KnownPat> {
        let id = self.previous?;
        let grace_ends = self.previous_revoke_after.unwrap_or(now);
        Some(KnownPat {
            authorization_id: id,
            display_name: format!("previous PAT of {}", self.secret),
            status: PatStatus::Superseded {
                rotated_at: self.replaced_at.unwrap_or(now).min(grace_ends).min(now),
                grace_ends,
            },
            ..self.known(now)
        })
    }
}

/// Every managed PAT in the store, sorted by secret name. Secrets that are not patrol's are skipped.
pub async fn managed_pats(store: &dyn SecretStore) -> Result<Vec<ManagedPat>, StoreError> {
    let mut out: Vec<ManagedPat> =
        store.list().await?.iter().filter(|s| s.enabled).filter_map(ManagedPat::from_summary).collect();
    out.sort_by(|a, b| a.secret.cmp(&b.secret));
    Ok(out)
}

/// A token the policy names that patrol cannot watch, and why (reported, never skipped silently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unwatched {
    pub secret: SecretName,
    pub organization: OrgName,
    pub owner: OwnerId,
    pub reason: String,
}

impl Unwatched {
    /// The problem in one sentence.
    pub fn sentence(&self) -> String {
        format!(
            "managed token {} ({} in {}) is not watched in the audit log: {}",
            self.secret, self.owner, self.organization, self.reason
        )
    }
}

/// The managed PATs (sorted by secret) and the managed tokens that cannot be watched.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Managed {
    pub pats: Vec<ManagedPat>,
    pub unwatched: Vec<Unwatched>,
    /// What could not be read at all.
    pub errors: Vec<String>,
}

/// Every managed PAT: each `[[token]]` of the policy joined with its journal and its secret's current version
/// (see the module doc), plus secrets patrol wrote that the policy no longer names.
pub async fn managed(policy: &Policy, store: &dyn SecretStore, state: &dyn StateStore) -> Managed {
    let mut out = Managed::default();
    for t in &policy.tokens {
        let ts = token_state(store, state, &t.secret).await;
        let unwatched = |reason: String| Unwatched {
            secret: t.secret.clone(),
            organization: t.organization.clone(),
            owner: t.owner.clone(),
            reason,
        };
        if let Some(e) = &ts.error {
            out.unwatched.push(unwatched(e.clone()));
            continue;
        }
        let journal_current = ts.journal.current.as_ref().map(|c| c.authorization_id);
        // The vault's current version is what consumers use: its tag wins over the journal.
        let Some(id) = ts.current_authorization_id().or(journal_current) else {
            // No secret yet: there is no PAT to watch (the next rotation creates the first one).
            if ts.current.is_some() {
                out.unwatched.push(unwatched(format!(
                    "its current version has no {} tag and patrol has not rotated it yet, so patrol cannot tell \
                     which PAT it holds; onboard it with the tag (docs/deploy.md) or rotate it",
                    tags::AUTHORIZATION_ID
                )));
            }
            continue;
        };
        let tag = |k: &str| ts.tag(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let last = ts.journal.last.as_ref().filter(|l| l.authorization_id == id);
        // Draining PATs: the journal's (with their grace), else the tag's previous.
        let drain = ts.journal.drains.iter().find(|d| d.pat.authorization_id != id);
        let (previous, previous_revoke_after) = match drain {
            Some(d) => (Some(d.pat.authorization_id), Some(d.revoke_after)),
            None => match journal_current.filter(|j| *j != id) {
                // The vault holds a version patrol has not adopted yet: the one it knew is still in use.
                Some(j) => (Some(j), None),
                None => (
                    tag(tags::PREVIOUS_AUTHORIZATION_ID).and_then(|v| AuthorizationId::parse(&v).ok()),
                    ts.tag_time(tags::PREVIOUS_REVOKE_AFTER),
                ),
            },
        };
        out.pats.push(ManagedPat {
            secret: t.secret.clone(),
            authorization_id: id,
            display_name: tag(tags::DISPLAY_NAME).unwrap_or_else(|| t.display_name.as_str().to_owned()),
            organization: t.organization.clone(),
            owner: t.owner.clone(),
            scope: tag(tags::SCOPE).unwrap_or_else(|| t.scopes.to_string()),
            valid_to: ts.tag_time(tags::VALID_TO).or(last.map(|l| l.valid_to)),
            previous,
            previous_revoke_after,
            replaced_at: previous.and(last.map(|l| l.finished)),
        });
    }
    match managed_pats(store).await {
        Ok(tagged) => {
            for m in tagged {
                if !policy.tokens.iter().any(|t| t.secret == m.secret) {
                    out.pats.push(m);
                }
            }
        }
        Err(e) => out.errors.push(format!("listing the secrets patrol wrote outside the policy: {e}")),
    }
    out.pats.sort_by(|a, b| a.secret.cmp(&b.secret));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(pairs: &[(&str, &str)]) -> SecretSummary {
        SecretSummary {
            name: SecretName::parse("ci-build").unwrap(),
            enabled: true,
            expires: None,
            content_type: Some(PAT_CONTENT_TYPE.into()),
            tags: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn reads_tags_and_refuses_foreign_or_incomplete_secrets() {
        let id = "c2e0abd5-85a8-40b0-a179-88e98538ec7c";
        let full = [
            (tags::MANAGED_BY, "patrol"),
            (tags::AUTHORIZATION_ID, id),
            (tags::DISPLAY_NAME, "ci (patrol:0123456789ab)"),
            (tags::ORGANIZATION, "fabrikam"),
            (tags::OWNER, "build@fabrikam.test"),
            (tags::SCOPE, "vso.code"),
            (tags::VALID_TO, "2026-05-01T00:00:00Z"),
        ];
        let m = ManagedPat::from_summary(&summary(&full)).unwrap();
        assert_eq!(m.authorization_id.to_string(), id);
        assert_eq!(m.valid_to.unwrap().year(), 2026);
        assert!(m.previous.is_none());
        let mut foreign = full;
        foreign[0] = (tags::MANAGED_BY, "someone-else");
        assert!(ManagedPat::from_summary(&summary(&foreign)).is_none());
        assert!(ManagedPat::from_summary(&summary(&full[..3])).is_none());
    }
}
