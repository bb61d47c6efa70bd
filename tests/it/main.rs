//! patrol's integration tests: one test binary, one module per area (keeps link time down).

mod audit;
mod audit_breakglass;
mod audit_identity;
mod audit_pass;
mod audit_usage;
mod auth;
mod cli;
mod client_env;
mod devops;
mod handler;
mod login;
mod notify;
mod rotation;
mod store;
/// Shared helpers; `support::captured_logs()` is the one process-wide log capture (use it, do not install
/// another global subscriber).
mod support;
