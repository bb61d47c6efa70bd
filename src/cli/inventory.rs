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
  {taken_at, pats, problems, consumers, usage, stale_shared_dead}
  pats[]: owner, organization, authorization_id, display_name, managed,
          secret, role, scope, global, full_access, valid_from, valid_to,
          days_left, state (active, expired, missing, stopped-working,
          retired, retiring)
  problems[]: owner, organization, error, sign_in_required
  consumers[]: secret, consumers (consumer, kind, state, moved, ...)
  usage[]: authorization_id, last_use, watched_since, verdict, revoke_on
  stale_shared_dead[]: kind, display_name, evidence, what_to_do, ...
\"No audited use\" is evidence, not proof: the audit log records audited
actions, not every use.

Exit 3 when an owner must sign in.";

#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

pub use crate::report::{ListProblem, PatRow, Role};

#[derive(Debug, Clone, Serialize)]
pub struct InventoryView {
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub pats: Vec<PatRow>,
    pub problems: Vec<ListProblem>,
    /// Each managed token's consumers and where their delivery stands (`crate::consumers::view`).
    pub consumers: Vec<crate::consumers::view::TokenConsumers>,
    /// Per PAT: the last audited use patrol has seen, since when the log is watched, the verdict
    /// (`crate::audit::usage`; empty until [`with_usage`] fills it).
    pub usage: Vec<crate::audit::usage::PatUsage>,
    /// Stale (no audited use in N days), shared and dead PATs with what to do.
    pub stale_shared_dead: Vec<crate::audit::usage::Row>,
}

impl InventoryView {
    pub fn sign_in_required(&self) -> Vec<&ListProblem> {
        self.problems.iter().filter(|p| p.sign_in_required).collect()
    }

    pub fn table(&self) -> Table {
        let mut t = Table::new(&[
            "OWNER",
            "ORG",
            "DISPLAY NAME",
            "SECRET",
            "ROLE",
            "SCOPE",
            "VALID TO",
            "DAYS",
            "STATE",
            "LAST AUDITED USE",
        ]);
        for r in &self.pats {
            let last_use = self.last_use_cell(r.authorization_id);
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
                last_use,
            ]);
        }
        t
    }

    /// The consumer table (empty when no token declares consumers), text or markdown.
    pub fn consumers_text(&self, markdown: bool) -> String {
        if self.consumers.is_empty() {
            return String::new();
        }
        let t = super::consumers::table(&self.consumers);
        if markdown {
            format!("\n## Consumers\n\n{}", t.to_markdown())
        } else {
            format!("\nConsumers:\n{}", t.to_text())
        }
    }

    /// `2026-12-01 from 10.0.0.1`, `none in 31 days`, `none yet (watched 3 days)`, `not watched`.
    fn last_use_cell(&self, id: Option<AuthorizationId>) -> String {
        use crate::audit::usage::Verdict;
        let Some(u) = id.and_then(|id| self.usage.iter().find(|u| u.authorization_id == id)) else {
            return "-".into();
        };
        match (&u.last_use, &u.verdict) {
            (_, Verdict::Dead) => "dead (all orgs)".into(),
            (Some(l), Verdict::Used) => format!("{} from {}", l.at.date(), if l.ip.is_empty() { "-" } else { &l.ip }),
            (_, Verdict::NoAuditedUse { days }) => format!("none in {days} days"),
            (_, Verdict::TooEarly { watched_days }) => format!("none yet (log watched {watched_days} days)"),
            (_, Verdict::NoEvidence { .. }) => "no evidence".into(),
            (None, Verdict::Used) => "-".into(),
        }
    }

    /// The stale/shared/dead section under the table, with the caveat.
    fn usage_text(&self) -> String {
        if self.stale_shared_dead.is_empty() {
            return String::new();
        }
        let mut s = format!("\nStale, shared and dead PATs ({})\n", crate::audit::usage::CAVEAT);
        for r in &self.stale_shared_dead {
            let evidence: Vec<&str> =
                r.evidence.iter().map(String::as_str).filter(|e| *e != crate::audit::usage::CAVEAT).collect();
            s.push_str(&format!(
                "* {} \"{}\" ({} / {}): {}\n  what to do: {}\n",
                r.kind,
                r.display_name,
                r.owner,
                r.organization,
                evidence.join("; "),
                r.what_to_do
            ));
        }
        s
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
        if let Some(r) = inv.tokens.get(&t.secret).and_then(|ts| ts.journal.retired.as_ref()) {
            pats.push(PatRow {
                owner: t.owner.to_string(),
                organization: t.organization.to_string(),
                authorization_id: r.current,
                display_name: t.display_name.to_string(),
                managed: true,
                secret: Some(t.secret.to_string()),
                role: Role::Retired,
                scope: t.scopes.to_string(),
                global: t.all_orgs,
                full_access: false,
                valid_from: None,
                valid_to: None,
                days_left: None,
                state: if r.done { "retired".into() } else { "retiring".into() },
            });
            continue;
        }
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
    let consumers = policy
        .tokens
        .iter()
        .filter(|t| !t.consumers.is_empty())
        .filter_map(|t| {
            let ts = inv.tokens.get(&t.secret)?;
            let current = ts.current_authorization_id().or(ts.journal.current.as_ref().map(|c| c.authorization_id));
            Some(crate::consumers::view::TokenConsumers {
                secret: t.secret.to_string(),
                consumers: crate::consumers::view::token_view(t, &ts.journal, current, now),
            })
        })
        .collect();
    InventoryView { taken_at: now, pats, problems, consumers, usage: Vec::new(), stale_shared_dead: Vec::new() }
}

