//! `RotateHttp`'s input: the host's `HttpRequest` object (`Data.req`) turned into a [`RotateRequest`].
//!
//! `GET` plans (a dry run), `POST` runs. The secret comes from the route (`rotate/{secret?}` →
//! `Params.secret`), the query (`?secret=`) or a JSON body (`{"secret":…,"force":…}`); `force` from the
//! query or the body. The host's quirks are accepted: `Query` as an object or (old hosts) a JSON string,
//! `Headers` values as arrays or strings, `Body` absent, a string, or base64 for binary content types.
//!
//! Two kinds of error: a [`PayloadError`] when the host's request is structurally wrong (the invocation
//! fails), and a [`BadRequest`] when the *caller's* input is wrong (they get a 4xx in `Outputs.res`).
//! The function key (`code`, `x-functions-key`) is never read, kept or echoed.

use super::lenient::{self, PayloadError};
use super::payload::Request;
use crate::domain::SecretName;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

/// The binding name in `RotateHttp/function.json`.
pub const BINDING: &str = "req";
/// The route parameter in `rotate/{secret?}`.
pub const ROUTE_PARAM: &str = "secret";
/// Query and body fields a caller may send (plus the host's `code`, which is ignored).
const FIELDS: [&str; 2] = ["secret", "force"];

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotateMode {
    /// `GET`: compute and show the plan; change nothing.
    Plan,
    /// `POST`: apply the plan.
    Run,
}

/// A validated manual rotation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateRequest {
    pub mode: RotateMode,
    /// One managed secret, or `None` for all of them.
    pub secret: Option<SecretName>,
    /// Rotate even when the current PAT is not yet due.
    pub force: bool,
}

/// The caller's input was wrong: the HTTP status and a message for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub status: u16,
    pub message: String,
    /// `Allow` header for 405.
    pub allow: Option<&'static str>,
}

impl BadRequest {
    fn new(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into(), allow: None }
    }
}

impl RotateRequest {
    pub fn from_request(req: &Request) -> Result<Result<Self, BadRequest>, PayloadError> {
        let (path, http) = req.binding_object(BINDING)?;
        let method = lenient::get(&http, "Method")
            .ok_or_else(|| PayloadError::new(format!("{path}.Method"), "is missing"))
            .and_then(|v| lenient::string(v, &format!("{path}.Method")))?;
        let query = match lenient::get(&http, "Query") {
            None => Map::new(),
            Some(v) => lenient::object(v, &format!("{path}.Query"))?.into_owned(),
        };
        let params = match lenient::get(&http, "Params") {
            Some(v) => lenient::object(v, &format!("{path}.Params"))?.into_owned(),
            // Hosts copy route values into Metadata too; use that when Data.req carries no Params.
            None => lenient::get(&req.metadata, ROUTE_PARAM)
                .filter(|v| v.is_string())
                .map(|v| Map::from_iter([(ROUTE_PARAM.to_owned(), v.clone())]))
                .unwrap_or_default(),
        };
        let content_type = match lenient::get(&http, "Headers") {
            None => None,
            Some(v) => content_type(&*lenient::object(v, &format!("{path}.Headers"))?, &format!("{path}.Headers"))?,
        };
        let body = lenient::get(&http, "Body");
        Ok(Self::validate(&method, &query, &params, content_type.as_deref(), body))
    }

