//! How patrol authenticates to Key Vault, chosen explicitly by `PATROL_KEYVAULT_CREDENTIAL` (the SDK has no
//! default chain):
//! - `managed-identity` — `azure_identity::ManagedIdentityCredential` (system-assigned, or user-assigned by
//!   `PATROL_MANAGED_IDENTITY_CLIENT_ID`);
//! - `developer-tools` — `azure_identity::DeveloperToolsCredential` (Azure CLI, then Azure Developer CLI);
//! - `client-secret` — an app registration's client secret: `azure_identity::ClientSecretCredential`
//!   against `PATROL_ENTRA_AUTHORITY` when it is https, or [`ClientCredentialsGrant`] (the same OAuth 2.0
//!   client-credentials grant, implemented here) for a plain-http loopback authority such as patrol-emulator.
//!
//! Every credential is wrapped in [`VaultScopeOnly`], which refuses to mint tokens for anything but Key
//! Vault: the vault's bearer challenge names the scope, and a hostile endpoint must not be able to ask
//! patrol's identity for a token to some other resource.

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

/// Builds the configured credential (wrapped in [`VaultScopeOnly`]).
pub fn from_settings(
    kv: &KeyVaultSettings,
    authority: &Url,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, String> {
    Ok(Arc::new(VaultScopeOnly(unrestricted(kv, authority, http)?)))
}

/// The configured credential without a scope restriction; callers wrap it in one (Key Vault here,
/// Azure DevOps in `crate::consumers::devops`).
pub fn unrestricted(
    kv: &KeyVaultSettings,
    authority: &Url,
    http: reqwest::Client,
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
            if authority.scheme() == "https" {
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
                Arc::new(ClientCredentialsGrant::new(authority, tenant, client_id, secret.clone(), http)?)
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
/// in-memory cache per scope set that refreshes 5 minutes before expiry. Used for http (loopback)
/// authorities, which `azure_identity` refuses.
pub struct ClientCredentialsGrant {
    endpoint: Url,
    client_id: String,
    secret: SecretString,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<HashMap<String, AccessToken>>,
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
        let loopback = match authority.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if authority.scheme() != "https" && !loopback {
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
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
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
        if let Some(t) = cache.get(&key)
            && t.expires_on - time::Duration::minutes(5) > OffsetDateTime::now_utc()
        {
            return Ok(t.clone());
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
        let at = AccessToken::new(Secret::new(token), OffsetDateTime::now_utc() + time::Duration::seconds(secs));
        cache.insert(key, at.clone());
        Ok(at)
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