/// The inventory's PATs as the stale/shared assessment takes them (declared consumers from the policy).
pub fn usage_pats(view: &InventoryView, policy: &Policy) -> Vec<crate::audit::usage::UsagePat> {
    view.pats
        .iter()
        .filter_map(|r| {
            let id = r.authorization_id?;
            let owner = OwnerId::parse(&r.owner).ok()?;
            let organization = OrgName::parse(&r.organization).ok()?;
            let consumers = r
                .secret
                .as_deref()
                .and_then(|s| policy.tokens.iter().find(|t| t.secret.as_str() == s))
                .map(|t| t.consumers.list.iter().map(|c| c.id.clone()).collect())
                .unwrap_or_default();
            Some(crate::audit::usage::UsagePat {
                authorization_id: id,
                display_name: r.display_name.clone(),
                owner,
                organization,
                secret: r.secret.clone(),
                valid_from: r.valid_from?,
                valid_to: r.valid_to?,
                global: r.global,
                consumers,
            })
        })
        .filter(|p| p.valid_to > view.taken_at)
        .collect()
}

/// Adds what the audit log says (read-only: reads the audit checkpoints, changes nothing).
pub async fn with_usage(local: &Local, connector: &dyn Connector, view: &mut InventoryView) {
    let stale = std::fs::read_to_string(&local.settings.policy_file)
        .ok()
        .and_then(|t| crate::policy::audit::from_policy_text(&t).ok())
        .map(|p| p.stale)
        .unwrap_or_default();
    let pats = usage_pats(view, &local.policy);
    // Read-only (`respond = false`): no announcement is closed from here, so the listed pairs do not matter.
    let listed = Default::default();
    let report =
        crate::audit::usage::run(local.state.as_ref(), connector, &pats, &listed, &stale, &[], false, view.taken_at)
            .await;
    for e in &report.errors {
        tracing::warn!("{e}");
    }
    view.usage = report.pats;
    view.stale_shared_dead = report.rows;
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
    let mut view = rows(&inv, &local.policy, &expired, now);
    with_usage(local, connector.as_ref(), &mut view).await;
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
        || {
            format!(
                "{}{}{}{}",
                view.table().to_text(),
                view.problems_text(),
                view.consumers_text(false),
                view.usage_text()
            )
        },
        || {
            format!(
                "{}{}{}{}",
                view.table().to_markdown(),
                view.problems_text(),
                view.consumers_text(true),
                view.usage_text()
            )
        },
    )?;
    write_stdout(&out)?;
    // The problems are part of every format; the exit code says so too.
    listing_outcome(&view)
}
