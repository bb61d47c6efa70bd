//! An ordinary Azure DevOps call, `GET /{org}/_apis/projects`, that accepts a PAT over Basic auth (or a
//! delegated bearer token), so tests can check that a PAT works, stopped working after revocation or
//! expiry, or is blocked by a revocation rule or policy.

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
    let who = match auth::credential(req) {
        Credential::Basic(secret) => match auth::check_pat(&state, &secret, org, now) {
            Ok((pat, user)) => {
                if !pat
                    .scopes()
                    .any(|s| matches!(s, "app_token" | "vso.project" | "vso.project_write" | "vso.project_manage"))
                {
                    return super::errors::VssError::unauthorized(
                        "Access Denied: The Personal Access Token used does not have the scope vso.project required by this request.",
                    )
                    .into_response();
                }
                user
            }
            // A bad PAT is a plain 401 (no sign-in redirect) in Azure DevOps.
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
    let project = json!({
        "id": uuid::Uuid::from_u128(o.id.as_u128() ^ 0x5052_4f4a),
        "name": format!("{}-project", o.name),
        "state": "wellFormed",
        "visibility": "private",
    });
    tracing::debug!(org = %o.name, user = %who.upn, "projects listed");
    (StatusCode::OK, Json(json!({ "count": 1, "value": [project] }))).into_response()
}
