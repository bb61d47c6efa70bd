//! The consumer part of the control API (`/_control/consumers/…`, loopback only, no authentication). It is
//! the only place where the values consumers hold (PATs in service endpoints, secret variables, GitHub
//! secrets) can be read — for tests; they are never logged.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /_control/consumers/seed` | the seed file's `consumers` section |
//! | `GET /_control/consumers` | everything, values included |
//! | `GET\|DELETE /_control/consumers/service-endpoints/{id}` | one endpoint with its values / delete it |
//! | `POST /_control/consumers/service-endpoints/{id}/runs` | a pipeline run using the endpoint |
//! | `POST /_control/consumers/service-endpoints/{id}/edit` | a person edits it |
//! | `PUT /_control/consumers/service-endpoints/{id}/administrators` | grant / take away the Administrator role |
//! | same four for `/_control/consumers/variable-groups/{id}` (no runs) | |
//! | `GET /_control/consumers/github/secrets` | GitHub secrets with values (`repository`, `environment`, `organization`) |
//! | `POST /_control/consumers/github/workflow-runs` | a workflow run reads its secret and calls Azure DevOps |
//! | `POST /_control/consumers/github/rotate-key` | a new key pair (the old `key_id` stops working) |
//! | `DELETE /_control/consumers/github/repositories/{owner}/{repo}` | the repository is gone (404) |
//! | `POST /_control/consumers/webhooks/{name}` | a webhook consumer receiving patrol's notification |
//! | `GET /_control/consumers/webhooks/{name}` | what it received, and its acknowledgements |
//! | `POST /_control/consumers/webhooks/{name}/ack` | it acknowledges (a signed callback to patrol) |
//! | `GET\|POST\|DELETE /_control/consumers/faults` | one-shot faults on one consumer object |

use super::seed::{self, ConsumerSeed};
use super::{ConsumerApi, Execution, Principal, QueuedFault, Variable, bump, pat_parameter};
use crate::audit_log::{self, Actor, Event};
use crate::context::Ctx;
use crate::control::Body;
use crate::devops::auth;
use crate::state::{PatRecord, State, User};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

type Ctl = AxState<Arc<Ctx>>;

/// How many deliveries and acknowledgements a webhook consumer remembers.
pub const WEBHOOK_MEMORY: usize = 200;

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/_control/consumers", get(dump))
        .route("/_control/consumers/seed", post(post_seed))
        .route("/_control/consumers/service-endpoints/{id}", get(get_endpoint).delete(delete_endpoint))
        .route("/_control/consumers/service-endpoints/{id}/runs", post(run_pipeline))
        .route("/_control/consumers/service-endpoints/{id}/edit", post(edit_endpoint))
        .route("/_control/consumers/service-endpoints/{id}/administrators", put(endpoint_admins))
        .route("/_control/consumers/variable-groups/{id}", get(get_group).delete(delete_group))
        .route("/_control/consumers/variable-groups/{id}/edit", post(edit_group))
        .route("/_control/consumers/variable-groups/{id}/administrators", put(group_admins))
        .route("/_control/consumers/github/secrets", get(github_secrets))
        .route("/_control/consumers/github/workflow-runs", post(workflow_run))
        .route("/_control/consumers/github/rotate-key", post(rotate_key))
        .route("/_control/consumers/github/repositories/{owner}/{repo}", axum::routing::delete(delete_repo))
        .route("/_control/consumers/webhooks/{name}", post(webhook_receive).get(webhook_get))
        .route("/_control/consumers/webhooks/{name}/ack", post(webhook_ack))
        .route("/_control/consumers/faults", get(get_faults).post(post_fault).delete(clear_faults))
        .with_state(ctx)
}

