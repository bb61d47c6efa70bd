//! The operator's command line: `serve`, `plan`, `rotate`, `inventory`, `status`, `login`, `report`,
//! `demo`, `retire`, shell completions, and the exit codes every command shares.
//!
//! One file per subcommand; [`output`] renders data as a table, JSON or markdown; [`progress`] shows
//! progress bars only when stdout is a terminal; [`runtime`] builds the engine's parts from the settings.
//! The bare binary serves when the Functions host started it (`FUNCTIONS_CUSTOMHANDLER_PORT` set; the host
//! passes no arguments).

mod adopt;
pub mod audit_cmds;
pub mod check;
mod completions;
pub mod consumers;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
pub mod history;
mod inventory;
mod logging;
mod login;
mod migrate_refresh;
pub mod output;
mod plan;
mod progress;
pub mod report;
mod retire;
mod rotate;
pub mod runtime;
mod serve;
pub mod status;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use error::{CliError, sign_in_message};
pub use serve::{ServeArgs, port_from_env};

/// Exit codes. Scripts may rely on them; `docs/cli.md` documents them.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The work failed (a rotation failed, a dependency was unavailable, the report could not be written).
    pub const FAILED: u8 = 1;
    /// Bad input or configuration: a usage error, an invalid setting, an invalid `patrol.toml`.
    pub const USAGE: u8 = 2;
    /// An owner must sign in (`patrol login`) before the work can be done.
    pub const SIGN_IN: u8 = 3;
    /// The operator declined a confirmation (`revoke`, `migrate-global`); nothing was changed.
    pub const DECLINED: u8 = 4;
}

const AFTER_HELP: &str = "\
Examples:
  patrol demo                          # the whole job against a local emulator, in seconds
  patrol login --owner svc-rotation@contoso.com
  patrol adopt ci-build-pat --pat <authorization id> --value-stdin < pat.txt   # onboard an existing PAT
  patrol inventory --format json       # every PAT of every owner and organization in the policy
  patrol check                         # validate patrol.toml and the settings (offline)
  patrol plan                          # what the next run would do (changes nothing)
  patrol rotate ci-build-pat --force   # rotate one token now
  patrol report --out report.html
  patrol history ci-build-pat          # what patrol did to a token: created, rotated, revoked, why
  patrol retire old-nightly-pat --dry-run   # a managed token nobody uses: what retiring it would do
  patrol completions bash > /etc/bash_completion.d/patrol

Settings come from PATROL_* environment variables (see README). Exit codes: 0 ok, 1 work failed,
2 bad input or configuration, 3 an owner must sign in (patrol login), 4 a confirmation was declined
(nothing changed).";

#[derive(Debug, Parser)]
#[command(
    name = "patrol",
    version,
    about = "Keeps Azure DevOps PATs short-lived, rotated, stored in Key Vault, watched and revocable.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// More log lines on stderr (-v info, -vv debug). Logs never contain secret values.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Azure Functions custom handler on 127.0.0.1 (what the Functions host runs).
    Serve(ServeArgs),
    /// Show what the next run would do, without changing anything (dry run).
    #[command(after_help = plan::AFTER_HELP)]
    Plan(plan::PlanArgs),
    /// Rotate every managed token that is due, or one named token (with --force: now).
    #[command(after_help = rotate::AFTER_HELP)]
    Rotate(rotate::RotateArgs),
    /// List every PAT of every configured owner and organization: managed or not, scope, expiry, state.
    #[command(after_help = inventory::AFTER_HELP)]
    Inventory(inventory::InventoryArgs),
    /// Owner sign-in health, the last run of each token, and previous PATs waiting to be revoked.
    #[command(after_help = status::AFTER_HELP)]
    Status(status::StatusArgs),
    /// Each token's consumers and where their delivery stands; --check checks each one without writing.
    #[command(after_help = consumers::AFTER_HELP)]
    Consumers(consumers::ConsumersArgs),
    /// Sign a PAT owner in with a device code; the refresh token goes straight to the secret store.
    #[command(after_help = login::AFTER_HELP)]
    Login(login::LoginArgs),
    /// Onboard an existing PAT as a managed token's current value (no second PAT, no false alarm).
    #[command(after_help = adopt::AFTER_HELP)]
    Adopt(adopt::AdoptArgs),
    /// Write the weekly report: inventory, expiry timeline, recent rotations, open problems.
    #[command(after_help = report::AFTER_HELP)]
    Report(report::ReportArgs),
    /// Run the whole job against a local, in-process emulator: no Azure, no settings, a few seconds.
    #[cfg(feature = "demo")]
    #[command(after_help = demo::AFTER_HELP)]
    Demo(demo::DemoArgs),
    /// The production build (`--no-default-features`, scripts/package.sh) has no demo and no emulator.
    #[cfg(not(feature = "demo"))]
    #[command(hide = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Show misuse findings from the audit log (read-only; --since, --format table|json|markdown).
    Audit(audit_cmds::AuditArgs),
    /// Break glass: revoke one PAT, every PAT of an owner or user, or everything in an organization.
    Revoke(audit_cmds::RevokeArgs),
    /// Retire a managed token nobody uses: revoke its PATs, disable its secret, never rotate it again.
    #[command(after_help = retire::AFTER_HELP)]
    Retire(retire::RetireArgs),
    /// Replace managed all-organization PATs (they stopped working on 2026-12-01) with organization-scoped ones.
    MigrateGlobal(audit_cmds::MigrateGlobalArgs),
    /// Move owners' refresh tokens from the consumer vault(s) to patrol's own vault (PATROL_OWN_KEYVAULT_URL).
    #[command(after_help = migrate_refresh::AFTER_HELP)]
    MigrateRefreshTokens(migrate_refresh::MigrateRefreshArgs),
    /// Validate patrol.toml and the settings offline: every error at once, warnings for risky choices.
    #[command(after_help = check::AFTER_HELP)]
    Check(check::CheckArgs),
    /// The lifecycle log: PATs patrol created, rotated and revoked, when, by which trigger and why.
    #[command(after_help = history::AFTER_HELP)]
    History(history::HistoryArgs),
    /// Print a shell completion script.
    #[command(after_help = completions::AFTER_HELP)]
    Completions(completions::CompletionsArgs),
}