    fn validate(
        method: &str,
        query: &Map<String, Value>,
        params: &Map<String, Value>,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Self, BadRequest> {
        let mode = match method.trim().to_ascii_uppercase().as_str() {
            "GET" => RotateMode::Plan,
            "POST" => RotateMode::Run,
            other => {
                return Err(BadRequest {
                    status: 405,
                    message: format!(
                        "method {} is not supported: GET shows the rotation plan, POST runs it",
                        lenient::shown(other)
                    ),
                    allow: Some("GET, POST"),
                });
            }
        };
        let body = decode_body(body, content_type)?;

        for key in query.keys() {
            let k = key.trim();
            if !k.eq_ignore_ascii_case("code") && !FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                return Err(BadRequest::new(format!(
                    "unknown query parameter {}; allowed: secret, force",
                    lenient::shown(k)
                )));
            }
        }
        for key in body.keys() {
            if !FIELDS.iter().any(|f| f.eq_ignore_ascii_case(key.trim())) {
                return Err(BadRequest::new(format!(
                    "unknown field {} in the body; allowed: secret, force",
                    lenient::shown(key)
                )));
            }
        }

        let mut secret: Option<(SecretName, &str)> = None;
        for (source, map) in [("route", params), ("query", query), ("body", &body)] {
            let Some(v) = lenient::get(map, ROUTE_PARAM) else { continue };
            let raw = text(v, source, "secret")?;
            if raw.trim().is_empty() {
                continue;
            }
            let name = SecretName::parse(raw.trim()).map_err(|e| BadRequest::new(format!("{source}: {e}")))?;
            match &secret {
                Some((earlier, from)) if *earlier != name => {
                    return Err(BadRequest::new(format!(
                        "the {from} names secret {earlier:?} but the {source} names {name:?}; name one",
                        earlier = earlier.as_str(),
                        name = name.as_str()
                    )));
                }
                Some(_) => {}
                None => secret = Some((name, source)),
            }
        }

        let mut force: Option<(bool, &str)> = None;
        for (source, map) in [("query", query), ("body", &body)] {
            let Some(v) = lenient::get(map, "force") else { continue };
            let v = match v {
                Value::Array(items) if items.len() == 1 => &items[0],
                Value::Array(_) => return Err(BadRequest::new(format!("{source}: force is given more than once"))),
                v => v,
            };
            let f = lenient::flag(v, &format!("{source}: force")).map_err(|e| BadRequest::new(e.to_string()))?;
            match force {
                Some((earlier, from)) if earlier != f => {
                    return Err(BadRequest::new(format!(
                        "the {from} says force={earlier} but the {source} says force={f}; say it once"
                    )));
                }
                Some(_) => {}
                None => force = Some((f, source)),
            }
        }

        Ok(Self { mode, secret: secret.map(|(n, _)| n), force: force.is_some_and(|(f, _)| f) })
    }
}

/// What a `RotateHttp` request is: a manual rotation (or plan), or a webhook consumer's signed
/// acknowledgement (`POST` with a body `{"ack": {...}}`; see [`AckRequest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpInput {
    Rotate(RotateRequest),
    Ack(AckRequest),
}

impl HttpInput {
    /// Reads `Data.req`: a `POST` whose JSON body has a top-level `ack` is an acknowledgement, anything
    /// else a rotation request ([`RotateRequest::from_request`]).
    pub fn from_request(req: &Request) -> Result<Result<Self, BadRequest>, PayloadError> {
        let (path, http) = req.binding_object(BINDING)?;
        let method =
            lenient::get(&http, "Method").map(|v| lenient::string(v, &format!("{path}.Method"))).transpose()?;
        let is_post = method.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case("POST"));
        let headers = match lenient::get(&http, "Headers") {
            None => Map::new(),
            Some(v) => lenient::object(v, &format!("{path}.Headers"))?.into_owned(),
        };
        let content_type = content_type(&headers, &format!("{path}.Headers"))?;
        let body = lenient::get(&http, "Body");
        let is_ack = is_post
            && decode_body(body, content_type.as_deref())
                .is_ok_and(|m| m.keys().any(|k| k.trim().eq_ignore_ascii_case(ACK_FIELD)));
        if !is_ack {
            return Ok(RotateRequest::from_request(req)?.map(Self::Rotate));
        }
        let query = match lenient::get(&http, "Query") {
            None => Map::new(),
            Some(v) => lenient::object(v, &format!("{path}.Query"))?.into_owned(),
        };
        let params = match lenient::get(&http, "Params") {
            Some(v) => lenient::object(v, &format!("{path}.Params"))?.into_owned(),
            None => Map::new(),
        };
        Ok(AckRequest::validate(&query, &params, &headers, content_type.as_deref(), body).map(Self::Ack))
    }
}

