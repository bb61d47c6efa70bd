//! patrol's integration tests: one test binary, one module per area (keeps link time down).

mod cli;
mod handler;
mod notify;
mod store;
