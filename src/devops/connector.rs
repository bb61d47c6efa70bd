//! [`HttpConnector`]: the production [`Connector`]. One HTTP client for the process, one
//! [`TokenSource`](super::token::TokenSource) and one [`RateLimiter`] per identity, and handles for the PAT Lifecycle,
//! Token Admin and audit APIs built on them.

use super::audit::AuditClient;
use super::http::{DevOpsHttp, build_client};
use super::models::DevOpsError;
use super::pats::{ApiVersion, HttpPatApi};
use super::ratelimit::RateLimiter;
use super::retry::RetryPolicy;
use super::token::TokenSources;
use super::tokenadmin::TokenAdminClient;
use super::{Connector, PatApi};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{OrgName, OwnerId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// Where the Azure DevOps APIs live and how to call them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// PAT Lifecycle and Token Admin (`https://vssps.dev.azure.com`).
    pub devops: Url,
    /// Audit log (`https://auditservice.dev.azure.com`).
    pub audit: Url,
    pub api_version: ApiVersion,
}

impl Endpoints {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            devops: settings.devops_url.clone(),
            audit: settings.audit_url.clone(),
            api_version: settings.devops_api_version,
        }
    }
}

/// Azure DevOps over HTTP for any number of identities.
#[derive(Debug)]
pub struct HttpConnector {
    client: reqwest::Client,
    clock: Clock,
    retry: RetryPolicy,
    endpoints: Endpoints,
    tokens: Arc<dyn TokenSources>,
    limiters: Mutex<HashMap<OwnerId, Arc<RateLimiter>>>,
}

impl HttpConnector {
    pub fn new(
        client: reqwest::Client,
        clock: Clock,
        retry: RetryPolicy,
        endpoints: Endpoints,
        tokens: Arc<dyn TokenSources>,
    ) -> Self {
        Self { client, clock, retry, endpoints, tokens, limiters: Mutex::default() }
    }

    /// From settings: the shared client trusts `PATROL_CA_CERT` in addition to the built-in roots.
    pub fn from_settings(
        settings: &Settings,
        clock: Clock,
        tokens: Arc<dyn TokenSources>,
    ) -> Result<Self, DevOpsError> {
        let client = build_client(settings.ca_cert.as_deref(), Duration::from_secs(60))?;
        Ok(Self::new(client, clock, RetryPolicy::default(), Endpoints::from_settings(settings), tokens))
    }

    /// The rate limiter of one identity (created on first use).
    pub fn limiter(&self, identity: &OwnerId) -> Arc<RateLimiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(identity.clone()).or_default().clone()
    }

    fn http(&self, identity: &OwnerId) -> DevOpsHttp {
        DevOpsHttp::new(
            self.client.clone(),
            self.clock.clone(),
            self.retry.clone(),
            self.tokens.for_identity(identity),
            self.limiter(identity),
        )
    }

    /// The concrete PAT client (the trait object is [`Connector::pats`]).
    pub fn pat_client(&self, owner: &OwnerId, organization: &OrgName) -> HttpPatApi {
        HttpPatApi::new(
            self.http(owner),
            self.endpoints.devops.clone(),
            organization.clone(),
            owner.clone(),
            self.endpoints.api_version,
        )
    }

    /// Token Admin acting as `admin` (a Project Collection Administrator of `organization`).
    pub fn token_admin(&self, admin: &OwnerId, organization: &OrgName) -> TokenAdminClient {
        TokenAdminClient::new(self.http(admin), self.endpoints.devops.clone(), organization.clone())
    }

    /// The audit log of `organization`, read as `reader` (needs "View audit log").
    pub fn audit(&self, reader: &OwnerId, organization: &OrgName) -> AuditClient {
        AuditClient::new(self.http(reader), self.endpoints.audit.clone(), organization.clone())
    }
}

impl Connector for HttpConnector {
    fn pats(&self, owner: &OwnerId, organization: &OrgName) -> Arc<dyn PatApi> {
        Arc::new(self.pat_client(owner, organization))
    }

    fn probe(&self) -> Option<Arc<dyn super::probe::PatProbe>> {
        Some(Arc::new(super::probe::HttpPatProbe::new(self.client.clone(), &self.endpoints.devops)))
    }

    fn call_counters(&self) -> crate::metrics::CallCounters {
        let map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|l| l.counters()).fold(crate::metrics::CallCounters::default(), |a, c| {
            crate::metrics::CallCounters {
                requests: a.requests + c.requests,
                throttled: a.throttled + c.throttled,
                waited_seconds: a.waited_seconds + c.waited_seconds,
            }
        })
    }
}
