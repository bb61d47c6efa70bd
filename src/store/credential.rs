//! How patrol authenticates to Key Vault, chosen explicitly by `PATROL_KEYVAULT_CREDENTIAL` (the SDK has no
//! default chain):
//! - `managed-identity` — `azure_identity::ManagedIdentityCredential` (system-assigned, or user-assigned by
//!   `PATROL_MANAGED_IDENTITY_CLIENT_ID`);
//! - `developer-tools` — `azure_identity::DeveloperToolsCredential` (Azure CLI, then Azure Developer CLI);
//! - `client-secret` — an app registration's client secret: `azure_identity::ClientSecretCredential`
//!   against `PATROL_ENTRA_AUTHORITY`, or [`ClientCredentialsGrant`] (the same OAuth 2.0 client-credentials
//!   grant, implemented here) for a loopback authority (http or https), which is patrol-emulator.
//!   Its token lifetimes are reckoned on patrol's [`Clock`] (the one that follows the host's `UtcNow`, which
//!   is patrol-emulator's virtual clock under test and in the demo), like every other expiry in patrol.
//!
//! Every credential is wrapped in [`VaultScopeOnly`], which refuses to mint tokens for anything but Key
//! Vault: the vault's bearer challenge names the scope, and a hostile endpoint must not be able to ask
//! patrol's identity for a token to some other resource.

use crate::clock::Clock;
use crate::config::{KeyVaultCredential, KeyVaultSettings};
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;
use url::Url;

/// Key Vault resources in the public and sovereign clouds.
pub const VAULT_RESOURCES: &[&str] = &[
    "https://vault.azure.net",
    "https://vault.azure.cn",
    "https://vault.usgovcloudapi.net",
    "https://vault.microsoftazure.de",
];

fn cred_error(message: impl Into<String>) -> azure_core::Error {
    azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, message.into())
}

/// Builds the configured credential (wrapped in [`VaultScopeOnly`]) on the system clock.
pub fn from_settings(
    kv: &KeyVaultSettings,
    authority: &Url,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, String> {
    from_settings_with_clock(kv, authority, http, Clock::system())
}

/// As [`from_settings`]; the loopback client-credentials grant reckons token lifetimes on `clock`.
pub fn from_settings_with_clock(
    kv: &KeyVaultSettings,
    authority: &Url,
    http: reqwest::Client,
    clock: Clock,
) -> Result<Arc<dyn TokenCredential>, String> {
    Ok(Arc::new(VaultScopeOnly(identity(kv, authority, http, clock)?)))
}

/// The Function App's own identity as configured (managed identity, developer tools or client secret),
/// unrestricted: callers wrap it for the one resource they need ([`VaultScopeOnly`] here,
/// `auth::app` for Azure DevOps). The loopback client-credentials grant reckons token lifetimes on
/// `clock`.
pub fn identity(
    kv: &KeyVaultSettings,
    authority: &Url,
    http: reqwest::Client,
    clock: Clock,
) -> Result<Arc<dyn TokenCredential>, String> {
    let inner: Arc<dyn TokenCredential> = match kv.credential {
        KeyVaultCredential::ManagedIdentity => {
            let opts = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: kv.managed_identity_client_id.clone().map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(opts))
                .map_err(|e| format!("managed identity credential: {e}"))?
        }
        KeyVaultCredential::DeveloperTools => azure_identity::DeveloperToolsCredential::new(None)
            .map_err(|e| format!("developer tools credential: {e}"))?,
        KeyVaultCredential::ClientSecret => {
            let (Some(tenant), Some(client_id), Some(secret)) = (&kv.tenant_id, &kv.client_id, &kv.client_secret)
            else {
                return Err("client-secret credential needs PATROL_KEYVAULT_TENANT_ID, PATROL_KEYVAULT_CLIENT_ID and PATROL_KEYVAULT_CLIENT_SECRET".into());
            };
            // A loopback authority is patrol-emulator (tests, the demo): its tokens live on the virtual clock,
            // which azure_identity's cache (wall clock) cannot follow, so patrol's grant serves it.
            if !crate::config::is_loopback_url(authority) {
                let mut cloud = azure_core::cloud::CustomConfiguration::default();
                cloud.authority_host = authority.as_str().trim_end_matches('/').to_owned();
                let client_options = azure_core::http::ClientOptions {
                    cloud: Some(Arc::new(cloud.into())),
                    transport: Some(azure_core::http::Transport::new(Arc::new(http))),
                    ..Default::default()
                };
                azure_identity::ClientSecretCredential::new(
                    tenant,
                    client_id.clone(),
                    Secret::new(secret.expose_secret().to_owned()),
                    Some(azure_identity::ClientSecretCredentialOptions { client_options }),
                )
                .map_err(|e| format!("client secret credential: {e}"))?
            } else {
                Arc::new(
                    ClientCredentialsGrant::new(authority, tenant, client_id, secret.clone(), http)?.with_clock(clock),
                )
            }
        }
    };
    Ok(inner)
}

