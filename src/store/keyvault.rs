//! The Key Vault secret store on the official Azure SDK for Rust (`azure_security_keyvault_secrets` 1.x):
//! one shared `SecretClient`, the credential chosen by configuration ([`super::credential`]), tags checked
//! against Key Vault's limits before they are sent, soft-delete aware, throttling retried by the SDK
//! (429 with `Retry-After`, exponential back-off) and reported as [`StoreError::Throttled`] if it persists.
//!
//! Names reach the URL only as validated [`SecretName`]s. Values travel as `SecretString`; the SDK's
//! models hold them as plain `String`s only for the duration of one call and are never logged.

use super::{
    NewVersion, PropertiesUpdate, SecretStore, SecretSummary, StoreError, StoredSecret, VersionProperties, tags,
};
use crate::config::KeyVaultSettings;
use crate::domain::SecretName;
use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, StatusCode, Transport};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
    SecretClientListSecretPropertiesVersionsOptions, SecretClientUpdateSecretPropertiesOptions, SetSecretParameters,
    UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How long to wait for a recovered secret to become readable.
const RECOVER_WAIT: Duration = Duration::from_secs(60);

/// patrol's Key Vault store.
#[derive(Clone)]
pub struct KeyVaultSecretStore {
    client: Arc<SecretClient>,
    recover_deleted: bool,
}

impl std::fmt::Debug for KeyVaultSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultSecretStore")
            .field("vault", &self.client.endpoint().as_str())
            .field("recover_deleted", &self.recover_deleted)
            .finish()
    }
}

/// The HTTP client the SDK uses: reqwest 0.13 (the version `azure_core` implements its transport for),
/// trusting the OS roots plus `ca_cert` (patrol-emulator's CA) when given.
pub fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, StoreError> {
    crate::net::client_builder(ca_cert, Duration::from_secs(20), Duration::from_secs(60))
        .map_err(|e| other("read CA certificate", e.to_string()))?
        .build()
        .map_err(|e| other("build HTTP client", e.to_string()))
}

impl KeyVaultSecretStore {
    /// Wraps an existing client (tests build clients with their own retry options).
    pub fn with_client(client: SecretClient, recover_deleted: bool) -> Self {
        Self { client: Arc::new(client), recover_deleted }
    }

    /// Builds the client from settings: the configured credential, the CA to trust, and the SDK's
    /// challenge-resource check (kept on, except for loopback vault URLs such as patrol-emulator's, whose
    /// host cannot end in `vault.azure.net`; the credential only ever mints Key Vault tokens either way).
    pub fn connect(
        kv: &KeyVaultSettings,
        authority: &Url,
        ca_cert: Option<&Path>,
        options: Option<ClientOptions>,
    ) -> Result<Self, StoreError> {
        Self::connect_with_clock(kv, authority, ca_cert, options, crate::clock::Clock::system())
    }

