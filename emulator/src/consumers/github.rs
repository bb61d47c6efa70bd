//! The GitHub Actions secrets REST API (`X-GitHub-Api-Version: 2022-11-28`) on its own HTTPS listener
//! (`github` in the ready line; same CA as Key Vault), standing for `https://api.github.com`:
//!
//! - `GET  /repos/{owner}/{repo}/actions/secrets/public-key`, `GET …/actions/secrets`,
//!   `GET|PUT|DELETE …/actions/secrets/{name}` — repository secrets;
//! - `GET  /repos/{owner}/{repo}/environments/{env}/secrets/public-key`, `GET …/secrets`,
//!   `GET|PUT|DELETE …/secrets/{name}` — environment secrets;
//! - `GET  /orgs/{org}/actions/secrets/public-key`, `GET …/actions/secrets`, `GET|PUT|DELETE
//!   …/actions/secrets/{name}` (with `visibility` and `selected_repository_ids`) — organization secrets;
//! - `GET  /repos/{owner}/{repo}` — the repository's `id` (for `selected_repository_ids`).
//!
//! Each repository, environment and organization has its own X25519 key pair; `PUT` takes
//! `{encrypted_value, key_id}` where `encrypted_value` is a libsodium sealed box for the public key, which
//! the emulator really opens (RustCrypto `crypto_box`, `seal` feature) — a value sealed for another key,
//! or with a stale `key_id`, is refused with 422. `201 Created` for a new secret, `204` for an update.
//! Authentication: `Authorization: Bearer <token>` (or `token <token>`) with a token seeded through the
//! control API, scoped to repositories and organizations, read or write.

use super::ConsumerApi;
use crate::context::Ctx;
use crate::faults::{FaultKind, Service};
use crate::http::ConnInfo;
use crate::patsecret;
use crate::state::State;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use time::OffsetDateTime;

/// The API versions served (`X-GitHub-Api-Version`; absent means this one).
pub const API_VERSIONS: &[&str] = &["2022-11-28"];
/// GitHub's limit on a secret's size.
pub const MAX_SECRET_BYTES: usize = 48 * 1024;
const DOCS: &str = "https://docs.github.com/rest/actions/secrets";

/// An X25519 key pair; the secret half never leaves the emulator (except in the `--state` file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhKey {
    pub key_id: String,
    /// Base64 of the 32-byte X25519 secret key.
    pub secret_key: String,
}

impl GhKey {
    pub fn generate(counter: &mut u64) -> Self {
        *counter += 1;
        let sk = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
        // GitHub's key ids are long decimal numbers.
        Self { key_id: format!("{}", 3_380_204_578_043_523_366u64 + *counter), secret_key: B64.encode(sk.to_bytes()) }
    }

    fn secret(&self) -> Option<crypto_box::SecretKey> {
        let raw = B64.decode(&self.secret_key).ok()?;
        crypto_box::SecretKey::from_slice(&raw).ok()
    }

    /// Base64 of the public key (what `public-key` returns).
    pub fn public_b64(&self) -> String {
        self.secret().map(|s| B64.encode(s.public_key().as_bytes())).unwrap_or_default()
    }

