//! `patrol demo`: the whole job on a fresh machine, in seconds, with no Azure and no settings.
//!
//! It starts patrol-emulator in-process (Azure DevOps PAT API, Entra sign-in, Key Vault over HTTPS, Event
//! Grid delivery, all on one virtual clock), seeds an organization with PATs in every interesting state
//! and a service principal for the vault, and writes a demo `patrol.toml` into a directory. Then, as in a
//! deployment: the real custom handler starts on 127.0.0.1:0 (the real rotation engine, built from
//! settings that point at the emulated vault: client-credentials sign-in, the emulator's CA) and Key
//! Vault's Event Grid subscription is pointed at it in Functions-host mode **before any secret is
//! written** ([`events`] relays and records each delivery). The owner signs in with a real device-code
//! flow (the emulator approves the code; the refresh token goes into the vault); the inventory before is
//! taken; the operator onboards the four existing PATs with `patrol adopt` (journaled, tagged as adopted),
//! and the events Key Vault raises for them (SecretNewVersionCreated, SecretNearExpiry for those within 30
//! days of `exp`) reach `EventGridSecretChanged`, which finds them known and rotates the one that is due. An operator forces a
//! rotation through `RotateHttp`. Four virtual days later a new handler instance is started (the Function
//! App scaled to zero; this also drops the cached vault token the emulator's clock has expired), the plan
//! is shown (`GET /api/rotate`) and `RotateTimer` rotates what is due and revokes previous PATs whose
//! grace ended. `patrol status` is shown while the vault still exists; then the rotations (and which
//! invocation made each), the inventory after, the alerts (local SMTP when `PATROL_SMTP_HOST` is set,
//! else a mailbox file) and the report.
//!
//! The secrets live only in the emulated vault, which ends with the demo: nothing secret is written under
//! `--dir` (policy, journal, mailbox, report). Everything printed is collected first and checked against
//! every value the emulator minted (PATs, access and refresh tokens, client secrets) and every version the
//! vault holds; a match aborts the demo.

mod events;
mod hook;
mod host;
mod vault;
mod world;

use super::CliError;
use super::inventory::{InventoryView, expired_pats, rows};
use super::runtime::Local;
use super::status::StatusView;
use crate::auth::device_code::{LoginOptions, login};
use crate::clock::Clock;
use crate::config::{Settings, Source};
use crate::consumers::view::{ConsumerView, token_view};
use crate::domain::{OwnerId, SecretName};
use crate::rotation::inventory::gather;
use events::EventTap;
use patrol_emulator::eventgrid::{DeliveryConfig, DeliveryMode, RetryPolicy};
use patrol_emulator::seed::MintedPat;
use patrol_emulator::server::KeyVaultConfig;
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Examples:
  patrol demo                       # narrative on stdout; files in a temporary directory
  patrol demo --dir ./patrol-demo   # keep the policy, state, mailbox and report there
  patrol demo --json | jq .rotations

Needs nothing: no Azure, no settings, no network beyond 127.0.0.1. With PATROL_SMTP_HOST (and the other
PATROL_SMTP_* settings) set, alerts go to that SMTP server; otherwise to <dir>/mailbox.mbox.
Secrets live only in an emulated Azure Key Vault (HTTPS) that ends with the demo; the directory keeps no secret.

JSON (docs/schemas/demo.schema.json):
  {ok, elapsed_ms, dir, virtual_start, secret_store, inventory_before,
   plan, invocations, rotations, status, inventory_after, alerts, report}
  invocations[]: function, request, outcome, http_status, summary
                 (Event Grid deliveries also: event, secret)
  rotations[]: secret, reason, by, authorization_id, valid_to, draining";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary (JSON) instead of the narrative.
    #[arg(long)]
    pub json: bool,
    /// Keep the demo's files (policy, state, mailbox, report) in this directory instead of a temporary one.
    /// It must be empty or not exist yet (see --force).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --dir: run in a directory that is not empty. The demo's own files from an earlier run (its
    /// policy, state, mailbox, CA bundle and report) are removed first, so the run starts clean; nothing else
    /// in the directory is touched.
    #[arg(long, requires = "dir")]
    pub force: bool,
    /// Export the demo's metrics (every invocation's) to this OpenTelemetry collector's OTLP/HTTP receiver,
    /// e.g. http://127.0.0.1:4318 (default: PATROL_OTLP_ENDPOINT, else none). See docs/metrics.md.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// The files and directories a demo run writes into its directory; `--force` removes exactly these.
const DEMO_FILES: [&str; 5] = ["patrol.toml", "state", "mailbox.mbox", "ca-bundle.pem", "patrol-report.html"];

/// Prepares `--dir`: refuses a non-empty directory unless `force`, and then removes the demo's own files
/// (never anything else) so the run starts clean.
fn prepare_dir(d: &Path, force: bool) -> Result<(), CliError> {
    let cannot = |what: &str, e: std::io::Error| CliError::failed(format!("cannot {what} {}: {e}", d.display()));
    match std::fs::read_dir(d) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !force {
                    return Err(CliError::usage(format!(
                        "--dir {} is not empty: the demo writes its policy, state, mailbox and report there and \
                         would overwrite or mix with what is in it. Use an empty or new directory, or add --force \
                         to remove the demo's own files ({}) from it first",
                        d.display(),
                        DEMO_FILES.join(", ")
                    )));
                }
                for f in DEMO_FILES {
                    let path = d.join(f);
                    let removed = match std::fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                        Ok(_) => std::fs::remove_file(&path),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(e),
                    };
                    removed.map_err(|e| CliError::failed(format!("cannot remove {}: {e}", path.display())))?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(d).map_err(|e| cannot("create", e))
        }
        Err(e) => Err(cannot("read", e)),
    }
}

