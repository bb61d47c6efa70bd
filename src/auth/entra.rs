//! The Microsoft Entra v2.0 endpoints patrol uses for delegated sign-in of PAT owners:
//! `{authority}/{tenant}/oauth2/v2.0/devicecode` and `/token` (device-code and refresh-token grants) for a
//! public client. Wire shapes are parsed here; tokens go straight into `SecretString`s.

use super::AccessToken;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;
use time::OffsetDateTime;
use url::Url;

/// Entra `error` codes meaning a person has to sign in again.
pub const SIGN_IN_ERRORS: &[&str] = &["invalid_grant", "interaction_required", "consent_required", "login_required"];

/// Why Entra did not hand out a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EntraError {
    /// Entra answered with an OAuth error (`authorization_pending`, `invalid_grant`, …).
    #[error("Microsoft Entra refused: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected { error: String, description: Option<String>, suberror: Option<String> },
    /// Could not reach Entra, or it failed (5xx): nothing to fix on patrol's side; try again later.
    #[error("could not reach Microsoft Entra: {0}")]
    Transport(String),
    /// An answer that is not the documented shape.
    #[error("unexpected answer from Microsoft Entra: {0}")]
    Protocol(String),
}

impl EntraError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The refresh token is no good any more: revoked, expired, or a policy demands interaction.
    pub fn needs_sign_in(&self) -> bool {
        self.code().is_some_and(|c| SIGN_IN_ERRORS.contains(&c))
    }
}

#[derive(Deserialize)]
struct WireError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    suberror: Option<String>,
}

/// `expires_in` is a number in v2.0 and a string in some v1 answers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    N(u64),
    S(String),
}

