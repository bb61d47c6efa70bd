//! The audit-log entry model and a streaming parser for `AuditLogQueryResult` pages.
//!
//! Azure DevOps answers `GET …/_apis/audit/auditlog` with `{decoratedAuditLogEntries, continuationToken,
//! hasMore}`; the spec's example wraps that object in `{"value": …}`. [`parse_page`] accepts both shapes and
//! hands each `DecoratedAuditLogEntry` to a callback **as it is parsed** (a `DeserializeSeed` over the array),
//! so memory does not grow with the number of entries. Strings borrow from the input where JSON allows it.
//!
//! Entries are parsed leniently field by field (any scalar where a string is expected, `null` as empty), and
//! an entry whose `id` or `timestamp` is unusable is reported to the callback as a [`MalformedEntry`] instead
//! of failing the page. A page that is not JSON, or not the documented object, is a [`PageError`].

pub use crate::devops::audit::AuthMechanism;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use time::OffsetDateTime;

/// One audited action (`DecoratedAuditLogEntry`), with the fields patrol's rules and evidence use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry<'a> {
    /// `id`: unique per service; the de-duplication key.
    pub id: Cow<'a, str>,
    pub timestamp: OffsetDateTime,
    /// `actionId`, e.g. `Token.PatCreateEvent`, `Git.RefUpdatePoliciesBypassed`.
    pub action_id: Cow<'a, str>,
    pub area: Cow<'a, str>,
    pub category: Category,
    pub correlation_id: Cow<'a, str>,
    pub actor_user_id: Cow<'a, str>,
    pub actor_client_id: Cow<'a, str>,
    pub actor_upn: Cow<'a, str>,
    pub actor_display_name: Cow<'a, str>,
    /// Raw `authenticationMechanism`; see [`AuditEntry::auth`].
    pub authentication_mechanism: Cow<'a, str>,
    /// `ipAddress` as sent (may be empty: Azure DevOps sends `null` for service-originated events).
    pub ip_address: Cow<'a, str>,
    pub user_agent: Cow<'a, str>,
    pub scope_display_name: Cow<'a, str>,
    pub project_name: Cow<'a, str>,
    pub details: Cow<'a, str>,
    /// The `data` map's scalar values (nested objects and arrays are summarised, not kept).
    pub data: EntryData<'a>,
}

impl<'a> AuditEntry<'a> {
    /// How the actor authenticated, with a PAT's authorization id when the mechanism names one.
    pub fn auth(&self) -> AuthMechanism {
        AuthMechanism::parse(&self.authentication_mechanism)
    }

    /// The caller's IP address, when present and well-formed.
    pub fn ip(&self) -> Option<IpAddr> {
        let s = self.ip_address.trim();
        if s.is_empty() {
            return None;
        }
        // Some services append a port or zone; keep only the address.
        s.parse().ok().or_else(|| s.rsplit_once(':').and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok()))
    }

    /// An owned copy, for findings that outlive the page.
    pub fn into_owned(self) -> AuditEntry<'static> {
        let o = |c: Cow<'a, str>| Cow::Owned(c.into_owned());
        AuditEntry {
            id: o(self.id),
            timestamp: self.timestamp,
            action_id: o(self.action_id),
            area: o(self.area),
            category: self.category,
            correlation_id: o(self.correlation_id),
            actor_user_id: o(self.actor_user_id),
            actor_client_id: o(self.actor_client_id),
            actor_upn: o(self.actor_upn),
            actor_display_name: o(self.actor_display_name),
            authentication_mechanism: o(self.authentication_mechanism),
            ip_address: o(self.ip_address),
            user_agent: o(self.user_agent),
            scope_display_name: o(self.scope_display_name),
            project_name: o(self.project_name),
            details: o(self.details),
            data: EntryData(self.data.0.into_iter().map(|(k, v)| (o(k), o(v))).collect()),
        }
    }
}

/// `category` (`AuditActionCategory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Unknown,
    Modify,
    Remove,
    Create,
    Access,
    Execute,
}

