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

The owner signs in in a browser (any device) with the code shown. patrol asks for the delegated
vso.pats and vso.pats_manage scopes and offline_access. Exit 2 when PATROL_CLIENT_ID is missing,
1 when the sign-in was declined or expired.";

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The owner (user principal name) to sign in; default: the only owner the policy names.
    #[arg(long)]
    pub owner: Option<String>,
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
            if !owners.contains(&o) {
                tracing::warn!(owner = %o, "this owner is not named in the policy; signing in anyway");
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

pub async fn run(args: &LoginArgs) -> Result<(), CliError> {
    let local = Local::from_env()?;
    let owner = choose_owner(&local, args.owner.as_deref())?;
    let entra = local.entra()?;
    let options = LoginOptions { scopes: None, poll_interval: args.poll_interval_ms.map(Duration::from_millis) };
    let outcome = login(&entra, local.store.as_ref(), &owner, &local.clock, &options, |p| {
        eprintln!("To sign in {owner}, open {} and enter the code {}", p.verification_uri, p.user_code);
        eprintln!("(the code expires in {} minutes)", p.expires_in.as_secs().div_ceil(60));
    })
    .await
    .map_err(|e: LoginError| CliError::failed(format!("sign-in of {owner} failed: {e}")))?;
    super::output::write_stdout(&format!(
        "Signed in {}; the refresh token is stored in secret {} (version {}).\n",
        outcome.owner,
        outcome.owner.refresh_token_secret(),
        outcome.version
    ))
}
