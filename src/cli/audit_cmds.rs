//! `patrol audit`, `patrol revoke` and `patrol migrate-global`: the clap definitions and the `run_*`
//! functions. The logic lives in `crate::audit`; these only parse, confirm, and print. Exit codes: 0 done,
//! 1 something failed (the report says what), 2 bad input or configuration, 3 (`revoke`) the survey is
//! incomplete only because owners must sign in, 4 the operator declined.

use crate::app::StartupError;
use crate::audit::breakglass::{self, AdminApi, Request, Scope};
use crate::audit::ingest::PollConfig;
use crate::audit::managed;
use crate::audit::managed::{ManagedPat, managed_pats};
use crate::audit::migrate;
use crate::audit::render::{Format, render};
use crate::audit::replace::{EngineReplacer, Replacer};
use crate::audit::resume;
use crate::clock::Clock;
use crate::config::Settings;
use crate::devops::connector::HttpConnector;
use crate::domain::{AuthorizationId, OrgName, OwnerId};
use crate::policy::audit::AuditSettings;
use crate::rotation::engine::Engine;
use crate::state::{ETag, StateError, StateStore};
use crate::store::SecretStore;
use std::io::Write;
use std::sync::Arc;
use time::Duration;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_DECLINED: u8 = super::exit::DECLINED;

/// A duration like `30m`, `24h`, `7d` (at most the audit log's 90-day retention).
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = n.parse().map_err(|_| format!("{s:?}: expected a number and a unit, like 24h or 7d"))?;
    let d = match unit {
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("{s:?}: the unit must be m, h or d")),
    };
    if d <= Duration::ZERO || d > crate::audit::ingest::RETENTION {
        return Err(format!("{s:?}: must be more than 0 and at most 90d (the audit log's retention)"));
    }
    Ok(d)
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// How far back to read the audit log (e.g. 30m, 24h, 7d; at most 90d).
    #[arg(long, default_value = "24h", value_parser = parse_since)]
    pub since: Duration,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only these organizations (default: every organization with managed PATs).
    #[arg(long = "org")]
    pub orgs: Vec<String>,
    /// Who reads the audit log: `app` (the Function App's identity) or an administrator's UPN signed in with
    /// `patrol login --admin` (needs "View audit log"); default: PATROL_AUDIT_READER.
    #[arg(long)]
    pub reader: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["pat", "owner", "user", "all"])))]
