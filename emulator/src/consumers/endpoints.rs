//! Service endpoints (service connections), serviceEndpoint 7.2:
//!
//! - `GET {org}/{project}/_apis/serviceendpoint/endpoints` — list (`type`, `authSchemes`, `endpointIds`,
//!   `endpointNames`, `owner`, `actionFilter`); confidential authorization parameters are left out;
//! - `GET {org}/{project}/_apis/serviceendpoint/endpoints/{endpointId}` — confidential parameters come back
//!   as `null`; an endpoint that does not exist (or is not shared with the project) is `200` with a `null`
//!   body, as in Azure DevOps (MicrosoftDocs/vsts-rest-api-specs#285);
//! - `PUT {org}/_apis/serviceendpoint/endpoints/{endpointId}` (and the older project-level path) — update;
//!   `PUT {org}/_apis/serviceendpoint/endpoints` — update several at once;
//! - `GET {org}/{project}/_apis/serviceendpoint/{endpointId}/executionhistory` — the pipeline runs that used
//!   the endpoint, newest first (`top`, `continuationToken`).

use super::access::{self, Caller, ENDPOINT_SCOPES};
use super::{ConsumerApi, Endpoint, ProjectRef, is_confidential};
use crate::context::Ctx;
use crate::devops::errors::VssError;
use crate::devops::version::ApiVersion;
use crate::http::ApiRequest;
use crate::state::State;
use crate::wire::format_time;
use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

const MIN_VERSION: ApiVersion = ApiVersion { major: 4, minor: 1 };
/// Get, list and update of one endpoint are released in 7.1 (`api-version=7.1`); updating several and the
/// execution history take preview versions only.
const RELEASED: ApiVersion = ApiVersion { major: 7, minor: 1 };
pub const DEFAULT_HISTORY_TOP: usize = 50;
pub const MAX_HISTORY_TOP: usize = 1000;

/// How confidential parameters are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `GET …/endpoints/{id}` and update responses: present, `null`.
    Single,
    /// Lists: left out.
    List,
}

pub fn handle(ctx: &Ctx, req: &ApiRequest, org: &str, project: Option<&str>, rest: &[String]) -> Response {
    let is = |i: usize, name: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name));
    let (resource, released) = if is(1, "executionhistory") {
        ("executionhistory", None)
    } else if rest.len() == 1 && req.method == Method::PUT {
        ("endpoints", None)
    } else {
        ("endpoints", Some(RELEASED))
    };
    if let Err(e) = super::negotiate(req, MIN_VERSION, released, resource) {
        return e.into_response();
    }
    let mut state = ctx.state();
    if state.org(org).is_none() {
        return crate::devops::unknown_org(org);
    }
    let project_id = match project {
        None => None,
        Some(p) => match state.consumers.project(org, p) {
            Some(p) => Some(p.id),
            None => return super::unknown_project(p),
        },
    };
    let r = match (rest.len(), &req.method, project_id) {
        (1, &Method::GET, Some(p)) if is(0, "endpoints") => list(ctx, &state, req, org, p),
        (1, &Method::PUT, _) if is(0, "endpoints") => update_many(ctx, &mut state, req, org, project_id),
        (2, &Method::GET, Some(p)) if is(0, "endpoints") => get(ctx, &state, req, org, p, &rest[1]),
        (2, &Method::PUT, _) if is(0, "endpoints") => update_one(ctx, &mut state, req, org, project_id, &rest[1]),
        (2, &Method::GET, Some(p)) if is(1, "executionhistory") => history(ctx, &state, req, org, p, &rest[0]),
        _ => Err(VssError::not_found(
            "ApiResourceNotFoundException",
            format!("API resource location for {} was not found.", req.path),
        )
        .into_response()),
    };
    r.unwrap_or_else(|e| e)
}

fn parse_id(raw: &str) -> Result<Uuid, Response> {
    Uuid::parse_str(raw)
        .map_err(|_| VssError::argument(format!("The endpoint id '{raw}' is not a valid GUID.")).into_response())
}

