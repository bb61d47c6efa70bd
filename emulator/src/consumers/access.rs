//! Who is calling a consumer API of Azure DevOps, and whether they may: a PAT over Basic auth, a delegated
//! Entra user token, or an **app-only** Entra token (client credentials or a managed identity, resource
//! `499b84ac-1321-427f-aa17-267ca6975798`, `.default`) whose application was added to the organization.
//! Unlike the PAT Lifecycle API (which refuses applications), these APIs accept all three.
//!
//! Reading needs organization membership and a read scope; updating an object needs the object's
//! Administrator role (or Project Collection Administrator rights for users) and the `_manage` scope.
//! Bearer tokens are looked up through the shared token issuer (`ctx.tokens.validate`), like every other
//! emulated service.

use super::Principal;
use crate::context::Ctx;
use crate::devops::auth::{self, Credential, Refusal, TF400813};
use crate::devops::errors::VssError;
use crate::http::ApiRequest;
use crate::state::State;
use crate::tokens::{DEVOPS_RESOURCE, Subject};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The scopes of one API: any of `read` lets a caller read, any of `write` lets it update.
#[derive(Debug, Clone, Copy)]
pub struct Scopes {
    pub read: &'static [&'static str],
    pub write: &'static [&'static str],
}

pub const ENDPOINT_SCOPES: Scopes = Scopes {
    read: &["vso.serviceendpoint", "vso.serviceendpoint_query", "vso.serviceendpoint_manage"],
    write: &["vso.serviceendpoint_manage"],
};

pub const GROUP_SCOPES: Scopes = Scopes {
    read: &["vso.variablegroups_read", "vso.variablegroups_write", "vso.variablegroups_manage"],
    write: &["vso.variablegroups_manage"],
};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// A Project Collection Administrator (administers every object of the organization).
    pub org_admin: bool,
    /// How it authenticated, for the audit trail of the control API.
    pub via: &'static str,
}

impl Caller {
    pub fn may_administer(&self, administrators: &BTreeSet<Principal>) -> bool {
        self.org_admin || administrators.contains(&self.principal)
    }
}

/// Authenticates the caller of a consumer API in `org`, checking membership and the scope for `write`.
pub fn caller(
    ctx: &Ctx,
    state: &State,
    req: &ApiRequest,
    org: &str,
    scopes: Scopes,
    write: bool,
) -> Result<Caller, Response> {
    let realm = "dev.azure.com";
    let org_key = org.to_lowercase();
    let wanted = if write { scopes.write } else { scopes.read };
    match auth::credential(req) {
        Credential::Basic(secret) => {
            let (pat, user) = auth::check_pat(state, &secret, org, ctx.now())
                .map_err(|m| VssError::unauthorized(m).into_response())?;
            if !pat.scopes().any(|s| s == "app_token" || wanted.contains(&s)) {
                return Err(VssError::unauthorized(format!(
                    "Access Denied: The Personal Access Token used does not have the scope {} required by this request.",
                    wanted.first().copied().unwrap_or_default()
                ))
                .into_response());
            }
            Ok(Caller { principal: Principal::User(user.id), org_admin: user.admin_of.contains(&org_key), via: "PAT" })
        }
        Credential::Bearer(t) => {
            let grant = ctx.tokens.validate(&t).map_err(|_| Refusal::new(TF400813).respond(req, realm))?;
            if grant.resource != DEVOPS_RESOURCE {
                return Err(Refusal::new(TF400813).respond(req, realm));
            }
            let scoped = grant
                .scopes
                .iter()
                .any(|s| s == ".default" || s == "user_impersonation" || wanted.contains(&s.as_str()));
            let caller = match &grant.subject {
                Subject::User { upn } => {
                    let user = state.user_by_upn(upn).ok_or_else(|| Refusal::new(TF400813).respond(req, realm))?;
                    if !user.orgs.contains(&org_key) {
                        return Err(VssError::unauthorized(format!(
                            "TF400813: The user '{}' is not authorized to access this resource.",
                            user.upn
                        ))
                        .into_response());
                    }
                    Caller {
                        principal: Principal::User(user.id),
                        org_admin: user.admin_of.contains(&org_key),
                        via: "AAD",
                    }
                }
                Subject::App { client_id } => {
                    if !state.consumers.is_app_member(org, client_id) {
                        return Err(VssError::unauthorized(format!(
                            "TF400813: The user '{client_id}' is not authorized to access this resource."
                        ))
                        .into_response());
                    }
                    Caller { principal: Principal::App(client_id.to_lowercase()), org_admin: false, via: "AAD_App" }
                }
            };
            if !scoped {
                return Err(VssError::invalid_access(StatusCode::FORBIDDEN, "The requested operation is not allowed.")
                    .into_response());
            }
            Ok(caller)
        }
        Credential::None | Credential::Malformed => Err(Refusal::new(TF400813).respond(req, realm)),
    }
}

/// 403 for an update by a caller without the object's Administrator role.
pub fn no_rights(state: &State, caller: &Caller, what: &str) -> Response {
    VssError::new(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        "Microsoft.VisualStudio.Services.Security.AccessDeniedException, Microsoft.VisualStudio.Services.WebApi",
        format!(
            "Access denied. {} needs Administrator permissions on {what} to perform the action. For more information, contact the Azure DevOps administrator.",
            caller.principal.label(state)
        ),
    )
    .into_response()
}

/// An `IdentityRef` as Azure DevOps serializes one.
pub fn identity_ref(state: &State, p: &Principal) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    match p {
        Principal::User(id) => {
            let (name, upn) = state
                .users
                .get(id)
                .map(|u| (u.display_name.clone(), u.upn.clone()))
                .unwrap_or_else(|| ("Unknown user".into(), id.to_string()));
            let descriptor = format!("aad.{}", b64(&id.to_string()));
            json!({
                "displayName": name,
                "url": format!("https://spsprodweu5.vssps.visualstudio.com/_apis/Identities/{id}"),
                "_links": { "avatar": { "href": format!("https://dev.azure.com/_apis/GraphProfile/MemberAvatars/{descriptor}") } },
                "id": id,
                "uniqueName": upn,
                "imageUrl": format!("https://dev.azure.com/_apis/GraphProfile/MemberAvatars/{descriptor}"),
                "descriptor": descriptor,
            })
        }
        Principal::App(client_id) => {
            let name = state.apps.get(client_id).map(|a| a.display_name.clone()).unwrap_or_else(|| client_id.clone());
            let descriptor = format!("aadsp.{}", b64(client_id));
            json!({
                "displayName": name,
                "url": format!("https://spsprodweu5.vssps.visualstudio.com/_apis/Identities/{client_id}"),
                "_links": { "avatar": { "href": format!("https://dev.azure.com/_apis/GraphProfile/MemberAvatars/{descriptor}") } },
                "id": client_id,
                "uniqueName": client_id,
                "imageUrl": format!("https://dev.azure.com/_apis/GraphProfile/MemberAvatars/{descriptor}"),
                "descriptor": descriptor,
            })
        }
    }
}