pub struct RevokeArgs {
    /// The organization.
    #[arg(long)]
    pub org: String,
    /// Revoke this PAT (authorization id).
    #[arg(long)]
    pub pat: Option<String>,
    /// Revoke every PAT of this owner (a UPN patrol holds a sign-in for).
    #[arg(long)]
    pub owner: Option<String>,
    /// Revoke every PAT of this user (Graph subject descriptor; Token Admin, needs --admin).
    #[arg(long)]
    pub user: Option<String>,
    /// Revoke everything in the organization patrol can reach.
    #[arg(long)]
    pub all: bool,
    /// With --pat or --all: also list these users' PATs through Token Admin (repeatable).
    #[arg(long = "descriptor")]
    pub descriptors: Vec<String>,
    /// Who administers tokens (Token Admin): `app` (the Function App's identity, a Project Collection
    /// Administrator) or an administrator's UPN signed in with `patrol login --admin`.
    #[arg(long)]
    pub admin: Option<String>,
    /// Create and store replacements for managed PATs before revoking them.
    #[arg(long)]
    pub prestage: bool,
    /// With --all: also refuse every PAT created before now (a Token Admin revocation rule over all scopes).
    #[arg(long)]
    pub revocation_rule: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Show what would be revoked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateGlobalArgs {
    /// Show the global PATs and what would be replaced; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// What the commands work with: the same secret store, journal (state) store, leases and Azure DevOps
/// connector the Function App uses, and the rotation engine over them (pre-staged replacements and
/// global-PAT migration are rotations through its journaled state machine).
pub struct AuditRuntime {
    pub clock: Clock,
    pub store: Arc<dyn SecretStore>,
    pub state: Arc<dyn StateStore>,
    pub connector: Arc<HttpConnector>,
    pub audit: AuditSettings,
    pub engine: Arc<Engine>,
    /// `PATROL_AUDIT_READER` (the Function App's identity or an administrator); `--reader` overrides it.
    pub audit_reader: Option<OwnerId>,
    /// The metrics pipeline (`PATROL_OTLP_ENDPOINT`, Application Insights) from the composition root, when
    /// configured: `patrol audit` and `patrol revoke` export their run's points through it.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AuditRuntime {
    /// The parts from the composition root ([`crate::app::App`]): the stores (journal and leases in
    /// `AzureWebJobsStorage` when it is configured), the policy's `[audit]` table (validated with the
    /// policy; the defaults without one), and the Azure DevOps connector with owners' and administrators'
    /// sessions and the Function App's own identity (`app`).
    pub fn from_settings(settings: &Settings, clock: Clock) -> Result<Self, StartupError> {
        Self::from_app(crate::app::App::open(settings.clone(), clock.clone())?)
    }

    /// As [`AuditRuntime::from_settings`] for a dry run, which writes nothing: the stores are opened as
    /// [`crate::app::App::open_read_only`] opens them (nothing created; the owners' sessions do not store the
    /// refresh tokens Entra rotates).
    pub fn read_only(settings: &Settings, clock: Clock) -> Result<Self, StartupError> {
        Self::from_app(crate::app::App::open_read_only(settings.clone(), clock)?)
    }

    fn from_app(app: crate::app::App) -> Result<Self, StartupError> {
        let (settings, clock) = (&app.settings, app.clock.clone());
        let connector = app.routed_connector()?;
        let engine = app.engine_on(connector.clone());
        let audit_reader = settings.audit_reader.clone();
        let metrics = app.metrics();
        Ok(Self {
            clock,
            audit: app.audit().cloned().unwrap_or_default(),
            store: app.store,
            state: app.state,
            connector,
            engine: Arc::new(engine),
            audit_reader,
            metrics,
        })
    }

    async fn managed(&self) -> Result<Vec<ManagedPat>, String> {
        managed_pats(self.store.as_ref()).await.map_err(|e| format!("reading the managed secrets: {e}"))
    }
}

fn write(out: &mut dyn Write, s: &str) -> Result<(), String> {
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing the output: {e}"))
}

/// `patrol audit`: the timer's audit pass ([`crate::audit::pass`]) over the last `--since`, read-only — the
/// same managed PATs (policy ⋈ journal ⋈ vault), the same recognition of patrol's own actions, the same
/// rules; its own throwaway checkpoint (seeded with the timer's record of last uses), so the timer's is not
/// advanced; responses are planned as the policy says, never executed. Managed tokens that cannot be
/// watched and unreadable logs are reported on stderr and make the exit code 1.
pub async fn run_audit(rt: &AuditRuntime, args: &AuditArgs, out: &mut dyn Write) -> Result<u8, String> {
    use crate::audit::pass::{PassInput, audit_pass, inputs};
    use crate::devops::Connector as _;
    let (started, calls) = (std::time::Instant::now(), rt.connector.call_counters());
    let now = rt.clock.now();
    let mut only: Vec<OrgName> = Vec::new();
    for o in &args.orgs {
        only.push(OrgName::parse(o).map_err(|e| format!("--org {o:?}: {e}"))?);
    }
    let inputs = inputs(&rt.engine.policy, rt.store.as_ref(), rt.state.as_ref(), now).await;
    let managed = &inputs.managed;
    let reader_arg = args
        .reader
        .as_deref()
        .map(crate::auth::app::parse_identity)
        .transpose()
        .map_err(|e| format!("--reader: {e}"))?
        .or_else(|| rt.audit_reader.clone());
    let mut readers = std::collections::BTreeMap::new();
    let mut orgs: Vec<OrgName> = managed.pats.iter().map(|m| m.organization.clone()).collect();
    orgs.extend(managed.unwatched.iter().map(|u| u.organization.clone()));
    orgs.extend(only.iter().cloned());
    orgs.sort();
    orgs.dedup();
    orgs.retain(|o| only.is_empty() || only.contains(o));
    if orgs.is_empty() {
        return Err("no organization: name one with --org (the policy names no managed token)".into());
    }
    let scratch_state = Scratch::default();
    let mut problems = managed.errors.clone();
    for org in &orgs {
        match &reader_arg {
            Some(r) => {
                readers.insert(org.clone(), r.clone());
            }
            // Organizations with managed PATs are reported by the pass; one named only by --org is here.
            None if !managed.pats.iter().any(|m| m.in_organization(org)) => problems.push(format!(
                "nobody reads the audit log of {org}: pass --reader, or set PATROL_AUDIT_READER (docs/deploy.md)"
            )),
            None => {}
        }
        // The timer's last-use record makes dormancy visible to a fresh window too.
        let key = crate::audit::ingest::checkpoint_key(org);
        if let Ok(Some((body, _))) = rt.state.load(&key).await
            && let Ok(cp) = serde_json::from_slice::<crate::audit::ingest::Checkpoint>(&body)
        {
            let seeded = crate::audit::ingest::Checkpoint { last_use: cp.last_use, ..Default::default() };
            let body = serde_json::to_vec(&seeded).map_err(|e| e.to_string())?;
            scratch_state.save(&key, &body, None).await.map_err(|e| e.to_string())?;
        }
    }
    let policy = rt.engine.policy.clone();
    let targets_for =
        move |secret: &crate::domain::SecretName| policy.token(secret).map(|t| t.notify.clone()).unwrap_or_default();
    let input = PassInput {
        settings: &rt.audit,
        managed: &managed.pats,
        actions: inputs.actions,
        readers,
        default_reader: None,
        targets_for: &targets_for,
        poll: PollConfig { first_lookback: args.since, ..PollConfig::default() },
        unwatched: &managed.unwatched,
        only: &orgs,
        respond: false,
    };
    let summary =
        audit_pass(rt.connector.as_ref(), &scratch_state, rt.connector.as_ref(), rt.engine.as_ref(), input, now).await;
    let (usage_rows, usage_warnings) = usage_section(rt, &scratch_state, &summary.reports, now).await;
    write(out, &render(&summary.reports, &usage_rows, args.format))?;
    for w in &usage_warnings {
        writeln!(std::io::stderr(), "patrol: warning: {w}").ok();
    }
    problems.extend(summary.errors.iter().cloned());
    for p in &problems {
        writeln!(std::io::stderr(), "patrol: {p}").ok();
    }
    if rt.metrics.is_some() {
        // Findings (marked as a dry run: the timer may count the same window) and the lag of the timer's own
        // checkpoints (read, never written), then the Azure DevOps calls this run made.
        let mut points = crate::audit::measure::pass_points(&summary, rt.state.as_ref(), now, true).await;
        points.extend(rt.connector.call_counters().since(&calls).points());
        let outcome = if problems.is_empty() { "completed" } else { "failed" };
        crate::app::export_cli_run(rt.metrics.as_deref(), points, outcome, started).await;
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_FAILED })
}

/// The stale, shared and dead PATs of the organizations just read (`crate::audit::usage`), as `inventory`
/// shows them: every PAT of the policy's owners there, judged on the timer's checkpoint joined with the window
/// this command read ([`crate::audit::usage::merge_watch`]). Read-only: the merged checkpoints go to the
/// throwaway store, nothing is announced or revoked. Also returns what made the section incomplete.
async fn usage_section(
    rt: &AuditRuntime,
    scratch: &Scratch,
    reports: &[crate::audit::ingest::PollReport],
    now: time::OffsetDateTime,
) -> (Vec<crate::audit::usage::Row>, Vec<String>) {
    use crate::audit::ingest::{Checkpoint, checkpoint_key};
    use crate::audit::usage;
    let mut warnings = Vec::new();
    if reports.is_empty() {
        return (Vec::new(), warnings);
    }
    for r in reports {
        let key = checkpoint_key(&r.organization);
        let timer = match rt.state.load(&key).await {
            Ok(Some((b, _))) => serde_json::from_slice::<Checkpoint>(&b).ok(),
            _ => None,
        };
        let Ok(Some((body, etag))) = scratch.load(&key).await else { continue };
        let Ok(fresh) = serde_json::from_slice::<Checkpoint>(&body) else { continue };
        if let Ok(merged) = serde_json::to_vec(&usage::merge_watch(timer, fresh)) {
            let _ = scratch.save(&key, &merged, Some(&etag)).await;
        }
    }
    // The timer's announcements, so a pending revocation shows its date.
    if let Ok(Some((body, _))) = rt.state.load(usage::NOTICES_KEY).await {
        let _ = scratch
            .save(
                usage::NOTICES_KEY,
                &body,
                scratch.load(usage::NOTICES_KEY).await.ok().flatten().map(|(_, e)| e).as_ref(),
            )
            .await;
    }
    let inventory = rt.engine.inventory(None).await;
    for o in inventory.owners.iter().filter(|o| o.error.is_some()) {
        if reports.iter().any(|r| r.organization == o.organization) {
            warnings.push(format!(
                "the stale/shared/dead section leaves out the PATs of {} in {}: {}",
                o.owner,
                o.organization,
                o.error.as_deref().unwrap_or_default()
            ));
        }
    }
    let mut pats = usage::pats_from_inventory(&inventory, &rt.engine.policy);
    pats.retain(|p| reports.iter().any(|r| r.organization == p.organization));
    let listed = usage::listed_pairs(&inventory);
    let report = usage::run(scratch, rt.connector.as_ref(), &pats, &listed, &rt.audit.stale, &[], false, now).await;
    warnings.extend(report.errors);
    (report.rows, warnings)
}

/// A throwaway state store: `patrol audit` reads without moving the timer's checkpoint.
#[derive(Debug, Default)]
struct Scratch(std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, u64)>>);

