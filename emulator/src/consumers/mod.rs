//! The consumer side of a PAT: where pipelines and workflows keep it, so patrol's delivery can be tested
//! end to end.
//!
//! - Azure DevOps **service endpoints** (service connections): list, get by id and by name, update,
//!   execution history ([`endpoints`]);
//! - Azure DevOps **variable groups**: get, list, update with Azure's handling of secret variables
//!   ([`vargroups`]);
//! - the **GitHub Actions secrets** API: public keys, sealed-box writes the emulator really decrypts, on its
//!   own HTTPS listener ([`github`]);
//! - who may call them ([`access`]): PATs, delegated Entra user tokens and app-only Entra tokens
//!   (service principals, managed identities) granted on the object;
//! - the world ([`ConsumerState`], persisted with `--state`), its seed section ([`seed`]) and the control
//!   API ([`control`]): seed, read the values held (tests only), simulate pipeline runs, workflow reads,
//!   webhook consumers acknowledging, and faults.
//!
//! Secret values are kept in plain text in memory and in the `--state` file (mode 0600), are exposed only
//! on the control API, and are never logged.

pub mod access;
pub mod control;
pub mod endpoints;
pub mod github;
pub mod seed;
pub mod vargroups;

use crate::context::Ctx;
use crate::http::ApiRequest;
use crate::state::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use uuid::Uuid;

/// Who created, edited or may administer a consumer object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Principal {
    /// A user, by id.
    User(Uuid),
    /// An application (service principal or managed identity), by lower-case client id.
    App(String),
}

impl Principal {
    /// Resolves a seed/control reference: a UPN (contains `@`) or an application's client id.
    pub fn resolve(state: &State, reference: &str) -> Result<Self, String> {
        if reference.contains('@') {
            return state
                .user_by_upn(reference)
                .map(|u| Principal::User(u.id))
                .ok_or_else(|| format!("user {reference:?} is not known"));
        }
        let key = reference.trim().to_lowercase();
        if state.apps.contains_key(&key) {
            Ok(Principal::App(key))
        } else {
            Err(format!("{reference:?} is neither a known user's UPN nor a known application's client id"))
        }
    }

    /// A readable name (UPN or client id), for the control API.
    pub fn label(&self, state: &State) -> String {
        match self {
            Principal::User(id) => state.users.get(id).map(|u| u.upn.clone()).unwrap_or_else(|| id.to_string()),
            Principal::App(c) => c.clone(),
        }
    }
}

/// An Azure DevOps project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Lower-case organization name.
    pub org: String,
    pub id: Uuid,
    pub name: String,
}

/// One project a service endpoint or variable group is shared with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRef {
    pub project_id: Uuid,
    /// The object's name in that project.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// One pipeline run that used a service endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub id: i64,
    pub project_id: Uuid,
    pub plan_type: String,
    pub definition_id: i32,
    pub definition_name: String,
    pub owner_id: i32,
    pub owner_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finish_time: OffsetDateTime,
    /// `succeeded` or `failed`.
    pub result: String,
    /// The PAT the run authenticated with, when it was one the emulator knows (never its value).
    #[serde(default)]
    pub authorization_id: Option<Uuid>,
}

/// A service endpoint (service connection).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: Uuid,
    /// Lower-case organization name.
    pub org: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    pub scheme: String,
    /// Every authorization parameter, confidential ones included (see [`is_confidential`]).
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub projects: Vec<ProjectRef>,
    pub created_by: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub modified_by: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
    /// Principals with the endpoint's Administrator role (may update it).
    #[serde(default)]
    pub administrators: BTreeSet<Principal>,
    #[serde(default)]
    pub history: Vec<Execution>,
    /// How many updates the endpoint received (through the API or a simulated edit).
    #[serde(default)]
    pub revision: u64,
}

/// A variable of a variable group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    pub value: String,
    #[serde(default)]
    pub is_secret: bool,
    #[serde(default)]
    pub is_read_only: bool,
}

/// A variable group; `type` `Vsts` (variables stored in Azure DevOps) or `AzureKeyVault` (linked to a vault:
/// nothing to write, the pipeline reads the vault when a job runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VarGroup {
    pub id: i32,
    pub org: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// For `AzureKeyVault` groups: the service endpoint and vault name.
    #[serde(default)]
    pub key_vault: Option<KeyVaultLink>,
    pub variables: BTreeMap<String, Variable>,
    pub projects: Vec<ProjectRef>,
    pub created_by: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub modified_by: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
    #[serde(default)]
    pub administrators: BTreeSet<Principal>,
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultLink {
    pub service_endpoint_id: Uuid,
    pub vault: String,
}