/// Passes token requests through only for Key Vault scopes (`https://vault.azure.net/.default` and the
/// sovereign-cloud equivalents).
#[derive(Debug)]
pub struct VaultScopeOnly(pub Arc<dyn TokenCredential>);

pub fn is_vault_scope(scope: &str) -> bool {
    let resource = scope.strip_suffix("/.default").unwrap_or(scope).trim_end_matches('/');
    VAULT_RESOURCES.contains(&resource)
}

#[async_trait]
impl TokenCredential for VaultScopeOnly {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if scopes.is_empty() || !scopes.iter().all(|s| is_vault_scope(s)) {
            return Err(cred_error(format!(
                "refusing to obtain a token for {scopes:?}: patrol's Key Vault identity only requests Key Vault scopes"
            )));
        }
        self.0.get_token(scopes, options).await
    }
}

/// The OAuth 2.0 client-credentials grant against `{authority}/{tenant}/oauth2/v2.0/token`, with an
/// in-memory cache per scope set that refreshes 5 minutes before expiry — expiry on patrol's [`Clock`],
/// not the wall clock. Used for http (loopback) authorities, which `azure_identity` refuses.
///
/// The SDK's bearer policy keeps its own copy of the last token and asks again only when the token's
/// `expires_on` is within 5 minutes of the *wall* clock; a token that lives an hour of virtual time
/// would be sent long after the virtual clock has passed its end (every vault call then fails with 401).
/// So the tokens handed to the SDK carry `expires_on` = now (wall clock): the SDK asks this credential
/// before every request, and this cache — on patrol's clock — decides whether a new token is needed.
pub struct ClientCredentialsGrant {
    endpoint: Url,
    client_id: String,
    secret: SecretString,
    http: reqwest::Client,
    clock: Clock,
    /// Token and its expiry on `clock`, per scope set.
    cache: tokio::sync::Mutex<HashMap<String, (Secret, OffsetDateTime)>>,
}

