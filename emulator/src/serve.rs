//! Serving HTTP/1.1 connections with hyper: an accept loop per listener, a [`ConnInfo`] in every
//! request (peer address, and the handle that lets a fault drop the connection without a response),
//! and shutdown through a watch channel. TLS listeners (Key Vault) reuse [`serve_connection`] with their
//! own accept loop.

use crate::http::ConnInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// Serves one connection until it closes, a handler asks to drop it, or shutdown.
pub async fn serve_connection<I>(io: I, peer: SocketAddr, app: Router, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let info = ConnInfo { peer, kill: kill.clone() };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        }
        _ = kill.notified() => tracing::debug!(%peer, "connection dropped without a response (fault)"),
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
    }
}

/// Accepts TLS connections on `listener` until shutdown (the Entra listener).
pub fn spawn_tls_listener(
    listener: TcpListener,
    tls: crate::tls::EmulatorTls,
    app: Router,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
    tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
                            match handshake.await {
                                Ok(Ok(tls)) => serve_connection(tls, peer, app, shutdown).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
    })
}

/// Accepts connections on `listener` until shutdown.
pub fn spawn_listener(
    listener: TcpListener,
    app: Router,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_connection(stream, peer, app.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            }
        }
    })
}