/// What a demo run produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The narrative (already checked for secret values).
    pub text: String,
    /// The machine-readable summary (already checked for secret values).
    pub json: Value,
    /// Where the report was written.
    pub report: PathBuf,
    /// Every secret value the emulator minted during the run (PATs, access and refresh tokens, client
    /// secrets) and every version the emulated vault held, for callers that scan their own captures;
    /// never printed.
    pub minted: Vec<SecretString>,
    /// Every payload a consumer received from patrol besides the value itself — the webhook notifications
    /// as received (headers and body) — for callers' leak scans.
    pub payloads: Vec<String>,
}

pub async fn run(args: &DemoArgs) -> Result<(), CliError> {
    let dir = match &args.dir {
        Some(d) => {
            prepare_dir(d, args.force)?;
            d.clone()
        }
        None => {
            // Kept after exit so the report and mailbox can be opened; private to this user.
            let d = std::env::temp_dir().join(format!("patrol-demo-{}", uuid::Uuid::new_v4().simple()));
            let mut b = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&d).map_err(|e| CliError::failed(format!("cannot create {}: {e}", d.display())))?;
            d
        }
    };
    let mut env = Source::from_env();
    if let Some(url) = &args.otlp_endpoint {
        env = env.with("PATROL_OTLP_ENDPOINT", url);
    }
    let outcome = run_demo(&dir, &env).await?;
    if args.json {
        let s = serde_json::to_string_pretty(&outcome.json).map_err(|e| CliError::failed(e.to_string()))?;
        super::output::write_stdout(&format!("{s}\n"))
    } else {
        super::output::write_stdout(&outcome.text)
    }
}

/// Settings of the demo: the emulator's endpoints and vault (`vault`), files under `dir`; SMTP passed
/// through from `env`.
fn settings(dir: &Path, emu: &Emulator, env: &Source, vault: Vec<(String, String)>) -> Result<Settings, CliError> {
    let e = emu.endpoints();
    let p = |f: &str| dir.join(f).display().to_string();
    let mut pairs: Vec<(String, String)> = vec![
        ("PATROL_POLICY_FILE".into(), p("patrol.toml")),
        ("PATROL_STATE_DIR".into(), p("state")),
        ("PATROL_DEVOPS_URL".into(), e.devops.clone()),
        ("PATROL_AUDIT_URL".into(), e.audit.clone()),
        ("PATROL_ENTRA_AUTHORITY".into(), e.entra.clone()),
        ("PATROL_TENANT_ID".into(), e.tenant.clone()),
        ("PATROL_CLIENT_ID".into(), world::CLIENT_ID.into()),
        ("PATROL_LEASE".into(), "local".into()),
        ("PATROL_LOG_FORMAT".into(), "text".into()),
        ("PATROL_MAILBOX_FILE".into(), p("mailbox.mbox")),
    ];
    pairs.extend(vault);
    // Metrics to a local collector when asked (`--otlp-endpoint` or PATROL_OTLP_ENDPOINT); never to Azure.
    for name in ["PATROL_OTLP_ENDPOINT", "PATROL_METRICS_FLUSH_TIMEOUT_MS", "PATROL_METRICS_OWNER_LABEL"] {
        if let Some(v) = env.get(name) {
            pairs.push((name.into(), v.into()));
        }
    }
    if env.get("PATROL_SMTP_HOST").is_some() {
        // PATROL_CA_CERT is folded into the CA bundle (vault::ca_bundle).
        for name in [
            "PATROL_SMTP_HOST",
            "PATROL_SMTP_PORT",
            "PATROL_SMTP_TLS",
            "PATROL_SMTP_USERNAME",
            "PATROL_SMTP_PASSWORD",
            "PATROL_SMTP_FROM",
        ] {
            if let Some(v) = env.get(name) {
                pairs.push((name.into(), v.into()));
            }
        }
        pairs.retain(|(k, _)| k != "PATROL_MAILBOX_FILE");
    }
    Ok(Settings::from_source(&Source::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))))?)
}

/// Reads the inventory view through the demo's stores and the emulator.
async fn inventory(local: &Local) -> Result<InventoryView, CliError> {
    let connector = local.connector()?;
    let now = local.clock.now();
    let inv = gather(&local.policy, None, local.store.as_ref(), local.state.as_ref(), connector.as_ref(), now, 4).await;
    let expired = expired_pats(connector.as_ref(), &inv).await;
    Ok(rows(&inv, &local.policy, &expired, now))
}

fn inventory_text(out: &mut String, view: &InventoryView) {
    out.push_str(&view.table().to_text());
    for p in &view.problems {
        let _ = writeln!(out, "! {} / {}: {}", p.owner, p.organization, p.error);
    }
}

/// What the narrative has shown so far: the invocations, where each rotation happened, and how far the
/// Event Grid relay and the emulator's event log have been read.
struct Story {
    out: String,
    invocations: Vec<Value>,
    /// secret → (operation id of its last rotation, the step that made it).
    rotated: BTreeMap<String, (String, String)>,
    seen_events: usize,
    raised_from: usize,
    /// The consumers using the new PAT (simulated pipeline and workflow runs), for the JSON.
    uses: Vec<Value>,
    /// Why the previous PAT of the consumed token was kept on day 2.
    held_back: Vec<String>,
    /// When the consumed token's previous PAT went, and why then.
    revoked_after: Option<String>,
}

