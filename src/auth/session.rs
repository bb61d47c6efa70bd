//! [`OwnerSession`]: one owner's access to Azure DevOps, as a [`TokenSource`].
//!
//! - The refresh token lives in the [`SecretStore`] under [`OwnerId::refresh_token_secret`] with content type
//!   [`REFRESH_TOKEN_CONTENT_TYPE`]; every rotated refresh token Entra hands back is stored as a new version,
//!   tagged with when the owner signed in and when it was refreshed ([`refresh_status`] reads them back for
//!   `patrol status`).
//! - The access token is refreshed **proactively**: once it has less than the margin (five minutes) left it
//!   is never handed out again, so no request carries an expired token, however long the run.
//! - Refresh is single-flight: concurrent callers wait on one lock; the first refreshes, the rest reuse it.
//! - `invalid_grant` / `interaction_required` become [`DevOpsError::SignInRequired`].
//! - A rotated refresh token that could not be stored is kept in memory and stored on the next refresh.
//! - Read-only commands (`plan`, `status`, `inventory`, …) write nothing: their sessions
//!   ([`SessionOptions::read_only`]) keep a rotated refresh token in memory for the rest of the process and
//!   never store it. Entra keeps the stored one valid until it expires, so the next run still signs in.
//! - The superseded version is disabled once the new one is stored (Entra keeps old refresh tokens valid).

use super::entra::{EntraClient, EntraError};
use super::{AccessToken, PAT_SCOPES, TokenSource, TokenSources};
use crate::clock::Clock;
use crate::devops::DevOpsError;
use crate::domain::OwnerId;
use crate::store::{NewVersion, PropertiesUpdate, REFRESH_TOKEN_CONTENT_TYPE, SecretStore, StoreError, tags};
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// Tag: when the owner last signed in interactively (`patrol login`), RFC 3339.
pub const TAG_SIGNED_IN_AT: &str = "signed-in-at";
/// Tag: when this refresh token was obtained (the last successful refresh), RFC 3339.
pub const TAG_REFRESHED_AT: &str = "refreshed-at";
/// Tag: the scopes the owner consented to at sign-in; refreshes ask for the same.
pub const TAG_SCOPES: &str = "scopes";
/// Retries of a refresh that failed in transit or with a 5xx.
const ENTRA_RETRIES: u32 = 2;
/// Default proactive refresh margin.
pub const REFRESH_MARGIN: time::Duration = time::Duration::minutes(5);

/// Tags of a refresh-token version.
pub fn refresh_token_tags(
    owner: &OwnerId,
    signed_in_at: &str,
    scopes: &str,
    refreshed_at: OffsetDateTime,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_SCOPES.to_owned(), scopes.to_owned()),
        (tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned()),
        (tags::OWNER.to_owned(), owner.as_str().to_owned()),
        (TAG_SIGNED_IN_AT.to_owned(), signed_in_at.to_owned()),
        (TAG_REFRESHED_AT.to_owned(), crate::timestamp::rfc3339(refreshed_at)),
    ])
}

/// Writes a refresh token as the owner's new current version, recording when they signed in and which
/// scopes they consented to.
pub async fn store_refresh_token(
    store: &dyn SecretStore,
    owner: &OwnerId,
    value: &SecretString,
    signed_in_at: &str,
    scopes: &str,
    now: OffsetDateTime,
) -> Result<String, StoreError> {
    let new = NewVersion {
        content_type: Some(REFRESH_TOKEN_CONTENT_TYPE.to_owned()),
        tags: refresh_token_tags(owner, signed_in_at, scopes, now),
        ..Default::default()
    };
    tags::validate(&new.tags)?;
    let name = owner.refresh_token_secret();
    // Entra keeps a superseded refresh token valid until it expires, so the version holding it is disabled
    // (best effort): only the current version can be read without changing the secret's properties.
    let previous = store.get(&name, None).await.ok().flatten().map(|s| s.properties.version);
    let version = store.set(&name, value, new).await?.version;
    if let Some(prev) = previous.filter(|p| *p != version) {
        let disable = PropertiesUpdate { enabled: Some(false), ..Default::default() };
        if let Err(e) = store.update(&name, &prev, disable).await {
            tracing::warn!(%owner, error = %e, "could not disable the superseded refresh-token version");
        }
    }
    Ok(version)
}

