//! The invocation request the Functions host POSTs to `/{FunctionName}`:
//! `{"Data":{<binding>:…},"Metadata":{…,"sys":{"MethodName","UtcNow","RandGuid"}}}`.
//!
//! Owns the outer shape only — finding `Data`, a binding in it, and the `sys` and `RetryContext` metadata;
//! the bindings themselves are read by `timer`, `http` and `eventgrid`.

use super::lenient::{self, PayloadError};
use serde_json::{Map, Value};
use std::borrow::Cow;
use time::OffsetDateTime;

/// A parsed invocation request.
#[derive(Debug)]
pub struct Request {
    pub data: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub sys: Sys,
    pub retry: Option<RetryContext>,
}

/// `Metadata.sys`, which the host always sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sys {
    pub method_name: Option<String>,
    /// The host's time of the invocation (the emulator's virtual time in tests).
    pub utc_now: Option<OffsetDateTime>,
    pub rand_guid: Option<String>,
}

/// `Metadata.RetryContext`, present only while a function-level retry policy retries an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryContext {
    pub retry_count: u32,
    pub max_retry_count: i64,
}

impl Request {
    /// Parses the request body. Errors name what was wrong; none echo more than a short excerpt.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(PayloadError::new("body", "is empty; expected the host's JSON {\"Data\":…,\"Metadata\":…}"));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PayloadError::new("body", format!("is not JSON ({e})")))?;
        let Value::Object(mut top) = value else {
            return Err(PayloadError::new("body", format!("expected a JSON object, got {}", lenient::kind(&value))));
        };
        let data = take(&mut top, "Data")
            .ok_or_else(|| PayloadError::new("Data", "is missing; expected an object of input bindings"))?;
        let data = lenient::object(&data, "Data")?.into_owned();
        let metadata = match take(&mut top, "Metadata") {
            None => Map::new(),
            Some(m) => lenient::object(&m, "Metadata")?.into_owned(),
        };
        let sys = match lenient::get(&metadata, "sys") {
            None => Sys::default(),
            Some(v) => parse_sys(&*lenient::object(v, "Metadata.sys")?)?,
        };
        let retry = match lenient::get(&metadata, "RetryContext") {
            None => None,
            Some(v) => Some(parse_retry(&*lenient::object(v, "Metadata.RetryContext")?)?),
        };
        Ok(Self { data, metadata, sys, retry })
    }

    /// The input binding `name` (matched without regard to case). A function has one trigger binding, so
    /// when `Data` holds exactly one entry under another name (a function.json renamed it) that entry is
    /// used. Returns the key found and the value.
    pub fn binding(&self, name: &str) -> Result<(&str, &Value), PayloadError> {
        if let Some((k, v)) = self.data.get_key_value(name) {
            return Ok((k, v));
        }
        if let Some((k, v)) = self.data.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(name)) {
            return Ok((k, v));
        }
        let mut entries = self.data.iter();
        match (entries.next(), entries.next()) {
            (Some((k, v)), None) => Ok((k, v)),
            (None, _) => Err(PayloadError::new("Data", format!("is empty; expected the {name:?} binding"))),
            _ => {
                let found: Vec<&str> = self.data.keys().map(String::as_str).take(8).collect();
                Err(PayloadError::new("Data", format!("has no {name:?} binding (found {})", found.join(", "))))
            }
        }
    }

    /// The binding as an object (accepting a JSON string holding one), with its path for errors.
    pub fn binding_object(&self, name: &str) -> Result<(String, Cow<'_, Map<String, Value>>), PayloadError> {
        let (key, value) = self.binding(name)?;
        let path = format!("Data.{key}");
        if value.is_null() {
            return Err(PayloadError::new(path, "is null"));
        }
        let obj = lenient::object(value, &path)?;
        Ok((path, obj))
    }
}

fn take(top: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let actual = top.keys().find(|k| k.as_str() == key || k.trim().eq_ignore_ascii_case(key))?.clone();
    top.remove(&actual).filter(|v| !v.is_null())
}

