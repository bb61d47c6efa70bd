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
    /// The current version's [`PLANNING_TAGS`] when the inventory read it in bulk ([`token_states`]): there
    /// they are moved out of `current.tags` (which is left empty) into this compact list. Read tags with
    /// [`TokenState::tag`], which looks in both.
    #[serde(skip)]
    pub kept_tags: KeptTags,
}

/// Some of a version's tags, compactly: a boxed slice of (tag, value) with the names of [`PLANNING_TAGS`]
/// rather than a map — for 10,000 tokens, 5 MB less than a `BTreeMap` of strings each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptTags(Box<[(&'static str, Box<str>)]>);

impl KeptTags {
    /// Moves the [`PLANNING_TAGS`] out of `tags`, dropping the rest.
    pub fn take_planning(tags: &mut BTreeMap<String, String>) -> Self {
        let kept =
            PLANNING_TAGS.iter().filter_map(|name| Some((*name, tags.remove(*name)?.into_boxed_str()))).collect();
        tags.clear();
        Self(kept)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| &**v)
    }
}

impl TokenState {
    /// A tag of the current version.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.current.as_ref().and_then(|c| c.tags.get(name)).map(String::as_str).or_else(|| self.kept_tags.get(name))
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
    /// Boxed: a token's state is about a kilobyte, and the map of 10,000 of them is built from a list of the
    /// same states; boxed, building it moves pointers instead of holding every state twice.
    pub tokens: BTreeMap<SecretName, Box<TokenState>>,
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
    // Two independent local reads: side by side (this is on the critical path of every rotation).
    let (got, loaded) = futures::join!(store.get(secret, None), journal::load(state, secret));
    // The value is dropped here: inventory needs properties only.
    assemble(&|| state.location(), secret, got.map(|found| found.map(|s| s.properties)), loaded)
}

/// The tags of a current version that planning reads; [`token_states`] keeps only these, in
/// [`TokenState::kept_tags`] (a version also carries its PAT's display name, owner, organization and scope,
/// which the policy and the journal hold: for 10,000 tokens, 80,000 strings fewer in memory). A single
/// token's state ([`token_state`]) keeps every tag, in `current.tags`.
pub const PLANNING_TAGS: &[&str] = &[
    tags::MANAGED_BY,
    tags::AUTHORIZATION_ID,
    tags::OPERATION_ID,
    tags::ADOPTED_AT,
    tags::VALID_TO,
    tags::PREVIOUS_AUTHORIZATION_ID,
    tags::PREVIOUS_REVOKE_AFTER,
];

/// How many tokens [`token_states`] reads per batch. The reads of one batch go on while the previous batch is
/// assembled, and no more than two batches of raw documents are held at once, however many tokens there are.
const BATCH: usize = 1024;

/// Every token's state, by secret: the store's current versions and the journals each read in bulk
/// ([`SecretStore::current_properties`], [`StateStore::load_many`]), the two side by side, in batches of
/// [`BATCH`]: while one batch is assembled (its journals parsed, on the blocking pool beside the reads, not
/// on the thread that runs the inventory and the owners' listings), the next one is being read. Of the
/// current versions' tags, only the [`PLANNING_TAGS`] are kept ([`TokenState::kept_tags`]).
pub async fn token_states(
    store: &dyn SecretStore,
    state: &dyn StateStore,
    secrets: &[SecretName],
    concurrency: usize,
) -> BTreeMap<SecretName, Box<TokenState>> {
    let read = |batch: &[SecretName]| {
        let keys: Vec<String> = batch.iter().map(Journal::key).collect();
        let batch = batch.to_vec();
        Box::pin(futures::future::maybe_done(async move {
            let (current, documents) =
                futures::join!(store.current_properties(&batch, concurrency), state.load_many(&keys, concurrency));
            (batch, current, documents)
        }))
    };
    let location: std::sync::Arc<str> = state.location().into();
    let mut batches = secrets.chunks(BATCH);
    let mut pending = batches.next().map(read);
    let mut out = BTreeMap::new();
    while let Some(mut reading) = pending.take() {
        reading.as_mut().await;
        let Some((batch, current, documents)) = reading.as_mut().take_output() else { break };
        // Start reading the next batch (a local store's reads go to the blocking pool) before parsing this one.
        pending = batches.next().map(read);
        if let Some(next) = pending.as_mut() {
            let _ = futures::poll!(next.as_mut());
        }
        let names = batch.clone();
        let reads: Vec<_> = batch.into_iter().zip(current).zip(documents).collect();
        let location = location.clone();
        let assembled = crate::state::map_blocking(
            reads,
            move |((secret, got), document)| {
                let loaded = journal::from_document(&secret, document);
                let mut ts = assemble(&|| location.to_string(), &secret, got, loaded);
                if let Some(current) = ts.current.as_mut() {
                    ts.kept_tags = KeptTags::take_planning(&mut current.tags);
                }
                Ok(Box::new(ts))
            },
            Err,
        )
        .await;
        for (secret, ts) in names.into_iter().zip(assembled) {
            // A task that died (a bug) leaves its tokens blocked with the reason, never missing.
            let ts = ts.unwrap_or_else(|message| {
                Box::new(TokenState {
                    secret: secret.clone(),
                    current: None,
                    journal: Journal::new(secret.clone()),
                    journal_etag: None,
                    error: Some(format!("reading the state of {secret} failed: {message}")),
                    kept_tags: KeptTags::default(),
                })
            });
            out.insert(secret, ts);
        }
    }
    out
}

