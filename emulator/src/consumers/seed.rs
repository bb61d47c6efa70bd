//! The `consumers` section of the seed file (and `POST /_control/consumers/seed`): projects, applications
//! added to organizations, service endpoints, variable groups and the GitHub side. Every entry is checked;
//! an error names the entry (`serviceEndpoints[2]: …`).

use super::{Endpoint, KeyVaultLink, Principal, ProjectRef, VarGroup, Variable, github};
use crate::context::Ctx;
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerSeed {
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    /// Applications (client ids) added to organizations: they may then call the consumer APIs with app-only
    /// tokens (granting an application on an object adds it too).
    #[serde(default)]
    pub app_members: Vec<SeedMember>,
    #[serde(default)]
    pub service_endpoints: Vec<SeedEndpoint>,
    #[serde(default)]
    pub variable_groups: Vec<SeedGroup>,
    #[serde(default)]
    pub github: Option<github::SeedGitHub>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedProject {
    pub organization: String,
    pub name: String,
    #[serde(default)]
    pub id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedMember {
    pub organization: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedEndpoint {
    pub organization: String,
    /// Project names (created when new); the endpoint is shared with each.
    pub projects: Vec<String>,
    #[serde(default)]
    pub id: Option<Uuid>,
    pub name: String,
    /// e.g. `generic`, `externaltfs`, `externalnugetfeed`, `externalnpmregistry`, `github`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// e.g. `UsernamePassword`, `Token`, `PersonalAccessToken`.
    pub scheme: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// UPN or client id; defaults to the first administrator.
    #[serde(default)]
    pub created_by: Option<String>,
    /// UPNs and client ids with the endpoint's Administrator role.
    #[serde(default)]
    pub administrators: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedGroup {
    pub organization: String,
    pub projects: Vec<String>,
    #[serde(default)]
    pub id: Option<i32>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `Vsts` (default) or `AzureKeyVault` (then `keyVault` is required and values come from the vault).
    #[serde(default = "vsts", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub key_vault: Option<KeyVaultLink>,
    pub variables: BTreeMap<String, SeedVariable>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub administrators: Vec<String>,
}

fn vsts() -> String {
    "Vsts".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedVariable {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub is_secret: bool,
    #[serde(default)]
    pub is_read_only: bool,
}

/// What seeding created (ids the caller needs, and generated GitHub tokens).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumersApplied {
    pub service_endpoints: Vec<Created<Uuid>>,
    pub variable_groups: Vec<Created<i32>>,
    pub github_tokens: Vec<github::MintedGitHubToken>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created<T> {
    pub id: T,
    pub name: String,
}

pub fn apply(ctx: &Ctx, state: &mut State, seed: &ConsumerSeed) -> Result<ConsumersApplied, String> {
    let mut applied = ConsumersApplied::default();
    for (i, p) in seed.projects.iter().enumerate() {
        known_org(state, &p.organization).map_err(|e| format!("projects[{i}]: {e}"))?;
        state.consumers.ensure_project(&p.organization, &p.name, p.id).map_err(|e| format!("projects[{i}]: {e}"))?;
    }
    for (i, m) in seed.app_members.iter().enumerate() {
        let r = known_org(state, &m.organization).and_then(|_| match Principal::resolve(state, &m.client_id)? {
            Principal::App(c) => {
                state.consumers.app_members.entry(m.organization.to_lowercase()).or_default().insert(c);
                Ok(())
            }
            Principal::User(_) => Err("clientId must be an application's client id".into()),
        });
        r.map_err(|e| format!("appMembers[{i}]: {e}"))?;
    }
    for (i, e) in seed.service_endpoints.iter().enumerate() {
        let created = add_endpoint(ctx, state, e).map_err(|m| format!("serviceEndpoints[{i}]: {m}"))?;
        applied.service_endpoints.push(created);
    }
    for (i, g) in seed.variable_groups.iter().enumerate() {
        let created = add_group(ctx, state, g).map_err(|m| format!("variableGroups[{i}]: {m}"))?;
        applied.variable_groups.push(created);
    }
    if let Some(gh) = &seed.github {
        applied.github_tokens = github::apply_seed(ctx, state, gh).map_err(|m| format!("github.{m}"))?;
    }
    ctx.changed();
    Ok(applied)
}

fn known_org(state: &State, org: &str) -> Result<(), String> {
    state.org(org).map(|_| ()).ok_or_else(|| format!("organization {org:?} is not known"))
}

/// Resolves administrators (adding granted applications to the organization) and the creator.
fn principals(
    state: &mut State,
    org: &str,
    admins: &[String],
    created_by: Option<&str>,
) -> Result<(BTreeSet<Principal>, Principal), String> {
    let mut set = BTreeSet::new();
    let mut first = None;
    for a in admins {
        let p = Principal::resolve(state, a).map_err(|e| format!("administrators: {e}"))?;
        match &p {
            Principal::App(c) => {
                state.consumers.app_members.entry(org.to_lowercase()).or_default().insert(c.clone());
            }
            Principal::User(id) => {
                if !state.users.get(id).is_some_and(|u| u.orgs.contains(&org.to_lowercase())) {
                    return Err(format!("administrators: {a} is not a member of {org}"));
                }
            }
        }
        first.get_or_insert_with(|| p.clone());
        set.insert(p);
    }
    let creator = match created_by {
        Some(c) => Principal::resolve(state, c).map_err(|e| format!("createdBy: {e}"))?,
        None => first.ok_or("createdBy or at least one administrator is required")?,
    };
    Ok((set, creator))
}

fn project_refs(state: &mut State, org: &str, projects: &[String], name: &str) -> Result<Vec<ProjectRef>, String> {
    if projects.is_empty() {
        return Err("projects must name at least one project".into());
    }
    let mut refs: Vec<ProjectRef> = Vec::new();
    for p in projects {
        let p = state.consumers.ensure_project(org, p, None)?;
        if !refs.iter().any(|r| r.project_id == p.id) {
            refs.push(ProjectRef { project_id: p.id, name: name.to_string(), description: String::new() });
        }
    }
    Ok(refs)
}

pub fn add_endpoint(ctx: &Ctx, state: &mut State, e: &SeedEndpoint) -> Result<Created<Uuid>, String> {
    known_org(state, &e.organization)?;
    let name = e.name.trim();
    if name.is_empty() || name.len() > 256 {
        return Err("name must be 1 to 256 characters".into());
    }
    if e.kind.trim().is_empty() || e.scheme.trim().is_empty() {
        return Err("type and scheme are required".into());
    }
    let id = e.id.unwrap_or_else(Uuid::new_v4);
    if state.consumers.endpoints.contains_key(&id) {
        return Err(format!("a service endpoint with id {id} already exists"));
    }
    let (administrators, creator) = principals(state, &e.organization, &e.administrators, e.created_by.as_deref())?;
    let projects = project_refs(state, &e.organization, &e.projects, name)?;
    let clash = state.consumers.endpoints.values().any(|x| {
        x.org == e.organization.to_lowercase()
            && x.projects
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(name) && projects.iter().any(|p| p.project_id == r.project_id))
    });
    if clash {
        return Err(format!("a service endpoint named {name:?} already exists in one of its projects"));
    }
    for (k, v) in &e.parameters {
        if super::is_confidential(k) {
            ctx.secrets.record("consumer_value", v);
        }
    }
    let now = ctx.now();
    state.consumers.endpoints.insert(
        id,
        Endpoint {
            id,
            org: e.organization.to_lowercase(),
            name: name.to_string(),
            kind: e.kind.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            scheme: e.scheme.clone(),
            parameters: e.parameters.clone(),
            data: e.data.clone(),
            projects,
            created_by: creator.clone(),
            created_at: now,
            modified_by: creator,
            modified_at: now,
            administrators,
            history: Vec::new(),
            revision: 0,
        },
    );
    Ok(Created { id, name: name.to_string() })
}

pub fn add_group(ctx: &Ctx, state: &mut State, g: &SeedGroup) -> Result<Created<i32>, String> {
    known_org(state, &g.organization)?;
    let name = g.name.trim();
    if name.is_empty() || name.len() > 256 {
        return Err("name must be 1 to 256 characters".into());
    }
    let key_vault = match (g.kind.to_ascii_lowercase().as_str(), &g.key_vault) {
        ("vsts", None) => None,
        ("azurekeyvault", Some(kv)) => Some(kv.clone()),
        ("vsts", Some(_)) => return Err("keyVault is only for groups of type AzureKeyVault".into()),
        ("azurekeyvault", None) => return Err("a group of type AzureKeyVault needs keyVault".into()),
        (other, _) => return Err(format!("type {other:?} is not Vsts or AzureKeyVault")),
    };
    if g.variables.is_empty() {
        return Err("a variable group needs at least one variable".into());
    }
    let id = match g.id {
        Some(i) if i <= 0 => return Err("id must be positive".into()),
        Some(i) => i,
        None => state.consumers.groups.keys().next_back().copied().unwrap_or(0).max(state.consumers.next_group_id) + 1,
    };
    if state.consumers.groups.contains_key(&id) {
        return Err(format!("a variable group with id {id} already exists"));
    }
    let (administrators, creator) = principals(state, &g.organization, &g.administrators, g.created_by.as_deref())?;
    let projects = project_refs(state, &g.organization, &g.projects, name)?;
    let clash = state.consumers.groups.values().any(|x| {
        x.org == g.organization.to_lowercase()
            && x.projects
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(name) && projects.iter().any(|p| p.project_id == r.project_id))
    });
    if clash {
        return Err(format!("a variable group named {name:?} already exists in one of its projects"));
    }
    let mut variables = BTreeMap::new();
    for (k, v) in &g.variables {
        if k.trim().is_empty() {
            return Err("variable names cannot be empty".into());
        }
        if key_vault.is_some() && v.value.is_some() {
            return Err(format!("variables.{k}: a Key Vault-linked variable takes its value from the vault"));
        }
        let value = v.value.clone().unwrap_or_default();
        if v.is_secret && !value.is_empty() {
            ctx.secrets.record("consumer_value", &value);
        }
        variables.insert(
            k.clone(),
            Variable { value, is_secret: v.is_secret || key_vault.is_some(), is_read_only: v.is_read_only },
        );
    }
    let now = ctx.now();
    state.consumers.next_group_id = state.consumers.next_group_id.max(id);
    state.consumers.groups.insert(
        id,
        VarGroup {
            id,
            org: g.organization.to_lowercase(),
            name: name.to_string(),
            description: g.description.clone(),
            kind: if key_vault.is_some() { "AzureKeyVault".into() } else { "Vsts".into() },
            key_vault,
            variables,
            projects,
            created_by: creator.clone(),
            created_at: now,
            modified_by: creator,
            modified_at: now,
            administrators,
            revision: 0,
        },
    );
    Ok(Created { id, name: name.to_string() })
}
