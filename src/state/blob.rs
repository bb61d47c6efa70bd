//! The Function App's own storage account (`AzureWebJobsStorage`) as patrol's shared state: a blob
//! [`StateStore`] ([`BlobStateStore`], ETag-conditional writes) so every Functions instance shares one
//! journal, and the blob lease primitives the per-token leases (`rotation::lease::BlobLeases`) are made
//! of — the mechanism the Functions host uses for its singletons.
//!
//! Every call goes through Microsoft's `azure_storage_blob` client (requests, conditional headers, lease
//! actions, the XML listing). Two ways to authorise them, behind the one client:
//! - **identity** (`AzureWebJobsStorage__accountName` / `__blobServiceUri`, optional `__clientId`), what
//!   production uses because the storage account has shared keys disabled: the SDK's own bearer policy
//!   with a managed-identity token for `https://storage.azure.com/.default` (HTTPS only);
//! - **SharedKey** from a connection string, including `UseDevelopmentStorage=true` for Azurite. The new
//!   SDK has no SharedKey, so [`SharedKeyPolicy`] signs each request (HMAC-SHA256 over the canonical
//!   headers and resource) as one `azure_core` pipeline policy — the only hand-written part.
//!
//! The SDK's own retries are off: [`BlobAccount`] retries calls whose connection failed, with
//! [`crate::backoff::Backoff`], so that a conditional write knows whether it was retried (see
//! [`BlobStateStore::save`]).

use crate::backoff::Backoff;
use crate::config::HostStorage;
use crate::state::{ETag, StateError, StateStore, validate_key};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Etag, Request, RequestContent, RetryOptions, Transport};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientDownloadOptions, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use base64::Engine as _;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub const CONTAINER: &str = "patrol";
/// Azurite's well-known development account key (public; documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Blob lease length (15–60 s or infinite); renewed every third of it.
pub const LEASE_SECONDS: u64 = 60;

/// The OAuth scope of Azure Storage (data plane); the SDK's bearer policy asks for it.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How many times one storage call is tried when the connection fails (the first try included).
pub const MAX_ATTEMPTS: u32 = 3;

/// The waits between those tries: 0.2 s, then 0.8 s.
const RETRY: Backoff =
    Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5)).with_factor(4).with_jitter(0.0);

/// A storage account reached with SharedKey or an Entra bearer token.
#[derive(Clone)]
pub struct BlobAccount {
    inner: Arc<Inner>,
}

struct Inner {
    /// The `patrol` container, through the SDK's client (its pipeline carries the authorisation).
    container: BlobContainerClient,
    /// How requests are authorised (for `Debug` and the tests).
    auth: AuthKind,
    container_ready: tokio::sync::OnceCell<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    SharedKey,
    Bearer,
}

impl std::fmt::Debug for BlobAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobAccount")
            .field("container", &self.inner.container.url().as_str())
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

fn parse_pairs(cs: &str) -> Vec<(String, String)> {
    cs.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// The SDK's client options: patrol's HTTP client as the transport, the SDK's retries off (patrol's own
/// loop retries, see [`BlobAccount`]), and any extra per-try policy (SharedKey signing).
fn client_options(http: reqwest::Client, per_try: Vec<Arc<dyn Policy>>) -> BlobContainerClientOptions {
    let client_options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: RetryOptions::none(),
        per_try_policies: per_try,
        ..Default::default()
    };
    BlobContainerClientOptions { client_options, ..Default::default() }
}

fn container_url(endpoint: &Url) -> Result<Url, String> {
    with_trailing_slash(endpoint.clone()).join(CONTAINER).map_err(|e| format!("the blob endpoint {endpoint}: {e}"))
}