impl Category {
    fn from_wire(s: &str) -> Self {
        match s {
            "modify" => Self::Modify,
            "remove" => Self::Remove,
            "create" => Self::Create,
            "access" => Self::Access,
            "execute" => Self::Execute,
            _ if s.eq_ignore_ascii_case("modify") => Self::Modify,
            _ if s.eq_ignore_ascii_case("remove") => Self::Remove,
            _ if s.eq_ignore_ascii_case("create") => Self::Create,
            _ if s.eq_ignore_ascii_case("access") => Self::Access,
            _ if s.eq_ignore_ascii_case("execute") => Self::Execute,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Modify => "modify",
            Self::Remove => "remove",
            Self::Create => "create",
            Self::Access => "access",
            Self::Execute => "execute",
        }
    }
}

/// The scalar values of an entry's `data` map, in wire order. The keys of Token events are not documented,
/// so lookups are case-insensitive and callers try several spellings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryData<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl EntryData<'_> {
    /// The first value whose key equals one of `keys` (ASCII case-insensitive), if not empty.
    pub fn get(&self, keys: &[&str]) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| !v.is_empty() && keys.iter().any(|want| k.eq_ignore_ascii_case(want)))
            .map(|(_, v)| v.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

/// An entry that was skipped because it could not be used, and why (never the entry's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEntry {
    /// The entry's `id`, when it had one.
    pub id: Option<String>,
    pub reason: String,
}

impl fmt::Display for MalformedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit entry {} skipped: {}", self.id.as_deref().unwrap_or("(without id)"), self.reason)
    }
}

/// The paging part of a page: what to ask for next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    pub continuation_token: Option<String>,
    pub has_more: bool,
    /// Entries handed to the callback (usable and malformed).
    pub entries: u64,
}

/// A page that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("audit log page is not a valid AuditLogQueryResult: {0}")]
pub struct PageError(String);

/// Parses one page from bytes, borrowing strings from `body` where possible.
pub fn parse_page<'de, F>(body: &'de [u8], on_entry: F) -> Result<PageInfo, PageError>
where
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let mut de = serde_json::Deserializer::from_slice(body);
    let info = parse_with(&mut de, on_entry).map_err(|e| PageError(e.to_string()))?;
    de.end().map_err(|e| PageError(e.to_string()))?;
    Ok(info)
}

/// Parses one page from a reader (strings are owned; memory stays bounded by the largest entry).
pub fn parse_page_reader<R, F>(reader: R, on_entry: F) -> Result<PageInfo, PageError>
where
    R: std::io::Read,
    F: FnMut(Result<AuditEntry<'static>, MalformedEntry>),
{
    let mut de = serde_json::Deserializer::from_reader(reader);
    let info = parse_with(&mut de, on_entry).map_err(|e| PageError(e.to_string()))?;
    de.end().map_err(|e| PageError(e.to_string()))?;
    Ok(info)
}

fn parse_with<'de, D, F>(de: D, mut on_entry: F) -> Result<PageInfo, D::Error>
where
    D: Deserializer<'de>,
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    let mut info = PageInfo::default();
    PageSeed { on_entry: &mut on_entry, info: &mut info, depth: 0 }.deserialize(de)?;
    Ok(info)
}

/// The `AuditLogQueryResult` object, or `{"value": AuditLogQueryResult}`.
struct PageSeed<'s, F> {
    on_entry: &'s mut F,
    info: &'s mut PageInfo,
    depth: u8,
}

impl<'de, F> DeserializeSeed<'de> for PageSeed<'_, F>
where
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F> Visitor<'de> for PageSeed<'_, F>
where
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AuditLogQueryResult object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "decoratedAuditLogEntries" => {
                    map.next_value_seed(EntriesSeed { on_entry: &mut *self.on_entry, info: &mut *self.info })?
                }
                "continuationToken" => {
                    self.info.continuation_token = map.next_value::<Option<String>>()?.filter(|t| !t.is_empty())
                }
                "hasMore" => self.info.has_more = map.next_value::<Option<bool>>()?.unwrap_or(false),
                "value" if self.depth == 0 => {
                    map.next_value_seed(PageSeed { on_entry: &mut *self.on_entry, info: &mut *self.info, depth: 1 })?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct EntriesSeed<'s, F> {
    on_entry: &'s mut F,
    info: &'s mut PageInfo,
}

impl<'de, F> DeserializeSeed<'de> for EntriesSeed<'_, F>
where
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, F> Visitor<'de> for EntriesSeed<'_, F>
where
    F: FnMut(Result<AuditEntry<'de>, MalformedEntry>),
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of audit log entries")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawEntry<'de>>()? {
            self.info.entries += 1;
            (self.on_entry)(raw.validate());
        }
        Ok(())
    }
}

