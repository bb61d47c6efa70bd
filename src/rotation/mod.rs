//! The rotation engine: policy as code, inventory → plan → apply, a crash-safe per-token state machine,
//! per-token leases, and the entry points the three functions and the CLI call.
