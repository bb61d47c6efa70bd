//! Slack incoming webhooks: Block Kit (a header, one section per notice, dividers) with the subject as
//! the `text` fallback for notifications and clients without blocks.

use super::channel::{Channel, SendError};
use super::digest::Message;
use super::{Severity, Target};
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Slack allows 50 blocks per message; each notice takes two.
const MAX_ITEMS: usize = 20;
/// Slack's limit for a section's text.
const MAX_SECTION: usize = 3000;

#[derive(Debug)]
pub struct SlackChannel {
    client: reqwest::Client,
    url: SecretString,
}

impl SlackChannel {
    pub fn new(client: reqwest::Client, url: SecretString) -> Self {
        Self { client, url }
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max { s } else { s.chars().take(max - 1).chain(std::iter::once('…')).collect() }
}

/// The webhook payload for `m`.
pub fn payload(m: &Message) -> Value {
    let mut blocks =
        vec![json!({ "type": "header", "text": { "type": "plain_text", "text": cut(m.subject.clone(), 150) } })];
    if m.items.is_empty() {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(format!("```{}```", esc(&m.text)), MAX_SECTION) } }));
    }
    for item in m.items.iter().take(MAX_ITEMS) {
        let icon = match item.severity {
            Severity::Critical => ":rotating_light:",
            Severity::Warning => ":warning:",
            Severity::Info => ":white_check_mark:",
        };
        let mut text = format!("{icon} *{}*\n", esc(&item.title));
        for (k, v) in &item.facts {
            text.push_str(&format!("• {}: {}\n", esc(k), esc(v)));
        }
        if let Some(a) = &item.action {
            text.push_str(&format!("*What to do:* {}", esc(a)));
        }
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(text, MAX_SECTION) } }));
        blocks.push(json!({ "type": "divider" }));
    }
    if m.items.len() > MAX_ITEMS {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("… and {} more; see the run summary.", m.items.len() - MAX_ITEMS) }] }));
    }
    json!({ "text": m.subject, "blocks": blocks })
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, _to: &Target, message: &Message) -> Result<(), SendError> {
        super::http::post_json(&self.client, "slack", &self.url, &payload(message)).await
    }
}
