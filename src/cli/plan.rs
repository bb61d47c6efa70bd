//! `patrol plan`: the dry run — inventory and the pure plan, printed; nothing is changed.

use super::CliError;
use super::output::{Format, OutputArgs, render, write_json_stdout, write_stdout};
use super::runtime::Local;
use crate::consumers::view::TokenConsumers;
use crate::rotation::plan::{Action, Plan, Planner, Requests, plan};

pub const AFTER_HELP: &str = "\
Examples:
  patrol plan
  patrol plan ci-build-pat release-bot-pat
  patrol plan --format json | jq '.entries[] | select(.actions != [])'

JSON (docs/schemas/plan.schema.json):
  {at, entries, unmanaged}
  entries[]: secret, owner, organization, current, actions, notes,
             consumers (consumer, kind, state, moved, delivered_at,
             last_used_at, failing_since, lag_hours, lag_until, ...)
  actions[].action: rotate, revoke-previous, wait-previous, resume, adopt,
                    reconcile-orphan, deliver, blocked
  (evidence-gated revocation: revoke-previous has evidence and, at the
  deadline, alert; wait-previous has reason and until)
  unmanaged[]: owner, organization, pat, made_by_patrol

Exit 3 when an owner must sign in first.";

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Only these secrets (default: every token in the policy).
    pub secrets: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn markdown(p: &Plan) -> String {
    let mut t = super::output::Table::new(&["Secret", "Owner", "Organization", "Valid to", "Days", "Actions"]);
    for e in &p.entries {
        let c = e.current.as_ref();
        t.push(vec![
            e.secret.to_string(),
            e.owner.to_string(),
            e.organization.to_string(),
            c.and_then(|c| c.valid_to).map(|v| v.date().to_string()).unwrap_or_else(|| "-".into()),
            c.and_then(|c| c.days_left).map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            if e.actions.is_empty() {
                "nothing".into()
            } else {
                e.actions.iter().map(Action::label).collect::<Vec<_>>().join("; ")
            },
        ]);
    }
    let mut s = t.to_markdown();
    if !p.unmanaged.is_empty() {
        s.push_str(&format!("\n{} PAT(s) not managed by patrol (never touched).\n", p.unmanaged.len()));
    }
    s
}

pub async fn run(args: &PlanArgs) -> Result<(), CliError> {
    // Where a run's time goes (`PATROL_LOG=debug`): each phase's end, in ms since the command started.
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_secs_f64() * 1e3;
    let local = Local::from_env_read_only()?;
    tracing::debug!(ms = ms(), tokens = local.policy.tokens.len(), "plan: settings and policy read");
    let only = super::runtime::chosen(&local, &args.secrets)?;
    let engine = local.engine()?;
    let inv = engine.inventory(only.as_deref()).await;
    tracing::debug!(ms = ms(), "plan: inventory gathered");
    super::return_freed_memory();
    let sign_in: Vec<_> = inv.owners.iter().filter(|o| o.sign_in_required).map(|o| o.owner.to_string()).collect();
    let requests = Requests::default();
    if args.output.format == Format::Json {
        // Each entry is planned as it is written: the plan is never in memory beside the inventory.
        write_json_stdout(&Planner::new(&inv, &local.policy, local.clock.now(), &requests))?;
        tracing::debug!(ms = ms(), "plan: planned and written");
        return sign_in_result(&sign_in);
    }
    let the_plan = plan(&inv, &local.policy, local.clock.now(), &requests);
    tracing::debug!(ms = ms(), "plan: planned");
    // The plan holds what it shows: the inventory (every token's state, every listed PAT) can go.
    drop(inv);
    let consumers: Vec<_> = the_plan
        .entries
        .iter()
        .filter(|e| !e.consumers.is_empty())
        .map(|e| TokenConsumers { secret: e.secret.to_string(), consumers: e.consumers.clone() })
        .collect();
    let with_consumers = |s: String, md: bool| {
        if consumers.is_empty() {
            return s;
        }
        let t = super::consumers::table(&consumers);
        if md {
            format!("{s}\n## Consumers\n\n{}", t.to_markdown())
        } else {
            format!("{s}\nConsumers:\n{}", t.to_text())
        }
    };
    write_stdout(&render(
        args.output.format,
        &the_plan,
        || with_consumers(the_plan.table(), false),
        || with_consumers(markdown(&the_plan), true),
    )?)?;
    tracing::debug!(ms = ms(), "plan: written");
    sign_in_result(&sign_in)
}

/// Exit 3 naming the owners who must sign in (their tokens are planned as blocked), after the plan is out.
fn sign_in_result(sign_in: &[String]) -> Result<(), CliError> {
    if sign_in.is_empty() {
        return Ok(());
    }
    Err(CliError::sign_in(super::sign_in_message(sign_in)))
}
