//! The Token Admin API (`tokenadmin` 7.2, organization administrators only): list any user's PATs by
//! subject descriptor with paging, revoke authorizations in batches, and create revocation rules.

use super::http::{Call, DevOpsHttp};
use super::models::DevOpsError;
use super::retry::Idempotency;
use super::wire::{self, parse_timestamp};
use crate::domain::{AuthorizationId, OrgName};
use http::Method;
use serde::Deserialize;
use std::collections::HashSet;
use time::OffsetDateTime;
use url::Url;

pub const API_VERSION: &str = "7.2-preview.1";
/// Revocations sent per request; the service limit is unpublished ("you will receive an error if you pass
/// too many revocations at once").
pub const REVOCATION_BATCH: usize = 100;
/// Page size asked of List.
pub const PAGE_SIZE: u32 = 100;

/// A `SessionToken` as Token Admin lists it (never with a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionToken {
    pub authorization_id: AuthorizationId,
    pub display_name: Option<String>,
    pub scope: String,
    pub target_accounts: Option<Vec<uuid::Uuid>>,
    pub user_id: Option<uuid::Uuid>,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_to: Option<OffsetDateTime>,
    pub is_valid: Option<bool>,
    pub is_public: Option<bool>,
    /// C3ID hash of the PAT (may match leaked-token reports).
    pub cross_company_correlating_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSessionToken {
    authorization_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    target_accounts: Option<Vec<uuid::Uuid>>,
    #[serde(default)]
    user_id: Option<uuid::Uuid>,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_to: Option<String>,
    #[serde(default)]
    is_valid: Option<bool>,
    #[serde(default)]
    is_public: Option<bool>,
    #[serde(default)]
    cross_company_correlating_id: Option<String>,
}

