//! GitHub Actions secrets (repository, environment, organization): the value is encrypted with the
//! target's public key as a libsodium sealed box by RustCrypto `crypto_box` (`seal`), then `PUT` (201
//! created, 204 updated). patrol's GitHub credential (an App installation token or a fine-grained token)
//! is read from patrol's own secret store. The secret's `updated_at` is the version marker.

use super::ConsumerError;
use super::policy::{Consumer, ConsumerKind, GithubTarget};
use crate::domain::SecretName;
use crate::store::SecretStore;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::sync::Arc;

pub struct GithubConsumers {
    client: reqwest::Client,
    api: String,
    store: Arc<dyn SecretStore>,
    credential: Option<SecretName>,
}

impl std::fmt::Debug for GithubConsumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConsumers").field("api", &self.api).finish()
    }
}

/// Seals `value` for a base64 X25519 public key (libsodium `crypto_box_seal`), base64 again.
pub fn seal(public_key_b64: &str, value: &SecretString) -> Result<String, ConsumerError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw =
        b64.decode(public_key_b64.trim()).map_err(|_| ConsumerError::Refused("the public key is not base64".into()))?;
    let pk = crypto_box::PublicKey::from_slice(&raw)
        .map_err(|_| ConsumerError::Refused("the public key is not a 32-byte X25519 key".into()))?;
    let sealed = pk
        .seal(&mut crypto_box::aead::OsRng, value.expose_secret().as_bytes())
        .map_err(|_| ConsumerError::Refused("sealing failed".into()))?;
    Ok(b64.encode(sealed))
}

impl GithubConsumers {
    pub fn new(
        client: reqwest::Client,
        api: &str,
        store: Arc<dyn SecretStore>,
        credential: Option<SecretName>,
    ) -> Self {
        Self { client, api: api.trim_end_matches('/').to_owned(), store, credential }
    }

    async fn token(&self) -> Result<SecretString, ConsumerError> {
        let name = self
            .credential
            .as_ref()
            .ok_or_else(|| ConsumerError::NotConfigured("[consumers] github_credential names no secret".into()))?;
        match self.store.get(name, None).await {
            Ok(Some(s)) => Ok(s.value),
            Ok(None) => Err(ConsumerError::NotConfigured(format!(
                "patrol's GitHub credential {name} is not in the secret store; store it there"
            ))),
            Err(e) => Err(ConsumerError::Transient(format!("reading patrol's GitHub credential {name}: {e}"))),
        }
    }

