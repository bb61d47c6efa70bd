//! `patrol serve`: read the settings, start telemetry, bind `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` and
//! serve the custom handler until SIGTERM/SIGINT.
//!
//! Start-up stays lazy: no HTTP client is built, no policy read and no network touched before the first
//! invocation that needs it, so the host's readiness probe is answered within milliseconds.

use super::exit;
use crate::clock::Clock;
use crate::config::Settings;
use crate::handler::{Handler, NotConfigured, server};
use std::process::ExitCode;
use std::sync::Arc;

/// The port variables the Functions host sets (the second is the legacy name older hosts used).
pub const PORT_VARS: [&str; 2] = ["FUNCTIONS_CUSTOMHANDLER_PORT", "FUNCTIONS_HTTPWORKER_PORT"];

#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 [default: $FUNCTIONS_CUSTOMHANDLER_PORT, else $FUNCTIONS_HTTPWORKER_PORT].
    #[arg(long)]
    pub port: Option<u16>,
}

/// The raw port variable the host set, if any: `(name, value)`.
pub fn port_from_env() -> Option<(&'static str, String)> {
    PORT_VARS.into_iter().find_map(|name| {
        let v = std::env::var(name).ok()?;
        (!v.trim().is_empty()).then(|| (name, v.trim().to_owned()))
    })
}

pub fn run(args: ServeArgs) -> ExitCode {
    // Fail fast, fail closed: settings that cannot work stop the handler here (exit 2, every problem named)
    // instead of failing each invocation later.
    let src = crate::config::Source::from_env();
    let settings = match Settings::from_source_all(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("patrol: invalid configuration: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let env_errors = settings.environment_errors(&src);
    if !env_errors.is_empty() {
        eprintln!("patrol: invalid configuration: {}", crate::config::ConfigErrors(env_errors));
        return ExitCode::from(exit::USAGE);
    }
    if let Err(e) = crate::telemetry::init(&settings.log_filter, settings.log_format) {
        eprintln!("patrol: invalid configuration: {e}");
        return ExitCode::from(exit::USAGE);
    }
    for w in settings.trust_warnings() {
        tracing::warn!("{w}");
    }
    let port = match args.port {
        Some(p) => p,
        None => match port_from_env() {
            None => {
                eprintln!("patrol: serve needs a port: pass --port or set FUNCTIONS_CUSTOMHANDLER_PORT");
                return ExitCode::from(exit::USAGE);
            }
            Some((name, raw)) => match raw.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("patrol: invalid configuration: setting {name}: {raw:?} is not a TCP port");
                    return ExitCode::from(exit::USAGE);
                }
            },
        },
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("patrol: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    runtime.block_on(async move {
        let listener = match server::bind(port).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on 127.0.0.1:{port}: {e}");
                eprintln!("patrol: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::from(exit::FAILED);
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "patrol custom handler listening");
        let clock = Clock::system();
        // Without a policy file there is nothing to rotate: the handler says so (NotConfigured) instead of
        // failing every invocation.
        let functions: Arc<dyn crate::handler::Functions> = if settings.policy_file.is_file() {
            Arc::new(crate::app::functions::RotationFunctions::new(settings.clone(), clock.clone()))
        } else {
            tracing::warn!(policy = %settings.policy_file.display(), "no policy file: rotation is not configured");
            Arc::new(NotConfigured)
        };
        let functions = Arc::new(crate::app::functions::ForeignVaultGate::new(settings.clone(), functions));
        // Metrics (PATROL_OTLP_ENDPOINT, Application Insights): nothing is built unless configured.
        let metrics = crate::app::metrics(&settings);
        let functions = crate::handler::metered::Metered::wrap(functions, metrics.clone());
        let handler = Handler::new(functions, clock);
        let app = server::router(handler, settings.max_body_bytes);
        let served = server::serve(listener, app, server::shutdown_signal()).await;
        // Graceful shutdown (SIGTERM/SIGINT, in-flight invocations answered): the points not yet exported go
        // out now, waiting at most the flush bound (PATROL_METRICS_FLUSH_TIMEOUT_MS).
        if let Some(m) = &metrics {
            m.flush().await;
        }
        match served {
            Ok(()) => {
                tracing::info!("patrol custom handler stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("the server failed: {e}");
                ExitCode::from(exit::FAILED)
            }
        }
    })
}
