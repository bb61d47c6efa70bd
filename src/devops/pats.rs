//! [`HttpPatApi`]: the PAT Lifecycle API (`/{org}/_apis/tokens/pats`) over HTTP, implementing
//! [`PatApi`], plus the reconciliation of an uncertain Create by listing ([`reconcile_create`],
//! [`create_reconciling`]).
//!
//! Success is 2xx **and** `patTokenError == "none"` **and**, on Create, a token present; what was granted is
//! compared with what was asked and reported as [`Drift`]. `api-version` is `7.2-preview.1`; with
//! [`ApiVersion::Auto`] a service that refuses 7.2 is asked again with `7.1-preview.1` (and remembered).

use super::PatApi;
use super::http::{Answer, Call, DevOpsHttp};
use super::models::*;
use super::retry::Idempotency;
use super::wire::{self, Requested, WirePagedPatTokens, WirePatTokenResult};
use crate::domain::{AuthorizationId, DisplayName, OrgName, OwnerId};
use async_trait::async_trait;
use http::Method;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;
use url::Url;

pub const API_VERSION_72: &str = "7.2-preview.1";
pub const API_VERSION_71: &str = "7.1-preview.1";

pub use crate::config::ApiVersion;

/// Page size of List (the API's maximum).
pub const PAGE_SIZE: u32 = 100;
/// A list longer than this many pages is treated as a service fault rather than followed forever.
pub const MAX_PAGES: usize = 10_000;

/// `typeKey`s Azure DevOps uses when it does not serve the requested api-version.
const VERSION_REFUSALS: &[&str] =
    &["VssVersionOutOfRangeException", "VssInvalidPreviewVersionException", "VssVersionNotSupportedException"];

/// One owner's PATs in one organization, over HTTP.
#[derive(Debug)]
pub struct HttpPatApi {
    http: DevOpsHttp,
    base: Url,
    organization: OrgName,
    owner: OwnerId,
    version: ApiVersion,
    fell_back: AtomicBool,
}

impl HttpPatApi {
    pub fn new(http: DevOpsHttp, base: Url, organization: OrgName, owner: OwnerId, version: ApiVersion) -> Self {
        Self { http, base, organization, owner, version, fell_back: AtomicBool::new(false) }
    }

    fn api_version(&self) -> &'static str {
        match self.version {
            ApiVersion::V71 => API_VERSION_71,
            ApiVersion::V72 => API_VERSION_72,
            ApiVersion::Auto if self.fell_back.load(Ordering::Relaxed) => API_VERSION_71,
            ApiVersion::Auto => API_VERSION_72,
        }
    }

    fn url(&self, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend([self.organization.as_str(), "_apis", "tokens", "pats"]);
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("api-version", self.api_version());
        }
        url
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        idempotency: Idempotency,
    ) -> Result<Answer, DevOpsError> {
        loop {
            let call = Call { operation, method: method.clone(), url: self.url(query), body, idempotency };
            match self.http.send(call).await {
                Err(e)
                    if self.version == ApiVersion::Auto
                        && is_version_refusal(&e)
                        && !self.fell_back.swap(true, Ordering::Relaxed) =>
                {
                    let message = e.to_string();
                    // A 400 means nothing happened, so even Create may be sent again.
                    tracing::warn!(operation, %message, "Azure DevOps refused api-version {API_VERSION_72}; using {API_VERSION_71}");
                }
                other => return other,
            }
        }
    }
}

/// Whether Azure DevOps refused the request because it does not serve the requested api-version (a 400:
/// nothing happened, so the request may be sent again with another version).
pub fn is_version_refusal(e: &DevOpsError) -> bool {
    matches!(e, DevOpsError::Service { status: 400, type_key: Some(k), .. } if VERSION_REFUSALS.contains(&k.as_str()))
}

fn is_not_found(e: &PatTokenError) -> bool {
    matches!(
        e,
        PatTokenError::AuthorizationNotFound | PatTokenError::TokenNotFound | PatTokenError::InvalidAuthorizationId
    )
}

#[async_trait]
impl PatApi for HttpPatApi {
    fn organization(&self) -> &OrgName {
        &self.organization
    }

    fn owner(&self) -> &OwnerId {
        &self.owner
    }

