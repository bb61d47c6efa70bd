//! The rotation engine: policy as code, inventory → plan → apply, a crash-safe per-token state machine,
//! per-token leases, and the entry points the three functions and the CLI call.
//!
//! - [`policy`] — `patrol.toml`, validated with file/line/field errors.
//! - [`inventory`] — policy ⋈ secret store ⋈ each owner's PATs (all pages) ⋈ journal.
//! - [`plan`] — the pure decision: rotate (with a reason), revoke drained, reconcile orphans, adopt, resume.
//! - [`evidence`] — the audit evidence that gates revoking previous PATs (opt-in), and the per-drain decision.
//! - [`journal`] — the per-token journal record, persisted before every external effect.
//! - [`machine`] — drives one token's journal through its steps; every step idempotent and resumable.
//! - [`lease`] / [`blob`] — one lease per token (blob lease or in-process) and the blob `StateStore`.
//! - [`shared`] — picks the journal store and leases from the settings (handler and CLI alike).
//! - [`engine`] — full pass, one token, event-driven; bounded concurrency; time budget; dry run.
//! - [`alerts`] — expiry alerts: unmanaged PATs' countdown and expiry, managed tokens only when overdue.
//! - [`measure`] — a run as metrics (`crate::metrics`): per token, per unmanaged PAT, per run.
//! - [`adopt`] — onboarding an existing PAT (`patrol adopt`): journaled, tagged, no second PAT, no alarm.
//! - [`retire`] — retiring a managed token (`patrol retire`): journaled, revoke, disable, record; never re-created.
//! - [`verdict`] — when a run counts as failed (tokens left at risk): the functions' and CLI's rule.

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
pub mod retire;
pub mod shared;
pub mod verdict;