impl Story {
    /// One host invocation's line for the narrative and the JSON.
    fn record(&mut self, function: &str, what: &str, reply: &Value) -> Value {
        let o = host::outcome(reply);
        let status = o["status"].as_str().unwrap_or("?").to_owned();
        let summary = o["summary"].as_str().or_else(|| o["error"].as_str()).unwrap_or("").to_owned();
        let _ = writeln!(self.out, "  {function:<24} {what:<40} -> {status}: {summary}");
        // RotateHttp answers over HTTP (`Outputs.res.statusCode`); the timer has no HTTP status.
        let http = &reply["Outputs"]["res"]["statusCode"];
        let http_status = http.as_u64().or_else(|| http.as_str().and_then(|s| s.parse().ok()));
        self.invocations.push(json!({
            "function": function, "request": what, "outcome": status, "http_status": http_status, "summary": summary,
        }));
        o
    }

    /// Waits for every Key Vault event raised so far to reach the handler, shows each delivery and the
    /// handler's answer, then which tokens were rotated during `step`.
    async fn events(&mut self, emu: &Emulator, tap: &EventTap, local: &Local, step: &str) -> Result<(), CliError> {
        events::settle(emu.eventgrid(), self.raised_from, Duration::from_secs(8)).await.map_err(self::step)?;
        self.raised_from = emu.eventgrid().events().len();
        let seen = tap.seen();
        for d in seen.iter().skip(self.seen_events) {
            let what = format!("{} {}", d.event, d.secret);
            let summary = d.summary.strip_prefix("ignored: ").unwrap_or(&d.summary);
            let _ = writeln!(
                self.out,
                "  {:<24} {what:<40} -> HTTP {} {}: {summary}",
                "EventGridSecretChanged", d.http_status, d.status
            );
            self.invocations.push(json!({
                "function": "EventGridSecretChanged", "request": what, "event": d.event, "secret": d.secret,
                "http_status": d.http_status, "outcome": d.status, "summary": d.summary,
            }));
        }
        self.seen_events = seen.len();
        self.rotations(local, step).await;
        Ok(())
    }

    /// Notes the rotations that completed since the last look, attributing them to `step`.
    async fn rotations(&mut self, local: &Local, step: &str) {
        for j in super::report::journals(local).await {
            let Some(c) = &j.last else { continue };
            let key = j.secret.to_string();
            if self.rotated.get(&key).is_some_and(|(op, _)| *op == c.op.to_string()) {
                continue;
            }
            let _ = writeln!(
                self.out,
                "    => {key} rotated ({}) by {step}: new PAT {} valid to {}",
                c.reason.as_str(),
                c.authorization_id,
                c.valid_to.date()
            );
            self.rotated.insert(key, (c.op.to_string(), step.to_owned()));
        }
    }
}

fn step(e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("demo: {e}"))
}