/// The headers of a signed acknowledgement (the same as patrol's webhook notifications send).
pub const ACK_TIMESTAMP_HEADER: &str = "X-Patrol-Timestamp";
pub const ACK_SIGNATURE_HEADER: &str = "X-Patrol-Signature";

/// The body field that makes a `POST` an acknowledgement.
pub const ACK_FIELD: &str = "ack";

/// A webhook consumer's acknowledgement that it reloaded a secret's new version, as received: the
/// signed bytes exactly as they arrived, the timestamp and signature headers (never logged, never
/// serialized), and what the body says. Checked by `consumers::ack::receive`.
///
/// Wire format (what a consumer sends to `POST /api/rotate/{secret}`):
/// `X-Patrol-Timestamp: <unix seconds>`, `X-Patrol-Signature: sha256=<hex HMAC-SHA256(key,
/// "{timestamp}.{body}")>` with the consumer's webhook signing key, and the JSON body
/// `{"ack": {"secret": "<secret>", "version": "<vault version>", "consumer": "<consumer id>"}}`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRequest {
    pub secret: SecretName,
    pub version: String,
    pub consumer: String,
    /// `X-Patrol-Timestamp`, unix seconds.
    pub timestamp: i64,
    /// `X-Patrol-Signature` as sent (`sha256=<hex>`). Never serialized or printed.
    #[serde(skip)]
    pub signature: String,
    /// The request body exactly as the host passed it on (the signed bytes). Never serialized or printed.
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl std::fmt::Debug for AckRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckRequest")
            .field("secret", &self.secret)
            .field("version", &self.version)
            .field("consumer", &self.consumer)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Fields of the `ack` object.
const ACK_FIELDS: [&str; 3] = ["secret", "version", "consumer"];

impl AckRequest {
    fn validate(
        query: &Map<String, Value>,
        params: &Map<String, Value>,
        headers: &Map<String, Value>,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Self, BadRequest> {
        const SHAPE: &str = "an acknowledgement is {\"ack\": {\"secret\": …, \"version\": …, \"consumer\": …}}";
        for key in query.keys() {
            let k = key.trim();
            if !k.eq_ignore_ascii_case("code") && !k.eq_ignore_ascii_case(ROUTE_PARAM) {
                return Err(BadRequest::new(format!(
                    "unknown query parameter {} with an acknowledgement; allowed: secret",
                    lenient::shown(k)
                )));
            }
        }
        let raw = signed_bytes(body, content_type)?;
        let map = decode_body(body, content_type)?;
        if let Some(k) = map.keys().find(|k| !k.trim().eq_ignore_ascii_case(ACK_FIELD)) {
            return Err(BadRequest::new(format!("unknown field {} beside ack; {SHAPE}", lenient::shown(k))));
        }
        let ack = match lenient::get(&map, ACK_FIELD) {
            Some(Value::Object(a)) => a,
            _ => return Err(BadRequest::new(format!("ack must be an object; {SHAPE}"))),
        };
        if let Some(k) = ack.keys().find(|k| !ACK_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k.trim()))) {
            return Err(BadRequest::new(format!(
                "unknown field ack.{} ; allowed: secret, version, consumer",
                lenient::shown(k)
            )));
        }
        let field = |name: &str| -> Result<String, BadRequest> {
            match lenient::get(ack, name) {
                Some(Value::String(s))
                    if !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) =>
                {
                    Ok(s.trim().to_owned())
                }
                Some(_) => {
                    Err(BadRequest::new(format!("ack.{name} must be a non-empty string (at most 256 characters)")))
                }
                None => Err(BadRequest::new(format!("ack.{name} is missing; {SHAPE}"))),
            }
        };
        let secret = SecretName::parse(&field("secret")?).map_err(|e| BadRequest::new(format!("ack.secret: {e}")))?;
        for (source, map) in [("route", params), ("query", query)] {
            let Some(v) = lenient::get(map, ROUTE_PARAM) else { continue };
            let named = text(v, source, "secret")?;
            if !named.trim().is_empty() && named.trim() != secret.as_str() {
                return Err(BadRequest::new(format!(
                    "the {source} names secret {:?} but ack.secret is {:?}; they must agree",
                    named.trim(),
                    secret.as_str()
                )));
            }
        }
        let version = field("version")?;
        let consumer = field("consumer")?;
        let header = |name: &str| -> Result<String, BadRequest> {
            let v = lenient::get(headers, name).ok_or_else(|| {
                BadRequest::new(format!(
                    "the {name} header is missing; acknowledgements are signed (see docs/policy.md)"
                ))
            })?;
            let s = match v {
                Value::Array(items) if items.len() == 1 => items[0].as_str().map(str::to_owned),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            s.map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| BadRequest::new(format!("the {name} header must be given once")))
        };
        let timestamp = header(ACK_TIMESTAMP_HEADER)?;
        let timestamp = timestamp
            .parse::<i64>()
            .map_err(|_| BadRequest::new(format!("the {} header must be whole unix seconds", ACK_TIMESTAMP_HEADER)))?;
        let signature = header(ACK_SIGNATURE_HEADER)?;
        Ok(Self { secret, version, consumer, timestamp, signature, body: raw })
    }
}

