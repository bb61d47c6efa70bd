//! Lenient readers for the JSON the Functions host writes: keys matched without regard to case or stray
//! spaces, timestamps in every form the .NET host produces, Unix times that arrive as numbers or strings,
//! flags that arrive as booleans or strings. Each reader names the path of what was wrong.
//!
//! The host serializes .NET objects with Newtonsoft, so: `DateTime` values carry `Z`, `+00:00` or no
//! offset at all and 0–7 fraction digits, `default(DateTime)` appears as year 0001, and optional values are
//! `null` rather than absent. Being lenient here, and only here, keeps the rest of patrol strict.

use serde_json::{Map, Value};
use std::borrow::Cow;
use time::OffsetDateTime;

/// What was wrong with an invocation payload: where (a dotted path such as `Data.req.Query.force`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct PayloadError {
    pub path: String,
    pub problem: String,
}

impl PayloadError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { path: path.into(), problem: problem.into() }
    }
}

/// Looks a key up the way the host's case-insensitive deserializers do: exact match first, then ignoring
/// ASCII case and surrounding spaces (a documented Key Vault sample carries `"ObjectName "`).
/// `null` counts as absent: the host writes `null` for every unset optional value.
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let found = match obj.get(key) {
        Some(v) => Some(v),
        None => obj.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(key)).map(|(_, v)| v),
    };
    found.filter(|v| !v.is_null())
}

/// A JSON object, or a string holding one (the host sends values it cannot turn into an object as a JSON
/// string, and older hosts sent `"Query": "{}"`).
pub fn object<'a>(value: &'a Value, path: &str) -> Result<Cow<'a, Map<String, Value>>, PayloadError> {
    match value {
        Value::Object(m) => Ok(Cow::Borrowed(m)),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(Cow::Owned(m)),
            Ok(other) => {
                Err(PayloadError::new(path, format!("expected an object, got a string holding {}", kind(&other))))
            }
            Err(_) => Err(PayloadError::new(path, "expected an object, got a string that is not JSON")),
        },
        other => Err(PayloadError::new(path, format!("expected an object, got {}", kind(other)))),
    }
}

/// A string value (numbers and booleans are accepted and written out, as .NET `ToString()` would).
pub fn string(value: &Value, path: &str) -> Result<String, PayloadError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(PayloadError::new(path, format!("expected a string, got {}", kind(other)))),
    }
}

/// A boolean flag: `true`/`false`, `1`/`0`, or a string `true|false|yes|no|on|off|1|0` in any case.
/// An empty string is `true`: `?force` with no value means "force".
pub fn flag(value: &Value, path: &str) -> Result<bool, PayloadError> {
    let bad = |shown: &str| PayloadError::new(path, format!("{shown} is not true or false"));
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(bad(&n.to_string())),
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad(&shown(s))),
        },
        other => Err(PayloadError::new(path, format!("expected true or false, got {}", kind(other)))),
    }
}

/// Unix seconds as Key Vault events carry them (`NBF`, `EXP`): a number, a numeric string, or null/absent.
pub fn unix_seconds(value: Option<&Value>, path: &str) -> Result<Option<OffsetDateTime>, PayloadError> {
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => number_to_secs(n.as_i64(), n.as_f64()),
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(None);
            }
            match t.parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => number_to_secs(None, t.parse::<f64>().ok()),
            }
        }
        Some(other) => return Err(PayloadError::new(path, format!("expected Unix seconds, got {}", kind(other)))),
    };
    let shown_value = value.map(|v| shown(&v.to_string())).unwrap_or_default();
    let secs = secs.ok_or_else(|| PayloadError::new(path, format!("{shown_value} is not Unix seconds")))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map(Some)
        .map_err(|_| PayloadError::new(path, format!("{secs} is outside the supported range of Unix seconds")))
}

fn number_to_secs(int: Option<i64>, float: Option<f64>) -> Option<i64> {
    int.or_else(|| {
        float.filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f.trunc() as i64) // bounded: exact in i64
    })
}

pub use crate::timestamp::parse as timestamp;

/// Whether a timestamp is .NET's `default(DateTime)` (year 0001, possibly shifted a few hours into year 0
/// or 0001 by `ToLocalTime()`), which the timer trigger uses for "never ran".
pub fn is_unset(t: OffsetDateTime) -> bool {
    t.year() <= 1
}

