//! The per-token journal: one JSON document per managed token (`journal/<secret>`) in a
//! [`StateStore`], written with compare-and-swap **before** every external effect, so a crash at any
//! point leaves a record that says exactly what may have happened and what to do next.
//!
//! A record holds at most one in-flight [`Operation`] (intent → created → stored → verified), the
//! previous PATs still [`Drain`]ing (valid until their grace ends, then revoked and their vault version
//! disabled), and what patrol last knew as the token's current PAT.

use crate::domain::{AuthorizationId, OperationId, OrgName, OwnerId, SecretName};
use crate::state::{ETag, StateError, StateStore};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Marker patrol puts in every PAT display name it creates: `"<name> (patrol:<op>)"`.
pub fn marked_display_name(base: &str, op: &OperationId) -> String {
    format!("{base} (patrol:{op})")
}

/// The base name and operation id of a display name carrying patrol's marker.
pub fn parse_marker(display_name: &str) -> Option<(&str, OperationId)> {
    let rest = display_name.strip_suffix(')')?;
    let idx = rest.rfind(" (patrol:")?;
    let op = OperationId::parse(&rest[idx + " (patrol:".len()..]).ok()?;
    Some((&display_name[..idx], op))
}

/// Why a token is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Within `rotate_before_days` of `validTo`.
    Due,
    /// No current version, or it names no PAT patrol can find (revoked, deleted, never tagged).
    Missing,
    /// The current PAT is past `validTo`.
    Expired,
    /// An operator asked (`?force=true`, `patrol rotate --force`).
    Forced,
    /// The current PAT's scopes no longer match the policy.
    Drift,
    /// The current PAT is all-organization and the policy does not allow that (retired 2026-12-01).
    GlobalMigration,
    /// The current PAT is suspected compromised: rotate now and revoke the old one without grace.
    Compromised,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Forced => "forced",
            Self::Drift => "drift",
            Self::GlobalMigration => "global-migration",
            Self::Compromised => "compromised",
        }
    }
}

/// A PAT and the vault version that held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatVersion {
    pub authorization_id: AuthorizationId,
    /// Whose PAT it is, where: revocation must go to the same owner and organization.
    pub owner: OwnerId,
    pub organization: OrgName,
    /// `None` when the vault version is unknown (e.g. adopted from a tag only).
    pub vault_version: Option<String>,
}

/// Where an in-flight operation stands. Each variant is written before the effect that follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// About to call Create with the marked display name. If found here after a crash, Create may or
    /// may not have happened: list by marker, revoke what is found (its value is lost), retry.
    Intent,
    /// Create succeeded; the value lives only in the memory of the process that created it. About to
    /// write it to the vault. After a crash: if a vault version carries this operation's tag it was
    /// stored, otherwise the PAT is revoked and the rotation retried.
    Created {
        authorization_id: AuthorizationId,
        #[serde(with = "time::serde::rfc3339")]
        valid_to: OffsetDateTime,
    },
    /// The vault holds the new PAT as its current version. About to verify it by Get.
    Stored {
        authorization_id: AuthorizationId,
        vault_version: String,
        #[serde(with = "time::serde::rfc3339")]
        valid_to: OffsetDateTime,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Created { .. } => "created",
            Self::Stored { .. } => "stored",
        }
    }
}

/// One rotation in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub op: OperationId,
    pub reason: Reason,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// The full display name sent to Create (with the marker).
    pub display_name: String,
    pub scopes: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_valid_to: OffsetDateTime,
    pub all_orgs: bool,
    /// The PAT this rotation replaces (drained after it), if patrol knows it.
    pub previous: Option<PatVersion>,
    /// Grace for the previous PAT, in whole days (0 for a compromised token).
    pub grace_days: u32,
    /// How many operations were abandoned (and their PATs revoked) before this one, in this rotation.
    #[serde(default)]
    pub attempt: u32,
    #[serde(flatten)]
    pub step: Step,
}

/// A previous PAT kept valid until its grace ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub pat: PatVersion,
    #[serde(with = "time::serde::rfc3339")]
    pub revoke_after: OffsetDateTime,
    /// The operation that replaced it (unknown when learned from vault tags only).
    pub replaced_by: Option<OperationId>,
}