impl Seconds {
    fn get(&self) -> Option<u64> {
        match self {
            Self::N(n) => Some(*n),
            Self::S(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct WireToken {
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    expires_in: Seconds,
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    /// OpenID Connect ID token (asked for with `openid`); only its `preferred_username` is read.
    #[serde(default)]
    id_token: Option<SecretString>,
}

/// A successful token answer.
#[derive(Debug)]
pub struct TokenGrant {
    pub access: AccessToken,
    /// The rotated refresh token (Entra returns a new one on every use).
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
    /// Lifetime Entra gave the access token.
    pub lifetime: time::Duration,
    /// Who signed in, from the ID token's `preferred_username` (or `upn`) claim, when one came back.
    pub signed_in_as: Option<String>,
}

/// The account name in an ID token (`preferred_username`, else `upn`). The token came straight from the
/// token endpoint over TLS, so its signature is not checked (OpenID Connect Core 1.0, 3.1.3.7); a token
/// that is not a JWT with a JSON payload yields `None`.
pub fn id_token_username(id_token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["preferred_username", "upn"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(|v| v.as_str()).filter(|v| !v.is_empty()).map(str::to_owned))
}

#[derive(Deserialize)]
struct WireDeviceCode {
    user_code: String,
    device_code: SecretString,
    verification_uri: String,
    expires_in: Seconds,
    #[serde(default)]
    interval: Option<Seconds>,
    #[serde(default)]
    message: Option<String>,
}

/// The start of a device-code sign-in: what to show the person, and what to poll with.
#[derive(Debug)]
pub struct DeviceCodeStart {
    pub user_code: String,
    pub device_code: SecretString,
    pub verification_uri: String,
    pub expires_in: Duration,
    pub interval: Duration,
    /// Entra's own instruction text ("To sign in, use a web browser to open … and enter the code …").
    pub message: String,
}

/// A public-client Entra app registration in one tenant.
#[derive(Debug, Clone)]
pub struct EntraClient {
    client: reqwest::Client,
    authority: Url,
    tenant: String,
    client_id: String,
}

impl EntraClient {
    pub fn new(client: reqwest::Client, authority: Url, tenant: &str, client_id: &str) -> Result<Self, EntraError> {
        let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !ok(tenant) {
            return Err(EntraError::Protocol(format!("tenant {tenant:?} is not a tenant id or domain")));
        }
        if !ok(client_id) {
            return Err(EntraError::Protocol(format!("client id {client_id:?} is not an application id")));
        }
        Ok(Self { client, authority, tenant: tenant.to_owned(), client_id: client_id.to_owned() })
    }

    fn endpoint(&self, last: &str) -> Url {
        let mut url = self.authority.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([self.tenant.as_str(), "oauth2", "v2.0", last]);
        }
        url
    }

    async fn post(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<(u16, bytes::Bytes), EntraError> {
        let url = self.endpoint(endpoint);
        let mut attempt = 0;
        loop {
            let sent = self.client.post(url.clone()).header("Accept", "application/json").form(form).send().await;
            match sent {
                // Never left this machine: safe to send again, even though a refresh rotates the token.
                Err(e) if e.is_connect() && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(EntraError::Transport(e.without_url().to_string())),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.map_err(|e| EntraError::Transport(e.without_url().to_string()))?;
                    return Ok((status, body));
                }
            }
        }
    }

    fn parse_error(status: u16, body: &[u8]) -> EntraError {
        let parsed = serde_json::from_slice::<WireError>(body).ok();
        // Throttling and service failures are transient whatever the body says.
        if status >= 500 || status == 429 {
            let code = parsed.map(|w| w.error).unwrap_or_default();
            return EntraError::Transport(format!("HTTP {status} {code}").trim_end().to_owned());
        }
        match parsed.ok_or(()) {
            Ok(w) => EntraError::Rejected {
                error: w.error,
                // The first line only: Entra appends trace and correlation ids.
                description: w
                    .error_description
                    .map(|d| d.lines().next().unwrap_or_default().chars().take(300).collect()),
                suberror: w.suberror,
            },
            Err(()) => EntraError::Protocol(format!("HTTP {status} without an OAuth error body")),
        }
    }

    fn parse_token(status: u16, body: &[u8], now: OffsetDateTime) -> Result<TokenGrant, EntraError> {
        if status != 200 {
            return Err(Self::parse_error(status, body));
        }
        let w: WireToken = serde_json::from_slice(body).map_err(|e| {
            EntraError::Protocol(format!(
                "token answer is not the documented shape ({})",
                crate::devops::wire::json_error(&e)
            ))
        })?;
        if let Some(t) = w.token_type.as_deref()
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(EntraError::Protocol(format!("token_type {t:?} is not Bearer")));
        }
        if w.access_token.expose_secret().is_empty() {
            return Err(EntraError::Protocol("empty access_token".into()));
        }
        let secs = w.expires_in.get().ok_or_else(|| EntraError::Protocol("expires_in is not a number".into()))?;
        let lifetime = time::Duration::seconds(secs.min(i64::MAX as u64) as i64);
        Ok(TokenGrant {
            access: AccessToken { value: w.access_token, expires_at: now + lifetime },
            refresh_token: w.refresh_token.filter(|r| !r.expose_secret().is_empty()),
            scope: w.scope,
            lifetime,
            signed_in_as: w.id_token.as_ref().and_then(|t| id_token_username(t.expose_secret())),
        })
    }

    /// Starts a device-code sign-in for `scopes` (space-separated).
    pub async fn start_device_code(&self, scopes: &str) -> Result<DeviceCodeStart, EntraError> {
        let (status, body) = self.post("devicecode", &[("client_id", &self.client_id), ("scope", scopes)]).await?;
        if status != 200 {
            return Err(Self::parse_error(status, &body));
        }
        let w: WireDeviceCode = serde_json::from_slice(&body).map_err(|e| {
            EntraError::Protocol(format!(
                "devicecode answer is not the documented shape ({})",
                crate::devops::wire::json_error(&e)
            ))
        })?;
        let expires = w.expires_in.get().ok_or_else(|| EntraError::Protocol("expires_in is not a number".into()))?;
        let interval = w.interval.as_ref().and_then(Seconds::get).unwrap_or(5).max(1);
        let message = w.message.unwrap_or_else(|| {
            format!("To sign in, use a web browser to open {} and enter the code {}.", w.verification_uri, w.user_code)
        });
        Ok(DeviceCodeStart {
            user_code: w.user_code,
            device_code: w.device_code,
            verification_uri: w.verification_uri,
            expires_in: Duration::from_secs(expires),
            interval: Duration::from_secs(interval),
            message,
        })
    }

    /// One poll of a device-code sign-in. `authorization_pending` / `slow_down` come back as
    /// [`EntraError::Rejected`] for the caller's loop.
    pub async fn poll_device_code(
        &self,
        device_code: &SecretString,
        now: OffsetDateTime,
    ) -> Result<TokenGrant, EntraError> {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", self.client_id.as_str()),
            ("device_code", device_code.expose_secret()),
        ];
        let (status, body) = self.post("token", &form).await?;
        Self::parse_token(status, &body, now)
    }

    /// Redeems a refresh token for a new access token (and a rotated refresh token).
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        scopes: &str,
        now: OffsetDateTime,
    ) -> Result<TokenGrant, EntraError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("refresh_token", refresh_token.expose_secret()),
            ("scope", scopes),
        ];
        let (status, body) = self.post("token", &form).await?;
        Self::parse_token(status, &body, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-01 12:00 UTC);

    #[test]
    fn token_answers_parse() {
        let body = br#"{"token_type":"Bearer","scope":"499b84ac-1321-427f-aa17-267ca6975798/vso.pats","expires_in":3599,"ext_expires_in":3599,"access_token":"at-1","refresh_token":"rt-1"}"#;
        let g = EntraClient::parse_token(200, body, NOW).unwrap();
        assert_eq!(g.access.expires_at, NOW + time::Duration::seconds(3599));
        assert_eq!(g.refresh_token.unwrap().expose_secret(), "rt-1");
        let body = br#"{"token_type":"Bearer","expires_in":"3600","access_token":"at-1"}"#;
        assert!(EntraClient::parse_token(200, body, NOW).unwrap().refresh_token.is_none());
        assert!(EntraClient::parse_token(200, br#"{"expires_in":1}"#, NOW).is_err());
    }

    #[test]
    fn the_id_token_names_who_signed_in() {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let jwt = |claims| format!("{}.{}.sig", enc(serde_json::json!({"alg": "RS256"})), enc(claims));
        let t = jwt(serde_json::json!({"preferred_username": "Alice@Contoso.com", "upn": "x"}));
        assert_eq!(id_token_username(&t).as_deref(), Some("Alice@Contoso.com"));
        assert_eq!(
            id_token_username(&jwt(serde_json::json!({"upn": "bob@contoso.com"}))).as_deref(),
            Some("bob@contoso.com")
        );
        assert_eq!(id_token_username(&jwt(serde_json::json!({"name": "no account"}))), None);
        assert_eq!(id_token_username("not-a-jwt"), None);
        assert_eq!(id_token_username("a.%%%.c"), None);
        let body = format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"at-1","refresh_token":"rt-1","id_token":"{t}"}}"#
        );
        let g = EntraClient::parse_token(200, body.as_bytes(), NOW).unwrap();
        assert_eq!(g.signed_in_as.as_deref(), Some("Alice@Contoso.com"));
    }

    #[test]
    fn errors_classify() {
        let body = br#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.\r\nTrace ID: x","error_codes":[700082]}"#;
        let e = EntraClient::parse_token(400, body, NOW).unwrap_err();
        assert!(e.needs_sign_in());
        assert!(e.to_string().contains("AADSTS700082") && !e.to_string().contains("Trace ID"));
        let e = EntraClient::parse_token(400, br#"{"error":"interaction_required"}"#, NOW).unwrap_err();
        assert!(e.needs_sign_in());
        let e = EntraClient::parse_token(400, br#"{"error":"authorization_pending"}"#, NOW).unwrap_err();
        assert!(!e.needs_sign_in());
        assert_eq!(e.code(), Some("authorization_pending"));
        assert!(matches!(EntraClient::parse_token(503, b"<html>", NOW), Err(EntraError::Transport(_))));
        let e = EntraClient::parse_token(503, br#"{"error":"temporarily_unavailable"}"#, NOW).unwrap_err();
        assert!(matches!(e, EntraError::Transport(ref m) if m.contains("temporarily_unavailable")), "{e:?}");
    }

    #[test]
    fn endpoints_and_validation() {
        let c = EntraClient::new(
            reqwest::Client::new(),
            Url::parse("http://127.0.0.1:9/entra/").unwrap(),
            "contoso.com",
            "abc-123",
        )
        .unwrap();
        assert_eq!(c.endpoint("token").as_str(), "http://127.0.0.1:9/entra/contoso.com/oauth2/v2.0/token");
        assert!(EntraClient::new(reqwest::Client::new(), Url::parse("http://x/").unwrap(), "a/b", "c").is_err());
    }
}
