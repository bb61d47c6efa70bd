//! Composition: [`EmulatorConfig`], [`Emulator::start`] (listeners for Azure DevOps, the audit service,
//! Entra and the control API, all on 127.0.0.1), the per-request pipeline shared by the emulated APIs
//! (latency, queued faults, random 5xx, rate limiting, "response lost"), the ready line, and shutdown.
//! `start` also starts the Key Vault listener (HTTPS, same clock and token issuer) and Event Grid delivery.

use crate::clock::VirtualClock;
use crate::context::{Ctx, Lifetimes, Stats};
use crate::eventgrid::{DeliveryConfig, EventGrid};
use crate::faults::{FaultKind, FaultSettings, Faults, Service};
use crate::http::{ApiRequest, ConnInfo, PublicHost};
use crate::keyvault::{KeyVaultOptions, KeyVaultServer};
use crate::persist;
use crate::ratelimit::{RateLimitSettings, RateLimiter};
use crate::secrets::MintedSecrets;
use crate::seed::{self, Seed};
use crate::tokens::TokenIssuer;
use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address of the Azure DevOps listener; with a non-zero port the audit, Entra, control, Key Vault and
    /// GitHub listeners take the next five ports, with port 0 each gets its own ephemeral port.
    pub listen: SocketAddr,
    pub seed: Option<Seed>,
    /// Persist state here (loaded at start if it exists; the seed is applied only to a new state).
    pub state_path: Option<PathBuf>,
    /// Load `state_path` but never write it (benchmarks start every run from one saved world, and a save
    /// in the middle of a measurement would be measured too).
    pub state_read_only: bool,
    pub faults: FaultSettings,
    pub rate_limit: RateLimitSettings,
    pub lifetimes: Lifetimes,
    /// How many minted secret values to remember for leak scanning (0 = none).
    pub secrets_capacity: usize,
    pub keyvault: KeyVaultConfig,
    /// Also serve the Azure-names proxy ([`crate::proxy`]; ready line: `proxy`), after the extra vaults'
    /// ports with a fixed `listen` port.
    pub proxy: bool,
}

/// The Key Vault and Event Grid side of [`EmulatorConfig`].
#[derive(Debug, Clone)]
pub struct KeyVaultConfig {
    /// Vault name (`VaultName` of events, the ARM id in `topic`).
    pub vault_name: String,
    /// Where to write the generated CA certificate (PEM). `None`: a fresh private temporary directory,
    /// removed at shutdown.
    pub ca_cert_path: Option<PathBuf>,
    pub faults: crate::keyvault::Faults,
    /// Event Grid delivery (target, mode, duplicates, reordering…). An empty `topic` becomes the vault's
    /// ARM id.
    pub delivery: DeliveryConfig,
    /// Further vaults to host, by name, each on its own HTTPS listener (ready line: `keyvault.<name>`), with
    /// its own state and role assignments; their events go through the same Event Grid delivery, each
    /// naming its vault. Their CA certificates are appended to the CA file. Not kept in `--state`.
    pub extra_vaults: Vec<String>,
}

impl Default for KeyVaultConfig {
    fn default() -> Self {
        Self {
            vault_name: "patrol-emu".into(),
            ca_cert_path: None,
            faults: crate::keyvault::Faults::default(),
            delivery: DeliveryConfig::default(),
            extra_vaults: Vec::new(),
        }
    }
}

/// The ARM id Event Grid uses as `topic` for a vault of the emulated subscription.
pub fn vault_topic(vault_name: &str) -> String {
    format!(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/patrol-emulator/providers/Microsoft.KeyVault/vaults/{vault_name}"
    )
}

/// Vault names: 3–24 of `[0-9a-zA-Z-]`, starting with a letter, as Azure requires.
fn check_vault_name(name: &str) -> anyhow::Result<()> {
    let ok = (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        anyhow::bail!(
            "vault name {name:?} is not valid: 3 to 24 letters, digits and single hyphens, starting with a letter"
        );
    }
    Ok(())
}

fn private_temp_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("patrol-emulator-{}", uuid::Uuid::new_v4().simple()));
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: None,
            state_path: None,
            state_read_only: false,
            faults: FaultSettings::default(),
            rate_limit: RateLimitSettings::default(),
            lifetimes: Lifetimes::default(),
            secrets_capacity: 10_000,
            keyvault: KeyVaultConfig::default(),
            proxy: false,
        }
    }
}

