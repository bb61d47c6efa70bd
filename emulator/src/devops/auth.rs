//! Who is calling Azure DevOps, and whether they may. The PAT Lifecycle API accepts only delegated
//! Entra bearer tokens for the Azure DevOps resource carrying `vso.pats` (read) or `vso.pats_manage`
//! (write); PATs, Basic auth and application (service principal / managed identity) tokens are
//! refused there. Token Admin and the audit log accept an administrator's delegated token, or an app-only
//! token of a service principal / managed identity added to the organization with the right. Ordinary
//! APIs also accept a PAT over Basic auth, so consumers of a PAT can be simulated.
//! Unauthenticated or refused requests get the 203 sign-in page unless they send
//! `X-TFS-FedAuthRedirect: Suppress`, then 401.

use super::errors::{VssError, sign_in_page};
use crate::audit_log::Actor;
use crate::context::Ctx;
use crate::http::ApiRequest;
use crate::patsecret;
use crate::state::{PatRecord, PatStatus, State, User};
use crate::tokens::{DEVOPS_RESOURCE, Grant, Subject};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// A credential as presented, before any permission check.
pub enum Credential {
    None,
    Bearer(String),
    /// The password part of Basic auth (a PAT, or anything else).
    Basic(String),
    Malformed,
}

pub fn credential(req: &ApiRequest) -> Credential {
    let Some(v) = req.header("authorization") else { return Credential::None };
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credential::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest) else { return Credential::Malformed };
        let Ok(text) = String::from_utf8(raw) else { return Credential::Malformed };
        let password = text.split_once(':').map(|(_, p)| p).unwrap_or(&text);
        return Credential::Basic(password.to_string());
    }
    Credential::Malformed
}

/// Why a request is not authenticated; rendered as the sign-in page or 401.
pub struct Refusal {
    pub message: String,
}

impl Refusal {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    pub fn respond(self, req: &ApiRequest, realm: &str) -> Response {
        if !req.suppress_redirect() {
            return sign_in_page(realm);
        }
        let mut r = VssError::unauthorized(self.message).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer authorization_uri=https://login.microsoftonline.com/common"),
        );
        r
    }
}

pub const TF400813: &str = "TF400813: The user is not authorized to access this resource.";

/// A delegated user's bearer token for Azure DevOps.
pub fn bearer_user(ctx: &Ctx, state: &State, token: &str) -> Result<(User, Grant), Refusal> {
    let grant = ctx.tokens.validate(token).map_err(|_| Refusal::new(TF400813))?;
    if grant.resource != DEVOPS_RESOURCE {
        return Err(Refusal::new(TF400813));
    }
    match &grant.subject {
        Subject::App { .. } => Err(Refusal::new("Service principals aren't allowed to perform this action.")),
        Subject::User { upn } => match state.user_by_upn(upn) {
            Some(u) => Ok((u.clone(), grant)),
            None => Err(Refusal::new(TF400813)),
        },
    }
}

/// Delegated scopes (any one of them) that let a user token read the PAT Lifecycle API.
pub const PAT_READ_SCOPES: &[&str] = &["vso.pats", "vso.pats_manage"];
/// Delegated scopes that let a user token create, update and revoke PATs.
pub const PAT_WRITE_SCOPES: &[&str] = &["vso.pats_manage"];
/// Delegated scopes the audit log API requires.
pub const AUDIT_LOG_SCOPES: &[&str] = &["vso.auditlog"];
/// Delegated scopes the Token Admin API requires.
pub const TOKEN_ADMIN_SCOPES: &[&str] = &["vso.tokenadministration"];

fn has_scope(grant: &Grant, wanted: &[&str]) -> bool {
    grant.scopes.iter().any(|s| s == ".default" || wanted.contains(&s.as_str()))
}

/// The caller of a PAT Lifecycle API operation: a delegated user with the right scope, a member of `org`.
pub fn pat_api_user(ctx: &Ctx, state: &State, req: &ApiRequest, org: &str, write: bool) -> Result<User, Response> {
    let realm = "vssps.dev.azure.com";
    let (user, grant) = match credential(req) {
        Credential::Bearer(t) => bearer_user(ctx, state, &t).map_err(|r| r.respond(req, realm))?,
        Credential::Basic(_) => {
            return Err(Refusal::new(
                "Personal access tokens and Basic authentication can't be used with the PAT Lifecycle Management API; it requires a Microsoft Entra access token.",
            )
            .respond(req, realm));
        }
        Credential::None | Credential::Malformed => return Err(Refusal::new(TF400813).respond(req, realm)),
    };
    let wanted: &[&str] = if write { PAT_WRITE_SCOPES } else { PAT_READ_SCOPES };
    if !has_scope(&grant, wanted) {
        return Err(
            VssError::invalid_access(StatusCode::FORBIDDEN, "The requested operation is not allowed.").into_response()
        );
    }
    if !user.orgs.contains(&org.to_lowercase()) {
        return Err(VssError::unauthorized(format!(
            "TF400813: The user '{}' is not authorized to access this resource.",
            user.upn
        ))
        .into_response());
    }
    Ok(user)
}

/// Which administrative right a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRight {
    /// "View audit log" (Project Collection Administrators have it; it can also be granted on its own).
    ViewAuditLog,
    /// Token administration: Project Collection Administrators only.
    TokenAdministration,
}