impl BlobAccount {
    /// The account `AzureWebJobsStorage` names: a connection string (SharedKey), or identity-based
    /// (`__accountName`/`__blobServiceUri`, optional `__clientId` of a user-assigned identity) with the
    /// managed identity's bearer token. `ca_cert` (PATROL_CA_CERT) is trusted in addition to the system roots.
    pub fn from_host_storage(hs: &HostStorage, ca_cert: Option<&std::path::Path>) -> Result<Self, String> {
        match hs {
            HostStorage::ConnectionString(cs) => Self::from_connection_string_with(cs, client(ca_cert)?),
            HostStorage::Identity { blob_service_uri, client_id } => {
                let opts = azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(azure_identity::UserAssignedId::ClientId),
                    ..Default::default()
                };
                let credential = azure_identity::ManagedIdentityCredential::new(Some(opts))
                    .map_err(|e| format!("managed identity credential for AzureWebJobsStorage: {e}"))?;
                Self::with_credential(blob_service_uri, credential, client(ca_cert)?)
            }
        }
    }

    /// An identity-based account: the SDK's bearer policy puts a token for [`STORAGE_SCOPE`] from
    /// `credential` on every request (cached until shortly before it expires). The endpoint must be https
    /// (bearer tokens never travel in clear).
    pub fn with_credential(
        blob_service_uri: &Url,
        credential: Arc<dyn TokenCredential>,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        if blob_service_uri.scheme() != "https" {
            return Err(format!(
                "the blob service URI {blob_service_uri} must be https for identity-based access (bearer tokens are not sent over http)"
            ));
        }
        let container = BlobContainerClient::new(
            container_url(blob_service_uri)?,
            Some(credential),
            Some(client_options(client, Vec::new())),
        )
        .map_err(|e| format!("blob client for {blob_service_uri}: {e}"))?;
        Ok(Self::new(container, AuthKind::Bearer))
    }

    /// As [`Self::from_connection_string_with`] with a default HTTP client.
    pub fn from_connection_string(cs: &SecretString) -> Result<Self, String> {
        Self::from_connection_string_with(cs, client(None)?)
    }

    /// `UseDevelopmentStorage=true[;DevelopmentStorageProxyUri=…]`, or `AccountName=…;AccountKey=…` with
    /// `BlobEndpoint=…` or `DefaultEndpointsProtocol`/`EndpointSuffix`. Errors never echo the string.
    pub fn from_connection_string_with(cs: &SecretString, client: reqwest::Client) -> Result<Self, String> {
        let pairs = parse_pairs(cs.expose_secret());
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (account, key_b64, endpoint) =
            if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let base = get("blobendpoint").unwrap_or_else(|| format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
                (DEV_ACCOUNT.to_owned(), DEV_KEY.to_owned(), base)
            } else {
                let account = get("accountname").ok_or("the connection string has no AccountName")?;
                let key = get("accountkey").ok_or("the connection string has no AccountKey")?;
                let endpoint = match get("blobendpoint") {
                    Some(e) => e,
                    None => format!(
                        "{}://{account}.blob.{}",
                        get("defaultendpointsprotocol").unwrap_or_else(|| "https".into()),
                        get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into())
                    ),
                };
                (account, key, endpoint)
            };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_b64.as_bytes())
            .map_err(|_| "the connection string's AccountKey is not base64".to_owned())?;
        let endpoint = Url::parse(&endpoint).map_err(|e| format!("BlobEndpoint is not a URL: {e}"))?;
        let signer: Arc<dyn Policy> = Arc::new(SharedKeyPolicy { account, key: SecretBox::new(Box::new(key)) });
        let container =
            BlobContainerClient::new(container_url(&endpoint)?, None, Some(client_options(client, vec![signer])))
                .map_err(|e| format!("blob client for {endpoint}: {e}"))?;
        Ok(Self::new(container, AuthKind::SharedKey))
    }

    fn new(container: BlobContainerClient, auth: AuthKind) -> Self {
        Self { inner: Arc::new(Inner { container, auth, container_ready: tokio::sync::OnceCell::new() }) }
    }

    pub fn state_store(&self) -> BlobStateStore {
        BlobStateStore { account: self.clone() }
    }

    /// The container's URL (`…/patrol`).
    pub fn container_url(&self) -> &Url {
        self.inner.container.url()
    }
}

fn with_trailing_slash(mut endpoint: Url) -> Url {
    if !endpoint.path().ends_with('/') {
        let p = format!("{}/", endpoint.path());
        endpoint.set_path(&p);
    }
    endpoint
}

fn client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    crate::net::client_builder(ca_cert, Duration::from_secs(10), Duration::from_secs(20))
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| format!("cannot build the blob HTTP client: {e}"))
}

/// SharedKey authorisation (Azure Storage's "Authorize with Shared Key", service version 2015-02-21 and
/// later) as an `azure_core` pipeline policy: stamps `x-ms-date` and signs the request as it will be
/// sent. Hand-written because the `azure_storage_blob` 1.x SDK supports only Entra bearer tokens; patrol
/// needs SharedKey only for connection strings (Azurite's `UseDevelopmentStorage=true` in tests and local
/// runs). The key never leaves this struct.
struct SharedKeyPolicy {
    account: String,
    key: SecretBox<Vec<u8>>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy").field("account", &self.account).finish_non_exhaustive()
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        request.insert_header("x-ms-date", crate::timestamp::http_date(time::OffsetDateTime::now_utc()));
        // patrol sends whole documents (bytes); a stream of unknown length is signed as empty.
        let length = request.body().len().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let headers: Vec<(String, String)> =
            request.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect();
        let method = request.method().to_string().to_ascii_uppercase();
        let auth = sign(&self.account, &self.key, &method, request.url(), &headers, length);
        request.insert_header("authorization", auth);
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(ErrorKind::Other, "no transport after the SharedKey policy")),
        }
    }
}

