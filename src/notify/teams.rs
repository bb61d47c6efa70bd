//! Microsoft Teams through a Workflows ("Post to a channel when a webhook request is received") webhook:
//! the message as an Adaptive Card (schema 1.4) in a `message` envelope, which is what the Workflows
//! trigger expects.

use super::channel::{Channel, SendError};
use super::digest::Message;
use super::{Severity, Target};
use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Cards carry at most this many notices (Teams limits a card to about 28 KB); the rest are counted.
const MAX_ITEMS: usize = 20;

#[derive(Debug)]
pub struct TeamsChannel {
    client: reqwest::Client,
    url: SecretString,
}

impl TeamsChannel {
    pub fn new(client: reqwest::Client, url: SecretString) -> Self {
        Self { client, url }
    }
}

fn color(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Good",
    }
}

/// The Workflows payload for `m`.
pub fn payload(m: &Message) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": m.subject, "weight": "Bolder", "size": "Medium", "wrap": true,
        "color": color(m.severity),
    })];
    if m.items.is_empty() {
        body.push(json!({ "type": "TextBlock", "text": m.text, "wrap": true, "fontType": "Monospace" }));
    }
    for item in m.items.iter().take(MAX_ITEMS) {
        let mut inner = vec![
            json!({ "type": "TextBlock", "text": item.title, "weight": "Bolder", "wrap": true, "color": color(item.severity) }),
            json!({ "type": "FactSet", "facts": item.facts.iter().map(|(k, v)| json!({ "title": k, "value": v })).collect::<Vec<_>>() }),
        ];
        if let Some(a) = &item.action {
            inner.push(json!({ "type": "TextBlock", "text": format!("**What to do:** {a}"), "wrap": true }));
        }
        body.push(json!({ "type": "Container", "separator": true, "spacing": "Medium", "items": inner }));
    }
    if m.items.len() > MAX_ITEMS {
        body.push(json!({ "type": "TextBlock", "text": format!("… and {} more; see the run summary.", m.items.len() - MAX_ITEMS), "wrap": true }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": { "width": "Full" },
                "body": body,
            }
        }]
    })
}

#[async_trait]
impl Channel for TeamsChannel {
    fn name(&self) -> &'static str {
        "teams"
    }

    async fn send(&self, _to: &Target, message: &Message) -> Result<(), SendError> {
        super::http::post_json(&self.client, "teams", &self.url, &payload(message)).await
    }
}
