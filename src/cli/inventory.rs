//! `patrol inventory`: every PAT of every (owner, organization) the policy names — managed or not, its
//! scope, global or organization-scoped, expiry and state — joined with what patrol knows (which secret
//! holds it, which previous PATs are draining). The join is pure ([`rows`]); [`gather`] does the I/O.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::devops::{Connector, DisplayFilter, Pat};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use crate::rotation::inventory::{Inventory, gather as gather_inventory};
use crate::rotation::journal::Step;
use crate::rotation::policy::Policy;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub const AFTER_HELP: &str = "\
Examples:
  patrol inventory
  patrol inventory --format json | jq '.pats[] | select(.managed == false)'
  patrol inventory --format markdown > inventory.md

JSON (docs/schemas/inventory.schema.json):
  {taken_at, pats, problems}
  pats[]: owner, organization, authorization_id, display_name, managed,
          secret, role, scope, global, full_access, valid_from, valid_to,
          days_left, state (active, expired, missing, stopped-working)
  problems[]: owner, organization, error, sign_in_required

Exit 3 when an owner must sign in.";

#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What patrol's role for a PAT is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The PAT a managed secret currently holds.
    Current,
    /// A managed secret's previous PAT, kept valid until its grace ends, then revoked.
    Draining,
    /// Made by a rotation that is still in flight.
    Rotating,
    /// Carries patrol's marker but nothing references it (removed from the policy, or an orphan).
    Orphan,
    /// Not patrol's: shown and alerted on, never touched.
    Unmanaged,
    /// A managed secret that holds no PAT yet (the next run creates one).
    Missing,
}

/// One line of the inventory (JSON field names are stable; see `docs/cli.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatRow {
    pub owner: String,
    pub organization: String,
    pub authorization_id: Option<AuthorizationId>,
    pub display_name: String,
    pub managed: bool,
    pub secret: Option<String>,
    pub role: Role,
    pub scope: String,
    pub global: bool,
    pub full_access: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    /// `active`, `expired`, or `missing`.
    pub state: String,
}

/// An (owner, organization) whose PATs could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListProblem {
    pub owner: String,
    pub organization: String,
    pub error: String,
    pub sign_in_required: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InventoryView {
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub pats: Vec<PatRow>,
    pub problems: Vec<ListProblem>,
}

impl InventoryView {
    pub fn sign_in_required(&self) -> Vec<&ListProblem> {
        self.problems.iter().filter(|p| p.sign_in_required).collect()
    }