/// A string-ish field: any scalar is accepted (numbers and booleans as text), `null` as empty.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(""))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(""))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(if v { "true" } else { "false" }))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// `data`: keeps scalar values, records nested objects/arrays as `{…}` / `[…]` without keeping them.
struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = EntryData<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(EntryData::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(EntryData::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Text<'de>>()? {
            let v = map.next_value::<DataValue<'de>>()?;
            // Bound what one entry can make us hold.
            if out.len() < 64 {
                out.push((k.0, v.0));
            }
        }
        Ok(EntryData(out))
    }
}

struct Data<'de>(EntryData<'de>);

impl<'de> de::Deserialize<'de> for Data<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataVisitor).map(Data)
    }
}

struct DataValue<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for DataValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                TextVisitor.visit_borrowed_str(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                TextVisitor.visit_str(v)
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                TextVisitor.visit_string(v)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                TextVisitor.visit_unit()
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                TextVisitor.visit_bool(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                TextVisitor.visit_i64(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                TextVisitor.visit_u64(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                TextVisitor.visit_f64(v)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Cow::Borrowed("{…}"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Cow::Borrowed("[…]"))
            }
        }
        d.deserialize_any(V).map(DataValue)
    }
}

/// An entry as it comes off the wire, before `id` and `timestamp` are checked.
#[derive(Default)]
struct RawEntry<'de> {
    id: Cow<'de, str>,
    timestamp: Cow<'de, str>,
    action_id: Cow<'de, str>,
    area: Cow<'de, str>,
    category: Cow<'de, str>,
    correlation_id: Cow<'de, str>,
    actor_user_id: Cow<'de, str>,
    actor_client_id: Cow<'de, str>,
    actor_upn: Cow<'de, str>,
    actor_display_name: Cow<'de, str>,
    authentication_mechanism: Cow<'de, str>,
    ip_address: Cow<'de, str>,
    user_agent: Cow<'de, str>,
    scope_display_name: Cow<'de, str>,
    project_name: Cow<'de, str>,
    details: Cow<'de, str>,
    data: EntryData<'de>,
}

