//! The one way patrol builds an HTTP client: redirects never followed (a redirect would carry a token or a
//! secret URL to another host), bounded timeouts, and the extra CA of `PATROL_CA_CERT` (e.g.
//! patrol-emulator's) trusted beside the OS roots. Callers add what is theirs (a user agent) and build.
//! Imports nothing from the crate, so every layer may use it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The extra CA certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaCertError {
    #[error("cannot read CA certificate {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("CA certificate {} is not PEM: {source}", path.display())]
    NotPem { path: PathBuf, source: reqwest::Error },
}

/// A client builder with redirects off, `connect_timeout`/`timeout`, and `ca_cert` trusted when given.
pub fn client_builder(
    ca_cert: Option<&Path>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, CaCertError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|source| CaCertError::Read { path: path.to_owned(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| CaCertError::NotPem { path: path.to_owned(), source })?;
        b = b.tls_certs_merge(certs);
    }
    Ok(b)
}
