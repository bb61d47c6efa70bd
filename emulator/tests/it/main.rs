//! Integration tests of patrol-emulator over real HTTP on loopback (one test binary, one module per area).

mod support;

mod audit;
mod auth;
mod control;
mod entra;
mod keyvault;
mod pats;