    fn base(target: &GithubTarget) -> String {
        match target {
            GithubTarget::Repository { repository } => format!("repos/{repository}/actions/secrets"),
            GithubTarget::Environment { repository, environment } => {
                format!("repos/{repository}/environments/{environment}/secrets")
            }
            GithubTarget::Organization { org, .. } => format!("orgs/{org}/actions/secrets"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(u16, Value), ConsumerError> {
        let token = self.token().await?;
        let mut req = self
            .client
            .request(method, format!("{}/{path}", self.api))
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp =
            req.send().await.map_err(|e| ConsumerError::Transient(format!("{what}: could not reach GitHub: {e}")))?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok((status, v));
        }
        let message =
            v.get("message").and_then(|m| m.as_str()).unwrap_or_default().chars().take(300).collect::<String>();
        let text = format!("{what}: HTTP {status} {message}");
        Err(match status {
            404 => ConsumerError::NotFound(text),
            403 if retry_after => ConsumerError::Transient(text),
            401 | 403 => ConsumerError::Forbidden(text),
            409 => ConsumerError::Conflict(text),
            429 | 500..=599 => ConsumerError::Transient(text),
            _ => ConsumerError::Refused(text),
        })
    }

    fn target(c: &Consumer) -> Result<(&GithubTarget, &str), ConsumerError> {
        match &c.kind {
            ConsumerKind::GithubActionsSecret { target, name } => Ok((target, name)),
            _ => Err(ConsumerError::Refused("not a GitHub Actions secret".into())),
        }
    }

    /// The secret's `updated_at`, `None` when it does not exist yet.
    async fn updated_at(&self, c: &Consumer) -> Result<Option<String>, ConsumerError> {
        let (target, name) = Self::target(c)?;
        match self.call(reqwest::Method::GET, &format!("{}/{name}", Self::base(target)), None, &c.id).await {
            Ok((_, v)) => Ok(v.get("updated_at").and_then(|u| u.as_str()).map(str::to_owned)),
            Err(ConsumerError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn prepare(&self, c: &Consumer) -> Result<Option<String>, ConsumerError> {
        let (target, _) = Self::target(c)?;
        // The public key answers only where the secret can live (repository, environment, organization).
        self.call(reqwest::Method::GET, &format!("{}/public-key", Self::base(target)), None, &c.id).await?;
        self.updated_at(c).await
    }

    /// Checks the secret's target without writing (`super::check`): its public key can be read and is a
    /// sealing key. Whether the credential may *write* cannot be asked without a write.
    pub async fn check(&self, c: &Consumer, p: &mut super::check::Probe) -> Result<(), ConsumerError> {
        let (target, name) = Self::target(c)?;
        let (_, key) =
            self.call(reqwest::Method::GET, &format!("{}/public-key", Self::base(target)), None, &c.id).await?;
        p.reachable = Some(true);
        let (Some(key_id), Some(pk)) =
            (key.get("key_id").and_then(|v| v.as_str()), key.get("key").and_then(|v| v.as_str()))
        else {
            return Err(ConsumerError::Refused(format!("{}: GitHub answered no public key", c.id)));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(pk.trim())
            .map_err(|_| ConsumerError::Refused(format!("{}: the public key is not base64", c.id)))?;
        crypto_box::PublicKey::from_slice(&raw)
            .map_err(|_| ConsumerError::Refused(format!("{}: the public key is not a 32-byte X25519 key", c.id)))?;
        p.right_type = Some(true);
        p.note(format!("public key {key_id} readable"));
        match self.updated_at(c).await? {
            Some(at) => p.note(format!("secret {name} exists (updated {at})")),
            None => p.note(format!("secret {name} does not exist yet (patrol creates it)")),
        }
        p.note("GitHub cannot say without a write whether the credential has Secrets: write");
        Ok(())
    }

    pub async fn landed(&self, c: &Consumer, before: Option<&str>) -> Result<Option<Option<String>>, ConsumerError> {
        let now = self.updated_at(c).await?;
        Ok(now.filter(|n| Some(n.as_str()) != before).map(Some))
    }

    pub async fn write(
        &self,
        c: &Consumer,
        value: &SecretString,
        before: Option<&str>,
    ) -> Result<Option<String>, ConsumerError> {
        let (target, name) = Self::target(c)?;
        let now = self.updated_at(c).await?;
        if now.as_deref() != before {
            return Err(ConsumerError::Conflict(format!(
                "{}: updated at {} since patrol read it; patrol did not overwrite it",
                c.id,
                now.as_deref().unwrap_or("?")
            )));
        }
        let base = Self::base(target);
        let (_, key) = self.call(reqwest::Method::GET, &format!("{base}/public-key"), None, &c.id).await?;
        let (Some(key_id), Some(pk)) =
            (key.get("key_id").and_then(|v| v.as_str()), key.get("key").and_then(|v| v.as_str()))
        else {
            return Err(ConsumerError::Refused(format!("{}: GitHub answered no public key", c.id)));
        };
        let mut body = json!({ "encrypted_value": seal(pk, value)?, "key_id": key_id });
        if let GithubTarget::Organization { visibility, selected_repository_ids, .. } = target {
            body["visibility"] = json!(visibility);
            if visibility == "selected" {
                body["selected_repository_ids"] = json!(selected_repository_ids);
            }
        }
        self.call(reqwest::Method::PUT, &format!("{base}/{name}"), Some(&body), &c.id).await?;
        self.updated_at(c).await
    }
}
