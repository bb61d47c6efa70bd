//! `GET /{org}/_apis/connectionData`: the first call Microsoft's clients make with any credential. Any
//! valid PAT of the organization may read it whatever its scopes (patrol's new-PAT test relies on that),
//! as may a delegated bearer token of a member. Nothing is changed and nothing is audited.

use super::auth::{self, Credential, Refusal};
use crate::context::Ctx;
use crate::http::ApiRequest;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub fn handle(ctx: &Ctx, req: &ApiRequest, org: &str) -> Response {
    let state = ctx.state();
    let now = ctx.now();
    let user = match auth::credential(req) {
        Credential::Basic(secret) => match auth::check_pat(&state, &secret, org, now) {
            Ok((_, user)) => user,
            Err(msg) => return super::errors::VssError::unauthorized(msg).into_response(),
        },
        Credential::Bearer(t) => match auth::bearer_user(ctx, &state, &t) {
            Ok((u, _)) if u.orgs.contains(&org.to_lowercase()) => u,
            Ok(_) => return Refusal::new(auth::TF400813).respond(req, "dev.azure.com"),
            Err(r) => return r.respond(req, "dev.azure.com"),
        },
        _ => return Refusal::new(auth::TF400813).respond(req, "dev.azure.com"),
    };
    let Some(o) = state.org(org) else { return super::unknown_org(org) };
    let identity = json!({
        "id": user.id,
        "descriptor": format!("Microsoft.IdentityModel.Claims.ClaimsIdentity;{}", user.upn),
        "providerDisplayName": user.display_name,
        "isActive": true,
        "properties": { "Account": { "$type": "System.String", "$value": user.upn } },
    });
    (
        StatusCode::OK,
        Json(json!({
            "authenticatedUser": identity,
            "authorizedUser": identity,
            "instanceId": o.id,
            "deploymentId": o.id,
            "deploymentType": "hosted",
            "locationServiceData": { "serviceOwner": "00025394-6065-48ca-87d9-7f5672854ef7", "defaultAccessMappingMoniker": "PublicAccessMapping" },
        })),
    )
        .into_response()
}