impl Command {
    /// Commands that only read: they read the state and the secret store in bulk, on the blocking pool.
    fn only_reads(&self) -> bool {
        matches!(
            self,
            Self::Plan(_) | Self::Inventory(_) | Self::Status(_) | Self::Report(_) | Self::Check(_) | Self::History(_)
        )
    }
}

/// The blocking pool of a command that only reads: two threads per core. Its file reads are CPU work (open,
/// read, decrypt, parse), so more threads than that finish no sooner; each extra thread that allocates gets
/// an allocator arena of its own, and the memory its freed blocks leave behind stays with the process
/// (`patrol plan` for 10,000 tokens: ≈ 3 MB more peak RSS with tokio's default of 512 threads). Commands that
/// write keep the default: their blocking tasks wait on `fsync` and file locks, not on a core.
fn read_only_blocking_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Seeds the random generator every TLS connection draws from, on a thread of its own, while the command
/// reads its settings and policy. Seeding runs aws-lc's CPU-jitter entropy collector once per process
/// (≈ 20 ms of CPU); left to the first TLS handshake, it would run there, on the thread that gathers the
/// inventory, with every other connection waiting behind it. When the command never opens a connection
/// the thread's work is wasted, on a core that was idle.
fn seed_tls_random_in_background() {
    let _ = std::thread::Builder::new().name("tls-seed".into()).spawn(|| {
        let mut byte = [0u8; 1];
        let _ = aws_lc_rs::rand::fill(&mut byte);
    });
}

/// Gives the memory the process has freed back to the system (glibc's `malloc_trim`: every allocator
/// arena's free pages, not only the top of the main heap). Called between phases of a big read-only run: after
/// `patrol plan` gathered its inventory, the journals, decrypted records and HTTP bodies it read are freed but
/// still resident, spread over the arenas of the threads that read them, where the plan built next on this
/// thread cannot reuse them (10,000 tokens: ≈ 1 MB lower peak RSS, for ≈ 1 ms). Other C libraries: nothing.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory the allocator owns; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    // Started by the Functions host: no arguments, only the port in the environment. Serve at once,
    // without building the whole command-line parser (every command's arguments and help text): the
    // host's readiness probe waits on this path (issue 14: start → first answered `GET /` ≤ 3 ms).
    if std::env::args_os().len() <= 1 && port_from_env().is_some() {
        return serve::run(ServeArgs::default());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let command = match cli.command {
        Some(Command::Serve(args)) => return serve::run(args),
        // Started by the Functions host: it passes no arguments, only the port in the environment.
        None if port_from_env().is_some() => return serve::run(ServeArgs::default()),
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::from(exit::USAGE);
        }
        Some(Command::Completions(args)) => return finish(completions::run(&args)),
        Some(command) => command,
    };
    logging::init(cli.verbose);
    seed_tls_random_in_background();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    if command.only_reads() {
        builder.max_blocking_threads(read_only_blocking_threads());
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => return finish(Err(CliError::failed(format!("cannot start the async runtime: {e}")))),
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Plan(args) => plan::run(&args).await,
            Command::Rotate(args) => rotate::run(&args).await,
            Command::Inventory(args) => inventory::run(&args).await,
            Command::Status(args) => status::run(&args).await,
            Command::Consumers(args) => consumers::run(&args).await,
            Command::Login(args) => login::run(&args).await,
            Command::Report(args) => report::run(&args).await,
            Command::Adopt(args) => adopt::run(&args).await,
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(&args).await,
            #[cfg(not(feature = "demo"))]
            Command::Demo { .. } => Err(CliError::usage(
                "this build has no demo (the production package leaves the emulator out); \
                 run it from a source checkout: cargo run -- demo",
            )),
            Command::Audit(args) => audit_cmds::cli_audit(&args).await,
            Command::Revoke(args) => {
                crate::telemetry::with_trigger("patrol revoke", audit_cmds::cli_revoke(&args)).await
            }
            Command::Retire(args) => retire::run(&args).await,
            Command::MigrateGlobal(args) => {
                crate::telemetry::with_trigger("patrol migrate-global", audit_cmds::cli_migrate_global(&args)).await
            }
            Command::Check(args) => check::run(&args).await,
            Command::History(args) => history::run(&args).await,
            Command::MigrateRefreshTokens(args) => migrate_refresh::run(&args).await,
            Command::Serve(_) | Command::Completions(_) => Ok(()),
        }
    });
    // Background tasks (emulator, servers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    finish(result)
}

fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patrol: {e}");
            ExitCode::from(e.code)
        }
    }
}
