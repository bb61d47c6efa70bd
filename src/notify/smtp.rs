//! Email through SMTP with `lettre`: STARTTLS (required, never opportunistic) or implicit TLS, optional
//! authentication, multipart/alternative text + HTML. Plain connections are allowed only to a loopback
//! host (test servers and local relays), so a password never crosses a network in clear.

use super::Target;
use super::channel::{Channel, SendError};
use super::digest::Message;
use crate::config::{SmtpSettings, SmtpTls};
use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

#[derive(Clone)]
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    endpoint: String,
}

impl std::fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel").field("endpoint", &self.endpoint).field("from", &self.from.to_string()).finish()
    }
}

/// The sender mailbox (`PATROL_SMTP_FROM`).
pub fn parse_from(from: &str) -> Result<Mailbox, String> {
    from.parse::<Mailbox>().map_err(|e| format!("PATROL_SMTP_FROM {from:?} is not an email address: {e}"))
}

impl SmtpChannel {
    /// A channel for `settings`; `password` is the resolved SMTP password (from settings or the secret
    /// store), `extra_ca_pem` an additional trusted CA (`PATROL_CA_CERT`).
    pub fn new(
        settings: &SmtpSettings,
        password: Option<SecretString>,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        let host = settings.host.as_str();
        let tls = match settings.tls {
            SmtpTls::None => {
                if !crate::config::is_loopback_host(host) {
                    return Err(format!(
                        "PATROL_SMTP_TLS=none is allowed only for a loopback host, not {host:?}; use starttls or implicit"
                    ));
                }
                Tls::None
            }
            mode => {
                let mut params = TlsParameters::builder(host.to_owned());
                if let Some(pem) = extra_ca_pem {
                    let cert = Certificate::from_pem(pem).map_err(|e| format!("PATROL_CA_CERT: {e}"))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params.build().map_err(|e| format!("SMTP TLS setup for {host}: {e}"))?;
                if mode == SmtpTls::Implicit { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(20)));
        match (&settings.username, password) {
            (Some(user), Some(pw)) => {
                builder = builder.credentials(Credentials::new(user.clone(), pw.expose_secret().to_owned()));
            }
            (Some(_), None) => {
                return Err(
                    "PATROL_SMTP_USERNAME is set but neither PATROL_SMTP_PASSWORD nor PATROL_SMTP_PASSWORD_SECRET gives a password"
                        .to_owned(),
                );
            }
            (None, Some(_)) => return Err("an SMTP password is set but PATROL_SMTP_USERNAME is not".to_owned()),
            (None, None) => {}
        }
        Ok(Self {
            transport: builder.build(),
            from: parse_from(&settings.from)?,
            endpoint: format!("{host}:{}", settings.port),
        })
    }
}

/// The email for `to`: multipart/alternative (text, then HTML), with patrol's severity in a header.
pub fn build_email(from: &Mailbox, to: &str, m: &Message) -> Result<lettre::Message, SendError> {
    let to: Mailbox =
        to.parse().map_err(|e| SendError::permanent(format!("recipient {to:?} is not an email address: {e}")))?;
    let severity = match m.severity {
        super::Severity::Critical => "critical",
        super::Severity::Warning => "warning",
        super::Severity::Info => "info",
    };
    let mut b = lettre::Message::builder().from(from.clone()).to(to).subject(m.subject.clone());
    b = b.header(XPatrolSeverity(severity.to_owned()));
    if m.severity == super::Severity::Critical {
        b = b.header(XPriority("1 (Highest)".to_owned()));
    }
    b.multipart(MultiPart::alternative_plain_html(m.text.clone(), m.html.clone()))
        .map_err(|e| SendError::permanent(format!("cannot build the email: {e}")))
}

macro_rules! text_header {
    ($ty:ident, $name:literal) => {
        #[derive(Debug, Clone)]
        struct $ty(String);
        impl header::Header for $ty {
            fn name() -> header::HeaderName {
                header::HeaderName::new_from_ascii_str($name)
            }
            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Self(s.to_owned()))
            }
            fn display(&self) -> header::HeaderValue {
                header::HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}
text_header!(XPatrolSeverity, "X-Patrol-Severity");
text_header!(XPriority, "X-Priority");

#[async_trait]
impl Channel for SmtpChannel {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, to: &Target, message: &Message) -> Result<(), SendError> {
        let Target::Email(addr) = to else {
            return Err(SendError::permanent(format!("smtp cannot deliver to {to}")));
        };
        let email = build_email(&self.from, addr, message)?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| {
            // 5xx replies are final; 4xx, timeouts and connection trouble are worth another try.
            let retryable = !e.is_permanent() && !e.is_client();
            let msg = format!("smtp {}: {e}", self.endpoint);
            if retryable { SendError::retryable(msg) } else { SendError::permanent(msg) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(host: &str, tls: SmtpTls, user: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            host: host.into(),
            port: 25,
            tls,
            username: user.map(str::to_owned),
            password: None,
            password_secret: None,
            from: "patrol@contoso.com".into(),
        }
    }

    #[test]
    fn plain_only_to_loopback() {
        assert!(SmtpChannel::new(&settings("127.0.0.1", SmtpTls::None, None), None, None).is_ok());
        assert!(SmtpChannel::new(&settings("localhost", SmtpTls::None, None), None, None).is_ok());
        let e = SmtpChannel::new(&settings("smtp.contoso.com", SmtpTls::None, None), None, None).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(SmtpChannel::new(&settings("smtp.contoso.com", SmtpTls::Starttls, None), None, None).is_ok());
    }

    #[test]
    fn credentials_must_be_complete_and_are_not_printed() {
        let e = SmtpChannel::new(&settings("127.0.0.1", SmtpTls::None, Some("u")), None, None).unwrap_err();
        assert!(e.contains("PATROL_SMTP_PASSWORD"), "{e}");
        let ch = SmtpChannel::new(
            &settings("127.0.0.1", SmtpTls::None, Some("u")),
            Some(SecretString::from("hunter2-smtp")),
            None,
        )
        .unwrap();
        assert!(!format!("{ch:?}").contains("hunter2"));
    }
}
