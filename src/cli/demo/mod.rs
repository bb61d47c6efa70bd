//! `patrol demo`: the whole job on a fresh machine, in seconds, with no Azure and no settings.
//!
//! It starts patrol-emulator in-process (Azure DevOps PAT API, Entra sign-in, Event Grid delivery, on the
//! virtual clock), seeds an organization with PATs in every interesting state, writes a demo `patrol.toml`
//! and state into a directory, signs the owner in with a real device-code flow (the emulator approves
//! the code), starts the real custom handler on 127.0.0.1:0 with the real rotation engine, and drives
//! `RotateHttp` (plan, forced rotation), `RotateTimer` and `EventGridSecretChanged` exactly as the
//! Functions host would. Then it shows the inventory before and after, the plan, the rotations, the
//! alerts (local SMTP when `PATROL_SMTP_HOST` is set, else a mailbox file) and writes the report.
//!
//! Everything printed is collected first and checked against every secret value the emulator minted
//! (PATs, access and refresh tokens) before it is shown; a match aborts the demo.
//!
//! The secrets of the demo live in the embedded encrypted file store under `--dir`, so `patrol status`
//! and `patrol report` can read them after the demo (and its in-process emulator) has exited; the
//! emulated vault keeps nothing once the process ends. `SecretNearExpiry` is raised through the
//! emulator's Event Grid delivery (the Functions-host envelope) for the file store's current version.

mod host;
mod world;

use super::CliError;
use super::inventory::{InventoryView, expired_pats, rows};
use super::runtime::Local;
use crate::auth::device_code::{LoginOptions, login};
use crate::clock::Clock;
use crate::config::{Settings, Source};
use crate::domain::{OwnerId, SecretName};
use crate::handler::{Handler, server};
use crate::rotation::functions::RotationFunctions;
use crate::rotation::inventory::gather;
use crate::store::{NewVersion, tags};
use patrol_emulator::eventgrid::{DeliveryConfig, EventGrid, KeyVaultEvent, SECRET_NEAR_EXPIRY};
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Examples:
  patrol demo                       # narrative on stdout; files in a temporary directory
  patrol demo --dir ./patrol-demo   # keep the policy, state, mailbox and report there
  patrol demo --json | jq .rotations

Needs nothing: no Azure, no settings, no network beyond 127.0.0.1. With PATROL_SMTP_HOST (and the other
PATROL_SMTP_* settings) set, alerts go to that SMTP server; otherwise to <dir>/mailbox.mbox.
JSON: {\"ok\", \"elapsed_ms\", \"dir\", \"virtual_start\", \"inventory_before\", \"plan\", \"invocations\",
\"rotations\", \"inventory_after\", \"alerts\", \"report\"}.";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// Print a machine-readable summary (JSON) instead of the narrative.
    #[arg(long)]
    pub json: bool,
    /// Keep the demo's files (policy, state, mailbox, report) in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
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
    /// Every secret value the emulator minted during the run (PATs, access and refresh tokens), for
    /// callers that scan their own captures; never printed.
    pub minted: Vec<SecretString>,
}

pub async fn run(args: &DemoArgs) -> Result<(), CliError> {
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| CliError::failed(format!("cannot create {}: {e}", d.display())))?;
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
    let outcome = run_demo(&dir, &Source::from_env()).await?;
    if args.json {
        let s = serde_json::to_string_pretty(&outcome.json).map_err(|e| CliError::failed(e.to_string()))?;
        super::output::write_stdout(&format!("{s}\n"))
    } else {
        super::output::write_stdout(&outcome.text)
    }
}

fn step(e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("demo: {e}"))
}

