//! Audit and compromise response: ingest the Azure DevOps audit log, evaluate misuse rules, respond per
//! severity, gate revocation on evidence, break glass.
//!
//! - [`entry`] — the entry model and the streaming page parser (both response shapes).
//! - the `[audit]` section of `patrol.toml` (rules, severities, responses, the revocation gate, `stale`) is
//!   [`crate::policy::audit`], below both this module and `rotation`, which parses it with the rest of the file.
//! - [`context`] — what the rules know besides the log: known PATs, patrol's own actions, last uses.
//! - [`finding`] — a rule firing, with a sentence and the evidence.
//! - [`rules`] — the pure evaluator: entries × context × now → findings.
//! - [`respond`] — response per severity (alert / rotate now / revoke, dry run), the evidence gate.
//! - [`ingest`] — polling with overlapping windows, de-duplication, the persisted checkpoint.
//! - [`managed`] — the managed PATs as the secret store's tags describe them.
//! - [`replace`] — out-of-schedule replacements (pre-staged before break glass, global migration).
//! - [`pass`] — the timer's audit pass: every organization polled, responses executed, notices.
//! - [`usage`] — stale PATs (no audited use in N days), shared PATs, dead all-organization PATs; the
//!   announced revocation of stale ones.
//! - [`retire`] — retiring a managed token nobody uses (`patrol retire`): journaled in the token's journal
//!   before any effect, its PATs revoked, its secret disabled, a `retired` lifecycle event; never re-created.
//! - [`weekly`] — the weekly report (findings log, once a week with compare-and-swap).
//! - [`migrate`] — all-organization PATs (retired 2026-12-01) found and the managed ones replaced.
//! - [`render`] — findings as a table, markdown or JSON.
//! - [`breakglass`] — revoke one PAT, an owner's or a whole organization's, with a report.

pub mod breakglass;
pub mod context;
pub mod entry;
pub mod finding;
pub mod ingest;
pub mod managed;
pub mod measure;
pub mod migrate;
pub mod pass;
pub mod render;
pub mod replace;
pub mod respond;
pub mod resume;
pub mod retire;
pub mod rules;
pub mod usage;
pub mod weekly;

pub use crate::policy::audit::{Action, AuditPolicy, AuditSettings, RuleId};
pub use context::{AuditContext, KnownPat, LastUse, Lifecycle, PatStatus, PatrolAction};
pub use entry::{AuditEntry, AuthMechanism, Category, EntryData, MalformedEntry, PageError, PageInfo, parse_page};
pub use finding::{Evidence, Finding, Subject};
pub use rules::{EvalOutcome, EvalStats, Evaluator, evaluate};
