//! Wire and domain models of the PAT Lifecycle API (tokens 7.1 / 7.2), with open enums where the service
//! keeps adding values.

use crate::domain::{AuthorizationId, DisplayName, OwnerId, Scopes};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `displayFilterOption` of List.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DisplayFilter {
    Active,
    Revoked,
    Expired,
    All,
}

impl DisplayFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::All => "all",
        }
    }
}

/// A PAT as listed (never with its secret). Serialized in patrol's own outputs (snake_case like every
/// other field of `--format json`), not on the wire (`wire` has the Azure DevOps shapes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pat {
    pub authorization_id: AuthorizationId,
    /// As Azure DevOps returned it (not re-validated: other tools may have made it).
    pub display_name: String,
    /// The raw space-separated scope string.
    pub scope: String,
    /// Organization ids; `None` for an all-organization ("global") PAT, which stops working on 2026-12-01.
    pub target_accounts: Option<Vec<uuid::Uuid>>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
}

impl Pat {
    pub fn is_global(&self) -> bool {
        self.target_accounts.is_none()
    }

    /// An all-organization PAT at `now` past [`GLOBAL_PAT_CUTOFF`]: Azure DevOps no longer accepts it.
    pub fn stopped_working(&self, now: OffsetDateTime) -> bool {
        self.is_global() && now >= GLOBAL_PAT_CUTOFF
    }

    pub fn is_full_access(&self) -> bool {
        self.scope.split_whitespace().any(|s| s == "app_token")
    }
}

/// The date all-organization PATs stop working.
pub const GLOBAL_PAT_CUTOFF: OffsetDateTime = time::macros::datetime!(2026-12-01 00:00 UTC);

/// Create request (`allOrgs` is always false unless a policy explicitly allows a global PAT).
#[derive(Debug, Clone)]
pub struct CreatePat {
    pub display_name: DisplayName,
    pub scopes: Scopes,
    pub valid_to: OffsetDateTime,
    pub all_orgs: bool,
}

/// Update request.
#[derive(Debug, Clone)]
pub struct UpdatePat {
    pub authorization_id: AuthorizationId,
    pub display_name: Option<DisplayName>,
    pub scopes: Option<Scopes>,
    pub valid_to: Option<OffsetDateTime>,
    pub all_orgs: Option<bool>,
}

/// Where Azure DevOps granted something other than what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Drift {
    /// An organization's maximum-lifespan policy clamped `validTo`.
    ValidToClamped {
        #[serde(with = "time::serde::rfc3339")]
        requested: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        granted: OffsetDateTime,
    },
    /// The scope string came back different from the request.
    ScopeChanged { requested: String, granted: String },
    /// Asked for an organization-scoped PAT and got a global one, or the reverse.
    TargetChanged { requested_global: bool, granted_global: bool },
}

/// A freshly created PAT: the only time its secret is ever seen.
#[derive(Debug)]
pub struct CreatedPat {
    pub pat: Pat,
    pub token: SecretString,
    pub drift: Vec<Drift>,
}

#[derive(Debug, Clone)]
pub struct UpdatedPat {
    pub pat: Pat,
    pub drift: Vec<Drift>,
}

/// `patTokenError` (`SessionTokenError`): an open enum — unknown values keep their raw string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatTokenError {
    None,
    DisplayNameRequired,
    InvalidDisplayName,
    InvalidValidTo,
    InvalidScope,
    UserIdRequired,
    InvalidUserId,
    InvalidUserType,
    AccessDenied,
    FailedToIssueAccessToken,
    InvalidClient,
    InvalidClientType,
    InvalidClientId,
    InvalidTargetAccounts,
    HostAuthorizationNotFound,
    AuthorizationNotFound,
    FailedToUpdateAccessToken,
    SourceNotSupported,
    InvalidSourceIp,
    InvalidSource,
    DuplicateHash,
    SshPolicyDisabled,
    InvalidToken,
    TokenNotFound,
    InvalidAuthorizationId,
    FailedToReadTenantPolicy,
    GlobalPatPolicyViolation,
    FullScopePatPolicyViolation,
    PatLifespanPolicyViolation,
    InvalidTokenType,
    InvalidAudience,
    InvalidSubject,
    DeploymentHostNotSupported,
    DisablePatCreationPolicyViolation,
    FailedToReadOrgPolicy,
    GlobalPatCreationBlocked,
    ExpiredPatCannotBeExtended,
    Unknown(String),
}