/// Settings of the demo: the emulator's endpoints, files under `dir`; SMTP passed through from `env`.
fn settings(dir: &Path, emu: &Emulator, env: &Source) -> Result<Settings, CliError> {
    let e = emu.endpoints();
    let p = |f: &str| dir.join(f).display().to_string();
    let mut pairs: Vec<(String, String)> = vec![
        ("PATROL_POLICY_FILE".into(), p("patrol.toml")),
        ("PATROL_STATE_DIR".into(), p("state")),
        ("PATROL_STORE_KEY_FILE".into(), p("store.key")),
        ("PATROL_DEVOPS_URL".into(), e.devops.clone()),
        ("PATROL_AUDIT_URL".into(), e.audit.clone()),
        ("PATROL_ENTRA_AUTHORITY".into(), e.entra.clone()),
        ("PATROL_TENANT_ID".into(), e.tenant.clone()),
        ("PATROL_CLIENT_ID".into(), world::CLIENT_ID.into()),
        ("PATROL_LEASE".into(), "local".into()),
        ("PATROL_LOG_FORMAT".into(), "text".into()),
        ("PATROL_MAILBOX_FILE".into(), p("mailbox.mbox")),
    ];
    if env.get("PATROL_SMTP_HOST").is_some() {
        for name in [
            "PATROL_SMTP_HOST",
            "PATROL_SMTP_PORT",
            "PATROL_SMTP_TLS",
            "PATROL_SMTP_USERNAME",
            "PATROL_SMTP_PASSWORD",
            "PATROL_SMTP_FROM",
            "PATROL_CA_CERT",
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

/// One invocation's line for the narrative and the JSON.
fn record(invocations: &mut Vec<Value>, out: &mut String, function: &str, what: &str, reply: &Value) -> Value {
    let o = host::outcome(reply);
    let status = o["status"].as_str().unwrap_or("?").to_owned();
    let summary = o["summary"].as_str().or_else(|| o["error"].as_str()).unwrap_or("").to_owned();
    let _ = writeln!(out, "  {function:<24} {what:<34} -> {status}: {summary}");
    invocations.push(json!({ "function": function, "request": what, "status": status, "summary": summary }));
    o
}

/// Runs the whole demo in `dir`. `env` supplies optional SMTP settings.
pub async fn run_demo(dir: &Path, env: &Source) -> Result<DemoOutcome, CliError> {
    let started = Instant::now();
    let mut out = String::new();

    // 1. The emulated world, on its virtual clock.
    let emu = Emulator::start(EmulatorConfig::default()).await.map_err(step)?;
    let vnow = emu.clock().now();
    let applied = {
        let ctx = emu.context();
        let mut state = ctx.state();
        patrol_emulator::seed::apply(ctx, &mut state, &world::seed(vnow)).map_err(step)?
    };
    let clock = Clock::starting_at(vnow);
    std::fs::write(dir.join("patrol.toml"), world::policy()).map_err(step)?;
    let settings = settings(dir, &emu, env)?;
    let local = Local::open(settings.clone(), clock.clone())?;
    let _ = writeln!(out, "patrol demo — everything runs on this machine against patrol-emulator (no Azure).");
    let _ = writeln!(out, "Virtual time: {}. Files: {}", vnow.date(), dir.display());
    let _ = writeln!(
        out,
        "Seeded organization {} with {} PATs of {}; the policy manages {} of them.\n",
        world::ORG,
        world::PATS.len(),
        world::OWNER,
        local.policy.tokens.len()
    );

    // 2. Onboarding: the existing PATs go into the secret store with their authorization id (adopted later).
    for p in world::PATS {
        let (Some(secret), Some(minted)) = (p.secret, applied.pats.iter().find(|m| m.display_name == p.display_name))
        else {
            continue;
        };
        let name = SecretName::parse(secret).map_err(step)?;
        let tags = [
            (tags::MANAGED_BY, tags::MANAGED_BY_VALUE.to_owned()),
            (tags::AUTHORIZATION_ID, minted.authorization_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let version = NewVersion {
            content_type: Some(crate::store::PAT_CONTENT_TYPE.into()),
            expires: Some(vnow + time::Duration::days(p.days) + time::Duration::hours(12)),
            not_before: None,
            tags,
        };
        local.store.set(&name, &SecretString::from(minted.token.clone()), version).await.map_err(step)?;
    }
    drop(applied);

    // 3. The owner signs in with a device code; the emulator plays the person approving it.
    let owner = OwnerId::parse(world::OWNER).map_err(step)?;
    let entra = local.entra()?;
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let control = emu.endpoints().control.clone();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(step)?;
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
    let signed_in = login(&entra, local.store.as_ref(), &owner, &clock, &options, |p| {
        if let Some(tx) = code_tx.take() {
            let _ = tx.send(p.user_code.clone());
        }
    })
    .await
    .map_err(|e| CliError::failed(format!("demo: owner sign-in failed: {e}")))?;
    let _ = approver.await;
    let _ = writeln!(
        out,
        "patrol login: {} signed in with a device code; refresh token stored in secret {} (never shown).\n",
        signed_in.owner,
        owner.refresh_token_secret()
    );

    // 4. Inventory before.
    let before = inventory(&local).await?;
    let _ = writeln!(out, "== Inventory before ({} PATs)", before.pats.len());
    inventory_text(&mut out, &before);

    // 5. The real handler with the real engine, on 127.0.0.1:0.
    let handler = Handler::new(Arc::new(RotationFunctions::new(settings.clone(), clock.clone())), clock.clone());
    let listener = server::bind(0).await.map_err(step)?;
    let base = format!("http://{}", listener.local_addr().map_err(step)?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(handler, settings.max_body_bytes);
    let server_task = tokio::spawn(server::serve(listener, app, async {
        let _ = stop_rx.await;
    }));
    let mut invocations = Vec::new();
    let _ = writeln!(out, "\n== The Functions host calls the handler at {base}");

    // 5a. GET /api/rotate: the plan.
    let reply = host::invoke(&http, &base, "RotateHttp", &host::http(emu.clock().now(), "GET", None, false))
        .await
        .map_err(step)?;
    let planned = record(&mut invocations, &mut out, "RotateHttp", "GET /api/rotate (plan)", &reply);
    let plan_json = planned["detail"]["plan"].clone();
    if let Ok(plan) = serde_json::from_value::<PlanView>(plan_json.clone()) {
        let _ = writeln!(out, "\n== Plan");
        for e in &plan.entries {
            let actions: Vec<String> = e.actions.iter().map(action_label).collect();
            let _ = writeln!(
                out,
                "  {:<18} {}",
                e.secret,
                if actions.is_empty() { "nothing to do".into() } else { actions.join("; ") }
            );
        }
        let _ = writeln!(out, "  + {} PAT(s) patrol does not manage (reported, never touched)\n", plan.unmanaged.len());
    }

    // 5b. The nightly timer.
    let reply = host::invoke(&http, &base, "RotateTimer", &host::timer(emu.clock().now(), None)).await.map_err(step)?;
    record(&mut invocations, &mut out, "RotateTimer", "nightly run", &reply);

    // 5c. An operator forces one rotation: POST /api/rotate/release-bot-pat?force=true.
    let reply =
        host::invoke(&http, &base, "RotateHttp", &host::http(emu.clock().now(), "POST", Some("release-bot-pat"), true))
            .await
            .map_err(step)?;
    record(&mut invocations, &mut out, "RotateHttp", "POST /api/rotate/release-bot-pat?force", &reply);

    // 5d. Four days pass; Key Vault raises SecretNearExpiry and Event Grid delivers it to the handler.
    emu.clock().advance(time::Duration::days(4));
    clock.set(emu.clock().now());
    let (grid, sink) = EventGrid::start(
        emu.clock().clone(),
        DeliveryConfig {
            target: Some(base.clone()),
            topic: "/subscriptions/demo/resourceGroups/demo/providers/Microsoft.KeyVault/vaults/patrol-demo".into(),
            ..Default::default()
        },
    );
    let secret = SecretName::parse("package-feed-pat").map_err(step)?;
    let current = local.store.get(&secret, None).await.map_err(step)?.map(|s| s.properties);
    let exp = current.as_ref().and_then(|c| c.expires).map(|t| t.unix_timestamp());
    sink.raise(vec![KeyVaultEvent {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: SECRET_NEAR_EXPIRY.into(),
        vault_name: "patrol-demo".into(),
        vault_url: "https://patrol-demo.vault.azure.net".into(),
        object_name: secret.to_string(),
        version: current.map(|c| c.version).unwrap_or_default(),
        nbf: None,
        exp,
        time: emu.clock().now(),
    }]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while grid.deliveries().iter().all(|d| d.status.is_none_or(|s| s >= 500)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = grid.deliveries();
    let status = delivered.last().and_then(|d| d.status);
    let _ = writeln!(
        out,
        "  {:<24} {:<34} -> delivered by Event Grid (HTTP {})",
        "EventGridSecretChanged",
        "SecretNearExpiry package-feed-pat (+4 days)",
        status.map_or_else(|| "none".into(), |s| s.to_string())
    );
    invocations.push(json!({ "function": "EventGridSecretChanged", "request": "SecretNearExpiry package-feed-pat", "status": status, "attempts": delivered.len() }));

    // 5e. The next night: previous PATs whose grace ended are revoked.
    let reply =
        host::invoke(&http, &base, "RotateTimer", &host::timer(emu.clock().now(), Some(vnow))).await.map_err(step)?;
    record(&mut invocations, &mut out, "RotateTimer", "next run (+4 days)", &reply);

    let _ = stop_tx.send(());
    let _ = server_task.await;

    // 6. What happened.
    let journals = super::report::journals(&local).await;
    let mut rotations = Vec::new();
    let _ = writeln!(out, "\n== Rotations");
    for j in &journals {
        if let Some(c) = &j.last {
            let _ = writeln!(
                out,
                "  {:<18} rotated ({}) -> new PAT {} valid to {}; {} previous PAT(s) draining",
                j.secret.to_string(),
                c.reason.as_str(),
                c.authorization_id,
                c.valid_to.date(),
                j.drains.len()
            );
            rotations.push(json!({ "secret": j.secret, "reason": c.reason.as_str(), "authorization_id": c.authorization_id, "valid_to": c.valid_to.date().to_string(), "draining": j.drains.len() }));
        }
        if let Some(f) = &j.last_failure {
            let _ = writeln!(out, "  {:<18} FAILED at {}: {}", j.secret.to_string(), f.step, f.error);
        }
    }
    let after = inventory(&local).await?;
    let _ = writeln!(out, "\n== Inventory after ({} PATs)", after.pats.len());
    inventory_text(&mut out, &after);

    let alerts = alerts(&settings);
    let _ = writeln!(out, "\n== Alerts ({})", alerts["channel"].as_str().unwrap_or(""));
    for s in alerts["subjects"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", s.as_str().unwrap_or(""));
    }

    let report_path = dir.join("patrol-report.html");
    let data = super::report::build(&after, &journals, &local.policy, "patrol demo report: fabrikam", clock.now());
    super::report::write(&report_path, &crate::report::render_html(&data))?;
    let elapsed = started.elapsed();
    let _ = writeln!(out, "\nReport written to {}", report_path.display());
    let _ = writeln!(out, "Done in {:.1} s. No token value was printed.", elapsed.as_secs_f64());

    let summary = json!({
        "ok": true,
        "elapsed_ms": elapsed.as_millis() as u64,
        "dir": dir.display().to_string(),
        "virtual_start": vnow.date().to_string(),
        "inventory_before": before,
        "plan": plan_json,
        "invocations": invocations,
        "rotations": rotations,
        "inventory_after": after,
        "alerts": alerts,
        "report": report_path.display().to_string(),
    });

    // Nothing the emulator minted may appear in what is shown.
    let minted: Vec<String> = emu.context().secrets.list().into_iter().map(|(_, v)| v).collect();
    let json_text = summary.to_string();
    let report_text = std::fs::read_to_string(&report_path).unwrap_or_default();
    for v in minted.iter().filter(|v| v.len() >= 16) {
        if out.contains(v.as_str()) || json_text.contains(v.as_str()) || report_text.contains(v.as_str()) {
            return Err(CliError::failed(
                "demo: a secret value reached the output; refusing to print it (this is a bug)",
            ));
        }
    }
    let _ = emu.shutdown().await;
    let minted = minted.into_iter().map(SecretString::from).collect();
    Ok(DemoOutcome { text: out, json: summary, report: report_path, minted })
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
