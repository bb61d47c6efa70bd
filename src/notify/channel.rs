//! The one interface every delivery channel implements, and how a failed send is described.

use super::Target;
use super::digest::Message;
use async_trait::async_trait;
use std::time::Duration;

/// Why a send failed. `message` never contains a secret (webhook URLs, passwords): channels build it
/// from status codes and server replies, and the notifier passes it through the redactor again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Worth another attempt (timeouts, connection failures, 429, 5xx, SMTP 4xx).
    pub retryable: bool,
    /// The server asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { retryable: true, retry_after: None, message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { retryable: false, retry_after: None, message: message.into() }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A way to reach people.
#[async_trait]
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// `smtp`, `mailbox`, `teams`, `slack`, `webhook`.
    fn name(&self) -> &'static str;

    /// Sends one message meant for `to` (an email channel addresses it; a webhook posts it).
    async fn send(&self, to: &Target, message: &Message) -> Result<(), SendError>;
}