    /// As [`Self::connect`]; the credential reckons token lifetimes on `clock` (patrol's, following the
    /// host's `UtcNow`).
    pub fn connect_with_clock(
        kv: &KeyVaultSettings,
        authority: &Url,
        ca_cert: Option<&Path>,
        options: Option<ClientOptions>,
        clock: crate::clock::Clock,
    ) -> Result<Self, StoreError> {
        let http = http_client(ca_cert)?;
        let credential = super::credential::from_settings_with_clock(kv, authority, http.clone(), clock)
            .map_err(|m| other("build credential", m))?;
        let mut client_options = options.unwrap_or_default();
        client_options.transport = Some(Transport::new(Arc::new(http)));
        let opts = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(!crate::config::is_loopback_url(&kv.url)),
            ..Default::default()
        };
        let client = SecretClient::new(kv.url.as_str(), credential, Some(opts))
            .map_err(|e| other("create Key Vault client", e.to_string()))?;
        Ok(Self::with_client(client, kv.recover_deleted))
    }

    async fn recover_and_wait(&self, name: &SecretName) -> Result<(), StoreError> {
        tracing::warn!(secret = %name, "secret is soft-deleted; recovering it (PATROL_KEYVAULT_RECOVER_DELETED=true)");
        self.client
            .recover_deleted_secret(name.as_str(), None)
            .await
            .map_err(|e| map_error("recover", name, None, e))?;
        let deadline = tokio::time::Instant::now() + RECOVER_WAIT;
        let mut delay = Duration::from_millis(250);
        loop {
            match self.client.get_secret(name.as_str(), None).await {
                Ok(_) => return Ok(()),
                Err(e) if e.http_status() == Some(StatusCode::NotFound) => {}
                // Disabled still means it is back.
                Err(e) if e.http_status() == Some(StatusCode::Forbidden) => return Ok(()),
                Err(e) => return Err(map_error("recover", name, None, e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(other(
                    "recover",
                    format!("secret {name} was not readable {RECOVER_WAIT:?} after recovery"),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(4));
        }
    }

    async fn set_once(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: &NewVersion,
    ) -> Result<VersionProperties, azure_core::Error> {
        let params = SetSecretParameters {
            value: Some(value.expose_secret().to_owned()),
            content_type: new.content_type.clone(),
            tags: Some(to_hash(&new.tags)),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                expires: new.expires,
                not_before: new.not_before,
                ..Default::default()
            }),
        };
        let secret = self.client.set_secret(name.as_str(), params.try_into()?, None).await?.into_model()?;
        properties_of(
            name,
            &secret.resource_id()?.version.unwrap_or_default(),
            secret.attributes.as_ref(),
            secret.content_type,
            secret.tags,
        )
    }
}

fn other(operation: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Other { operation, message: message.into() }
}

fn to_hash(t: &BTreeMap<String, String>) -> HashMap<String, String> {
    t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_btree(t: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    t.unwrap_or_default().into_iter().collect()
}

fn properties_of(
    name: &SecretName,
    version: &str,
    attrs: Option<&SecretAttributes>,
    content_type: Option<String>,
    tags: Option<HashMap<String, String>>,
) -> Result<VersionProperties, azure_core::Error> {
    Ok(VersionProperties {
        name: name.clone(),
        version: version.to_owned(),
        enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
        expires: attrs.and_then(|a| a.expires),
        created: attrs.and_then(|a| a.created),
        updated: attrs.and_then(|a| a.updated),
        content_type,
        tags: to_btree(tags),
    })
}

/// Key Vault's `error.code`, `innererror.code`, message and `Retry-After` from an SDK error.
struct ServiceError {
    status: Option<StatusCode>,
    code: Option<String>,
    inner: Option<String>,
    message: String,
    retry_after: Option<u64>,
}

fn service_error(e: &azure_core::Error) -> ServiceError {
    let mut out =
        ServiceError { status: e.http_status(), code: None, inner: None, message: e.to_string(), retry_after: None };
    if let ErrorKind::HttpResponse { error_code, raw_response, .. } = e.kind() {
        out.code = error_code.clone();
        if let Some(raw) = raw_response {
            out.retry_after = raw
                .headers()
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static("retry-after"))
                .and_then(|v| v.trim().parse().ok());
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw.body().as_ref()) {
                if let Some(c) = v["error"]["code"].as_str() {
                    out.code = Some(c.to_owned());
                }
                out.inner = v["error"]["innererror"]["code"].as_str().map(str::to_owned);
                if let Some(m) = v["error"]["message"].as_str() {
                    out.message = m.to_owned();
                }
            }
        }
    }
    out
}

fn map_error(operation: &'static str, name: &SecretName, version: Option<&str>, e: azure_core::Error) -> StoreError {
    let s = service_error(&e);
    match (s.status, s.inner.as_deref()) {
        (Some(StatusCode::Conflict), Some("ObjectIsDeletedButRecoverable")) => {
            StoreError::DeletedButRecoverable { name: name.clone() }
        }
        (Some(StatusCode::Forbidden), Some("SecretDisabled")) => {
            StoreError::Disabled { name: name.clone(), version: version.unwrap_or("(current)").to_owned() }
        }
        (Some(StatusCode::Forbidden), _) => StoreError::Forbidden { name: name.clone(), message: s.message },
        (Some(StatusCode::TooManyRequests), _) => {
            StoreError::Throttled { retry_after_secs: s.retry_after.unwrap_or(1) }
        }
        _ => other(
            operation,
            format!("secret {name}: {}{}", s.code.map(|c| format!("{c}: ")).unwrap_or_default(), s.message),
        ),
    }
}

