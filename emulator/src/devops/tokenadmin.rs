//! The Token Admin API (tokenadmin 7.2): list a user's PATs by subject descriptor with paging, revoke
//! authorizations in batch (204), create revocation rules (201). Organization administrators only: a
//! delegated token carrying `vso.tokenadministration`, or a service principal / managed identity added to
//! the organization as a Project Collection Administrator.

use super::auth;
use super::errors::VssError;
use super::version::{self, ApiVersion};
use crate::audit_log::{self, Actor};
use crate::context::Ctx;
use crate::http::ApiRequest;
use crate::state::{Org, PatStatus, RevocationRule, Revoker, State};
use crate::wire::{format_time, parse_time};
use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

const MIN_VERSION: ApiVersion = ApiVersion { major: 5, minor: 0 };
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;
/// The server-side limit on revocations per call.
pub const MAX_REVOCATIONS: usize = 100;

pub fn handle(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    if let Err(e) = version::negotiate(req.api_version(), MIN_VERSION, "tokenadmin") {
        return e.into_response();
    }
    let mut state = ctx.state();
    let admin = match auth::admin_caller(
        ctx,
        &state,
        req,
        org,
        auth::TOKEN_ADMIN_SCOPES,
        auth::AdminRight::TokenAdministration,
        "vssps.dev.azure.com",
    ) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let s = &req.segments;
    let r = if s.len() == 5 && req.seg_is(3, "personalaccesstokens") && req.method == Method::GET {
        list(&state, req, org, &s[4])
    } else if s.len() == 4 && req.seg_is(3, "revocations") && req.method == Method::POST {
        revoke(ctx, &mut state, req, org, &admin)
    } else if s.len() == 4 && req.seg_is(3, "revocationrules") && req.method == Method::POST {
        rule(ctx, &mut state, req, org)
    } else {
        Err(VssError::not_found(
            "ApiResourceNotFoundException",
            format!("API resource location for {} was not found.", req.path),
        ))
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

fn list(state: &State, req: &ApiRequest, org: &str, descriptor: &str) -> Result<Response, VssError> {
    let page = match req.query("pageSize") {
        None => DEFAULT_PAGE,
        Some(r) => match r.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(VssError::argument(format!("pageSize must be between 1 and {MAX_PAGE}; got '{r}'."))),
        },
    };
    let after = match req.query("continuationToken").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| VssError::argument("The continuation token is not valid."))?),
    };
    let is_public = req.query("isPublic").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Some(o) = state.org(org) else { return Ok(super::unknown_org(org)) };
    let user = crate::state::descriptor_user_id(descriptor)
        .and_then(|id| state.users.get(&id))
        .filter(|u| u.orgs.contains(&org.to_lowercase()))
        .ok_or_else(|| {
            VssError::not_found(
                "IdentityNotFoundException",
                format!("The user with descriptor '{descriptor}' was not found."),
            )
        })?;
    let mut ids: Vec<Uuid> = if is_public {
        Vec::new() // SSH keys are not emulated.
    } else {
        state
            .index
            .pats_by_owner
            .get(&user.id)
            .into_iter()
            .flatten()
            .filter(|id| state.pats.get(id).is_some_and(|p| p.visible_in(o.id)))
            .copied()
            .collect()
    };
    ids.sort();
    if let Some(a) = after {
        ids.retain(|i| *i > a);
    }
    let more = ids.len() > page;
    ids.truncate(page);
    let value: Vec<Value> = ids.iter().filter_map(|id| state.pats.get(id)).map(|p| session_token(p, state)).collect();
    let continuation = if more { ids.last().map(|i| json!(i)).unwrap_or(Value::Null) } else { Value::Null };
    Ok((StatusCode::OK, Json(json!({ "value": value, "continuationToken": continuation }))).into_response())
}

fn session_token(p: &crate::state::PatRecord, _state: &State) -> Value {
    let valid = p.revoked_at.is_none();
    json!({
        "clientId": Uuid::nil(),
        "accessId": Uuid::nil(),
        "authorizationId": p.id,
        "hostAuthorizationId": Uuid::nil(),
        "userId": p.owner,
        "validFrom": format_time(p.valid_from),
        "validTo": format_time(p.valid_to),
        "displayName": p.display_name,
        "scope": p.scope,
        "targetAccounts": p.target_accounts,
        "token": null,
        "alternateToken": null,
        "isValid": valid,
        "isPublic": false,
        "publicData": null,
        "source": null,
        "claims": null,
        "crossCompanyCorrelatingId": &p.hash[..32.min(p.hash.len())],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revocation {
    authorization_id: Option<String>,
}

fn revoke(ctx: &Ctx, state: &mut State, req: &ApiRequest, org: &str, actor: &Actor) -> Result<Response, VssError> {
    let items: Vec<Revocation> = serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")))?;
    if items.is_empty() {
        return Err(VssError::argument("At least one revocation is required."));
    }
    if items.len() > MAX_REVOCATIONS {
        return Err(VssError::argument(format!(
            "Too many revocations in one request: {} (the limit is {MAX_REVOCATIONS}).",
            items.len()
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    for it in &items {
        let raw = it.authorization_id.as_deref().unwrap_or_default();
        ids.push(
            Uuid::parse_str(raw)
                .map_err(|_| VssError::argument(format!("The authorizationId '{raw}' is not a valid GUID.")))?,
        );
    }
    let Some(o) = state.org(org).map(Org::light) else { return Ok(super::unknown_org(org)) };
    let now = ctx.now();
    for id in ids {
        let Some(pat) = state.pats.get(&id).cloned() else { continue };
        let member = state.users.get(&pat.owner).is_some_and(|u| u.orgs.contains(&org.to_lowercase()));
        if !pat.visible_in(o.id) || !member || pat.status(now) == PatStatus::Revoked {
            continue;
        }
        if state.mark_revoked(id, now, Revoker::Admin)
            && let Some(owner) = state.users.get(&pat.owner).cloned()
        {
            let ev = audit_log::pat_event("Token.PatRevokeEvent", &pat, &owner, now);
            audit_log::record(state, &org.to_lowercase(), actor, ev, now);
        }
    }
    ctx.changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleBody {
    scopes: Option<String>,
    created_before: Option<String>,
}

fn rule(ctx: &Ctx, state: &mut State, req: &ApiRequest, org: &str) -> Result<Response, VssError> {
    let body: RuleBody = serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")))?;
    let scopes: Vec<String> = body.scopes.unwrap_or_default().split_whitespace().map(str::to_string).collect();
    if scopes.is_empty() {
        return Err(VssError::argument("A revocation rule needs at least one scope."));
    }
    let created_before = match body.created_before {
        None => ctx.now(),
        Some(raw) => {
            parse_time(&raw).ok_or_else(|| VssError::argument(format!("createdBefore '{raw}' is not a valid date.")))?
        }
    };
    let Some(o) = state.org_mut(org) else { return Ok(super::unknown_org(org)) };
    o.revocation_rules.push(RevocationRule { scopes, created_before });
    ctx.changed();
    Ok(StatusCode::CREATED.into_response())
}