impl std::fmt::Debug for ClientCredentialsGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentialsGrant")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsGrant {
    pub fn new(
        authority: &Url,
        tenant: &str,
        client_id: &str,
        secret: SecretString,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
            return Err(format!("tenant id {tenant:?} may contain only letters, digits, '-' and '.'"));
        }
        if authority.scheme() != "https" && !crate::config::is_loopback_url(authority) {
            return Err(format!(
                "authority {authority} must be https (plain http is accepted only on loopback, for patrol-emulator)"
            ));
        }
        let base = authority.as_str().trim_end_matches('/');
        let endpoint = Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/token"))
            .map_err(|e| format!("authority {authority}: {e}"))?;
        Ok(Self {
            endpoint,
            client_id: client_id.to_owned(),
            secret,
            http,
            clock: Clock::system(),
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Reckons token lifetimes on `clock` (patrol's, following the host's time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// What the SDK gets: the token, "expiring" now on the wall clock so the SDK asks again next time.
    fn for_sdk(token: &Secret) -> AccessToken {
        AccessToken::new(token.clone(), OffsetDateTime::now_utc())
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

#[async_trait]
impl TokenCredential for ClientCredentialsGrant {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        let mut cache = self.cache.lock().await;
        if let Some((token, expires_at)) = cache.get(&key)
            && *expires_at - time::Duration::minutes(5) > self.clock.now()
        {
            return Ok(Self::for_sdk(token));
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose_secret()),
            ("scope", key.as_str()),
        ];
        let rsp = self
            .http
            .post(self.endpoint.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| cred_error(format!("token request to {} failed: {e}", self.endpoint)))?;
        let status = rsp.status();
        let body: TokenResponse = rsp
            .json()
            .await
            .map_err(|e| cred_error(format!("token response from {} ({status}) is not JSON: {e}", self.endpoint)))?;
        let Some(token) = body.access_token.filter(|_| status.is_success()) else {
            return Err(cred_error(format!(
                "{} refused the client-credentials grant for {}: {} {}",
                self.endpoint,
                self.client_id,
                body.error.unwrap_or_else(|| status.to_string()),
                body.error_description.unwrap_or_default()
            )));
        };
        let secs = match body.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
            _ => 3600,
        };
        let token = Secret::new(token);
        cache.insert(key, (token.clone(), self.clock.now() + time::Duration::seconds(secs)));
        Ok(Self::for_sdk(&token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vault_scopes() {
        assert!(is_vault_scope("https://vault.azure.net/.default"));
        assert!(is_vault_scope("https://vault.usgovcloudapi.net/.default"));
        assert!(!is_vault_scope("https://management.azure.com/.default"));
        assert!(!is_vault_scope("https://vault.azure.net.evil.example/.default"));
    }

    /// A loopback token endpoint that issues one-hour tokens (`token-1`, `token-2`, …).
    async fn token_endpoint() -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let app = axum::Router::new().route(
            "/{tenant}/oauth2/v2.0/token",
            axum::routing::post(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    axum::Json(serde_json::json!({
                        "token_type": "Bearer", "expires_in": 3600, "access_token": format!("token-{n}")
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, issued)
    }

    #[tokio::test]
    async fn token_lifetimes_follow_patrols_clock_not_the_wall_clock() {
        use std::sync::atomic::Ordering;
        let (authority, issued) = token_endpoint().await;
        let clock = Clock::system();
        let grant = ClientCredentialsGrant::new(&authority, "t", "c", SecretString::from("s"), reqwest::Client::new())
            .unwrap()
            .with_clock(clock.clone());
        let scope = ["https://vault.azure.net/.default"];
        let first = grant.get_token(&scope, None).await.unwrap();
        assert_eq!(first.token.secret(), "token-1");
        // The SDK is told the token "expires" now, so it asks this credential before every request.
        assert!(first.expires_on <= OffsetDateTime::now_utc());
        // Within the hour on patrol's clock: the cached token, no new request.
        clock.advance(time::Duration::minutes(50));
        assert_eq!(grant.get_token(&scope, None).await.unwrap().token.secret(), "token-1");
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        // patrol's clock (the host's virtual time) moves past the token's lifetime while the wall clock
        // barely moves: a new token is fetched.
        clock.advance(time::Duration::minutes(6));
        assert_eq!(grant.get_token(&scope, None).await.unwrap().token.secret(), "token-2");
        clock.advance(time::Duration::days(30));
        assert_eq!(grant.get_token(&scope, None).await.unwrap().token.secret(), "token-3");
        assert_eq!(issued.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn plain_http_authority_only_on_loopback() {
        let http = reqwest::Client::new();
        let s = SecretString::from("x");
        let ok = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(ClientCredentialsGrant::new(&ok, "t", "c", s.clone(), http.clone()).is_ok());
        let bad = Url::parse("http://login.example.com/").unwrap();
        assert!(ClientCredentialsGrant::new(&bad, "t", "c", s.clone(), http.clone()).is_err());
        assert!(ClientCredentialsGrant::new(&ok, "../x", "c", s, http).is_err());
    }
}
