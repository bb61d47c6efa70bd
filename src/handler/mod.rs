//! The Azure Functions custom-handler protocol: the axum server the Functions host starts and calls.
//!
//! Owns: binding `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`, the readiness answer on `GET /`, the lenient
//! typed payloads of `RotateTimer`, `RotateHttp` and `EventGridSecretChanged`, the
//! `{"Outputs","Logs","ReturnValue"}` envelope, body limits, per-invocation spans and graceful shutdown.
//! It parses and validates; the work itself is delegated to a [`Functions`] implementation (the rotation
//! engine; [`NotConfigured`] until one is plugged in).
//!
//! - [`server`] — the axum app, binding, readiness, limits, shutdown.
//! - [`invoke`] — one invocation from request bytes to reply bytes (in-process; tests and benchmarks).
//! - [`payload`] — the outer request (`Data`, `Metadata.sys`, `RetryContext`).
//! - [`timer`], [`http`], [`eventgrid`] — each function's input.
//! - [`lenient`] — the readers that accept the host's quirks.
//! - [`envelope`] — the replies.
//! - [`functions`] — the [`Functions`] trait and its typed inputs and outcomes.

pub mod envelope;
pub mod eventgrid;
pub mod functions;
pub mod http;
pub mod invoke;
pub mod lenient;
pub mod payload;
pub mod server;
pub mod timer;

pub use functions::{
    FUNCTIONS, Failure, FailureKind, FunctionName, FunctionSpec, Functions, Invocation, NotConfigured, Outcome, Report,
    Status,
};
pub use invoke::Handler;
