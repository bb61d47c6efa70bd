//! patrol's integration tests: one binary, one module per area.

mod handler;
mod notify;
mod rotation;
mod store;