fn fault(state: &mut State, id: &Uuid, method: &Method) -> Result<(), Response> {
    match state.consumers.take_fault(ConsumerApi::ServiceEndpoints, &id.to_string(), method.as_str()) {
        Some(status) => Err(super::fault_error(status, &format!("Service endpoint {id}")).into_response()),
        None => Ok(()),
    }
}

fn shared_with(e: &Endpoint, project: Uuid) -> Option<&ProjectRef> {
    e.projects.iter().find(|p| p.project_id == project)
}

fn list(ctx: &Ctx, state: &State, req: &ApiRequest, org: &str, project: Uuid) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, ENDPOINT_SCOPES, false)?;
    let csv = |name: &str| -> Vec<String> {
        req.query(name)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    };
    let ids: Vec<Uuid> = csv("endpointIds")
        .iter()
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| VssError::argument(format!("'{s}' is not a valid endpoint id.")).into_response())
        })
        .collect::<Result<_, _>>()?;
    let names = csv("endpointNames");
    let schemes = csv("authSchemes");
    let kind = req.query("type").filter(|s| !s.is_empty());
    let owner = req.query("owner").filter(|s| !s.is_empty());
    let manage = match req.query("actionFilter").map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") | Some("use") | Some("view") => false,
        Some("manage") => true,
        Some(other) => {
            return Err(VssError::argument(format!("The actionFilter '{other}' is not valid.")).into_response());
        }
    };
    let org_key = org.to_lowercase();
    let mut value: Vec<(String, Value)> = state
        .consumers
        .endpoints
        .values()
        .filter(|e| e.org == org_key)
        .filter_map(|e| shared_with(e, project).map(|r| (e, r)))
        .filter(|(e, _)| ids.is_empty() || ids.contains(&e.id))
        .filter(|(_, r)| names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(&r.name)))
        .filter(|(e, _)| schemes.is_empty() || schemes.iter().any(|s| s.eq_ignore_ascii_case(&e.scheme)))
        .filter(|(e, _)| kind.is_none_or(|k| k.eq_ignore_ascii_case(&e.kind)))
        .filter(|_| owner.is_none_or(|o| o.eq_ignore_ascii_case("library")))
        .filter(|(e, _)| !manage || caller.may_administer(&e.administrators))
        .map(|(e, r)| (r.name.to_lowercase(), to_json(state, e, Some(r), Mode::List)))
        .collect();
    value.sort_by(|a, b| a.0.cmp(&b.0));
    let value: Vec<Value> = value.into_iter().map(|(_, v)| v).collect();
    Ok((StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response())
}

fn get(ctx: &Ctx, state: &State, req: &ApiRequest, org: &str, project: Uuid, raw: &str) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, ENDPOINT_SCOPES, false)?;
    let id = parse_id(raw)?;
    let found = state
        .consumers
        .endpoints
        .get(&id)
        .filter(|e| e.org == org.to_lowercase())
        .and_then(|e| shared_with(e, project).map(|r| (e, r)))
        .filter(|(e, _)| {
            !req.query("actionFilter").is_some_and(|a| a.eq_ignore_ascii_case("manage"))
                || caller.may_administer(&e.administrators)
        });
    let body = match found {
        Some((e, r)) => to_json(state, e, Some(r), Mode::Single),
        None => Value::Null,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn not_found(id: &Uuid) -> Response {
    VssError::not_found(
        "ServiceEndpointNotFoundException",
        format!("Service endpoint with id '{id}' does not exist or you do not have permission to access it."),
    )
    .into_response()
}

fn update_one(
    ctx: &Ctx,
    state: &mut State,
    req: &ApiRequest,
    org: &str,
    project: Option<Uuid>,
    raw: &str,
) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, ENDPOINT_SCOPES, true)?;
    let id = parse_id(raw)?;
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")).into_response())?;
    fault(state, &id, &req.method)?;
    let updated = checked_update(state, &caller, org, project, id, &body, ctx.now())?;
    remember_values(ctx, &updated);
    state.consumers.endpoints.insert(id, updated);
    ctx.changed();
    let e = &state.consumers.endpoints[&id];
    let r = project.and_then(|p| shared_with(e, p));
    tracing::info!(endpoint = %id, by = caller.via, "service endpoint updated");
    Ok((StatusCode::OK, Json(to_json(state, e, r, Mode::Single))).into_response())
}