/// What `patrol status` shows about an owner's sign-in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefreshStatus {
    /// Not serialized: `patrol status` names the owner once, in its own row.
    #[serde(skip)]
    pub owner: OwnerId,
    #[serde(with = "time::serde::rfc3339::option")]
    pub signed_in_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_refresh_at: Option<OffsetDateTime>,
    /// Age of the stored refresh token (Entra expires an unused one after 90 days).
    pub refresh_token_age_days: Option<i64>,
}

/// Reads an owner's sign-in bookkeeping from the current refresh-token version; `None` when the owner
/// never signed in.
pub async fn refresh_status(
    store: &dyn SecretStore,
    owner: &OwnerId,
    now: OffsetDateTime,
) -> Result<Option<RefreshStatus>, StoreError> {
    let Some(current) = store.get(&owner.refresh_token_secret(), None).await? else {
        return Ok(None);
    };
    let p = current.properties;
    let tag = |k: &str| p.tags.get(k).and_then(|v| crate::timestamp::parse_opt(v));
    let last_refresh_at = tag(TAG_REFRESHED_AT).or(p.created);
    Ok(Some(RefreshStatus {
        owner: owner.clone(),
        signed_in_at: tag(TAG_SIGNED_IN_AT),
        last_refresh_at,
        refresh_token_age_days: last_refresh_at.map(|t| (now - t).whole_days()),
    }))
}

/// A refresh token in hand.
#[derive(Debug)]
struct Held {
    value: SecretString,
    /// The store version it came from or was written as; `None` while not yet stored.
    version: Option<String>,
    signed_in_at: String,
    /// What to ask for on refresh (from the sign-in).
    scopes: String,
}

#[derive(Debug, Default)]
struct Inner {
    access: Option<AccessToken>,
    refresh: Option<Held>,
    refreshes: u64,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Refresh once an access token has less than this left (at least five minutes in production).
    pub refresh_margin: time::Duration,
    /// Scopes asked on refresh when the stored version does not record the sign-in's scopes.
    pub scopes: String,
    /// Never write to the store: a rotated refresh token Entra hands back is used for the rest of this
    /// process only (read-only commands write nothing; the stored token stays valid until it expires).
    pub read_only: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { refresh_margin: REFRESH_MARGIN, scopes: PAT_SCOPES.to_owned(), read_only: false }
    }
}

/// The reason of [`DevOpsError::SignInRequired`] when no refresh token is stored at all (defined beside
/// the error, which words it "has not signed in yet").
pub use crate::devops::NEVER_SIGNED_IN;

/// One owner's delegated session.
#[derive(Debug)]
pub struct OwnerSession {
    owner: OwnerId,
    entra: Arc<EntraClient>,
    store: Arc<dyn SecretStore>,
    clock: Clock,
    options: SessionOptions,
    inner: tokio::sync::Mutex<Inner>,
    invalidated: AtomicBool,
    refused: std::sync::atomic::AtomicU64,
}

impl OwnerSession {
    pub fn new(
        owner: OwnerId,
        entra: Arc<EntraClient>,
        store: Arc<dyn SecretStore>,
        clock: Clock,
        options: SessionOptions,
    ) -> Self {
        Self {
            owner,
            entra,
            store,
            clock,
            options,
            inner: Default::default(),
            invalidated: AtomicBool::new(false),
            refused: Default::default(),
        }
    }

    /// How many access tokens of this session a service refused (401) — zero in a healthy run.
    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many times this session redeemed a refresh token.
    pub async fn refresh_count(&self) -> u64 {
        self.inner.lock().await.refreshes
    }

    fn sign_in_required(&self, reason: impl Into<String>) -> DevOpsError {
        DevOpsError::SignInRequired { owner: self.owner.clone(), reason: reason.into() }
    }

