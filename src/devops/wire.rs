//! The wire shapes of the PAT Lifecycle API (`PatToken`, `PatTokenResult`, `PagedPatTokens`), the Azure
//! DevOps error envelope, tolerant timestamp parsing, and the pure conversion into [`super::models`] —
//! including the drift check between what was asked and what was granted.

use super::models::{DevOpsError, Drift, Pat, PatTokenError};
use crate::domain::AuthorizationId;
use secrecy::SecretString;
use serde::Deserialize;
use time::OffsetDateTime;

/// Parses the timestamps Azure DevOps sends: RFC 3339 with any number of fractional digits
/// (`…52.1033333Z`, `…46.72Z`, `…+00:00`), or without an offset (`2018-07-19T00:00:00`, Token Admin),
/// which is read as UTC (see [`crate::timestamp::parse`]).
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, String> {
    crate::timestamp::parse(s).map_err(|e| format!("timestamp {:?} is not RFC 3339 ({e})", s.trim()))
}

/// Formats a timestamp for a request body: the .NET round-trip form Azure DevOps writes and reads.
pub use crate::timestamp::dotnet_round_trip as format_timestamp;

/// `PatToken` as sent. Every field is optional on the wire; [`WirePatToken::into_pat`] decides what is
/// required.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePatToken {
    #[serde(default)]
    pub authorization_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub target_accounts: Option<Vec<uuid::Uuid>>,
    #[serde(default)]
    pub valid_from: Option<String>,
    #[serde(default)]
    pub valid_to: Option<String>,
    /// Present only in a Create response; goes straight into a `SecretString`.
    #[serde(default)]
    pub token: Option<SecretString>,
}

impl WirePatToken {
    /// The listed view of this PAT (its secret, if any, is left behind in `self.token`).
    pub fn to_pat(&self) -> Result<Pat, DevOpsError> {
        let id = self
            .authorization_id
            .as_deref()
            .ok_or_else(|| DevOpsError::Protocol("a patToken has no authorizationId".into()))?;
        let authorization_id = AuthorizationId::parse(id)
            .map_err(|e| DevOpsError::Protocol(format!("a patToken has an invalid authorizationId: {e}")))?;
        let ts = |field: &str, v: &Option<String>| -> Result<OffsetDateTime, DevOpsError> {
            let raw = v
                .as_deref()
                .ok_or_else(|| DevOpsError::Protocol(format!("patToken {authorization_id} has no {field}")))?;
            parse_timestamp(raw).map_err(|e| DevOpsError::Protocol(format!("patToken {authorization_id} {field}: {e}")))
        };
        Ok(Pat {
            authorization_id,
            display_name: self.display_name.clone().unwrap_or_default(),
            scope: self.scope.clone().unwrap_or_default(),
            target_accounts: self.target_accounts.clone(),
            valid_from: ts("validFrom", &self.valid_from)?,
            valid_to: ts("validTo", &self.valid_to)?,
        })
    }
}

/// `PatTokenResult`: the answer of Get, Create and Update — HTTP 200 even for refusals.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePatTokenResult {
    #[serde(default)]
    pub pat_token: Option<WirePatToken>,
    #[serde(default)]
    pub pat_token_error: Option<PatTokenError>,
    /// 7.2 only.
    #[serde(default)]
    pub pat_token_error_message: Option<String>,
}

impl WirePatTokenResult {
    /// `Ok(pat_token)` when `patTokenError` is `none` (or absent, as 7.1 sometimes omits it) and a
    /// patToken is present; the refusal otherwise.
    pub fn into_success(self) -> Result<WirePatToken, DevOpsError> {
        match self.pat_token_error {
            Some(e) if e != PatTokenError::None => {
                Err(DevOpsError::Refused { error: e, message: self.pat_token_error_message })
            }
            _ => self
                .pat_token
                .ok_or_else(|| DevOpsError::Protocol("patTokenError is none but the answer has no patToken".into())),
        }
    }
}

/// `PagedPatTokens`: one page of List.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePagedPatTokens {
    #[serde(default)]
    pub continuation_token: Option<String>,
    #[serde(default)]
    pub pat_tokens: Option<Vec<WirePatToken>>,
}

impl WirePagedPatTokens {
    /// The token for the next page; empty and absent both mean "last page".
    pub fn next(&self) -> Option<&str> {
        self.continuation_token.as_deref().map(str::trim).filter(|t| !t.is_empty())
    }
}

/// The Azure DevOps error envelope on 4xx/5xx (`{"$id":"1","message":…,"typeKey":…}`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VssError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub type_key: Option<String>,
    #[serde(default)]
    pub type_name: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub event_id: Option<i64>,
    #[serde(default)]
    pub inner_exception: Option<serde_json::Value>,
}