    pub fn table(&self) -> Table {
        let mut t =
            Table::new(&["OWNER", "ORG", "DISPLAY NAME", "SECRET", "ROLE", "SCOPE", "VALID TO", "DAYS", "STATE"]);
        for r in &self.pats {
            let mut scope = r.scope.clone();
            if r.global {
                scope.push_str(" [all orgs]");
            }
            t.push(vec![
                r.owner.clone(),
                r.organization.clone(),
                r.display_name.clone(),
                r.secret.clone().unwrap_or_else(|| "-".into()),
                serde_json::to_value(r.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                scope,
                r.valid_to.map(|v| v.date().to_string()).unwrap_or_else(|| "-".into()),
                r.days_left.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                r.state.clone(),
            ]);
        }
        t
    }

    fn problems_text(&self) -> String {
        self.problems
            .iter()
            .map(|p| {
                let hint = if p.sign_in_required {
                    format!(" (run: patrol login --owner {})", p.owner)
                } else {
                    String::new()
                };
                format!("! {} / {}: {}{hint}\n", p.owner, p.organization, p.error)
            })
            .collect()
    }
}

fn days_left(valid_to: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (valid_to - now).whole_seconds().div_euclid(86_400)
}

/// Joins the engine's inventory (active PATs, vault versions, journals) with each owner's expired PATs.
pub fn rows(
    inv: &Inventory,
    policy: &Policy,
    expired: &BTreeMap<(OwnerId, OrgName), Vec<Pat>>,
    now: OffsetDateTime,
) -> InventoryView {
    // Which PAT patrol knows as what.
    let mut known: BTreeMap<AuthorizationId, (SecretName, Role)> = BTreeMap::new();
    for (secret, ts) in &inv.tokens {
        for d in &ts.journal.drains {
            known.insert(d.pat.authorization_id, (secret.clone(), Role::Draining));
        }
        if let Some(op) = &ts.journal.operation {
            match &op.step {
                Step::Created { authorization_id, .. } | Step::Stored { authorization_id, .. } => {
                    known.insert(*authorization_id, (secret.clone(), Role::Rotating));
                }
                Step::Intent => {}
            }
        }
        if let Some(c) = &ts.journal.current {
            known.insert(c.authorization_id, (secret.clone(), Role::Current));
        }
        if let Some(id) = ts.current_authorization_id() {
            known.insert(id, (secret.clone(), Role::Current));
        }
    }
    let mut pats = Vec::new();
    let mut problems = Vec::new();
    let mut held: std::collections::BTreeSet<SecretName> = Default::default();
    for o in &inv.owners {
        if let Some(e) = &o.error {
            problems.push(ListProblem {
                owner: o.owner.to_string(),
                organization: o.organization.to_string(),
                error: e.clone(),
                sign_in_required: o.sign_in_required,
            });
        }
        let exp = expired.get(&(o.owner.clone(), o.organization.clone())).map(Vec::as_slice).unwrap_or_default();
        for pat in
            o.pats.iter().chain(exp.iter().filter(|e| !o.pats.iter().any(|p| p.authorization_id == e.authorization_id)))
        {
            let (secret, role) = match known.get(&pat.authorization_id) {
                Some((s, r)) => (Some(s.clone()), *r),
                None if crate::rotation::journal::parse_marker(&pat.display_name).is_some() => (None, Role::Orphan),
                None => (None, Role::Unmanaged),
            };
            if role == Role::Current
                && let Some(s) = &secret
            {
                held.insert(s.clone());
            }
            pats.push(PatRow {
                owner: o.owner.to_string(),
                organization: o.organization.to_string(),
                authorization_id: Some(pat.authorization_id),
                display_name: pat.display_name.clone(),
                managed: secret.is_some(),
                secret: secret.map(|s| s.to_string()),
                role,
                scope: pat.scope.clone(),
                global: pat.is_global(),
                full_access: pat.is_full_access(),
                valid_from: Some(pat.valid_from),
                valid_to: Some(pat.valid_to),
                days_left: Some(days_left(pat.valid_to, now)),
                state: if pat.valid_to <= now {
                    "expired".into()
                } else if pat.stopped_working(now) {
                    // Not "active" beside a critical line about it: Azure DevOps refuses it since the cutoff.
                    "stopped-working".into()
                } else {
                    "active".into()
                },
            });
        }
    }
    for t in &policy.tokens {
        if inv.tokens.contains_key(&t.secret)
            && !held.contains(&t.secret)
            && inv.owner_pats(&t.owner, &t.organization).is_some_and(|o| o.error.is_none())
        {
            pats.push(PatRow {
                owner: t.owner.to_string(),
                organization: t.organization.to_string(),
                authorization_id: None,
                display_name: t.display_name.to_string(),
                managed: true,
                secret: Some(t.secret.to_string()),
                role: Role::Missing,
                scope: t.scopes.to_string(),
                global: t.all_orgs,
                full_access: false,
                valid_from: None,
                valid_to: None,
                days_left: None,
                state: "missing".into(),
            });
        }
    }
    pats.sort_by(|a, b| {
        (&a.owner, &a.organization, a.valid_to.is_none(), a.valid_to, &a.display_name).cmp(&(
            &b.owner,
            &b.organization,
            b.valid_to.is_none(),
            b.valid_to,
            &b.display_name,
        ))
    });
    InventoryView { taken_at: now, pats, problems }
}

/// Each (owner, organization)'s expired PATs (the engine's inventory lists active ones only). A listing
/// that fails is left out here: the active listing of the same pair reports the problem.
pub async fn expired_pats(connector: &dyn Connector, inv: &Inventory) -> BTreeMap<(OwnerId, OrgName), Vec<Pat>> {
    let mut out = BTreeMap::new();
    for o in inv.owners.iter().filter(|o| o.error.is_none()) {
        match connector.pats(&o.owner, &o.organization).list(DisplayFilter::Expired).await {
            Ok(p) => {
                out.insert((o.owner.clone(), o.organization.clone()), p);
            }
            Err(e) => tracing::warn!(owner = %o.owner, organization = %o.organization, "expired PATs not listed: {e}"),
        }
    }
    out
}

/// Gathers the whole inventory through the configured stores and Azure DevOps.
pub async fn gather(local: &Local) -> Result<(Inventory, InventoryView), CliError> {
    let connector = local.connector()?;
    let progress = super::progress::Progress::new("inventory", local.policy.tokens.len() as u64 + 1);
    let now = local.clock.now();
    let inv = gather_inventory(
        &local.policy,
        None,
        local.store.as_ref(),
        local.state.as_ref(),
        connector.as_ref(),
        now,
        local.settings.max_concurrency,
    )
    .await;
    for t in &local.policy.tokens {
        progress.step(t.secret.as_str());
    }
    let expired = expired_pats(connector.as_ref(), &inv).await;
    progress.step("expired PATs");
    progress.finish();
    let view = rows(&inv, &local.policy, &expired, now);
    Ok((inv, view))
}

/// Exit 3 when an owner must sign in, 1 when another listing failed.
pub fn listing_outcome(view: &InventoryView) -> Result<(), CliError> {
    let sign_in = view.sign_in_required();
    if !sign_in.is_empty() {
        let owners: Vec<_> = sign_in.iter().map(|p| p.owner.as_str()).collect();
        return Err(CliError::sign_in(super::sign_in_message(&owners)));
    }
    if let Some(p) = view.problems.first() {
        return Err(CliError::failed(format!(
            "the PATs of {} in {} could not be listed: {}",
            p.owner, p.organization, p.error
        )));
    }
    Ok(())
}

pub async fn run(args: &InventoryArgs) -> Result<(), CliError> {
    let local = Local::from_env_read_only()?;
    let (_, view) = gather(&local).await?;
    let out = render(
        args.output.format,
        &view,
        || format!("{}{}", view.table().to_text(), view.problems_text()),
        || format!("{}{}", view.table().to_markdown(), view.problems_text()),
    )?;
    write_stdout(&out)?;
    // The problems are part of every format; the exit code says so too.
    listing_outcome(&view)
}
