//! Adoption: onboarding a PAT that already exists (created by hand, before patrol) as a managed token's
//! current value — without creating a second PAT and without the "changed outside patrol" alarm that an
//! untagged vault write raises.
//!
//! The operator names the PAT (authorization id, or display name among the owner's active PATs) and gives
//! its value (never on the command line: stdin, a file or an environment variable), or the value is already
//! the secret's current version. patrol checks the PAT is an active PAT of the token's owner in its
//! organization, tests the value (`connectionData`, as a new PAT is tested), then — under the token's lease —
//! journals the adoption **before** the vault write (so the Key Vault event the write raises finds it known),
//! writes the version tagged like a version patrol wrote (`managed-by`, `authorization-id`, `valid-to`, …
//! and `adopted-at`), and records the vault version in the journal. The next plan sees a current PAT it
//! knows: nothing to do, or a scheduled rotation (`due`, `drift`, …) — never `adopt`, never `missing`.

use super::journal::{self, Adoption, Drain, PatVersion};
use super::lease::Leases;
use super::policy::ManagedToken;
use crate::devops::probe::ProbeOutcome;
use crate::devops::{Connector, DevOpsError, DisplayFilter, Pat};
use crate::domain::AuthorizationId;
use crate::state::StateStore;
use crate::store::{NewVersion, PAT_CONTENT_TYPE, SecretStore, tags};
use secrecy::SecretString;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};

/// Which existing PAT to adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Id(AuthorizationId),
    /// Exactly one active PAT of the owner in the organization with this display name (case-insensitive).
    DisplayName(String),
}

/// Why an adoption did not happen. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The owner must sign in first (exit 3).
    #[error("{0}")]
    SignIn(String),
    /// The request cannot work as given (exit 2).
    #[error("{0}")]
    Usage(String),
    /// It could not be done now (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// What was adopted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Adopted {
    pub secret: String,
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    pub vault_version: String,
    /// The secret already held this PAT, adopted earlier: nothing was written.
    pub already: bool,
    /// Notes for the operator (scopes differ from the policy, expires soon: the next run rotates it).
    pub notes: Vec<String>,
}

