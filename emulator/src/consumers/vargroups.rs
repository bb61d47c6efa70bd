//! Variable groups, distributedTask 7.2:
//!
//! - `GET {org}/{project}/_apis/distributedtask/variablegroups/{groupId}` — secret variables come back as
//!   `{"value": null, "isSecret": true}`; a group that does not exist (or is not shared with the project) is
//!   `200` with a `null` body, like service endpoints;
//! - `GET {org}/{project}/_apis/distributedtask/variablegroups` — by `groupIds`, or by `groupName` (with
//!   `*`), `actionFilter`, `$top`, `continuationToken`, `queryOrder`;
//! - `PUT {org}/_apis/distributedtask/variablegroups/{groupId}` (7.1+; the older project-level path too) —
//!   replaces the group's variables: a secret variable sent with a `null` value keeps its stored secret (what
//!   Microsoft's documented example relies on), variables left out are deleted, `modifiedOn` moves.

use super::access::{self, Caller, GROUP_SCOPES};
use super::{ConsumerApi, ProjectRef, VarGroup, Variable};
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
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

const MIN_VERSION: ApiVersion = ApiVersion { major: 4, minor: 1 };
/// Released in 7.0 (`api-version=7.0`, as the spec's create example sends).
const RELEASED: ApiVersion = ApiVersion { major: 7, minor: 0 };
pub const MAX_TOP: usize = 1000;

pub fn handle(ctx: &Ctx, req: &ApiRequest, org: &str, project: Option<&str>, rest: &[String]) -> Response {
    if let Err(e) = super::negotiate(req, MIN_VERSION, Some(RELEASED), "variablegroups") {
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
        (0, &Method::GET, Some(p)) => list(ctx, &state, req, org, p),
        (1, &Method::GET, Some(p)) => get(ctx, &state, req, org, p, &rest[0]),
        (1, &Method::PUT, _) => update(ctx, &mut state, req, org, project_id, &rest[0]),
        _ => Err(VssError::not_found(
            "ApiResourceNotFoundException",
            format!("API resource location for {} was not found.", req.path),
        )
        .into_response()),
    };
    r.unwrap_or_else(|e| e)
}

fn parse_id(raw: &str) -> Result<i32, Response> {
    raw.parse::<i32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| VssError::argument(format!("The variable group id '{raw}' is not valid.")).into_response())
}

fn shared_with(g: &VarGroup, project: Uuid) -> Option<&ProjectRef> {
    g.projects.iter().find(|p| p.project_id == project)
}

fn get(ctx: &Ctx, state: &State, req: &ApiRequest, org: &str, project: Uuid, raw: &str) -> Result<Response, Response> {
    access::caller(ctx, state, req, org, GROUP_SCOPES, false)?;
    let id = parse_id(raw)?;
    let body = state
        .consumers
        .groups
        .get(&id)
        .filter(|g| g.org == org.to_lowercase())
        .and_then(|g| shared_with(g, project).map(|r| to_json(state, g, Some(r))))
        .unwrap_or(Value::Null);
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn list(ctx: &Ctx, state: &State, req: &ApiRequest, org: &str, project: Uuid) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, GROUP_SCOPES, false)?;
    let bad = |m: String| VssError::argument(m).into_response();
    let ids: Option<Vec<i32>> = match req.query("groupIds") {
        None => None,
        Some(raw) => Some(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<i32>().map_err(|_| bad(format!("'{s}' is not a valid variable group id."))))
                .collect::<Result<_, _>>()?,
        ),
    };
    let name = req.query("groupName").filter(|s| !s.is_empty());
    let manage = match req.query("actionFilter").map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") | Some("use") | Some("view") => false,
        Some("manage") => true,
        Some(other) => return Err(bad(format!("The actionFilter '{other}' is not valid."))),
    };
    let top = match req.query("$top") {
        None => MAX_TOP,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| bad(format!("$top must be between 1 and {MAX_TOP}; got '{t}'.")))?,
    };
    let ascending = match req.query("queryOrder").map(str::to_ascii_lowercase).as_deref() {
        None | Some("iddescending") => false,
        Some("idascending") => true,
        Some(other) => return Err(bad(format!("The queryOrder '{other}' is not valid."))),
    };
    let from = match req.query("continuationToken").filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => Some(c.parse::<i32>().map_err(|_| bad(format!("The continuation token '{c}' is not valid.")))?),
    };
    let org_key = org.to_lowercase();
    let mut found: Vec<(&VarGroup, &ProjectRef)> = state
        .consumers
        .groups
        .values()
        .filter(|g| g.org == org_key)
        .filter_map(|g| shared_with(g, project).map(|r| (g, r)))
        .filter(|(g, _)| ids.as_ref().is_none_or(|ids| ids.contains(&g.id)))
        .filter(|(_, r)| name.is_none_or(|n| super::glob_match(n, &r.name)))
        .filter(|(g, _)| !manage || caller.may_administer(&g.administrators))
        .filter(|(g, _)| from.is_none_or(|f| if ascending { g.id >= f } else { g.id <= f }))
        .collect();
    if ascending {
        found.sort_by_key(|(g, _)| g.id);
    } else {
        found.sort_by_key(|(g, _)| std::cmp::Reverse(g.id));
    }
    let next = (found.len() > top).then(|| found[top].0.id);
    found.truncate(top);
    let value: Vec<Value> = found.iter().map(|(g, r)| to_json(state, g, Some(r))).collect();
    let mut resp = (StatusCode::OK, Json(json!({ "count": value.len(), "value": value }))).into_response();
    if let Some(n) = next
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        resp.headers_mut().insert("x-ms-continuationtoken", v);
    }
    Ok(resp)
}