/// A one-shot fault queued on one consumer object (see the control API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueuedFault {
    pub api: ConsumerApi,
    /// Endpoint id, group id, `owner/repo`, `owner/repo/environment` or `org:name` (lower case).
    pub target: String,
    pub status: u16,
    /// Only requests with this method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    pub remaining: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ConsumerApi {
    ServiceEndpoints,
    VariableGroups,
    GithubSecrets,
    Webhooks,
}

/// Everything consumer-side (persisted with `--state` inside the world).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConsumerState {
    pub projects: Vec<Project>,
    /// Applications added to an organization (lower-case org → lower-case client ids).
    pub app_members: BTreeMap<String, BTreeSet<String>>,
    pub endpoints: BTreeMap<Uuid, Endpoint>,
    pub groups: BTreeMap<i32, VarGroup>,
    pub next_group_id: i32,
    pub next_execution_id: i64,
    pub github: github::GitHubState,
    pub webhooks: BTreeMap<String, control::WebhookConsumer>,
    #[serde(skip)]
    pub faults: Vec<QueuedFault>,
}

impl ConsumerState {
    pub fn project(&self, org: &str, name_or_id: &str) -> Option<&Project> {
        let org = org.to_lowercase();
        let id = Uuid::parse_str(name_or_id).ok();
        self.projects.iter().find(|p| p.org == org && (Some(p.id) == id || p.name.eq_ignore_ascii_case(name_or_id)))
    }

    /// The project, created on first reference (seeds name projects; their ids are stable per name).
    pub fn ensure_project(&mut self, org: &str, name: &str, id: Option<Uuid>) -> Result<Project, String> {
        if let Some(p) = self.project(org, name) {
            if id.is_some_and(|i| i != p.id) {
                return Err(format!("project {name:?} already exists with id {}", p.id));
            }
            return Ok(p.clone());
        }
        let ok = !name.trim().is_empty()
            && name.len() <= 64
            && !name.chars().any(|c| "\\/:*?\"<>|;#$%{}+=[]".contains(c) || c.is_control());
        if !ok {
            return Err(format!("{name:?} is not a valid project name"));
        }
        let p = Project { org: org.to_lowercase(), id: id.unwrap_or_else(Uuid::new_v4), name: name.to_string() };
        self.projects.push(p.clone());
        Ok(p)
    }

    pub fn is_app_member(&self, org: &str, client_id: &str) -> bool {
        self.app_members.get(&org.to_lowercase()).is_some_and(|m| m.contains(&client_id.to_lowercase()))
    }

    /// Takes the status of a queued fault matching this request, if any.
    pub fn take_fault(&mut self, api: ConsumerApi, target: &str, method: &str) -> Option<u16> {
        let target = target.to_lowercase();
        let i = self.faults.iter().position(|f| {
            f.api == api && f.target == target && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let status = self.faults[i].status;
        self.faults[i].remaining -= 1;
        if self.faults[i].remaining == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }
}

/// How many pipeline runs an endpoint's execution history keeps (the oldest go first).
pub const HISTORY_LIMIT: usize = 500;

/// Authorization parameters whose values Azure DevOps never returns (case-insensitive names).
pub const CONFIDENTIAL_PARAMETERS: &[&str] = &[
    "password",
    "apitoken",
    "accesstoken",
    "serviceprincipalkey",
    "certificate",
    "privatekey",
    "secret",
    "token",
    "clientsecret",
];

pub fn is_confidential(name: &str) -> bool {
    CONFIDENTIAL_PARAMETERS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// The parameter that holds a PAT for a scheme (what a pipeline run authenticates with).
pub fn pat_parameter(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "usernamepassword" => Some("password"),
        "token" => Some("apitoken"),
        "personalaccesstoken" => Some("accessToken"),
        _ => None,
    }
}

/// Routes the consumer APIs of the Azure DevOps listener; `None` when the path is not one of theirs.
pub fn dispatch(ctx: &Ctx, req: &ApiRequest) -> Option<Response> {
    let s = &req.segments;
    // `{org}/_apis/…` (organization level) or `{org}/{project}/_apis/…` (project level).
    let (project, rest) = if req.seg_is(1, "_apis") {
        (None, 2)
    } else if req.seg_is(2, "_apis") {
        (Some(s[1].as_str()), 3)
    } else {
        return None;
    };
    let org = s.first()?.as_str();
    if req.seg_is(rest, "serviceendpoint") {
        return Some(endpoints::handle(ctx, req, org, project, &s[rest + 1..]));
    }
    if req.seg_is(rest, "distributedtask") && req.seg_is(rest + 1, "variablegroups") {
        return Some(vargroups::handle(ctx, req, org, project, &s[rest + 2..]));
    }
    None
}

/// Glob match with `*` (Azure DevOps name filters), case-insensitive.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The requested api-version: the query's `api-version`, else the `api-version` parameter of `Accept`
/// (what Microsoft's .NET and Python clients send).
pub fn requested_version(req: &ApiRequest) -> Option<String> {
    if let Some(v) = req.query("api-version") {
        return Some(v.to_string());
    }
    let accept = req.header("accept")?;
    accept.split([';', ',']).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("api-version").then(|| v.trim().to_string())
    })
}

