//! The emulated Microsoft Entra token service, served over HTTPS with the emulator's CA:
//! `/{tenant}/oauth2/v2.0/devicecode` and `/token` — device-code and refresh-token grants for delegated user
//! tokens (each refresh returns a new refresh token; the old one stays valid until it expires after
//! inactivity on the virtual clock or is revoked, as in Entra — strict single use is an option;
//! Conditional Access can demand an interactive sign-in), and the client-credentials grant for
//! applications (service principals) with `<resource>/.default`; OpenID discovery
//! (`/{tenant}/v2.0/.well-known/openid-configuration`), the signing keys (`/{tenant}/discovery/v2.0/keys`)
//! and instance discovery (`/common/discovery/instance`). Access and ID tokens are RS256 JWTs
//! ([`crate::tokens`]); user token responses carry `client_info` when asked for. Errors use Entra's JSON
//! shape with AADSTS codes.

use crate::context::{Ctx, DeviceCode, DeviceStatus, secs};
use crate::http::ApiRequest;
use crate::patsecret;
use crate::state::{AppKind, RefreshRecord, RefreshStatus, State, User};
use crate::tokens::{DEVOPS_RESOURCE, Extra, Grant, KEYVAULT_RESOURCE, Subject, random_token};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";
const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// An Entra error response.
#[derive(Debug, Clone)]
pub struct EntraError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl EntraError {
    pub fn new(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error, code, description: description.into() }
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let trace = Uuid::new_v4();
        let corr = Uuid::new_v4();
        let ts = crate::wire::format_time(OffsetDateTime::now_utc());
        let body = json!({
            "error": self.error,
            "error_description": format!("AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}", self.code, self.description),
            "error_codes": [self.code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, Json(body)).into_response()
    }
}

/// The requested resource and scopes (without the resource prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeRequest {
    pub resource: String,
    pub scopes: Vec<String>,
    pub offline: bool,
    /// `openid` was asked for: an `id_token` comes with the user's tokens.
    pub openid: bool,
}

pub fn parse_scopes(raw: &str) -> Result<ScopeRequest, EntraError> {
    let mut resource: Option<String> = None;
    let mut scopes = Vec::new();
    let mut offline = false;
    let mut openid = false;
    for item in raw.split_whitespace() {
        if OIDC_SCOPES.contains(&item) {
            offline |= item == "offline_access";
            openid |= item == "openid";
            continue;
        }
        let Some((res, scope)) = item.rsplit_once('/') else {
            return Err(EntraError::new(
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope '{item}' does not exist."
                ),
            ));
        };
        let res = res.trim_end_matches('/').to_string();
        let canonical = if res.eq_ignore_ascii_case(DEVOPS_RESOURCE)
            || res.eq_ignore_ascii_case("api://499b84ac-1321-427f-aa17-267ca6975798")
        {
            DEVOPS_RESOURCE.to_string()
        } else if res.eq_ignore_ascii_case(KEYVAULT_RESOURCE) {
            KEYVAULT_RESOURCE.to_string()
        } else {
            return Err(EntraError::new(
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {res} was not found in the tenant. This can happen if the application has not been installed by the administrator of the tenant."
                ),
            ));
        };
        if resource.as_deref().is_some_and(|r| r != canonical) {
            return Err(EntraError::new(
                "invalid_scope",
                28000,
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope is not valid.",
            ));
        }
        let known = scope == ".default"
            || (canonical == DEVOPS_RESOURCE && (scope == "user_impersonation" || scope.starts_with("vso.")))
            || (canonical == KEYVAULT_RESOURCE && scope == "user_impersonation");
        if !known {
            return Err(EntraError::new(
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope '{item}' does not exist."
                ),
            ));
        }
        resource = Some(canonical);
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    let Some(resource) = resource else {
        return Err(EntraError::new(
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid: no resource scope was requested.",
        ));
    };
    Ok(ScopeRequest { resource, scopes, offline, openid })
}

