//! The emulated world: tenant, organizations, users, applications, PATs, refresh tokens, revocation
//! rules and audit logs, with the indexes the APIs need. Pure data and invariants only — HTTP lives in
//! the service modules, persistence in `persist`.

use crate::patsecret::SecretHash;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use time::OffsetDateTime;
use uuid::Uuid;

/// Tenant-wide PAT policies (Microsoft Entra → Azure DevOps policies).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct TenantPolicy {
    /// "Enforce maximum personal access token lifespan": days, or none.
    pub max_lifespan_days: Option<u32>,
    /// "Restrict full-scoped personal access token creation" (`app_token`).
    pub restrict_full_scoped: bool,
    /// "Restrict global personal access token creation".
    pub restrict_global: bool,
    /// Global PAT creation blocked service-wide (the 2026 retirement): `globalPATCreationBlocked`.
    pub global_creation_blocked: bool,
    /// "Automatically revoke leaked personal access tokens" (on by default in the real service).
    pub auto_revoke_leaked: bool,
    /// UPNs exempt from the tenant policies above (each real policy has its own allowlist).
    pub allowlist: Vec<String>,
    /// Simulates a policy lookup failure: `failedToReadTenantPolicy`.
    pub fail_reads: bool,
}

/// Organization-level settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct OrgPolicy {
    /// "Restrict personal access token (PAT) creation".
    pub restrict_pat_creation: bool,
    /// UPNs allowed to create PATs while the restriction is on.
    pub allowlist: Vec<String>,
    /// "Allow creation of PAT with packaging scope only".
    pub allow_packaging_only: bool,
    /// "Log Audit Events" (off by default in the real service; on by default here, see docs).
    pub audit_enabled: bool,
    /// Simulates an org policy lookup failure: `failedToReadOrgPolicy`.
    pub fail_reads: bool,
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self {
            restrict_pat_creation: false,
            allowlist: Vec::new(),
            allow_packaging_only: false,
            audit_enabled: true,
            fail_reads: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevocationRule {
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_before: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub policy: OrgPolicy,
    #[serde(default)]
    pub revocation_rules: Vec<RevocationRule>,
    /// Audit log, ordered by (timestamp, seq) ascending.
    #[serde(default)]
    pub audit: Vec<AuditRecord>,
}

impl Org {
    /// Identity and policy without the audit log and rules (cheap to copy out of the lock).
    pub fn light(&self) -> Org {
        Org {
            id: self.id,
            name: self.name.clone(),
            policy: self.policy.clone(),
            revocation_rules: Vec::new(),
            audit: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub upn: String,
    pub display_name: String,
    /// Lower-case names of the organizations the user belongs to.
    pub orgs: BTreeSet<String>,
    /// Lower-case names of the organizations the user administers (Project Collection Administrator).
    pub admin_of: BTreeSet<String>,
    /// Conditional Access demands an interactive sign-in: refresh fails with `interaction_required`.
    #[serde(default)]
    pub require_interaction: bool,
}

/// The user id inside a Graph subject descriptor (`aad.` or `msa.` + base64 of the id, padded or not).
pub fn descriptor_user_id(descriptor: &str) -> Option<Uuid> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let (kind, data) = descriptor.split_once('.')?;
    if !kind.eq_ignore_ascii_case("aad") && !kind.eq_ignore_ascii_case("msa") {
        return None;
    }
    let raw = [URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD, URL_SAFE].iter().find_map(|e| e.decode(data).ok())?;
    Uuid::parse_str(std::str::from_utf8(&raw).ok()?).ok()
}

impl User {
    /// The Graph subject descriptor (`aad.<base64url of the user id>`).
    pub fn descriptor(&self) -> String {
        use base64::Engine;
        format!("aad.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.id.to_string()))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AppKind {
    ServicePrincipal,
    ManagedIdentity,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub client_id: String,
    pub display_name: String,
    pub kind: AppKind,
    /// SHA-256 (hex) of the client secret; managed identities have none.
    pub secret_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Revoker {
    Owner,
    Admin,
    System,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatRecord {
    pub id: Uuid,
    pub owner: Uuid,
    /// The organization it was created in (where its audit events go).
    pub org: Uuid,
    pub display_name: String,
    pub scope: String,
    /// `None` for an all-organization PAT.
    pub target_accounts: Option<Vec<Uuid>>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revoked_by: Option<Revoker>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Whether `Token.PatExpiredEvent` was recorded.
    #[serde(default)]
    pub expired_recorded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PatStatus {
    Active,
    Expired,
    Revoked,
}

impl PatRecord {
    pub fn status(&self, now: OffsetDateTime) -> PatStatus {
        if self.revoked_at.is_some() {
            PatStatus::Revoked
        } else if self.valid_to <= now {
            PatStatus::Expired
        } else {
            PatStatus::Active
        }
    }

    pub fn visible_in(&self, org: Uuid) -> bool {
        match &self.target_accounts {
            None => true,
            Some(t) => t.contains(&org),
        }
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_whitespace()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub seq: u64,
    pub id: String,
    pub correlation_id: Uuid,
    pub activity_id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub actor_client_id: Option<Uuid>,
    pub actor_upn: Option<String>,
    pub actor_display_name: String,
    pub authentication_mechanism: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub action_id: String,
    pub area: String,
    pub category: String,
    pub details: String,
    pub data: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RefreshStatus {
    Active,
    /// Already redeemed (refresh tokens rotate on every use).
    Redeemed,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRecord {
    pub user: Uuid,
    pub client_id: String,
    pub resource: String,
    pub scopes: Vec<String>,
    /// Sliding inactivity expiry (90 days after issue).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub status: RefreshStatus,
}

/// Everything that is persisted with `--state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub tenant_id: Uuid,
    #[serde(default)]
    pub tenant_policy: TenantPolicy,
    /// Keyed by lower-case organization name.
    pub orgs: HashMap<String, Org>,
    pub users: HashMap<Uuid, User>,
    /// Keyed by lower-case client id.
    pub apps: HashMap<String, App>,
    pub pats: HashMap<Uuid, PatRecord>,
    /// Keyed by SHA-256 (hex) of the refresh token.
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    pub seq: u64,
    /// Service endpoints, variable groups, GitHub secrets, webhook consumers.
    #[serde(default)]
    pub consumers: crate::consumers::ConsumerState,
    #[serde(skip)]
    pub index: Index,
}

/// Derived lookups, rebuilt on load.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub user_by_upn: HashMap<String, Uuid>,
    pub pats_by_owner: HashMap<Uuid, BTreeSet<Uuid>>,
    pub pat_by_hash: HashMap<SecretHash, Uuid>,
    /// PATs whose expiry has not been recorded yet, by `validTo`.
    pub expiry_queue: BTreeSet<(OffsetDateTime, Uuid)>,
}

pub const DEFAULT_TENANT: Uuid = Uuid::from_u128(0x72f988bf_86f1_41af_91ab_2d7cd011db47);

impl Default for State {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT,
            tenant_policy: TenantPolicy { auto_revoke_leaked: true, ..TenantPolicy::default() },
            orgs: HashMap::new(),
            users: HashMap::new(),
            apps: HashMap::new(),
            pats: HashMap::new(),
            refresh_tokens: HashMap::new(),
            seq: 0,
            consumers: crate::consumers::ConsumerState::default(),
            index: Index::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("organization {0:?} is not known")]
    UnknownOrg(String),
    #[error("user {0:?} is not known")]
    UnknownUser(String),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub fn hex_hash(h: &SecretHash) -> String {
    hex::encode(h)
}

impl State {
    pub fn rebuild_index(&mut self) {
        let mut index = Index::default();
        for u in self.users.values() {
            index.user_by_upn.insert(u.upn.to_lowercase(), u.id);
        }
        for p in self.pats.values() {
            index.pats_by_owner.entry(p.owner).or_default().insert(p.id);
            if let Ok(bytes) = hex::decode(&p.hash)
                && let Ok(h) = <SecretHash>::try_from(bytes.as_slice())
            {
                index.pat_by_hash.insert(h, p.id);
            }
            if !p.expired_recorded && p.revoked_at.is_none() {
                index.expiry_queue.insert((p.valid_to, p.id));
            }
        }
        self.index = index;
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn org(&self, name: &str) -> Option<&Org> {
        self.orgs.get(&name.to_lowercase())
    }

    pub fn org_mut(&mut self, name: &str) -> Option<&mut Org> {
        self.orgs.get_mut(&name.to_lowercase())
    }

    pub fn org_by_id(&self, id: Uuid) -> Option<&Org> {
        self.orgs.values().find(|o| o.id == id)
    }

    pub fn user_by_upn(&self, upn: &str) -> Option<&User> {
        self.index.user_by_upn.get(&upn.to_lowercase()).and_then(|id| self.users.get(id))
    }

    pub fn add_org(&mut self, name: &str, id: Option<Uuid>, policy: OrgPolicy) -> Result<&Org, StateError> {
        validate_org_name(name)?;
        let key = name.to_lowercase();
        if self.orgs.contains_key(&key) {
            return Err(StateError::Duplicate(format!("organization {name:?}")));
        }
        let org = Org {
            id: id.unwrap_or_else(Uuid::new_v4),
            name: name.to_string(),
            policy,
            revocation_rules: Vec::new(),
            audit: Vec::new(),
        };
        Ok(self.orgs.entry(key).or_insert(org))
    }

    pub fn add_user(
        &mut self,
        upn: &str,
        display_name: Option<&str>,
        orgs: &[String],
        admin_of: &[String],
        id: Option<Uuid>,
    ) -> Result<&User, StateError> {
        if !upn.contains('@') || upn.len() > 256 || upn.chars().any(char::is_whitespace) {
            return Err(StateError::Invalid { field: "upn", reason: format!("{upn:?} is not a user principal name") });
        }
        let key = upn.to_lowercase();
        if self.index.user_by_upn.contains_key(&key) {
            return Err(StateError::Duplicate(format!("user {upn:?}")));
        }
        let mut member = BTreeSet::new();
        let mut admin = BTreeSet::new();
        for o in orgs.iter().chain(admin_of) {
            if self.org(o).is_none() {
                return Err(StateError::UnknownOrg(o.clone()));
            }
            member.insert(o.to_lowercase());
        }
        for o in admin_of {
            admin.insert(o.to_lowercase());
        }
        let user = User {
            id: id.unwrap_or_else(Uuid::new_v4),
            upn: upn.to_string(),
            display_name: display_name
                .map(str::to_string)
                .unwrap_or_else(|| upn.split('@').next().unwrap_or(upn).to_string()),
            orgs: member,
            admin_of: admin,
            require_interaction: false,
        };
        let id = user.id;
        self.index.user_by_upn.insert(key, id);
        Ok(self.users.entry(id).or_insert(user))
    }

    /// Inserts a PAT record (already validated) and indexes it.
    pub fn insert_pat(&mut self, pat: PatRecord, hash: SecretHash) {
        self.index.pats_by_owner.entry(pat.owner).or_default().insert(pat.id);
        self.index.pat_by_hash.insert(hash, pat.id);
        if pat.revoked_at.is_none() && !pat.expired_recorded {
            self.index.expiry_queue.insert((pat.valid_to, pat.id));
        }
        self.pats.insert(pat.id, pat);
    }

    /// Changes a PAT's `validTo` keeping the expiry index right.
    pub fn set_valid_to(&mut self, id: Uuid, valid_to: OffsetDateTime) {
        if let Some(p) = self.pats.get_mut(&id) {
            self.index.expiry_queue.remove(&(p.valid_to, id));
            p.valid_to = valid_to;
            if p.revoked_at.is_none() && !p.expired_recorded {
                self.index.expiry_queue.insert((valid_to, id));
            }
        }
    }

    /// Marks a PAT revoked (idempotent). Returns whether it changed.
    pub fn mark_revoked(&mut self, id: Uuid, at: OffsetDateTime, by: Revoker) -> bool {
        match self.pats.get_mut(&id) {
            Some(p) if p.revoked_at.is_none() => {
                self.index.expiry_queue.remove(&(p.valid_to, id));
                p.revoked_at = Some(at);
                p.revoked_by = Some(by);
                true
            }
            _ => false,
        }
    }

    /// PATs that expired by `now` and whose expiry was not yet recorded; marks them recorded.
    pub fn take_newly_expired(&mut self, now: OffsetDateTime) -> Vec<Uuid> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.index.expiry_queue.first() {
            if t > now {
                break;
            }
            self.index.expiry_queue.pop_first();
            if let Some(p) = self.pats.get_mut(&id) {
                p.expired_recorded = true;
                out.push(id);
            }
        }
        out
    }
}

/// Azure DevOps organization names: letters, digits and hyphens, 1–50 characters, not starting or
/// ending with a hyphen.
pub fn validate_org_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid { field: "organization", reason: format!("{name:?} is not a valid organization name") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_need_known_orgs_and_unique_upns() {
        let mut s = State::default();
        s.add_org("fabrikam", None, OrgPolicy::default()).unwrap();
        assert_eq!(
            s.add_user("a@x.test", None, &["nope".into()], &[], None).unwrap_err(),
            StateError::UnknownOrg("nope".into())
        );
        s.add_user("a@x.test", None, &["fabrikam".into()], &[], None).unwrap();
        assert!(matches!(s.add_user("A@x.test", None, &[], &[], None), Err(StateError::Duplicate(_))));
        assert!(s.add_org("bad name", None, OrgPolicy::default()).is_err());
    }

    #[test]
    fn descriptors_round_trip_and_accept_the_spec_example() {
        let mut s = State::default();
        let u = s.add_user("a@x.test", None, &[], &[], None).unwrap().clone();
        assert_eq!(descriptor_user_id(&u.descriptor()), Some(u.id));
        assert_eq!(
            descriptor_user_id("msa.MjcwYjYwYzMtZThiMy03MGU1LWFjZDYtYzM5Zjk3ZDZmYTRh"),
            Some(Uuid::parse_str("270b60c3-e8b3-70e5-acd6-c39f97d6fa4a").unwrap())
        );
        assert_eq!(descriptor_user_id("vssgp.abc"), None);
    }
}