/// api-version negotiation for the consumer APIs: preview versions (`7.1-preview.4`, `7.2-preview.4`) from
/// `min` to 7.2, and released versions (`7.1`) from `released_from` (when the operation was released) to 7.1;
/// 7.2 is preview only. Microsoft's 7.1 reference shows Get/Update Service Endpoint and the variable group
/// operations released, Update Service Endpoints (several) still preview.
pub fn negotiate(
    req: &ApiRequest,
    min: crate::devops::version::ApiVersion,
    released_from: Option<crate::devops::version::ApiVersion>,
    resource: &str,
) -> Result<crate::devops::version::ApiVersion, crate::devops::errors::VssError> {
    use crate::devops::version::ApiVersion;
    let raw = requested_version(req);
    if let Some(r) = raw.as_deref().map(str::trim).filter(|r| !r.contains('-'))
        && let Some((a, b)) = r.split_once('.')
        && let (Ok(major), Ok(minor)) = (a.parse::<u32>(), b.parse::<u32>())
    {
        let v = ApiVersion { major, minor };
        if released_from.is_some_and(|from| v >= from) && v < ApiVersion::V7_2 {
            return Ok(v);
        }
    }
    crate::devops::version::negotiate(raw.as_deref(), min, resource)
}

/// The Azure DevOps error for a queued fault's status.
pub fn fault_error(status: u16, what: &str) -> crate::devops::errors::VssError {
    use crate::devops::errors::VssError;
    use axum::http::StatusCode;
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match status {
        403 => VssError::new(
            code,
            "AccessDeniedException",
            "Microsoft.VisualStudio.Services.Security.AccessDeniedException, Microsoft.VisualStudio.Services.WebApi",
            format!("Access denied. The caller needs Administrator permissions on {what} to perform the action."),
        ),
        404 => VssError::not_found("NotFoundException", format!("{what} does not exist.")),
        409 => VssError::new(
            code,
            "VssServiceException",
            "Microsoft.VisualStudio.Services.Common.VssServiceException, Microsoft.VisualStudio.Services.Common",
            format!("{what} was modified by another user. Refresh it and try again."),
        ),
        _ => {
            let mut e = VssError::unavailable(
                "TF400324: Team Foundation services are not available from server. Technical information (for administrator): the service is temporarily unavailable.",
            );
            e.status = code;
            e
        }
    }
}

/// `TF200016` for a project that does not exist in the organization.
pub fn unknown_project(name: &str) -> Response {
    use axum::response::IntoResponse;
    crate::devops::errors::VssError::not_found(
        "ProjectDoesNotExistWithNameException",
        format!(
            "TF200016: The following project does not exist: {name}. Verify that the name of the project is correct and that the project exists on the specified Azure DevOps Server."
        ),
    )
    .into_response()
}

/// A new modification time: now, or one tick (100 ns, the wire's resolution) after the previous one, so
/// every change shows in `modifiedOn` / `modificationDate`.
pub fn bump(previous: OffsetDateTime, now: OffsetDateTime) -> OffsetDateTime {
    let now = now.replace_nanosecond(now.nanosecond() / 100 * 100).unwrap_or(now);
    if now > previous { now } else { previous + time::Duration::nanoseconds(100) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_confidential_parameters() {
        assert!(glob_match("Test*", "testvariablegroup1"));
        assert!(glob_match("*group*", "TestVariableGroup1"));
        assert!(!glob_match("Test", "Test1"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(is_confidential("Password") && is_confidential("apitoken") && !is_confidential("username"));
        assert_eq!(pat_parameter("UsernamePassword"), Some("password"));
        assert_eq!(pat_parameter("Token"), Some("apitoken"));
        assert_eq!(pat_parameter("Certificate"), None);
    }

    #[test]
    fn faults_are_consumed_per_target_and_method() {
        let mut c = ConsumerState::default();
        c.faults.push(QueuedFault {
            api: ConsumerApi::VariableGroups,
            target: "7".into(),
            status: 409,
            method: Some("PUT".into()),
            remaining: 1,
        });
        assert_eq!(c.take_fault(ConsumerApi::VariableGroups, "7", "GET"), None);
        assert_eq!(c.take_fault(ConsumerApi::ServiceEndpoints, "7", "PUT"), None);
        assert_eq!(c.take_fault(ConsumerApi::VariableGroups, "7", "put"), Some(409));
        assert_eq!(c.take_fault(ConsumerApi::VariableGroups, "7", "PUT"), None);
    }
}
