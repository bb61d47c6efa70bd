//! Azure RBAC for the emulated vault's data plane, per vault and per secret, as Key Vault's RBAC
//! permission model works: a request is allowed when the caller holds a role assignment, at the vault's
//! scope or at the secret's own scope (`…/vaults/{vault}/secrets/{name}`), whose role grants the data action.
//!
//! Built-in roles (their data actions, from Azure's built-in role definitions):
//! - `Key Vault Administrator`, `Key Vault Secrets Officer` — every `secrets/*` action;
//! - `Key Vault Secrets User` — `secrets/getSecret/action`, `secrets/readMetadata/action`;
//! - `Key Vault Reader` — `secrets/readMetadata/action` (metadata, never values).
//!
//! Without any assignment configured (the default) the vault admits every authenticated caller, as the
//! emulator always did; once assignments are set, RBAC is enforced and everything else gets 403
//! `ForbiddenByRbac`. Listing secrets is a vault-scope action: a secret-scope assignment does not allow it.

use serde::{Deserialize, Serialize};

pub const ADMINISTRATOR: &str = "Key Vault Administrator";
pub const SECRETS_OFFICER: &str = "Key Vault Secrets Officer";
pub const SECRETS_USER: &str = "Key Vault Secrets User";
pub const READER: &str = "Key Vault Reader";
pub const ROLES: [&str; 4] = [ADMINISTRATOR, SECRETS_OFFICER, SECRETS_USER, READER];

/// One role assignment on the vault (`secret: None`) or on one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleAssignment {
    /// The caller as the vault sees it: an app's client id or a user's UPN.
    pub principal: String,
    /// One of [`ROLES`].
    pub role: String,
    /// The secret the assignment is scoped to; `None`: the whole vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Whether `role` grants `action` (`getSecret/action`, `readMetadata/action`, `setSecret/action`, …).
pub fn grants(role: &str, action: &str) -> bool {
    match role {
        ADMINISTRATOR | SECRETS_OFFICER => true,
        SECRETS_USER => matches!(action, "getSecret/action" | "readMetadata/action"),
        READER => action == "readMetadata/action",
        _ => false,
    }
}

/// Checks assignments from the control API.
pub fn validate(assignments: &[RoleAssignment]) -> Result<(), String> {
    for a in assignments {
        if a.principal.trim().is_empty() {
            return Err("a role assignment has an empty principal".into());
        }
        if !ROLES.contains(&a.role.as_str()) {
            return Err(format!("role {:?} is not one of {}", a.role, ROLES.join(", ")));
        }
        if a.secret.as_deref().is_some_and(|s| s.is_empty() || s.contains('/')) {
            return Err(format!("secret scope {:?} is not a secret name", a.secret));
        }
    }
    Ok(())
}

/// Whether `principal` may perform `action` on `secret` (`None`: a vault-scope request such as a list).
/// `assignments: None` means RBAC is not configured: everyone is admitted.
pub fn allowed(assignments: Option<&[RoleAssignment]>, principal: &str, action: &str, secret: Option<&str>) -> bool {
    let Some(assignments) = assignments else { return true };
    assignments.iter().any(|a| {
        a.principal.eq_ignore_ascii_case(principal)
            && grants(&a.role, action)
            && match (&a.secret, secret) {
                (None, _) => true,
                (Some(scoped), Some(s)) => scoped.eq_ignore_ascii_case(s),
                (Some(_), None) => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(principal: &str, role: &str, secret: Option<&str>) -> RoleAssignment {
        RoleAssignment { principal: principal.into(), role: role.into(), secret: secret.map(str::to_owned) }
    }

    #[test]
    fn per_vault_and_per_secret() {
        assert!(allowed(None, "anyone", "setSecret/action", Some("x")), "no RBAC configured");
        let set = [
            a("patrol", SECRETS_OFFICER, None),
            a("pipeline", SECRETS_USER, Some("ci-pat")),
            a("auditor", READER, None),
        ];
        let set = Some(&set[..]);
        assert!(allowed(set, "patrol", "purge/action", Some("x")));
        assert!(allowed(set, "pipeline", "getSecret/action", Some("CI-PAT")));
        assert!(!allowed(set, "pipeline", "getSecret/action", Some("patrol-owner-x")), "another secret");
        assert!(!allowed(set, "pipeline", "readMetadata/action", None), "no vault-scope list");
        assert!(!allowed(set, "pipeline", "setSecret/action", Some("ci-pat")));
        assert!(allowed(set, "auditor", "readMetadata/action", None));
        assert!(!allowed(set, "auditor", "getSecret/action", Some("ci-pat")), "Reader never reads values");
        assert!(!allowed(set, "stranger", "readMetadata/action", None));
        assert!(validate(&[a("p", "Owner", None)]).is_err());
    }
}
