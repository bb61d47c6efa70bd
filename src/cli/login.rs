//! `patrol login`: the device-code sign-in of a PAT owner. The person is shown where to go and the code
//! to enter (on stderr); the refresh token Entra returns goes straight into the secret store as the owner's
//! refresh-token secret — never to the terminal, a log or a file in the clear.

use super::CliError;
use super::runtime::Local;
use crate::auth::device_code::{LoginError, LoginOptions, login};
use crate::domain::OwnerId;
use std::time::Duration;

pub const AFTER_HELP: &str = "\
Examples:
  patrol login                                   # the policy's only owner
  patrol login --owner svc-rotation@contoso.com
  patrol login --admin secops@contoso.com        # an administrator: audit log + Token Admin
  patrol login --admin auditor@contoso.com --audit-only

The owner signs in in a browser (any device) with the code shown. patrol asks owners for the delegated
vso.pats and vso.pats_manage scopes and offline_access — nothing else. An administrator (--admin; a
Project Collection Administrator, or someone granted \"View audit log\" for --audit-only) consents to
vso.auditlog and vso.tokenadministration (only vso.auditlog with --audit-only) and offline_access; name
them in PATROL_AUDIT_READER or `patrol revoke --admin`. An account that owns managed PATs cannot also be
the administrator (least privilege). Without an administrator, the Function App's own identity (app) reads
the audit log (docs/deploy.md). Exit 0 when the refresh token is stored;
3 when the sign-in was declined or the code expired (run it again); 2 for bad input or configuration
(PATROL_CLIENT_ID missing, an owner the policy does not name, an invalid setting, Entra refusing the
app registration); 1 when Entra or the secret store could not be reached.";

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The owner (user principal name) to sign in; default: the only owner the policy names.
    #[arg(long, conflicts_with = "admin")]
    pub owner: Option<String>,
    /// Sign in an organization administrator (UPN) who reads the audit log and administers tokens.
    #[arg(long)]
    pub admin: Option<String>,
    /// With --admin: consent to reading the audit log only (vso.auditlog), not Token Admin.
    #[arg(long, requires = "admin")]
    pub audit_only: bool,
    /// Poll Entra at most this often, in milliseconds (for patrol-emulator; Entra's interval otherwise).
    #[arg(long, hide = true)]
    pub poll_interval_ms: Option<u64>,
}

/// The owner to sign in: as given (it must be one the policy names) or the policy's only owner.
pub fn choose_owner(local: &Local, given: Option<&str>) -> Result<OwnerId, CliError> {
    let mut owners: Vec<_> = local.policy.tokens.iter().map(|t| t.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    match given {
        Some(g) => {
            let o = OwnerId::parse(g).map_err(|e| CliError::usage(format!("--owner {g:?}: {e}")))?;
            // A refresh token patrol would never use is only a liability: refuse owners the policy does not
            // name (a typo, or the wrong policy file).
            if !owners.contains(&o) {
                let named = owners.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                return Err(CliError::usage(format!(
                    "--owner {o}: the policy {} names no such owner (it names: {}); add a [[token]] for this owner first",
                    local.settings.policy_file.display(),
                    if named.is_empty() { "none".into() } else { named }
                )));
            }
            Ok(o)
        }
        None => match owners.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(CliError::usage("the policy names no owner; pass --owner")),
            many => Err(CliError::usage(format!(
                "the policy names {} owners ({}); pass --owner",
                many.len(),
                many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ))),
        },
    }
}

/// The exit code says what to do next: a declined or expired sign-in needs the person again (3); an
/// Entra refusal of patrol's request (unknown client id, public client flows off) is configuration (2);
/// anything else — Entra or the secret store unavailable — is a failure (1).
fn login_error(owner: &OwnerId, flag: &str, e: LoginError) -> CliError {
    let message = format!("sign-in of {owner} failed: {e}");
    match &e {
        LoginError::Declined | LoginError::Expired | LoginError::WrongAccount { .. } => {
            CliError::sign_in(format!("{message}; run `patrol login --{flag} {owner}` again"))
        }
        LoginError::NoRefreshToken | LoginError::NoIdToken(_) => CliError::usage(message),
        LoginError::Entra(err) if is_config_refusal(err.code()) => CliError::usage(message),
        LoginError::Entra(_) | LoginError::Store(_) => CliError::failed(message),
    }
}

/// Entra error codes that mean patrol's own settings are wrong (client id, tenant, scopes).
fn is_config_refusal(code: Option<&str>) -> bool {
    matches!(code, Some("unauthorized_client" | "invalid_client" | "invalid_scope"))
}

/// The administrator to sign in: a UPN that owns none of the policy's tokens (an owner's sign-in stays
/// PAT-only: one account holding both would let a leaked refresh token read the log that should catch it).
pub fn choose_admin(local: &Local, given: &str) -> Result<OwnerId, CliError> {
    let a = OwnerId::parse(given).map_err(|e| CliError::usage(format!("--admin {given:?}: {e}")))?;
    if local.policy.tokens.iter().any(|t| t.owner == a) {
        return Err(CliError::usage(format!(
            "--admin {a}: this account owns managed PATs in {}; owners consent to the PAT scopes only — sign in a \
             separate administrator, or let the Function App's identity read the audit log (PATROL_AUDIT_READER=app)",
            local.settings.policy_file.display()
        )));
    }
    Ok(a)
}

pub async fn run(args: &LoginArgs) -> Result<(), CliError> {
    let local = Local::from_env()?;
    let (owner, scopes) = match &args.admin {
        Some(a) => (
            choose_admin(&local, a)?,
            Some(if args.audit_only { crate::auth::AUDIT_SCOPES } else { crate::auth::ADMIN_SCOPES }.to_owned()),
        ),
        None => (choose_owner(&local, args.owner.as_deref())?, None),
    };
    let entra = local.entra()?;
    let options = LoginOptions { scopes, poll_interval: args.poll_interval_ms.map(Duration::from_millis) };
    let outcome = login(&entra, local.own.as_ref(), &owner, &local.clock, &options, |p| {
        eprintln!("To sign in {owner}, open {} and enter the code {}", p.verification_uri, p.user_code);
        eprintln!("(the code expires in {} minutes)", p.expires_in.as_secs().div_ceil(60));
    })
    .await
    .map_err(|e| login_error(&owner, if args.admin.is_some() { "admin" } else { "owner" }, e))?;
    super::output::write_stdout(&format!(
        "Signed in {}; the refresh token is stored in secret {} (version {}).\n",
        outcome.owner,
        outcome.owner.refresh_token_secret(),
        outcome.version
    ))
}
