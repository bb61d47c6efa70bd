//! The request view the emulated services work on (method, decoded path segments, query, headers,
//! body, peer address) and the per-connection handle that lets a fault drop the connection without a
//! response.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;

/// Inserted into every request's extensions by the connection loop.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Notified to close the connection at once, without writing a response.
    pub kill: Arc<Notify>,
}

/// Inserted by the proxy ([`crate::proxy`]) into every request it tunnels: the Azure host name the client
/// asked for (`dev.azure.com`, `login.microsoftonline.com`, `<vault>.vault.azure.net`…), so that URLs in
/// responses name Azure's hosts rather than the loopback listener.
#[derive(Clone, Debug)]
pub struct PublicHost(pub String);

#[derive(Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
    /// Set when the request came through the proxy under an Azure host name.
    pub public_host: Option<String>,
}

impl ApiRequest {
    pub fn new(method: Method, uri: &axum::http::Uri, headers: HeaderMap, body: Bytes, peer: SocketAddr) -> Self {
        let path = uri.path().to_string();
        let segments = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let query = uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        Self { method, path, segments, query, headers, body, peer, public_host: None }
    }

    /// A query parameter, by case-insensitive name (ASP.NET binds them that way).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `api-version`: the query parameter, else the `api-version` parameter of the `Accept` header
    /// (`application/json; api-version=7.1-preview.1`), which Azure DevOps treats alike and Microsoft's
    /// SDKs send exclusively.
    pub fn api_version(&self) -> Option<&str> {
        if let Some(v) = self.query("api-version") {
            return Some(v);
        }
        self.headers.get_all("accept").iter().filter_map(|v| v.to_str().ok()).find_map(|accept| {
            accept.split([',', ';']).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("api-version").then(|| v.trim().trim_matches('"'))
            })
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn user_agent(&self) -> Option<String> {
        self.header("user-agent").map(str::to_string)
    }

    pub fn client_ip(&self) -> String {
        self.peer.ip().to_string()
    }

    /// `X-TFS-FedAuthRedirect: Suppress` — return 401 instead of the sign-in page.
    pub fn suppress_redirect(&self) -> bool {
        self.header("x-tfs-fedauthredirect").is_some_and(|v| v.trim().eq_ignore_ascii_case("suppress"))
    }

    /// Segment `i`, compared case-insensitively.
    pub fn seg_is(&self, i: usize, name: &str) -> bool {
        self.segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_segments_and_query_case_insensitively() {
        let uri: axum::http::Uri = "/fab%20rikam/_apis/Tokens/Pats?API-Version=7.1-preview.1&%24top=5".parse().unwrap();
        let r = ApiRequest::new(Method::GET, &uri, HeaderMap::new(), Bytes::new(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.segments, vec!["fab rikam", "_apis", "Tokens", "Pats"]);
        assert_eq!(r.query("api-version"), Some("7.1-preview.1"));
        assert_eq!(r.query("$top"), Some("5"));
        assert!(r.seg_is(2, "tokens"));
    }

    #[test]
    fn api_version_from_the_query_or_the_accept_header() {
        let uri: axum::http::Uri = "/o/_apis/tokens/pats".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json; api-version=7.1-preview.1".parse().unwrap());
        let r = ApiRequest::new(Method::GET, &uri, h.clone(), Bytes::new(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.api_version(), Some("7.1-preview.1"));
        let uri: axum::http::Uri = "/o/_apis/tokens/pats?api-version=7.2-preview.1".parse().unwrap();
        let r = ApiRequest::new(Method::GET, &uri, h, Bytes::new(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.api_version(), Some("7.2-preview.1"), "the query wins");
        let r = ApiRequest::new(Method::GET, &uri, HeaderMap::new(), Bytes::new(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.api_version(), Some("7.2-preview.1"));
    }
}