fn update_many(
    ctx: &Ctx,
    state: &mut State,
    req: &ApiRequest,
    org: &str,
    project: Option<Uuid>,
) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, ENDPOINT_SCOPES, true)?;
    let body: Vec<Value> = serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")).into_response())?;
    if body.is_empty() {
        return Err(VssError::argument("At least one service endpoint is required.").into_response());
    }
    let now = ctx.now();
    let mut updated = Vec::with_capacity(body.len());
    for b in &body {
        let raw = b.get("id").and_then(Value::as_str).unwrap_or_default();
        let id = parse_id(raw)?;
        fault(state, &id, &req.method)?;
        updated.push(checked_update(state, &caller, org, project, id, b, now)?);
    }
    // All or nothing: every endpoint was checked before any is written.
    let ids: Vec<Uuid> = updated.iter().map(|e| e.id).collect();
    for e in updated {
        remember_values(ctx, &e);
        state.consumers.endpoints.insert(e.id, e);
    }
    ctx.changed();
    let value: Vec<Value> = ids
        .iter()
        .filter_map(|id| state.consumers.endpoints.get(id))
        .map(|e| to_json(state, e, project.and_then(|p| shared_with(e, p)), Mode::Single))
        .collect();
    Ok((StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response())
}

/// Adds the endpoint's confidential values to the minted-secret record (leak scanning in tests).
fn remember_values(ctx: &Ctx, e: &Endpoint) {
    for (k, v) in &e.parameters {
        if is_confidential(k) {
            ctx.secrets.record("consumer_value", v);
        }
    }
}

/// Finds the endpoint, checks the caller's rights and returns the updated copy (nothing written yet).
fn checked_update(
    state: &State,
    caller: &Caller,
    org: &str,
    project: Option<Uuid>,
    id: Uuid,
    body: &Value,
    now: OffsetDateTime,
) -> Result<Endpoint, Response> {
    let Some(current) = state
        .consumers
        .endpoints
        .get(&id)
        .filter(|e| e.org == org.to_lowercase())
        .filter(|e| project.is_none_or(|p| shared_with(e, p).is_some()))
    else {
        return Err(not_found(&id));
    };
    if !caller.may_administer(&current.administrators) {
        return Err(access::no_rights(state, caller, &format!("service endpoint {id}")));
    }
    apply_update(state, current, body, caller, now).map_err(IntoResponse::into_response)
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, VssError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(VssError::argument(format!("endpoint.{name} must be a string."))),
    }
}

fn required(v: Option<&str>, name: &str) -> Result<String, VssError> {
    match v.map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(VssError::argument(format!("Value cannot be null.\r\nParameter name: endpoint.{name}"))),
    }
}

