//! Inventory: what is true right now, gathered from the edges so that planning can be pure.
//!
//! It joins the policy, the secret store (each managed secret's current version and its tags — the
//! value is dropped as soon as it is read), the journal, and each (owner, organization)'s active PATs
//! (List, all pages, one listing per pair). PATs nobody manages are part of it too, so they can be
//! shown and alerted on; they are never touched.

use super::journal::{self, Journal, JournalError};
use super::policy::{ManagedToken, Policy};
use crate::devops::{Connector, DevOpsError, DisplayFilter, Pat};
use crate::domain::{AuthorizationId, OperationId, OrgName, OwnerId, SecretName};
use crate::state::{ETag, StateStore};
use crate::store::{SecretStore, StoreError, VersionProperties, tags};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// One managed token as found.
#[derive(Debug, Clone, Serialize)]
pub struct TokenState {
    pub secret: SecretName,
    /// The secret's current version (properties only); `None` when the secret does not exist yet.
    pub current: Option<VersionProperties>,
    pub journal: Journal,
    #[serde(skip)]
    pub journal_etag: Option<ETag>,
    /// Why the store or the journal could not be read (the token is then blocked this run).
    pub error: Option<String>,
}

impl TokenState {
    /// A tag of the current version.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.current.as_ref().and_then(|c| c.tags.get(name)).map(String::as_str)
    }

    /// The PAT the current version says it holds.
    pub fn current_authorization_id(&self) -> Option<AuthorizationId> {
        self.tag(tags::AUTHORIZATION_ID).and_then(|s| AuthorizationId::parse(s).ok())
    }

    pub fn current_operation(&self) -> Option<OperationId> {
        self.tag(tags::OPERATION_ID).and_then(|s| OperationId::parse(s).ok())
    }

    pub fn tag_time(&self, name: &str) -> Option<OffsetDateTime> {
        self.tag(name).and_then(crate::timestamp::parse_opt)
    }
}

/// One (owner, organization)'s active PATs, or why they could not be listed.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerPats {
    pub owner: OwnerId,
    pub organization: OrgName,
    pub pats: Vec<Pat>,
    pub error: Option<String>,
    /// The owner must sign in again (`patrol login`).
    pub sign_in_required: bool,
}

/// Everything planning needs.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub tokens: BTreeMap<SecretName, TokenState>,
    pub owners: Vec<OwnerPats>,
    /// The audit evidence for revoking previous PATs, when the policy gates revocation on it.
    pub evidence: Option<crate::evidence::Evidence>,
}

impl Inventory {
    pub fn owner_pats(&self, owner: &OwnerId, organization: &OrgName) -> Option<&OwnerPats> {
        self.owners.iter().find(|o| &o.owner == owner && &o.organization == organization)
    }
}

/// Reads one token's current version and journal.
pub async fn token_state(store: &dyn SecretStore, state: &dyn StateStore, secret: &SecretName) -> TokenState {
    let mut errors = Vec::new();
    // Two independent local reads: side by side (this is on the critical path of every rotation).
    let (got, loaded) = futures::join!(store.get(secret, None), journal::load(state, secret));
    // A retired token's secret is disabled on purpose (`patrol retire`): that is its state, not a problem.
    let retired = matches!(&loaded, Ok(l) if l.journal.retired.is_some());
    let current = match got {
        // The value is dropped here: inventory needs properties only.
        Ok(found) => found.map(|s| s.properties),
        Err(StoreError::Disabled { .. }) if retired => None,
        Err(StoreError::Disabled { .. }) => {
            errors.push(format!("the current version of {secret} is disabled"));
            None
        }
        Err(e) => {
            errors.push(format!("reading secret {secret}: {e}"));
            None
        }
    };
    let (journal, journal_etag) = match loaded {
        // patrol wrote the current version (a rotation's operation id, or an adoption), yet this state holds
        // no journal for the token: this process is not reading the state that version was written with
        // (another working directory, another machine, a CLI not pointed at the Function App's storage).
        // Acting would treat patrol's own PAT as foreign ("changed outside patrol") or rotate it a second
        // time: refuse, and say where patrol looked and how to point it at the right state.
        Ok(l) if l.etag.is_none() && current.as_ref().is_some_and(written_by_patrol) => {
            let v = current.as_ref().map(|c| c.version.as_str()).unwrap_or_default();
            errors.push(format!(
                "state missing: the current version {v} of {secret} was written by patrol, but {} holds no \
                 journal for it. This patrol is not reading the state that wrote it; it will not act for \
                 {secret} until it is pointed at that state: set AzureWebJobsStorage (the Function App's \
                 storage) or PATROL_STATE_DIR to where that state is (docs/deploy.md, \"Pointing the CLI at a \
                 deployment\"); `patrol status` shows where patrol reads its state",
                state.location()
            ));
            (l.journal, l.etag)
        }
        Ok(l) => (l.journal, l.etag),
        Err(e @ (JournalError::State(_) | JournalError::Corrupt { .. })) => {
            errors.push(format!("reading the journal of {secret}: {e}"));
            (Journal::new(secret.clone()), None)
        }
    };
    TokenState {
        secret: secret.clone(),
        current,
        journal,
        journal_etag,
        error: if errors.is_empty() { None } else { Some(errors.join("; ")) },
    }
}

