//! patrol's integration tests: one binary, one module per area.

mod audit;
mod handler;
mod notify;
mod store;
/// Shared helpers; `support::captured_logs()` is the one process-wide log capture (use it, do not install
/// another global subscriber).
mod support;
