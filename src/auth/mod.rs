//! Delegated Microsoft Entra sign-in for PAT owners.
//!
//! Owns: the device-code sign-in (`patrol login`), keeping each owner's refresh token in the secret store
//! (rotated on every use), and handing out access tokens for the Azure DevOps resource that are refreshed
//! proactively — at least five minutes before they expire — so a run of any length never sends an expired
//! token. `invalid_grant` / `interaction_required` become "owner must sign in again".
//!
//! - [`entra`] — the two Entra endpoints (`/devicecode`, `/token`) and their wire shapes;
//! - [`device_code`] — the interactive sign-in that stores the first refresh token;
//! - [`session`] — [`session::OwnerSession`], the per-owner [`TokenSource`] (single-flight refresh, rotated
//!   refresh tokens stored as new versions, refresh bookkeeping in version tags) and [`session::Sessions`].

pub mod app;
pub mod device_code;
pub mod entra;
pub mod migrate;
pub mod session;

use crate::devops::DevOpsError;
pub use crate::devops::token::{AccessToken, TokenSource, TokenSources};
use crate::domain::OwnerId;
use async_trait::async_trait;

/// The Azure DevOps resource (application id) in Microsoft Entra.
pub const DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";

/// The delegated scopes patrol asks owners for: read and manage their PATs, and a refresh token.
pub const PAT_SCOPES: &str =
    "499b84ac-1321-427f-aa17-267ca6975798/vso.pats 499b84ac-1321-427f-aa17-267ca6975798/vso.pats_manage offline_access";

/// The delegated scopes an organization administrator signs in with for compromise response and audit:
/// Token Admin (`vso.tokenadministration`) and the audit log (`vso.auditlog`), plus a refresh token.
pub const ADMIN_SCOPES: &str = "499b84ac-1321-427f-aa17-267ca6975798/vso.tokenadministration 499b84ac-1321-427f-aa17-267ca6975798/vso.auditlog offline_access";

/// The delegated scopes of an administrator who only reads the audit log (`patrol login --admin --audit-only`).
pub const AUDIT_SCOPES: &str = "499b84ac-1321-427f-aa17-267ca6975798/vso.auditlog offline_access";

/// A fixed token (e.g. one minted by `az account get-access-token`, or by the emulator in tests). It is not
/// refreshed: once it is within a second of expiry it is refused rather than sent.
#[derive(Debug)]
pub struct StaticToken {
    identity: OwnerId,
    token: AccessToken,
    clock: crate::clock::Clock,
}

impl StaticToken {
    pub fn new(identity: OwnerId, token: AccessToken, clock: crate::clock::Clock) -> Self {
        Self { identity, token, clock }
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    fn identity(&self) -> &OwnerId {
        &self.identity
    }

    async fn access_token(&self) -> Result<AccessToken, DevOpsError> {
        if self.token.expires_at <= self.clock.now() + time::Duration::seconds(1) {
            return Err(DevOpsError::Unauthorized(format!(
                "the fixed access token for {} has expired; obtain a new one",
                self.identity
            )));
        }
        Ok(self.token.clone())
    }

    fn invalidate(&self) {}
}

/// patrol's scope lists and patrol-emulator's must agree, or the emulator would accept (or refuse) what
/// Azure DevOps and Entra would not: the PAT scope names a policy may use, the delegated scopes each
/// sign-in asks for against what each emulated API requires, and the app-only `.default` scope.
#[cfg(test)]
mod scope_agreement_tests {
    use super::{ADMIN_SCOPES, AUDIT_SCOPES, DEVOPS_RESOURCE, PAT_SCOPES};
    use patrol_emulator::devops::auth as emulated;
    use std::collections::BTreeSet;

    /// The Azure DevOps scopes of a sign-in request, as the emulated Entra reads it.
    fn requested(scopes: &str) -> BTreeSet<String> {
        let r = patrol_emulator::entra::parse_scopes(scopes).unwrap_or_else(|e| panic!("{scopes}: {e:?}"));
        assert_eq!(r.resource, patrol_emulator::tokens::DEVOPS_RESOURCE, "{scopes}");
        assert!(r.offline, "{scopes}: every sign-in needs a refresh token");
        r.scopes.into_iter().collect()
    }

    fn set(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pat_scope_names_are_the_emulators() {
        let ours = set(crate::domain::KNOWN_SCOPES);
        let theirs = set(patrol_emulator::devops::scopes::KNOWN_SCOPES);
        let only_ours: Vec<_> = ours.difference(&theirs).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "patrol only: {only_ours:?}; emulator only: {only_theirs:?}"
        );
    }

    #[test]
    fn each_sign_in_asks_for_exactly_what_its_emulated_apis_require() {
        assert_eq!(DEVOPS_RESOURCE, patrol_emulator::tokens::DEVOPS_RESOURCE);
        let consented = set(patrol_emulator::tokens::DEVOPS_DEFAULT_SCOPES);
        // Owners: read and manage their PATs, nothing else (least privilege).
        let owner = requested(PAT_SCOPES);
        assert!(emulated::PAT_READ_SCOPES.iter().any(|s| owner.contains(*s)), "{owner:?}");
        assert!(emulated::PAT_WRITE_SCOPES.iter().any(|s| owner.contains(*s)), "{owner:?}");
        let pat_api: BTreeSet<String> =
            set(emulated::PAT_READ_SCOPES).union(&set(emulated::PAT_WRITE_SCOPES)).cloned().collect();
        assert!(owner.is_subset(&pat_api), "owner scopes beyond the PAT API: {owner:?}");
        // Administrators: Token Admin and the audit log; audit-only administrators: the audit log alone.
        let admin = requested(ADMIN_SCOPES);
        let needs = set(emulated::TOKEN_ADMIN_SCOPES).union(&set(emulated::AUDIT_LOG_SCOPES)).cloned().collect();
        assert_eq!(admin, needs);
        assert_eq!(requested(AUDIT_SCOPES), set(emulated::AUDIT_LOG_SCOPES));
        // Every scope patrol asks for is one the emulated tenant's client app is consented for.
        for s in owner.iter().chain(&admin) {
            assert!(consented.contains(s), "{s} is not consented in the emulated tenant: {consented:?}");
        }
        // App-only callers (audit as the Function App, consumer writers) ask for the resource's `.default`.
        let default = format!("{}/.default", patrol_emulator::tokens::DEVOPS_RESOURCE);
        assert_eq!(crate::auth::app::DEVOPS_DEFAULT_SCOPE, default);
        assert_eq!(crate::consumers::devops::DEVOPS_SCOPE, default);
    }
}