impl<'de> de::Deserialize<'de> for RawEntry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DecoratedAuditLogEntry object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry<'de>, A::Error> {
                let mut e = RawEntry::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "id" => &mut e.id,
                        "timestamp" => &mut e.timestamp,
                        "actionId" => &mut e.action_id,
                        "area" => &mut e.area,
                        "category" => &mut e.category,
                        "correlationId" => &mut e.correlation_id,
                        "actorUserId" => &mut e.actor_user_id,
                        "actorClientId" => &mut e.actor_client_id,
                        "actorUPN" => &mut e.actor_upn,
                        "actorDisplayName" => &mut e.actor_display_name,
                        "authenticationMechanism" => &mut e.authentication_mechanism,
                        "ipAddress" => &mut e.ip_address,
                        "userAgent" => &mut e.user_agent,
                        "scopeDisplayName" => &mut e.scope_display_name,
                        "projectName" => &mut e.project_name,
                        "details" => &mut e.details,
                        "data" => {
                            e.data = map.next_value::<Data<'de>>()?.0;
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Text<'de>>()?.0;
                }
                Ok(e)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> RawEntry<'de> {
    fn validate(self) -> Result<AuditEntry<'de>, MalformedEntry> {
        let id = self.id.trim();
        if id.is_empty() {
            return Err(MalformedEntry { id: None, reason: "it has no id".into() });
        }
        let timestamp = parse_timestamp(&self.timestamp).ok_or_else(|| MalformedEntry {
            id: Some(id.chars().take(200).collect()),
            reason: format!("timestamp {:?} is not an RFC 3339 date-time", truncate(&self.timestamp, 60)),
        })?;
        if self.action_id.is_empty() {
            return Err(MalformedEntry {
                id: Some(id.chars().take(200).collect()),
                reason: "it has no actionId".into(),
            });
        }
        Ok(AuditEntry {
            id: self.id,
            timestamp,
            action_id: self.action_id,
            area: self.area,
            category: Category::from_wire(&self.category),
            correlation_id: self.correlation_id,
            actor_user_id: self.actor_user_id,
            actor_client_id: self.actor_client_id,
            actor_upn: self.actor_upn,
            actor_display_name: self.actor_display_name,
            authentication_mechanism: self.authentication_mechanism,
            ip_address: self.ip_address,
            user_agent: self.user_agent,
            scope_display_name: self.scope_display_name,
            project_name: self.project_name,
            details: self.details,
            data: self.data,
        })
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// RFC 3339 with any number of fractional digits (Azure DevOps sends 7), normalised to UTC.
pub use crate::timestamp::parse_opt as parse_timestamp;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuthorizationId;

    fn spec_example() -> Vec<u8> {
        let v = patrol_emulator::specs::spec_json(
            "azure-devops/audit/7.2/httpExamples/auditLog/GET__AuditLog_QueryLog_by_date.json",
        );
        serde_json::to_vec(&v["responses"]["200"]["body"]).unwrap()
    }

    #[test]
    fn parses_the_spec_example_wrapped_in_value() {
        let body = spec_example();
        let mut got = Vec::new();
        let info = parse_page(&body, |e| got.push(e.unwrap().into_owned())).unwrap();
        assert_eq!(info.entries, 2);
        assert!(!info.has_more);
        assert_eq!(
            info.continuation_token.as_deref(),
            Some("2518505063644965580;00000002-0000-8888-8000-000000000000;198b13cf-5201-48e8-acef-0d8bb2d9e815")
        );
        assert_eq!(got[0].action_id, "AuditLog.AccessLog");
        assert_eq!(got[0].ip().unwrap().to_string(), "167.220.148.131");
        assert_eq!(got[0].timestamp, time::macros::datetime!(2019-03-05 14:05:02.1460838 UTC));
        assert_eq!(got[0].category, Category::Access);
        assert_eq!(got[0].auth(), AuthMechanism::Other);
        assert_eq!(got[0].data.get(&["Filter"]), Some("{…}"));
        assert_eq!(got[1].action_id, "Project.CreateCompleted");
        assert_eq!(got[1].ip(), None, "null ipAddress");
        assert_eq!(got[1].data.get(&["projectname"]), Some("fabrikam-fiber-git"));
    }

    #[test]
    fn parses_the_unwrapped_shape_and_borrows() {
        let body = spec_example();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let unwrapped = serde_json::to_vec(&v["value"]).unwrap();
        let mut borrowed = 0;
        let mut n = 0;
        let info = parse_page(&unwrapped, |e| {
            let e = e.unwrap();
            n += 1;
            if matches!(e.id, Cow::Borrowed(_)) {
                borrowed += 1;
            }
        })
        .unwrap();
        assert_eq!((info.entries, n, borrowed), (2, 2, 2));
        // And from a reader.
        let mut ids = Vec::new();
        parse_page_reader(&unwrapped[..], |e| ids.push(e.unwrap().id.into_owned())).unwrap();
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn bom_empty_and_null_pages() {
        let mut body = "\u{feff}".as_bytes().to_vec();
        body.extend_from_slice(br#"{"decoratedAuditLogEntries":null,"hasMore":false,"continuationToken":null}"#);
        let info = parse_page(&body, |_| panic!("no entries")).unwrap();
        assert_eq!(info, PageInfo::default());
        assert!(parse_page(b"{}", |_| {}).is_ok());
        assert!(parse_page(b"[]", |_| {}).is_err());
        assert!(parse_page(b"<html>sign in</html>", |_| {}).is_err());
        assert!(parse_page(br#"{"decoratedAuditLogEntries":[{"id":"a""#, |_| {}).is_err());
        assert!(parse_page(br#"{"hasMore":false} trailing"#, |_| {}).is_err());
    }

    #[test]
    fn malformed_entries_are_reported_not_fatal() {
        let body = br#"{"decoratedAuditLogEntries":[
            {"id":"1","timestamp":"yesterday","actionId":"Token.PatCreateEvent"},
            {"timestamp":"2026-01-01T00:00:00Z","actionId":"Token.PatCreateEvent"},
            {"id":"3","timestamp":"2026-01-01T00:00:00Z","actionId":"Token.PatCreateEvent","ipAddress":12,"data":{"DisplayName":"ci \"x\"","Nested":[1,{"a":2}],"Num":7}}
        ],"hasMore":true,"continuationToken":"abc"}"#;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let info = parse_page(body, |e| match e {
            Ok(e) => ok.push(e.into_owned()),
            Err(m) => bad.push(m),
        })
        .unwrap();
        assert_eq!(info.entries, 3);
        assert!(info.has_more);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].id.as_deref(), Some("1"));
        assert!(bad[0].to_string().contains("yesterday"), "{}", bad[0]);
        assert_eq!(bad[1].id, None);
        assert_eq!(ok[0].data.get(&["displayName"]), Some("ci \"x\""));
        assert_eq!(ok[0].data.get(&["nested"]), Some("[…]"));
        assert_eq!(ok[0].data.get(&["num"]), Some("7"));
        assert_eq!(ok[0].ip_address, "12");
    }

    #[test]
    fn authentication_mechanism_is_parsed_defensively() {
        let id = "4ab5764f-4193-4f1d-b995-64144880b7d7";
        let want = Some(AuthorizationId::parse(id).unwrap());
        assert_eq!(AuthMechanism::parse(&format!("PAT_Unscoped authorizationId: {id}")).pat_id(), want);
        assert_eq!(AuthMechanism::parse(&format!("PAT_Scoped AuthorizationId:{id}")).pat_id(), want);
        assert_eq!(AuthMechanism::parse(&format!("pat authorizationid = {}", id.replace('-', ""))).pat_id(), want);
        assert_eq!(AuthMechanism::parse("PAT_Unscoped"), AuthMechanism::Pat { authorization_id: None });
        assert_eq!(
            AuthMechanism::parse("PAT_Unscoped authorizationId: not-a-guid"),
            AuthMechanism::Pat { authorization_id: None }
        );
        assert_eq!(
            AuthMechanism::parse(&format!("SessionToken_Unscoped authorizationId: {id}")),
            AuthMechanism::SessionToken { authorization_id: want }
        );
        for other in ["", "AAD", "AAD_Cookie", "FedAuth", "SSH", "S2S_ServicePrincipal", "UserAuthToken", "PA"] {
            assert_eq!(AuthMechanism::parse(other), AuthMechanism::Other, "{other}");
        }
    }

    #[test]
    fn timestamps_agree_with_the_general_rfc3339_parser() {
        for s in [
            "2019-03-05T14:05:02.1460838+00:00",
            "2019-03-05T14:05:02Z",
            "2019-03-05T14:05:02.5-05:30",
            "2024-02-29T23:59:59.123456789123+14:00",
            "2019-03-05t14:05:02z",
        ] {
            let general = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .to_offset(time::UtcOffset::UTC);
            assert_eq!(parse_timestamp(s), Some(general), "{s}");
        }
        for bad in
            ["2019-02-30T00:00:00Z", "2019-03-05T25:00:00Z", "2019-03-05T14:05:02.Z", "", "2019-03-05 14:05:02Z x"]
        {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        // Without an offset (as Token Admin writes): UTC, like every timestamp patrol reads.
        assert_eq!(parse_timestamp("2019-03-05T14:05:02"), parse_timestamp("2019-03-05T14:05:02Z"));
    }

    #[test]
    fn ip_with_port_or_brackets() {
        let mut e = AuditEntry {
            id: "x".into(),
            timestamp: OffsetDateTime::UNIX_EPOCH,
            action_id: "a".into(),
            area: "".into(),
            category: Category::Unknown,
            correlation_id: "".into(),
            actor_user_id: "".into(),
            actor_client_id: "".into(),
            actor_upn: "".into(),
            actor_display_name: "".into(),
            authentication_mechanism: "".into(),
            ip_address: "10.1.2.3:443".into(),
            user_agent: "".into(),
            scope_display_name: "".into(),
            project_name: "".into(),
            details: "".into(),
            data: EntryData::default(),
        };
        assert_eq!(e.ip().unwrap().to_string(), "10.1.2.3");
        e.ip_address = "[2001:db8::1]:443".into();
        assert_eq!(e.ip().unwrap().to_string(), "2001:db8::1");
        e.ip_address = "2001:db8::2".into();
        assert_eq!(e.ip().unwrap().to_string(), "2001:db8::2");
        e.ip_address = "garbage".into();
        assert_eq!(e.ip(), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(s in ".{0,300}") {
            let _ = parse_page(s.as_bytes(), |_| {});
            let _ = AuthMechanism::parse(&s);
        }
    }
}
