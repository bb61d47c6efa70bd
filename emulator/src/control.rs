//! The control API (`/_control/…`, JSON, loopback only, no authentication): seed the world, set
//! tenant/organization policies, approve device codes, mint tokens for seeded users and applications,
//! revoke or expire refresh tokens, move the virtual clock, simulate a consumer using a PAT, report a
//! leaked PAT, configure faults and rate limits, list minted secrets (for leak scanning) and stats.

use crate::audit_log::{self, Actor, Event};
use crate::context::{Ctx, DeviceStatus, Lifetimes, Stats};
use crate::devops::auth;
use crate::entra::{self, ScopeRequest};
use crate::faults::{FaultSettings, OnceFault};
use crate::ratelimit::RateLimitSettings;
use crate::seed::{self, Seed, SeedApp, SeedPat};
use crate::state::{OrgPolicy, RefreshStatus, Revoker, TenantPolicy};
use crate::wire::{format_time, parse_time};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use time::Duration;

type Ctl = State<Arc<Ctx>>;

/// Largest control request body (bytes).
pub const CONTROL_BODY_LIMIT: usize = 256 << 20;

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/_control/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/_control/seed", post(post_seed))
        .route("/_control/orgs", post(post_org))
        .route("/_control/orgs/{org}/policy", get(get_org_policy).put(put_org_policy))
        .route("/_control/orgs/{org}/audit", post(post_org_audit))
        .route("/_control/users", post(post_user))
        .route("/_control/users/{upn}/interaction", put(put_interaction))
        .route("/_control/apps", post(post_app))
        .route("/_control/pats", post(post_pat))
        .route("/_control/pats/use", post(use_pat))
        .route("/_control/pats/{id}/discover", post(discover_pat))
        .route("/_control/policies/tenant", get(get_tenant_policy).put(put_tenant_policy))
        .route("/_control/devicecodes/approve", post(approve_device))
        .route("/_control/devicecodes/deny", post(deny_device))
        .route("/_control/tokens", post(mint_user_token))
        .route("/_control/app-tokens", post(mint_app_token))
        .route("/_control/refresh-tokens/revoke", post(revoke_refresh))
        .route("/_control/refresh-tokens/expire", post(expire_refresh))
        .route("/_control/clock", get(get_clock))
        .route("/_control/clock/advance", post(advance_clock))
        .route("/_control/clock/set", post(set_clock))
        .route("/_control/lifetimes", get(get_lifetimes).put(put_lifetimes))
        .route("/_control/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/_control/faults/once", post(push_fault))
        .route("/_control/ratelimit", get(get_ratelimit).put(put_ratelimit))
        .route("/_control/secrets", get(list_secrets))
        .route("/_control/stats", get(stats))
        .fallback(|| async { bad(StatusCode::NOT_FOUND, "no such control endpoint") })
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), count))
        // Seeds of large worlds (e.g. 100,000 PATs) exceed axum's 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
        .with_state(ctx)
}

async fn count(State(ctx): Ctl, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    Stats::bump(&ctx.stats.control);
    next.run(req).await
}

/// JSON body extraction with a plain 400 naming the problem.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Response;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
    }
}