/// The SharedKey `Authorization` header for a request.
fn sign(
    account: &str,
    key: &SecretBox<Vec<u8>>,
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    content_length: usize,
) -> String {
    let h =
        |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("");
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    ms.sort();
    let canon_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut q: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned())).collect();
    q.sort();
    let mut canon_resource = format!("/{account}{}", url.path());
    for (k, v) in &q {
        canon_resource.push_str(&format!("\n{k}:{v}"));
    }
    let length = if content_length == 0 { String::new() } else { content_length.to_string() };
    let to_sign = format!(
        "{method}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{canon_headers}{canon_resource}",
        h("content-encoding"),
        h("content-language"),
        h("content-md5"),
        h("content-type"),
        h("if-modified-since"),
        h("if-match"),
        h("if-none-match"),
        h("if-unmodified-since"),
        h("range"),
    );
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.expose_secret()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{sig}")
}

/// Why one storage call failed.
#[derive(Debug)]
enum Failure {
    /// No answer: the connection failed or closed before one came (retried).
    Transport(String),
    /// The service answered with this status (and error code).
    Status(u16, String),
    /// Anything else (never retried).
    Other(String),
}

impl From<azure_core::Error> for Failure {
    fn from(e: azure_core::Error) -> Self {
        match e.kind() {
            ErrorKind::HttpResponse { status, error_code, .. } => {
                Failure::Status(u16::from(*status), error_code.clone().unwrap_or_default())
            }
            ErrorKind::Connection | ErrorKind::Io => Failure::Transport(e.to_string()),
            _ => Failure::Other(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(m) | Failure::Other(m) => f.write_str(m),
            Failure::Status(s, code) => write!(f, "HTTP {s} {code}"),
        }
    }
}

/// The outcome of a lease action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    Done,
    /// Someone else holds the lease (409).
    Held,
}

