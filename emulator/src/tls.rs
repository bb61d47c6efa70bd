//! TLS for the emulator's HTTPS endpoints: a certificate authority generated at start (its PEM written to a
//! file that clients are told to trust) and a leaf certificate for the loopback names the emulator serves.
//!
//! The Key Vault SDK refuses plain HTTP, so the Key Vault emulator is HTTPS-only. Nothing here is meant to
//! be trusted beyond one emulator run: the CA key lives only in memory and is never written out.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// A generated CA and a server configuration presenting a leaf it signed.
#[derive(Clone)]
pub struct EmulatorTls {
    /// PEM of the CA certificate (trust this).
    pub ca_cert_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    /// The CA's DER (sent after each leaf) and its signing key, kept in memory only, for further leaves
    /// ([`EmulatorTls::server_config_for`]).
    ca_der: rustls::pki_types::CertificateDer<'static>,
    issuer: Arc<Issuer<'static, KeyPair>>,
}

impl std::fmt::Debug for EmulatorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorTls").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the emulator certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS server configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

impl EmulatorTls {
    /// A fresh CA and a leaf for `127.0.0.1`, `::1`, `localhost`, `*.localhost` and `extra_names`.
    pub fn generate(extra_names: &[String]) -> Result<Self, TlsError> {
        // Real time, not the virtual clock: TLS clients check validity against the host's clock.
        let now = OffsetDateTime::now_utc();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.distinguished_name.push(DnType::CommonName, "patrol-emulator local CA (one run only)");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = now - Duration::days(1);
        ca_params.not_after = now + Duration::days(3650);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names =
            vec!["localhost".to_owned(), "*.localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        names.extend(extra_names.iter().cloned());
        let ca_der = ca_cert.der().clone();
        let issuer = Arc::new(issuer);
        let server_config = leaf_config(&issuer, &ca_der, names)?;
        Ok(Self { ca_cert_pem: ca_cert.pem(), server_config, ca_der, issuer })
    }

    /// A server configuration presenting a new leaf, signed by this CA, for exactly `names` (the proxy's
    /// Azure host names: the loopback listeners' leaf does not carry them).
    pub fn server_config_for(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        leaf_config(&self.issuer, &self.ca_der, names.to_vec())
    }
}

fn leaf_config(
    issuer: &Issuer<'static, KeyPair>,
    ca_der: &rustls::pki_types::CertificateDer<'static>,
    names: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let now = OffsetDateTime::now_utc();
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params.distinguished_name.push(DnType::CommonName, "patrol-emulator");
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = now - Duration::days(1);
    leaf_params.not_after = now + Duration::days(3650);
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, issuer)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_der.clone()], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves an axum router over TLS on an already-bound listener until the task is aborted.
pub async fn serve_tls(listener: tokio::net::TcpListener, tls: EmulatorTls, app: axum::Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