    async fn list(&self, filter: DisplayFilter) -> Result<Vec<Pat>, DevOpsError> {
        let top = PAGE_SIZE.to_string();
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            // Every page repeats the same filters, as the API requires.
            let mut query = vec![
                ("displayFilterOption", filter.as_str()),
                ("sortByOption", "displayDate"),
                ("isSortAscending", "true"),
                ("$top", top.as_str()),
            ];
            if let Some(c) = continuation.as_deref() {
                query.push(("continuationToken", c));
            }
            let answer = self.send("Pats_List", Method::GET, &query, None, Idempotency::Idempotent).await?;
            let page: WirePagedPatTokens = wire::parse_json("Pats_List", &answer.body)?;
            for p in page.pat_tokens.as_deref().unwrap_or_default() {
                out.push(p.to_pat()?);
            }
            match page.next() {
                None => return Ok(out),
                Some(next) => {
                    if !seen.insert(next.to_owned()) {
                        return Err(DevOpsError::Protocol(
                            "Pats_List returned the same continuationToken twice; refusing to loop".into(),
                        ));
                    }
                    continuation = Some(next.to_owned());
                }
            }
        }
        Err(DevOpsError::Protocol(format!("Pats_List did not end after {MAX_PAGES} pages")))
    }

    async fn get(&self, id: AuthorizationId) -> Result<Option<Pat>, DevOpsError> {
        let id_s = id.to_string();
        let answer = match self
            .send("Pats_Get", Method::GET, &[("authorizationId", &id_s)], None, Idempotency::Idempotent)
            .await
        {
            Err(DevOpsError::Service { status: 404, .. }) => return Ok(None),
            other => other?,
        };
        let result: WirePatTokenResult = wire::parse_json("Pats_Get", &answer.body)?;
        match result.into_success() {
            Ok(p) => {
                let pat = p.to_pat()?;
                if pat.authorization_id != id {
                    return Err(DevOpsError::Protocol(format!(
                        "Pats_Get for {id} answered with PAT {}",
                        pat.authorization_id
                    )));
                }
                Ok(Some(pat))
            }
            Err(DevOpsError::Refused { error, .. }) if is_not_found(&error) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, request: &CreatePat) -> Result<CreatedPat, DevOpsError> {
        let body = serde_json::json!({
            "displayName": request.display_name.as_str(),
            "scope": request.scopes.as_str(),
            "validTo": wire::format_timestamp(request.valid_to),
            "allOrgs": request.all_orgs,
        });
        let answer = self.send("Pats_Create", Method::POST, &[], Some(&body), Idempotency::NonIdempotent).await?;
        let result: WirePatTokenResult = wire::parse_json("Pats_Create", &answer.body)?;
        let mut wire_pat = result.into_success()?;
        let pat = wire_pat.to_pat()?;
        let token = wire_pat.token.take().filter(|t| !secrecy::ExposeSecret::expose_secret(t).trim().is_empty());
        let Some(token) = token else {
            return Err(DevOpsError::Protocol(format!(
                "Pats_Create reported success but returned no token for PAT {} ({:?}); nobody holds its secret, revoke it",
                pat.authorization_id, pat.display_name
            )));
        };
        let asked = Requested {
            scope: Some(request.scopes.as_str()),
            valid_to: Some(request.valid_to),
            all_orgs: Some(request.all_orgs),
        };
        let drift = wire::drift(&asked, &pat);
        if !drift.is_empty() {
            tracing::warn!(authorization_id = %pat.authorization_id, ?drift, "Azure DevOps granted something other than asked");
        }
        if pat.display_name != request.display_name.as_str() {
            return Err(DevOpsError::Protocol(format!(
                "Pats_Create for {:?} answered with a PAT named {:?}",
                request.display_name.as_str(),
                pat.display_name
            )));
        }
        Ok(CreatedPat { pat, token, drift })
    }

    async fn update(&self, request: &UpdatePat) -> Result<UpdatedPat, DevOpsError> {
        let mut body = serde_json::json!({ "authorizationId": request.authorization_id.to_string() });
        if let Some(n) = &request.display_name {
            body["displayName"] = n.as_str().into();
        }
        if let Some(s) = &request.scopes {
            body["scope"] = s.as_str().into();
        }
        if let Some(v) = request.valid_to {
            body["validTo"] = wire::format_timestamp(v).into();
        }
        if let Some(a) = request.all_orgs {
            body["allOrgs"] = a.into();
        }
        // A PUT of absolute values: sending it twice has the effect of sending it once.
        let answer = self.send("Pats_Update", Method::PUT, &[], Some(&body), Idempotency::Idempotent).await?;
        let result: WirePatTokenResult = wire::parse_json("Pats_Update", &answer.body)?;
        let pat = result.into_success()?.to_pat()?;
        let asked = Requested {
            scope: request.scopes.as_ref().map(|s| s.as_str()),
            valid_to: request.valid_to,
            all_orgs: request.all_orgs,
        };
        let drift = wire::drift(&asked, &pat);
        Ok(UpdatedPat { pat, drift })
    }

    async fn revoke(&self, id: AuthorizationId) -> Result<(), DevOpsError> {
        let id_s = id.to_string();
        let answer = match self
            .send("Pats_Revoke", Method::DELETE, &[("authorizationId", &id_s)], None, Idempotency::Idempotent)
            .await
        {
            Err(DevOpsError::Service { status: 404, .. }) => return Ok(()),
            other => other?,
        };
        // The spec documents no body (the example is 204 `{}`); if a PatTokenResult comes back, honour it.
        if let Ok(result) = serde_json::from_slice::<WirePatTokenResult>(wire::strip_bom(&answer.body))
            && let Some(error) = result.pat_token_error
            && error != PatTokenError::None
            && !is_not_found(&error)
        {
            return Err(DevOpsError::Refused { error, message: result.pat_token_error_message });
        }
        Ok(())
    }
}