impl WireSessionToken {
    fn into_token(self) -> Result<SessionToken, DevOpsError> {
        let id = self
            .authorization_id
            .as_deref()
            .ok_or_else(|| DevOpsError::Protocol("a Token Admin session token has no authorizationId".into()))?;
        let authorization_id =
            AuthorizationId::parse(id).map_err(|e| DevOpsError::Protocol(format!("Token Admin session token: {e}")))?;
        let ts = |v: Option<String>| -> Result<Option<OffsetDateTime>, DevOpsError> {
            v.map(|s| {
                parse_timestamp(&s).map_err(|e| DevOpsError::Protocol(format!("session token {authorization_id}: {e}")))
            })
            .transpose()
        };
        Ok(SessionToken {
            authorization_id,
            display_name: self.display_name,
            scope: self.scope.unwrap_or_default(),
            target_accounts: self.target_accounts,
            user_id: self.user_id,
            valid_from: ts(self.valid_from)?,
            valid_to: ts(self.valid_to)?,
            is_valid: self.is_valid,
            is_public: self.is_public,
            cross_company_correlating_id: self.cross_company_correlating_id,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePaged {
    #[serde(default)]
    value: Option<Vec<WireSessionToken>>,
    #[serde(default)]
    continuation_token: Option<String>,
}

/// One page of a user's tokens; `continuation_token` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct SessionTokenPage {
    pub tokens: Vec<SessionToken>,
    pub continuation_token: Option<String>,
}

/// Parses a `TokenAdminPagedSessionTokens` body (pure; used by the client and its tests).
pub fn parse_page(body: &[u8]) -> Result<SessionTokenPage, DevOpsError> {
    let w: WirePaged = wire::parse_json("PersonalAccessTokens_List", body)?;
    let tokens = w.value.unwrap_or_default().into_iter().map(WireSessionToken::into_token).collect::<Result<_, _>>()?;
    let continuation_token = w.continuation_token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    Ok(SessionTokenPage { tokens, continuation_token })
}

/// Token Admin for one organization, acting as an administrator.
#[derive(Debug, Clone)]
pub struct TokenAdminClient {
    http: DevOpsHttp,
    base: Url,
    organization: OrgName,
}

impl TokenAdminClient {
    pub fn new(http: DevOpsHttp, base: Url, organization: OrgName) -> Self {
        Self { http, base, organization }
    }

    pub fn organization(&self) -> &OrgName {
        &self.organization
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([self.organization.as_str(), "_apis", "tokenadmin"]).extend(path);
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("api-version", API_VERSION);
        }
        url
    }

    /// One page of a user's PATs (`isPublic=false`; `true` lists SSH keys).
    pub async fn list_page(
        &self,
        subject_descriptor: &str,
        continuation_token: Option<&str>,
    ) -> Result<SessionTokenPage, DevOpsError> {
        if subject_descriptor.is_empty() || subject_descriptor.contains(['/', '?', '#']) {
            return Err(DevOpsError::Protocol(format!("{subject_descriptor:?} is not a subject descriptor")));
        }
        let size = PAGE_SIZE.to_string();
        let mut query = vec![("pageSize", size.as_str()), ("isPublic", "false")];
        if let Some(c) = continuation_token {
            query.push(("continuationToken", c));
        }
        let call = Call {
            operation: "PersonalAccessTokens_List",
            method: Method::GET,
            url: self.url(&["personalaccesstokens", subject_descriptor], &query),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        let answer = self.http.send(call).await?;
        parse_page(&answer.body)
    }

    /// Every PAT of a user, all pages.
    pub async fn list_all(&self, subject_descriptor: &str) -> Result<Vec<SessionToken>, DevOpsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        loop {
            let page = self.list_page(subject_descriptor, token.as_deref()).await?;
            out.extend(page.tokens);
            match page.continuation_token {
                None => return Ok(out),
                Some(t) if !seen.insert(t.clone()) => {
                    return Err(DevOpsError::Protocol(
                        "Token Admin repeated a continuationToken; refusing to loop".into(),
                    ));
                }
                Some(t) => token = Some(t),
            }
        }
    }

    /// Revokes authorizations, [`REVOCATION_BATCH`] per request. Revoking is idempotent, so batches are
    /// retried like any idempotent call. Returns how many were sent.
    pub async fn revoke(&self, ids: &[AuthorizationId]) -> Result<usize, DevOpsError> {
        for chunk in ids.chunks(REVOCATION_BATCH) {
            let body: Vec<serde_json::Value> =
                chunk.iter().map(|id| serde_json::json!({ "authorizationId": id.to_string() })).collect();
            let body = serde_json::Value::Array(body);
            let call = Call {
                operation: "Revocations_RevokeAuthorizations",
                method: Method::POST,
                url: self.url(&["revocations"], &[("isPublic", "false")]),
                body: Some(&body),
                idempotency: Idempotency::Idempotent,
            };
            self.http.send(call).await?;
        }
        Ok(ids.len())
    }

    /// Creates a revocation rule: tokens with any of `scopes` created before `created_before` (default: now,
    /// on the service's clock) are refused at authentication time.
    pub async fn create_revocation_rule(
        &self,
        scopes: &str,
        created_before: Option<OffsetDateTime>,
    ) -> Result<(), DevOpsError> {
        if scopes.split_whitespace().next().is_none() {
            return Err(DevOpsError::Protocol("a revocation rule needs at least one scope".into()));
        }
        let mut body = serde_json::json!({ "scopes": scopes });
        if let Some(t) = created_before {
            body["createdBefore"] = wire::format_timestamp(t).into();
        }
        let call = Call {
            operation: "RevocationRules_Create",
            method: Method::POST,
            url: self.url(&["revocationrules"], &[]),
            body: Some(&body),
            // Two identical rules have the effect of one.
            idempotency: Idempotency::Idempotent,
        };
        self.http.send(call).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_page_parses() {
        let v = patrol_emulator::specs::spec_json(
            "azure-devops/tokenAdmin/7.2/httpExamples/personalAccessTokens/GetPersonalAccessTokensForAUserInYourOrganization.json",
        );
        let body = serde_json::to_vec(&v["responses"]["200"]["body"]).unwrap();
        let page = parse_page(&body).unwrap();
        assert!(page.tokens.len() >= 3);
        assert_eq!(page.tokens[1].scope, "vso.dashboards vso.taskgroups_manage");
        assert_eq!(page.tokens[0].valid_from.unwrap().offset(), time::UtcOffset::UTC);
        assert!(page.tokens.iter().all(|t| t.target_accounts.is_none() && t.is_public == Some(false)));
    }

    #[test]
    fn continuation_token_ends_on_null_or_empty() {
        let p = parse_page(br#"{"value":[],"continuationToken":null}"#).unwrap();
        assert!(p.continuation_token.is_none());
        let p = parse_page(br#"{"value":[],"continuationToken":""}"#).unwrap();
        assert!(p.continuation_token.is_none());
        let p = parse_page(br#"{"value":[],"continuationToken":"a5b0c6d8-0000-0000-0000-000000000001"}"#).unwrap();
        assert_eq!(p.continuation_token.as_deref(), Some("a5b0c6d8-0000-0000-0000-000000000001"));
        assert!(parse_page(br#"{"value":[{"scope":"x"}]}"#).is_err());
    }
}
