//! Access tokens issued by the emulated Microsoft Entra and checked by the emulated services.
//!
//! Tokens are opaque random strings (real services must not decode them either); the issuer keeps what
//! each one grants. Every emulated service validates bearer tokens here: Azure DevOps requires a
//! *delegated user* token for resource `499b84ac-1321-427f-aa17-267ca6975798` with `vso.pats` /
//! `vso.pats_manage`; Key Vault requires a token for `https://vault.azure.net`.

use crate::clock::VirtualClock;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// The Azure DevOps resource id.
pub const DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
/// The Key Vault resource.
pub const KEYVAULT_RESOURCE: &str = "https://vault.azure.net";

/// Who a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A signed-in user (delegated flows: device code, refresh token).
    User { upn: String },
    /// An application (client credentials: service principal or managed identity).
    App { client_id: String },
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: Subject,
    /// The resource (audience) the token is for.
    pub resource: String,
    /// Scopes without the resource prefix, e.g. `vso.pats`, `vso.pats_manage`, `.default`.
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// Issues and validates access tokens against the virtual clock.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    clock: VirtualClock,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("the access token is not known to this tenant")]
    Unknown,
    #[error("the access token has expired")]
    Expired,
}

impl TokenIssuer {
    pub fn new(clock: VirtualClock) -> Self {
        Self { clock, grants: Arc::default() }
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Issues a token; the returned string is the bearer value.
    pub fn issue(&self, grant: Grant) -> String {
        let token = format!("eyJ0eXAiOiJKV1QifQ.{}", random_token(64));
        self.grants.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), grant);
        token
    }

    /// What a bearer token grants, if it is known and not expired (on the virtual clock).
    pub fn validate(&self, token: &str) -> Result<Grant, TokenProblem> {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        let g = grants.get(token).ok_or(TokenProblem::Unknown)?;
        if g.expires_at <= self.clock.now() {
            return Err(TokenProblem::Expired);
        }
        Ok(g.clone())
    }

    /// Forgets expired grants (bounded memory for long-running emulators).
    pub fn sweep(&self) {
        let now = self.clock.now();
        self.grants.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, g| g.expires_at > now);
    }
}

/// URL-safe random characters.
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}