/// Runs the whole demo in `dir`. `env` supplies optional SMTP settings.
pub async fn run_demo(dir: &Path, env: &Source) -> Result<DemoOutcome, CliError> {
    let started = Instant::now();

    // 1. The emulated world, on its virtual clock: Azure DevOps, Entra, Key Vault, Event Grid.
    let config = EmulatorConfig {
        keyvault: KeyVaultConfig { vault_name: vault::NAME.into(), ..Default::default() },
        ..Default::default()
    };
    let emu = Emulator::start(config).await.map_err(step)?;
    let vnow = emu.clock().now();
    let placeholder = patrol_emulator::patsecret::generate(vnow.year(), u8::from(vnow.month()));
    let applied = {
        let mut seed = world::seed(vnow);
        seed.apps.push(vault::app());
        seed.consumers = Some(world::consumer_seed(vault::APP_ID, &placeholder).map_err(step)?);
        let ctx = emu.context();
        let mut state = ctx.state();
        patrol_emulator::seed::apply(ctx, &mut state, &seed).map_err(step)?
    };
    let client_secret = applied
        .apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(vault::APP_ID))
        .and_then(|a| a.client_secret.clone())
        .map(SecretString::from)
        .ok_or_else(|| step("the emulator minted no client secret for the Key Vault application"))?;
    let github_token = applied
        .consumers
        .as_ref()
        .and_then(|c| c.github_tokens.first())
        .map(|t| SecretString::from(t.token.clone()))
        .ok_or_else(|| step("the emulator minted no GitHub token for patrol"))?;
    let creds = Creds {
        client_secret,
        github_token,
        placeholder: SecretString::from(placeholder),
        hook_key: SecretString::from(format!(
            "whsec_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
    };
    let result = run_in(dir, env, &emu, &applied.pats, &creds, started).await;
    let _ = emu.shutdown().await;
    result
}

/// The credentials the demo's world is built with (never printed; all part of the leak scan).
struct Creds {
    /// Of the service principal patrol uses for the vault and, as its own identity, for Azure DevOps consumers.
    client_secret: SecretString,
    /// patrol's GitHub credential (the operator stores it in the vault).
    github_token: SecretString,
    /// What the service connection and the variable group held before patrol (a PAT-shaped placeholder).
    placeholder: SecretString,
    /// The webhook consumer's signing key (shared by patrol, through the vault, and the receiver).
    hook_key: SecretString,
}

async fn run_in(
    dir: &Path,
    env: &Source,
    emu: &Emulator,
    pats: &[MintedPat],
    creds: &Creds,
    started: Instant,
) -> Result<DemoOutcome, CliError> {
    let client_secret = &creds.client_secret;
    let vnow = emu.clock().now();
    let clock = Clock::starting_at(vnow);
    let github_api = emu.endpoints().extra.get("github").cloned().unwrap_or_default();
    std::fs::write(dir.join("patrol.toml"), world::policy(&github_api)).map_err(step)?;
    let ca = vault::ca_bundle(emu, dir, env.get("PATROL_SMTP_HOST").and(env.get("PATROL_CA_CERT"))).map_err(step)?;
    let mut pairs = vault::settings(emu, client_secret, &ca).map_err(step)?;
    // patrol's own Entra identity writes the Azure DevOps consumers (here: the vault's service principal).
    pairs.push(("PATROL_CONSUMER_CREDENTIAL".into(), "client-secret".into()));
    let settings = settings(dir, emu, env, pairs)?;
    let hook = hook::HookReceiver::start(creds.hook_key.clone(), clock.clone()).await.map_err(step)?;
    let hook_url = hook.url.clone();
    let kv_url = settings.keyvault.as_ref().map(|k| k.url.to_string()).unwrap_or_default();
    let mut story = Story {
        out: String::new(),
        invocations: Vec::new(),
        rotated: BTreeMap::new(),
        seen_events: 0,
        raised_from: 0,
        uses: Vec::new(),
        held_back: Vec::new(),
        revoked_after: None,
    };
    let _ = writeln!(story.out, "patrol demo — everything runs on this machine against patrol-emulator (no Azure).");
    let _ = writeln!(story.out, "Virtual time: {}. Files: {}", vnow.date(), dir.display());
    let _ = writeln!(
        story.out,
        "Seeded organization {} with {} PATs of {}; the policy manages {} of them.",
        world::ORG,
        world::PATS.len(),
        world::OWNER,
        world::PATS.iter().filter(|p| p.secret.is_some()).count()
    );
    let _ = writeln!(
        story.out,
        "Secrets live only in the emulated Azure Key Vault at {kv_url} (HTTPS, the emulator's own CA; patrol signs in \
         as service principal {} with client credentials).\n",
        vault::APP_ID
    );

    // 2. The real handler on 127.0.0.1:0, and Key Vault's Event Grid subscription pointed at it (through
    //    the relay that shows each delivery) before any secret is written.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(step)?;
    let first = host::RunningHandler::start(&settings, &clock).await.map_err(step)?;
    let tap = EventTap::start(&first.base, http.clone()).await.map_err(step)?;
    story.raised_from = emu.eventgrid().events().len();
    emu.eventgrid().set_config(DeliveryConfig {
        target: Some(tap.url.clone()),
        mode: DeliveryMode::FunctionsHost,
        // The demo compresses days into seconds: deliveries missed while the Function App is scaled to
        // zero are retried within a second, not on Event Grid's 10 s / 30 s / 1 min schedule.
        retry: RetryPolicy::Fast,
        ..emu.eventgrid().config()
    });
    let day0 = Local::open(settings.clone(), clock.clone())?;
    let day = Day { emu, local: &day0, clock: &clock, http: &http, base: &first.base, tap: &tap, hook: &hook, creds };
    let result = day_zero(day, &mut story, pats).await;
    let before = match result {
        Ok(before) => before,
        Err(e) => {
            first.stop().await;
            tap.stop().await;
            hook.stop().await;
            return Err(e);
        }
    };

    // 5. Two days (and an hour) pass on the virtual clock: the grace of the PATs replaced on day 0 is over.
    //    The instance is still warm (its cached tokens expired on the virtual clock and are renewed); the CLI
    //    (a new process each time) opens its stores again.
    emu.clock().advance(time::Duration::days(2) + time::Duration::hours(1));
    clock.set(emu.clock().now());
    let day2 = Local::open(settings.clone(), clock.clone())?;
    let day = Day { emu, local: &day2, clock: &clock, http: &http, base: &first.base, tap: &tap, hook: &hook, creds };
    let result = day_two(day, &mut story).await;
    // The Function App scales to zero afterwards: the instance goes, with its cached vault token.
    first.stop().await;
    if let Err(e) = result {
        tap.stop().await;
        hook.stop().await;
        return Err(e);
    }

    // 6. Day four: the timer cold-starts a new instance.
    emu.clock().advance(time::Duration::days(2) - time::Duration::hours(1));
    clock.set(emu.clock().now());
    let second = host::RunningHandler::start(&settings, &clock).await.map_err(step)?;
    tap.set_handler(&second.base);
    let local = Local::open(settings.clone(), clock.clone())?;
    let day = Day { emu, local: &local, clock: &clock, http: &http, base: &second.base, tap: &tap, hook: &hook, creds };
    let result = day_four(day, &mut story).await;
    second.stop().await;
    tap.stop().await;
    let received = hook.seen();
    hook.stop().await;
    let (plan_json, status) = result?;

    // 7. What happened.
    let journals = super::report::journals(&local).await;
    let mut rotations = Vec::new();
    let out = &mut story.out;
    let _ = writeln!(out, "\n== Rotations");
    for j in &journals {
        if let Some(c) = &j.last {
            let by = story.rotated.get(&j.secret.to_string()).map(|(_, s)| s.as_str()).unwrap_or("?");
            let _ = writeln!(
                out,
                "  {:<18} rotated ({}) by {by} -> new PAT {} valid to {}; {} previous PAT(s) draining",
                j.secret.to_string(),
                c.reason.as_str(),
                c.authorization_id,
                c.valid_to.date(),
                j.drains.len()
            );
            let consumers = local
                .policy
                .token(&j.secret)
                .map(|t| token_view(t, j, j.current.as_ref().map(|c| c.authorization_id), clock.now()))
                .unwrap_or_default();
            for v in &consumers {
                let _ = writeln!(out, "  {:<18}   consumer {:<58} {}", "", v.consumer, v.detail);
            }
            rotations.push(json!({ "secret": j.secret, "reason": c.reason.as_str(), "by": by, "authorization_id": c.authorization_id, "valid_to": c.valid_to.format(&time::format_description::well_known::Rfc3339).ok(), "draining": j.drains.len(), "consumers": consumers }));
        }
        if let Some(f) = &j.last_failure {
            let _ = writeln!(out, "  {:<18} FAILED at {}: {}", j.secret.to_string(), f.step, f.error);
        }
    }
    let after = inventory(&local).await?;
    let _ = writeln!(out, "\n== Inventory after ({} PATs)", after.pats.len());
    inventory_text(out, &after);

    let alerts = alerts(&settings);
    let _ = writeln!(out, "\n== Alerts ({})", alerts["channel"].as_str().unwrap_or(""));
    for s in alerts["subjects"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", s.as_str().unwrap_or(""));
    }

    let report_path = dir.join("patrol-report.html");
    let data = super::report::model(&local, &after, "patrol demo report: fabrikam").await;
    super::report::write(&report_path, &crate::report::render_html(&data))?;
    let elapsed = started.elapsed();
    let _ = writeln!(out, "\nReport written to {}", report_path.display());
    let _ = writeln!(
        out,
        "The secrets lived only in the emulated vault, gone with the demo; {} keeps the policy, the journal, the \
         mailbox and the report, and no secret.",
        dir.display()
    );
    let _ = writeln!(out, "Done in {:.1} s. No token value was printed.", elapsed.as_secs_f64());

    let summary = json!({
        "ok": true,
        "elapsed_ms": elapsed.as_millis() as u64,
        "dir": dir.display().to_string(),
        "virtual_start": vnow.date().to_string(),
        "secret_store": { "kind": "azure-key-vault", "emulated": true, "vault": vault::NAME, "url": kv_url },
        "inventory_before": before,
        "plan": plan_json,
        "invocations": story.invocations,
        "rotations": rotations,
        "status": status,
        "inventory_after": after,
        "alerts": alerts,
        "report": report_path.display().to_string(),
        "consumers": {
            "token": world::CONSUMED,
            "webhook": received,
            "uses": story.uses,
            "held_back": story.held_back,
            "revoked_after": story.revoked_after,
        },
    });

    // Nothing secret may appear in what is shown: every value the emulator minted (PATs, access and
    // refresh tokens, client secrets) and every value of every version the vault holds.
    let mut minted: Vec<String> = emu.context().secrets.list().into_iter().map(|(_, v)| v).collect();
    minted.extend(vault::values(emu));
    minted.push(client_secret.expose_secret().to_owned());
    for c in [&creds.github_token, &creds.placeholder, &creds.hook_key, &hook_url] {
        minted.push(c.expose_secret().to_owned());
    }
    minted.sort();
    minted.dedup();
    let json_text = summary.to_string();
    let report_text = std::fs::read_to_string(&report_path).unwrap_or_default();
    let text = std::mem::take(&mut story.out);
    // Every payload a consumer got from patrol that is not the value itself: the webhook notifications as
    // received (headers and body).
    let payloads: String = received.iter().map(|r| r.raw.as_str()).collect();
    for v in minted.iter().filter(|v| v.len() >= 16) {
        if text.contains(v.as_str())
            || json_text.contains(v.as_str())
            || report_text.contains(v.as_str())
            || payloads.contains(v.as_str())
        {
            return Err(CliError::failed(
                "demo: a secret value reached the output; refusing to print it (this is a bug)",
            ));
        }
    }
    let minted = minted.into_iter().map(SecretString::from).collect();
    let payloads = received.into_iter().map(|r| r.raw).collect();
    Ok(DemoOutcome { text, json: summary, report: report_path, minted, payloads })
}

/// What a day of the demo acts on: the emulator, patrol's stores as the CLI opens them, the virtual clock,
/// and the running handler (its base URL) behind the Event Grid tap.
#[derive(Clone, Copy)]
struct Day<'a> {
    emu: &'a Emulator,
    local: &'a Local,
    clock: &'a Clock,
    http: &'a reqwest::Client,
    base: &'a str,
    tap: &'a EventTap,
    hook: &'a hook::HookReceiver,
    creds: &'a Creds,
}