/// Tokens handed to a client.
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// OpenID Connect ID token (when `openid` was requested): who signed in.
    pub id_token: Option<String>,
    pub expires_in: u64,
    pub resource: String,
    pub scopes: Vec<String>,
    /// base64url `{"uid": oid, "utid": tid}` (user tokens), returned when the request has `client_info=1`.
    pub client_info: Option<String>,
}

impl TokenSet {
    pub fn to_json(&self) -> Value {
        let scope = self.scopes.iter().map(|s| format!("{}/{s}", self.resource)).collect::<Vec<_>>().join(" ");
        let mut v = json!({
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": self.access_token,
        });
        if let Some(r) = &self.refresh_token {
            v["refresh_token"] = json!(r);
        }
        if let Some(t) = &self.id_token {
            v["id_token"] = json!(t);
        }
        v
    }

    /// The response body, with `client_info` when the client asked for it (`client_info=1`).
    pub fn to_json_for(&self, want_client_info: bool) -> Value {
        let mut v = self.to_json();
        if let (true, Some(ci)) = (want_client_info, &self.client_info) {
            v["client_info"] = json!(ci);
        }
        v
    }
}

/// Issues an access token (and a refresh token when `offline`) for a user. `base` is the Entra base URL the
/// client addressed (`https://login.microsoftonline.com` through the proxy): the ID token's issuer names it,
/// as the discovery document does.
pub fn issue_user_tokens(
    ctx: &Ctx,
    state: &mut State,
    user: &User,
    client_id: &str,
    req: &ScopeRequest,
    lifetime_secs: Option<u64>,
    base: &str,
) -> TokenSet {
    let lt = ctx.lifetimes();
    let access_secs = lifetime_secs.unwrap_or(lt.access_token_secs);
    let now = ctx.now();
    let access_token = ctx.tokens.issue_with(
        Grant {
            subject: Subject::User { upn: user.upn.clone() },
            resource: req.resource.clone(),
            scopes: req.scopes.clone(),
            expires_at: now + secs(access_secs),
        },
        Extra { oid: Some(user.id), name: Some(user.display_name.clone()), client_id: Some(client_id.to_owned()) },
    );
    ctx.secrets.record("access_token", &access_token);
    ctx.note_issued();
    let refresh_token = req.offline.then(|| {
        // Bounded: forget refresh tokens that expired more than a week ago.
        let horizon = now - time::Duration::days(7);
        state.refresh_tokens.retain(|_, r| r.expires_at > horizon);
        let rt = format!("1.AQ{}", random_token(180));
        ctx.secrets.record("refresh_token", &rt);
        state.refresh_tokens.insert(
            hex::encode(patsecret::hash(&rt)),
            RefreshRecord {
                user: user.id,
                client_id: client_id.to_lowercase(),
                resource: req.resource.clone(),
                scopes: req.scopes.clone(),
                expires_at: now + secs(lt.refresh_token_secs),
                status: RefreshStatus::Active,
            },
        );
        ctx.changed();
        rt
    });
    let id_token = req.openid.then(|| id_token(ctx, base, state.tenant_id, user, client_id, now));
    let client_info = {
        use base64::Engine as _;
        let ci = json!({ "uid": user.id.to_string(), "utid": state.tenant_id.to_string() });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ci.to_string())
    };
    TokenSet {
        access_token,
        refresh_token,
        id_token,
        expires_in: access_secs,
        resource: req.resource.clone(),
        scopes: req.scopes.clone(),
        client_info: Some(client_info),
    }
}

