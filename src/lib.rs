//! patrol keeps Azure DevOps personal access tokens (PATs) short-lived, rotated, stored in Azure Key Vault,
//! watched and revocable. It runs as an Azure Functions custom handler (`patrol serve`) and as an operator's
//! CLI (`patrol …`), one binary.
//!
//! Layout — one module per concern, each opening with what it owns (see `docs/architecture.md`):
//! - [`domain`] — validated names, scopes and ids; invalid values cannot travel.
//! - [`config`] — the typed `PATROL_…` settings.
//! - [`clock`] — time, aligned with the Functions host's `UtcNow`.
//! - [`telemetry`] — tracing to stdout (JSON for Application Insights).
//! - [`handler`] — the custom-handler protocol: `RotateTimer`, `RotateHttp`, `EventGridSecretChanged`.
//! - [`auth`] — delegated Entra sign-in of PAT owners; refresh tokens kept in the secret store.
//! - [`devops`] — the Azure DevOps PAT Lifecycle, Token Admin and audit clients.
//! - [`store`] — secret stores: Key Vault (official SDK) and the embedded encrypted file store.
//! - [`consumers`] — where a rotated PAT is delivered (service connections, variable groups, GitHub Actions
//!   secrets, more vault secrets, webhooks, references), the new-PAT test, delivery state and evidence.
//! - [`policy`] — `patrol.toml` as types below its readers: tokens, `[audit]`, consumers.
//! - [`evidence`] — what the audit log has shown (the checkpoint) and the pure revocation gate.
//! - [`rotation`] — inventory → plan → apply, the crash-safe per-token state machine, leases.
//! - [`state`] — durable documents with compare-and-swap; the journal, delivery records, lifecycle log.
//! - [`notify`] — expiry warnings, rotation reports and critical alerts by email and chat.
//! - [`report`] — the one report builder (`patrol report` and the weekly mail), HTML and markdown.
//! - [`audit`] — audit-log ingestion, misuse rules, compromise response, break glass.
//! - [`app`] — the composition root: settings + policy → stores, leases, connector, engine, notifier.
//! - [`cli`] — the operator's commands, `patrol demo`, reports.

pub mod app;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consumers;
pub mod devops;
pub mod domain;
pub mod evidence;
pub mod handler;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod policy;
pub mod report;
pub mod rotation;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod trigger;
