//! Log lines of the CLI commands: human text on stderr, so stdout stays data (tables, JSON, markdown).
//! `PATROL_LOG` overrides the level chosen with `-v`.

/// Installs the stderr subscriber (warn by default, `-v` info, `-vv` debug). A second call is a no-op.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = std::env::var("PATROL_LOG").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| default.into());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
