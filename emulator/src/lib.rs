//! patrol-emulator: a faithful local emulator of the services patrol talks to — the Azure DevOps PAT
//! Lifecycle, Token Admin and audit APIs, Microsoft Entra sign-in, Azure Key Vault secrets and Event Grid
//! delivery — so patrol can be tested, demonstrated and tried without Azure.
//!
//! Layout (one concern per module):
//! - `clock` — the virtual clock every service shares; the control API moves it.
//! - `tokens` — access tokens the Entra emulator issues and the other services validate.
//! - `server` — [`EmulatorConfig`], [`Emulator::start`], the request pipeline; `serve` — connections.
//! - `state`, `seed`, `persist`, `audit_log`, `patsecret`, `wire` — the world and its rules.
//! - `devops` — PAT Lifecycle, Token Admin, audit log API, authentication, VSS errors.
//! - `entra` — device code, refresh token and client credentials grants.
//! - `ratelimit`, `faults` — TSTU rate limiting and injected faults (`delay`: precise injected latency);
//!   `control` — the control API.
//! - `consumers` — where PATs are used: service endpoints, variable groups, GitHub Actions secrets.
//! - Key Vault + Event Grid side (HTTPS with a generated CA, bearer challenge, secrets API, event delivery).
//! - `specs` — where tests find Microsoft's official specs (../shared/specs or `PATROL_SPECS_DIR`).
//!
//! The binary prints one JSON line naming its endpoints when it is ready; tests start the same server
//! in-process on an ephemeral port through this library.

// Request handlers return ready-made HTTP responses as their error type; the size is irrelevant there.
#![allow(clippy::result_large_err)]

pub mod audit_log;
pub mod clock;
pub mod consumers;
pub mod context;
pub mod control;
pub mod delay;
pub mod devops;
pub mod entra;
pub mod eventgrid;
pub mod faults;
pub mod http;
pub mod keyvault;
pub mod patsecret;
pub mod persist;
pub mod proxy;
pub mod ratelimit;
pub mod secrets;
pub mod seed;
pub mod serve;
pub mod server;
pub mod specs;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod wire;

pub use server::{Emulator, EmulatorConfig, Endpoints};