/// Day 0: sign-in, the inventory before, onboarding into Key Vault and the events it raises, a forced
/// rotation. Returns the inventory before.
async fn day_zero(day: Day<'_>, story: &mut Story, pats: &[MintedPat]) -> Result<InventoryView, CliError> {
    let Day { emu, local, clock, http, base, tap, hook, creds } = day;
    // 3. The owner signs in with a device code; the emulator plays the person approving it. The refresh
    //    token goes into the vault (its event is ignored: not a managed secret).
    let owner = OwnerId::parse(world::OWNER).map_err(step)?;
    let entra = local.entra()?;
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let control = emu.endpoints().control.clone();
    let approver = {
        let http = http.clone();
        tokio::spawn(async move {
            let Ok(code) = code_rx.await else { return };
            let _ = http
                .post(format!("{control}/_control/devicecodes/approve"))
                .json(&json!({ "userCode": code, "upn": world::OWNER }))
                .send()
                .await;
        })
    };
    let mut code_tx = Some(code_tx);
    let options = LoginOptions { scopes: None, poll_interval: Some(Duration::from_millis(50)) };
    let signed_in = login(&entra, local.own.as_ref(), &owner, clock, &options, |p| {
        if let Some(tx) = code_tx.take() {
            let _ = tx.send(p.user_code.clone());
        }
    })
    .await
    .map_err(|e| CliError::failed(format!("demo: owner sign-in failed: {e}")))?;
    let _ = approver.await;
    let _ = writeln!(
        story.out,
        "patrol login: {} signed in with a device code; the refresh token went straight into Key Vault secret {} \
         (never shown).",
        signed_in.owner,
        owner.refresh_token_secret()
    );
    story.events(emu, tap, local, "sign-in").await?;

    // 4. The inventory before patrol manages anything.
    let before = inventory(local).await?;
    let _ = writeln!(story.out, "\n== Inventory before ({} rows; no PAT in the vault yet)", before.pats.len());
    inventory_text(&mut story.out, &before);
    story.events(emu, tap, local, "inventory").await?;

    // 5a. The operator gives patrol what it needs to reach the CI token's consumers: its GitHub credential,
    //     the webhook's URL and signing key — in the vault, never on disk or in a setting.
    let _ = writeln!(
        story.out,
        "\n== The operator stores patrol's credentials for {}'s consumers in Key Vault (never shown)",
        world::CONSUMED
    );
    for (name, value, what) in [
        (
            world::GITHUB_CREDENTIAL,
            &creds.github_token,
            format!("patrol's GitHub credential (Secrets: write on {})", world::REPO),
        ),
        (world::HOOK_URL, &hook.url, "the URL of the CI cache's webhook (a credential)".to_owned()),
        (world::HOOK_KEY, &creds.hook_key, "the webhook's HMAC signing key".to_owned()),
    ] {
        let n = SecretName::parse(name).map_err(step)?;
        local.own.set(&n, value, crate::store::NewVersion::default()).await.map_err(step)?;
        let _ = writeln!(story.out, "   {name:<26} {what}");
    }
    let _ = writeln!(
        story.out,
        "   patrol's own identity (service principal {}) administers service connection {} and variable group {} in {}/{}",
        vault::APP_ID,
        world::CONNECTION,
        world::GROUP,
        world::ORG,
        world::PROJECT
    );
    story.events(emu, tap, local, "operator (consumer credentials)").await?;

    // 5b. Onboarding: the operator adopts each existing PAT (`patrol adopt SECRET --pat ID --value-stdin`):
    //    patrol finds it among the owner's PATs, tests the value, journals the adoption and writes the vault
    //    version tagged as adopted. Key Vault raises SecretNewVersionCreated for each, and SecretNearExpiry at
    //    once for those within 30 days of `exp`; Event Grid delivers them to the handler, which finds the PATs
    //    known (no second PAT, no "changed outside patrol" alarm) and rotates what is due.
    let _ = writeln!(story.out, "\n== Onboarding: the operator adopts the four existing PATs (patrol adopt)");
    let connector = local.connector()?;
    for p in world::PATS {
        let (Some(secret), Some(minted)) = (p.secret, pats.iter().find(|m| m.display_name == p.display_name)) else {
            continue;
        };
        let name = SecretName::parse(secret).map_err(step)?;
        let token = local.policy.token(&name).ok_or_else(|| step(format!("{secret} is not in the demo policy")))?;
        let cx = crate::rotation::adopt::AdoptContext {
            token,
            connector: connector.as_ref(),
            store: local.store.as_ref(),
            state: local.state.as_ref(),
            leases: local.leases.as_ref(),
            now: clock.now(),
        };
        let id = crate::domain::AuthorizationId::parse(&minted.authorization_id.to_string()).map_err(step)?;
        let pick = crate::rotation::adopt::Pick::Id(id);
        let adopted = crate::rotation::adopt::adopt(&cx, &pick, Some(SecretString::from(minted.token.clone())))
            .await
            .map_err(step)?;
        let _ = writeln!(
            story.out,
            "   patrol adopt {secret} --pat {} --value-stdin   → adopted {:?} (valid to {}), vault version {}",
            adopted.authorization_id,
            adopted.display_name,
            adopted.valid_to.date(),
            adopted.vault_version
        );
    }
    story.events(emu, tap, local, "EventGridSecretChanged (onboarding)").await?;
    deliveries(day, story).await?;

    // 6a. An operator forces one rotation: POST /api/rotate/release-bot-pat?force=true.
    let _ = writeln!(story.out, "\n== An operator forces a rotation through the Functions host");
    let reply =
        host::invoke(http, base, "RotateHttp", &host::http(emu.clock().now(), "POST", Some("release-bot-pat"), true))
            .await
            .map_err(step)?;
    story.record("RotateHttp", "POST /api/rotate/release-bot-pat?force", &reply);
    story.events(emu, tap, local, "RotateHttp (forced)").await?;
    Ok(before)
}