/// Whether patrol wrote a version: a rotation's `operation-id` or an adoption's `adopted-at` tag.
fn written_by_patrol(v: &VersionProperties) -> bool {
    v.tags.get(tags::MANAGED_BY).is_some_and(|m| m == tags::MANAGED_BY_VALUE)
        && (v.tags.contains_key(tags::OPERATION_ID) || v.tags.contains_key(tags::ADOPTED_AT))
}

/// Lists one owner's active PATs in one organization (all pages).
pub async fn owner_pats(connector: &dyn Connector, owner: &OwnerId, organization: &OrgName) -> OwnerPats {
    let api = connector.pats(owner, organization);
    match api.list(DisplayFilter::Active).await {
        Ok(pats) => OwnerPats {
            owner: owner.clone(),
            organization: organization.clone(),
            pats,
            error: None,
            sign_in_required: false,
        },
        Err(e) => OwnerPats {
            owner: owner.clone(),
            organization: organization.clone(),
            pats: Vec::new(),
            sign_in_required: matches!(e, DevOpsError::SignInRequired { .. }),
            error: Some(e.to_string()),
        },
    }
}

/// How many (owner, organization) listings the inventory makes at once, at least. Each is one identity's
/// own chain of calls (an Entra refresh when its access token has expired, then List pages one after the
/// other), read-only and charged to that identity's own rate limit, so identities need not queue behind
/// each other the way rotations do (`PATROL_MAX_CONCURRENCY`).
pub const LISTING_CONCURRENCY: usize = 32;

/// Gathers the inventory of `tokens` (all of the policy when `None`): the local reads with at most
/// `concurrency` in flight, and side by side with them the owners' listings, at most
/// `max(concurrency, LISTING_CONCURRENCY)` at once.
pub async fn gather(
    policy: &Policy,
    only: Option<&[SecretName]>,
    store: &dyn SecretStore,
    state: &dyn StateStore,
    connector: &dyn Connector,
    now: OffsetDateTime,
    concurrency: usize,
) -> Inventory {
    let chosen: Vec<&ManagedToken> =
        policy.tokens.iter().filter(|t| only.is_none_or(|o| o.contains(&t.secret))).collect();
    let concurrency = concurrency.max(1);
    let futs: Vec<_> = chosen
        .iter()
        .map(|t| {
            let secret = t.secret.clone();
            async move {
                let ts = token_state(store, state, &secret).await;
                (secret, ts)
            }
        })
        .collect();
    let tokens =
        futures::stream::iter(futs).buffer_unordered(concurrency).collect::<BTreeMap<SecretName, TokenState>>();
    let mut pairs: Vec<(OwnerId, OrgName)> = chosen.iter().map(|t| (t.owner.clone(), t.organization.clone())).collect();
    pairs.sort();
    pairs.dedup();
    let futs: Vec<_> = pairs.iter().map(|(o, org)| owner_pats(connector, o, org)).collect();
    let owners =
        futures::stream::iter(futs).buffer_unordered(concurrency.max(LISTING_CONCURRENCY)).collect::<Vec<OwnerPats>>();
    let (tokens, mut owners) = futures::join!(tokens, owners);
    owners.sort_by(|a, b| (&a.owner, &a.organization).cmp(&(&b.owner, &b.organization)));
    for o in &mut owners {
        o.pats.sort_by_key(|p| p.authorization_id);
    }
    Inventory { taken_at: now, tokens, owners, evidence: None }
}