/// The caller of an administrative API (Token Admin, audit log), as the audit log records it: a delegated
/// administrator user whose token carries one of `scopes`, or — as in Azure DevOps, where only the PAT
/// Lifecycle API refuses them — a service principal or managed identity (an app-only token for the Azure
/// DevOps resource) that was added to the organization with the right. Scopes do not apply to app-only
/// tokens: what the principal may do is what it was granted in the organization.
pub fn admin_caller(
    ctx: &Ctx,
    state: &State,
    req: &ApiRequest,
    org: &str,
    scopes: &[&str],
    right: AdminRight,
    realm: &str,
) -> Result<Actor, Response> {
    let org_key = org.to_lowercase();
    let Credential::Bearer(token) = credential(req) else {
        return Err(Refusal::new(TF400813).respond(req, realm));
    };
    let grant = ctx.tokens.validate(&token).map_err(|_| Refusal::new(TF400813).respond(req, realm))?;
    if grant.resource != DEVOPS_RESOURCE {
        return Err(Refusal::new(TF400813).respond(req, realm));
    }
    let denied = |who: &str| {
        VssError::invalid_access(
            StatusCode::UNAUTHORIZED,
            format!(
                "The caller '{who}' does not have permission to administrate tokens or read the audit log of this organization."
            ),
        )
        .into_response()
    };
    match &grant.subject {
        Subject::App { client_id } => {
            let Some(app) = state.apps.get(client_id) else { return Err(Refusal::new(TF400813).respond(req, realm)) };
            let allowed = app.admin_of.contains(&org_key)
                || (right == AdminRight::ViewAuditLog && app.audit_reader_of.contains(&org_key));
            if !allowed {
                return Err(denied(&app.display_name));
            }
            Ok(Actor {
                user_id: None,
                client_id: uuid::Uuid::parse_str(&app.client_id).ok(),
                upn: None,
                display_name: app.display_name.clone(),
                authentication_mechanism: "S2S_ServicePrincipal".into(),
                ip_address: Some(req.client_ip()),
                user_agent: req.user_agent(),
            })
        }
        Subject::User { upn } => {
            let Some(user) = state.user_by_upn(upn) else { return Err(Refusal::new(TF400813).respond(req, realm)) };
            if !has_scope(&grant, scopes) {
                return Err(VssError::invalid_access(StatusCode::FORBIDDEN, "The requested operation is not allowed.")
                    .into_response());
            }
            if !user.admin_of.contains(&org_key) {
                return Err(denied(&user.upn));
            }
            Ok(Actor::user(user, "AAD", Some(req.client_ip()), req.user_agent()))
        }
    }
}

/// Why a PAT is not accepted for an ordinary call.
pub fn check_pat(
    state: &State,
    secret: &str,
    org: &str,
    now: time::OffsetDateTime,
) -> Result<(PatRecord, User), String> {
    if !patsecret::looks_like_pat(secret) {
        return Err(TF400813.into());
    }
    let id = state.index.pat_by_hash.get(&patsecret::hash(secret)).ok_or_else(|| TF400813.to_string())?;
    let pat = state.pats.get(id).ok_or_else(|| TF400813.to_string())?;
    let user = state.users.get(&pat.owner).ok_or_else(|| TF400813.to_string())?;
    match pat.status(now) {
        PatStatus::Expired => return Err("Access Denied: The Personal Access Token used has expired.".into()),
        PatStatus::Revoked => return Err("Access Denied: The Personal Access Token used has been revoked.".into()),
        PatStatus::Active => {}
    }
    let Some(o) = state.org(org) else { return Err(TF400813.into()) };
    if !pat.visible_in(o.id) || !user.orgs.contains(&org.to_lowercase()) {
        return Err(format!("TF400813: The user '{}' is not authorized to access this resource.", user.upn));
    }
    if pat.target_accounts.is_none()
        && o.policy.restrict_pat_creation
        && !o.policy.allowlist.iter().any(|a| a.eq_ignore_ascii_case(&user.upn))
    {
        return Err("Access Denied: Global personal access tokens are blocked in this organization by policy.".into());
    }
    let revoked_by_rule = o.revocation_rules.iter().any(|r| {
        pat.valid_from < r.created_before && pat.scopes().any(|s| r.scopes.iter().any(|rs| rs.eq_ignore_ascii_case(s)))
    });
    if revoked_by_rule {
        return Err("Access Denied: The Personal Access Token used has been revoked.".into());
    }
    Ok((pat.clone(), user.clone()))
}

/// The rate-limiting identity of a request (user, application, PAT, or client address).
pub fn identity(ctx: &Ctx, req: &ApiRequest) -> String {
    match credential(req) {
        Credential::Bearer(t) => match ctx.tokens.validate(&t) {
            Ok(g) => match g.subject {
                Subject::User { upn } => format!("user:{}", upn.to_lowercase()),
                Subject::App { client_id } => format!("app:{}", client_id.to_lowercase()),
            },
            Err(_) => format!("anonymous:{}", req.client_ip()),
        },
        Credential::Basic(p) => format!("pat:{}", hex::encode(&patsecret::hash(&p)[..8])),
        _ => format!("anonymous:{}", req.client_ip()),
    }
}
