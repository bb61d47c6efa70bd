//! The emulated Azure DevOps: request routing for the `vssps` host (PAT Lifecycle, Token Admin, an
//! ordinary PAT-authenticated call) and the `auditservice` host (audit log). Path segments after
//! `_apis` match case-insensitively, as in the real service.

pub mod audit;
pub mod auth;
pub mod errors;
pub mod location;
pub mod pat_rules;
pub mod pats;
pub mod projects;
pub mod scopes;
pub mod tokenadmin;
pub mod version;

use crate::context::Ctx;
use crate::http::ApiRequest;
use axum::response::{IntoResponse, Response};
use errors::VssError;

pub fn unknown_org(org: &str) -> Response {
    VssError::not_found("HostNotFoundException", format!("TF400947: The organization '{org}' could not be found."))
        .into_response()
}

fn not_found(req: &ApiRequest) -> Response {
    VssError::not_found(
        "ApiResourceNotFoundException",
        format!("API resource location for {} was not found.", req.path),
    )
    .into_response()
}

/// The location service of an organization (`OPTIONS {org}/_apis`, ResourceAreas, connectionData).
fn location_service(ctx: &Ctx, req: &ApiRequest, service: crate::faults::Service) -> Option<Response> {
    let s = &req.segments;
    if s.len() < 2 || !req.seg_is(1, "_apis") {
        return None;
    }
    let org = s[0].as_str();
    if ctx.state().org(org).is_none() {
        return Some(unknown_org(org));
    }
    location::route(ctx, req, service, org)
}

/// `vssps.dev.azure.com` (and `dev.azure.com` for the ordinary call).
pub fn dispatch(ctx: &Ctx, req: &ApiRequest) -> Response {
    let s = &req.segments;
    if let Some(r) = location_service(ctx, req, crate::faults::Service::Devops) {
        return r;
    }
    if let Some(r) = crate::consumers::dispatch(ctx, req) {
        return r;
    }
    if s.len() < 3 || !req.seg_is(1, "_apis") {
        return not_found(req);
    }
    let org = s[0].as_str();
    if ctx.state().org(org).is_none() {
        return unknown_org(org);
    }
    if s.len() == 4 && req.seg_is(2, "tokens") && req.seg_is(3, "pats") {
        return pats::handle(ctx, req, org);
    }
    if req.seg_is(2, "tokenadmin") {
        return tokenadmin::handle(ctx, req, org);
    }
    if s.len() == 3 && req.seg_is(2, "projects") && req.method == axum::http::Method::GET {
        return projects::handle(ctx, req, org);
    }
    not_found(req)
}

/// `auditservice.dev.azure.com`.
pub fn dispatch_audit(ctx: &Ctx, req: &ApiRequest) -> Response {
    let s = &req.segments;
    if let Some(r) = location_service(ctx, req, crate::faults::Service::Audit) {
        return r;
    }
    if s.len() != 4 || !req.seg_is(1, "_apis") || !req.seg_is(2, "audit") {
        return not_found(req);
    }
    let org = s[0].as_str();
    if ctx.state().org(org).is_none() {
        return unknown_org(org);
    }
    if req.method != axum::http::Method::GET {
        return not_found(req);
    }
    if req.seg_is(3, "auditlog") {
        return audit::query(ctx, req, org);
    }
    if req.seg_is(3, "downloadlog") || req.seg_is(3, "download") {
        return audit::download(ctx, req, org);
    }
    if req.seg_is(3, "actions") {
        return audit::actions(ctx, req, org);
    }
    not_found(req)
}
