//! The rotation engine: policy as code, inventory → plan → apply, a crash-safe per-token state machine,
//! per-token leases, and the entry points the three functions and the CLI call.
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
//! - [`journal`] — the per-token journal record, persisted before every external effect; beside it
//!   [`history`], the lifecycle log (`history/lifecycle`) — both documents in the state store.
//! - [`policy`] — `patrol.toml`, validated with file/line/field errors.
//! - [`shared`] → [`lease`] — the journal store and leases from the settings (handler and CLI alike); one
//!   lease per token (blob lease or OS file lock).

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
pub mod history;
pub mod inventory;
pub mod journal;
pub mod lease;
#[cfg(test)]
mod lease_tests;
pub mod machine;
pub mod measure;
pub mod plan;
pub mod policy;
pub mod prestage;
pub mod shared;
pub mod verdict;