/// An optional timestamp field; year-0001 sentinels become `None`.
pub fn opt_timestamp(value: Option<&Value>, path: &str) -> Result<Option<OffsetDateTime>, PayloadError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match timestamp(s) {
            Ok(t) if is_unset(t) => Ok(None),
            Ok(t) => Ok(Some(t)),
            Err(why) => Err(PayloadError::new(path, format!("{} is not a timestamp: {why}", shown(s)))),
        },
        Some(other) => Err(PayloadError::new(path, format!("expected a timestamp string, got {}", kind(other)))),
    }
}

/// A short, quoted rendering of caller text for error messages (bounded so an error cannot echo a body).
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
}

/// The JSON kind of a value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;
    use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

    #[test]
    fn timestamps_in_every_host_form() {
        let want = datetime!(2026-10-01 03:00:00.0123456 UTC);
        for s in [
            "2026-10-01T03:00:00.0123456+00:00",
            "2026-10-01T03:00:00.0123456Z",
            "2026-10-01T03:00:00.0123456",
            "2026-10-01 03:00:00.0123456",
            "2026-10-01T05:00:00.0123456+02:00",
            "2026-10-01T05:00:00.0123456+0200",
            "2026-10-01T00:00:00.0123456-03:00",
        ] {
            assert_eq!(timestamp(s).unwrap(), want, "{s}");
        }
        assert_eq!(timestamp("2026-10-02T03:00:00+00:00").unwrap(), datetime!(2026-10-02 03:00 UTC));
        assert_eq!(timestamp("2023-09-07T11:40:45.004275Z").unwrap(), datetime!(2023-09-07 11:40:45.004275 UTC));
        assert_eq!(timestamp("2026-10-02T03:00").unwrap(), datetime!(2026-10-02 03:00 UTC));
    }

    #[test]
    fn year_one_is_the_never_ran_sentinel() {
        for s in
            ["0001-01-01T00:00:00", "0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00Z", "0001-01-01T02:00:00+02:00"]
        {
            let t = timestamp(s).unwrap();
            assert!(is_unset(t), "{s}");
            assert_eq!(opt_timestamp(Some(&json!(s)), "x").unwrap(), None);
        }
        assert!(!is_unset(timestamp("2026-01-01T00:00:00Z").unwrap()));
    }

    #[test]
    fn bad_timestamps_say_why() {
        for (s, why) in [
            ("", "year"),
            ("2026-13-01T00:00:00Z", "month"),
            ("2026-02-30T00:00:00Z", "no such date"),
            ("2026-01-01T24:00:00Z", "no such time"),
            ("2026-01-01T00:00:00.Z", "digits"),
            ("2026-01-01T00:00:00Zjunk", "unexpected"),
            ("2026-01-01", "'T'"),
            ("9999-12-31T23:59:59.9999999-05:00", "out of range"),
        ] {
            let e = timestamp(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        let e = opt_timestamp(Some(&json!("yesterday")), "Data.myTimer.ScheduleStatus.Last").unwrap_err();
        assert_eq!(e.path, "Data.myTimer.ScheduleStatus.Last");
        assert!(e.problem.contains("\"yesterday\""), "{e}");
    }

    #[test]
    fn unix_seconds_in_every_form() {
        let want = Some(OffsetDateTime::from_unix_timestamp(1559081980).unwrap());
        assert_eq!(unix_seconds(Some(&json!(1559081980)), "NBF").unwrap(), want);
        assert_eq!(unix_seconds(Some(&json!("1559081980")), "NBF").unwrap(), want);
        assert_eq!(unix_seconds(Some(&json!(" 1559081980 ")), "NBF").unwrap(), want);
        assert_eq!(unix_seconds(Some(&json!(1559081980.0)), "NBF").unwrap(), want);
        assert_eq!(unix_seconds(Some(&json!("1559081980.5")), "NBF").unwrap(), want);
        assert_eq!(unix_seconds(Some(&Value::Null), "NBF").unwrap(), None);
        assert_eq!(unix_seconds(None, "NBF").unwrap(), None);
        assert_eq!(unix_seconds(Some(&json!("")), "NBF").unwrap(), None);
        let e = unix_seconds(Some(&json!("soon")), "data.EXP").unwrap_err();
        assert!(e.to_string().starts_with("data.EXP: "), "{e}");
        assert!(unix_seconds(Some(&json!(true)), "EXP").is_err());
        assert!(unix_seconds(Some(&json!(1e300)), "EXP").is_err());
        assert!(unix_seconds(Some(&json!(i64::MAX)), "EXP").is_err());
    }

    #[test]
    fn keys_match_without_case_or_stray_spaces() {
        let m = json!({"ObjectName ": "a", "version": "v", "Exact": 1, "exact": 2, "gone": null});
        let m = m.as_object().unwrap();
        assert_eq!(get(m, "ObjectName"), Some(&json!("a")));
        assert_eq!(get(m, "Version"), Some(&json!("v")));
        assert_eq!(get(m, "exact"), Some(&json!(2)), "an exact match wins");
        assert_eq!(get(m, "gone"), None, "null is absent");
        assert_eq!(get(m, "missing"), None);
    }

    #[test]
    fn objects_may_arrive_as_json_strings() {
        assert_eq!(object(&json!("{\"a\":1}"), "Query").unwrap().len(), 1);
        assert!(object(&json!("{}"), "Query").unwrap().is_empty());
        assert!(object(&json!("[1]"), "Query").unwrap_err().problem.contains("an array"));
        assert!(object(&json!("nope"), "Query").is_err());
        assert!(object(&json!(3), "Query").unwrap_err().problem.contains("a number"));
    }

    #[test]
    fn flags() {
        for (v, want) in [
            (json!(true), true),
            (json!("TRUE"), true),
            (json!(""), true),
            (json!("1"), true),
            (json!(1), true),
            (json!("no"), false),
            (json!(0), false),
            (json!(false), false),
        ] {
            assert_eq!(flag(&v, "force").unwrap(), want, "{v}");
        }
        assert!(flag(&json!("maybe"), "force").unwrap_err().to_string().contains("\"maybe\""));
        assert!(flag(&json!([]), "force").is_err());
    }

    fn offset_strategy() -> impl Strategy<Value = (String, i32)> {
        prop_oneof![
            Just(("Z".to_string(), 0)),
            Just((String::new(), 0)),
            Just(("+00:00".to_string(), 0)),
            (-14i32..=14, 0i32..60).prop_map(|(h, m)| {
                let total = h * 60 + if h < 0 { -m } else { m };
                let sign = if total < 0 { '-' } else { '+' };
                (format!("{sign}{:02}:{:02}", h.abs(), m), total)
            }),
        ]
    }

    proptest! {
        #[test]
        fn any_host_timestamp_round_trips(
            year in 1i32..=9999, month in 1u8..=12, day in 1u8..=28,
            hour in 0u8..24, minute in 0u8..60, second in 0u8..60,
            digits in 0usize..=7, frac in 0u32..10_000_000, (offset, offset_minutes) in offset_strategy(),
        ) {
            let frac = frac % 10u32.pow(digits as u32);
            let frac_text = if digits == 0 { String::new() } else { format!(".{frac:0digits$}") };
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac_text}{offset}");
            let t = timestamp(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            let nanos = if digits == 0 { 0 } else { frac * 10u32.pow(9 - digits as u32) };
            let local = PrimitiveDateTime::new(
                Date::from_calendar_date(year, Month::try_from(month).unwrap(), day).unwrap(),
                Time::from_hms_nano(hour, minute, second, nanos).unwrap(),
            );
            let want = local.assume_utc() - time::Duration::minutes(offset_minutes.into());
            prop_assert_eq!(t, want);
            prop_assert_eq!(t.offset(), UtcOffset::UTC);
            prop_assert_eq!(is_unset(t), want.year() <= 1);
        }

        #[test]
        fn timestamp_never_panics(s in ".{0,40}") {
            let _ = timestamp(&s);
        }

        #[test]
        fn unix_seconds_number_or_string_agree(secs in -62_000_000_000i64..250_000_000_000) {
            let a = unix_seconds(Some(&json!(secs)), "EXP").unwrap();
            let b = unix_seconds(Some(&json!(secs.to_string())), "EXP").unwrap();
            prop_assert_eq!(a, b);
            prop_assert_eq!(a.map(|t| t.unix_timestamp()), Some(secs));
        }

        #[test]
        fn lookup_ignores_key_case(key in "[A-Za-z]{1,12}", flips in proptest::collection::vec(any::<bool>(), 12)) {
            let cased: String = key.chars().zip(flips.iter().cycle())
                .map(|(c, f)| if *f { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect();
            let mut m = Map::new();
            m.insert(cased, json!(7));
            prop_assert_eq!(get(&m, &key), Some(&json!(7)));
        }
    }
}