/// Azure's update rules (see docs/emulator.md): the body replaces name, url, description, data and the
/// authorization; a confidential parameter sent as `null` or left out keeps its stored value when the scheme
/// is unchanged; the type cannot change; project references, when sent, must name existing projects.
pub fn apply_update(
    state: &State,
    current: &Endpoint,
    body: &Value,
    caller: &Caller,
    now: OffsetDateTime,
) -> Result<Endpoint, VssError> {
    if !body.is_object() {
        return Err(VssError::argument("The service endpoint must be a JSON object."));
    }
    if let Some(raw) = str_field(body, "id")?
        && Uuid::parse_str(raw).ok() != Some(current.id)
    {
        return Err(VssError::argument(format!(
            "The endpoint id '{raw}' in the request body does not match the endpoint id '{}' of the request.",
            current.id
        )));
    }
    let name = required(str_field(body, "name")?, "Name")?;
    let kind = required(str_field(body, "type")?, "Type")?;
    if !kind.eq_ignore_ascii_case(&current.kind) {
        return Err(VssError::argument(format!(
            "The type of service endpoint {} cannot be changed from '{}' to '{kind}'.",
            current.id, current.kind
        )));
    }
    let url = str_field(body, "url")?
        .ok_or_else(|| VssError::argument("Value cannot be null.\r\nParameter name: endpoint.Url"))?;
    let description = str_field(body, "description")?.unwrap_or_default().to_string();
    let data = match body.get("data") {
        None | Some(Value::Null) => current.data.clone(),
        Some(Value::Object(m)) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Null => {}
                    _ => return Err(VssError::argument(format!("endpoint.data['{k}'] must be a string."))),
                }
            }
            out
        }
        Some(_) => return Err(VssError::argument("endpoint.data must be an object.")),
    };
    let auth = body
        .get("authorization")
        .filter(|a| !a.is_null())
        .ok_or_else(|| VssError::argument("Value cannot be null.\r\nParameter name: endpoint.Authorization"))?;
    let scheme = required(
        str_field(auth, "scheme").map_err(|_| VssError::argument("endpoint.authorization.scheme must be a string."))?,
        "Authorization.Scheme",
    )?;
    let same_scheme = scheme.eq_ignore_ascii_case(&current.scheme);
    let mut parameters = std::collections::BTreeMap::new();
    let sent = match auth.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(VssError::argument("endpoint.authorization.parameters must be an object.")),
    };
    let stored = |k: &str| current.parameters.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    for (k, v) in &sent {
        match v {
            Value::String(s) => {
                parameters.insert(k.clone(), s.clone());
            }
            Value::Null if is_confidential(k) && same_scheme => {
                if let Some(old) = stored(k) {
                    parameters.insert(k.clone(), old);
                }
            }
            Value::Null => {}
            _ => {
                return Err(VssError::argument(format!("endpoint.authorization.parameters['{k}'] must be a string.")));
            }
        }
    }
    if same_scheme {
        for (k, v) in &current.parameters {
            if is_confidential(k) && !sent.keys().any(|s| s.eq_ignore_ascii_case(k)) {
                parameters.insert(k.clone(), v.clone());
            }
        }
    }
    let projects = match body.get("serviceEndpointProjectReferences") {
        None | Some(Value::Null) => current.projects.clone(),
        Some(Value::Array(refs)) if !refs.is_empty() => {
            let mut out = Vec::new();
            for r in refs {
                let pr = &r["projectReference"];
                let key = pr["id"].as_str().or_else(|| pr["name"].as_str()).unwrap_or_default();
                let p = state.consumers.project(&current.org, key).ok_or_else(|| {
                    VssError::argument(format!(
                        "The project '{key}' of serviceEndpointProjectReferences does not exist."
                    ))
                })?;
                out.push(ProjectRef {
                    project_id: p.id,
                    name: r["name"].as_str().filter(|s| !s.trim().is_empty()).unwrap_or(&name).to_string(),
                    description: r["description"].as_str().unwrap_or_default().to_string(),
                });
            }
            out
        }
        Some(_) => {
            return Err(VssError::argument("serviceEndpointProjectReferences must name at least one project."));
        }
    };
    let mut next = current.clone();
    // The name of the endpoint in each project follows a rename unless the references say otherwise.
    let renamed = name != current.name;
    next.name = name.clone();
    next.url = url.to_string();
    next.description = description;
    next.data = data;
    next.scheme = scheme;
    next.parameters = parameters;
    next.projects = projects;
    if renamed && body.get("serviceEndpointProjectReferences").is_none_or(Value::is_null) {
        for r in &mut next.projects {
            if r.name == current.name {
                r.name = name.clone();
            }
        }
    }
    next.modified_by = caller.principal.clone();
    next.modified_at = super::bump(current.modified_at, now);
    next.revision += 1;
    Ok(next)
}