#[async_trait::async_trait]
impl StateStore for Scratch {
    async fn load(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(key).map(|(b, v)| (b.clone(), ETag(v.to_string()))))
    }

    async fn save(&self, key: &str, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StateError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = m.get(key).map(|(_, v)| ETag(v.to_string()));
        if current.as_ref() != expected {
            return Err(StateError::Conflict { key: key.to_owned(), expected: expected.map(|e| e.0.clone()) });
        }
        let v = m.get(key).map_or(1, |(_, v)| v + 1);
        m.insert(key.to_owned(), (body.to_vec(), v));
        Ok(ETag(v.to_string()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }
}

#[cfg(test)]
fn revoke_request(args: &RevokeArgs) -> Result<Request, String> {
    revoke_request_for(args, &[])
}

/// The request, with the owners `policy` manages tokens for in the organization (listed by `--pat`/`--all`).
fn revoke_request_for(args: &RevokeArgs, policy: &[crate::rotation::policy::ManagedToken]) -> Result<Request, String> {
    let organization = OrgName::parse(&args.org).map_err(|e| e.to_string())?;
    let scope = match (&args.pat, &args.owner, &args.user, args.all) {
        (Some(p), None, None, false) => Scope::Pat(AuthorizationId::parse(p).map_err(|e| e.to_string())?),
        (None, Some(o), None, false) => Scope::Owner(OwnerId::parse(o).map_err(|e| e.to_string())?),
        (None, None, Some(d), false) => Scope::User(d.clone()),
        (None, None, None, true) => Scope::Organization,
        _ => return Err("name exactly one of --pat, --owner, --user, --all".into()),
    };
    if args.revocation_rule && scope != Scope::Organization {
        return Err("--revocation-rule only goes with --all".into());
    }
    let mut policy_owners: Vec<OwnerId> = Vec::new();
    for t in policy.iter().filter(|t| t.organization == organization) {
        if !policy_owners.contains(&t.owner) {
            policy_owners.push(t.owner.clone());
        }
    }
    let mut signable_owners: Vec<OwnerId> = policy.iter().map(|t| t.owner.clone()).collect();
    signable_owners.sort();
    signable_owners.dedup();
    Ok(Request {
        organization,
        scope,
        descriptors: args.descriptors.clone(),
        policy_owners,
        signable_owners,
        prestage: args.prestage,
        revocation_rule: args.revocation_rule,
    })
}

/// `patrol revoke`: survey, confirm (unless `--yes` or `--dry-run`), execute, report; with metrics
/// configured, the run is exported (`patrol.invocations`, the PATs revoked and failed, Azure DevOps calls).
pub async fn run_revoke(
    rt: &AuditRuntime,
    args: &RevokeArgs,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<u8, String> {
    use crate::devops::Connector as _;
    let (started, calls) = (std::time::Instant::now(), rt.connector.call_counters());
    let (code, points) = revoke(rt, args, confirm, out).await?;
    export_run(rt, points, &calls, code, args.dry_run, started).await;
    Ok(code)
}

/// Exports a break-glass style CLI run (`patrol revoke`, `patrol migrate-global`) when metrics are
/// configured: its points, the Azure DevOps calls it made since `calls`, and its outcome from the exit code.
async fn export_run(
    rt: &AuditRuntime,
    mut points: Vec<crate::metrics::Point>,
    calls: &crate::metrics::CallCounters,
    code: u8,
    dry_run: bool,
    started: std::time::Instant,
) {
    use crate::devops::Connector as _;
    if rt.metrics.is_none() {
        return;
    }
    points.extend(rt.connector.call_counters().since(calls).points());
    let outcome = match code {
        0 if dry_run => "planned",
        0 => "completed",
        EXIT_DECLINED => "ignored",
        super::exit::SIGN_IN => "incomplete",
        _ => "failed",
    };
    crate::app::export_cli_run(rt.metrics.as_deref(), points, outcome, started).await;
}

/// A `patrol.run.result` value and which row outcomes count for it.
type ResultRule = (&'static str, fn(&str) -> bool);

/// `patrol.run.tokens` from a report's row outcomes: one point per `(result, matches)` pair, counting the
/// rows whose outcome matches.
fn outcome_points<'a>(
    outcomes: impl Iterator<Item = &'a str> + Clone,
    dry_run: bool,
    results: [ResultRule; 2],
) -> Vec<crate::metrics::Point> {
    use crate::metrics::{Point, RUN_TOKENS, attr};
    results
        .into_iter()
        .map(|(result, matches)| {
            let n = outcomes.clone().filter(|o| matches(o)).count() as f64;
            Point::new(&RUN_TOKENS, n).with(attr::RUN_RESULT, result).with(attr::DRY_RUN, dry_run)
        })
        .collect()
}

/// [`run_revoke`]'s work: the exit code, and the executed report's counts as metric points.
async fn revoke(
    rt: &AuditRuntime,
    args: &RevokeArgs,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<(u8, Vec<crate::metrics::Point>), String> {
    let req = revoke_request_for(args, &rt.engine.policy.tokens)?;
    let managed = rt.managed().await?;
    let admin = match &args.admin {
        Some(a) => Some(rt.connector.token_admin(
            &crate::auth::app::parse_identity(a).map_err(|e| format!("--admin: {e}"))?,
            &req.organization,
        )),
        None => None,
    };
    let admin_api = admin.as_ref().map(|a| a as &dyn AdminApi);
    let now = rt.clock.now();
    let survey =
        breakglass::survey(&req, &managed, rt.connector.as_ref(), admin_api, now).await.map_err(|e| e.to_string())?;
    if !args.dry_run && !args.yes {
        if survey.candidates.is_empty() && survey.revocation_rule.is_none() {
            // Fail closed: "nothing" only when patrol could look everywhere it should.
            write(out, &breakglass::incomplete_text(&survey.unlisted))?;
            write(
                out,
                if survey.complete {
                    "nothing to revoke\n"
                } else {
                    "no PAT found among those patrol could list; nothing was revoked — NOT a complete survey\n"
                },
            )?;
            for e in &survey.errors {
                write(out, &format!("error: {e}\n"))?;
            }
            let sign_in_only = !survey.unlisted.is_empty()
                && survey.errors.is_empty()
                && survey.unlisted.iter().all(|u| u.sign_in.is_some());
            let code = if sign_in_only {
                super::exit::SIGN_IN
            } else if survey.complete && survey.errors.is_empty() {
                0
            } else {
                EXIT_FAILED
            };
            return Ok((code, Vec::new()));
        }
        let preview = breakglass::execute(&survey, rt.connector.as_ref(), admin_api, None, true, now).await;
        write(out, &preview.table())?;
        if !confirm(&survey.confirmation()) {
            write(out, "declined; nothing was revoked\n")?;
            return Ok((EXIT_DECLINED, Vec::new()));
        }
    }
    // Pre-staged replacements are journaled per token by the engine; the break glass itself is recorded so
    // that a rerun after a crash resumes it (its own replacements are kept, not replaced and revoked).
    let begun = if args.prestage && !args.dry_run {
        let b = resume::begin(rt.state.as_ref(), &req.organization, &req.scope, rt.clock.now()).await?;
        if b.resumed {
            write(
                out,
                &format!(
                    "resuming the unfinished break glass started at {}\n",
                    crate::audit::finding::rfc3339(b.since)
                ),
            )?;
        }
        Some(b)
    } else {
        None
    };
    let replacer = EngineReplacer { engine: &rt.engine, since: begun.as_ref().map_or(now, |b| b.since) };
    let report = breakglass::execute(
        &survey,
        rt.connector.as_ref(),
        admin_api,
        args.prestage.then_some(&replacer as &dyn Replacer),
        args.dry_run,
        rt.clock.now(),
    )
    .await;
    if !report.dry_run
        && let Err(e) =
            crate::rotation::history::record(rt.state.as_ref(), &report.lifecycle_events(), rt.clock.now()).await
    {
        writeln!(std::io::stderr(), "patrol: warning: {e} (the weekly report will not list these revocations)").ok();
    }
    if let Some(b) = begun {
        if report.failed() {
            write(out, "the break glass is not finished: run the same command again to resume it\n")?;
        } else {
            resume::finish(rt.state.as_ref(), b, rt.clock.now()).await?;
        }
    }
    let text = match args.format {
        ReportFormat::Table => report.table(),
        ReportFormat::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
    };
    write(out, &text)?;
    let code = if report.only_sign_in_missing() {
        super::exit::SIGN_IN
    } else if report.failed() {
        EXIT_FAILED
    } else {
        0
    };
    Ok((code, revoke_points(&report)))
}

/// A break glass as `patrol.run.tokens`: the PATs it revoked (or would revoke, in a dry run) and those it
/// failed to revoke.
fn revoke_points(report: &breakglass::BreakGlassReport) -> Vec<crate::metrics::Point> {
    outcome_points(
        report.rows.iter().map(|r| r.outcome.as_str()),
        report.dry_run,
        [("revoked", |o| o == "revoked" || o == "would revoke"), ("failed", |o| o.starts_with("failed"))],
    )
}

/// `patrol migrate-global`: list all-organization PATs, confirm, replace the managed ones; with metrics
/// configured, the run is exported (`patrol.invocations`, the tokens it rotated — or would rotate, in a dry
/// run — and failed, Azure DevOps calls).
pub async fn run_migrate_global(
    rt: &AuditRuntime,
    args: &MigrateGlobalArgs,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<u8, String> {
    use crate::devops::Connector as _;
    let (started, calls) = (std::time::Instant::now(), rt.connector.call_counters());
    let (code, points) = migrate_global(rt, args, confirm, out).await?;
    export_run(rt, points, &calls, code, args.dry_run, started).await;
    Ok(code)
}

/// A migration as `patrol.run.tokens`: the managed all-organization PATs it replaced (`rotated`; in a dry
/// run, those it would replace) and those it failed to replace.
fn migrate_points(report: &migrate::MigrationReport) -> Vec<crate::metrics::Point> {
    outcome_points(
        report.rows.iter().map(|r| r.outcome.as_str()),
        report.dry_run,
        [("rotated", |o| o == "replaced" || o == "would replace"), ("failed", |o| o.starts_with("failed"))],
    )
}

/// [`run_migrate_global`]'s work: the exit code, and the report's counts as metric points.
async fn migrate_global(
    rt: &AuditRuntime,
    args: &MigrateGlobalArgs,
    confirm: &mut dyn FnMut(&str) -> bool,
    out: &mut dyn Write,
) -> Result<(u8, Vec<crate::metrics::Point>), String> {
    let managed: Vec<managed::ManagedPat> = rt.managed().await?;
    let (globals, errors) = migrate::find_global(&managed, rt.connector.as_ref(), rt.clock.now()).await;
    // The normal rotation path: a `global-migration` rotation of each token through the engine (validity,
    // scopes and the old PAT's grace from the policy).
    let replacer = EngineReplacer { engine: &rt.engine, since: rt.clock.now() };
    let to_replace = globals.iter().filter(|g| g.secret.is_some()).count();
    let dry_run = args.dry_run
        || (to_replace > 0
            && !args.yes
            && !confirm(&format!(
                "Replace {to_replace} managed all-organization PAT(s) with organization-scoped ones (each old one \
                 stays valid through its token's grace period, then the rotation engine revokes it)?"
            )));
    let report = migrate::migrate(globals, &managed, &replacer, dry_run, errors).await;
    let text = match args.format {
        ReportFormat::Table => report.table(),
        ReportFormat::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n",
    };
    write(out, &text)?;
    let code = if report.failed() {
        EXIT_FAILED
    } else if dry_run && !args.dry_run {
        EXIT_DECLINED
    } else {
        0
    };
    Ok((code, migrate_points(&report)))
}

/// Asks on the terminal; anything but `y`/`yes` — or no terminal at all — is no.
pub fn ask_terminal(question: &str) -> bool {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        eprintln!("patrol: {question}\npatrol: not a terminal, so not confirmed; pass --yes to proceed without asking");
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The runtime from the environment; a dry run (`read_only`) writes nothing.
fn runtime_from_env(read_only: bool) -> Result<AuditRuntime, super::CliError> {
    let settings = super::runtime::checked_settings(true)?;
    let rt = if read_only {
        AuditRuntime::read_only(&settings, Clock::system())
    } else {
        AuditRuntime::from_settings(&settings, Clock::system())
    };
    // Every startup failure of these commands is exit 2 (as before the composition root).
    rt.map_err(|e| super::CliError::usage(e.to_string()))
}

fn to_cli(r: Result<u8, String>, what: &str) -> Result<(), super::CliError> {
    match r {
        Ok(0) => Ok(()),
        Ok(EXIT_DECLINED) => Err(super::CliError { code: EXIT_DECLINED, message: format!("{what}: not confirmed") }),
        Ok(super::exit::SIGN_IN) => Err(super::CliError::sign_in(format!(
            "{what}: incomplete: an owner must sign in first (the report above names each and the command)"
        ))),
        Ok(code) => Err(super::CliError { code, message: format!("{what}: see the report above") }),
        Err(e) => Err(super::CliError::failed(e)),
    }
}

/// `patrol audit` from the command line.
pub async fn cli_audit(args: &AuditArgs) -> Result<(), super::CliError> {
    let rt = runtime_from_env(false)?;
    to_cli(run_audit(&rt, args, &mut std::io::stdout()).await, "audit")
}

/// `patrol revoke` from the command line.
pub async fn cli_revoke(args: &RevokeArgs) -> Result<(), super::CliError> {
    let rt = runtime_from_env(args.dry_run)?;
    to_cli(run_revoke(&rt, args, &mut ask_terminal, &mut std::io::stdout()).await, "revoke")
}

/// `patrol migrate-global` from the command line.
pub async fn cli_migrate_global(args: &MigrateGlobalArgs) -> Result<(), super::CliError> {
    let rt = runtime_from_env(args.dry_run)?;
    to_cli(run_migrate_global(&rt, args, &mut ask_terminal, &mut std::io::stdout()).await, "migrate-global")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    enum T {
        Audit(AuditArgs),
        Revoke(RevokeArgs),
        MigrateGlobal(MigrateGlobalArgs),
    }

    #[test]
    fn since_parses_units_and_bounds() {
        assert_eq!(parse_since("30m").unwrap(), Duration::minutes(30));
        assert_eq!(parse_since("7d").unwrap(), Duration::days(7));
        assert!(parse_since("91d").is_err() && parse_since("0h").is_err() && parse_since("5w").is_err());
        assert!(parse_since("h").is_err());
    }

    #[test]
    fn clap_definitions_enforce_one_target_and_rule_only_org_wide() {
        let T::Audit(a) = T::try_parse_from(["t", "audit", "--since", "7d", "--format", "markdown"]).unwrap() else {
            panic!()
        };
        assert_eq!((a.since, a.format), (Duration::days(7), Format::Markdown));
        assert!(T::try_parse_from(["t", "revoke", "--org", "fabrikam"]).is_err(), "a target is required");
        assert!(T::try_parse_from(["t", "revoke", "--org", "f", "--owner", "a@b.test", "--all"]).is_err());
        let T::Revoke(r) =
            T::try_parse_from(["t", "revoke", "--org", "f", "--owner", "a@b.test", "--revocation-rule"]).unwrap()
        else {
            panic!()
        };
        assert!(revoke_request(&r).unwrap_err().contains("only goes with --all"));
        let T::Revoke(r) = T::try_parse_from([
            "t",
            "revoke",
            "--org",
            "f",
            "--all",
            "--revocation-rule",
            "--admin",
            "x@y.test",
            "--yes",
        ])
        .unwrap() else {
            panic!()
        };
        let req = revoke_request(&r).unwrap();
        assert_eq!(req.scope, Scope::Organization);
        assert!(req.revocation_rule && r.yes);
        let T::Revoke(r) = T::try_parse_from(["t", "revoke", "--org", "f", "--pat", "not-a-uuid"]).unwrap() else {
            panic!()
        };
        assert!(revoke_request(&r).is_err());
        assert!(
            matches!(T::try_parse_from(["t", "migrate-global", "--dry-run"]).unwrap(), T::MigrateGlobal(m) if m.dry_run)
        );
    }
}