impl BlobAccount {
    /// One storage call, retried on connection errors up to [`MAX_ATTEMPTS`] times ([`RETRY`]: 0.2 s,
    /// 0.8 s), as the Azure SDK's pipeline would. Every call patrol makes here is idempotent or
    /// conditional: reads; lease acquire (with the same proposed lease id, which the service accepts
    /// again), renew and release; writes with `If-Match` / `If-None-Match: *` (a retried write whose first
    /// attempt landed gets 409/412, and [`BlobStateStore::save`] then checks whether the stored document
    /// is its own). Returns the answer and whether it came from a retry.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> (Result<T, Failure>, bool)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(Failure::Transport(e)) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(call = what, attempt, error = %e, "blob storage call failed before an answer; retrying");
                    tokio::time::sleep(RETRY.delay(attempt - 1, 0.0)).await;
                    attempt += 1;
                }
                Err(Failure::Transport(e)) => {
                    let tries = if attempt > 1 { format!(" (after {attempt} attempts)") } else { String::new() };
                    return (Err(Failure::Transport(format!("blob storage unreachable{tries}: {e}"))), attempt > 1);
                }
                other => return (other, attempt > 1),
            }
        }
    }

    async fn ensure_container(&self) -> Result<(), String> {
        self.inner
            .container_ready
            .get_or_try_init(|| async {
                let (r, _) = self
                    .call("create container", || async {
                        self.inner.container.create(None).await.map(|_| ()).map_err(Failure::from)
                    })
                    .await;
                match r {
                    Ok(()) | Err(Failure::Status(409, _)) => Ok(()),
                    Err(e) => Err(format!("creating container {CONTAINER}: {e}")),
                }
            })
            .await
            .map(|_| ())
    }

    /// The blob's content and ETag, or `None` when there is no such blob.
    async fn get(&self, blob: &str) -> Result<Option<(Vec<u8>, String)>, String> {
        let client = self.inner.container.blob_client(blob);
        let (r, _) = self
            .call("get", || async {
                let opts = BlobClientDownloadOptions { parallel: std::num::NonZero::new(1), ..Default::default() };
                let d = client.download(Some(opts)).await?;
                let tag = d.properties.etag.as_ref().map(ToString::to_string).unwrap_or_default();
                let body = d.body.collect().await?;
                Ok((body.to_vec(), tag))
            })
            .await;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(Failure::Status(404, _)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes a block blob if the condition holds (`If-Match: expected`, or `If-None-Match: *` for
    /// `None`). `Ok(Err(retried))` when the condition failed (409/412).
    async fn put(&self, blob: &str, body: &[u8], expected: Option<&str>) -> Result<Result<String, bool>, String> {
        let client = self.inner.container.blob_client(blob);
        let content = body.to_vec();
        let (r, retried) = self
            .call("put", || async {
                let mut opts = BlobClientUploadOptions {
                    blob_content_type: Some("application/json".into()),
                    ..Default::default()
                };
                match expected {
                    Some(t) => opts.if_match = Some(Etag::from(t)),
                    None => opts.if_none_match = Some(Etag::from("*")),
                }
                let r = client.upload(RequestContent::from(content.clone()), Some(opts)).await?;
                Ok(r.etag.as_ref().map(ToString::to_string).unwrap_or_default())
            })
            .await;
        match r {
            Ok(tag) => Ok(Ok(tag)),
            Err(Failure::Status(409 | 412, _)) => Ok(Err(retried)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every blob name under `prefix`, all pages.
    async fn names(&self, prefix: &str) -> Result<Vec<String>, String> {
        let (r, _) = self
            .call("list", || async {
                let opts =
                    BlobContainerClientListBlobsOptions { prefix: Some(prefix.to_owned()), ..Default::default() };
                let mut pager = self.inner.container.list_blobs(Some(opts))?;
                let mut out = Vec::new();
                while let Some(item) = pager.try_next().await? {
                    if let Some(name) = item.name {
                        out.push(name);
                    }
                }
                Ok(out)
            })
            .await;
        r.map_err(|e| e.to_string())
    }

    /// Creates the (empty) blob a lease is taken on, unless it exists.
    pub async fn create_lease_blob(&self, blob: &str) -> Result<(), String> {
        self.ensure_container().await?;
        match self.put(blob, &[], None).await? {
            Ok(_) | Err(_) => Ok(()),
        }
    }

    /// Acquires a lease of [`LEASE_SECONDS`] on `blob` with the proposed id `id`.
    pub async fn acquire_lease(&self, blob: &str, id: &str) -> Result<LeaseOutcome, String> {
        let client = self.inner.container.blob_client(blob);
        let (r, _) = self
            .call("acquire lease", || async {
                let opts =
                    BlobClientAcquireLeaseOptions { proposed_lease_id: Some(id.to_owned()), ..Default::default() };
                client.acquire_lease(LEASE_SECONDS as i32, Some(opts)).await.map(|_| ()).map_err(Failure::from)
            })
            .await;
        match r {
            Ok(()) => Ok(LeaseOutcome::Done),
            Err(Failure::Status(409, _)) => Ok(LeaseOutcome::Held),
            Err(e) => Err(format!("acquiring: {e}")),
        }
    }

    /// Renews the lease `id` on `blob`.
    pub async fn renew_lease(&self, blob: &str, id: &str) -> Result<(), String> {
        let client = self.inner.container.blob_client(blob);
        let (r, _) = self
            .call("renew lease", || async {
                client.renew_lease(id.to_owned(), None).await.map(|_| ()).map_err(Failure::from)
            })
            .await;
        r.map_err(|e| format!("renewing: {e}"))
    }

    /// Releases the lease `id` on `blob`.
    pub async fn release_lease(&self, blob: &str, id: &str) -> Result<(), String> {
        let client = self.inner.container.blob_client(blob);
        let (r, _) = self
            .call("release lease", || async {
                client.release_lease(id.to_owned(), None).await.map(|_| ()).map_err(Failure::from)
            })
            .await;
        r.map_err(|e| format!("releasing: {e}"))
    }
}

/// Journal and other state documents as blobs `state/<key>.json`.
#[derive(Debug, Clone)]
pub struct BlobStateStore {
    account: BlobAccount,
}

fn io(key: &str, message: impl Into<String>) -> StateError {
    StateError::Io { key: key.to_owned(), message: message.into() }
}

#[async_trait]
impl StateStore for BlobStateStore {
    /// The container's URL (a connection string's key or a token is never part of it).
    fn location(&self) -> String {
        let mut url = self.account.container_url().clone();
        url.set_query(None);
        format!("blob container `{CONTAINER}` at {url} (AzureWebJobsStorage)")
    }

    async fn load(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        self.account.ensure_container().await.map_err(|e| io(key, e))?;
        let got = self.account.get(&format!("state/{key}.json")).await.map_err(|e| io(key, e))?;
        Ok(got.map(|(body, tag)| (body, ETag(tag))))
    }

    async fn save(&self, key: &str, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StateError> {
        validate_key(key)?;
        self.account.ensure_container().await.map_err(|e| io(key, e))?;
        let conflict = || StateError::Conflict { key: key.to_owned(), expected: expected.map(|e| e.0.clone()) };
        match self
            .account
            .put(&format!("state/{key}.json"), body, expected.map(|e| e.0.as_str()))
            .await
            .map_err(|e| io(key, e))?
        {
            Ok(tag) => Ok(ETag(tag)),
            Err(true) => {
                // The first attempt may have landed and only its answer been lost: if the stored document
                // is exactly ours, the write happened (a document equal byte for byte is the same state).
                match self.load(key).await? {
                    Some((stored, tag)) if stored == body => {
                        tracing::info!(key, "a retried write found its first attempt had landed");
                        Ok(tag)
                    }
                    _ => Err(conflict()),
                }
            }
            Err(false) => Err(conflict()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.account.ensure_container().await.map_err(|e| io(prefix, e))?;
        let names = self.account.names(&format!("state/{prefix}")).await.map_err(|e| io(prefix, e))?;
        let mut out: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("state/").and_then(|n| n.strip_suffix(".json")))
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let dev = BlobAccount::from_connection_string(&SecretString::from("UseDevelopmentStorage=true")).unwrap();
        assert_eq!(dev.container_url().as_str(), "http://127.0.0.1:10000/devstoreaccount1/patrol");
        assert_eq!(dev.inner.auth, AuthKind::SharedKey);
        let prod = BlobAccount::from_connection_string(&SecretString::from(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        ))
        .unwrap();
        assert_eq!(prod.container_url().as_str(), "https://acct.blob.core.windows.net/patrol");
        let e = BlobAccount::from_connection_string(&SecretString::from("AccountName=acct;AccountKey=%%%secretish"))
            .unwrap_err();
        assert!(!e.contains("secretish"));
        assert!(!format!("{dev:?}").contains(DEV_KEY), "the key is never printed");
    }

    #[test]
    fn identity_access_is_https_only() {
        #[derive(Debug)]
        struct NoCredential;
        #[async_trait]
        impl TokenCredential for NoCredential {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(azure_core::Error::with_message(ErrorKind::Credential, "none"))
            }
        }
        let http = Url::parse("http://acct.blob.core.windows.net").unwrap();
        let e = BlobAccount::with_credential(&http, Arc::new(NoCredential), client(None).unwrap()).unwrap_err();
        assert!(e.contains("must be https"), "{e}");
        let https = Url::parse("https://acct.blob.core.windows.net").unwrap();
        let acc = BlobAccount::with_credential(&https, Arc::new(NoCredential), client(None).unwrap()).unwrap();
        assert_eq!(acc.container_url().as_str(), "https://acct.blob.core.windows.net/patrol");
        assert_eq!(acc.inner.auth, AuthKind::Bearer);
    }

    #[test]
    fn identity_settings_build_a_managed_identity_account() {
        let hs = HostStorage::Identity {
            blob_service_uri: Url::parse("https://acct.blob.core.windows.net").unwrap(),
            client_id: Some("00000000-0000-0000-0000-000000000001".into()),
        };
        let acc = BlobAccount::from_host_storage(&hs, None).unwrap();
        assert_eq!(acc.inner.auth, AuthKind::Bearer);
    }

    /// The string-to-sign of Microsoft's documented example layout: every standard header in its place,
    /// `x-ms-*` headers sorted and lower-cased, query parameters sorted under the resource.
    #[test]
    fn shared_key_signs_the_canonical_request() {
        let key = SecretBox::new(Box::new(b"key".to_vec()));
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/patrol/state/a.json?comp=lease&b=2").unwrap();
        let headers = vec![
            ("X-Ms-Version".to_owned(), "2021-10-04".to_owned()),
            ("x-ms-date".to_owned(), "Mon, 01 Jan 2024 00:00:00 GMT".to_owned()),
            ("If-Match".to_owned(), "\"0x1\"".to_owned()),
        ];
        let got = sign("devstoreaccount1", &key, "PUT", &url, &headers, 7);
        let expected_string = "PUT\n\n\n7\n\n\n\n\n\"0x1\"\n\n\n\nx-ms-date:Mon, 01 Jan 2024 00:00:00 GMT\nx-ms-version:2021-10-04\n/devstoreaccount1/devstoreaccount1/patrol/state/a.json\nb:2\ncomp:lease";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(expected_string.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(got, format!("SharedKey devstoreaccount1:{sig}"));
    }
}