fn update(
    ctx: &Ctx,
    state: &mut State,
    req: &ApiRequest,
    org: &str,
    project: Option<Uuid>,
    raw: &str,
) -> Result<Response, Response> {
    let caller = access::caller(ctx, state, req, org, GROUP_SCOPES, true)?;
    let id = parse_id(raw)?;
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| VssError::bad_json(&format!("The request body could not be read: {e}.")).into_response())?;
    if let Some(status) = state.consumers.take_fault(ConsumerApi::VariableGroups, &id.to_string(), req.method.as_str())
    {
        return Err(super::fault_error(status, &format!("Variable group {id}")).into_response());
    }
    let Some(current) = state
        .consumers
        .groups
        .get(&id)
        .filter(|g| g.org == org.to_lowercase())
        .filter(|g| project.is_none_or(|p| shared_with(g, p).is_some()))
    else {
        return Err(VssError::not_found(
            "VariableGroupNotFoundException",
            format!("Variable group with id {id} does not exist or you do not have permission to access it."),
        )
        .into_response());
    };
    if !caller.may_administer(&current.administrators) {
        return Err(access::no_rights(state, &caller, &format!("variable group {id}")));
    }
    let next = apply_update(state, current, &body, &caller, ctx.now()).map_err(IntoResponse::into_response)?;
    for v in next.variables.values().filter(|v| v.is_secret && !v.value.is_empty()) {
        ctx.secrets.record("consumer_value", &v.value);
    }
    state.consumers.groups.insert(id, next);
    ctx.changed();
    tracing::info!(group = id, by = caller.via, "variable group updated");
    let g = &state.consumers.groups[&id];
    Ok((StatusCode::OK, Json(to_json(state, g, project.and_then(|p| shared_with(g, p))))).into_response())
}

