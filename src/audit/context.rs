//! What the rules know besides the audit log: the PATs patrol knows about (managed or merely listed), their
//! rotation state, patrol's own recent lifecycle actions (to tell them from someone else's), the managed
//! owners, and the last observed use of each PAT (carried between polls in the checkpoint).

use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
pub use crate::evidence::LastUse;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;

/// Where a known PAT stands in patrol's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PatStatus {
    /// The value in the secret's current version (or, for unmanaged PATs, simply active).
    Current,
    /// Replaced by a rotation at `rotated_at`; consumers may use it until `grace_ends`.
    Superseded {
        #[serde(with = "time::serde::rfc3339")]
        rotated_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        grace_ends: OffsetDateTime,
    },
    Revoked,
}

/// A PAT patrol knows about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPat {
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub owner: OwnerId,
    pub organization: OrgName,
    /// The secret that manages it; `None` for a PAT patrol only listed.
    pub secret: Option<SecretName>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    pub scope: String,
    pub global: bool,
    pub status: PatStatus,
}

impl KnownPat {
    pub fn is_managed(&self) -> bool {
        self.secret.is_some()
    }
}

/// Which lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Create,
    Update,
    Revoke,
}

impl Lifecycle {
    /// The lifecycle operation an audit `actionId` records, if it is one someone performs on a PAT.
    pub fn from_action(action_id: &str) -> Option<Self> {
        match action_id {
            "Token.PatCreateEvent" => Some(Self::Create),
            "Token.PatUpdateEvent" => Some(Self::Update),
            "Token.PatRevokeEvent" => Some(Self::Revoke),
            _ => None,
        }
    }
}

/// A lifecycle action patrol itself performed (from the rotation journal or break glass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatrolAction {
    pub kind: Lifecycle,
    pub organization: OrgName,
    pub owner: OwnerId,
    pub display_name: String,
    pub authorization_id: Option<AuthorizationId>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Everything the evaluator may consult. Build it once per poll.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pats: HashMap<AuthorizationId, KnownPat>,
    by_name: HashMap<(OwnerId, String), AuthorizationId>,
    owners: HashSet<OwnerId>,
    actions: Vec<PatrolAction>,
    pub last_use: HashMap<AuthorizationId, LastUse>,
}

impl AuditContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a PAT. The owners of managed PATs become managed owners.
    pub fn add_pat(&mut self, pat: KnownPat) {
        if pat.is_managed() {
            self.owners.insert(pat.owner.clone());
        }
        self.by_name.insert((pat.owner.clone(), pat.display_name.to_lowercase()), pat.authorization_id);
        self.pats.insert(pat.authorization_id, pat);
    }

    /// Declares an owner whose account patrol watches even without managed PATs yet.
    pub fn add_owner(&mut self, owner: OwnerId) {
        self.owners.insert(owner);
    }

    pub fn add_action(&mut self, action: PatrolAction) {
        self.actions.push(action);
    }

    pub fn actions(&self) -> impl Iterator<Item = &PatrolAction> {
        self.actions.iter()
    }

    /// Whether `action` happened in `organization`.
    pub fn action_in(&self, action: &PatrolAction, organization: &OrgName) -> bool {
        action.organization.as_str().eq_ignore_ascii_case(organization.as_str())
    }

    pub fn pat(&self, id: &AuthorizationId) -> Option<&KnownPat> {
        self.pats.get(id)
    }

    pub fn pats(&self) -> impl Iterator<Item = &KnownPat> {
        self.pats.values()
    }

    /// A PAT by owner and display name (case-insensitive), or by display name alone when unambiguous.
    pub fn pat_by_name(&self, owner: Option<&OwnerId>, display_name: &str) -> Option<&KnownPat> {
        let name = display_name.to_lowercase();
        if let Some(o) = owner {
            return self.by_name.get(&(o.clone(), name)).and_then(|id| self.pats.get(id));
        }
        let mut it = self.pats.values().filter(|p| p.display_name.to_lowercase() == name);
        match (it.next(), it.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }

    /// The managed owner with this UPN (case-insensitive), if any.
    pub fn managed_owner(&self, upn: &str) -> Option<&OwnerId> {
        let t = upn.trim();
        if t.is_empty() {
            return None;
        }
        self.owners.iter().find(|o| o.as_str().eq_ignore_ascii_case(t))
    }

    /// Whether patrol performed `kind` on this owner's PAT named `display_name` (or with `id`) within
    /// `tolerance` of `at`.
    pub fn patrol_did(
        &self,
        kind: Lifecycle,
        owner: &OwnerId,
        display_name: &str,
        id: Option<AuthorizationId>,
        at: OffsetDateTime,
        tolerance: time::Duration,
    ) -> bool {
        self.actions.iter().any(|a| {
            a.kind == kind
                && &a.owner == owner
                && (a.at - at).abs() <= tolerance
                && ((id.is_some() && a.authorization_id == id) || a.display_name.eq_ignore_ascii_case(display_name))
        })
    }
}
