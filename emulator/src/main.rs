//! The `patrol-emulator` binary: parses flags, starts the emulator, prints exactly one JSON line naming
//! the endpoints on stdout when ready, logs to stderr, and saves state on Ctrl-C / SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use patrol_emulator::context::Lifetimes;
use patrol_emulator::faults::FaultSettings;
use patrol_emulator::ratelimit::RateLimitSettings;
use patrol_emulator::seed::Seed;
use patrol_emulator::{Emulator, EmulatorConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A local emulator of Azure DevOps (PAT Lifecycle, Token Admin, audit log) and Microsoft Entra sign-in.
#[derive(Debug, Parser)]
#[command(name = "patrol-emulator", version)]
struct Args {
    /// Address of the Azure DevOps listener (loopback only). Port 0: every service gets an ephemeral
    /// port; otherwise audit, Entra and control take the next three ports.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed file (JSON): tenant, policies, organizations, users, applications, PATs.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Persist state in this file (created if missing; the seed applies only to a new state).
    #[arg(long)]
    state: Option<PathBuf>,
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
