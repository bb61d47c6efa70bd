//! The Azure Functions custom-handler protocol: the axum server the Functions host starts and calls.
//!
//! Owns: binding `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`, the readiness answer on `GET /`, the lenient
//! typed payloads of `RotateTimer`, `RotateHttp` and `EventGridSecretChanged`, the
//! `{"Outputs","Logs","ReturnValue"}` envelope, body limits, per-invocation spans and graceful shutdown.
//! It parses and validates; the work itself is delegated to `crate::rotation`.
