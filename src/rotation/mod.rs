//! The rotation engine: policy as code, inventory → plan → apply, a crash-safe per-token state machine,
//! per-token leases, and the entry points the three functions and the CLI call.
//!
//! Below it: `patrol.toml` ([`policy`] is `crate::policy`), and the documents it keeps in the state store
//! ([`journal`], the per-token record persisted before every external effect, and [`history`], the
//! lifecycle log, are `crate::state::journal` and `crate::state::history`).
//!
//! Files, top-down (each imports only files below it; `src/app/layers_tests.rs` checks):
//!
//! - [`prestage`] — one token's rotation for a reason (break glass, global migration), `Engine::prestage`;
//!   [`measure`] — a run as metrics; [`adopt`] — onboarding an existing PAT (`patrol adopt`: journaled,
//!   tagged, no second PAT, no alarm).
//! - [`engine`] — full pass, one token, event-driven; bounded concurrency; time budget; dry run; appends
//!   each run's events to the lifecycle log (`engine::record_run`).
//! - [`verdict`] — what a run did ([`verdict::RunSummary`]) and when it counts as failed (tokens left at
//!   risk): the functions' and CLI's rule. [`alerts`] — expiry alerts.
//! - [`machine`] — drives one token's journal through its steps; every step idempotent and resumable.
//! - [`plan`] — the pure decision: rotate (with a reason), revoke drained, reconcile orphans, adopt, resume.
//! - [`evidence`] — the audit evidence (`crate::evidence`) loaded for the plan, each drain put to the gate.
//! - [`inventory`] — policy ⋈ secret store ⋈ each owner's PATs (all pages) ⋈ journal (⋈ evidence).
//! - [`shared`] → [`lease`] — the journal store and leases from the settings (handler and CLI alike); one
//!   lease per token (blob lease or OS file lock).

pub use crate::policy;
pub use crate::state::{history, journal};

pub mod adopt;
pub mod alerts;
#[cfg(test)]
mod consumer_tests;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod evidence;
#[cfg(test)]
pub(crate) mod fake;
pub mod inventory;
pub mod lease;
#[cfg(test)]
mod lease_tests;
pub mod machine;
pub mod measure;
pub mod plan;
pub mod prestage;
pub mod shared;
pub mod verdict;
