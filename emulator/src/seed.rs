//! The seed file (`--seed FILE`, or `POST /_control/seed`): tenant and policies, organizations, users
//! (UPN, memberships, admin rights), applications (service principals, managed identities) and existing
//! PATs. Applying it validates every entry and names the one that is wrong.

use crate::context::Ctx;
use crate::patsecret;
use crate::state::{App, AppKind, OrgPolicy, PatRecord, State, TenantPolicy};
use crate::wire::parse_time;
use serde::{Deserialize, Serialize};
use time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    #[serde(default)]
    pub tenant_policy: Option<TenantPolicy>,
    #[serde(default)]
    pub organizations: Vec<SeedOrg>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub apps: Vec<SeedApp>,
    #[serde(default)]
    pub pats: Vec<SeedPat>,
    /// Service endpoints, variable groups, GitHub secrets (see `consumers::seed`).
    #[serde(default)]
    pub consumers: Option<crate::consumers::seed::ConsumerSeed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedOrg {
    pub name: String,
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub policy: Option<OrgPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedUser {
    pub upn: String,
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Organizations this user administers (implies membership).
    #[serde(default)]
    pub admin_of: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedApp {
    #[serde(default)]
    pub client_id: Option<Uuid>,
    pub display_name: String,
    #[serde(default = "sp")]
    pub kind: AppKind,
    /// The client secret of a service principal (generated when absent).
    #[serde(default)]
    pub client_secret: Option<String>,
}

fn sp() -> AppKind {
    AppKind::ServicePrincipal
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPat {
    /// Defaults to a new id.
    #[serde(default)]
    pub authorization_id: Option<Uuid>,
    pub owner: String,
    pub organization: String,
    pub display_name: String,
    pub scope: String,
    /// Defaults to now.
    #[serde(default)]
    pub valid_from: Option<String>,
    pub valid_to: String,
    #[serde(default)]
    pub all_orgs: bool,
    /// The secret, in the 84-character format (generated when absent).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

/// What applying a seed minted (secrets the caller needs).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub pats: Vec<MintedPat>,
    pub apps: Vec<MintedApp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<crate::consumers::seed::ConsumersApplied>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedPat {
    pub authorization_id: Uuid,
    pub display_name: String,
    pub token: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedApp {
    pub client_id: String,
    pub client_secret: Option<String>,
}

pub fn apply(ctx: &Ctx, state: &mut State, seed: &Seed) -> Result<Applied, String> {
    if let Some(t) = seed.tenant_id {
        state.tenant_id = t;
    }
    if let Some(p) = &seed.tenant_policy {
        state.tenant_policy = p.clone();
    }
    for (i, o) in seed.organizations.iter().enumerate() {
        state
            .add_org(&o.name, o.id, o.policy.clone().unwrap_or_default())
            .map_err(|e| format!("organizations[{i}]: {e}"))?;
    }
    for (i, u) in seed.users.iter().enumerate() {
        state
            .add_user(&u.upn, u.display_name.as_deref(), &u.organizations, &u.admin_of, u.id)
            .map_err(|e| format!("users[{i}]: {e}"))?;
    }
    let mut applied = Applied::default();
    for (i, a) in seed.apps.iter().enumerate() {
        applied.apps.push(add_app(ctx, state, a).map_err(|e| format!("apps[{i}]: {e}"))?);
    }
    for (i, p) in seed.pats.iter().enumerate() {
        applied.pats.push(add_pat(ctx, state, p).map_err(|e| format!("pats[{i}]: {e}"))?);
    }
    if let Some(c) = &seed.consumers {
        applied.consumers = Some(crate::consumers::seed::apply(ctx, state, c).map_err(|e| format!("consumers.{e}"))?);
    }
    ctx.changed();
    Ok(applied)
}

pub fn add_app(ctx: &Ctx, state: &mut State, a: &SeedApp) -> Result<MintedApp, String> {
    let client_id = a.client_id.unwrap_or_else(Uuid::new_v4).to_string();
    if state.apps.contains_key(&client_id) {
        return Err(format!("application {client_id} already exists"));
    }
    let secret = match (a.kind, &a.client_secret) {
        (AppKind::ManagedIdentity, Some(_)) => return Err("managed identities have no client secret".into()),
        (AppKind::ManagedIdentity, None) => None,
        (AppKind::ServicePrincipal, Some(s)) if s.len() < 16 => {
            return Err("a client secret must be at least 16 characters".into());
        }
        (AppKind::ServicePrincipal, Some(s)) => Some(s.clone()),
        (AppKind::ServicePrincipal, None) => Some(format!("emu~{}", crate::tokens::random_token(36))),
    };
    if let Some(s) = &secret {
        ctx.secrets.record("client_secret", s);
    }
    state.apps.insert(
        client_id.clone(),
        App {
            client_id: client_id.clone(),
            display_name: a.display_name.clone(),
            kind: a.kind,
            secret_hash: secret.as_deref().map(|s| hex::encode(patsecret::hash(s))),
        },
    );
    Ok(MintedApp { client_id, client_secret: secret })
}

pub fn add_pat(ctx: &Ctx, state: &mut State, p: &SeedPat) -> Result<MintedPat, String> {
    let now = ctx.now();
    let owner =
        state.user_by_upn(&p.owner).cloned().ok_or_else(|| format!("owner {:?} is not a known user", p.owner))?;
    let org = state
        .org(&p.organization)
        .map(crate::state::Org::light)
        .ok_or_else(|| format!("organization {:?} is not known", p.organization))?;
    if !owner.orgs.contains(&org.name.to_lowercase()) {
        return Err(format!("{} is not a member of {}", owner.upn, org.name));
    }
    let name = p.display_name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err("displayName must be 1 to 256 characters".into());
    }
    let scope: Vec<&str> = p.scope.split_whitespace().collect();
    if scope.is_empty() || scope.iter().any(|s| !crate::devops::scopes::is_known(s)) {
        return Err(format!("scope {:?} is not a valid PAT scope list", p.scope));
    }
    let valid_from = match &p.valid_from {
        Some(s) => parse_time(s).ok_or_else(|| format!("validFrom {s:?} is not a date"))?,
        None => now,
    };
    let valid_to = parse_time(&p.valid_to).ok_or_else(|| format!("validTo {:?} is not a date", p.valid_to))?;
    if valid_to <= valid_from || valid_to - valid_from > Duration::days(366) {
        return Err("validTo must be after validFrom and at most a year later".into());
    }
    let token = match &p.token {
        Some(t) if patsecret::looks_like_pat(t) => t.clone(),
        Some(_) => {
            return Err(
                "token is not in the 84-character PAT format (use one minted by the emulator, or omit it)".into()
            );
        }
        None => patsecret::generate(now.year(), u8::from(now.month())),
    };
    ctx.secrets.record("pat", &token);
    let hash = patsecret::hash(&token);
    if state.index.pat_by_hash.contains_key(&hash) {
        return Err("a PAT with this token already exists".into());
    }
    let id = p.authorization_id.unwrap_or_else(Uuid::new_v4);
    if state.pats.contains_key(&id) {
        return Err(format!("a PAT with authorizationId {id} already exists"));
    }
    let rec = PatRecord {
        id,
        owner: owner.id,
        org: org.id,
        display_name: name.to_string(),
        scope: scope.join(" "),
        target_accounts: if p.all_orgs { None } else { Some(vec![org.id]) },
        valid_from,
        valid_to,
        revoked_at: p.revoked.then_some(now),
        revoked_by: p.revoked.then_some(crate::state::Revoker::Owner),
        hash: hex::encode(hash),
        expired_recorded: false,
    };
    let minted = MintedPat { authorization_id: rec.id, display_name: rec.display_name.clone(), token };
    state.insert_pat(rec, hash);
    Ok(minted)
}