/// `GET /api/rotate` through the host: the plan, printed; returns the plan's JSON.
async fn show_plan(day: Day<'_>, story: &mut Story, title: &str) -> Result<Value, CliError> {
    let Day { clock, http, base, .. } = day;
    let reply =
        host::invoke(http, base, "RotateHttp", &host::http(clock.now(), "GET", None, false)).await.map_err(step)?;
    let planned = story.record("RotateHttp", "GET /api/rotate (plan)", &reply);
    let plan_json = planned["detail"]["plan"].clone();
    if let Ok(plan) = serde_json::from_value::<PlanView>(plan_json.clone()) {
        let _ = writeln!(story.out, "\n== {title}");
        for e in &plan.entries {
            let actions: Vec<String> = e.actions.iter().map(action_label).collect();
            let _ = writeln!(
                story.out,
                "  {:<18} {}",
                e.secret,
                if actions.is_empty() { "nothing to do".into() } else { actions.join("; ") }
            );
        }
        let _ = writeln!(
            story.out,
            "  + {} PAT(s) patrol does not manage (reported, never touched)\n",
            plan.unmanaged.len()
        );
    }
    Ok(plan_json)
}

/// The consumed token's journal and its consumers' view (the one `patrol consumers` shows).
async fn consumer_view(local: &Local) -> Result<(crate::rotation::journal::Journal, Vec<ConsumerView>), CliError> {
    let name = SecretName::parse(world::CONSUMED).map_err(step)?;
    let token = local.policy.token(&name).ok_or_else(|| step("the demo policy lost its CI token"))?;
    let j = crate::rotation::journal::load(local.state.as_ref(), &name).await.map_err(step)?.journal;
    let current = j.current.as_ref().map(|c| c.authorization_id);
    let view = token_view(token, &j, current, local.clock.now());
    Ok((j, view))
}

