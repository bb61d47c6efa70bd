//! The Function App's own storage account (`AzureWebJobsStorage`) as patrol's shared state: per-token
//! blob leases ([`BlobLeases`], the mechanism the Functions host uses for its singletons) and a blob
//! [`StateStore`] ([`BlobStateStore`], ETag-conditional writes) so every Functions instance shares one
//! journal. Blob REST calls are authorised either with SharedKey (HMAC-SHA256) from a connection string,
//! including `UseDevelopmentStorage=true` for Azurite, or — for identity-based `AzureWebJobsStorage__*`
//! settings, which production uses because the storage account has shared keys disabled — with an
//! Entra bearer token for `https://storage.azure.com/.default` from the managed identity (HTTPS only).

use crate::rotation::lease::{LeaseError, LeaseGuard, Leases};
use crate::config::HostStorage;
use crate::state::{ETag, StateError, StateStore, validate_key};
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use url::Url;

const API_VERSION: &str = "2021-10-04";
const CONTAINER: &str = "patrol";
/// Azurite's well-known development account key (public; documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Blob lease length (15–60 s or infinite); renewed every third of it.
pub const LEASE_SECONDS: u64 = 60;

/// The OAuth scope of Azure Storage (data plane).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// A storage account reached with SharedKey or an Entra bearer token.
#[derive(Clone)]
pub struct BlobAccount {
    inner: Arc<Inner>,
}

struct Inner {
    /// `…/` ending in the account's blob root (for Azurite `http://127.0.0.1:10000/devstoreaccount1/`).
    endpoint: Url,
    auth: Auth,
    client: reqwest::Client,
    container_ready: tokio::sync::OnceCell<()>,
}

enum Auth {
    SharedKey {
        account: String,
        key: SecretBox<Vec<u8>>,
    },
    /// Tokens for [`STORAGE_SCOPE`], cached until five minutes before they expire.
    Bearer {
        credential: Arc<dyn TokenCredential>,
        cached: tokio::sync::Mutex<Option<AccessToken>>,
    },
}

impl std::fmt::Debug for BlobAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobAccount").field("endpoint", &self.inner.endpoint.as_str()).finish_non_exhaustive()
    }
}

fn parse_pairs(cs: &str) -> Vec<(String, String)> {
    cs.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
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

    /// An identity-based account: every request carries `Authorization: Bearer` with a token for
    /// [`STORAGE_SCOPE`] from `credential`. The endpoint must be https (bearer tokens never travel in clear).
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
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: with_trailing_slash(blob_service_uri.clone()),
                auth: Auth::Bearer { credential, cached: tokio::sync::Mutex::new(None) },
                client,
                container_ready: tokio::sync::OnceCell::new(),
            }),
        })
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
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: with_trailing_slash(endpoint),
                auth: Auth::SharedKey { account, key: SecretBox::new(Box::new(key)) },
                client,
                container_ready: tokio::sync::OnceCell::new(),
            }),
        })
    }

    pub fn state_store(&self) -> BlobStateStore {
        BlobStateStore { account: self.clone() }
    }

    pub fn leases(&self) -> BlobLeases {
        BlobLeases { account: self.clone() }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, String> {
        let mut u = self.inner.endpoint.join(path).map_err(|e| e.to_string())?;
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        Ok(u)
    }

    /// The `Authorization` header for a request: SharedKey, or a (cached) bearer token.
    async fn authorization(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        content_length: usize,
    ) -> Result<String, String> {
        match &self.inner.auth {
            Auth::SharedKey { account, key } => Ok(sign(account, key, method, url, headers, content_length)),
            Auth::Bearer { credential, cached } => {
                let mut cached = cached.lock().await;
                let fresh = cached
                    .as_ref()
                    .is_some_and(|t| t.expires_on - time::Duration::minutes(5) > time::OffsetDateTime::now_utc());
                if !fresh {
                    let t = credential.get_token(&[STORAGE_SCOPE], None).await.map_err(|e| {
                        format!("cannot get a token for {STORAGE_SCOPE} (identity-based AzureWebJobsStorage): {e}")
                    })?;
                    *cached = Some(t);
                }
                match cached.as_ref() {
                    Some(t) => Ok(format!("Bearer {}", t.token.secret())),
                    None => Err("no storage token".into()),
                }
            }
        }
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
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read CA certificate {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA certificate {} is not PEM: {e}", path.display()))?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| format!("cannot build the blob HTTP client: {e}"))
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
        "{method}\n\n\n{length}\n\n{}\n\n\n{}\n{}\n\n\n{canon_headers}{canon_resource}",
        h("content-type"),
        h("if-match"),
        h("if-none-match"),
    );
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.expose_secret()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{sig}")
}

/// Why one attempt at a storage call failed.
enum SendError {
    /// No answer: the connection failed (maybe retriable).
    Transport(reqwest::Error),
    /// The request could not be made (URL, authorization): never retried.
    Other(String),
}

/// How many times one storage call is tried when the connection fails (the first try included).
pub const MAX_ATTEMPTS: u32 = 3;

/// Whether a transport error may be retried: the connection failed or closed before an answer came (a
/// keep-alive connection the server had already closed, a reset, a refused connect, a timeout) — not an
/// answer that could not be read or decoded.
fn retriable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_request() || e.is_timeout()
}

