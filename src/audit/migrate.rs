//! Global PATs: find every all-organization PAT (`targetAccounts == null`) of the owners patrol watches —
//! they stop working on 2026-12-01 ([`GLOBAL_PAT_CUTOFF`]) — and replace the managed ones with
//! organization-scoped PATs through the replacement path with reason `global-migration` (the old PAT then
//! drains through the grace period like after any rotation; it is not revoked here).

use super::breakglass::render_table;
use super::managed::ManagedPat;
use super::replace::{ReplaceReason, Replacement, Replacer};
use crate::devops::{Connector, DisplayFilter, GLOBAL_PAT_CUTOFF};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use serde::Serialize;
use time::OffsetDateTime;

/// An all-organization PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalPat {
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub owner: OwnerId,
    pub organization: OrgName,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    /// When it stops working: the cutoff or its own expiry, whichever is first.
    #[serde(with = "time::serde::rfc3339")]
    pub stops_on: OffsetDateTime,
    /// `stops_on` has passed: Azure DevOps no longer accepts it (all-organization PATs stopped working on
    /// 2026-12-01), so it is not "at risk" but already broken.
    pub stopped_working: bool,
    pub secret: Option<SecretName>,
}

impl GlobalPat {
    /// "stopped working on …" or "stops working on …".
    pub fn status(&self) -> String {
        let verb = if self.stopped_working { "stopped" } else { "stops" };
        format!("{verb} working on {}", crate::report::date(self.stops_on))
    }
}

/// Lists every active PAT of each (owner, organization) that has managed PATs and keeps the global ones.
pub async fn find_global(
    managed: &[ManagedPat],
    connector: &dyn Connector,
    now: OffsetDateTime,
) -> (Vec<GlobalPat>, Vec<String>) {
    let mut pairs: Vec<(OwnerId, OrgName)> = Vec::new();
    for m in managed {
        let p = (m.owner.clone(), m.organization.clone());
        if !pairs.contains(&p) {
            pairs.push(p);
        }
    }
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for (owner, org) in pairs {
        match connector.pats(&owner, &org).list(DisplayFilter::Active).await {
            Ok(pats) => {
                for p in pats.into_iter().filter(|p| p.is_global()) {
                    let secret =
                        managed.iter().find(|m| m.authorization_id == p.authorization_id).map(|m| m.secret.clone());
                    if out.iter().any(|g: &GlobalPat| g.authorization_id == p.authorization_id) {
                        continue; // a global PAT is listed in every organization of its owner
                    }
                    out.push(GlobalPat {
                        authorization_id: p.authorization_id,
                        display_name: p.display_name.clone(),
                        owner: owner.clone(),
                        organization: org.clone(),
                        scope: p.scope.clone(),
                        valid_to: p.valid_to,
                        stops_on: p.valid_to.min(GLOBAL_PAT_CUTOFF),
                        stopped_working: p.valid_to.min(GLOBAL_PAT_CUTOFF) <= now,
                        secret,
                    });
                }
            }
            Err(e) => errors.push(format!("listing the PATs of {owner} in {org} failed: {e}")),
        }
    }
    out.sort_by(|a, b| {
        (a.secret.is_none(), &a.owner, &a.display_name).cmp(&(b.secret.is_none(), &b.owner, &b.display_name))
    });
    (out, errors)
}

/// One global PAT's migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationRow {
    #[serde(flatten)]
    pub pat: GlobalPat,
    /// `replaced`, `would replace`, `not managed: …` or `failed: …`.
    pub outcome: String,
    pub replacement: Option<Replacement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub dry_run: bool,
    pub rows: Vec<MigrationRow>,
    pub errors: Vec<String>,
}

impl MigrationReport {
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.rows.iter().any(|r| r.outcome.starts_with("failed"))
    }

    pub fn table(&self) -> String {
        let head = ["SECRET", "DISPLAY NAME", "OWNER", "STATUS", "OUTCOME", "REPLACEMENT"];
        let rows: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.pat.secret.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
                    r.pat.display_name.clone(),
                    r.pat.owner.to_string(),
                    r.pat.status(),
                    r.outcome.clone(),
                    r.replacement.as_ref().map(|p| p.authorization_id.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut out = if self.dry_run { "DRY RUN — nothing was changed\n".to_owned() } else { String::new() };
        out.push_str(&render_table(&head, &rows));
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }
}

/// Replaces every managed global PAT (unmanaged ones are listed with what to do).
pub async fn migrate(
    globals: Vec<GlobalPat>,
    managed: &[ManagedPat],
    replacer: &dyn Replacer,
    dry_run: bool,
    errors: Vec<String>,
) -> MigrationReport {
    let mut rows = Vec::new();
    for g in globals {
        let m = g.secret.as_ref().and_then(|s| managed.iter().find(|m| &m.secret == s));
        let (outcome, replacement) = match (m, dry_run) {
            (None, _) => (
                "not managed: replace it by hand with an organization-scoped PAT (or bring it under patrol)".to_owned(),
                None,
            ),
            (Some(_), true) => ("would replace".to_owned(), None),
            (Some(m), false) => match replacer.replace(m, ReplaceReason::GlobalMigration).await {
                Ok(r) => ("replaced".to_owned(), Some(r)),
                Err(e) => (format!("failed: {e}"), None),
            },
        };
        rows.push(MigrationRow { pat: g, outcome, replacement });
    }
    MigrationReport { dry_run, rows, errors }
}
