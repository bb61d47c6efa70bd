//! The Key Vault secrets emulator: HTTPS with a CA generated at start, the bearer challenge, the secrets
//! API of api-versions 2025-07-01 and 2026-04-01, throttling (real limits and a fault knob), and Key Vault's
//! Event Grid events (`SecretNewVersionCreated`, `SecretNearExpiry` 30 days before a current version's
//! `exp`, `SecretExpired` at `exp`) on the shared virtual clock.
//!
//! - [`vault`] — state and rules (no HTTP);
//! - [`wire`] — the JSON shapes;
//! - [`http`] — request dispatch, authentication, paging, errors;
//! - [`control`] — the control API routes for the vault and Event Grid delivery;
//! - [`snapshot`] — the vault's section of the `--state` file;
//! - this file — the server handle, faults and the expiry-event evaluator.

pub mod control;
pub mod http;
pub mod rbac;
pub mod snapshot;
pub mod vault;
pub mod wire;

use crate::clock::VirtualClock;
use crate::eventgrid::{EventSink, KeyVaultEvent, SECRET_EXPIRED, SECRET_NEAR_EXPIRY};
use crate::tls::{EmulatorTls, serve_tls};
use crate::tokens::TokenIssuer;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use time::Duration;

/// How long before `exp` Key Vault raises `SecretNearExpiry`.
pub const NEAR_EXPIRY_LEAD: Duration = Duration::days(30);

/// Faults and knobs tests and demos turn on (control API, or directly through [`KeyVaultServer`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// The next N authenticated requests are answered 429 `Throttled`.
    pub throttle_next: u32,
    /// `Retry-After` seconds on a 429.
    pub retry_after_secs: u64,
    /// Follow every non-empty list page with an empty page that still carries `nextLink`.
    pub empty_pages: bool,
    /// Principals (client id or UPN) refused with 403 `ForbiddenByRbac`.
    pub forbidden_principals: BTreeSet<String>,
    /// Time a delete or a recovery takes to finish, in milliseconds of virtual time.
    pub async_delay_ms: i64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle_next: 0,
            retry_after_secs: 1,
            empty_pages: false,
            forbidden_principals: BTreeSet::new(),
            async_delay_ms: 500,
        }
    }
}

/// Everything the request handlers share.
#[derive(Debug)]
pub struct KvState {
    pub vault: Mutex<vault::Vault>,
    pub clock: VirtualClock,
    pub issuer: TokenIssuer,
    pub events: EventSink,
    /// `https://127.0.0.1:port` (no trailing slash): ids and `nextLink`s are built from it.
    pub base_url: String,
    pub vault_name: String,
    /// `authorization="…"` of the challenge: the Entra authority and tenant.
    pub authority: String,
    pub faults: Mutex<Faults>,
    pub limiter: Mutex<http::Limiter>,
    /// Role assignments on this vault and its secrets; `None`: RBAC not configured, every caller admitted.
    pub rbac: Mutex<Option<Vec<rbac::RoleAssignment>>>,
}

/// Options for [`KeyVaultServer::start`].
#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    pub listen: SocketAddr,
    /// Vault name (appears in `VaultName` of events).
    pub vault_name: String,
    /// Authority URL put in the challenge (`{entra}/{tenant}`).
    pub authority: String,
    /// Where to write the CA certificate PEM (`None`: not written; read it from the handle).
    pub ca_cert_path: Option<std::path::PathBuf>,
    /// The certificate to serve (the emulator shares one CA between Entra and Key Vault); `None`: a fresh
    /// CA for this listener.
    pub tls: Option<EmulatorTls>,
}

impl Default for KeyVaultOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            vault_name: "patrol-emu".into(),
            authority: "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000".into(),
            ca_cert_path: None,
            tls: None,
        }
    }
}

