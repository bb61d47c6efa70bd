//! The Azure-names proxy: an HTTP `CONNECT` proxy on 127.0.0.1 that maps Azure's public host names to the
//! emulated services, so that Microsoft's official clients run unmodified — Azure's real URLs
//! (`https://login.microsoftonline.com/{tenant}`, `https://dev.azure.com/{org}`,
//! `https://<vault>.vault.azure.net`, and `https://api.github.com` for the GitHub consumers), only `HTTPS_PROXY` and the emulator's CA configured, every client
//! check left on (MSAL's known-authority and instance-discovery logic, the Key Vault SDK's
//! challenge-resource check).
//!
//! The proxy never reaches the network: a `CONNECT` names a host and port; for a served name on port 443
//! the proxy answers `200`, terminates TLS itself with a leaf for that name issued by the emulator's CA, and
//! serves the tunnelled requests in-process with the service's router (tagged with [`PublicHost`], so URLs
//! in responses name Azure's hosts). Every other host, every other port and every request that is not a
//! `CONNECT` (plain-http proxying) is refused with `403` and nothing is opened.

use crate::http::PublicHost;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Entra's sign-in host.
pub const ENTRA_HOST: &str = "login.microsoftonline.com";
/// The Azure DevOps hosts the emulator's DevOps listener serves (organization APIs, PAT Lifecycle and
/// Token Admin).
pub const DEVOPS_HOSTS: &[&str] = &["dev.azure.com", "vssps.dev.azure.com"];
/// The audit service's host.
pub const AUDIT_HOST: &str = "auditservice.dev.azure.com";
/// GitHub's REST API host (the emulated Actions secrets consumers).
pub const GITHUB_HOST: &str = "api.github.com";

/// The Key Vault host of a vault name.
pub fn vault_host(vault_name: &str) -> String {
    format!("{}.vault.azure.net", vault_name.to_ascii_lowercase())
}

/// Host name → the router serving it.
#[derive(Clone, Default)]
pub struct Routes {
    by_host: BTreeMap<String, Router>,
}

impl Routes {
    /// Serves `host` (lower-cased) with `router`; the router sees a [`PublicHost`] extension on every request.
    pub fn add(&mut self, host: &str, router: Router) {
        let host = host.to_ascii_lowercase();
        let tagged = router.layer(axum::Extension(PublicHost(host.clone())));
        self.by_host.insert(host, tagged);
    }

    /// The served host names, sorted.
    pub fn hosts(&self) -> Vec<String> {
        self.by_host.keys().cloned().collect()
    }

    fn get(&self, host: &str) -> Option<Router> {
        self.by_host.get(&host.to_ascii_lowercase()).cloned()
    }
}

/// Accepts proxy connections on `listener` until shutdown. `tls` presents a leaf for every host of
/// `routes` (see [`crate::tls::EmulatorTls::server_config_for`]).
pub fn spawn(
    listener: TcpListener,
    routes: Routes,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let routes = Arc::new(routes);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (routes, acceptor, shutdown) = (routes.clone(), acceptor.clone(), shutdown.clone());
                        tokio::spawn(serve_client(stream, peer, routes, acceptor, shutdown));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
    })
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Where a `CONNECT` may go: a served host on port 443, or why not.
fn admit(routes: &Routes, req: &Request<Incoming>) -> Result<(String, Router), String> {
    if req.method() != Method::CONNECT {
        return Err(format!(
            "patrol-emulator's proxy only tunnels HTTPS (CONNECT) to emulated Azure hosts; refused {} {}",
            req.method(),
            req.uri()
        ));
    }
    let Some(authority) = req.uri().authority() else {
        return Err("CONNECT needs host:port".into());
    };
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    match routes.get(&host) {
        Some(router) if port == 443 => Ok((host, router)),
        Some(_) => Err(format!("{host} is served on port 443 only, not {port}")),
        None => Err(format!(
            "{host} is not an Azure host patrol-emulator emulates; the proxy never reaches the network (served: {})",
            routes.hosts().join(", ")
        )),
    }
}

async fn serve_client(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    routes: Arc<Routes>,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (routes, acceptor, shutdown) = (routes.clone(), acceptor.clone(), shutdown.clone());
        async move {
            let (host, router) = match admit(&routes, &req) {
                Ok(x) => x,
                Err(why) => {
                    tracing::info!(%peer, reason = %why, "proxy refused a request");
                    return Ok::<_, std::convert::Infallible>(plain(StatusCode::FORBIDDEN, why));
                }
            };
            tracing::debug!(%peer, %host, "proxy tunnel");
            tokio::spawn(async move {
                let upgraded = match hyper::upgrade::on(req).await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::debug!(error = %e, %host, "proxy tunnel upgrade failed");
                        return;
                    }
                };
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(TokioIo::new(upgraded)));
                match handshake.await {
                    Ok(Ok(tls)) => crate::serve::serve_connection(tls, peer, router, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, %host, "TLS handshake in the proxy tunnel failed"),
                    Err(_) => tracing::debug!(%host, "TLS handshake in the proxy tunnel timed out"),
                }
            });
            Ok(Response::new(Body::empty()))
        }
    });
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await
    {
        tracing::debug!(error = %e, %peer, "proxy connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_hosts_are_lower_case_azure_names() {
        assert_eq!(vault_host("Patrol-Emu"), "patrol-emu.vault.azure.net");
    }
}