/// The wire strings, in spec order (7.2), exactly as Azure DevOps spells them.
type Ctor = fn() -> PatTokenError;
const WIRE: &[(&str, Ctor)] = &[
    ("none", || PatTokenError::None),
    ("displayNameRequired", || PatTokenError::DisplayNameRequired),
    ("invalidDisplayName", || PatTokenError::InvalidDisplayName),
    ("invalidValidTo", || PatTokenError::InvalidValidTo),
    ("invalidScope", || PatTokenError::InvalidScope),
    ("userIdRequired", || PatTokenError::UserIdRequired),
    ("invalidUserId", || PatTokenError::InvalidUserId),
    ("invalidUserType", || PatTokenError::InvalidUserType),
    ("accessDenied", || PatTokenError::AccessDenied),
    ("failedToIssueAccessToken", || PatTokenError::FailedToIssueAccessToken),
    ("invalidClient", || PatTokenError::InvalidClient),
    ("invalidClientType", || PatTokenError::InvalidClientType),
    ("invalidClientId", || PatTokenError::InvalidClientId),
    ("invalidTargetAccounts", || PatTokenError::InvalidTargetAccounts),
    ("hostAuthorizationNotFound", || PatTokenError::HostAuthorizationNotFound),
    ("authorizationNotFound", || PatTokenError::AuthorizationNotFound),
    ("failedToUpdateAccessToken", || PatTokenError::FailedToUpdateAccessToken),
    ("sourceNotSupported", || PatTokenError::SourceNotSupported),
    ("invalidSourceIP", || PatTokenError::InvalidSourceIp),
    ("invalidSource", || PatTokenError::InvalidSource),
    ("duplicateHash", || PatTokenError::DuplicateHash),
    ("sshPolicyDisabled", || PatTokenError::SshPolicyDisabled),
    ("invalidToken", || PatTokenError::InvalidToken),
    ("tokenNotFound", || PatTokenError::TokenNotFound),
    ("invalidAuthorizationId", || PatTokenError::InvalidAuthorizationId),
    ("failedToReadTenantPolicy", || PatTokenError::FailedToReadTenantPolicy),
    ("globalPatPolicyViolation", || PatTokenError::GlobalPatPolicyViolation),
    ("fullScopePatPolicyViolation", || PatTokenError::FullScopePatPolicyViolation),
    ("patLifespanPolicyViolation", || PatTokenError::PatLifespanPolicyViolation),
    ("invalidTokenType", || PatTokenError::InvalidTokenType),
    ("invalidAudience", || PatTokenError::InvalidAudience),
    ("invalidSubject", || PatTokenError::InvalidSubject),
    ("deploymentHostNotSupported", || PatTokenError::DeploymentHostNotSupported),
    ("disablePatCreationPolicyViolation", || PatTokenError::DisablePatCreationPolicyViolation),
    ("failedToReadOrgPolicy", || PatTokenError::FailedToReadOrgPolicy),
    ("globalPATCreationBlocked", || PatTokenError::GlobalPatCreationBlocked),
    ("expiredPatCannotBeExtended", || PatTokenError::ExpiredPatCannotBeExtended),
];

impl PatTokenError {
    pub fn from_wire(s: &str) -> Self {
        WIRE.iter().find(|(w, _)| *w == s).map(|(_, f)| f()).unwrap_or_else(|| Self::Unknown(s.to_owned()))
    }

    pub fn as_wire(&self) -> &str {
        if let Self::Unknown(s) = self {
            return s;
        }
        WIRE.iter().find(|(_, f)| f() == *self).map(|(w, _)| *w).unwrap_or("unknown")
    }

    /// Every value the 7.2 spec defines, in spec order.
    pub fn all_wire() -> impl Iterator<Item = &'static str> {
        WIRE.iter().map(|(w, _)| *w)
    }

    /// Worth retrying later without a human (policy lookup failed on the service side).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::FailedToReadTenantPolicy | Self::FailedToReadOrgPolicy | Self::FailedToIssueAccessToken)
    }

    /// What a person should do about it.
    pub fn explain(&self) -> String {
        match self {
            Self::None => "no error".into(),
            Self::InvalidScope => "Azure DevOps refused the scope list; check the token's scopes in patrol.toml against docs/policy.md.".into(),
            Self::InvalidValidTo => "Azure DevOps refused the expiry date; validity must be in the future and at most one year.".into(),
            Self::FullScopePatPolicyViolation => "The tenant policy 'Restrict full-scoped personal access token creation' forbids app_token; give the token explicit vso.* scopes, or ask an Azure DevOps Administrator to add the owner to the policy's allowlist.".into(),
            Self::GlobalPatPolicyViolation => "The tenant policy 'Restrict global personal access token creation' forbids all-organization PATs; make the token organization-scoped.".into(),
            Self::GlobalPatCreationBlocked => "All-organization (global) PATs can no longer be created; make the token organization-scoped (`patrol migrate-global`).".into(),
            Self::PatLifespanPolicyViolation => "The tenant policy 'Enforce maximum personal access token lifespan' refused the requested validity; lower validity_days in patrol.toml.".into(),
            Self::DisablePatCreationPolicyViolation => "The organization policy 'Restrict personal access token (PAT) creation' blocks this owner; a Project Collection Administrator must add the owner to the policy's allowlist.".into(),
            Self::ExpiredPatCannotBeExtended => "The PAT has already expired and cannot be extended; patrol will create a new one instead.".into(),
            Self::AccessDenied => "Azure DevOps denied the owner access; check that the owner still belongs to the organization and has consented to vso.pats_manage.".into(),
            Self::AuthorizationNotFound | Self::TokenNotFound | Self::InvalidAuthorizationId => "Azure DevOps does not know this PAT for this owner (revoked, deleted or owned by someone else).".into(),
            Self::FailedToReadTenantPolicy | Self::FailedToReadOrgPolicy => "Azure DevOps could not read its policies; this is transient, patrol retries on the next run.".into(),
            Self::Unknown(s) => format!("Azure DevOps refused the request with an error patrol does not know ({s}); see the message and the Azure DevOps documentation."),
            other => format!("Azure DevOps refused the request ({}).", other.as_wire()),
        }
    }
}

