//! Audit and compromise response: ingest the Azure DevOps audit log, evaluate misuse rules, respond per
//! severity, gate revocation on evidence, break glass.
//!
//! - [`entry`] — the entry model and the streaming page parser (both response shapes).

pub mod entry;

pub use entry::{AuditEntry, AuthMechanism, Category, EntryData, MalformedEntry, PageError, PageInfo};
