//! The handler's replies to the host.
//!
//! A handled invocation gets **2xx, `Content-Type: application/json`, a non-empty**
//! `{"Outputs":{…},"Logs":[…],"ReturnValue":…}` (an empty 2xx body would hang the invocation until
//! `functionTimeout`). The HTTP function's response goes in `Outputs.res` as
//! `{statusCode, headers (string values), body (string)}`. A request the handler cannot accept gets a
//! non-2xx [`ErrorReply`] naming what was wrong; the host marks that invocation failed.

use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The body of a 2xx reply.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

/// `Outputs.res` of an HTTP-triggered function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpOutput {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpOutput {
    /// A JSON response (the body is serialized to a string, as the host writes strings as-is).
    pub fn json(status_code: u16, body: &impl Serialize) -> Self {
        let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
        let mut headers = BTreeMap::new();
        headers.insert("Content-Type".to_owned(), "application/json; charset=utf-8".to_owned());
        headers.insert("Cache-Control".to_owned(), "no-store".to_owned());
        headers.insert("X-Content-Type-Options".to_owned(), "nosniff".to_owned());
        Self { status_code, headers, body }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// The body of a non-2xx reply.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// A finished reply: status and JSON bytes (always non-empty, always JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn envelope(envelope: &Envelope) -> Self {
        Self::json(200, envelope)
    }

    pub fn error(status: u16, error: impl Into<String>, function: Option<&str>, invocation_id: Option<&str>) -> Self {
        let reply = ErrorReply {
            error: error.into(),
            function: function.map(str::to_owned),
            invocation_id: invocation_id.map(str::to_owned),
        };
        Self::json(status, &reply)
    }

    fn json(status: u16, body: &impl Serialize) -> Self {
        // Serializing these plain structs cannot fail; still, never send an empty body.
        let body =
            serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"response serialization failed"}"#.to_vec());
        Self { status, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_shape() {
        let mut outputs = Map::new();
        outputs.insert("res".into(), serde_json::to_value(HttpOutput::json(503, &json!({"a": 1}))).unwrap());
        let r = Reply::envelope(&Envelope { outputs, logs: vec!["x".into()], return_value: Value::Null });
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(v["Outputs"]["res"]["statusCode"], 503);
        assert_eq!(v["Outputs"]["res"]["body"], "{\"a\":1}");
        assert_eq!(v["Outputs"]["res"]["headers"]["Content-Type"], "application/json; charset=utf-8");
        assert_eq!(v["Logs"], json!(["x"]));
        assert!(v.as_object().unwrap().contains_key("ReturnValue"));
    }

    #[test]
    fn error_shape() {
        let r = Reply::error(400, "Data: is missing", Some("RotateTimer"), None);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, json!({"error": "Data: is missing", "function": "RotateTimer"}));
    }
}
