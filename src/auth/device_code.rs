//! The device-code sign-in behind `patrol login`: ask Entra for a code, show the person where to enter it,
//! poll (honouring `interval` and `slow_down`) until they finish, and store the first refresh token.

use super::PAT_SCOPES;
use super::entra::{EntraClient, EntraError};
use super::session::store_refresh_token;
use crate::clock::Clock;
use crate::domain::OwnerId;
use crate::store::{SecretStore, StoreError};
use std::time::Duration;
use time::OffsetDateTime;

/// What the person is shown.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub verification_uri: String,
    pub user_code: String,
    /// Entra's own instruction text.
    pub message: String,
    pub expires_in: Duration,
}

/// Why sign-in did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the sign-in was declined")]
    Declined,
    #[error("the code expired before the sign-in was completed; run `patrol login` again")]
    Expired,
    #[error(
        "Microsoft Entra returned no refresh token; the app registration must allow public client flows and the offline_access scope"
    )]
    NoRefreshToken,
    #[error(
        "Microsoft Entra returned no ID token naming who signed in, so patrol cannot check it was {0}; nothing was stored"
    )]
    NoIdToken(String),
    #[error("{actual} signed in, not {expected}: the refresh token was not stored; {expected} must sign in")]
    WrongAccount { expected: String, actual: String },
    #[error(transparent)]
    Entra(#[from] EntraError),
    #[error("signed in, but the refresh token could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// The outcome of a completed sign-in.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub owner: OwnerId,
    /// The store version holding the refresh token.
    pub version: String,
    pub signed_in_at: OffsetDateTime,
}

/// Options of [`login`].
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Scopes (default [`PAT_SCOPES`]).
    pub scopes: Option<String>,
    /// Poll at most this often regardless of Entra's `interval` (for the emulator; `None` in production).
    pub poll_interval: Option<Duration>,
}

/// Runs a device-code sign-in for `owner` and stores the refresh token. `prompt` is called once, before
/// polling starts, with what to show the person.
pub async fn login(
    entra: &EntraClient,
    store: &dyn SecretStore,
    owner: &OwnerId,
    clock: &Clock,
    options: &LoginOptions,
    prompt: impl FnOnce(&Prompt),
) -> Result<LoginOutcome, LoginError> {
    let scopes = options.scopes.as_deref().unwrap_or(PAT_SCOPES);
    // `openid profile` for an ID token that names who signed in (not stored with the refresh token's scopes).
    let start = entra.start_device_code(&format!("{scopes} openid profile")).await?;
    prompt(&Prompt {
        verification_uri: start.verification_uri.clone(),
        user_code: start.user_code.clone(),
        message: start.message.clone(),
        expires_in: start.expires_in,
    });
    let deadline = tokio::time::Instant::now() + start.expires_in;
    let mut interval = options.poll_interval.unwrap_or(start.interval);
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Err(LoginError::Expired);
        }
        tokio::time::sleep(interval).await;
        match entra.poll_device_code(&start.device_code, clock.now()).await {
            Ok(grant) => {
                let refresh = grant.refresh_token.ok_or(LoginError::NoRefreshToken)?;
                // The refresh token is stored under the owner's name: make sure the owner is who signed in
                // (someone else entering the code would otherwise have patrol act as them).
                match grant.signed_in_as {
                    None => return Err(LoginError::NoIdToken(owner.to_string())),
                    Some(who) if !who.eq_ignore_ascii_case(owner.as_str()) => {
                        return Err(LoginError::WrongAccount { expected: owner.to_string(), actual: who });
                    }
                    Some(_) => {}
                }
                let now = clock.now();
                let signed_in = crate::timestamp::rfc3339(now);
                let version = store_refresh_token(store, owner, &refresh, &signed_in, scopes, now).await?;
                tracing::info!(%owner, "owner signed in; refresh token stored");
                return Ok(LoginOutcome { owner: owner.clone(), version, signed_in_at: now });
            }
            Err(e) => match e.code() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                Some("authorization_declined" | "access_denied") => return Err(LoginError::Declined),
                Some("expired_token" | "code_expired") => return Err(LoginError::Expired),
                _ => return Err(e.into()),
            },
        }
    }
}