/// The request body's bytes as the caller sent them: the host passes a text body on as a string and a
/// binary one (`application/octet-stream`, `multipart/*`) as base64 of its bytes. A body that reached
/// patrol as a JSON object was re-encoded on the way and cannot be checked against a signature.
fn signed_bytes(body: Option<&Value>, content_type: Option<&str>) -> Result<Vec<u8>, BadRequest> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let binary = ct.starts_with("application/octet-stream") || ct.starts_with("multipart/");
    match body {
        Some(Value::String(s)) if binary => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| BadRequest::new("the body of a binary content type is not base64")),
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        _ => Err(BadRequest::new(
            "the acknowledgement's body did not arrive as the bytes that were signed; send it as application/json",
        )),
    }
}

/// A caller-supplied value as text (arrays of one, as repeated query keys may arrive, are unwrapped).
fn text(v: &Value, source: &str, field: &str) -> Result<String, BadRequest> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) if items.len() == 1 => text(&items[0], source, field),
        Value::Array(_) => Err(BadRequest::new(format!("{source}: {field} is given more than once"))),
        other => Err(BadRequest::new(format!("{source}: {field} must be a string, got {}", lenient::kind(other)))),
    }
}

/// `Content-Type` from `Headers`, whose values are arrays of strings (`Data.req`) or strings (`Metadata`).
fn content_type(headers: &Map<String, Value>, path: &str) -> Result<Option<String>, PayloadError> {
    let Some(v) = lenient::get(headers, "Content-Type") else { return Ok(None) };
    let p = format!("{path}.Content-Type");
    match v {
        Value::Array(items) => items.first().map(|i| lenient::string(i, &p)).transpose(),
        other => lenient::string(other, &p).map(Some),
    }
}