fn consumer_lines(out: &mut String, view: &[ConsumerView]) {
    for c in view {
        let _ = writeln!(out, "  {:<58} {:<10} {}", c.consumer, c.state, c.detail);
    }
}

/// Day 0, after the CI token's rotation: each consumer's delivery (the webhook receiver's verified
/// notification among them), then the consumers using the new PAT — a pipeline run with the service
/// connection and a GitHub Actions workflow reading its secret, both through the emulator's control API.
async fn deliveries(day: Day<'_>, story: &mut Story) -> Result<(), CliError> {
    let Day { emu, local, http, hook, base, clock, creds, .. } = day;
    let (j, view) = consumer_view(local).await?;
    let Some(current) = j.current.as_ref().map(|c| c.authorization_id) else {
        return Err(step(format!("{} was not rotated at onboarding", world::CONSUMED)));
    };
    let _ = writeln!(
        story.out,
        "\n== {}'s consumers: the new PAT {current} delivered to each (every write journaled first)",
        world::CONSUMED
    );
    consumer_lines(&mut story.out, &view);
    let seen = hook.seen();
    for (i, r) in seen.iter().enumerate() {
        // A consumer reloads (and acknowledges) the latest version it was told of; an older notification
        // is superseded (patrol would refuse its acknowledgement: not the current version).
        let latest = !seen[i + 1..].iter().any(|later| later.verified && later.secret == r.secret);
        let _ = writeln!(
            story.out,
            "  webhook receiver: {} — {} has a new version {} (notice {}; no value in it); it reloads from the vault",
            if r.verified { "HMAC signature and timestamp verified" } else { "signature REFUSED" },
            r.secret.as_deref().unwrap_or("?"),
            r.version.as_deref().map(|v| &v[..v.len().min(12)]).unwrap_or("?"),
            r.id.as_deref().map(|v| &v[..v.len().min(12)]).unwrap_or("?"),
        );
        if let (true, Some(secret), Some(version), Some(consumer)) =
            (r.ack_requested && latest, r.secret.as_deref(), r.version.as_deref(), r.consumer.as_deref())
        {
            // The consumer reloaded the new version: its signed acknowledgement to RotateHttp (through the
            // Functions host, as in Azure) is its evidence of use.
            let body = json!({ "ack": { "secret": secret, "version": version, "consumer": consumer } }).to_string();
            let ts = clock.now().unix_timestamp();
            let signature =
                crate::consumers::webhook::sign(creds.hook_key.expose_secret().as_bytes(), ts, body.as_bytes());
            let payload = host::http_ack(clock.now(), secret, &body, ts, &signature);
            let reply = host::invoke(http, base, "RotateHttp", &payload).await.map_err(step)?;
            story.record("RotateHttp", "webhook receiver's signed acknowledgement", &reply);
        }
    }

    let _ = writeln!(story.out, "\n== The consumers use the new PAT (simulated through the emulator's control API)");
    let control = &emu.endpoints().control;
    let uses = [
        (
            format!("pipeline run of ci-build with service connection {}", world::CONNECTION),
            format!("{control}/_control/consumers/service-endpoints/{}/runs", world::CONNECTION_ID),
            json!({ "project": world::PROJECT, "definition": "ci-build" }),
        ),
        (
            format!("GitHub Actions workflow in {} reading secret {}", world::REPO, world::VARIABLE),
            format!("{control}/_control/consumers/github/workflow-runs"),
            json!({ "repository": world::REPO, "secret": world::VARIABLE, "devopsOrganization": world::ORG }),
        ),
    ];
    for (what, url, body) in uses {
        let r: Value = http.post(url).json(&body).send().await.map_err(step)?.json().await.map_err(step)?;
        let used = r["authorizationId"].as_str().unwrap_or("");
        let is_new = used == current.to_string();
        let _ = writeln!(
            story.out,
            "  {what}: {} — authenticated as PAT {}{}",
            r["result"].as_str().unwrap_or("?"),
            if used.is_empty() { "(none)" } else { used },
            if is_new { " (the new one)" } else { "" }
        );
        story.uses.push(json!({ "what": what, "result": r["result"], "authorization_id": used, "new_pat": is_new }));
    }
    Ok(())
}