    async fn load(&self) -> Result<Held, DevOpsError> {
        let name = self.owner.refresh_token_secret();
        let stored = self.store.get(&name, None).await.map_err(|e| {
            DevOpsError::Transport(format!(
                "cannot read the refresh token of {} from the secret store: {e}",
                self.owner
            ))
        })?;
        let Some(stored) = stored else {
            tracing::error!(owner = %self.owner, secret = %name, "no refresh token is stored; the owner must sign in");
            return Err(self.sign_in_required(NEVER_SIGNED_IN));
        };
        if stored.properties.content_type.as_deref() != Some(REFRESH_TOKEN_CONTENT_TYPE) {
            return Err(DevOpsError::Protocol(format!(
                "secret {name} does not hold a refresh token (content type {:?}); refusing to send it to Entra",
                stored.properties.content_type
            )));
        }
        let tags = &stored.properties.tags;
        let signed_in_at = tags.get(TAG_SIGNED_IN_AT).cloned().unwrap_or_default();
        let scopes = tags.get(TAG_SCOPES).cloned().unwrap_or_else(|| self.options.scopes.clone());
        Ok(Held { value: stored.value, version: Some(stored.properties.version), signed_in_at, scopes })
    }

    /// Stores a held refresh token that is not stored yet (never in a read-only session); a failure is
    /// logged and retried next time.
    async fn persist(&self, held: &mut Held, now: OffsetDateTime) {
        if held.version.is_some() || self.options.read_only {
            return;
        }
        match store_refresh_token(self.store.as_ref(), &self.owner, &held.value, &held.signed_in_at, &held.scopes, now)
            .await
        {
            Ok(v) => held.version = Some(v),
            Err(e) => tracing::warn!(
                owner = %self.owner,
                error = %e,
                "the rotated refresh token could not be stored; it is kept in memory and stored on the next refresh"
            ),
        }
    }

    async fn refresh(&self, inner: &mut Inner) -> Result<AccessToken, DevOpsError> {
        let mut held = match inner.refresh.take() {
            Some(h) => h,
            None => self.load().await?,
        };
        let mut reloaded = false;
        let mut transient_retries = 0u32;
        let grant = loop {
            let now = self.clock.now();
            match self.entra.refresh(&held.value, &held.scopes, now).await {
                Ok(g) => break g,
                Err(EntraError::Transport(m)) if transient_retries < ENTRA_RETRIES => {
                    // Entra keeps an old refresh token valid after a refresh, so asking again is safe; if it
                    // did process the lost request and spent the token, the retry says so (invalid_grant).
                    transient_retries += 1;
                    tracing::warn!(owner = %self.owner, error = %m, attempt = transient_retries, "Entra refresh failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(transient_retries))).await;
                }
                Err(e) if e.needs_sign_in() => {
                    // Someone may have signed in again since this token was loaded: try the store's once.
                    if !reloaded
                        && let Ok(fresh) = self.load().await
                        && fresh.version != held.version
                    {
                        reloaded = true;
                        held = fresh;
                        continue;
                    }
                    tracing::error!(owner = %self.owner, error = %e, "the owner's refresh token was refused; sign-in required");
                    return Err(self.sign_in_required(e.to_string()));
                }
                Err(e) => {
                    inner.refresh = Some(held);
                    return Err(match e {
                        EntraError::Transport(m) => DevOpsError::Transport(format!("Microsoft Entra: {m}")),
                        other => DevOpsError::Unauthorized(format!(
                            "Microsoft Entra did not refresh the access token of {}: {other}",
                            self.owner
                        )),
                    });
                }
            }
        };
        inner.refreshes += 1;
        let now = self.clock.now();
        if let Some(rotated) = grant.refresh_token {
            held = Held { value: rotated, version: None, signed_in_at: held.signed_in_at, scopes: held.scopes };
        }
        self.persist(&mut held, now).await;
        inner.refresh = Some(held);
        if grant.lifetime <= self.options.refresh_margin {
            tracing::warn!(
                owner = %self.owner,
                lifetime_s = grant.lifetime.whole_seconds(),
                "access tokens live shorter than the refresh margin; every call refreshes"
            );
        }
        tracing::info!(owner = %self.owner, expires_at = %grant.access.expires_at, "refreshed the owner's access token");
        Ok(grant.access)
    }
}

#[async_trait]
impl TokenSource for OwnerSession {
    fn identity(&self) -> &OwnerId {
        &self.owner
    }