/// Base URLs of the emulated services (what the ready line prints).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    /// `https://vssps.dev.azure.com` (PAT Lifecycle, Token Admin) and `https://dev.azure.com`.
    pub devops: String,
    /// `https://auditservice.dev.azure.com`.
    pub audit: String,
    /// `https://login.microsoftonline.com` (append `/{tenant}/oauth2/v2.0/…`).
    pub entra: String,
    pub control: String,
    /// The emulated tenant id.
    pub tenant: String,
    /// Endpoints added by other parts of the emulator (Key Vault: `keyvault`, `ca_cert`; GitHub: `github`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

/// A running emulator.
pub struct Emulator {
    endpoints: Endpoints,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    state_path: Option<PathBuf>,
    keyvault: KeyVaultServer,
    /// [`KeyVaultConfig::extra_vaults`], by name.
    extra_vaults: BTreeMap<String, KeyVaultServer>,
    eventgrid: EventGrid,
    /// A temporary directory holding the CA certificate, removed at shutdown.
    temp_dir: Option<PathBuf>,
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("refusing to listen on {addr}: the emulator listens on loopback addresses only");
    }
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Self> {
        config.faults.validate().map_err(anyhow::Error::msg).context("fault settings")?;
        config.rate_limit.validate().map_err(anyhow::Error::msg).context("rate-limit settings")?;
        config.lifetimes.validate().map_err(anyhow::Error::msg).context("token lifetimes")?;
        check_vault_name(&config.keyvault.vault_name)?;
        for (i, name) in config.keyvault.extra_vaults.iter().enumerate() {
            check_vault_name(name)?;
            if name.eq_ignore_ascii_case(&config.keyvault.vault_name)
                || config.keyvault.extra_vaults[..i].iter().any(|n| n.eq_ignore_ascii_case(name))
            {
                anyhow::bail!("vault name {name:?} is used twice");
            }
        }
        crate::keyvault::control::validate_faults(&config.keyvault.faults)
            .map_err(anyhow::Error::msg)
            .context("Key Vault fault settings")?;
        crate::keyvault::control::validate_delivery(&config.keyvault.delivery)
            .map_err(anyhow::Error::msg)
            .context("Event Grid delivery settings")?;
        let loaded = match &config.state_path {
            Some(p) => persist::load(p)?,
            None => None,
        };
        let fresh = loaded.is_none();
        let clock = VirtualClock::new();
        let (loaded, vault) = match loaded {
            Some(l) => {
                if let Some(t) = l.virtual_time {
                    clock.set(t); // never backward: time goes on across restarts
                }
                (Some(l.state), l.vault)
            }
            None => (None, crate::keyvault::vault::Vault::default()),
        };
        let tokens = TokenIssuer::new(clock.clone());
        let ctx = Arc::new(Ctx::new(
            clock,
            tokens,
            loaded.unwrap_or_default(),
            config.lifetimes.clone(),
            Faults::new(config.faults.clone()),
            RateLimiter::new(config.rate_limit.clone()),
            MintedSecrets::new(config.secrets_capacity),
        ));
        if let (true, Some(s)) = (fresh, &config.seed) {
            let mut state = ctx.state();
            seed::apply(&ctx, &mut state, s).map_err(anyhow::Error::msg).context("seed")?;
        }

        let ip = config.listen.ip();
        let port = |i: u16| if config.listen.port() == 0 { 0 } else { config.listen.port().saturating_add(i) };
        let devops = bind(SocketAddr::new(ip, port(0))).await?;
        let audit = bind(SocketAddr::new(ip, port(1))).await?;
        let entra = bind(SocketAddr::new(ip, port(2))).await?;
        let control = bind(SocketAddr::new(ip, port(3))).await?;
        let url = |l: &TcpListener| -> anyhow::Result<String> { Ok(format!("http://{}", l.local_addr()?)) };
        // One CA for every HTTPS listener (Entra, Key Vault): clients trust one file.
        let tls = crate::tls::EmulatorTls::generate(&[format!("{}.vault.localhost", config.keyvault.vault_name)])
            .context("generating the emulator's TLS certificate")?;
        let entra_url = format!("https://{}", entra.local_addr()?);
        ctx.tokens.set_authority(&entra_url);
        ctx.tokens.set_tenant(ctx.state().tenant_id);
        let mut endpoints = Endpoints {
            devops: url(&devops)?,
            audit: url(&audit)?,
            entra: entra_url,
            control: url(&control)?,
            tenant: ctx.state().tenant_id.to_string(),
            extra: BTreeMap::new(),
        };

        let _ = ctx
            .urls
            .set(crate::context::ServiceUrls { devops: endpoints.devops.clone(), audit: endpoints.audit.clone() });
        let kv_cfg = &config.keyvault;
        let mut delivery = kv_cfg.delivery.clone();
        if delivery.topic.is_empty() {
            delivery.topic = vault_topic(&kv_cfg.vault_name);
        }
        let (eventgrid, sink) =
            EventGrid::start(ctx.clock.clone(), DeliveryConfig { target: None, ..delivery.clone() });
        eventgrid.set_validation_base(&endpoints.control);
        eventgrid.set_config(delivery);
        let (ca_cert_path, temp_dir) = match &kv_cfg.ca_cert_path {
            Some(p) => (p.clone(), None),
            None => {
                let dir = private_temp_dir()?;
                (dir.join("ca-cert.pem"), Some(dir))
            }
        };
        let kv_listen = SocketAddr::new(ip, port(4));
        if !kv_listen.ip().is_loopback() {
            anyhow::bail!("refusing to listen on {kv_listen}: the emulator listens on loopback addresses only");
        }
        let extra_sink = sink.clone();
        let keyvault = KeyVaultServer::start_with_vault(
            KeyVaultOptions {
                listen: kv_listen,
                vault_name: kv_cfg.vault_name.clone(),
                authority: format!("{}/{}", endpoints.entra, endpoints.tenant),
                ca_cert_path: Some(ca_cert_path.clone()),
                tls: Some(tls.clone()),
            },
            vault,
            ctx.clock.clone(),
            ctx.tokens.clone(),
            sink,
        )
        .await
        .with_context(|| format!("starting the Key Vault listener on {kv_listen}"))?;
        keyvault.set_faults(kv_cfg.faults.clone());
        let mut extra_vaults = BTreeMap::new();
        let mut ca_bundle = keyvault.ca_cert_pem.clone();
        for (i, name) in kv_cfg.extra_vaults.iter().enumerate() {
            // P+5 is GitHub's; extra vaults follow it.
            let listen = SocketAddr::new(ip, port(6 + i as u16));
            let kv = KeyVaultServer::start(
                KeyVaultOptions {
                    listen,
                    vault_name: name.clone(),
                    authority: format!("{}/{}", endpoints.entra, endpoints.tenant),
                    ca_cert_path: None,
                    tls: Some(tls.clone()),
                },
                ctx.clock.clone(),
                ctx.tokens.clone(),
                extra_sink.clone(),
            )
            .await
            .with_context(|| format!("starting the Key Vault listener of vault {name} on {listen}"))?;
            kv.set_faults(kv_cfg.faults.clone());
            if !ca_bundle.contains(kv.ca_cert_pem.trim()) {
                ca_bundle.push_str(&kv.ca_cert_pem);
            }
            endpoints.extra.insert(format!("keyvault.{name}"), kv.url.clone());
            extra_vaults.insert(name.clone(), kv);
        }
        if !extra_vaults.is_empty() {
            std::fs::write(&ca_cert_path, &ca_bundle)
                .with_context(|| format!("writing the CA certificates to {}", ca_cert_path.display()))?;
        }
        let ca_cert = ca_cert_path.to_string_lossy().into_owned();
        endpoints.extra.insert("keyvault".into(), keyvault.url.clone());
        endpoints.extra.insert("ca_cert".into(), ca_cert.clone());
        let github = bind(SocketAddr::new(ip, port(5))).await?;
        endpoints.extra.insert("github".into(), format!("https://{}", github.local_addr()?));
        let control_router = crate::control::router(ctx.clone())
            .merge(crate::keyvault::control::router(keyvault.state.clone(), eventgrid.clone(), ca_cert))
            .merge(crate::keyvault::control::rbac_router(
                std::iter::once(keyvault.state.clone()).chain(extra_vaults.values().map(|v| v.state.clone())).collect(),
            ))
            .merge(crate::consumers::control::router(ctx.clone()));

        let (tx, rx) = watch::channel(false);
        let proxy = if config.proxy {
            let listener = bind(SocketAddr::new(ip, port(6 + kv_cfg.extra_vaults.len() as u16))).await?;
            endpoints.extra.insert("proxy".into(), format!("http://{}", listener.local_addr()?));
            let mut routes = crate::proxy::Routes::default();
            routes.add(crate::proxy::ENTRA_HOST, api_router(ctx.clone(), Service::Entra));
            for host in crate::proxy::DEVOPS_HOSTS {
                routes.add(host, api_router(ctx.clone(), Service::Devops));
            }
            routes.add(crate::proxy::AUDIT_HOST, api_router(ctx.clone(), Service::Audit));
            routes.add(crate::proxy::GITHUB_HOST, crate::consumers::github::router(ctx.clone()));
            for kv in std::iter::once(&keyvault).chain(extra_vaults.values()) {
                routes.add(
                    &crate::proxy::vault_host(&kv.state.vault_name),
                    crate::keyvault::http::router(kv.state.clone()),
                );
            }
            let leaf = keyvault.tls.server_config_for(&routes.hosts()).context("issuing the proxy's certificate")?;
            Some(crate::proxy::spawn(listener, routes, leaf, rx.clone()))
        } else {
            None
        };
        let mut tasks = vec![
            crate::serve::spawn_listener(devops, api_router(ctx.clone(), Service::Devops), rx.clone()),
            crate::serve::spawn_listener(audit, api_router(ctx.clone(), Service::Audit), rx.clone()),
            crate::serve::spawn_tls_listener(entra, tls, api_router(ctx.clone(), Service::Entra), rx.clone()),
            crate::serve::spawn_listener(control, control_router, rx.clone()),
            crate::consumers::github::spawn_listener(
                github,
                keyvault.tls.clone(),
                crate::consumers::github::router(ctx.clone()),
                rx.clone(),
            ),
        ];
        tasks.extend(proxy);
        let saved_to = config.state_path.clone().filter(|_| !config.state_read_only);
        let writer = saved_to.clone().map(|p| persist::spawn_writer(ctx.clone(), keyvault.state.clone(), p));
        if fresh && let Some(p) = &saved_to {
            persist::save(&ctx, &keyvault.state, p)?;
        }
        Ok(Self {
            endpoints,
            ctx,
            shutdown: tx,
            tasks,
            writer,
            state_path: saved_to,
            keyvault,
            extra_vaults,
            eventgrid,
            temp_dir,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.ctx.clock
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.ctx.tokens
    }

    /// The shared runtime (state, faults, limiter…), for in-process tests and other emulated services.
    pub fn context(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// The emulated Key Vault (its state, faults, CA certificate).
    pub fn keyvault(&self) -> &KeyVaultServer {
        &self.keyvault
    }

    /// A vault by name: the primary one or one of [`KeyVaultConfig::extra_vaults`].
    pub fn vault(&self, name: &str) -> Option<&KeyVaultServer> {
        if self.keyvault.state.vault_name.eq_ignore_ascii_case(name) {
            return Some(&self.keyvault);
        }
        self.extra_vaults.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Event Grid delivery of the vault's events (configuration and logs).
    pub fn eventgrid(&self) -> &EventGrid {
        &self.eventgrid
    }

    /// The one JSON line printed when ready.
    pub fn ready_line(&self) -> String {
        serde_json::to_string(&self.endpoints).unwrap_or_default()
    }

    /// Stops the listeners and saves the state (with `--state`).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let kv_state = self.keyvault.state.clone();
        drop(self.keyvault);
        drop(self.extra_vaults);
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(w) = self.writer {
            w.abort();
        }
        if let Some(p) = &self.state_path {
            let ctx = self.ctx.clone();
            let p = p.clone();
            tokio::task::spawn_blocking(move || persist::save(&ctx, &kv_state, &p)).await.context("saving state")??;
        }
        Ok(())
    }
}

fn api_router(ctx: Arc<Ctx>, service: Service) -> Router {
    Router::new().fallback(
        move |ext: Extension<ConnInfo>,
              public: Option<Extension<PublicHost>>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| {
            let ctx = ctx.clone();
            let mut req = ApiRequest::new(method, &uri, headers, body, ext.0.peer);
            req.public_host = public.map(|p| p.0.0);
            async move { pipeline(ctx, service, ext.0, req).await }
        },
    )
}

fn counter(ctx: &Ctx, s: Service) -> &std::sync::atomic::AtomicU64 {
    match s {
        Service::Devops => &ctx.stats.devops,
        Service::Audit => &ctx.stats.audit,
        Service::Entra => &ctx.stats.entra,
        Service::Github => &ctx.stats.github,
    }
}

fn fault_response(service: Service, status: StatusCode, retry_after: Option<u64>) -> Response {
    let mut r = match service {
        Service::Entra => {
            let e = crate::entra::EntraError {
                status,
                ..crate::entra::EntraError::new("temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
            };
            e.into_response()
        }
        _ if status == StatusCode::TOO_MANY_REQUESTS => crate::devops::errors::VssError::new(
            status,
            "RequestBlockedException",
            "Microsoft.TeamFoundation.Framework.Server.RequestBlockedException, Microsoft.TeamFoundation.Framework.Server",
            "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource 'Core' in namespace 'User'.",
        )
        .into_response(),
        _ => {
            let mut e = crate::devops::errors::VssError::unavailable(
                "TF400324: Team Foundation services are not available from server. Technical information (for administrator): the service is temporarily unavailable.",
            );
            e.status = status;
            e.into_response()
        }
    };
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

async fn pipeline(ctx: Arc<Ctx>, service: Service, conn: ConnInfo, req: ApiRequest) -> Response {
    let arrived = std::time::Instant::now();
    Stats::bump(counter(&ctx, service));
    let latency = ctx.faults.latency(service);
    if !latency.is_zero() {
        crate::delay::until(arrived + latency).await;
    }
    let mut lose = false;
    match ctx.faults.take(service, req.method.as_str(), &req.path) {
        Some(FaultKind::Status { status }) => {
            Stats::bump(&ctx.stats.faults_injected);
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return fault_response(service, s, None);
        }
        Some(FaultKind::Throttle { retry_after_secs }) => {
            Stats::bump(&ctx.stats.faults_injected);
            return fault_response(service, StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs));
        }
        Some(FaultKind::LoseResponse) => lose = true,
        None => {}
    }
    if let Some(status) = ctx.faults.roll_failure(service) {
        Stats::bump(&ctx.stats.faults_injected);
        return fault_response(service, StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), None);
    }
    let mut rl_headers = Vec::new();
    if service != Service::Entra && ctx.limiter.enabled() {
        let identity = crate::devops::auth::identity(&ctx, &req);
        if let Some(v) = ctx.limiter.check(&identity, ctx.now()) {
            if v.blocked {
                Stats::bump(&ctx.stats.throttled);
                let mut r = fault_response(service, StatusCode::TOO_MANY_REQUESTS, None);
                add_headers(&mut r, &v.headers);
                return r;
            }
            if !v.delay.is_zero() {
                Stats::bump(&ctx.stats.delayed);
                tokio::time::sleep(v.delay).await;
            }
            rl_headers = v.headers;
        }
    }
    let mut resp = match service {
        Service::Devops => crate::devops::dispatch(&ctx, &req),
        Service::Audit => crate::devops::dispatch_audit(&ctx, &req),
        Service::Entra => crate::entra::dispatch(&ctx, &req),
        Service::Github => crate::devops::errors::VssError::unavailable("not served here").into_response(),
    };
    tracing::debug!(service = ?service, method = %req.method, path = %req.path, status = resp.status().as_u16(), "request");
    if lose {
        Stats::bump(&ctx.stats.faults_injected);
        Stats::bump(&ctx.stats.responses_lost);
        conn.kill.notify_one();
        std::future::pending::<()>().await;
    }
    add_headers(&mut resp, &rl_headers);
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("activityid", v);
    }
    resp
}

fn add_headers(r: &mut Response, headers: &[(&'static str, String)]) {
    for (k, v) in headers {
        if let (Ok(name), Ok(val)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
            r.headers_mut().insert(name, val);
        }
    }
}