/// The parts adoption works with (the same the engine uses).
pub struct AdoptContext<'a> {
    pub token: &'a ManagedToken,
    pub connector: &'a dyn Connector,
    pub store: &'a dyn SecretStore,
    pub state: &'a dyn StateStore,
    pub leases: &'a dyn Leases,
    pub now: OffsetDateTime,
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Finds the PAT among the owner's active PATs in the token's organization.
async fn find(cx: &AdoptContext<'_>, pick: &Pick) -> Result<Pat, AdoptError> {
    let t = cx.token;
    let pats = cx.connector.pats(&t.owner, &t.organization).list(DisplayFilter::Active).await.map_err(|e| match e {
        DevOpsError::SignInRequired { reason, .. } if reason == crate::auth::session::NEVER_SIGNED_IN => {
            AdoptError::SignIn(format!(
                "{} has not signed in, so patrol cannot see their PATs: sign in with `patrol login --owner {}`",
                t.owner, t.owner
            ))
        }
        DevOpsError::SignInRequired { reason, .. } => AdoptError::SignIn(format!(
            "{}'s sign-in expired or was revoked ({reason}): sign in again with `patrol login --owner {}`",
            t.owner, t.owner
        )),
        other => AdoptError::Failed(format!("listing the PATs of {} in {} failed: {other}", t.owner, t.organization)),
    })?;
    let live: Vec<Pat> = pats.into_iter().filter(|p| p.valid_to > cx.now).collect();
    match pick {
        Pick::Id(id) => live.into_iter().find(|p| &p.authorization_id == id).ok_or_else(|| {
            AdoptError::Failed(format!(
                "PAT {id} is not an active PAT of {} in {} (revoked, expired, another owner's, or another \
                 organization's): `patrol inventory` lists the PATs patrol can see",
                t.owner, t.organization
            ))
        }),
        Pick::DisplayName(name) => {
            let mut hits: Vec<Pat> = live.into_iter().filter(|p| p.display_name.eq_ignore_ascii_case(name)).collect();
            match hits.len() {
                1 => Ok(hits.remove(0)),
                0 => Err(AdoptError::Failed(format!(
                    "no active PAT of {} in {} is named {name:?}: `patrol inventory` lists them",
                    t.owner, t.organization
                ))),
                _ => Err(AdoptError::Usage(format!(
                    "{} active PATs of {} in {} are named {name:?} ({}): name one with --pat <authorization id>",
                    hits.len(),
                    t.owner,
                    t.organization,
                    hits.iter().map(|p| p.authorization_id.to_string()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

/// Adopts the picked PAT as `cx.token`'s current value. `value`: the PAT's value from the operator, or
/// `None` to adopt the value the secret already holds.
pub async fn adopt(cx: &AdoptContext<'_>, pick: &Pick, value: Option<SecretString>) -> Result<Adopted, AdoptError> {
    let t = cx.token;
    let pat = find(cx, pick).await?;
    let id = pat.authorization_id;
    let stored = cx
        .store
        .get(&t.secret, None)
        .await
        .map_err(|e| AdoptError::Failed(format!("reading secret {}: {e}", t.secret)))?;
    let mut notes = Vec::new();
    if pat.is_global() && !t.allow_all_orgs {
        notes.push("it is an all-organization PAT: the next run replaces it with an organization-scoped one".into());
    }
    if pat.scope != t.scopes.as_str() && !t.scopes.matches_wire(&pat.scope) {
        notes.push(format!(
            "its scopes are {:?}, the policy says {:?}: the next run rotates it (drift)",
            pat.scope,
            t.scopes.as_str()
        ));
    }
    if pat.valid_to - cx.now <= Duration::days(t.rotate_before_days as i64) {
        notes.push(format!("it expires on {}: the next run rotates it (due)", pat.valid_to.date()));
    }

    // Already adopted (or written by patrol) and known to the journal: nothing to do.
    let loaded = journal::load(cx.state, &t.secret)
        .await
        .map_err(|e| AdoptError::Failed(format!("reading the journal of {}: {e}", t.secret)))?;
    if let Some(s) = &stored
        && s.properties.tags.get(tags::AUTHORIZATION_ID).is_some_and(|v| v == &id.to_string())
        && loaded.journal.current.as_ref().is_some_and(|c| c.authorization_id == id)
        && value.is_none()
    {
        return Ok(Adopted {
            secret: t.secret.to_string(),
            authorization_id: id,
            display_name: pat.display_name,
            scope: pat.scope,
            valid_to: pat.valid_to,
            vault_version: s.properties.version.clone(),
            already: true,
            notes,
        });
    }
    let value = match (value, stored) {
        (Some(v), _) => v,
        (None, Some(s)) => s.value,
        (None, None) => {
            return Err(AdoptError::Usage(format!(
                "secret {} holds no value yet: give the PAT's value with --value-stdin, --value-file or --value-env \
                 (never on the command line)",
                t.secret
            )));
        }
    };

    // The value must be a working PAT in the organization (as every new PAT is tested).
    if let Some(probe) = cx.connector.probe() {
        match probe.test(&t.organization, &value).await {
            ProbeOutcome::Accepted => {}
            ProbeOutcome::Refused(why) => {
                return Err(AdoptError::Failed(format!(
                    "Azure DevOps refused the value given for PAT {id} in {}: {why} (is it this PAT's value?); \
                     nothing was written",
                    t.organization
                )));
            }
            ProbeOutcome::Unavailable(why) => {
                return Err(AdoptError::Failed(format!(
                    "the value could not be tested in {}: {why}; nothing was written, try again",
                    t.organization
                )));
            }
        }
    }

    let key = format!("token/{}", t.secret);
    let Some(_lease) =
        cx.leases.try_acquire(&key).await.map_err(|e| AdoptError::Failed(format!("taking the lease {key}: {e}")))?
    else {
        return Err(AdoptError::Failed(format!(
            "{} is busy (a rotation holds its lease): try again in a minute",
            t.secret
        )));
    };
    // Journal first: the Key Vault event the write raises must find the PAT known, not "outside patrol".
    let mut loaded = journal::load(cx.state, &t.secret)
        .await
        .map_err(|e| AdoptError::Failed(format!("reading the journal of {}: {e}", t.secret)))?;
    if let Some(op) = &loaded.journal.operation {
        return Err(AdoptError::Failed(format!(
            "a rotation of {} is in flight (operation {}): let it finish (`patrol rotate {}`) before adopting",
            t.secret, op.op, t.secret
        )));
    }
    let j = &mut loaded.journal;
    if let Some(old) = j.current.take().filter(|o| o.authorization_id != id) {
        j.drains.push(Drain {
            pat: old,
            revoke_after: cx.now + Duration::days(t.grace_days as i64),
            replaced_by: None,
        });
    }
    j.current = Some(PatVersion {
        authorization_id: id,
        owner: t.owner.clone(),
        organization: t.organization.clone(),
        vault_version: None,
    });
    j.adopted = Some(Box::new(Adoption { authorization_id: id, at: cx.now, vault_version: None }));
    let save_err = |e: journal::JournalError| AdoptError::Failed(format!("writing the journal of {}: {e}", t.secret));
    loaded.save(cx.state).await.map_err(save_err)?;

    let mut tg = BTreeMap::new();
    tg.insert(tags::MANAGED_BY.to_owned(), tags::MANAGED_BY_VALUE.to_owned());
    tg.insert(tags::AUTHORIZATION_ID.to_owned(), id.to_string());
    tg.insert(tags::DISPLAY_NAME.to_owned(), pat.display_name.chars().take(tags::MAX_TAG_LEN).collect());
    tg.insert(tags::ORGANIZATION.to_owned(), t.organization.to_string());
    tg.insert(tags::OWNER.to_owned(), t.owner.to_string());
    tg.insert(tags::SCOPE.to_owned(), pat.scope.chars().take(tags::MAX_TAG_LEN).collect());
    tg.insert(tags::VALID_TO.to_owned(), fmt_time(pat.valid_to));
    tg.insert(tags::ADOPTED_AT.to_owned(), fmt_time(cx.now));
    let new = NewVersion {
        content_type: Some(PAT_CONTENT_TYPE.to_owned()),
        expires: Some(pat.valid_to),
        not_before: None,
        tags: tg,
    };
    let written = cx.store.set(&t.secret, &value, new).await;
    drop(value);
    let version = match written {
        Ok(v) => v.version,
        Err(e) => {
            // Nothing new is current: the journal's adoption stays (the PAT is live and the operator's), and
            // a rerun writes the version. The plan treats a current version naming another PAT as before.
            return Err(AdoptError::Failed(format!(
                "writing secret {}: {e}; the adoption is journaled, run the same command again",
                t.secret
            )));
        }
    };
    let j = &mut loaded.journal;
    if let Some(c) = j.current.as_mut() {
        c.vault_version = Some(version.clone());
    }
    if let Some(a) = j.adopted.as_mut() {
        a.vault_version = Some(version.clone());
    }
    j.deliveries = super::machine::fresh_deliveries(t, id, &version, cx.now);
    loaded.save(cx.state).await.map_err(save_err)?;
    tracing::info!(secret = %t.secret, pat = %id, version = %version, "adopted an existing PAT");
    Ok(Adopted {
        secret: t.secret.to_string(),
        authorization_id: id,
        display_name: pat.display_name,
        scope: pat.scope,
        valid_to: pat.valid_to,
        vault_version: version,
        already: false,
        notes,
    })
}