/// An ID token with the v2.0 claims Entra puts in one (`aud`, `iss`, `tid`, `oid`, `sub`,
/// `preferred_username`, `name`, times), signed with the key published at `jwks_uri`. `iss` is the
/// v2.0 issuer of the discovery document the client read (`{base}/{tenant}/v2.0`).
fn id_token(
    ctx: &Ctx,
    base: &str,
    tenant: uuid::Uuid,
    user: &User,
    client_id: &str,
    now: time::OffsetDateTime,
) -> String {
    let t = now.unix_timestamp();
    let claims = json!({
        "aud": client_id.to_lowercase(),
        "iss": format!("{}/{tenant}/v2.0", base.trim_end_matches('/')),
        "iat": t, "nbf": t, "exp": t + 3600,
        "tid": tenant.to_string(),
        "oid": user.id.to_string(),
        "sub": user.id.simple().to_string(),
        "preferred_username": user.upn,
        "name": user.display_name,
        "ver": "2.0",
    });
    ctx.tokens.sign(&claims)
}

/// Issues an application token (client credentials, or a managed identity through the control API).
pub fn issue_app_token(ctx: &Ctx, client_id: &str, resource: &str, lifetime_secs: Option<u64>) -> TokenSet {
    let secs_ = lifetime_secs.unwrap_or(ctx.lifetimes().access_token_secs);
    let access_token = ctx.tokens.issue(Grant {
        subject: Subject::App { client_id: client_id.to_lowercase() },
        resource: resource.to_string(),
        scopes: vec![".default".into()],
        expires_at: ctx.now() + secs(secs_),
    });
    ctx.secrets.record("access_token", &access_token);
    ctx.note_issued();
    TokenSet {
        access_token,
        refresh_token: None,
        id_token: None,
        expires_in: secs_,
        resource: resource.to_string(),
        scopes: vec![".default".into()],
        client_info: None,
    }
}

