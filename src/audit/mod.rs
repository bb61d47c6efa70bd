//! Audit and compromise response: ingest the Azure DevOps audit log, evaluate misuse rules, respond per
//! severity, gate revocation on evidence, break glass.
//!
//! - [`entry`] — the entry model and the streaming page parser (both response shapes).
//! - [`policy`] — the `[audit]` section of `patrol.toml`: rules, severities, responses, the revocation gate.
//! - [`context`] — what the rules know besides the log: known PATs, patrol's own actions, last uses.
//! - [`finding`] — a rule firing, with a sentence and the evidence.
//! - [`rules`] — the pure evaluator: entries × context × now → findings.
//! - [`respond`] — response per severity (alert / rotate now / revoke, dry run), the evidence gate.
//! - [`ingest`] — polling with overlapping windows, de-duplication, the persisted checkpoint.

pub mod context;
pub mod entry;
pub mod finding;
pub mod ingest;
pub mod policy;
pub mod respond;
pub mod rules;

pub use context::{AuditContext, KnownPat, LastUse, Lifecycle, PatStatus, PatrolAction};
pub use entry::{AuditEntry, AuthMechanism, Category, EntryData, MalformedEntry, PageError, PageInfo, parse_page};
pub use finding::{Evidence, Finding, Subject};
pub use policy::{Action, AuditPolicy, AuditSettings, RuleId};
pub use rules::{EvalOutcome, EvalStats, Evaluator, evaluate};
