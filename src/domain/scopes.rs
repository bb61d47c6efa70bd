//! PAT scopes: the space-separated `vso.*` list Azure DevOps puts in a PAT's `scope` field.

use super::{DomainError, string_domain_type};
use std::collections::BTreeSet;

/// Every PAT scope Azure DevOps documents (Microsoft Learn `scopes.md`, 2025-07-16), plus full access
/// `app_token`. A policy naming anything else is refused before it reaches Azure DevOps.
pub const KNOWN_SCOPES: &[&str] = &[
    "app_token",
    "vso.advsec",
    "vso.advsec_write",
    "vso.advsec_manage",
    "vso.agentpools",
    "vso.agentpools_manage",
    "vso.environment_manage",
    "vso.machinegroup_manage",
    "vso.analytics",
    "vso.auditlog",
    "vso.auditstreams_manage",
    "vso.build",
    "vso.build_execute",
    "vso.code",
    "vso.code_write",
    "vso.code_manage",
    "vso.code_full",
    "vso.code_status",
    "vso.threads_full",
    "vso.connected_server",
    "vso.entitlements",
    "vso.memberentitlementmanagement",
    "vso.memberentitlementmanagement_write",
    "vso.extension",
    "vso.extension_manage",
    "vso.extension.data",
    "vso.extension.data_write",
    "vso.githubconnections",
    "vso.githubconnections_manage",
    "vso.graph",
    "vso.graph_manage",
    "vso.identity",
    "vso.identity_manage",
    "vso.gallery",
    "vso.gallery_acquire",
    "vso.gallery_publish",
    "vso.gallery_manage",
    "vso.notification",
    "vso.notification_write",
    "vso.notification_manage",
    "vso.notification_diagnostics",
    "vso.packaging",
    "vso.packaging_write",
    "vso.packaging_manage",
    "vso.pipelineresources_use",
    "vso.pipelineresources_manage",
    "vso.project",
    "vso.project_write",
    "vso.project_manage",
    "vso.release",
    "vso.release_execute",
    "vso.release_manage",
    "vso.securefiles_read",
    "vso.securefiles_write",
    "vso.securefiles_manage",
    "vso.security_manage",
    "vso.serviceendpoint",
    "vso.serviceendpoint_query",
    "vso.serviceendpoint_manage",
    "vso.hooks",
    "vso.hooks_write",
    "vso.hooks_interact",
    "vso.settings",
    "vso.settings_write",
    "vso.symbols",
    "vso.symbols_write",
    "vso.symbols_manage",
    "vso.taskgroups_read",
    "vso.taskgroups_write",
    "vso.taskgroups_manage",
    "vso.dashboards",
    "vso.dashboards_manage",
    "vso.test",
    "vso.test_write",
    "vso.tokens",
    "vso.tokenadministration",
    "vso.profile",
    "vso.profile_write",
    "vso.variablegroups_read",
    "vso.variablegroups_write",
    "vso.variablegroups_manage",
    "vso.wiki",
    "vso.wiki_write",
    "vso.work",
    "vso.work_write",
    "vso.work_full",
];

/// One documented scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(&'static str);

impl Scope {
    pub const FULL_ACCESS: &'static str = "app_token";

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        KNOWN_SCOPES.iter().find(|k| **k == s).map(|k| Self(k)).ok_or_else(|| {
            DomainError::new("scope", s, "is not a documented Azure DevOps PAT scope (see docs/policy.md)")
        })
    }

    pub fn as_str(&self) -> &str {
        self.0
    }

    pub fn is_full_access(&self) -> bool {
        self.0 == Self::FULL_ACCESS
    }
}
string_domain_type!(Scope);

/// A non-empty set of scopes; `Display` is the canonical space-separated, sorted form Azure DevOps takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scopes {
    /// Sorted, without duplicates (a slice, not a `BTreeSet`: a policy of 10,000 tokens holds 10,000 sets,
    /// most of one or two scopes).
    set: Box<[Scope]>,
    canonical: String,
}

impl Scopes {
    /// Parses a space-separated list. Duplicates collapse; order does not matter.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let mut set = BTreeSet::new();
        for part in s.split_whitespace() {
            set.insert(Scope::parse(part).map_err(|e| DomainError::new("scopes", s, e.to_string()))?);
        }
        if set.is_empty() {
            return Err(DomainError::new("scopes", s, "must name at least one scope"));
        }
        let canonical = set.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ");
        Ok(Self { set: set.into_iter().collect(), canonical })
    }

    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.set.iter()
    }

    pub fn is_full_access(&self) -> bool {
        self.set.iter().any(Scope::is_full_access)
    }

    /// The same set as a scope string Azure DevOps returned (which may be in another order)?
    pub fn matches_wire(&self, wire: &str) -> bool {
        let mut other: Vec<&str> = wire.split_whitespace().collect();
        other.sort_unstable();
        other.dedup();
        other.len() == self.set.len() && other.iter().zip(self.set.iter()).all(|(a, b)| *a == b.as_str())
    }
}
string_domain_type!(Scopes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_canonical() {
        let s = Scopes::parse("vso.code  vso.build vso.code").unwrap();
        assert_eq!(s.as_str(), "vso.build vso.code");
        assert!(s.matches_wire("vso.code vso.build"));
        assert!(!s.matches_wire("vso.code"));
        assert!(!s.is_full_access());
        assert!(Scopes::parse("app_token").unwrap().is_full_access());
    }

    #[test]
    fn unknown_and_empty_are_refused() {
        let e = Scopes::parse("vso.code vso.nope").unwrap_err();
        assert!(e.to_string().contains("vso.nope"), "{e}");
        assert!(Scopes::parse("   ").is_err());
    }
}
