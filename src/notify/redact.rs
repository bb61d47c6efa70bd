//! The last line of defence against a secret in a message: every string that goes into a notification
//! passes through a [`Redactor`] before it is rendered.
//!
//! [`crate::notify::Notice`] never carries a secret value by construction, but some of its text comes from
//! elsewhere (an API error message, an audit-log field). The redactor removes
//! - every value it was told about (the SMTP password, the webhook URLs, anything else registered), and
//! - anything shaped like a credential: a run of 40 or more letters and digits (Azure DevOps PATs are 52
//!   or 84 characters, Entra refresh tokens and access-token segments are longer), a JWT (`eyJ….eyJ…`),
//!   and the query string of a URL carrying a signature (`sig=`, `code=`, `token=`).
//!
//! GUIDs (authorization ids), Key Vault version ids (32 hex characters), display names and dates are
//! shorter than the threshold and pass unchanged.

use secrecy::{ExposeSecret, SecretString};

/// What a removed value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shortest run of ASCII letters and digits treated as a credential.
const MIN_SECRET_RUN: usize = 40;

/// Removes known secret values and credential-shaped text.
#[derive(Clone, Default)]
pub struct Redactor {
    known: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("known", &self.known.len()).finish()
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a value that must never appear in a message (ignored when shorter than 4 characters,
    /// which would redact ordinary words).
    pub fn add(&mut self, secret: &SecretString) {
        if secret.expose_secret().chars().count() >= 4 {
            self.known.push(secret.clone());
            // Longest first, so a URL is removed before a shorter secret inside it.
            self.known.sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
        }
    }

    /// `text` without known secrets or credential-shaped runs.
    pub fn clean(&self, text: &str) -> String {
        self.clean_allowing(text, &[])
    }

    /// Like [`Redactor::clean`], but a long run that is part of one of `allowed` (validated identifiers
    /// such as secret names and display names of the notice being rendered) is kept.
    pub fn clean_allowing(&self, text: &str, allowed: &[&str]) -> String {
        let mut out = text.to_owned();
        for s in &self.known {
            let v = s.expose_secret();
            if out.contains(v) {
                out = out.replace(v, REDACTED);
            }
        }
        let out = redact_signed_queries(&out);
        let out = redact_jwts(&out);
        redact_long_runs(&out, allowed)
    }

    /// Whether `text` still contains a known secret (used to refuse a body as a final check).
    pub fn leaks(&self, text: &str) -> bool {
        self.known.iter().any(|s| text.contains(s.expose_secret()))
    }
}

fn redact_long_runs(text: &str, allowed: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= MIN_SECRET_RUN && !allowed.iter().any(|a| a.contains(run.as_str())) {
            out.push_str(REDACTED);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn redact_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')).unwrap_or(tail.len());
        let candidate = &tail[..end];
        if candidate.matches('.').count() >= 1 && candidate.len() >= 20 {
            out.push_str(REDACTED);
        } else {
            out.push_str(candidate);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Drops the query of URLs that carry a signature or a code (`…?sig=…`, `…?code=…`, `…?token=…`).
fn redact_signed_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lower = word.to_ascii_lowercase();
        let signed = ["sig=", "code=", "token=", "key=", "secret="]
            .iter()
            .any(|k| lower.contains(&format!("?{k}")) || lower.contains(&format!("&{k}")));
        match word.find('?') {
            Some(q) if signed && (lower.starts_with("http://") || lower.starts_with("https://")) => {
                out.push_str(&word[..q]);
                out.push('?');
                out.push_str(REDACTED);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_known_and_shaped_secrets() {
        let mut r = Redactor::new();
        r.add(&SecretString::from("hunter2-password"));
        r.add(&SecretString::from("ab"));
        let pat52 = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst";
        assert_eq!(pat52.len(), 52);
        let text = format!("pw hunter2-password pat {pat52}. ab stays");
        assert_eq!(r.clean(&text), "pw [redacted] pat [redacted]. ab stays");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-part_x";
        assert_eq!(r.clean(&format!("bearer {jwt} end")), "bearer [redacted] end");
        assert_eq!(
            r.clean("see https://x.logic.azure.com/workflows/1/run?api-version=1&sig=abc now"),
            "see https://x.logic.azure.com/workflows/1/run?[redacted] now"
        );
        assert!(r.leaks("xx hunter2-password"));
        assert!(!r.leaks("nothing"));
    }

    #[test]
    fn keeps_ids_names_and_dates() {
        let r = Redactor::new();
        let text = "PAT build-agent (patrol:0a1b2c3d4e5f) 3f2504e0-4f89-11d3-9a0c-0305e82c3301 version \
                    0123456789abcdef0123456789abcdef expires 2027-01-07T15:00:00Z";
        assert_eq!(r.clean(text), text);
    }

    #[test]
    fn allowed_identifiers_survive() {
        let r = Redactor::new();
        let name = "buildagentpipelinetokenforcontosoproduction-1a2b3c4d";
        assert_eq!(r.clean(name), "[redacted]-1a2b3c4d");
        assert_eq!(r.clean_allowing(&format!("secret {name}"), &[name]), format!("secret {name}"));
    }

    #[test]
    fn debug_does_not_show_values() {
        let mut r = Redactor::new();
        r.add(&SecretString::from("hunter2-password"));
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
