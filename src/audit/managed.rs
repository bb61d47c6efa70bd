//! The PATs patrol manages, as the secret store's tags describe them (current version per secret): who owns
//! each, where it is valid, and which previous PAT is still draining. This is what break glass, the timer's
//! audit pass and `patrol migrate-global` need to know without the rotation policy (tags are written by
//! whoever stores a PAT version: the rotation engine or [`super::replace`]).

use super::context::{KnownPat, PatStatus};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::store::{PAT_CONTENT_TYPE, SecretStore, SecretSummary, StoreError, tags};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
        let time = |k: &str| tag(k).and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
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
            status: PatStatus::Superseded { rotated_at: grace_ends.min(now), grace_ends },
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