pub fn dispatch(ctx: &Ctx, req: &ApiRequest) -> Response {
    let s = &req.segments;
    let tenant = s.first().map(String::as_str).unwrap_or_default();
    let known_tenant = {
        let st = ctx.state();
        tenant.eq_ignore_ascii_case(&st.tenant_id.to_string())
            || ["organizations", "common"].iter().any(|t| t.eq_ignore_ascii_case(tenant))
    };
    let get_ = req.method == axum::http::Method::GET;
    if get_
        && s.len() == 4
        && req.seg_is(1, "v2.0")
        && req.seg_is(2, ".well-known")
        && req.seg_is(3, "openid-configuration")
    {
        if !known_tenant {
            return unknown_tenant(tenant);
        }
        return discovery(ctx, req, tenant);
    }
    if get_ && s.len() == 4 && req.seg_is(1, "discovery") && req.seg_is(2, "v2.0") && req.seg_is(3, "keys")
        || get_ && s.len() == 3 && req.seg_is(1, "discovery") && req.seg_is(2, "keys")
    {
        return Json(ctx.tokens.jwks()).into_response();
    }
    if get_ && s.len() == 3 && req.seg_is(0, "common") && req.seg_is(1, "discovery") && req.seg_is(2, "instance") {
        return instance_discovery(req);
    }
    if s.len() == 4 && req.seg_is(1, "oauth2") && req.seg_is(2, "v2.0") && req.seg_is(3, "authorize") {
        return EntraError::new(
            "invalid_request",
            900144,
            "patrol-emulator does not emulate interactive (browser) sign-in; use the device code flow or client credentials.",
        )
        .into_response();
    }
    if s.len() != 4 || !req.seg_is(1, "oauth2") || !req.seg_is(2, "v2.0") || req.method != axum::http::Method::POST {
        return EntraError {
            status: StatusCode::NOT_FOUND,
            ..EntraError::new("invalid_request", 90027, format!("The endpoint {} does not exist.", req.path))
        }
        .into_response();
    }
    if !known_tenant {
        return unknown_tenant(tenant);
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let want_client_info = get("client_info") == Some("1");
    let r = if req.seg_is(3, "devicecode") {
        device_code(ctx, &get)
    } else if req.seg_is(3, "token") {
        match get("grant_type") {
            Some("urn:ietf:params:oauth:grant-type:device_code") => {
                device_token(ctx, &get, want_client_info, &base_url(ctx, req))
            }
            Some("refresh_token") => refresh(ctx, &get, want_client_info, &base_url(ctx, req)),
            Some("client_credentials") => client_credentials(ctx, &get),
            Some(other) => Err(EntraError::new(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            )),
            None => Err(missing("grant_type")),
        }
    } else {
        Err(EntraError {
            status: StatusCode::NOT_FOUND,
            ..EntraError::new("invalid_request", 90027, "Unknown endpoint.")
        })
    };
    match r {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn missing(name: &str) -> EntraError {
    EntraError::new(
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn client_id<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<&'a str, EntraError> {
    let id = get("client_id").ok_or_else(|| missing("client_id"))?;
    if Uuid::parse_str(id).is_err() {
        return Err(EntraError::new(
            "unauthorized_client",
            700016,
            format!("Application with identifier '{id}' was not found in the directory."),
        ));
    }
    Ok(id)
}

fn device_code<'a>(ctx: &Ctx, get: &impl Fn(&str) -> Option<&'a str>) -> Result<Value, EntraError> {
    let client = client_id(get)?;
    let scope = parse_scopes(get("scope").ok_or_else(|| missing("scope"))?)?;
    let lt = ctx.lifetimes();
    let device_code = random_token(96);
    ctx.secrets.record("device_code", &device_code);
    const ALPHA: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let user_code: String = (0..9).map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char).collect();
    let mut codes = ctx.device_codes.lock().unwrap_or_else(|p| p.into_inner());
    let now = ctx.now();
    codes.retain(|_, d| d.expires_at > now); // bounded: expired codes are forgotten
    codes.insert(
        device_code.clone(),
        DeviceCode {
            user_code: user_code.clone(),
            client_id: client.to_lowercase(),
            resource: scope.resource,
            scopes: scope.scopes,
            offline: scope.offline,
            openid: scope.openid,
            expires_at: now + secs(lt.device_code_secs),
            status: DeviceStatus::Pending,
        },
    );
    drop(codes);
    Ok(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": VERIFICATION_URI,
        "expires_in": lt.device_code_secs,
        "interval": 5,
        "message": format!("To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code {user_code} to authenticate."),
    }))
}

fn device_token<'a>(
    ctx: &Ctx,
    get: &impl Fn(&str) -> Option<&'a str>,
    want_client_info: bool,
    base: &str,
) -> Result<Value, EntraError> {
    let client = client_id(get)?;
    let code = get("device_code").ok_or_else(|| missing("device_code"))?;
    let now = ctx.now();
    let (user_id, scope) = {
        let mut codes = ctx.device_codes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(dc) = codes.get_mut(code).filter(|d| d.client_id.eq_ignore_ascii_case(client)) else {
            return Err(EntraError::new("invalid_grant", 70000, "Provided grant is invalid or malformed."));
        };
        if dc.expires_at <= now && dc.status != DeviceStatus::Redeemed {
            return Err(EntraError::new(
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            ));
        }
        match dc.status.clone() {
            DeviceStatus::Pending => {
                return Err(EntraError::new(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ));
            }
            DeviceStatus::Denied => {
                return Err(EntraError::new("authorization_declined", 70000, "The user declined the sign-in request."));
            }
            DeviceStatus::Redeemed => {
                return Err(EntraError::new(
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed: the device code was already redeemed.",
                ));
            }
            DeviceStatus::Approved(u) => {
                dc.status = DeviceStatus::Redeemed;
                (
                    u,
                    ScopeRequest {
                        resource: dc.resource.clone(),
                        scopes: dc.scopes.clone(),
                        offline: dc.offline,
                        openid: dc.openid,
                    },
                )
            }
        }
    };
    let mut state = ctx.state();
    let user =
        state.users.get(&user_id).cloned().ok_or_else(|| {
            EntraError::new("invalid_grant", 50034, "The user account does not exist in the directory.")
        })?;
    Ok(issue_user_tokens(ctx, &mut state, &user, client, &scope, None, base).to_json_for(want_client_info))
}

