//! The `patrol-emulator` binary: parses flags, starts the emulator, prints exactly one JSON line naming
//! the endpoints on stdout when ready (including `keyvault` and `ca_cert`), logs to stderr, and saves state
//! on Ctrl-C / SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use patrol_emulator::context::Lifetimes;
use patrol_emulator::eventgrid::{DeliveryConfig, DeliveryMode};
use patrol_emulator::faults::FaultSettings;
use patrol_emulator::keyvault::Faults as KeyVaultFaults;
use patrol_emulator::ratelimit::RateLimitSettings;
use patrol_emulator::seed::Seed;
use patrol_emulator::server::KeyVaultConfig;
use patrol_emulator::{Emulator, EmulatorConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local emulator of Azure DevOps (PAT Lifecycle, Token Admin, audit log), Microsoft Entra sign-in,
/// Azure Key Vault secrets (HTTPS) and Event Grid delivery of the vault's events.
#[derive(Debug, Parser)]
#[command(name = "patrol-emulator", version)]
struct Args {
    /// Address of the Azure DevOps listener (loopback only). Port 0: every service gets an ephemeral
    /// port; otherwise audit, Entra, control, Key Vault and GitHub take the next five ports.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed file (JSON): tenant, policies, organizations, users, applications, PATs.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Persist state in this file (created if missing; the seed applies only to a new state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Load --state at start but never write it (every run starts from the same saved world).
    #[arg(long, requires = "state")]
    state_read_only: bool,
    /// Fixed latency added to every API request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra latency up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability (0..1) that an API request fails with --fail-status before it is processed.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Status used by --fail-rate.
    #[arg(long, default_value_t = 503)]
    fail_status: u16,
    /// Enable Azure DevOps rate limiting with this TSTU budget per identity per window.
    #[arg(long)]
    tstu_limit: Option<f64>,
    /// TSTU usage at which requests are blocked with 429 (default 1.5 x the limit).
    #[arg(long)]
    tstu_block: Option<f64>,
    /// TSTUs charged per request.
    #[arg(long, default_value_t = 1.0)]
    tstu_per_request: f64,
    /// Rate-limit window in seconds.
    #[arg(long, default_value_t = 300)]
    rate_window_secs: u64,
    /// Lifetime of Entra access tokens in seconds (at least 60).
    #[arg(long, default_value_t = 3600)]
    access_token_lifetime_secs: u64,
    /// Inactivity lifetime of refresh tokens in seconds.
    #[arg(long, default_value_t = 90 * 86_400)]
    refresh_token_lifetime_secs: u64,
    /// How many minted secrets to remember for `GET /_control/secrets` (0 = none).
    #[arg(long, default_value_t = 10_000)]
    remember_secrets: usize,
    /// Name of the emulated vault (3-24 letters, digits, hyphens). The default, `localhost`, is served as
    /// `https://localhost:<port>/`: Azure names a vault after its host's first label, so clients that derive
    /// the name from the URL (patrol does, to recognise the vault's events) match without more settings.
    #[arg(long, default_value = "localhost")]
    vault_name: String,
    /// Host a further vault of this name (repeatable): its URL is `keyvault.<name>` in the ready line.
    #[arg(long = "extra-vault")]
    extra_vaults: Vec<String>,
    /// Write the Key Vault listener's CA certificate (PEM) here (default: a private temporary directory).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Deliver the vault's Event Grid events to this loopback URL (base URL in functions-host mode).
    #[arg(long)]
    eventgrid_target: Option<String>,
    /// Delivery shape: functions-host (POST {target}/EventGridSecretChanged with the host's envelope),
    /// eventgrid (Event Grid-schema webhook arrays) or cloudevents (CloudEvents 1.0 batches).
    #[arg(long, default_value = "functions-host")]
    eventgrid_mode: DeliveryMode,
    /// Extra copies of every event (same id), as at-least-once delivery allows.
    #[arg(long, default_value_t = 0)]
    eventgrid_duplicates: u32,
    /// Deliver events raised together in reverse order.
    #[arg(long)]
    eventgrid_reorder: bool,
    /// Retry policy: event-grid (Event Grid's schedule on the virtual clock: 10 s, 30 s, 1 min, … up to 30
    /// attempts in 24 h) or fast (compressed real-time delays, for tests).
    #[arg(long, default_value = "event-grid")]
    eventgrid_retry: patrol_emulator::eventgrid::RetryPolicy,
    /// A dead-letter destination is configured: events given up on are dead-lettered (400/413 at once).
    #[arg(long)]
    eventgrid_dead_letter: bool,
    /// Event Grid batching: events raised together are sent in one request (eventgrid, cloudevents modes).
    #[arg(long)]
    eventgrid_batching: bool,
    /// Answer the first N authenticated Key Vault requests with 429 Throttled.
    #[arg(long, default_value_t = 0)]
    keyvault_throttle_next: u32,
    /// Retry-After seconds on Key Vault 429s.
    #[arg(long, default_value_t = 1)]
    keyvault_retry_after_secs: u64,
    /// Follow every non-empty Key Vault list page with an empty page that still has nextLink.
    #[arg(long)]
    keyvault_empty_pages: bool,
    /// Refuse this principal (client id or UPN) with 403 ForbiddenByRbac (repeatable).
    #[arg(long)]
    keyvault_forbid: Vec<String>,
    /// Serve the Azure-names proxy (ready line: `proxy`): an HTTPS (CONNECT) proxy on 127.0.0.1 mapping
    /// login.microsoftonline.com, dev.azure.com, vssps.dev.azure.com, auditservice.dev.azure.com,
    /// <vault>.vault.azure.net and api.github.com to the emulator, refusing every other host. Point official clients at Azure's
    /// real URLs with HTTPS_PROXY set to it and the CA trusted.
    #[arg(long)]
    proxy: bool,
    /// Virtual milliseconds a Key Vault delete or recovery takes to finish.
    #[arg(long, default_value_t = 500)]
    keyvault_async_delay_ms: i64,
}

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: redirected logs (files, CI) get no escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATROL_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let seed: Option<Seed> = match &args.seed {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading seed file {}", p.display()))?;
            Some(
                serde_json::from_str(text.trim_start_matches('\u{feff}'))
                    .with_context(|| format!("seed file {} is not a valid seed", p.display()))?,
            )
        }
        None => None,
    };
    let rate_limit = match args.tstu_limit {
        Some(limit) => RateLimitSettings {
            enabled: true,
            limit_tstu: limit,
            block_tstu: args.tstu_block.unwrap_or(limit * 1.5),
            tstu_per_request: args.tstu_per_request,
            window_secs: args.rate_window_secs,
            ..RateLimitSettings::default()
        },
        None => RateLimitSettings::default(),
    };
    let config = EmulatorConfig {
        listen: args.listen,
        seed,
        state_path: args.state,
        state_read_only: args.state_read_only,
        faults: FaultSettings {
            latency_ms: args.latency_ms,
            jitter_ms: args.jitter_ms,
            fail_rate: args.fail_rate,
            fail_status: args.fail_status,
            services: Vec::new(),
        },
        rate_limit,
        lifetimes: Lifetimes {
            access_token_secs: args.access_token_lifetime_secs,
            refresh_token_secs: args.refresh_token_lifetime_secs,
            ..Lifetimes::default()
        },
        secrets_capacity: args.remember_secrets,
        keyvault: KeyVaultConfig {
            vault_name: args.vault_name,
            extra_vaults: args.extra_vaults,
            ca_cert_path: args.ca_cert,
            faults: KeyVaultFaults {
                throttle_next: args.keyvault_throttle_next,
                retry_after_secs: args.keyvault_retry_after_secs,
                empty_pages: args.keyvault_empty_pages,
                forbidden_principals: args.keyvault_forbid.into_iter().collect(),
                async_delay_ms: args.keyvault_async_delay_ms,
            },
            delivery: DeliveryConfig {
                target: args.eventgrid_target,
                mode: args.eventgrid_mode,
                duplicates: args.eventgrid_duplicates,
                reorder: args.eventgrid_reorder,
                retry: args.eventgrid_retry,
                dead_letter: args.eventgrid_dead_letter,
                batching: args.eventgrid_batching,
                ..DeliveryConfig::default()
            },
        },
        proxy: args.proxy,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let emu = Emulator::start(config).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", emu.ready_line()).context("writing the ready line")?;
            out.flush().context("flushing stdout")?;
        }
        tracing::info!(endpoints = %emu.ready_line(), "patrol-emulator ready");
        wait_for_signal().await;
        tracing::info!("shutting down");
        emu.shutdown().await
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
