//! The generic JSON webhook: a stable document for any receiver (an incident tool, a SIEM, a script).
//!
//! ```json
//! { "source": "patrol", "schema": 1, "target": "webhook", "subject": "…", "severity": "critical",
//!   "text": "…", "items": [{ "kind", "severity", "title", "facts": [[label, value]], "action" }],
//!   "notices": [ <the notices as structured JSON, every string redacted> ] }
//! ```

use super::Target;
use super::channel::{Channel, SendError};
use super::digest::Message;
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct WebhookChannel {
    client: reqwest::Client,
    url: SecretString,
}

impl WebhookChannel {
    pub fn new(client: reqwest::Client, url: SecretString) -> Self {
        Self { client, url }
    }
}

pub fn payload(to: &Target, m: &Message) -> Value {
    json!({
        "source": "patrol",
        "schema": 1,
        "target": to.to_string(),
        "subject": m.subject,
        "severity": m.severity,
        "text": m.text,
        "items": m.items,
        "notices": m.notices,
    })
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, to: &Target, message: &Message) -> Result<(), SendError> {
        super::http::post_json(&self.client, "webhook", &self.url, &payload(to, message)).await
    }
}