fn refresh<'a>(
    ctx: &Ctx,
    get: &impl Fn(&str) -> Option<&'a str>,
    want_client_info: bool,
    base: &str,
) -> Result<Value, EntraError> {
    let client = client_id(get)?;
    let rt = get("refresh_token").ok_or_else(|| missing("refresh_token"))?;
    let key = hex::encode(patsecret::hash(rt));
    let now = ctx.now();
    let mut state = ctx.state();
    let Some(rec) = state.refresh_tokens.get(&key).cloned() else {
        return Err(EntraError::new("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."));
    };
    if !rec.client_id.eq_ignore_ascii_case(client) {
        return Err(EntraError::new(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed: the refresh token was issued to a different client.",
        ));
    }
    match rec.status {
        RefreshStatus::Revoked => {
            return Err(EntraError::new(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
            ));
        }
        RefreshStatus::Redeemed if ctx.lifetimes().strict_refresh_tokens => {
            return Err(EntraError::new(
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed: the refresh token was already redeemed (use the newest refresh token).",
            ));
        }
        RefreshStatus::Active | RefreshStatus::Redeemed => {}
    }
    if rec.expires_at <= now {
        return Err(EntraError::new(
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was inactive for longer than the allowed lifetime.",
        ));
    }
    let Some(user) = state.users.get(&rec.user).cloned() else {
        return Err(EntraError::new("invalid_grant", 50034, "The user account does not exist in the directory."));
    };
    if user.require_interaction {
        return Err(EntraError::new(
            "interaction_required",
            50076,
            format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{}'.",
                rec.resource
            ),
        ));
    }
    let scope = match get("scope") {
        Some(raw) => {
            let mut s = parse_scopes(raw)?;
            s.offline = true;
            s
        }
        None => {
            ScopeRequest { resource: rec.resource.clone(), scopes: rec.scopes.clone(), offline: true, openid: false }
        }
    };
    // Entra keeps a used refresh token valid (until it expires or is revoked); its inactivity window starts
    // again. Strict mode marks it redeemed instead.
    let inactivity = secs(ctx.lifetimes().refresh_token_secs);
    if let Some(r) = state.refresh_tokens.get_mut(&key) {
        r.status = RefreshStatus::Redeemed;
        r.expires_at = r.expires_at.max(now + inactivity);
    }
    Ok(issue_user_tokens(ctx, &mut state, &user, client, &scope, None, base).to_json_for(want_client_info))
}

