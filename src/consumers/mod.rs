//! Consumers: every place a rotated PAT must reach besides its own Key Vault secret, and the proof that
//! it arrived and was used before the previous PAT is revoked.
//!
//! - [`policy`] — `[[token.consumer]]` / `[consumers]` in `patrol.toml`, validated with file:line:field errors.

pub mod policy;

pub use policy::{Consumer, ConsumerKind, ConsumerSettings, Consumers};
#[cfg(test)]
mod policy_tests;