impl BlobAccount {
    /// One storage call, retried on connection errors up to [`MAX_ATTEMPTS`] times with a short backoff
    /// (0.2 s, 0.8 s), as the Azure SDK's pipeline retries. Every call patrol makes here is idempotent or
    /// conditional: reads; lease acquire (with the same proposed lease id, which the service accepts
    /// again), renew and release; writes with `If-Match` / `If-None-Match: *` (a retried write whose first
    /// attempt landed gets 409/412, and [`BlobStateStore::save`] then checks whether the stored document
    /// is its own). Returns the answer and whether it came from a retry.
    async fn send_counted(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(reqwest::Response, bool), String> {
        let mut attempt = 1;
        loop {
            match self.send_once(method.clone(), path, query, extra, body.clone()).await {
                Ok(r) => return Ok((r, attempt > 1)),
                Err(SendError::Other(m)) => return Err(m),
                Err(SendError::Transport(e)) if attempt < MAX_ATTEMPTS && retriable(&e) => {
                    tracing::warn!(
                        method = %method,
                        attempt,
                        error = %e.without_url(),
                        "blob storage call failed before an answer; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * 4u64.pow(attempt - 1))).await;
                    attempt += 1;
                }
                Err(SendError::Transport(e)) => {
                    let tries = if attempt > 1 { format!(" (after {attempt} attempts)") } else { String::new() };
                    return Err(format!("blob storage unreachable{tries}: {}", e.without_url()));
                }
            }
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, String> {
        self.send_counted(method, path, query, extra, body).await.map(|(r, _)| r)
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, SendError> {
        let url = self.url(path, query).map_err(SendError::Other)?;
        let date = httpdate(std::time::SystemTime::now());
        let mut headers: Vec<(String, String)> =
            vec![("x-ms-date".into(), date), ("x-ms-version".into(), API_VERSION.into())];
        for (k, v) in extra {
            headers.push(((*k).to_owned(), v.clone()));
        }
        let len = body.as_ref().map_or(0, Vec::len);
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let auth = self.authorization(method.as_str(), &url, &headers, len).await.map_err(SendError::Other)?;
        let mut rb = self.inner.client.request(method, url).header("authorization", auth);
        for (k, v) in &headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        rb = rb.header("content-length", len.to_string());
        if let Some(b) = body {
            rb = rb.body(b);
        }
        rb.send().await.map_err(SendError::Transport)
    }

    async fn ensure_container(&self) -> Result<(), String> {
        self.inner
            .container_ready
            .get_or_try_init(|| async {
                let r = self.send(reqwest::Method::PUT, CONTAINER, &[("restype", "container")], &[], None).await?;
                match r.status().as_u16() {
                    201 | 409 => Ok(()),
                    s => Err(format!("creating container {CONTAINER}: HTTP {s} {}", error_code(r).await)),
                }
            })
            .await
            .map(|_| ())
    }
}

async fn error_code(r: reqwest::Response) -> String {
    let code = r.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let _ = r.bytes().await;
    code
}

fn httpdate(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    dt.format(&f).unwrap_or_default()
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
    async fn load(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        self.account.ensure_container().await.map_err(|e| io(key, e))?;
        let path = format!("{CONTAINER}/state/{key}.json");
        let r = self.account.send(reqwest::Method::GET, &path, &[], &[], None).await.map_err(|e| io(key, e))?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => {
                let tag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let body = r.bytes().await.map_err(|e| io(key, e.to_string()))?;
                Ok(Some((body.to_vec(), ETag(tag))))
            }
            s => Err(io(key, format!("HTTP {s} {}", error_code(r).await))),
        }
    }

    async fn save(&self, key: &str, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StateError> {
        validate_key(key)?;
        self.account.ensure_container().await.map_err(|e| io(key, e))?;
        let path = format!("{CONTAINER}/state/{key}.json");
        let cond = match expected {
            Some(t) => ("If-Match", t.0.clone()),
            None => ("If-None-Match", "*".to_owned()),
        };
        let (r, retried) = self
            .account
            .send_counted(
                reqwest::Method::PUT,
                &path,
                &[],
                &[("x-ms-blob-type", "BlockBlob".into()), cond],
                Some(body.to_vec()),
            )
            .await
            .map_err(|e| io(key, e))?;
        match r.status().as_u16() {
            201 | 200 => Ok(ETag(r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())),
            409 | 412 if retried => {
                // The first attempt may have landed and only its answer been lost: if the stored document
                // is exactly ours, the write happened (a document equal byte for byte is the same state).
                let _ = error_code(r).await;
                match self.load(key).await? {
                    Some((stored, tag)) if stored == body => {
                        tracing::info!(key, "a retried write found its first attempt had landed");
                        Ok(tag)
                    }
                    _ => Err(StateError::Conflict { key: key.to_owned(), expected: expected.map(|e| e.0.clone()) }),
                }
            }
            409 | 412 => Err(StateError::Conflict { key: key.to_owned(), expected: expected.map(|e| e.0.clone()) }),
            s => Err(io(key, format!("HTTP {s} {}", error_code(r).await))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.account.ensure_container().await.map_err(|e| io(prefix, e))?;
        let full = format!("state/{prefix}");
        let mut out = Vec::new();
        let mut marker = String::new();
        for _ in 0..10_000 {
            let mut q = vec![("restype", "container"), ("comp", "list"), ("prefix", full.as_str())];
            if !marker.is_empty() {
                q.push(("marker", marker.as_str()));
            }
            let r =
                self.account.send(reqwest::Method::GET, CONTAINER, &q, &[], None).await.map_err(|e| io(prefix, e))?;
            if r.status().as_u16() != 200 {
                return Err(io(prefix, format!("HTTP {} {}", r.status().as_u16(), error_code(r).await)));
            }
            let xml = r.text().await.map_err(|e| io(prefix, e.to_string()))?;
            for name in tag_values(&xml, "Name") {
                if let Some(k) = name.strip_prefix("state/").and_then(|n| n.strip_suffix(".json")) {
                    out.push(k.to_owned());
                }
            }
            marker = tag_values(&xml, "NextMarker").into_iter().next().unwrap_or_default();
            if marker.is_empty() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The text of every `<tag>…</tag>` (blob names are XML-escaped; keys use no characters needing it).
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

/// Per-token blob leases on `leases/<key>`, renewed in the background while held.
#[derive(Debug, Clone)]
pub struct BlobLeases {
    account: BlobAccount,
}

fn lease_err(key: &str, message: impl Into<String>) -> LeaseError {
    LeaseError::Storage { key: key.to_owned(), message: message.into() }
}

#[async_trait]
impl Leases for BlobLeases {
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError> {
        validate_key(key).map_err(|e| lease_err(key, e.to_string()))?;
        let acc = &self.account;
        acc.ensure_container().await.map_err(|e| lease_err(key, e))?;
        let path = format!("{CONTAINER}/leases/{key}");
        // The blob must exist to be leased; create it once (an existing one is fine).
        let r = acc
            .send(
                reqwest::Method::PUT,
                &path,
                &[],
                &[("x-ms-blob-type", "BlockBlob".into()), ("If-None-Match", "*".into())],
                Some(Vec::new()),
            )
            .await
            .map_err(|e| lease_err(key, e))?;
        if !matches!(r.status().as_u16(), 201 | 409 | 412) {
            return Err(lease_err(
                key,
                format!("creating the lease blob: HTTP {} {}", r.status().as_u16(), error_code(r).await),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let r = acc
            .send(
                reqwest::Method::PUT,
                &path,
                &[("comp", "lease")],
                &[
                    ("x-ms-lease-action", "acquire".into()),
                    ("x-ms-lease-duration", LEASE_SECONDS.to_string()),
                    ("x-ms-proposed-lease-id", id.clone()),
                ],
                None,
            )
            .await
            .map_err(|e| lease_err(key, e))?;
        match r.status().as_u16() {
            201 | 200 => {}
            409 => return Ok(None),
            s => return Err(lease_err(key, format!("acquiring: HTTP {s} {}", error_code(r).await))),
        }
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(tokio::sync::Notify::new());
        let renew = {
            let (acc, path, id, lost, stop) = (acc.clone(), path.clone(), id.clone(), lost.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.notified() => break,
                        _ = tokio::time::sleep(Duration::from_secs(LEASE_SECONDS / 3)) => {}
                    }
                    // Retries included, a renewal must be done well before the lease would expire (the
                    // last renewal was LEASE_SECONDS / 3 ago): else the lease counts as lost.
                    let headers = [("x-ms-lease-action", "renew".to_owned()), ("x-ms-lease-id", id.clone())];
                    let renew = acc.send(reqwest::Method::PUT, &path, &[("comp", "lease")], &headers, None);
                    let ok = tokio::time::timeout(Duration::from_secs(LEASE_SECONDS / 3), renew)
                        .await
                        .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
                    if !ok {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!(lease = %path, "could not renew a blob lease; stopping work under it");
                        break;
                    }
                }
                // Release (best effort; an unreleased lease expires after LEASE_SECONDS).
                let _ = acc
                    .send(
                        reqwest::Method::PUT,
                        &path,
                        &[("comp", "lease")],
                        &[("x-ms-lease-action", "release".into()), ("x-ms-lease-id", id)],
                        None,
                    )
                    .await;
            })
        };
        drop(renew); // detached: it stops and releases when the guard is dropped
        Ok(Some(LeaseGuard::new(key.to_owned(), Box::new(move || stop.notify_one()), lost)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let dev = BlobAccount::from_connection_string(&SecretString::from("UseDevelopmentStorage=true")).unwrap();
        assert_eq!(dev.inner.endpoint.as_str(), "http://127.0.0.1:10000/devstoreaccount1/");
        let prod = BlobAccount::from_connection_string(&SecretString::from(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        ))
        .unwrap();
        assert_eq!(prod.inner.endpoint.as_str(), "https://acct.blob.core.windows.net/");
        let e = BlobAccount::from_connection_string(&SecretString::from("AccountName=acct;AccountKey=%%%secretish"))
            .unwrap_err();
        assert!(!e.contains("secretish"));
    }

    #[derive(Debug, Default)]
    struct CountingCredential(std::sync::atomic::AtomicUsize, std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl TokenCredential for CountingCredential {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.lock().unwrap().extend(scopes.iter().map(|s| s.to_string()));
            Ok(AccessToken::new(
                azure_core::credentials::Secret::new("tok-123"),
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    #[tokio::test]
    async fn identity_access_uses_a_cached_storage_bearer_token_over_https_only() {
        let cred = Arc::new(CountingCredential::default());
        let http = Url::parse("http://acct.blob.core.windows.net").unwrap();
        let e = BlobAccount::with_credential(&http, cred.clone(), client(None).unwrap()).unwrap_err();
        assert!(e.contains("must be https"), "{e}");
        let https = Url::parse("https://acct.blob.core.windows.net").unwrap();
        let acc = BlobAccount::with_credential(&https, cred.clone(), client(None).unwrap()).unwrap();
        assert_eq!(acc.inner.endpoint.as_str(), "https://acct.blob.core.windows.net/");
        let url = acc.url("patrol/state/x.json", &[]).unwrap();
        for _ in 0..3 {
            assert_eq!(acc.authorization("GET", &url, &[], 0).await.unwrap(), "Bearer tok-123");
        }
        assert_eq!(cred.0.load(Ordering::SeqCst), 1, "the token is cached");
        assert_eq!(*cred.1.lock().unwrap(), vec![STORAGE_SCOPE.to_owned()]);
        // The API version sent supports bearer tokens (2017-11-09 or later; ISO dates compare as strings).
        assert!(API_VERSION >= "2017-11-09");
    }

    #[test]
    fn identity_settings_build_a_managed_identity_account() {
        let hs = HostStorage::Identity {
            blob_service_uri: Url::parse("https://acct.blob.core.windows.net").unwrap(),
            client_id: Some("00000000-0000-0000-0000-000000000001".into()),
        };
        let acc = BlobAccount::from_host_storage(&hs, None).unwrap();
        assert!(matches!(acc.inner.auth, Auth::Bearer { .. }));
    }

    #[test]
    fn xml_names() {
        let xml = "<EnumerationResults><Blobs><Blob><Name>state/journal/a.json</Name></Blob><Blob><Name>state/b.json</Name></Blob></Blobs><NextMarker /></EnumerationResults>";
        assert_eq!(tag_values(xml, "Name"), vec!["state/journal/a.json", "state/b.json"]);
    }
}