impl VssError {
    /// Parses the envelope when the body is one; `None` for anything else (HTML, plain text, empty).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(strip_bom(body)).ok()?;
        if v.get("message").is_none() && v.get("typeKey").is_none() {
            return None;
        }
        serde_json::from_value(v).ok()
    }
}

/// Bodies may start with a UTF-8 byte-order mark.
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(body)
}

/// Parses a JSON body into `T`, naming the operation when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, DevOpsError> {
    serde_json::from_slice(strip_bom(body)).map_err(|e| {
        DevOpsError::Protocol(format!("{operation}: the answer is not the documented JSON shape ({})", json_error(&e)))
    })
}

/// A JSON error without serde's quotation of the offending value (which could be part of a secret): the
/// kind of error and where it is.
pub fn json_error(e: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())
}

/// What was asked of Create or Update, for the drift check.
#[derive(Debug, Clone, Default)]
pub struct Requested<'a> {
    pub scope: Option<&'a str>,
    pub valid_to: Option<OffsetDateTime>,
    pub all_orgs: Option<bool>,
}

/// Where `granted` differs from `requested`. `validTo` comes back rounded (…23.319Z → …23.32Z), so only a
/// difference of more than a second counts; scopes compare as sets.
pub fn drift(requested: &Requested<'_>, granted: &Pat) -> Vec<Drift> {
    let mut out = Vec::new();
    if let Some(want) = requested.valid_to
        && (granted.valid_to - want).abs() > time::Duration::seconds(1)
    {
        out.push(Drift::ValidToClamped { requested: want, granted: granted.valid_to });
    }
    if let Some(want) = requested.scope {
        let norm = |s: &str| {
            let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if norm(want) != norm(&granted.scope) {
            out.push(Drift::ScopeChanged { requested: want.to_owned(), granted: granted.scope.clone() });
        }
    }
    if let Some(global) = requested.all_orgs
        && global != granted.is_global()
    {
        out.push(Drift::TargetChanged { requested_global: global, granted_global: granted.is_global() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn example(path: &str) -> serde_json::Value {
        patrol_emulator::specs::spec_json(&format!("azure-devops/{path}"))
    }

    fn body(v: &serde_json::Value, status: &str) -> Vec<u8> {
        serde_json::to_vec(&v["responses"][status]["body"]).unwrap()
    }

    #[test]
    fn timestamps_of_every_precision() {
        for s in [
            "2020-11-02T22:56:52.1033333Z",
            "2020-12-01T23:46:23.32Z",
            "2019-03-05T14:05:02.1460838+00:00",
            "2018-07-18T00:51:26.5557358-07:00",
            "2018-07-19T00:00:00",
            "2018-07-19T00:00:00.5",
        ] {
            parse_timestamp(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        assert_eq!(parse_timestamp("2018-07-19T00:00:00").unwrap().offset(), time::UtcOffset::UTC);
        assert!(parse_timestamp("yesterday").is_err());
        let t = parse_timestamp("2020-12-01T23:46:23.319Z").unwrap();
        assert_eq!(format_timestamp(t), "2020-12-01T23:46:23.3190000Z");
        let t = parse_timestamp("2020-11-02T22:56:52.1033333Z").unwrap();
        assert_eq!(format_timestamp(t), "2020-11-02T22:56:52.1033333Z", "round-trips .NET ticks");
    }

    #[test]
    fn spec_examples_parse_for_both_versions() {
        for v in ["7.1", "7.2"] {
            let create = example(&format!("tokens/{v}/httpExamples/Pats/CreatePat.json"));
            let r: WirePatTokenResult = parse_json("create", &body(&create, "200")).unwrap();
            let wire = r.into_success().unwrap();
            let pat = wire.to_pat().unwrap();
            assert_eq!(pat.authorization_id.to_string(), "4ab5764f-4193-4f1d-b995-64144880b7d7");
            assert_eq!(
                wire.token.as_ref().unwrap().expose_secret(),
                "dip55dwf4vpitomw63jzvomefmi2jluguprzwwqwuc6xq4fhocwq"
            );
            assert!(!pat.is_global());
            // The example asked for .319 and got .32: rounding is not drift.
            let req = &create["parameters"]["body"];
            let asked = Requested {
                scope: req["scope"].as_str(),
                valid_to: Some(parse_timestamp(req["validTo"].as_str().unwrap()).unwrap()),
                all_orgs: req["allOrgs"].as_bool(),
            };
            assert!(drift(&asked, &pat).is_empty());

            let list = example(&format!("tokens/{v}/httpExamples/Pats/ListPats.json"));
            let page: WirePagedPatTokens = parse_json("list", &body(&list, "200")).unwrap();
            assert_eq!(page.next(), None, "the example's empty continuationToken means last page");
            let pats: Vec<Pat> = page.pat_tokens.unwrap().iter().map(|p| p.to_pat().unwrap()).collect();
            assert!(pats.len() >= 2);
            assert!(pats[0].is_global() && pats[0].is_full_access());

            let get = example(&format!("tokens/{v}/httpExamples/Pats/GetPat.json"));
            let r: WirePatTokenResult = parse_json("get", &body(&get, "200")).unwrap();
            let wire = r.into_success().unwrap();
            assert!(wire.token.is_none());
            wire.to_pat().unwrap();

            let update = example(&format!("tokens/{v}/httpExamples/Pats/UpdatePat.json"));
            let r: WirePatTokenResult = parse_json("update", &body(&update, "200")).unwrap();
            let pat = r.into_success().unwrap().to_pat().unwrap();
            assert!(pat.is_global(), "the update example asks allOrgs=true and gets targetAccounts null");
        }
    }

    #[test]
    fn refusals_keep_error_and_message() {
        let r: WirePatTokenResult = parse_json(
            "create",
            br#"{"patToken":null,"patTokenError":"fullScopePatPolicyViolation","patTokenErrorMessage":"no app_token"}"#,
        )
        .unwrap();
        match r.into_success() {
            Err(DevOpsError::Refused { error, message }) => {
                assert_eq!(error, PatTokenError::FullScopePatPolicyViolation);
                assert_eq!(message.as_deref(), Some("no app_token"));
            }
            other => panic!("{other:?}"),
        }
        let r: WirePatTokenResult =
            parse_json("create", br#"{"patToken":null,"patTokenError":"brandNewError"}"#).unwrap();
        assert!(
            matches!(r.into_success(), Err(DevOpsError::Refused { error: PatTokenError::Unknown(s), .. }) if s == "brandNewError")
        );
        let r: WirePatTokenResult = parse_json("create", br#"{"patToken":null,"patTokenError":"none"}"#).unwrap();
        assert!(matches!(r.into_success(), Err(DevOpsError::Protocol(_))));
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let e = parse_json::<WirePatTokenResult>(
            "Pats_Create",
            br#"{"patToken":{"validTo":"s3cr3t-looking-value"},"patTokenError":7}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = parse_json::<WirePatTokenResult>("Pats_Create", br#"{"patToken":"s3cr3t"}"#).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t") && e.to_string().contains("column"), "{e}");
    }

    #[test]
    fn error_envelope_and_bom() {
        let raw = "\u{feff}{\"$id\":\"1\",\"innerException\":null,\"message\":\"The requested operation is not allowed.\",\"typeName\":\"Microsoft.TeamFoundation.Framework.Server.InvalidAccessException, Microsoft.TeamFoundation.Framework.Server\",\"typeKey\":\"InvalidAccessException\",\"errorCode\":0,\"eventId\":3000}";
        let e = VssError::parse(raw.as_bytes()).unwrap();
        assert_eq!(e.type_key.as_deref(), Some("InvalidAccessException"));
        assert_eq!(e.event_id, Some(3000));
        assert!(VssError::parse(b"<html><title>Object moved</title></html>").is_none());
        assert!(VssError::parse(b"{}").is_none());
    }

    #[test]
    fn drift_reports_clamp_scope_and_target() {
        let pat = Pat {
            authorization_id: AuthorizationId::parse("4ab5764f-4193-4f1d-b995-64144880b7d7").unwrap(),
            display_name: "x".into(),
            scope: "vso.code vso.build".into(),
            target_accounts: None,
            valid_from: parse_timestamp("2026-01-01T00:00:00Z").unwrap(),
            valid_to: parse_timestamp("2026-01-31T00:00:00Z").unwrap(),
        };
        let asked = Requested {
            scope: Some("vso.build   vso.code"),
            valid_to: Some(parse_timestamp("2026-01-31T00:00:00.4Z").unwrap()),
            all_orgs: None,
        };
        assert!(drift(&asked, &pat).is_empty());
        let asked = Requested {
            scope: Some("vso.code"),
            valid_to: Some(parse_timestamp("2026-06-01T00:00:00Z").unwrap()),
            all_orgs: Some(false),
        };
        let d = drift(&asked, &pat);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(matches!(d[0], Drift::ValidToClamped { .. }));
        assert!(matches!(d[1], Drift::ScopeChanged { .. }));
        assert!(matches!(d[2], Drift::TargetChanged { requested_global: false, granted_global: true }));
    }
}
