//! patrol-emulator: a faithful local emulator of the services patrol talks to — the Azure DevOps PAT
//! Lifecycle, Token Admin and audit APIs, Microsoft Entra sign-in, Azure Key Vault secrets and Event Grid
//! delivery — so patrol can be tested, demonstrated and tried without Azure.
//!
//! Layout (one concern per module):
//! - `clock` — the virtual clock every service shares; the control API moves it.
//! - `tokens` — access tokens the Entra emulator issues and the other services validate.
//! - Azure DevOps + Entra side (PAT API, Token Admin, audit log, sign-in, rate limits, faults, control API).
//! - Key Vault + Event Grid side (HTTPS with a generated CA, bearer challenge, secrets API, event delivery).
//!
//! The binary prints one JSON line naming its endpoints when it is ready; tests start the same server
//! in-process on an ephemeral port through this library.

pub mod clock;
pub mod eventgrid;
pub mod keyvault;
pub mod tls;
pub mod tokens;