fn client_credentials<'a>(ctx: &Ctx, get: &impl Fn(&str) -> Option<&'a str>) -> Result<Value, EntraError> {
    let client = client_id(get)?;
    let scope_raw = get("scope").ok_or_else(|| missing("scope"))?;
    let scope = parse_scopes(scope_raw)?;
    if scope.scopes != [".default"] {
        return Err(EntraError::new(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope_raw} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let state = ctx.state();
    let Some(app) = state.apps.get(&client.to_lowercase()) else {
        return Err(EntraError::new(
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client}' was not found in the directory '{}'.", state.tenant_id),
        ));
    };
    let secret = get("client_secret").ok_or_else(|| EntraError {
        status: StatusCode::UNAUTHORIZED,
        ..EntraError::new(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    })?;
    let ok = app.kind == AppKind::ServicePrincipal
        && app.secret_hash.as_deref() == Some(hex::encode(patsecret::hash(secret)).as_str());
    if !ok {
        return Err(EntraError {
            status: StatusCode::UNAUTHORIZED,
            ..EntraError::new(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            )
        });
    }
    drop(state);
    Ok(issue_app_token(ctx, client, &scope.resource, None).to_json())
}

fn unknown_tenant(tenant: &str) -> Response {
    EntraError::new(
        "invalid_tenant",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
    .into_response()
}

/// `https://{host}` of the Entra listener as the client addressed it.
fn base_url(ctx: &Ctx, req: &ApiRequest) -> String {
    match req.header("host") {
        Some(h) if !h.is_empty() && !h.contains(['/', ' ', '"']) => {
            let scheme = ctx.tokens.authority().split_once("://").map(|(s, _)| s.to_owned());
            format!("{}://{h}", scheme.as_deref().unwrap_or("https"))
        }
        _ => ctx.tokens.authority(),
    }
}

/// The OpenID Connect discovery document, with every field Entra's v2.0 document has that a client reads.
fn discovery(ctx: &Ctx, req: &ApiRequest, tenant: &str) -> Response {
    let base = format!("{}/{tenant}", base_url(ctx, req));
    let tenant_id = ctx.state().tenant_id.to_string();
    // Entra names the tenant in `issuer` only for a tenant-specific authority.
    let issuer_tenant = if tenant.eq_ignore_ascii_case(&tenant_id) { tenant_id.as_str() } else { "{tenantid}" };
    Json(json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{}/{issuer_tenant}/v2.0", base_url(ctx, req)),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token", "client_credentials"],
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

/// Instance discovery (`GET /common/discovery/instance?authorization_endpoint=…&api-version=1.1`): the
/// emulator vouches for its own host only, as Entra vouches for the Microsoft clouds.
fn instance_discovery(req: &ApiRequest) -> Response {
    let host = req.header("host").unwrap_or_default().to_owned();
    let Some(endpoint) = req.query("authorization_endpoint").and_then(|e| url::Url::parse(e).ok()) else {
        return EntraError::new(
            "invalid_request",
            90014,
            "The request body must contain the following parameter: 'authorization_endpoint'.",
        )
        .into_response();
    };
    // MSAL names the authority's host without its port; Entra compares host names.
    let own_host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).trim_matches(['[', ']']);
    let asked = endpoint.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let tenant = endpoint.path_segments().and_then(|mut s| s.next()).unwrap_or("common").to_owned();
    if endpoint.scheme() != "https" || !asked.eq_ignore_ascii_case(own_host) {
        return EntraError::new("invalid_instance", 50049, "Unknown or invalid instance.").into_response();
    }
    Json(json!({
        "tenant_discovery_endpoint": format!("https://{host}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": req.query("api-version").unwrap_or("1.1"),
        "metadata": [{ "preferred_network": host, "preferred_cache": host, "aliases": [host] }],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devops_scopes_and_offline_access() {
        let s = parse_scopes(&format!(
            "{DEVOPS_RESOURCE}/vso.pats {DEVOPS_RESOURCE}/vso.pats_manage offline_access openid"
        ))
        .unwrap();
        assert_eq!(s.resource, DEVOPS_RESOURCE);
        assert_eq!(s.scopes, vec!["vso.pats", "vso.pats_manage"]);
        assert!(s.offline);
        let kv = parse_scopes("https://vault.azure.net/.default").unwrap();
        assert_eq!((kv.resource.as_str(), kv.offline), (KEYVAULT_RESOURCE, false));
    }

    #[test]
    fn refuses_mixed_unknown_and_missing_resources() {
        assert_eq!(
            parse_scopes(&format!("{DEVOPS_RESOURCE}/vso.pats https://vault.azure.net/.default")).unwrap_err().code,
            28000
        );
        assert_eq!(parse_scopes("https://graph.example/.default").unwrap_err().code, 500011);
        assert_eq!(parse_scopes("openid offline_access").unwrap_err().code, 70011);
        assert_eq!(parse_scopes(&format!("{DEVOPS_RESOURCE}/nonsense")).unwrap_err().code, 70011);
    }
}
