//! patrol's integration tests: one binary, one module per area (see the module docs).

mod auth;
mod client_env;
mod devops;
