//! The Azure DevOps location service, as much of it as Microsoft's SDKs need before their first call:
//! `OPTIONS {org}/_apis` (the API resource locations this host serves: id, area, resource, route template,
//! versions), `GET {org}/_apis/ResourceAreas[/{areaId}]` (which host serves an area, e.g. the audit log on
//! `auditservice`), and `GET {org}/_apis/connectionData` (who is calling — a delegated or application
//! bearer token, or a PAT over Basic auth). Location ids, areas and route templates are those of the
//! official SDK's generated clients; areas the SDK has no client for (the PAT Lifecycle API) are not listed.

use super::auth::{self, Credential, Refusal};
use super::errors::VssError;
use crate::context::Ctx;
use crate::faults::Service;
use crate::http::ApiRequest;
use crate::tokens::Subject;
use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One API resource location: (id, area, resource name, route template, min version).
type Location = (&'static str, &'static str, &'static str, &'static str, &'static str);

const CONNECTION_DATA: &str = "00d9565f-ed9c-4a06-9a50-00e7896ccab4";
const RESOURCE_AREAS: &str = "e81700f7-3be2-46de-8624-2eb35882fcaa";
const TOKEN_ADMIN_AREA: &str = "af68438b-ed04-4407-9eb6-f1dbae3f922e";
const AUDIT_AREA: &str = "94ff054d-5ee1-413d-9341-3f4a7827de2e";

const COMMON: &[Location] = &[
    (CONNECTION_DATA, "Location", "ConnectionData", "_apis/{resource}", "1.0"),
    (RESOURCE_AREAS, "Location", "ResourceAreas", "_apis/{resource}/{areaId}", "3.2"),
];
const DEVOPS: &[Location] = &[
    (TOKEN_ADMIN_AREA, "TokenAdmin", "PersonalAccessTokens", "_apis/{area}/{resource}/{subjectDescriptor}", "5.0"),
    ("ee4afb16-e7ab-4ed8-9d4b-4ef3e78f97e4", "TokenAdmin", "RevocationRules", "_apis/{area}/{resource}", "5.0"),
    ("a9c08b2c-5466-4e22-8626-1ff304ffdf0f", "TokenAdmin", "Revocations", "_apis/{area}/{resource}", "5.0"),
];
const AUDIT: &[Location] = &[
    ("4e5fa14f-7097-4b73-9c85-00abc7353c61", "audit", "auditlog", "_apis/{area}/{resource}", "5.1"),
    ("6fa30b9a-9558-4e3b-a95f-a12572caa6e6", "audit", "actions", "_apis/{area}/{resource}", "5.1"),
    ("b7b98a76-04e8-4f4d-ac72-9d46492caaac", "audit", "downloadlog", "_apis/{area}/{resource}", "5.1"),
];

/// Answers the location-service requests of `{org}/_apis…`; `None` for anything else.
pub fn route(ctx: &Ctx, req: &ApiRequest, service: Service, org: &str) -> Option<Response> {
    let s = &req.segments;
    if s.len() == 2 && req.seg_is(1, "_apis") && req.method == Method::OPTIONS {
        return Some(options(service));
    }
    if (s.len() == 3 || s.len() == 4) && req.seg_is(2, "resourceareas") && req.method == Method::GET {
        return Some(resource_areas(ctx, req, org, s.get(3).map(String::as_str)));
    }
    if s.len() == 3 && req.seg_is(2, "connectiondata") && req.method == Method::GET {
        return Some(connection_data(ctx, req, org, service));
    }
    None
}

fn options(service: Service) -> Response {
    let own = if service == Service::Audit { AUDIT } else { DEVOPS };
    let value: Vec<Value> = COMMON
        .iter()
        .chain(own)
        .map(|(id, area, resource, route, min)| {
            json!({
                "id": id,
                "area": area,
                "resourceName": resource,
                "routeTemplate": route,
                "resourceVersion": 1,
                "minVersion": min,
                "maxVersion": "7.2",
                "releasedVersion": "0.0",
            })
        })
        .collect();
    (StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response()
}

/// Resource areas point at the hosts Azure DevOps uses (`vssps.dev.azure.com`, `auditservice.dev.azure.com`)
/// when the request came through the proxy under an Azure name, else at the emulator's loopback listeners.
fn resource_areas(ctx: &Ctx, req: &ApiRequest, org: &str, area: Option<&str>) -> Response {
    let (devops, audit) = if req.public_host.is_some() {
        (format!("https://vssps.dev.azure.com/{org}/"), format!("https://auditservice.dev.azure.com/{org}/"))
    } else {
        let Some(urls) = ctx.urls.get() else {
            return VssError::unavailable("The location service is starting.").into_response();
        };
        (
            format!("{}/{org}/", urls.devops.trim_end_matches('/')),
            format!("{}/{org}/", urls.audit.trim_end_matches('/')),
        )
    };
    let areas = [(TOKEN_ADMIN_AREA, "TokenAdmin", devops.as_str()), (AUDIT_AREA, "audit", audit.as_str())];
    let to_json = |(id, name, url): &(&str, &str, &str)| json!({ "id": id, "name": name, "locationUrl": url });
    match area {
        None => {
            let value: Vec<Value> = areas.iter().map(to_json).collect();
            (StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response()
        }
        Some(id) => match areas.iter().find(|a| a.0.eq_ignore_ascii_case(id) || a.1.eq_ignore_ascii_case(id)) {
            Some(a) => (StatusCode::OK, Json(to_json(a))).into_response(),
            None => VssError::not_found(
                "ResourceAreaNotFoundException",
                format!("The resource area {id} is not registered on this host."),
            )
            .into_response(),
        },
    }
}

fn identity(id: uuid::Uuid, descriptor: String, subject: String, display: &str, account: &str) -> Value {
    json!({
        "id": id,
        "descriptor": descriptor,
        "subjectDescriptor": subject,
        "providerDisplayName": display,
        "isActive": true,
        "properties": { "Account": { "$type": "System.String", "$value": account } },
        "resourceVersion": 2,
        "metaTypeId": 0,
    })
}

/// Who is calling: a delegated user (bearer), an application (bearer), or a PAT's owner (Basic).
fn connection_data(ctx: &Ctx, req: &ApiRequest, org: &str, service: Service) -> Response {
    let realm = if service == Service::Audit { "auditservice.dev.azure.com" } else { "dev.azure.com" };
    let state = ctx.state();
    let tenant = state.tenant_id;
    let who = match auth::credential(req) {
        Credential::Basic(secret) => match auth::check_pat(&state, &secret, org, ctx.now()) {
            Ok((_, user)) => identity(
                user.id,
                format!("Microsoft.IdentityModel.Claims.ClaimsIdentity;{tenant}\\{}", user.upn),
                user.descriptor(),
                &user.display_name,
                &user.upn,
            ),
            Err(msg) => return VssError::unauthorized(msg).into_response(),
        },
        Credential::Bearer(t) => match ctx.tokens.validate(&t) {
            Ok(g) if g.resource == crate::tokens::DEVOPS_RESOURCE => match g.subject {
                Subject::User { upn } => match state.user_by_upn(&upn) {
                    Some(u) if u.orgs.contains(&org.to_lowercase()) || u.admin_of.contains(&org.to_lowercase()) => {
                        identity(
                            u.id,
                            format!("Microsoft.IdentityModel.Claims.ClaimsIdentity;{tenant}\\{}", u.upn),
                            u.descriptor(),
                            &u.display_name,
                            &u.upn,
                        )
                    }
                    _ => return Refusal::new(auth::TF400813).respond(req, realm),
                },
                Subject::App { client_id } => {
                    let oid = crate::tokens::derived_oid(&client_id);
                    identity(
                        oid,
                        format!("Microsoft.VisualStudio.Services.Claims.AadServicePrincipal;{tenant}\\{client_id}"),
                        {
                            use base64::Engine as _;
                            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(oid.to_string());
                            format!("aadsp.{b64}")
                        },
                        &client_id,
                        &client_id,
                    )
                }
            },
            _ => return Refusal::new(auth::TF400813).respond(req, realm),
        },
        Credential::None | Credential::Malformed => return Refusal::new(auth::TF400813).respond(req, realm),
    };
    let Some(o) = state.org(org) else { return super::unknown_org(org) };
    let body = json!({
        "authenticatedUser": who,
        "authorizedUser": who,
        "instanceId": o.id,
        "deploymentId": uuid::Uuid::from_u128(o.id.as_u128() ^ 0x4445_504c),
        "deploymentType": "hosted",
        "locationServiceData": {
            "serviceOwner": "00025394-6065-48ca-87d9-7f5672854ef7",
            "defaultAccessMappingMoniker": "PublicAccessMapping",
            "lastChangeId": 1,
            "lastChangeId64": 1,
        },
    });
    (StatusCode::OK, Json(body)).into_response()
}