async fn post_seed(State(ctx): Ctl, Body(s): Body<Seed>) -> Response {
    let mut state = ctx.state();
    match seed::apply(&ctx, &mut state, &s) {
        Ok(a) => ok(json!(a)),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewOrg {
    name: String,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    policy: Option<OrgPolicy>,
}

async fn post_org(State(ctx): Ctl, Body(o): Body<NewOrg>) -> Response {
    let mut state = ctx.state();
    let r = state.add_org(&o.name, o.id, o.policy.unwrap_or_default()).map(|o| json!({ "id": o.id, "name": o.name }));
    ctx.changed();
    r.map(ok).unwrap_or_else(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn get_org_policy(State(ctx): Ctl, Path(org): Path<String>) -> Response {
    match ctx.state().org(&org) {
        Some(o) => ok(json!(o.policy)),
        None => bad(StatusCode::NOT_FOUND, format!("organization {org:?} is not known")),
    }
}

async fn put_org_policy(State(ctx): Ctl, Path(org): Path<String>, Body(p): Body<OrgPolicy>) -> Response {
    let mut state = ctx.state();
    let Some(o) = state.org_mut(&org) else {
        return bad(StatusCode::NOT_FOUND, format!("organization {org:?} is not known"));
    };
    o.policy = p.clone();
    ctx.changed();
    ok(json!(p))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUser {
    upn: String,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    organizations: Vec<String>,
    #[serde(default)]
    admin_of: Vec<String>,
}

async fn post_user(State(ctx): Ctl, Body(u): Body<NewUser>) -> Response {
    let mut state = ctx.state();
    let r = state
        .add_user(&u.upn, u.display_name.as_deref(), &u.organizations, &u.admin_of, u.id)
        .map(|u| json!({ "id": u.id, "upn": u.upn, "descriptor": u.descriptor() }));
    ctx.changed();
    r.map(ok).unwrap_or_else(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

#[derive(Deserialize)]
struct Interaction {
    required: bool,
}

async fn put_interaction(State(ctx): Ctl, Path(upn): Path<String>, Body(b): Body<Interaction>) -> Response {
    let mut state = ctx.state();
    let Some(id) = state.user_by_upn(&upn).map(|u| u.id) else {
        return bad(StatusCode::NOT_FOUND, format!("user {upn:?} is not known"));
    };
    if let Some(u) = state.users.get_mut(&id) {
        u.require_interaction = b.required;
    }
    ctx.changed();
    ok(json!({ "upn": upn, "required": b.required }))
}

async fn post_app(State(ctx): Ctl, Body(a): Body<SeedApp>) -> Response {
    let mut state = ctx.state();
    let r = seed::add_app(&ctx, &mut state, &a);
    ctx.changed();
    r.map(|m| ok(json!(m))).unwrap_or_else(|e| bad(StatusCode::BAD_REQUEST, e))
}

async fn post_pat(State(ctx): Ctl, Body(p): Body<SeedPat>) -> Response {
    let mut state = ctx.state();
    let r = seed::add_pat(&ctx, &mut state, &p);
    ctx.changed();
    r.map(|m| ok(json!(m))).unwrap_or_else(|e| bad(StatusCode::BAD_REQUEST, e))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UsePat {
    token: String,
    organization: String,
    #[serde(default)]
    action_id: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    /// Extra `data` of the entry (e.g. `{"PipelineName": "build-a"}` for a pipeline's use).
    #[serde(default)]
    data: serde_json::Map<String, Value>,
}

/// A consumer uses a PAT for an audited action: recorded with `PAT_Unscoped authorizationId: <id>`.
async fn use_pat(State(ctx): Ctl, Body(u): Body<UsePat>) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let (pat, user) = match auth::check_pat(&state, &u.token, &u.organization, now) {
        Ok(x) => x,
        Err(msg) => return bad(StatusCode::UNAUTHORIZED, msg),
    };
    let action = u.action_id.unwrap_or_else(|| "Git.RefUpdatePoliciesBypassed".into());
    let actor = Actor {
        authentication_mechanism: format!("PAT_Unscoped authorizationId: {}", pat.id),
        ..Actor::user(&user, "", u.ip_address.or(Some("127.0.0.1".into())), u.user_agent)
    };
    let area = action.split('.').next().unwrap_or("Unknown").to_string();
    let mut data = u.data;
    data.insert("AuthorizationId".into(), json!(pat.id));
    let ev = Event {
        action_id: &action,
        area: &area,
        category: "modify",
        details: u
            .details
            .unwrap_or_else(|| format!("{} performed {action} with a personal access token.", user.display_name)),
        data,
        at: now,
    };
    audit_log::record(&mut state, &u.organization.to_lowercase(), &actor, ev, now);
    ctx.changed();
    ok(json!({ "authorizationId": pat.id, "user": user.upn, "recorded": true }))
}

/// GitHub secret scanning found the PAT in a public repository.
async fn discover_pat(State(ctx): Ctl, Path(id): Path<uuid::Uuid>) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let Some(pat) = state.pats.get(&id).cloned() else {
        return bad(StatusCode::NOT_FOUND, format!("PAT {id} is not known"));
    };
    let Some(owner) = state.users.get(&pat.owner).cloned() else {
        return bad(StatusCode::NOT_FOUND, "owner not known");
    };
    let Some(org_key) = state.org_by_id(pat.org).map(|o| o.name.to_lowercase()) else {
        return bad(StatusCode::NOT_FOUND, "org not known");
    };
    let ev = audit_log::pat_event("Token.PatPublicDiscoveryEvent", &pat, &owner, now);
    audit_log::record(&mut state, &org_key, &Actor::system(), ev, now);
    let revoke = state.tenant_policy.auto_revoke_leaked && state.mark_revoked(id, now, Revoker::System);
    if revoke {
        let ev = audit_log::pat_event("Token.PatSystemRevokeEvent", &pat, &owner, now);
        audit_log::record(&mut state, &org_key, &Actor::system(), ev, now);
    }
    ctx.changed();
    ok(json!({ "authorizationId": id, "revoked": revoke }))
}

async fn get_tenant_policy(State(ctx): Ctl) -> Response {
    let s = ctx.state();
    ok(json!({ "tenantId": s.tenant_id, "policy": s.tenant_policy }))
}

async fn put_tenant_policy(State(ctx): Ctl, Body(p): Body<TenantPolicy>) -> Response {
    if p.max_lifespan_days == Some(0) {
        return bad(StatusCode::BAD_REQUEST, "maxLifespanDays must be at least 1");
    }
    ctx.state().tenant_policy = p.clone();
    ctx.changed();
    ok(json!(p))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Approve {
    user_code: String,
    #[serde(default)]
    upn: Option<String>,
}

async fn approve_device(State(ctx): Ctl, Body(a): Body<Approve>) -> Response {
    let Some(upn) = a.upn else { return bad(StatusCode::BAD_REQUEST, "upn is required") };
    let Some(user) = ctx.state().user_by_upn(&upn).map(|u| u.id) else {
        return bad(StatusCode::NOT_FOUND, format!("user {upn:?} is not known"));
    };
    set_device(&ctx, &a.user_code, DeviceStatus::Approved(user))
}

async fn deny_device(State(ctx): Ctl, Body(a): Body<Approve>) -> Response {
    set_device(&ctx, &a.user_code, DeviceStatus::Denied)
}

fn set_device(ctx: &Ctx, user_code: &str, status: DeviceStatus) -> Response {
    let now = ctx.now();
    let mut codes = ctx.device_codes.lock().unwrap_or_else(|p| p.into_inner());
    match codes.values_mut().find(|d| d.user_code.eq_ignore_ascii_case(user_code.trim())) {
        Some(d) if d.status == DeviceStatus::Pending && d.expires_at > now => {
            d.status = status;
            ok(json!({ "userCode": d.user_code, "status": "done" }))
        }
        Some(_) => bad(StatusCode::CONFLICT, "the device code is no longer pending"),
        None => bad(StatusCode::NOT_FOUND, format!("no pending device code {user_code:?}")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintUser {
    upn: String,
    #[serde(default)]
    client_id: Option<String>,
    /// Entra scope string, e.g. "499b84ac-…/vso.pats 499b84ac-…/vso.pats_manage offline_access".
    scope: String,
    #[serde(default)]
    lifetime_secs: Option<u64>,
}

const DEFAULT_CLIENT: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

async fn mint_user_token(State(ctx): Ctl, Body(m): Body<MintUser>) -> Response {
    if m.lifetime_secs.is_some_and(|s| !(1..=86_400).contains(&s)) {
        return bad(StatusCode::BAD_REQUEST, "lifetimeSecs must be between 1 and 86400");
    }
    let scope: ScopeRequest = match entra::parse_scopes(&m.scope) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.description),
    };
    let mut state = ctx.state();
    let Some(user) = state.user_by_upn(&m.upn).cloned() else {
        return bad(StatusCode::NOT_FOUND, format!("user {:?} is not known", m.upn));
    };
    let client = m.client_id.unwrap_or_else(|| DEFAULT_CLIENT.into());
    let set =
        entra::issue_user_tokens(&ctx, &mut state, &user, &client, &scope, m.lifetime_secs, &ctx.tokens.authority());
    let mut v = set.to_json();
    v["expires_at"] = json!(format_time(ctx.now() + Duration::seconds(set.expires_in as i64)));
    v["client_id"] = json!(client);
    ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintApp {
    client_id: String,
    resource: String,
    #[serde(default)]
    lifetime_secs: Option<u64>,
}

async fn mint_app_token(State(ctx): Ctl, Body(m): Body<MintApp>) -> Response {
    if !ctx.state().apps.contains_key(&m.client_id.to_lowercase()) {
        return bad(StatusCode::NOT_FOUND, format!("application {} is not known", m.client_id));
    }
    if m.lifetime_secs.is_some_and(|s| !(1..=86_400).contains(&s)) {
        return bad(StatusCode::BAD_REQUEST, "lifetimeSecs must be between 1 and 86400");
    }
    let resource = match entra::parse_scopes(&format!("{}/.default", m.resource.trim_end_matches('/'))) {
        Ok(s) => s.resource,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.description),
    };
    ok(entra::issue_app_token(&ctx, &m.client_id, &resource, m.lifetime_secs).to_json())
}

#[derive(Deserialize)]
struct ByUpn {
    upn: String,
}

async fn revoke_refresh(State(ctx): Ctl, Body(b): Body<ByUpn>) -> Response {
    refresh_change(&ctx, &b.upn, |r, _| r.status = RefreshStatus::Revoked)
}

async fn expire_refresh(State(ctx): Ctl, Body(b): Body<ByUpn>) -> Response {
    refresh_change(&ctx, &b.upn, |r, now| r.expires_at = now)
}

fn refresh_change(
    ctx: &Ctx,
    upn: &str,
    f: impl Fn(&mut crate::state::RefreshRecord, time::OffsetDateTime),
) -> Response {
    let now = ctx.now();
    let mut state = ctx.state();
    let Some(uid) = state.user_by_upn(upn).map(|u| u.id) else {
        return bad(StatusCode::NOT_FOUND, format!("user {upn:?} is not known"));
    };
    let mut n = 0;
    // Every refresh token still valid: used ones stay valid (as in Entra) unless strict mode redeemed them.
    for r in state.refresh_tokens.values_mut().filter(|r| r.user == uid && r.status != RefreshStatus::Revoked) {
        f(r, now);
        n += 1;
    }
    ctx.changed();
    ok(json!({ "upn": upn, "affected": n }))
}

async fn get_clock(State(ctx): Ctl) -> Response {
    ok(json!({ "now": format_time(ctx.now()) }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(ctx): Ctl, Body(a): Body<Advance>) -> Response {
    if a.seconds < 0 || a.seconds > 10 * 365 * 86_400 {
        return bad(
            StatusCode::BAD_REQUEST,
            "seconds must be between 0 and ten years (the clock never moves backward)",
        );
    }
    ctx.clock.advance(Duration::seconds(a.seconds));
    after_clock_move(&ctx)
}

#[derive(Deserialize)]
struct SetClock {
    time: String,
}

async fn set_clock(State(ctx): Ctl, Body(s): Body<SetClock>) -> Response {
    let Some(t) = parse_time(&s.time) else {
        return bad(StatusCode::BAD_REQUEST, format!("{:?} is not an RFC 3339 time", s.time));
    };
    if t < ctx.now() {
        return bad(StatusCode::BAD_REQUEST, "the clock never moves backward");
    }
    ctx.clock.set(t);
    after_clock_move(&ctx)
}

fn after_clock_move(ctx: &Ctx) -> Response {
    drop(ctx.state()); // records expiries that became due
    ctx.tokens.sweep();
    ok(json!({ "now": format_time(ctx.now()) }))
}

async fn get_lifetimes(State(ctx): Ctl) -> Response {
    ok(json!(ctx.lifetimes()))
}

async fn put_lifetimes(State(ctx): Ctl, Body(l): Body<Lifetimes>) -> Response {
    if let Err(e) = l.validate() {
        return bad(StatusCode::BAD_REQUEST, e);
    }
    *ctx.lifetimes.write().unwrap_or_else(|p| p.into_inner()) = l.clone();
    ok(json!(l))
}

async fn get_faults(State(ctx): Ctl) -> Response {
    ok(json!({ "settings": ctx.faults.settings(), "pending": ctx.faults.pending() }))
}

async fn put_faults(State(ctx): Ctl, Body(f): Body<FaultSettings>) -> Response {
    if let Err(e) = f.validate() {
        return bad(StatusCode::BAD_REQUEST, e);
    }
    ctx.faults.set(f.clone());
    ok(json!(f))
}

async fn clear_faults(State(ctx): Ctl) -> Response {
    ctx.faults.clear();
    ok(json!({ "cleared": true }))
}

async fn push_fault(State(ctx): Ctl, Body(f): Body<OnceFault>) -> Response {
    if let Err(e) = f.validate() {
        return bad(StatusCode::BAD_REQUEST, e);
    }
    ctx.faults.push(f.clone());
    ok(json!(f))
}

async fn get_ratelimit(State(ctx): Ctl) -> Response {
    ok(json!(ctx.limiter.settings()))
}

async fn put_ratelimit(State(ctx): Ctl, Body(r): Body<RateLimitSettings>) -> Response {
    if let Err(e) = r.validate() {
        return bad(StatusCode::BAD_REQUEST, e);
    }
    ctx.limiter.set(r.clone());
    ok(json!(r))
}

async fn list_secrets(State(ctx): Ctl) -> Response {
    let v: Vec<Value> = ctx.secrets.list().into_iter().map(|(k, v)| json!({ "kind": k, "value": v })).collect();
    ok(json!({ "count": v.len(), "value": v }))
}

async fn stats(State(ctx): Ctl) -> Response {
    let mut v = ctx.stats.snapshot();
    let s = ctx.state();
    v["pats"] = json!(s.pats.len());
    v["users"] = json!(s.users.len());
    v["organizations"] = json!(s.orgs.len());
    v["auditEntries"] = json!(s.orgs.values().map(|o| o.audit.len()).sum::<usize>());
    v["refreshTokens"] = json!(s.refresh_tokens.len());
    v["serviceEndpoints"] = json!(s.consumers.endpoints.len());
    v["variableGroups"] = json!(s.consumers.groups.len());
    ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuditedAction {
    /// e.g. `OrganizationPolicy.PolicyValueUpdated`, `AuditLog.StreamDisabledByUser`, `AuditLog.StreamDeleted`.
    action_id: String,
    /// A known user (by UPN); without one, Azure DevOps itself is the actor (e.g. `StreamDisabledBySystem`).
    #[serde(default)]
    actor_upn: Option<String>,
    /// How the actor signed in; the portal's default is `FedAuth`.
    #[serde(default)]
    authentication_mechanism: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    data: serde_json::Map<String, Value>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
}

/// An administrator (or the system) performs an audited action other than a PAT's: changing an organization
/// policy, disabling or deleting an audit stream. Recorded like any other entry (only if auditing is on).
async fn post_org_audit(State(ctx): Ctl, Path(org): Path<String>, Body(a): Body<AuditedAction>) -> Response {
    let mut state = ctx.state();
    let now = ctx.now();
    let key = org.to_lowercase();
    if state.org(&org).is_none() {
        return bad(StatusCode::NOT_FOUND, format!("organization {org:?} is not known"));
    }
    let Some((area, _)) = a.action_id.split_once('.').filter(|(x, y)| !x.is_empty() && !y.is_empty()) else {
        return bad(StatusCode::BAD_REQUEST, format!("actionId {:?} must look like Area.Action", a.action_id));
    };
    let area = area.to_owned();
    let actor = match &a.actor_upn {
        None => Actor::system(),
        Some(upn) => match state.user_by_upn(upn) {
            Some(u) => Actor::user(
                u,
                a.authentication_mechanism.as_deref().unwrap_or("FedAuth"),
                a.ip_address.clone().or(Some("127.0.0.1".into())),
                a.user_agent.clone(),
            ),
            None => return bad(StatusCode::NOT_FOUND, format!("user {upn:?} is not known")),
        },
    };
    let ev = Event {
        action_id: &a.action_id,
        area: &area,
        category: a.category.as_deref().unwrap_or("modify"),
        details: a.details.clone().unwrap_or_else(|| format!("{} performed {}.", actor.display_name, a.action_id)),
        data: a.data.clone(),
        at: now,
    };
    audit_log::record(&mut state, &key, &actor, ev, now);
    ctx.changed();
    ok(json!({ "organization": key, "actionId": a.action_id, "recorded": true }))
}