/// Day 2: the grace of the PATs replaced on day 0 is over. The plan and the nightly timer revoke the
/// release bot's previous PAT, but keep the CI token's: the pipeline run is recorded as its connection's
/// evidence, yet the `reference` consumer may lag 72 h and holds the revocation back.
async fn day_two(day: Day<'_>, story: &mut Story) -> Result<(), CliError> {
    let Day { emu, local, clock, http, base, tap, .. } = day;
    let _ = writeln!(
        story.out,
        "\n== Two days later ({}): the grace of the PATs replaced on day 0 is over (the instance is still warm)",
        clock.now().date()
    );
    story.events(emu, tap, local, "EventGridSecretChanged (day 2)").await?;
    let plan = show_plan(day, story, "Plan (day 2)").await?;
    for e in plan["entries"].as_array().into_iter().flatten().filter(|e| e["secret"] == world::CONSUMED) {
        for a in e["actions"].as_array().into_iter().flatten().filter(|a| a["action"] == "wait-previous") {
            story.held_back.push(a["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    let last = clock.now() - time::Duration::days(1);
    let reply = host::invoke(http, base, "RotateTimer", &host::timer(clock.now(), Some(last))).await.map_err(step)?;
    story.record("RotateTimer", "nightly run", &reply);
    story.events(emu, tap, local, "RotateTimer (day 2)").await?;
    let (j, view) = consumer_view(local).await?;
    let _ = writeln!(
        story.out,
        "\n== {}'s consumers on day 2: its previous PAT is kept ({} draining)",
        world::CONSUMED,
        j.drains.len()
    );
    consumer_lines(&mut story.out, &view);
    Ok(())
}

/// Day 4: the vault's expiry evaluation and its events, the plan, the nightly timer, `patrol status`.
/// Returns the plan and the status.
async fn day_four(day: Day<'_>, story: &mut Story) -> Result<(Value, StatusView), CliError> {
    let Day { emu, local, clock, http, base, tap, .. } = day;
    let _ = writeln!(
        story.out,
        "\n== Four days in ({}): the Function App scaled to zero meanwhile; the host starts a new instance",
        clock.now().date()
    );
    emu.keyvault().evaluate_expiry();
    story.events(emu, tap, local, "EventGridSecretChanged (day 4)").await?;

    // 6b. GET /api/rotate: the plan.
    let plan_json = show_plan(day, story, "Plan (what the nightly run will do)").await?;

    // 6c. The nightly timer: what is due is rotated, previous PATs whose grace ended are revoked.
    let last = clock.now() - time::Duration::days(1);
    let reply = host::invoke(http, base, "RotateTimer", &host::timer(clock.now(), Some(last))).await.map_err(step)?;
    story.record("RotateTimer", "nightly run", &reply);
    story.events(emu, tap, local, "RotateTimer (nightly)").await?;
    let (j, view) = consumer_view(local).await?;
    if j.drains.is_empty() && view.iter().all(|c| c.moved) {
        let why = format!(
            "every consumer had moved; the last was the reference consumer, whose {} h lag ended {}",
            world::REFERENCE_LAG_HOURS,
            view.iter()
                .find_map(|c| c.lag_until)
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default()
        );
        let _ = writeln!(story.out, "\n== {}'s previous PAT revoked: {why}", world::CONSUMED);
        story.revoked_after = Some(why);
    }

    // 6d. `patrol status`, while the vault (and the refresh token it reads there) still exists.
    let status = super::status::gather(local).await;
    let (owners, tokens) = status.tables();
    let _ = writeln!(story.out, "\n== patrol status");
    story.out.push_str(&owners.to_text());
    story.out.push_str(&tokens.to_text());
    if let Some(c) = status.consumer_table() {
        story.out.push_str(&c.to_text());
    }
    Ok((plan_json, status))
}

/// Where alerts went, and their subjects (from the mailbox file when that is the channel).
fn alerts(settings: &Settings) -> Value {
    match &settings.notify.mailbox_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // Header lines may be folded (continuation lines start with white space).
            let mut subjects: Vec<String> = Vec::new();
            let mut in_subject = false;
            for l in text.lines() {
                if let Some(s) = l.strip_prefix("Subject: ") {
                    subjects.push(s.trim().to_owned());
                    in_subject = true;
                } else if in_subject && (l.starts_with(' ') || l.starts_with('\t')) {
                    if let Some(last) = subjects.last_mut() {
                        last.push(' ');
                        last.push_str(l.trim());
                    }
                } else {
                    in_subject = false;
                }
            }
            json!({ "channel": format!("mailbox file {}", path.display()), "count": subjects.len(), "subjects": subjects })
        }
        None => json!({ "channel": "SMTP (PATROL_SMTP_HOST)", "count": Value::Null, "subjects": [] }),
    }
}

/// The parts of the engine's plan the narrative shows.
#[derive(Debug, serde::Deserialize)]
struct PlanView {
    entries: Vec<PlanEntry>,
    #[serde(default)]
    unmanaged: Vec<Value>,
}

#[derive(Debug, serde::Deserialize)]
struct PlanEntry {
    secret: String,
    #[serde(default)]
    actions: Vec<Value>,
}

fn action_label(a: &Value) -> String {
    let kind = a["action"].as_str().unwrap_or("?");
    match kind {
        "rotate" => format!("rotate ({})", a["reason"].as_str().unwrap_or("?")),
        "adopt" => "adopt the PAT the secret holds".into(),
        "revoke-previous" => "revoke the previous PAT".into(),
        "wait-previous" => format!("keep the previous PAT for now: {}", a["reason"].as_str().unwrap_or("?")),
        "blocked" => format!("blocked: {}", a["why"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}
