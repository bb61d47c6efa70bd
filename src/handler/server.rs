//! The HTTP server the Functions host starts and calls: binds `127.0.0.1:<port>` (IPv4 — the host calls
//! `http://127.0.0.1:{port}`), answers `GET /` at once (the host polls it for readiness), routes
//! `POST /{FunctionName}` to [`Handler::invoke`], refuses bodies over the limit with 413, answers unknown
//! paths with 404 and other methods with 405 — always with a JSON body — and shuts down gracefully on
//! SIGTERM/SIGINT, letting in-flight invocations finish.

use super::envelope::Reply;
use super::functions::FunctionName;
use super::invoke::Handler;
use super::lenient;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The header carrying the host's invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

#[derive(Debug, Clone)]
struct AppState {
    handler: Handler,
    max_body_bytes: usize,
}

/// The axum app: readiness, the three functions, JSON 404/405/413.
pub fn router(handler: Handler, max_body_bytes: usize) -> Router {
    let state = Arc::new(AppState { handler, max_body_bytes });
    Router::new().route("/", any(ready)).route("/{function}", any(invoke)).fallback(not_found).with_state(state)
}

/// Binds `127.0.0.1:port` (port 0 picks a free one).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Serves until `shutdown` resolves, then stops accepting and waits for in-flight invocations.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Request/response on loopback: send replies at once rather than waiting to coalesce segments.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Resolves on SIGTERM (what the host and container runtimes send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; finishing in-flight invocations"),
        () = term => tracing::info!("SIGTERM received; finishing in-flight invocations"),
    }
}

async fn ready() -> Response {
    json(StatusCode::OK, br#"{"status":"ready"}"#.to_vec())
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let message = format!(
        "no such function: {method} {}; this handler serves {}",
        lenient::shown(uri.path()),
        FunctionName::served()
    );
    reply(Reply::error(404, message, None, None))
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(function) = FunctionName::from_path(&segment) else {
        return not_found(method, format!("/{segment}").parse().unwrap_or_default()).await;
    };
    if method != Method::POST {
        let mut r = reply(Reply::error(
            405,
            format!("{function} is invoked with POST (the host's JSON protocol), not {method}"),
            Some(function.as_str()),
            None,
        ));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let invocation_id = headers.get(INVOCATION_ID_HEADER).and_then(|v| v.to_str().ok());
    let body = match read_limited(&headers, body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(problem) => {
            let (id, problem_with_id) = super::invoke::invocation_id_or_new(invocation_id);
            let id = problem_with_id.is_none().then_some(id);
            tracing::warn!(
                function = function.as_str(),
                invocation_id = id.as_deref(),
                "refused an invocation: {}",
                problem.1
            );
            return reply(Reply::error(problem.0, problem.1, Some(function.as_str()), id.as_deref()));
        }
    };
    reply(state.handler.invoke(function, invocation_id, &body).await)
}

/// Reads the body (chunked or not) up to `max` bytes.
async fn read_limited(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, (u16, String)> {
    let too_large =
        || (413, format!("the invocation body is larger than the {max}-byte limit (PATROL_MAX_BODY_BYTES)"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| (400, format!("could not read the invocation body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, r.body)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"))], body)
        .into_response()
}