/// A finished rotation, kept for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub op: OperationId,
    pub reason: Reason,
    pub authorization_id: AuthorizationId,
    pub vault_version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished: OffsetDateTime,
    /// What Azure DevOps granted differently from the request (clamped validTo, scope change), in words.
    #[serde(default)]
    pub drift: Vec<String>,
}

/// The last failure, kept until the next success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub step: String,
    pub error: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The journal record of one managed token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub secret: SecretName,
    pub operation: Option<Box<Operation>>,
    #[serde(default)]
    pub drains: Vec<Drain>,
    /// The PAT patrol last stored or adopted as current.
    pub current: Option<PatVersion>,
    pub last: Option<Completed>,
    pub last_failure: Option<Box<Failure>>,
    /// Operation ids patrol abandoned (their PATs are revoked if ever seen); bounded.
    #[serde(default)]
    pub abandoned: Vec<OperationId>,
    /// Each consumer's delivery of the current PAT ([`super::deliveries`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<super::deliveries::Delivery>,
    /// The last PAT an operator adopted (`patrol adopt`): an existing PAT made current without a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Box<Adoption>>,
    /// The token was retired (`patrol retire`): its PATs revoked, its secret disabled. Journaled **before**
    /// the first revocation, so no run ever mistakes a revoked PAT for a missing one and creates a new PAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Box<Retirement>>,
}

/// A retirement (`patrol retire`, in `audit/retire.rs`): written before any effect, finished once every PAT is revoked,
/// every vault version disabled and the lifecycle log has the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    /// When it was decided (the intent); the lifecycle events carry this time.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What did it (`patrol retire`).
    pub by: Option<String>,
    /// Why, in the operator's or patrol's words.
    pub reason: String,
    /// The token's PATs to revoke: the current one first, then the previous ones still draining.
    pub pats: Vec<PatVersion>,
    /// The current PAT among `pats` (`None`: the secret held none).
    #[serde(default)]
    pub current: Option<AuthorizationId>,
    /// Every PAT revoked and every version disabled.
    #[serde(default)]
    pub done: bool,
    /// The lifecycle log holds the retirement's events.
    #[serde(default)]
    pub recorded: bool,
}

/// An adoption (`patrol adopt`, `rotation/adopt.rs`): journaled before the vault write, completed with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub authorization_id: AuthorizationId,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub vault_version: Option<String>,
}

/// How many abandoned operation ids a record remembers.
pub const MAX_ABANDONED: usize = 16;

impl Journal {
    pub fn new(secret: SecretName) -> Self {
        Self {
            secret,
            operation: None,
            drains: Vec::new(),
            current: None,
            last: None,
            last_failure: None,
            abandoned: Vec::new(),
            deliveries: Vec::new(),
            adopted: None,
            retired: None,
        }
    }

    pub fn key(secret: &SecretName) -> String {
        format!("journal/{secret}")
    }

    pub fn abandon(&mut self, op: OperationId) {
        if !self.abandoned.contains(&op) {
            self.abandoned.push(op);
        }
        let excess = self.abandoned.len().saturating_sub(MAX_ABANDONED);
        self.abandoned.drain(..excess);
    }

    /// Every PAT this record says must not be treated as an orphan.
    pub fn referenced(&self) -> Vec<AuthorizationId> {
        let mut out: Vec<AuthorizationId> = self.drains.iter().map(|d| d.pat.authorization_id).collect();
        out.extend(self.current.as_ref().map(|c| c.authorization_id));
        if let Some(op) = &self.operation {
            match &op.step {
                Step::Intent => {}
                Step::Created { authorization_id, .. } | Step::Stored { authorization_id, .. } => {
                    out.push(*authorization_id)
                }
            }
            out.extend(op.previous.as_ref().map(|p| p.authorization_id));
        }
        out
    }
}

