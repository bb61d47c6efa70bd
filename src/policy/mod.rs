//! `patrol.toml` as types, below every module that reads it (`rotation`, `audit`).
//!
//! - [`audit`] — the `[audit]` section: which rules run with what severity, the response per severity, the
//!   evidence gate for revoking previous PATs (`revocation`), `[audit.stale]`, and who is told. The rotation
//!   policy (`rotation::policy`) parses the whole file and embeds it; the `audit` module runs it.

pub mod audit;