/// What listing found after a Create whose outcome is unknown.
#[derive(Debug)]
pub enum Reconciled {
    /// No PAT with that display name: the Create did not happen; creating again is safe.
    Absent,
    /// The Create happened — but its secret was lost with the answer, so nobody holds it. These PATs must be
    /// revoked before creating again.
    Orphaned(Vec<Pat>),
}

/// Lists `api`'s PATs (all states) and finds those named `display_name` that were created at or after
/// `not_before` (minus a minute for clock skew). Display names patrol creates carry an operation marker, so
/// a match is the lost Create and not someone else's token.
pub async fn reconcile_create(
    api: &dyn PatApi,
    display_name: &DisplayName,
    not_before: OffsetDateTime,
) -> Result<Reconciled, DevOpsError> {
    let since = not_before - time::Duration::minutes(1);
    let found: Vec<Pat> = api
        .list(DisplayFilter::All)
        .await?
        .into_iter()
        .filter(|p| p.display_name == display_name.as_str() && p.valid_from >= since)
        .collect();
    Ok(if found.is_empty() { Reconciled::Absent } else { Reconciled::Orphaned(found) })
}

/// The result of [`create_reconciling`].
#[derive(Debug)]
pub struct ReconciledCreate {
    pub created: CreatedPat,
    /// PATs a lost Create had made and that were revoked because nobody holds their secret.
    pub revoked_orphans: Vec<AuthorizationId>,
}

/// Creates a PAT; when the outcome is uncertain, lists, revokes any orphan the lost Create made, and
/// creates again — at most `max_uncertain` times. Each attempt is reconciled before the next is sent, so
/// this never leaves two live PATs behind. `now` is the time before the first attempt.
pub async fn create_reconciling(
    api: &dyn PatApi,
    request: &CreatePat,
    now: OffsetDateTime,
    max_uncertain: u32,
) -> Result<ReconciledCreate, DevOpsError> {
    let mut revoked_orphans = Vec::new();
    let mut uncertain = 0;
    loop {
        match api.create(request).await {
            Ok(created) => return Ok(ReconciledCreate { created, revoked_orphans }),
            Err(DevOpsError::Uncertain { operation, reason }) => {
                uncertain += 1;
                tracing::warn!(display_name = %request.display_name, %reason, "Create outcome unknown; reconciling by listing");
                match reconcile_create(api, &request.display_name, now).await? {
                    Reconciled::Absent => {}
                    Reconciled::Orphaned(pats) => {
                        for p in pats {
                            api.revoke(p.authorization_id).await?;
                            revoked_orphans.push(p.authorization_id);
                        }
                    }
                }
                if uncertain > max_uncertain {
                    return Err(DevOpsError::Uncertain { operation, reason });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_refusals_trigger_the_fallback() {
        let svc =
            |status, key: &str| DevOpsError::Service { status, type_key: Some(key.into()), message: String::new() };
        assert!(is_version_refusal(&svc(400, "VssVersionOutOfRangeException")));
        assert!(is_version_refusal(&svc(400, "VssInvalidPreviewVersionException")));
        assert!(!is_version_refusal(&svc(400, "JsonReaderException")));
        assert!(!is_version_refusal(&svc(500, "VssVersionOutOfRangeException")));
        assert!(!is_version_refusal(&DevOpsError::Transport("x".into())));
    }
}