/// A running Key Vault emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct KeyVaultServer {
    pub url: String,
    pub ca_cert_pem: String,
    pub state: Arc<KvState>,
    /// The TLS configuration (CA and leaf), shared with the emulator's other HTTPS listeners.
    pub tls: EmulatorTls,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KeyVaultServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KeyVaultServer {
    /// Starts an empty vault.
    pub async fn start(
        opts: KeyVaultOptions,
        clock: VirtualClock,
        issuer: TokenIssuer,
        events: EventSink,
    ) -> anyhow::Result<Self> {
        Self::start_with_vault(opts, vault::Vault::default(), clock, issuer, events).await
    }

    /// Starts serving `vault` (e.g. loaded from the `--state` file).
    pub async fn start_with_vault(
        opts: KeyVaultOptions,
        vault: vault::Vault,
        clock: VirtualClock,
        issuer: TokenIssuer,
        events: EventSink,
    ) -> anyhow::Result<Self> {
        let tls = match opts.tls {
            Some(t) => t,
            None => EmulatorTls::generate(&[format!("{}.vault.localhost", opts.vault_name)])?,
        };
        if let Some(p) = &opts.ca_cert_path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(p, &tls.ca_cert_pem)?;
        }
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        // Azure names a vault after the first label of its host (`<name>.vault.azure.net`), and clients (patrol
        // among them) derive the name that way to recognise the vault's events. A vault named `localhost` is
        // therefore served as `https://localhost:<port>` (its certificate carries the name), so its URL and
        // its name agree; any other name keeps the loopback address (set the name explicitly in clients).
        let base_url = if opts.vault_name.eq_ignore_ascii_case("localhost") {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("https://{addr}")
        };
        let state = Arc::new(KvState {
            vault: Mutex::new(vault),
            clock,
            issuer,
            events,
            base_url: base_url.clone(),
            vault_name: opts.vault_name,
            authority: opts.authority,
            faults: Mutex::new(Faults::default()),
            limiter: Mutex::new(http::Limiter::default()),
            rbac: Mutex::new(None),
        });
        let app = http::router(Arc::clone(&state));
        let server = tokio::spawn(serve_tls(listener, tls.clone(), app));
        let ticker = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(200));
                loop {
                    every.tick().await;
                    evaluate_expiry(&state);
                }
            })
        };
        Ok(Self {
            url: format!("{base_url}/"),
            ca_cert_pem: tls.ca_cert_pem.clone(),
            state,
            tls,
            tasks: vec![server, ticker],
        })
    }

    pub fn faults(&self) -> Faults {
        self.state.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        set_faults(&self.state, faults);
    }

    /// Turns RBAC on with these role assignments (`None`: off, every caller admitted).
    pub fn set_role_assignments(&self, assignments: Option<Vec<rbac::RoleAssignment>>) {
        *self.state.rbac.lock().unwrap_or_else(|p| p.into_inner()) = assignments;
    }

    /// Raises due expiry events now (the server also does this every 200 ms and after each request).
    pub fn evaluate_expiry(&self) {
        evaluate_expiry(&self.state);
    }
}

/// Replaces the Key Vault faults (and the delete/recover delay they carry).
pub fn set_faults(state: &KvState, faults: Faults) {
    state.vault.lock().unwrap_or_else(|p| p.into_inner()).async_delay =
        Duration::milliseconds(faults.async_delay_ms.max(0));
    *state.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
}

/// Raises `SecretNearExpiry` / `SecretExpired` for current versions whose time has come, once per version
/// and `exp` value. Disabled versions get them too, as in Azure.
pub fn evaluate_expiry(state: &KvState) {
    let now = state.clock.now();
    let ts = now.unix_timestamp();
    let mut raised = Vec::new();
    {
        let mut vault = state.vault.lock().unwrap_or_else(|p| p.into_inner());
        vault.settle(now);
        for (name, v) in vault.current_versions_mut() {
            let Some(exp) = v.exp else { continue };
            let mk = |event_type: &str| KeyVaultEvent {
                id: uuid::Uuid::new_v4().to_string(),
                event_type: event_type.to_owned(),
                vault_name: state.vault_name.clone(),
                vault_url: state.base_url.clone(),
                object_name: name.to_owned(),
                version: v.id.clone(),
                nbf: v.nbf,
                exp: v.exp,
                time: now,
            };
            if ts >= exp - NEAR_EXPIRY_LEAD.whole_seconds() && v.near_expiry_sent_for != Some(exp) && ts < exp {
                raised.push(mk(SECRET_NEAR_EXPIRY));
                v.near_expiry_sent_for = Some(exp);
            }
            if ts >= exp && v.expired_sent_for != Some(exp) {
                raised.push(mk(SECRET_EXPIRED));
                v.expired_sent_for = Some(exp);
                v.near_expiry_sent_for = Some(exp);
            }
        }
        if !raised.is_empty() {
            vault.mark_changed();
        }
    }
    state.events.raise(raised);
}
