//! Integration tests of patrol-emulator over real HTTP on loopback (one test binary, one module per area).

mod support;

mod audit;
mod auth;
mod conformance;
mod conformance_consumers;
mod consumers;
mod control;
mod control_audit;
mod entra;
mod eventgrid;
mod keyvault;
mod keyvault_join;
mod keyvault_rbac;
mod keyvault_state;
mod location;
mod pats;
mod proxy;