#[async_trait]
impl SecretStore for KeyVaultSecretStore {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        tags::validate(&new.tags)?;
        match self.set_once(name, value, &new).await {
            Ok(p) => {
                tracing::info!(secret = %name, version = %p.version, "stored a new secret version");
                Ok(p)
            }
            Err(e) => match map_error("set", name, None, e) {
                StoreError::DeletedButRecoverable { .. } if self.recover_deleted => {
                    self.recover_and_wait(name).await?;
                    self.set_once(name, value, &new).await.map_err(|e| map_error("set", name, None, e))
                }
                err => Err(err),
            },
        }
    }

    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        if let Some(v) = version
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Ok(None); // not a version id; never let it shape the URL
        }
        let opts = SecretClientGetSecretOptions { secret_version: version.map(str::to_owned), ..Default::default() };
        let secret = match self.client.get_secret(name.as_str(), Some(opts)).await {
            Ok(r) => r.into_model().map_err(|e| map_error("get", name, version, e))?,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(map_error("get", name, version, e)),
        };
        let id = secret.resource_id().map_err(|e| map_error("get", name, version, e))?;
        let value = SecretString::from(secret.value.unwrap_or_default());
        let props = properties_of(
            name,
            &id.version.unwrap_or_default(),
            secret.attributes.as_ref(),
            secret.content_type,
            secret.tags,
        )
        .map_err(|e| map_error("get", name, version, e))?;
        Ok(Some(StoredSecret { properties: props, value }))
    }

    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        let opts = SecretClientListSecretPropertiesOptions { maxresults: Some(25), ..Default::default() };
        let list_err = |e: azure_core::Error| {
            let s = service_error(&e);
            match s.status {
                Some(StatusCode::TooManyRequests) => {
                    StoreError::Throttled { retry_after_secs: s.retry_after.unwrap_or(1) }
                }
                _ => other("list", format!("{}{}", s.code.map(|c| format!("{c}: ")).unwrap_or_default(), s.message)),
            }
        };
        let mut pager = self.client.list_secret_properties(Some(opts)).map_err(list_err)?;
        let mut out = Vec::new();
        while let Some(p) = pager.try_next().await.map_err(list_err)? {
            let id = p.resource_id().map_err(list_err)?;
            let Ok(name) = SecretName::parse(&id.name) else { continue };
            let attrs = p.attributes.as_ref();
            out.push(SecretSummary {
                name,
                enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
                expires: attrs.and_then(|a| a.expires),
                content_type: p.content_type.clone(),
                tags: to_btree(p.tags.clone()),
            });
        }
        Ok(out)
    }

    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        let opts = SecretClientListSecretPropertiesVersionsOptions { maxresults: Some(25), ..Default::default() };
        let err = |e| map_error("list versions", name, None, e);
        let mut pager = self.client.list_secret_properties_versions(name.as_str(), Some(opts)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(p) = pager.try_next().await.map_err(err)? {
            let id = p.resource_id().map_err(err)?;
            out.push(
                properties_of(name, &id.version.unwrap_or_default(), p.attributes.as_ref(), p.content_type, p.tags)
                    .map_err(err)?,
            );
        }
        Ok(out)
    }

    /// Soft-deletes the secret, waits until Key Vault lists it as deleted, then purges it. A refused purge
    /// (the identity may delete but not purge) is logged and not an error: the deleted secret is gone from
    /// the vault's secrets and is purged when the vault's retention ends.
    async fn delete(&self, name: &SecretName) -> Result<(), StoreError> {
        let existed = match self.client.delete_secret(name.as_str(), None).await {
            Ok(_) => true,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => false,
            Err(e) => return Err(map_error("delete", name, None, e)),
        };
        // Deletion finishes asynchronously: wait (bounded) until the deleted secret can be purged.
        let deadline = tokio::time::Instant::now() + RECOVER_WAIT;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.client.get_deleted_secret(name.as_str(), None).await {
                Ok(_) => break,
                // Neither live nor deleted: gone already (a rerun after the purge).
                Err(e) if e.http_status() == Some(StatusCode::NotFound) && !existed => return Ok(()),
                Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(other("delete", format!("secret {name} was not listed as deleted in time")));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(map_error("delete", name, None, e)),
            }
        }
        match self.client.purge_deleted_secret(name.as_str(), None).await {
            Ok(_) => tracing::info!(secret = %name, "deleted and purged the secret"),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {}
            Err(e) => {
                tracing::warn!(secret = %name, error = %map_error("purge", name, None, e), "deleted the secret; purging it was refused (it is purged when the vault's soft-delete retention ends)")
            }
        }
        Ok(())
    }

    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(other("update", format!("{version:?} is not a Key Vault version id")));
        }
        if let Some(t) = &update.tags {
            tags::validate(t)?;
        }
        let err = |e| map_error("update", name, Some(version), e);
        let params = UpdateSecretPropertiesParameters {
            content_type: None,
            secret_attributes: Some(SecretAttributes {
                enabled: update.enabled,
                expires: update.expires,
                ..Default::default()
            }),
            tags: update.tags.as_ref().map(to_hash),
        };
        let opts = SecretClientUpdateSecretPropertiesOptions {
            secret_version: Some(version.to_owned()),
            ..Default::default()
        };
        let secret = self
            .client
            .update_secret_properties(name.as_str(), params.try_into().map_err(err)?, Some(opts))
            .await
            .map_err(err)?
            .into_model()
            .map_err(err)?;
        tracing::info!(secret = %name, version, enabled = ?update.enabled, "updated secret version properties");
        properties_of(name, version, secret.attributes.as_ref(), secret.content_type, secret.tags).map_err(err)
    }
}