/// A journal record as loaded, with the version needed to write it back.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub journal: Journal,
    pub etag: Option<ETag>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("journal record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// Reads a token's journal (a fresh record when none exists).
pub async fn load(store: &dyn StateStore, secret: &SecretName) -> Result<Loaded, JournalError> {
    from_document(secret, store.load(&Journal::key(secret)).await)
}

/// A token's journal from its stored document ([`StateStore::load`] of [`Journal::key`]), as [`load`].
pub fn from_document(
    secret: &SecretName,
    document: Result<Option<(Vec<u8>, crate::state::ETag)>, crate::state::StateError>,
) -> Result<Loaded, JournalError> {
    let key = Journal::key(secret);
    match document? {
        None => Ok(Loaded { journal: Journal::new(secret.clone()), etag: None }),
        Some((body, etag)) => {
            let journal: Journal = serde_json::from_slice(&body)
                .map_err(|e| JournalError::Corrupt { key: key.clone(), message: e.to_string() })?;
            if &journal.secret != secret {
                return Err(JournalError::Corrupt { key, message: format!("names secret {}", journal.secret) });
            }
            Ok(Loaded { journal, etag: Some(etag) })
        }
    }
}

impl Loaded {
    /// Writes the record (compare-and-swap on the version it was loaded at) and keeps the new version.
    pub async fn save(&mut self, store: &dyn StateStore) -> Result<(), JournalError> {
        let body = serde_json::to_vec_pretty(&self.journal)
            .map_err(|e| JournalError::Corrupt { key: Journal::key(&self.journal.secret), message: e.to_string() })?;
        let tag = store.save(&Journal::key(&self.journal.secret), &body, self.etag.as_ref()).await?;
        self.etag = Some(tag);
        if let Some(op) = &self.journal.operation {
            // The engine's per-token span carries the operation from here on (Application Insights follows
            // one rotation by it); each journaled step is one line.
            tracing::Span::current().record("operation_id", tracing::field::display(&op.op));
            tracing::info!(step = op.step.name(), attempt = op.attempt, "journaled");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileStateStore;

    #[test]
    fn markers_round_trip() {
        let op = OperationId::parse("0123456789ab").unwrap();
        let name = marked_display_name("CI (build)", &op);
        assert_eq!(name, "CI (build) (patrol:0123456789ab)");
        assert_eq!(parse_marker(&name), Some(("CI (build)", op)));
        assert_eq!(parse_marker("CI build"), None);
        assert_eq!(parse_marker("x (patrol:XYZ)"), None);
    }

    #[tokio::test]
    async fn records_round_trip_with_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path());
        let secret = SecretName::parse("ci-pat").unwrap();
        let mut a = load(&store, &secret).await.unwrap();
        assert!(a.etag.is_none());
        let op = OperationId::new_random();
        a.journal.operation = Some(Box::new(Operation {
            op: op.clone(),
            reason: Reason::Due,
            started: time::macros::datetime!(2027-01-01 00:00 UTC),
            display_name: marked_display_name("CI", &op),
            scopes: "vso.code".into(),
            requested_valid_to: time::macros::datetime!(2027-01-31 00:00 UTC),
            all_orgs: false,
            previous: None,
            grace_days: 2,
            attempt: 0,
            step: Step::Created {
                authorization_id: AuthorizationId::from_uuid(uuid::Uuid::new_v4()),
                valid_to: time::macros::datetime!(2027-01-31 00:00 UTC),
            },
        }));
        let mut b = a.clone();
        a.save(&store).await.unwrap();
        // b was loaded before a's write: its write must be refused.
        assert!(matches!(b.save(&store).await, Err(JournalError::State(StateError::Conflict { .. }))));
        let again = load(&store, &secret).await.unwrap();
        assert_eq!(again.journal, a.journal);
        let json: serde_json::Value =
            serde_json::from_slice(&store.load("journal/ci-pat").await.unwrap().unwrap().0).unwrap();
        assert_eq!(json["operation"]["step"], "created");
        assert_eq!(json["operation"]["reason"], "due");
    }

    #[test]
    fn abandoned_is_bounded() {
        let mut j = Journal::new(SecretName::parse("s").unwrap());
        for _ in 0..40 {
            j.abandon(OperationId::new_random());
        }
        assert_eq!(j.abandoned.len(), MAX_ABANDONED);
    }
}