    /// Opens a sealed box addressed to this key.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.secret()?.unseal(sealed).ok()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhSecret {
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Simulated workflow runs that read it.
    #[serde(default)]
    pub reads: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_read_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhOrgSecret {
    #[serde(flatten)]
    pub secret: GhSecret,
    /// `all`, `private` or `selected`.
    pub visibility: String,
    #[serde(default)]
    pub selected: BTreeSet<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhEnv {
    pub name: String,
    pub key: GhKey,
    #[serde(default)]
    pub secrets: BTreeMap<String, GhSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhRepo {
    pub full_name: String,
    pub id: u64,
    #[serde(default)]
    pub private: bool,
    /// Deleted (a fault): every call answers 404.
    #[serde(default)]
    pub deleted: bool,
    pub key: GhKey,
    #[serde(default)]
    pub secrets: BTreeMap<String, GhSecret>,
    /// Keyed by lower-case environment name.
    #[serde(default)]
    pub environments: BTreeMap<String, GhEnv>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhOrg {
    pub login: String,
    pub key: GhKey,
    #[serde(default)]
    pub secrets: BTreeMap<String, GhOrgSecret>,
}

/// A token the emulated GitHub accepts (only its SHA-256 is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GhToken {
    pub hash: String,
    pub label: String,
    /// Lower-case `owner/repo`.
    #[serde(default)]
    pub repositories: BTreeSet<String>,
    /// Lower-case organization logins (every repository of the organization, and its organization secrets).
    #[serde(default)]
    pub organizations: BTreeSet<String>,
    /// `Secrets: write` (else read only).
    pub write: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GitHubState {
    pub tokens: Vec<GhToken>,
    /// Keyed by lower-case `owner/repo`.
    pub repos: BTreeMap<String, GhRepo>,
    /// Keyed by lower-case login.
    pub orgs: BTreeMap<String, GhOrg>,
    pub next_repo_id: u64,
    pub next_key_id: u64,
}

impl GitHubState {
    fn token(&self, value: &str) -> Option<&GhToken> {
        let h = hex::encode(patsecret::hash(value));
        self.tokens.iter().find(|t| t.hash == h)
    }

    pub fn ensure_repo(&mut self, full_name: &str) -> Result<&mut GhRepo, String> {
        let ok = full_name.split_once('/').is_some_and(|(o, r)| valid_login(o) && valid_repo(r));
        if !ok {
            return Err(format!("{full_name:?} is not an owner/repository name"));
        }
        let key = full_name.to_lowercase();
        if !self.repos.contains_key(&key) {
            self.next_repo_id += 1;
            let id = 700_000_000 + self.next_repo_id;
            let k = GhKey::generate(&mut self.next_key_id);
            self.repos.insert(
                key.clone(),
                GhRepo {
                    full_name: full_name.to_string(),
                    id,
                    private: true,
                    deleted: false,
                    key: k,
                    secrets: BTreeMap::new(),
                    environments: BTreeMap::new(),
                },
            );
        }
        self.repos.get_mut(&key).ok_or_else(|| "repository vanished".into())
    }

    pub fn ensure_env(&mut self, full_name: &str, env: &str) -> Result<&mut GhEnv, String> {
        if env.trim().is_empty() || env.len() > 255 || env.contains('/') {
            return Err(format!("{env:?} is not an environment name"));
        }
        self.ensure_repo(full_name)?;
        let (key, env_key) = (full_name.to_lowercase(), env.to_lowercase());
        let missing = self.repos.get(&key).is_some_and(|r| !r.environments.contains_key(&env_key));
        if missing {
            let k = GhKey::generate(&mut self.next_key_id);
            if let Some(r) = self.repos.get_mut(&key) {
                r.environments
                    .insert(env_key.clone(), GhEnv { name: env.to_string(), key: k, secrets: BTreeMap::new() });
            }
        }
        self.repos
            .get_mut(&key)
            .and_then(|r| r.environments.get_mut(&env_key))
            .ok_or_else(|| "environment vanished".into())
    }

    pub fn ensure_org(&mut self, login: &str) -> Result<&mut GhOrg, String> {
        if !valid_login(login) {
            return Err(format!("{login:?} is not an organization login"));
        }
        let key = login.to_lowercase();
        if !self.orgs.contains_key(&key) {
            let k = GhKey::generate(&mut self.next_key_id);
            self.orgs.insert(key.clone(), GhOrg { login: login.to_string(), key: k, secrets: BTreeMap::new() });
        }
        self.orgs.get_mut(&key).ok_or_else(|| "organization vanished".into())
    }

    /// The secret a workflow run of `repo` (in `environment`, if any) sees under `name`: environment, then
    /// repository, then organization (if visible to the repository) — GitHub's precedence.
    pub fn resolve_for_workflow(
        &self,
        repo: &str,
        environment: Option<&str>,
        name: &str,
    ) -> Option<(&'static str, &GhSecret)> {
        let r = self.repos.get(&repo.to_lowercase()).filter(|r| !r.deleted)?;
        let name = name.to_uppercase();
        if let Some(env) = environment
            && let Some(s) = r.environments.get(&env.to_lowercase()).and_then(|e| e.secrets.get(&name))
        {
            return Some(("environment", s));
        }
        if let Some(s) = r.secrets.get(&name) {
            return Some(("repository", s));
        }
        let owner = repo.split('/').next().unwrap_or_default().to_lowercase();
        let o = self.orgs.get(&owner)?.secrets.get(&name)?;
        let visible = match o.visibility.as_str() {
            "all" => true,
            "private" => r.private,
            _ => o.selected.contains(&r.id),
        };
        visible.then_some(("organization", &o.secret))
    }
}

fn valid_login(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn valid_repo(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s != "."
        && s != ".."
}

/// GitHub's rule for secret names (stored upper case).
pub fn check_secret_name(name: &str) -> Result<String, String> {
    let upper = name.to_uppercase();
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err("Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed. Must start with a letter ([a-z], [A-Z]) or underscores (_).".into());
    }
    if upper.starts_with("GITHUB_") {
        return Err("Secret names must not start with GITHUB_.".into());
    }
    Ok(upper)
}

// ---------------------------------------------------------------------------------------------------------
// Seed

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGitHub {
    #[serde(default)]
    pub tokens: Vec<SeedGhToken>,
    #[serde(default)]
    pub repositories: Vec<SeedRepo>,
    #[serde(default)]
    pub organizations: Vec<SeedGhOrg>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGhToken {
    /// The token value (generated in the fine-grained `github_pat_…` format when absent).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub organizations: Vec<String>,
    /// `write` (default) or `read`.
    #[serde(default = "write")]
    pub permission: String,
}

fn write() -> String {
    "write".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRepo {
    /// `owner/repo`.
    pub name: String,
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<SeedGhSecret>,
    /// Private (default) or public (matters for organization secrets with visibility `private`).
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGhSecret {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGhOrg {
    pub login: String,
    #[serde(default)]
    pub secrets: Vec<SeedGhOrgSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGhOrgSecret {
    pub name: String,
    pub value: String,
    #[serde(default = "all")]
    pub visibility: String,
    /// `owner/repo` names for visibility `selected`.
    #[serde(default)]
    pub selected_repositories: Vec<String>,
}

fn all() -> String {
    "all".into()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedGitHubToken {
    pub label: String,
    pub token: String,
}

fn new_secret(value: &str, now: OffsetDateTime) -> GhSecret {
    GhSecret { value: value.to_string(), created_at: now, updated_at: now, reads: 0, last_read_at: None }
}

pub fn apply_seed(ctx: &Ctx, state: &mut State, seed: &SeedGitHub) -> Result<Vec<MintedGitHubToken>, String> {
    let now = ctx.now();
    let gh = &mut state.consumers.github;
    for (i, r) in seed.repositories.iter().enumerate() {
        let at = |e: String| format!("repositories[{i}]: {e}");
        gh.ensure_repo(&r.name).map_err(at)?.private = !r.public;
        for e in &r.environments {
            gh.ensure_env(&r.name, e).map_err(at)?;
        }
        for s in &r.secrets {
            let name = check_secret_name(&s.name).map_err(at)?;
            ctx.secrets.record("consumer_value", &s.value);
            let map = match &s.environment {
                Some(e) => &mut gh.ensure_env(&r.name, e).map_err(at)?.secrets,
                None => &mut gh.ensure_repo(&r.name).map_err(at)?.secrets,
            };
            map.insert(name, new_secret(&s.value, now));
        }
    }
    for (i, o) in seed.organizations.iter().enumerate() {
        let at = |e: String| format!("organizations[{i}]: {e}");
        gh.ensure_org(&o.login).map_err(at)?;
        for s in &o.secrets {
            let name = check_secret_name(&s.name).map_err(at)?;
            if !["all", "private", "selected"].contains(&s.visibility.as_str()) {
                return Err(at(format!("visibility {:?} is not all, private or selected", s.visibility)));
            }
            let mut selected = BTreeSet::new();
            for r in &s.selected_repositories {
                selected.insert(gh.ensure_repo(r).map_err(at)?.id);
            }
            ctx.secrets.record("consumer_value", &s.value);
            gh.ensure_org(&o.login).map_err(at)?.secrets.insert(
                name,
                GhOrgSecret { secret: new_secret(&s.value, now), visibility: s.visibility.clone(), selected },
            );
        }
    }
    let mut minted = Vec::new();
    for (i, t) in seed.tokens.iter().enumerate() {
        let at = |e: String| format!("tokens[{i}]: {e}");
        let write = match t.permission.as_str() {
            "write" => true,
            "read" => false,
            other => return Err(at(format!("permission {other:?} is not read or write"))),
        };
        let value = match &t.token {
            Some(v) if v.len() >= 20 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => v.clone(),
            Some(_) => return Err(at("token must be at least 20 letters, digits or underscores".into())),
            None => format!(
                "github_pat_{}_{}",
                crate::tokens::random_token(22).replace(['-', '_'], "A"),
                crate::tokens::random_token(59).replace(['-', '_'], "b")
            ),
        };
        let hash = hex::encode(patsecret::hash(&value));
        if gh.tokens.iter().any(|x| x.hash == hash) {
            return Err(at("this token already exists".into()));
        }
        let mut repositories = BTreeSet::new();
        for r in &t.repositories {
            gh.ensure_repo(r).map_err(at)?;
            repositories.insert(r.to_lowercase());
        }
        let organizations: BTreeSet<String> = t.organizations.iter().map(|o| o.to_lowercase()).collect();
        if repositories.is_empty() && organizations.is_empty() {
            return Err(at("a token needs at least one repository or organization".into()));
        }
        ctx.secrets.record("github_token", &value);
        let label = t.label.clone().unwrap_or_else(|| format!("token-{}", gh.tokens.len() + 1));
        gh.tokens.push(GhToken { hash, label: label.clone(), repositories, organizations, write });
        minted.push(MintedGitHubToken { label, token: value });
    }
    Ok(minted)
}

// ---------------------------------------------------------------------------------------------------------
// HTTP

/// Serves the GitHub router over TLS (the Key Vault listener's certificate) until shutdown.
pub fn spawn_listener(
    listener: tokio::net::TcpListener,
    tls: crate::tls::EmulatorTls,
    app: Router,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
    tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let acceptor = acceptor.clone();
                        let app = app.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            let Ok(Ok(stream)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
                            crate::serve::serve_connection(stream, peer, app, shutdown).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
    })
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new().fallback(
        move |ext: Extension<ConnInfo>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let ctx = ctx.clone();
            async move { pipeline(&ctx, ext.0, method, uri, headers, body).await }
        },
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({ "message": message, "documentation_url": DOCS, "status": status.as_u16().to_string() });
    finish((status, body.to_string()).into_response())
}

fn finish(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert("x-github-api-version-selected", HeaderValue::from_static("2022-11-28"));
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string().to_uppercase()[..20]) {
        h.insert("x-github-request-id", v);
    }
    r
}

fn status_error(status: u16) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let msg = match status {
        403 => "Resource not accessible by personal access token",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Validation Failed",
        429 => "API rate limit exceeded",
        500 => "Server Error",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    error(s, msg)
}

async fn pipeline(ctx: &Ctx, conn: ConnInfo, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = std::time::Instant::now();
    crate::context::Stats::bump(&ctx.stats.github);
    let latency = ctx.faults.latency(Service::Github);
    if !latency.is_zero() {
        crate::delay::until(arrived + latency).await;
    }
    let mut lose = false;
    let queued = ctx.faults.take(Service::Github, method.as_str(), uri.path());
    if queued.is_some() {
        crate::context::Stats::bump(&ctx.stats.faults_injected);
    }
    match queued {
        Some(FaultKind::Status { status }) => return status_error(status),
        Some(FaultKind::Throttle { retry_after_secs }) => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
        Some(FaultKind::LoseResponse) => lose = true,
        None => {}
    }
    if let Some(status) = ctx.faults.roll_failure(Service::Github) {
        crate::context::Stats::bump(&ctx.stats.faults_injected);
        return status_error(status);
    }
    let r = handle(ctx, &method, uri.path(), &headers, &body);
    tracing::debug!(method = %method, path = %uri.path(), status = r.status().as_u16(), "github request");
    if lose {
        crate::context::Stats::bump(&ctx.stats.responses_lost);
        conn.kill.notify_one();
        std::future::pending::<()>().await;
    }
    r
}

enum Scope {
    Repo(String),
    Env(String, String),
    Org(String),
}

impl Scope {
    fn target(&self) -> String {
        match self {
            Scope::Repo(r) => r.clone(),
            Scope::Env(r, e) => format!("{r}/{}", e.to_lowercase()),
            Scope::Org(o) => format!("org:{o}"),
        }
    }
}

fn handle(ctx: &Ctx, method: &Method, path: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(v) = headers.get("x-github-api-version").and_then(|v| v.to_str().ok())
        && !API_VERSIONS.contains(&v.trim())
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Unsupported 'X-GitHub-Api-Version' header value: '{v}'. Supported versions: {}.",
                API_VERSIONS.join(", ")
            ),
        );
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")).then(|| rest.trim().to_string())
    });
    let Some(token) = token else { return error(StatusCode::UNAUTHORIZED, "Requires authentication") };
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| s.to_string()).collect();
    let seg = |i: usize| segs.get(i).map(String::as_str).unwrap_or_default();
    let mut state = ctx.state();
    let Some(tok) = state.consumers.github.token(&token).cloned() else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    // (scope, rest after `secrets`)
    let (scope, rest): (Scope, &[String]) = if seg(0) == "repos" && segs.len() == 3 && method == Method::GET {
        return repo_info(&state, &tok, &format!("{}/{}", seg(1), seg(2)));
    } else if seg(0) == "repos" && seg(3) == "actions" && seg(4) == "secrets" {
        (Scope::Repo(format!("{}/{}", seg(1), seg(2)).to_lowercase()), &segs[5..])
    } else if seg(0) == "repos" && seg(3) == "environments" && seg(5) == "secrets" {
        (Scope::Env(format!("{}/{}", seg(1), seg(2)).to_lowercase(), seg(4).to_string()), &segs[6..])
    } else if seg(0) == "orgs" && seg(2) == "actions" && seg(3) == "secrets" {
        (Scope::Org(seg(1).to_lowercase()), &segs[4..])
    } else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    // Access: a token sees only its repositories and organizations (GitHub answers 404 for the others).
    let visible = match &scope {
        Scope::Repo(r) | Scope::Env(r, _) => {
            let owner = r.split('/').next().unwrap_or_default();
            (tok.repositories.contains(r) || tok.organizations.contains(owner))
                && state.consumers.github.repos.get(r).is_some_and(|x| !x.deleted)
        }
        Scope::Org(o) => tok.organizations.contains(o) && state.consumers.github.orgs.contains_key(o),
    };
    if !visible {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if let Some(status) = state.consumers.take_fault(ConsumerApi::GithubSecrets, &scope.target(), method.as_str()) {
        return status_error(status);
    }
    if let Scope::Env(r, e) = &scope
        && !state.consumers.github.repos.get(r).is_some_and(|x| x.environments.contains_key(&e.to_lowercase()))
    {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let now = ctx.now();
    let gh = &mut state.consumers.github;
    match (rest.len(), method) {
        (0, &Method::GET) => list(gh, &scope),
        (1, &Method::GET) if rest[0] == "public-key" => {
            let k = key_of(gh, &scope);
            finish((StatusCode::OK, json!({ "key_id": k.key_id, "key": k.public_b64() }).to_string()).into_response())
        }
        (1, &Method::GET) => get(gh, &scope, &rest[0]),
        (1, &Method::PUT) | (1, &Method::DELETE) if !tok.write => {
            error(StatusCode::FORBIDDEN, "Resource not accessible by personal access token")
        }
        (1, &Method::PUT) => {
            let r = put(ctx, gh, &scope, &rest[0], body, now);
            if r.status().is_success() {
                ctx.changed();
            }
            r
        }
        (1, &Method::DELETE) => {
            let name = rest[0].to_uppercase();
            let removed = match &scope {
                Scope::Repo(r) => gh.repos.get_mut(r).and_then(|x| x.secrets.remove(&name)).is_some(),
                Scope::Env(r, e) => gh
                    .repos
                    .get_mut(r)
                    .and_then(|x| x.environments.get_mut(&e.to_lowercase()))
                    .and_then(|x| x.secrets.remove(&name))
                    .is_some(),
                Scope::Org(o) => gh.orgs.get_mut(o).and_then(|x| x.secrets.remove(&name)).is_some(),
            };
            if removed {
                ctx.changed();
                finish(StatusCode::NO_CONTENT.into_response())
            } else {
                error(StatusCode::NOT_FOUND, "Not Found")
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn repo_info(state: &State, tok: &GhToken, full: &str) -> Response {
    let key = full.to_lowercase();
    let owner = key.split('/').next().unwrap_or_default();
    match state.consumers.github.repos.get(&key).filter(|r| !r.deleted) {
        Some(r) if tok.repositories.contains(&key) || tok.organizations.contains(owner) => {
            let (o, n) = r.full_name.split_once('/').unwrap_or((&r.full_name, ""));
            let body = json!({
                "id": r.id,
                "name": n,
                "full_name": r.full_name,
                "private": r.private,
                "owner": { "login": o },
            });
            finish((StatusCode::OK, body.to_string()).into_response())
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn key_of<'a>(gh: &'a GitHubState, scope: &Scope) -> &'a GhKey {
    match scope {
        Scope::Repo(r) => &gh.repos[r].key,
        Scope::Env(r, e) => &gh.repos[r].environments[&e.to_lowercase()].key,
        Scope::Org(o) => &gh.orgs[o].key,
    }
}

fn ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn secret_json(name: &str, s: &GhSecret) -> Value {
    json!({ "name": name, "created_at": ts(s.created_at), "updated_at": ts(s.updated_at) })
}

fn org_secret_json(login: &str, name: &str, s: &GhOrgSecret) -> Value {
    let mut v = secret_json(name, &s.secret);
    v["visibility"] = json!(s.visibility);
    if s.visibility == "selected" {
        v["selected_repositories_url"] =
            json!(format!("https://api.github.com/orgs/{login}/actions/secrets/{name}/repositories"));
    }
    v
}

fn list(gh: &GitHubState, scope: &Scope) -> Response {
    let secrets: Vec<Value> = match scope {
        Scope::Repo(r) => gh.repos[r].secrets.iter().map(|(n, s)| secret_json(n, s)).collect(),
        Scope::Env(r, e) => {
            gh.repos[r].environments[&e.to_lowercase()].secrets.iter().map(|(n, s)| secret_json(n, s)).collect()
        }
        Scope::Org(o) => gh.orgs[o].secrets.iter().map(|(n, s)| org_secret_json(&gh.orgs[o].login, n, s)).collect(),
    };
    finish((StatusCode::OK, json!({ "total_count": secrets.len(), "secrets": secrets }).to_string()).into_response())
}

fn get(gh: &GitHubState, scope: &Scope, name: &str) -> Response {
    let name = name.to_uppercase();
    let v = match scope {
        Scope::Repo(r) => gh.repos[r].secrets.get(&name).map(|s| secret_json(&name, s)),
        Scope::Env(r, e) => {
            gh.repos[r].environments[&e.to_lowercase()].secrets.get(&name).map(|s| secret_json(&name, s))
        }
        Scope::Org(o) => gh.orgs[o].secrets.get(&name).map(|s| org_secret_json(&gh.orgs[o].login, &name, s)),
    };
    match v {
        Some(v) => finish((StatusCode::OK, v.to_string()).into_response()),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn unprocessable(msg: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

#[derive(Deserialize)]
struct PutBody {
    encrypted_value: Option<String>,
    key_id: Option<String>,
    visibility: Option<String>,
    selected_repository_ids: Option<Vec<Value>>,
}

fn put(ctx: &Ctx, gh: &mut GitHubState, scope: &Scope, raw_name: &str, body: &Bytes, now: OffsetDateTime) -> Response {
    let name = match check_secret_name(raw_name) {
        Ok(n) => n,
        Err(m) => return unprocessable(&m),
    };
    let Ok(b) = serde_json::from_slice::<PutBody>(body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let (Some(enc), Some(key_id)) = (b.encrypted_value, b.key_id) else {
        return unprocessable("Invalid request.\n\n\"encrypted_value\" and \"key_id\" are required.");
    };
    let key = key_of(gh, scope).clone();
    if key_id != key.key_id {
        return unprocessable("Bad request - key_id does not match the current public key; get the public key again.");
    }
    let Some(plain) = B64.decode(enc.trim()).ok().and_then(|sealed| key.open(&sealed)) else {
        return unprocessable("Bad request - encrypted_value could not be decrypted with the public key of key_id.");
    };
    let Ok(value) = String::from_utf8(plain) else {
        return unprocessable("Bad request - the decrypted secret is not UTF-8 text.");
    };
    if value.len() > MAX_SECRET_BYTES {
        return unprocessable("Secret values are limited to 48 KB.");
    }
    ctx.secrets.record("consumer_value", &value);
    let store = |map: &mut BTreeMap<String, GhSecret>| -> bool {
        match map.get_mut(&name) {
            Some(s) => {
                s.value = value.clone();
                s.updated_at = now;
                false
            }
            None => {
                map.insert(name.clone(), new_secret(&value, now));
                true
            }
        }
    };
    let created = match scope {
        Scope::Repo(r) => match gh.repos.get_mut(r) {
            Some(x) => store(&mut x.secrets),
            None => return error(StatusCode::NOT_FOUND, "Not Found"),
        },
        Scope::Env(r, e) => match gh.repos.get_mut(r).and_then(|x| x.environments.get_mut(&e.to_lowercase())) {
            Some(x) => store(&mut x.secrets),
            None => return error(StatusCode::NOT_FOUND, "Not Found"),
        },
        Scope::Org(o) => {
            let visibility = match b.visibility.as_deref() {
                Some(v @ ("all" | "private" | "selected")) => v.to_string(),
                _ => return unprocessable("Invalid request.\n\n\"visibility\" must be one of all, private, selected."),
            };
            let mut selected = BTreeSet::new();
            if visibility == "selected" {
                for v in b.selected_repository_ids.unwrap_or_default() {
                    match v.as_u64() {
                        Some(id) => {
                            selected.insert(id);
                        }
                        None => {
                            return unprocessable("Invalid request.\n\n\"selected_repository_ids\" must be integers.");
                        }
                    }
                }
            }
            let Some(org) = gh.orgs.get_mut(o) else { return error(StatusCode::NOT_FOUND, "Not Found") };
            match org.secrets.get_mut(&name) {
                Some(s) => {
                    s.secret.value = value.clone();
                    s.secret.updated_at = now;
                    s.visibility = visibility;
                    s.selected = selected;
                    false
                }
                None => {
                    org.secrets
                        .insert(name.clone(), GhOrgSecret { secret: new_secret(&value, now), visibility, selected });
                    true
                }
            }
        }
    };
    tracing::info!(scope = %scope.target(), created, "github secret written");
    if created {
        finish((StatusCode::CREATED, "{}").into_response())
    } else {
        finish(StatusCode::NO_CONTENT.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_boxes_open_only_with_their_key() {
        let mut n = 0;
        let k = GhKey::generate(&mut n);
        let other = GhKey::generate(&mut n);
        assert_ne!(k.key_id, other.key_id);
        let pk_raw = B64.decode(k.public_b64()).unwrap();
        let pk = crypto_box::PublicKey::from_slice(&pk_raw).unwrap();
        let sealed = pk.seal(&mut crypto_box::aead::OsRng, b"s3cret").unwrap();
        assert_eq!(k.open(&sealed).unwrap(), b"s3cret");
        assert!(other.open(&sealed).is_none());
    }

    #[test]
    fn secret_names_follow_github_rules() {
        assert_eq!(check_secret_name("azure_pat").unwrap(), "AZURE_PAT");
        assert!(check_secret_name("1PAT").is_err());
        assert!(check_secret_name("github_token").is_err());
        assert!(check_secret_name("my pat").is_err());
    }

    #[test]
    fn workflows_see_environment_then_repository_then_organization_secrets() {
        let mut gh = GitHubState::default();
        let now = OffsetDateTime::now_utc();
        gh.ensure_env("octo/app", "prod").unwrap().secrets.insert("PAT".into(), new_secret("env", now));
        gh.ensure_repo("octo/app").unwrap().secrets.insert("PAT".into(), new_secret("repo", now));
        let org = gh.ensure_org("octo").unwrap();
        org.secrets.insert(
            "ORG_PAT".into(),
            GhOrgSecret { secret: new_secret("org", now), visibility: "selected".into(), selected: BTreeSet::new() },
        );
        assert_eq!(gh.resolve_for_workflow("octo/app", Some("prod"), "pat").unwrap().1.value, "env");
        assert_eq!(gh.resolve_for_workflow("octo/app", None, "PAT").unwrap().0, "repository");
        assert!(gh.resolve_for_workflow("octo/app", None, "ORG_PAT").is_none(), "not selected");
        let id = gh.repos["octo/app"].id;
        gh.orgs.get_mut("octo").unwrap().secrets.get_mut("ORG_PAT").unwrap().selected.insert(id);
        assert_eq!(gh.resolve_for_workflow("octo/app", None, "ORG_PAT").unwrap().0, "organization");
    }
}