async fn post_seed(AxState(ctx): Ctl, Body(s): Body<ConsumerSeed>) -> Response {
    let mut state = ctx.state();
    match seed::apply(&ctx, &mut state, &s) {
        Ok(a) => ok(json!(a)),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

/// Drops key material and token hashes from a dump.
fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("secretKey");
            m.remove("hash");
            m.values_mut().for_each(scrub);
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

async fn dump(AxState(ctx): Ctl) -> Response {
    let state = ctx.state();
    let mut v = json!(state.consumers);
    scrub(&mut v);
    ok(v)
}

fn endpoint_view(state: &State, e: &super::Endpoint) -> Value {
    let mut v = json!(e);
    v["createdBy"] = json!(e.created_by.label(state));
    v["modifiedBy"] = json!(e.modified_by.label(state));
    v["administrators"] = json!(e.administrators.iter().map(|p| p.label(state)).collect::<Vec<_>>());
    v
}

fn group_view(state: &State, g: &super::VarGroup) -> Value {
    let mut v = json!(g);
    v["createdBy"] = json!(g.created_by.label(state));
    v["modifiedBy"] = json!(g.modified_by.label(state));
    v["administrators"] = json!(g.administrators.iter().map(|p| p.label(state)).collect::<Vec<_>>());
    v
}

async fn get_endpoint(AxState(ctx): Ctl, Path(id): Path<Uuid>) -> Response {
    let state = ctx.state();
    match state.consumers.endpoints.get(&id) {
        Some(e) => ok(endpoint_view(&state, e)),
        None => bad(StatusCode::NOT_FOUND, format!("service endpoint {id} is not known")),
    }
}

async fn delete_endpoint(AxState(ctx): Ctl, Path(id): Path<Uuid>) -> Response {
    let removed = ctx.state().consumers.endpoints.remove(&id).is_some();
    ctx.changed();
    if removed {
        ok(json!({ "deleted": id }))
    } else {
        bad(StatusCode::NOT_FOUND, format!("service endpoint {id} is not known"))
    }
}

async fn get_group(AxState(ctx): Ctl, Path(id): Path<i32>) -> Response {
    let state = ctx.state();
    match state.consumers.groups.get(&id) {
        Some(g) => ok(group_view(&state, g)),
        None => bad(StatusCode::NOT_FOUND, format!("variable group {id} is not known")),
    }
}

async fn delete_group(AxState(ctx): Ctl, Path(id): Path<i32>) -> Response {
    let removed = ctx.state().consumers.groups.remove(&id).is_some();
    ctx.changed();
    if removed {
        ok(json!({ "deleted": id }))
    } else {
        bad(StatusCode::NOT_FOUND, format!("variable group {id} is not known"))
    }
}

/// Records an audited action performed with a PAT (like `POST /_control/pats/use`).
fn record_pat_use(
    state: &mut State,
    org: &str,
    pat: &PatRecord,
    user: &User,
    action: &str,
    details: String,
    now: OffsetDateTime,
) {
    let actor = Actor {
        authentication_mechanism: format!("PAT_Unscoped authorizationId: {}", pat.id),
        ..Actor::user(user, "", Some("127.0.0.1".into()), Some("patrol-emulator consumer".into()))
    };
    let area = action.split('.').next().unwrap_or("Unknown").to_string();
    let mut data = serde_json::Map::new();
    data.insert("AuthorizationId".into(), json!(pat.id));
    let ev = Event { action_id: action, area: &area, category: "modify", details, data, at: now };
    audit_log::record(state, &org.to_lowercase(), &actor, ev, now);
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Run {
    /// Project name or id (default: the endpoint's first project).
    #[serde(default)]
    project: Option<String>,
    /// Pipeline (build definition) name.
    #[serde(default)]
    definition: Option<String>,
    /// The authorization parameter holding the PAT (default: by scheme).
    #[serde(default)]
    parameter: Option<String>,
    /// Also record this audited action as performed with the PAT (e.g. `Git.RefUpdatePoliciesBypassed`).
    #[serde(default)]
    audit_action_id: Option<String>,
}

/// A pipeline run using the endpoint: it authenticates with the PAT the endpoint holds; the run is appended
/// to the execution history as `succeeded` when that is an active PAT of the endpoint's organization, as
/// `failed` otherwise (then the answer is 422).
async fn run_pipeline(AxState(ctx): Ctl, Path(id): Path<Uuid>, Body(r): Body<Run>) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let Some(e) = state.consumers.endpoints.get(&id).cloned() else {
        return bad(StatusCode::NOT_FOUND, format!("service endpoint {id} is not known"));
    };
    let project = match &r.project {
        Some(p) => match state.consumers.project(&e.org, p) {
            Some(p) if e.projects.iter().any(|x| x.project_id == p.id) => p.id,
            _ => return bad(StatusCode::BAD_REQUEST, format!("the endpoint is not shared with project {p:?}")),
        },
        None => match e.projects.first() {
            Some(p) => p.project_id,
            None => return bad(StatusCode::BAD_REQUEST, "the endpoint is not shared with any project"),
        },
    };
    let Some(param) = r.parameter.as_deref().or_else(|| pat_parameter(&e.scheme)) else {
        return bad(StatusCode::BAD_REQUEST, format!("scheme {:?} holds no PAT; name the parameter", e.scheme));
    };
    let value = e.parameters.iter().find(|(k, _)| k.eq_ignore_ascii_case(param)).map(|(_, v)| v.clone());
    let checked = match &value {
        Some(v) => auth::check_pat(&state, v, &e.org, now),
        None => Err(format!("the endpoint has no {param:?} parameter")),
    };
    state.consumers.next_execution_id += 1;
    let exec_id = state.consumers.next_execution_id;
    let definition = r.definition.clone().unwrap_or_else(|| format!("{}-ci", e.name));
    let definition_id =
        (definition.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 1000 + 1) as i32;
    let (result, authorization_id, reason) = match &checked {
        Ok((pat, _)) => ("succeeded", Some(pat.id), None),
        Err(m) => ("failed", None, Some(m.clone())),
    };
    let rec = Execution {
        id: exec_id,
        project_id: project,
        plan_type: "Build".into(),
        definition_id,
        definition_name: definition,
        owner_id: i32::try_from(exec_id).unwrap_or(i32::MAX),
        owner_name: format!("{}", exec_id),
        start_time: now,
        finish_time: now,
        result: result.into(),
        authorization_id,
    };
    if let Some(ep) = state.consumers.endpoints.get_mut(&id) {
        ep.history.push(rec);
        if ep.history.len() > super::HISTORY_LIMIT {
            let excess = ep.history.len() - super::HISTORY_LIMIT;
            ep.history.drain(..excess);
        }
    }
    if let (Ok((pat, user)), Some(action)) = (&checked, &r.audit_action_id) {
        let details = format!("Pipeline run {exec_id} used service connection {} ({}).", e.name, e.id);
        record_pat_use(&mut state, &e.org, pat, user, action, details, now);
    }
    ctx.changed();
    let body =
        json!({ "executionId": exec_id, "result": result, "authorizationId": authorization_id, "reason": reason });
    let status = if checked.is_ok() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointEdit {
    /// The person editing (UPN).
    by: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// A person edits the endpoint in the portal (changes parameters, url or description): `modificationDate`
/// moves, so a conditional writer sees the concurrent edit.
async fn edit_endpoint(AxState(ctx): Ctl, Path(id): Path<Uuid>, Body(b): Body<EndpointEdit>) -> Response {
    let mut state = ctx.state();
    let by = match Principal::resolve(&state, &b.by) {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let now = ctx.now();
    let Some(e) = state.consumers.endpoints.get_mut(&id) else {
        return bad(StatusCode::NOT_FOUND, format!("service endpoint {id} is not known"));
    };
    for (k, v) in b.parameters {
        let key = e.parameters.keys().find(|n| n.eq_ignore_ascii_case(&k)).cloned().unwrap_or(k);
        if super::is_confidential(&key) {
            ctx.secrets.record("consumer_value", &v);
        }
        e.parameters.insert(key, v);
    }
    if let Some(u) = b.url {
        e.url = u;
    }
    if let Some(d) = b.description {
        e.description = d;
    }
    e.modified_by = by;
    e.modified_at = bump(e.modified_at, now);
    e.revision += 1;
    let v = json!({ "id": id, "revision": e.revision, "modificationDate": crate::wire::format_time(e.modified_at) });
    ctx.changed();
    ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupEdit {
    by: String,
    /// Variables to set (others are kept).
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    description: Option<String>,
}

async fn edit_group(AxState(ctx): Ctl, Path(id): Path<i32>, Body(b): Body<GroupEdit>) -> Response {
    let mut state = ctx.state();
    let by = match Principal::resolve(&state, &b.by) {
        Ok(p) => p,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let now = ctx.now();
    let Some(g) = state.consumers.groups.get_mut(&id) else {
        return bad(StatusCode::NOT_FOUND, format!("variable group {id} is not known"));
    };
    for (k, v) in b.variables {
        if v.is_secret {
            ctx.secrets.record("consumer_value", &v.value);
        }
        let key = g.variables.keys().find(|n| n.eq_ignore_ascii_case(&k)).cloned().unwrap_or(k);
        g.variables.insert(key, v);
    }
    if let Some(d) = b.description {
        g.description = d;
    }
    g.modified_by = by;
    g.modified_at = bump(g.modified_at, now);
    g.revision += 1;
    let v = json!({ "id": id, "revision": g.revision, "modifiedOn": crate::wire::format_time(g.modified_at) });
    ctx.changed();
    ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Admins {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

fn change_admins(
    state: &mut State,
    org: &str,
    set: &mut std::collections::BTreeSet<Principal>,
    b: &Admins,
) -> Result<Vec<String>, String> {
    let mut adds = Vec::new();
    for a in &b.add {
        adds.push(Principal::resolve(state, a)?);
    }
    let mut removes = Vec::new();
    for r in &b.remove {
        removes.push(Principal::resolve(state, r)?);
    }
    for p in adds {
        if let Principal::App(c) = &p {
            state.consumers.app_members.entry(org.to_string()).or_default().insert(c.clone());
        }
        set.insert(p);
    }
    for p in removes {
        set.remove(&p);
    }
    Ok(set.iter().map(|p| p.label(state)).collect())
}

async fn endpoint_admins(AxState(ctx): Ctl, Path(id): Path<Uuid>, Body(b): Body<Admins>) -> Response {
    let mut state = ctx.state();
    let Some(e) = state.consumers.endpoints.get(&id) else {
        return bad(StatusCode::NOT_FOUND, format!("service endpoint {id} is not known"));
    };
    let (org, mut set) = (e.org.clone(), e.administrators.clone());
    match change_admins(&mut state, &org, &mut set, &b) {
        Ok(labels) => {
            if let Some(e) = state.consumers.endpoints.get_mut(&id) {
                e.administrators = set;
            }
            ctx.changed();
            ok(json!({ "id": id, "administrators": labels }))
        }
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

async fn group_admins(AxState(ctx): Ctl, Path(id): Path<i32>, Body(b): Body<Admins>) -> Response {
    let mut state = ctx.state();
    let Some(g) = state.consumers.groups.get(&id) else {
        return bad(StatusCode::NOT_FOUND, format!("variable group {id} is not known"));
    };
    let (org, mut set) = (g.org.clone(), g.administrators.clone());
    match change_admins(&mut state, &org, &mut set, &b) {
        Ok(labels) => {
            if let Some(g) = state.consumers.groups.get_mut(&id) {
                g.administrators = set;
            }
            ctx.changed();
            ok(json!({ "id": id, "administrators": labels }))
        }
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretQuery {
    repository: Option<String>,
    environment: Option<String>,
    organization: Option<String>,
}

fn secret_view(name: &str, s: &super::github::GhSecret) -> Value {
    json!({
        "name": name,
        "value": s.value,
        "createdAt": crate::wire::format_time(s.created_at),
        "updatedAt": crate::wire::format_time(s.updated_at),
        "reads": s.reads,
        "lastReadAt": s.last_read_at.map(crate::wire::format_time),
    })
}

async fn github_secrets(AxState(ctx): Ctl, Query(q): Query<SecretQuery>) -> Response {
    let state = ctx.state();
    let gh = &state.consumers.github;
    let secrets: Vec<Value> = match (&q.repository, &q.environment, &q.organization) {
        (Some(r), env, None) => {
            let Some(repo) = gh.repos.get(&r.to_lowercase()) else {
                return bad(StatusCode::NOT_FOUND, format!("repository {r:?} is not known"));
            };
            let map = match env {
                Some(e) => match repo.environments.get(&e.to_lowercase()) {
                    Some(x) => &x.secrets,
                    None => return bad(StatusCode::NOT_FOUND, format!("environment {e:?} is not known")),
                },
                None => &repo.secrets,
            };
            map.iter().map(|(n, s)| secret_view(n, s)).collect()
        }
        (None, None, Some(o)) => match gh.orgs.get(&o.to_lowercase()) {
            Some(org) => org
                .secrets
                .iter()
                .map(|(n, s)| {
                    let mut v = secret_view(n, &s.secret);
                    v["visibility"] = json!(s.visibility);
                    v["selectedRepositoryIds"] = json!(s.selected);
                    v
                })
                .collect(),
            None => return bad(StatusCode::NOT_FOUND, format!("organization {o:?} is not known")),
        },
        _ => return bad(StatusCode::BAD_REQUEST, "give repository (and optionally environment), or organization"),
    };
    ok(json!({ "count": secrets.len(), "value": secrets }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkflowRun {
    /// `owner/repo` the workflow runs in.
    repository: String,
    #[serde(default)]
    environment: Option<String>,
    /// The secret's name.
    secret: String,
    /// The Azure DevOps organization the workflow calls with the PAT.
    devops_organization: String,
    #[serde(default)]
    audit_action_id: Option<String>,
}

/// A workflow run reads its secret (environment, repository, then organization secret) and calls Azure
/// DevOps with it: 200 when that is an active PAT of the organization, 422 otherwise, 404 without a secret.
async fn workflow_run(AxState(ctx): Ctl, Body(w): Body<WorkflowRun>) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let found = state
        .consumers
        .github
        .resolve_for_workflow(&w.repository, w.environment.as_deref(), &w.secret)
        .map(|(source, s)| (source, s.value.clone()));
    let Some((source, value)) = found else {
        return bad(StatusCode::NOT_FOUND, format!("the workflow sees no secret {:?}", w.secret));
    };
    mark_read(&mut state, &w, source, now);
    let checked = auth::check_pat(&state, &value, &w.devops_organization, now);
    if let (Ok((pat, user)), Some(action)) = (&checked, &w.audit_action_id) {
        let details = format!("A GitHub Actions workflow of {} used secret {}.", w.repository, w.secret.to_uppercase());
        record_pat_use(&mut state, &w.devops_organization, pat, user, action, details, now);
    }
    ctx.changed();
    match checked {
        Ok((pat, _)) => ok(json!({ "source": source, "result": "succeeded", "authorizationId": pat.id })),
        Err(m) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "source": source, "result": "failed", "reason": m })))
                .into_response()
        }
    }
}

fn mark_read(state: &mut State, w: &WorkflowRun, source: &str, now: OffsetDateTime) {
    let gh = &mut state.consumers.github;
    let name = w.secret.to_uppercase();
    let s = match source {
        "environment" => gh
            .repos
            .get_mut(&w.repository.to_lowercase())
            .and_then(|r| r.environments.get_mut(&w.environment.clone().unwrap_or_default().to_lowercase()))
            .and_then(|e| e.secrets.get_mut(&name)),
        "repository" => gh.repos.get_mut(&w.repository.to_lowercase()).and_then(|r| r.secrets.get_mut(&name)),
        _ => {
            let owner = w.repository.split('/').next().unwrap_or_default().to_lowercase();
            gh.orgs.get_mut(&owner).and_then(|o| o.secrets.get_mut(&name)).map(|s| &mut s.secret)
        }
    };
    if let Some(s) = s {
        s.reads += 1;
        s.last_read_at = Some(now);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateKey {
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    organization: Option<String>,
}

async fn rotate_key(AxState(ctx): Ctl, Body(b): Body<RotateKey>) -> Response {
    let mut state = ctx.state();
    let gh = &mut state.consumers.github;
    let mut counter = gh.next_key_id;
    let key = super::github::GhKey::generate(&mut counter);
    gh.next_key_id = counter;
    let slot = match (&b.repository, &b.environment, &b.organization) {
        (Some(r), Some(e), None) => gh
            .repos
            .get_mut(&r.to_lowercase())
            .and_then(|x| x.environments.get_mut(&e.to_lowercase()))
            .map(|x| &mut x.key),
        (Some(r), None, None) => gh.repos.get_mut(&r.to_lowercase()).map(|x| &mut x.key),
        (None, None, Some(o)) => gh.orgs.get_mut(&o.to_lowercase()).map(|x| &mut x.key),
        _ => return bad(StatusCode::BAD_REQUEST, "give repository (and optionally environment), or organization"),
    };
    let Some(slot) = slot else { return bad(StatusCode::NOT_FOUND, "no such repository, environment or organization") };
    *slot = key.clone();
    ctx.changed();
    ok(json!({ "keyId": key.key_id }))
}

async fn delete_repo(AxState(ctx): Ctl, Path((owner, repo)): Path<(String, String)>) -> Response {
    let mut state = ctx.state();
    let key = format!("{owner}/{repo}").to_lowercase();
    match state.consumers.github.repos.get_mut(&key) {
        Some(r) => {
            r.deleted = true;
            ctx.changed();
            ok(json!({ "deleted": key }))
        }
        None => bad(StatusCode::NOT_FOUND, format!("repository {key:?} is not known")),
    }
}

/// A webhook consumer: what patrol sent it, and the acknowledgements it sent back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebhookConsumer {
    pub received: Vec<Delivery>,
    pub acks: Vec<Ack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub url: String,
    pub status: Option<u16>,
    pub error: Option<String>,
}

async fn webhook_receive(
    AxState(ctx): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let status = state.consumers.take_fault(ConsumerApi::Webhooks, &name, "POST");
    let headers: BTreeMap<String, String> =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))).collect();
    let body =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let w = state.consumers.webhooks.entry(name.to_lowercase()).or_default();
    if let Some(s) = status {
        return bad(StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "fault injected");
    }
    w.received.push(Delivery { at: now, headers, body });
    if w.received.len() > WEBHOOK_MEMORY {
        w.received.remove(0);
    }
    ctx.changed();
    ok(json!({ "received": true }))
}

async fn webhook_get(AxState(ctx): Ctl, Path(name): Path<String>) -> Response {
    let state = ctx.state();
    match state.consumers.webhooks.get(&name.to_lowercase()) {
        Some(w) => ok(json!(w)),
        None => ok(json!(WebhookConsumer::default())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AckRequest {
    /// Where to send the acknowledgement (a loopback `http://` URL, e.g. patrol's `RotateHttp`).
    url: String,
    body: Value,
    /// Extra headers, sent as given.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Signs the body: `{signatureHeader}: sha256=<hex HMAC-SHA256(key, "{timestamp}.{body}")>` and
    /// `{timestampHeader}: <unix seconds of the virtual clock>`.
    #[serde(default)]
    hmac_key: Option<String>,
    #[serde(default = "sig_header")]
    signature_header: String,
    #[serde(default = "ts_header")]
    timestamp_header: String,
    /// Signs with this unix time instead of the virtual clock's (a consumer with a wrong clock, a replay).
    #[serde(default)]
    timestamp: Option<i64>,
    /// `direct` (default): POST to `url` as is. `functions-host`: as the Azure Functions host hands the
    /// consumer's request to a custom handler — POST `url` (the handler's `/RotateHttp`) with
    /// `{"Data": {"req": {Url, Method, Query, Headers (arrays), Params, Identities, Body (the text)}},
    /// "Metadata": {…, "sys": {MethodName, UtcNow (virtual clock), RandGuid}}}`; the consumer's answer is
    /// then `Outputs.res` (`status` its `statusCode`, `body` its body).
    #[serde(default)]
    via: Option<String>,
    /// `functions-host`: the route's `{secret}` (`Params.secret`) and the function key (`Query.code`).
    #[serde(default)]
    route_secret: Option<String>,
    #[serde(default)]
    function_key: Option<String>,
}

fn sig_header() -> String {
    "X-Patrol-Signature".into()
}

fn ts_header() -> String {
    "X-Patrol-Timestamp".into()
}

/// The webhook consumer acknowledges: POSTs `body` to `url` (loopback only), signed when `hmacKey` is given.
async fn webhook_ack(AxState(ctx): Ctl, Path(name): Path<String>, Body(a): Body<AckRequest>) -> Response {
    use hmac::Mac;
    let Ok(url) = url::Url::parse(&a.url) else { return bad(StatusCode::BAD_REQUEST, "url is not a URL") };
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if !loopback || !matches!(url.scheme(), "http" | "https") {
        return bad(StatusCode::BAD_REQUEST, "acknowledgements go to loopback http(s) URLs only");
    }
    let body = a.body.to_string();
    let mut headers: Vec<(String, String)> = vec![("Content-Type".into(), "application/json".into())];
    headers.extend(a.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(key) = &a.hmac_key {
        let ts = a.timestamp.unwrap_or_else(|| ctx.now().unix_timestamp()).to_string();
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
            return bad(StatusCode::BAD_REQUEST, "hmacKey is not usable");
        };
        mac.update(format!("{ts}.{body}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        headers.push((a.timestamp_header.clone(), ts));
        headers.push((a.signature_header.clone(), format!("sha256={sig}")));
    }
    let client = reqwest::Client::new();
    let (status, error, answer) = match a.via.as_deref().unwrap_or("direct") {
        "direct" => {
            let mut req = client.post(url.clone());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            match req.body(body).timeout(std::time::Duration::from_secs(30)).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (Some(status), None, r.text().await.ok().map(Value::String))
                }
                Err(e) => (None, Some(e.to_string()), None),
            }
        }
        "functions-host" => functions_host_ack(&ctx, &client, &url, &a, &headers, body).await,
        other => return bad(StatusCode::BAD_REQUEST, format!("via {other:?} is not one of direct, functions-host")),
    };
    let now = ctx.now();
    let mut state = ctx.state();
    let w = state.consumers.webhooks.entry(name.to_lowercase()).or_default();
    w.acks.push(Ack { at: now, url: url.to_string(), status, error: error.clone() });
    if w.acks.len() > WEBHOOK_MEMORY {
        w.acks.remove(0);
    }
    ctx.changed();
    ok(json!({ "status": status, "error": error, "body": answer }))
}

/// The request as the Functions host passes an HTTP trigger to a custom handler (`Data.req`), the
/// consumer's answer taken from the handler's `Outputs.res`.
async fn functions_host_ack(
    ctx: &Ctx,
    client: &reqwest::Client,
    url: &url::Url,
    a: &AckRequest,
    headers: &[(String, String)],
    body: String,
) -> (Option<u16>, Option<String>, Option<Value>) {
    let mut hs = serde_json::Map::new();
    for (k, v) in headers {
        hs.insert(k.clone(), json!([v]));
    }
    hs.insert("Host".into(), json!(["patrol-func.azurewebsites.net"]));
    let secret = a.route_secret.clone().unwrap_or_default();
    let mut query = serde_json::Map::new();
    if let Some(code) = &a.function_key {
        query.insert("code".into(), json!(code));
    }
    let now = ctx.now();
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let invocation = json!({
        "Data": { "req": {
            "Url": format!("https://patrol-func.azurewebsites.net/api/rotate/{secret}"),
            "Method": "POST",
            "Query": query,
            "Headers": hs,
            "Params": { "secret": secret },
            "Identities": [{ "AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Claims": [] }],
            "Body": body,
        } },
        "Metadata": {
            "secret": secret,
            "sys": { "MethodName": "RotateHttp", "UtcNow": utc, "RandGuid": uuid::Uuid::new_v4().to_string() },
        },
    });
    let sent = client
        .post(url.clone())
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(&invocation)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) => return (None, Some(e.to_string()), None),
    };
    // Non-2xx from the handler: the host fails the invocation and the caller gets 500.
    if !r.status().is_success() {
        return (Some(500), Some(format!("the handler answered HTTP {}", r.status().as_u16())), None);
    }
    let Ok(envelope) = r.json::<Value>().await else {
        return (Some(500), Some("the handler's answer is not JSON".into()), None);
    };
    let res = &envelope["Outputs"]["res"];
    let status = res["statusCode"]
        .as_u64()
        .or_else(|| res["statusCode"].as_str().and_then(|s| s.parse().ok()))
        .map_or(200, |s| s as u16);
    let body = res["body"].as_str().map(|b| serde_json::from_str(b).unwrap_or_else(|_| json!(b)));
    (Some(status), None, body)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewFault {
    api: ConsumerApi,
    /// Endpoint id, group id, `owner/repo`, `owner/repo/environment`, `org:login`, or a webhook name.
    target: String,
    /// 403, 404, 409, 429 or 5xx.
    status: u16,
    #[serde(default)]
    method: Option<String>,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn post_fault(AxState(ctx): Ctl, Body(f): Body<NewFault>) -> Response {
    if !matches!(f.status, 403 | 404 | 409 | 429 | 500..=599) {
        return bad(StatusCode::BAD_REQUEST, "status must be 403, 404, 409, 429 or 5xx");
    }
    if f.count == 0 || f.count > 100_000 {
        return bad(StatusCode::BAD_REQUEST, "count must be between 1 and 100000");
    }
    let q = QueuedFault {
        api: f.api,
        target: f.target.to_lowercase(),
        status: f.status,
        method: f.method,
        remaining: f.count,
    };
    ctx.state().consumers.faults.push(q.clone());
    ok(json!(q))
}

async fn get_faults(AxState(ctx): Ctl) -> Response {
    ok(json!({ "pending": ctx.state().consumers.faults }))
}

async fn clear_faults(AxState(ctx): Ctl) -> Response {
    ctx.state().consumers.faults.clear();
    ok(json!({ "cleared": true }))
}