    async fn access_token(&self) -> Result<AccessToken, DevOpsError> {
        let mut inner = self.inner.lock().await;
        if self.invalidated.swap(false, Ordering::AcqRel) {
            inner.access = None;
        }
        let now = self.clock.now();
        if let Some(a) = &inner.access
            && a.expires_at - self.options.refresh_margin > now
        {
            return Ok(a.clone());
        }
        inner.access = None;
        let fresh = self.refresh(&mut inner).await?;
        // Even a token that lives shorter than the margin is handed out only while it is unexpired.
        if fresh.expires_at <= self.clock.now() {
            return Err(DevOpsError::Protocol(format!(
                "Microsoft Entra issued an access token for {} that had already expired",
                self.owner
            )));
        }
        inner.access = Some(fresh.clone());
        Ok(fresh)
    }

    fn invalidate(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.invalidated.store(true, Ordering::Release);
    }
}

/// The sessions of every owner, created on first use.
#[derive(Debug)]
pub struct Sessions {
    entra: Arc<EntraClient>,
    store: Arc<dyn SecretStore>,
    clock: Clock,
    options: SessionOptions,
    map: Mutex<HashMap<OwnerId, Arc<OwnerSession>>>,
}

impl Sessions {
    pub fn new(entra: Arc<EntraClient>, store: Arc<dyn SecretStore>, clock: Clock, options: SessionOptions) -> Self {
        Self { entra, store, clock, options, map: Mutex::default() }
    }

    /// From settings: Entra at `PATROL_ENTRA_AUTHORITY` / `PATROL_TENANT_ID` for the app registration
    /// `PATROL_CLIENT_ID` (required), refresh tokens in `store`.
    pub fn from_settings(
        settings: &crate::config::Settings,
        client: reqwest::Client,
        store: Arc<dyn SecretStore>,
        clock: Clock,
    ) -> Result<Self, crate::config::ConfigError> {
        let entra = entra_from_settings(settings, client)?;
        Ok(Self::new(Arc::new(entra), store, clock, SessionOptions::default()))
    }

    pub fn session(&self, owner: &OwnerId) -> Arc<OwnerSession> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(owner.clone())
            .or_insert_with(|| {
                Arc::new(OwnerSession::new(
                    owner.clone(),
                    self.entra.clone(),
                    self.store.clone(),
                    self.clock.clone(),
                    self.options.clone(),
                ))
            })
            .clone()
    }
}

impl TokenSources for Sessions {
    fn for_identity(&self, identity: &OwnerId) -> Arc<dyn TokenSource> {
        self.session(identity)
    }
}

/// The Entra client the settings describe (`PATROL_CLIENT_ID` is required for delegated sign-in).
pub fn entra_from_settings(
    settings: &crate::config::Settings,
    client: reqwest::Client,
) -> Result<EntraClient, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let client_id = settings.client_id.as_deref().ok_or_else(|| {
        ConfigError::new(
            "PATROL_CLIENT_ID",
            "not set (the application (client) id of the Entra app registration owners sign in to)",
        )
    })?;
    EntraClient::new(client, settings.entra_authority.clone(), &settings.tenant_id, client_id).map_err(|e| {
        let setting = if e.to_string().contains("tenant") { "PATROL_TENANT_ID" } else { "PATROL_CLIENT_ID" };
        ConfigError::new(setting, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_require_a_client_id() {
        let client = reqwest::Client::new();
        let s = crate::config::Settings::from_source(&crate::config::Source::from_pairs([])).unwrap();
        let e = entra_from_settings(&s, client.clone()).unwrap_err();
        assert_eq!(e.setting, "PATROL_CLIENT_ID");
        let s = crate::config::Settings::from_source(&crate::config::Source::from_pairs([
            ("PATROL_CLIENT_ID", "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c11"),
            ("PATROL_TENANT_ID", "contoso.onmicrosoft.com"),
        ]))
        .unwrap();
        entra_from_settings(&s, client.clone()).unwrap();
        let s = crate::config::Settings::from_source(&crate::config::Source::from_pairs([
            ("PATROL_CLIENT_ID", "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c12"),
            ("PATROL_TENANT_ID", "bad/tenant"),
        ]))
        .unwrap();
        assert_eq!(entra_from_settings(&s, client).unwrap_err().setting, "PATROL_TENANT_ID");
    }
}