/// Applies a `VariableGroupParameters` body (nothing is written; the caller stores the result).
pub fn apply_update(
    state: &State,
    current: &VarGroup,
    body: &Value,
    caller: &Caller,
    now: OffsetDateTime,
) -> Result<VarGroup, VssError> {
    let Some(b) = body.as_object() else {
        return Err(VssError::argument("The variable group parameters must be a JSON object."));
    };
    let text = |name: &str| -> Result<Option<String>, VssError> {
        match b.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(VssError::argument(format!("variableGroupParameters.{name} must be a string."))),
        }
    };
    let name = text("name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| VssError::argument("Value cannot be null.\r\nParameter name: variableGroupParameters.Name"))?;
    if let Some(kind) = text("type")?
        && !kind.eq_ignore_ascii_case(&current.kind)
    {
        return Err(VssError::argument(format!(
            "The type of variable group {} cannot be changed from '{}' to '{kind}'.",
            current.id, current.kind
        )));
    }
    let key_vault = current.key_vault.is_some();
    let sent = match b.get("variables") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        _ => return Err(VssError::argument("A variable group must contain at least one variable.")),
    };
    let mut variables = BTreeMap::new();
    for (k, v) in sent {
        if k.trim().is_empty() {
            return Err(VssError::argument("Variable names cannot be empty."));
        }
        let Some(o) = v.as_object() else {
            return Err(VssError::argument(format!("Variable '{k}' must be an object with a value.")));
        };
        let flag = |n: &str| -> Result<bool, VssError> {
            match o.get(n) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(x)) => Ok(*x),
                Some(_) => Err(VssError::argument(format!("Variable '{k}': {n} must be true or false."))),
            }
        };
        let is_secret = flag("isSecret")?;
        let is_read_only = flag("isReadOnly")?;
        let stored = current.variables.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.value.clone());
        let value = match o.get("value") {
            Some(Value::String(s)) if key_vault && !s.is_empty() => {
                return Err(VssError::argument(format!(
                    "Variable '{k}' takes its value from the linked Azure Key Vault; it cannot be set here."
                )));
            }
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) if is_secret => stored.unwrap_or_default(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(VssError::argument(format!("Variable '{k}': value must be a string."))),
        };
        variables.insert(k.clone(), Variable { value, is_secret: is_secret || key_vault, is_read_only });
    }
    let projects = match b.get("variableGroupProjectReferences") {
        None | Some(Value::Null) => current.projects.clone(),
        Some(Value::Array(refs)) if !refs.is_empty() => {
            let mut out = Vec::new();
            for r in refs {
                let pr = &r["projectReference"];
                let key = pr["id"].as_str().or_else(|| pr["name"].as_str()).unwrap_or_default();
                let p = state.consumers.project(&current.org, key).ok_or_else(|| {
                    VssError::argument(format!("The project '{key}' of variableGroupProjectReferences does not exist."))
                })?;
                out.push(ProjectRef {
                    project_id: p.id,
                    name: r["name"].as_str().filter(|s| !s.trim().is_empty()).unwrap_or(&name).to_string(),
                    description: r["description"].as_str().unwrap_or_default().to_string(),
                });
            }
            out
        }
        Some(_) => return Err(VssError::argument("variableGroupProjectReferences must name at least one project.")),
    };
    let mut next = current.clone();
    let renamed = next.name != name;
    if renamed && b.get("variableGroupProjectReferences").is_none_or(Value::is_null) {
        let old = next.name.clone();
        next.projects = projects
            .into_iter()
            .map(|mut r| {
                if r.name == old {
                    r.name = name.clone();
                }
                r
            })
            .collect();
    } else {
        next.projects = projects;
    }
    next.name = name;
    next.description = text("description")?.unwrap_or_default();
    next.variables = variables;
    next.modified_by = caller.principal.clone();
    next.modified_at = super::bump(current.modified_at, now);
    next.revision += 1;
    Ok(next)
}

/// The wire shape of a group, as seen from one project (its name there) or the organization.
pub fn to_json(state: &State, g: &VarGroup, seen_from: Option<&ProjectRef>) -> Value {
    let mut variables = Map::new();
    for (k, v) in &g.variables {
        let mut o = Map::new();
        if v.is_secret {
            o.insert("value".into(), Value::Null);
            o.insert("isSecret".into(), json!(true));
        } else {
            o.insert("value".into(), json!(v.value));
        }
        if v.is_read_only {
            o.insert("isReadOnly".into(), json!(true));
        }
        variables.insert(k.clone(), Value::Object(o));
    }
    let refs: Vec<Value> = g
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
            json!({ "projectReference": { "id": r.project_id, "name": name }, "name": r.name, "description": r.description })
        })
        .collect();
    let mut v = json!({
        "variables": variables,
        "id": g.id,
        "type": g.kind,
        "name": seen_from.map(|r| r.name.as_str()).unwrap_or(&g.name),
        "description": g.description,
        "createdBy": access::identity_ref(state, &g.created_by),
        "createdOn": format_time(g.created_at),
        "modifiedBy": access::identity_ref(state, &g.modified_by),
        "modifiedOn": format_time(g.modified_at),
        "isShared": g.projects.len() > 1,
        "variableGroupProjectReferences": refs,
    });
    if let Some(kv) = &g.key_vault {
        v["providerData"] = json!({ "serviceEndpointId": kv.service_endpoint_id, "vault": kv.vault });
    }
    v
}