fn history(
    ctx: &Ctx,
    state: &State,
    req: &ApiRequest,
    org: &str,
    project: Uuid,
    raw: &str,
) -> Result<Response, Response> {
    access::caller(ctx, state, req, org, ENDPOINT_SCOPES, false)?;
    let id = parse_id(raw)?;
    let top = match req.query("top") {
        None => DEFAULT_HISTORY_TOP,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY_TOP).contains(&n) => n,
            _ => {
                return Err(VssError::argument(format!("top must be between 1 and {MAX_HISTORY_TOP}; got '{t}'."))
                    .into_response());
            }
        },
    };
    let before = match req.query("continuationToken").filter(|s| !s.is_empty()) {
        None => i64::MAX,
        Some(c) => match c.parse::<i64>() {
            Ok(n) if n <= 0 => i64::MAX,
            Ok(n) => n,
            Err(_) => {
                return Err(VssError::argument(format!("The continuation token '{c}' is not valid.")).into_response());
            }
        },
    };
    let mut records: Vec<&super::Execution> = state
        .consumers
        .endpoints
        .get(&id)
        .filter(|e| e.org == org.to_lowercase() && shared_with(e, project).is_some())
        .map(|e| e.history.iter().filter(|x| x.project_id == project && x.id < before).collect())
        .unwrap_or_default();
    records.sort_by_key(|x| std::cmp::Reverse(x.id));
    let more = records.len() > top;
    records.truncate(top);
    let value: Vec<Value> = records.iter().map(|x| execution_json(org, id, x)).collect();
    let mut r = (StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response();
    if more
        && let Some(last) = records.last()
        && let Ok(v) = HeaderValue::from_str(&last.id.to_string())
    {
        r.headers_mut().insert("x-ms-continuationtoken", v);
    }
    Ok(r)
}

fn execution_json(org: &str, endpoint: Uuid, x: &super::Execution) -> Value {
    let base = format!("https://dev.azure.com/{org}");
    json!({
        "endpointId": endpoint,
        "data": {
            "id": x.id,
            "planType": x.plan_type,
            "definition": {
                "_links": {
                    "web": { "href": format!("{base}/_permalink/_build/index?projectId={}&definitionId={}", x.project_id, x.definition_id) },
                    "self": { "href": format!("{base}/{}/_apis/build/Definitions/{}", x.project_id, x.definition_id) },
                },
                "id": x.definition_id,
                "name": x.definition_name,
            },
            "owner": {
                "_links": {
                    "web": { "href": format!("{base}/_permalink/_build/index?projectId={}&buildId={}", x.project_id, x.owner_id) },
                    "self": { "href": format!("{base}/{}/_apis/build/Builds/{}", x.project_id, x.owner_id) },
                },
                "id": x.owner_id,
                "name": x.owner_name,
            },
            "startTime": format_time(x.start_time),
            "finishTime": format_time(x.finish_time),
            "result": x.result,
        }
    })
}

/// The wire shape of an endpoint, as seen from one project (its name there) or the organization.
pub fn to_json(state: &State, e: &Endpoint, seen_from: Option<&ProjectRef>, mode: Mode) -> Value {
    let mut parameters = Map::new();
    for (k, v) in &e.parameters {
        if is_confidential(k) {
            if mode == Mode::Single {
                parameters.insert(k.clone(), Value::Null);
            }
        } else {
            parameters.insert(k.clone(), json!(v));
        }
    }
    let refs: Vec<Value> = e
        .projects
        .iter()
        .map(|r| {
            let name = state
                .consumers
                .projects
                .iter()
                .find(|p| p.id == r.project_id)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            json!({
                "projectReference": { "id": r.project_id, "name": name },
                "name": r.name,
                "description": r.description,
            })
        })
        .collect();
    json!({
        "data": e.data,
        "id": e.id,
        "name": seen_from.map(|r| r.name.as_str()).unwrap_or(&e.name),
        "type": e.kind,
        "url": e.url,
        "createdBy": access::identity_ref(state, &e.created_by),
        "description": e.description,
        "authorization": { "parameters": parameters, "scheme": e.scheme },
        "isShared": e.projects.len() > 1,
        "isReady": true,
        "owner": "Library",
        "serviceEndpointProjectReferences": refs,
        "creationDate": format_time(e.created_at),
        "modificationDate": format_time(e.modified_at),
        "modifiedBy": access::identity_ref(state, &e.modified_by),
    })
}