/// The body as a JSON object: absent or empty → `{}`; a JSON object; a string holding one; or base64 of one
/// (the host base64-encodes `application/octet-stream` and `multipart/*` bodies).
fn decode_body(body: Option<&Value>, content_type: Option<&str>) -> Result<Map<String, Value>, BadRequest> {
    const WANT: &str = "the body must be empty or a JSON object such as {\"force\":true}";
    let text = match body {
        None => return Ok(Map::new()),
        Some(Value::Object(m)) => return Ok(m.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(BadRequest::new(format!("{WANT}, got {}", lenient::kind(other)))),
    };
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let binary = ct.starts_with("application/octet-stream") || ct.starts_with("multipart/");
    let as_json = |bytes: &[u8]| match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Some(Ok(m)),
        Ok(other) => Some(Err(BadRequest::new(format!("{WANT}, got {}", lenient::kind(&other))))),
        Err(_) => None,
    };
    if !binary && let Some(r) = as_json(text.as_bytes()) {
        return r;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok();
    match decoded.as_deref().map(|b| b.strip_prefix("\u{feff}".as_bytes()).unwrap_or(b)) {
        Some(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Some(bytes) => as_json(bytes).unwrap_or_else(|| Err(BadRequest::new(format!("{WANT}; it is not JSON")))),
        None => Err(BadRequest::new(format!("{WANT}; it is not JSON"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rotate(req: Value) -> Result<Result<RotateRequest, BadRequest>, PayloadError> {
        let body = json!({"Data": {"req": req}, "Metadata": {"sys": {"MethodName": "RotateHttp"}}});
        RotateRequest::from_request(&Request::parse(body.to_string().as_bytes()).unwrap())
    }

    fn ok(req: Value) -> RotateRequest {
        rotate(req).unwrap().unwrap()
    }

    fn bad(req: Value) -> BadRequest {
        rotate(req).unwrap().unwrap_err()
    }

    fn name(s: &str) -> Option<SecretName> {
        Some(SecretName::parse(s).unwrap())
    }

    #[test]
    fn the_research_note_sample() {
        let r = ok(json!({
            "Url": "https://myapp.azurewebsites.net/api/RotateHttp?secret=db-password&code=k3y",
            "Method": "POST",
            "Query": { "secret": "db-password", "code": "k3y" },
            "Headers": { "Content-Type": ["application/json"], "x-functions-key": ["k3y"], "Host": ["myapp.azurewebsites.net"] },
            "Params": {},
            "Identities": [ { "AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Claims": [] } ],
            "Body": "{\"force\":true}"
        }));
        assert_eq!(r, RotateRequest { mode: RotateMode::Run, secret: name("db-password"), force: true });
    }

    #[test]
    fn get_plans_everything_by_default() {
        assert_eq!(ok(json!({"Method": "get"})), RotateRequest { mode: RotateMode::Plan, secret: None, force: false });
    }

    #[test]
    fn route_param_and_old_string_query() {
        let r = ok(json!({"Method": "POST", "Params": {"secret": "ci-build"}, "Query": "{\"force\":\"1\"}"}));
        assert_eq!(r, RotateRequest { mode: RotateMode::Run, secret: name("ci-build"), force: true });
        let r = ok(json!({"Method": "POST", "Params": {"secret": ""}, "Query": "{}"}));
        assert_eq!(r.secret, None, "an absent optional route value");
    }

    #[test]
    fn route_value_from_metadata_when_params_are_absent() {
        let body = json!({"Data": {"req": {"Method": "POST"}}, "Metadata": {"secret": "from-route", "sys": {}}});
        let r = RotateRequest::from_request(&Request::parse(body.to_string().as_bytes()).unwrap()).unwrap().unwrap();
        assert_eq!(r.secret, name("from-route"));
    }

    #[test]
    fn bodies_absent_string_object_or_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"{\"secret\":\"x1\",\"force\":false}");
        let r = ok(json!({"Method": "POST", "Headers": {"Content-Type": ["application/octet-stream"]}, "Body": b64}));
        assert_eq!((r.secret, r.force), (name("x1"), false));
        let r = ok(json!({"Method": "POST", "Headers": {"Content-Type": "text/plain"}, "Body": b64}));
        assert_eq!(r.secret, name("x1"), "base64 without a binary content type is still understood");
        let r = ok(json!({"Method": "POST", "Body": {"secret": "x2"}}));
        assert_eq!(r.secret, name("x2"));
        let r = ok(json!({"Method": "POST", "Body": ""}));
        assert_eq!(r.secret, None);
        let r = ok(json!({"Method": "POST", "Body": null}));
        assert_eq!(r.secret, None);
    }

    #[test]
    fn caller_mistakes_are_4xx_with_a_reason() {
        let e = bad(json!({"Method": "DELETE"}));
        assert_eq!((e.status, e.allow), (405, Some("GET, POST")));
        for (req, words) in [
            (json!({"Method": "POST", "Params": {"secret": "no/slashes"}}), "'/'"),
            (json!({"Method": "POST", "Query": {"force": "perhaps"}}), "\"perhaps\""),
            (json!({"Method": "POST", "Query": {"forse": "1"}}), "unknown query parameter \"forse\""),
            (json!({"Method": "POST", "Body": "{\"forse\":true}"}), "unknown field \"forse\""),
            (json!({"Method": "POST", "Body": "force=true"}), "not JSON"),
            (json!({"Method": "POST", "Body": "[1]"}), "an array"),
            (json!({"Method": "POST", "Body": 7}), "a number"),
            (json!({"Method": "POST", "Params": {"secret": "a"}, "Query": {"secret": "b"}}), "name one"),
            (json!({"Method": "POST", "Query": {"force": "true"}, "Body": "{\"force\":false}"}), "say it once"),
            (json!({"Method": "POST", "Body": "{\"secret\":5}"}), "must be a string"),
            (json!({"Method": "POST", "Query": {"force": ["1", "0"]}}), "more than once"),
        ] {
            let e = bad(req.clone());
            assert_eq!(e.status, 400, "{req}");
            assert!(e.message.contains(words), "{req}: {}", e.message);
        }
    }

    #[test]
    fn agreeing_sources_are_fine_and_code_is_ignored() {
        let r = ok(
            json!({"Method": "POST", "Params": {"secret": "a"}, "Query": {"secret": "a", "code": "k", "Force": ""}}),
        );
        assert_eq!((r.secret, r.force), (name("a"), true));
    }

    #[test]
    fn host_structure_errors_fail_the_invocation() {
        assert_eq!(rotate(json!({"Query": {}})).unwrap_err().path, "Data.req.Method");
        assert_eq!(rotate(json!({"Method": "GET", "Query": [1]})).unwrap_err().path, "Data.req.Query");
        assert_eq!(rotate(json!({"Method": "GET", "Headers": 1})).unwrap_err().path, "Data.req.Headers");
        assert_eq!(rotate(json!({"Method": "GET", "Params": "x"})).unwrap_err().path, "Data.req.Params");
    }

    #[test]
    fn the_function_key_is_never_echoed() {
        let key = "sEcReTfUnCtIoNkEy0123456789";
        for req in [
            json!({"Method": "PUT", "Query": {"code": key}, "Headers": {"x-functions-key": [key]}}),
            json!({"Method": "POST", "Query": {"code": key, "x": "y"}}),
            json!({"Method": "POST", "Query": {"code": key}, "Body": "{\"nope\":1}"}),
        ] {
            let e = bad(req);
            assert!(!e.message.contains(key), "{}", e.message);
        }
    }

    proptest! {
        #[test]
        fn headers_and_query_keys_in_any_case(upper in any::<bool>(), array in any::<bool>(), secret in "[a-z0-9-]{1,20}") {
            let ct = if upper { "CONTENT-TYPE" } else { "content-type" };
            let ct_value = if array { json!(["application/octet-stream"]) } else { json!("application/octet-stream") };
            let q = if upper { "SECRET" } else { "Secret" };
            let body = base64::engine::general_purpose::STANDARD.encode(b"{\"FORCE\":true}");
            let r = ok(json!({"METHOD": "post", "query": {q: secret.clone()}, "HEADERS": {ct: ct_value}, "body": body}));
            prop_assert_eq!(r, RotateRequest { mode: RotateMode::Run, secret: name(&secret), force: true });
        }

        #[test]
        fn any_body_text_is_handled_without_panicking(s in ".{0,64}") {
            let _ = rotate(json!({"Method": "POST", "Body": s}));
        }
    }

    fn input(req: Value) -> Result<HttpInput, BadRequest> {
        let body = json!({"Data": {"req": req}, "Metadata": {"sys": {"MethodName": "RotateHttp"}}});
        HttpInput::from_request(&Request::parse(body.to_string().as_bytes()).unwrap()).unwrap()
    }

    const ACK_BODY: &str = r#"{"ack":{"secret":"feed-pat","version":"0a1b","consumer":"webhook:hook-url"}}"#;

    fn ack_req(headers: Value, body: Value) -> Value {
        json!({"Method": "POST", "Params": {"secret": "feed-pat"}, "Query": {"code": "k3y"}, "Headers": headers, "Body": body})
    }

    #[test]
    fn an_acknowledgement_keeps_the_signed_bytes_and_hides_the_signature() {
        let h = json!({"Content-Type": ["application/json"], "X-Patrol-Timestamp": ["1700000000"], "x-patrol-signature": ["sha256=abcd"]});
        let HttpInput::Ack(a) = input(ack_req(h.clone(), json!(ACK_BODY))).unwrap() else { panic!("an ack") };
        assert_eq!(
            (a.secret.as_str(), a.version.as_str(), a.consumer.as_str()),
            ("feed-pat", "0a1b", "webhook:hook-url")
        );
        assert_eq!((a.timestamp, a.signature.as_str()), (1_700_000_000, "sha256=abcd"));
        assert_eq!(a.body, ACK_BODY.as_bytes(), "the exact bytes the host passed on");
        let shown = format!("{a:?}{}", serde_json::to_string(&a).unwrap());
        assert!(!shown.contains("abcd") && !shown.contains("hook-url\\\"}}"), "{shown}");
        // Binary content types arrive base64-encoded: the decoded bytes are the signed ones.
        let mut hb = h.clone();
        hb["Content-Type"] = json!(["application/octet-stream"]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(ACK_BODY);
        let HttpInput::Ack(a) = input(ack_req(hb, json!(b64))).unwrap() else { panic!("an ack") };
        assert_eq!(a.body, ACK_BODY.as_bytes());
        // A body without `ack` is still a rotation request.
        assert!(matches!(input(ack_req(h, json!("{\"force\":true}"))).unwrap(), HttpInput::Rotate(r) if r.force));
    }

    #[test]
    fn a_malformed_acknowledgement_is_400_naming_the_problem() {
        let h = json!({"X-Patrol-Timestamp": ["1700000000"], "X-Patrol-Signature": ["sha256=abcd"]});
        for (headers, body, words) in [
            (json!({"X-Patrol-Signature": ["sha256=abcd"]}), json!(ACK_BODY), "X-Patrol-Timestamp header is missing"),
            (json!({"X-Patrol-Timestamp": ["1700000000"]}), json!(ACK_BODY), "X-Patrol-Signature header is missing"),
            (json!({"X-Patrol-Timestamp": ["noon"], "X-Patrol-Signature": ["s"]}), json!(ACK_BODY), "unix seconds"),
            (h.clone(), json!(r#"{"ack":{"secret":"feed-pat","version":"0a1b"}}"#), "ack.consumer is missing"),
            (h.clone(), json!(r#"{"ack":"yes"}"#), "ack must be an object"),
            (
                h.clone(),
                json!(r#"{"ack":{"secret":"feed-pat","version":"1","consumer":"c","extra":1}}"#),
                "ack.\"extra\"",
            ),
            (h.clone(), json!(r#"{"ack":{"secret":"other","version":"1","consumer":"c"}}"#), "must agree"),
            (
                h.clone(),
                json!({"ack": {"secret": "feed-pat", "version": "1", "consumer": "c"}}),
                "bytes that were signed",
            ),
        ] {
            let e = input(ack_req(headers, body)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(words), "{} should say {words}", e.message);
            assert!(!e.message.contains("abcd"), "never echoes the signature");
        }
    }
}