impl std::fmt::Display for PatTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_wire())
    }
}

impl Serialize for PatTokenError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_wire())
    }
}

impl<'de> Deserialize<'de> for PatTokenError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::from_wire(&s))
    }
}

/// Why a call to Azure DevOps did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DevOpsError {
    /// HTTP 200 with a `patTokenError` other than `none`: a business or policy refusal.
    #[error("Azure DevOps refused: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused { error: PatTokenError, message: Option<String> },
    /// The owner's refresh token was rejected (`invalid_grant` / `interaction_required`): a person must run
    /// `patrol login` again. Or none is stored ([`NEVER_SIGNED_IN`]): the owner has
    /// not signed in yet, and the message says so rather than "again".
    #[error("{}", sign_in_text(owner, reason))]
    SignInRequired { owner: OwnerId, reason: String },
    /// Azure DevOps did not accept the credentials (401, 203 sign-in page, HTML).
    #[error("Azure DevOps did not accept the credentials: {0}")]
    Unauthorized(String),
    /// Throttled and out of patience.
    #[error("Azure DevOps is throttling this identity; retry after {retry_after_secs}s ({resource})")]
    Throttled { retry_after_secs: u64, resource: String },
    /// A non-2xx answer with the Azure DevOps error envelope.
    #[error("Azure DevOps answered HTTP {status}: {message}{}", type_key.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default())]
    Service { status: u16, type_key: Option<String>, message: String },
    /// The request was sent but the answer was lost: it may or may not have happened.
    #[error("the outcome of {operation} is unknown (the connection was lost after sending): {reason}")]
    Uncertain { operation: &'static str, reason: String },
    /// Could not reach Azure DevOps at all (nothing happened).
    #[error("could not reach Azure DevOps: {0}")]
    Transport(String),
    /// An answer patrol could not understand.
    #[error("unexpected answer from Azure DevOps: {0}")]
    Protocol(String),
}

/// The reason of [`DevOpsError::SignInRequired`] when no refresh token is stored at all: the owner never
/// signed in (or was signed out), as opposed to a sign-in that expired or was revoked.
pub const NEVER_SIGNED_IN: &str = "no refresh token is stored for this owner";

/// What [`DevOpsError::SignInRequired`] says about an owner who never signed in (no refresh token stored).
pub const NOT_SIGNED_IN_YET: &str = "has not signed in yet";

fn sign_in_text(owner: &OwnerId, reason: &str) -> String {
    if reason == NEVER_SIGNED_IN {
        format!("owner {owner} {NOT_SIGNED_IN_YET}: run `patrol login --owner {owner}`")
    } else {
        format!("owner {owner} must sign in again (`patrol login --owner {owner}`): {reason}")
    }
}

impl DevOpsError {
    /// Worth retrying later without a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused { error, .. } => error.is_transient(),
            Self::Throttled { .. } | Self::Transport(_) | Self::Uncertain { .. } => true,
            Self::Service { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_required_says_yet_to_an_owner_who_never_signed_in_and_again_to_the_others() {
        let owner = OwnerId::parse("svc-build@contoso.com").unwrap();
        let never = DevOpsError::SignInRequired { owner: owner.clone(), reason: NEVER_SIGNED_IN.into() };
        assert_eq!(
            never.to_string(),
            "owner svc-build@contoso.com has not signed in yet: run `patrol login --owner svc-build@contoso.com`"
        );
        let expired = DevOpsError::SignInRequired { owner, reason: "invalid_grant (AADSTS70043)".into() };
        assert_eq!(
            expired.to_string(),
            "owner svc-build@contoso.com must sign in again (`patrol login --owner svc-build@contoso.com`): \
             invalid_grant (AADSTS70043)"
        );
    }

    #[test]
    fn open_enum_round_trips() {
        for w in PatTokenError::all_wire() {
            assert_eq!(PatTokenError::from_wire(w).as_wire(), w);
            assert!(!matches!(PatTokenError::from_wire(w), PatTokenError::Unknown(_)), "{w}");
        }
        assert_eq!(PatTokenError::all_wire().count(), 37);
        let u = PatTokenError::from_wire("somethingNew");
        assert_eq!(u, PatTokenError::Unknown("somethingNew".into()));
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"somethingNew\"");
    }

    #[test]
    fn matches_spec_enum() {
        let spec = patrol_emulator::specs::spec_json("azure-devops/tokens/7.2/tokens.json");
        let values = spec["definitions"]["PatTokenResult"]["properties"]["patTokenError"]["enum"].as_array().unwrap();
        let ours: Vec<&str> = PatTokenError::all_wire().collect();
        let theirs: Vec<&str> = values.iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(ours, theirs);
    }
}