/// One token's state from what its two reads found.
fn assemble(
    state_location: &dyn Fn() -> String,
    secret: &SecretName,
    got: Result<Option<VersionProperties>, StoreError>,
    loaded: Result<journal::Loaded, JournalError>,
) -> TokenState {
    let mut errors = Vec::new();
    // A retired token's secret is disabled on purpose (`patrol retire`): that is its state, not a problem.
    let retired = matches!(&loaded, Ok(l) if l.journal.retired.is_some());
    let current = match got {
        Ok(found) => found,
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
                state_location()
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
        kept_tags: KeptTags::default(),
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
    let secrets: Vec<SecretName> = chosen.iter().map(|t| t.secret.clone()).collect();
    let started = std::time::Instant::now();
    let ms = move || started.elapsed().as_secs_f64() * 1e3;
    let tokens = async {
        let states = token_states(store, state, &secrets, concurrency).await;
        tracing::debug!(ms = ms(), tokens = states.len(), "inventory: secret store and journals read");
        states
    };
    let mut pairs: Vec<(OwnerId, OrgName)> = chosen.iter().map(|t| (t.owner.clone(), t.organization.clone())).collect();
    pairs.sort();
    pairs.dedup();
    let futs: Vec<_> = pairs.iter().map(|(o, org)| owner_pats(connector, o, org)).collect();
    let owners = async {
        let owners = futures::stream::iter(futs)
            .buffer_unordered(concurrency.max(LISTING_CONCURRENCY))
            .collect::<Vec<OwnerPats>>()
            .await;
        tracing::debug!(ms = ms(), listings = owners.len(), "inventory: owners' PATs listed");
        owners
    };
    let (tokens, mut owners) = futures::join!(tokens, owners);
    owners.sort_by(|a, b| (&a.owner, &a.organization).cmp(&(&b.owner, &b.organization)));
    for o in &mut owners {
        o.pats.sort_by_key(|p| p.authorization_id);
    }
    Inventory { taken_at: now, tokens, owners, evidence: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileStateStore;
    use crate::store::NewVersion;
    use crate::store::memory::MemoryStore;
    use secrecy::SecretString;

    /// The bulk read (in batches, assembled on the blocking pool, tags kept compactly) finds what reading
    /// each token on its own finds, for more tokens than two batches: secrets with and without a current
    /// version, with and without a journal, a corrupt journal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_token_states_are_what_each_token_read_alone_finds() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let state = FileStateStore::new(dir.path());
        let n = 2 * BATCH + 37;
        let mut secrets = Vec::new();
        for i in 0..n {
            let secret = SecretName::parse(&format!("bulk-{i}")).unwrap();
            if i % 5 != 0 {
                let mut tags = BTreeMap::new();
                tags.insert(tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned());
                tags.insert(tags::AUTHORIZATION_ID.to_owned(), format!("00000000-0000-4000-8000-{i:012}"));
                tags.insert(tags::OPERATION_ID.to_owned(), format!("{i:012x}"));
                tags.insert(tags::DISPLAY_NAME.to_owned(), format!("token {i}"));
                tags.insert(tags::OWNER.to_owned(), "svc@contoso.example".to_owned());
                let new = NewVersion { tags, ..Default::default() };
                store.set(&secret, &SecretString::from(format!("pat-{i}")), new).await.unwrap();
            }
            if i % 3 != 0 {
                let mut j = Journal::new(secret.clone());
                j.abandoned.push(OperationId::parse(&format!("{i:012x}")).unwrap());
                state.save(&Journal::key(&secret), &serde_json::to_vec(&j).unwrap(), None).await.unwrap();
            }
            if i == 9 {
                state.save(&Journal::key(&secret), b"{not json", None).await.unwrap();
            }
            secrets.push(secret);
        }
        let bulk = token_states(&store, &state, &secrets, 8).await;
        assert_eq!(bulk.len(), n, "every token is in the inventory");
        assert!(
            bulk[&secrets[9]].error.as_deref().is_some_and(|e| e.contains("journal")),
            "{:?}",
            bulk[&secrets[9]].error
        );
        for secret in &secrets {
            let one = token_state(&store, &state, secret).await;
            let many = &bulk[secret];
            assert_eq!(many.journal, one.journal, "{secret}");
            assert_eq!(many.journal_etag, one.journal_etag, "{secret}");
            assert_eq!(many.error, one.error, "{secret}");
            assert_eq!(many.current.as_ref().map(|c| &c.version), one.current.as_ref().map(|c| &c.version));
            // The planning tags are read alike; the others were left out of the bulk read.
            for name in PLANNING_TAGS {
                assert_eq!(many.tag(name), one.tag(name), "{secret} {name}");
            }
            assert_eq!(many.tag(tags::DISPLAY_NAME), None);
            assert!(many.current.as_ref().is_none_or(|c| c.tags.is_empty()));
            if one.current.is_some() {
                assert!(one.tag(tags::DISPLAY_NAME).is_some());
                assert!(many.current_authorization_id().is_some());
            }
        }
    }
}