fn parse_sys(sys: &Map<String, Value>) -> Result<Sys, PayloadError> {
    let method_name =
        lenient::get(sys, "MethodName").map(|v| lenient::string(v, "Metadata.sys.MethodName")).transpose()?;
    let utc_now = lenient::opt_timestamp(lenient::get(sys, "UtcNow"), "Metadata.sys.UtcNow")?;
    let rand_guid = lenient::get(sys, "RandGuid").map(|v| lenient::string(v, "Metadata.sys.RandGuid")).transpose()?;
    Ok(Sys { method_name, utc_now, rand_guid })
}

fn parse_retry(rc: &Map<String, Value>) -> Result<RetryContext, PayloadError> {
    let int = |key: &str| -> Result<i64, PayloadError> {
        let path = format!("Metadata.RetryContext.{key}");
        match lenient::get(rc, key) {
            None => Ok(0),
            Some(v) => {
                let s = lenient::string(v, &path)?;
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| PayloadError::new(path, format!("{} is not a whole number", lenient::shown(&s))))
            }
        }
    };
    let retry_count = u32::try_from(int("RetryCount")?.max(0)).unwrap_or(u32::MAX);
    Ok(RetryContext { retry_count, max_retry_count: int("MaxRetryCount")? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_observed_timer_payload() {
        let body = br#"{ "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
  "Metadata": { "sys": { "MethodName": "azure", "UtcNow": "2023-09-07T11:40:45.004275Z",
                         "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8" } } }"#;
        let r = Request::parse(body).unwrap();
        assert_eq!(r.sys.method_name.as_deref(), Some("azure"));
        assert_eq!(r.sys.utc_now, Some(datetime!(2023-09-07 11:40:45.004275 UTC)));
        assert_eq!(r.retry, None);
        let (key, _) = r.binding("myTimer").unwrap();
        assert_eq!(key, "timer", "the only binding is used whatever its name");
    }

    #[test]
    fn keys_are_case_insensitive_and_bom_is_skipped() {
        let body = "\u{feff}{\"data\":{\"MYTIMER\":{}},\"metadata\":{\"SYS\":{\"utcnow\":\"2026-01-01T00:00:00\"},\"retrycontext\":{\"retrycount\":\"2\",\"maxretrycount\":3}}}";
        let r = Request::parse(body.as_bytes()).unwrap();
        assert_eq!(r.sys.utc_now, Some(datetime!(2026-01-01 00:00 UTC)));
        assert_eq!(r.retry, Some(RetryContext { retry_count: 2, max_retry_count: 3 }));
        assert_eq!(r.binding("myTimer").unwrap().0, "MYTIMER");
    }

    #[test]
    fn malformed_requests_name_what_is_wrong() {
        for (body, path, words) in [
            (&b""[..], "body", "empty"),
            (b"not json", "body", "not JSON"),
            (b"[1]", "body", "an array"),
            (b"{}", "Data", "missing"),
            (b"{\"Data\":null}", "Data", "missing"),
            (b"{\"Data\":5}", "Data", "a number"),
            (b"{\"Data\":{},\"Metadata\":[]}", "Metadata", "an array"),
            (b"{\"Data\":{},\"Metadata\":{\"sys\":{\"UtcNow\":\"noon\"}}}", "Metadata.sys.UtcNow", "not a timestamp"),
            (
                b"{\"Data\":{},\"Metadata\":{\"RetryContext\":{\"RetryCount\":\"x\"}}}",
                "Metadata.RetryContext.RetryCount",
                "whole number",
            ),
        ] {
            let e = Request::parse(body).unwrap_err();
            assert_eq!(e.path, path, "{}", String::from_utf8_lossy(body));
            assert!(e.problem.contains(words), "{e}");
        }
    }

    #[test]
    fn binding_lookup() {
        let r = Request::parse(br#"{"Data":{"a":{},"b":{}}}"#).unwrap();
        let e = r.binding("myTimer").unwrap_err();
        assert!(e.problem.contains("a, b"), "{e}");
        let r = Request::parse(br#"{"Data":{}}"#).unwrap();
        assert!(r.binding("req").unwrap_err().problem.contains("empty"));
        let r = Request::parse(br#"{"Data":{"eventGridEvent":"{\"id\":\"1\"}"}}"#).unwrap();
        let (path, obj) = r.binding_object("eventGridEvent").unwrap();
        assert_eq!(path, "Data.eventGridEvent");
        assert_eq!(obj.get("id").unwrap(), "1");
    }
}
