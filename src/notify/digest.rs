//! Digests: one message per recipient per run, grouping everything that recipient should hear about,
//! most severe first — and [`Report`]s, arbitrary bodies (the weekly report) sent the same way.
//!
//! Both become a [`Message`]: subject, plain text and HTML for email and the mailbox, plus the rendered
//! items for chat cards and the generic webhook. Everything in a message has passed the redactor.

use super::redact::Redactor;
use super::render::{Rendered, escape_html, human_time, render};
use super::{Addressed, Notice, Severity, Target};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Everything one target hears about in one run.
#[derive(Debug, Clone)]
pub struct Digest {
    pub target: Target,
    pub notices: Vec<Notice>,
}

/// Groups notices by target (each target once, notices in the order given, a notice addressed twice to
/// the same target kept once).
pub fn group(addressed: &[Addressed]) -> Vec<Digest> {
    let mut by_target: BTreeMap<Target, Vec<Notice>> = BTreeMap::new();
    for a in addressed {
        let mut seen = Vec::new();
        for t in &a.targets {
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            let list = by_target.entry(t.clone()).or_default();
            if !list.contains(&a.notice) {
                list.push(a.notice.clone());
            }
        }
    }
    by_target.into_iter().map(|(target, notices)| Digest { target, notices }).collect()
}

/// An arbitrary message (the weekly report): subject, text, and optionally HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub severity: Severity,
}

/// What a channel sends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    pub subject: String,
    pub severity: Severity,
    pub text: String,
    pub html: String,
    /// The notices in words (empty for a report).
    pub items: Vec<Rendered>,
    /// The notices as structured JSON with every string redacted (empty for a report).
    pub notices: Vec<serde_json::Value>,
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

/// A single header line: control characters become spaces, length bounded.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn redact_json(v: serde_json::Value, r: &Redactor, allowed: &[&str]) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(r.clean_allowing(&s, allowed)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| redact_json(x, r, allowed)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (k, redact_json(x, r, allowed))).collect()),
        other => other,
    }
}

impl Digest {
    /// The digest as a message, rendered at `now`.
    pub fn message(&self, redactor: &Redactor, now: OffsetDateTime) -> Message {
        let mut items: Vec<(Rendered, &Notice)> = self.notices.iter().map(|n| (render(n, redactor), n)).collect();
        // Most severe first; stable within a severity.
        items.sort_by_key(|(r, _)| std::cmp::Reverse(r.severity));
        let severity = items.iter().map(|(r, _)| r.severity).max().unwrap_or(Severity::Info);
        let count = |s| items.iter().filter(|(r, _)| r.severity == s).count();
        let (crit, warn, info) = (count(Severity::Critical), count(Severity::Warning), count(Severity::Info));

        let prefix = match severity {
            Severity::Critical => "[patrol] Action required: ",
            Severity::Warning => "[patrol] Warning: ",
            Severity::Info => "[patrol] ",
        };
        let summary = {
            let mut parts = Vec::new();
            if crit > 0 {
                parts.push(format!("{crit} critical"));
            }
            if warn > 0 {
                parts.push(format!("{warn} warning{}", if warn == 1 { "" } else { "s" }));
            }
            if info > 0 {
                parts.push(format!("{info} update{}", if info == 1 { "" } else { "s" }));
            }
            parts.join(", ")
        };
        let subject = match items.as_slice() {
            [(only, _)] => one_line(&format!("{prefix}{}", only.title), 200),
            _ => one_line(&format!("{prefix}{} PAT notices ({summary})", items.len()), 200),
        };

        let footer = format!(
            "Sent by patrol at {} to {} because patrol.toml names it as a notification target. \
             patrol never puts a token value in a message.",
            human_time(now),
            self.target
        );

        let mut text = format!("patrol: {} notice(s) — {summary}\n\n", items.len());
        for (r, _) in &items {
            text.push_str(&format!("{:<9} {}\n", severity_label(r.severity), r.title));
            for (k, v) in &r.facts {
                text.push_str(&format!("          {k}: {v}\n"));
            }
            if let Some(a) = &r.action {
                text.push_str(&format!("          What to do: {a}\n"));
            }
            text.push('\n');
        }
        text.push_str("-- \n");
        text.push_str(&footer);
        text.push('\n');

        let mut html = String::from(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>patrol</title></head>\
             <body style=\"font-family:Segoe UI,Helvetica,Arial,sans-serif;color:#1b1b1b;max-width:720px\">",
        );
        html.push_str(&format!(
            "<p style=\"color:#555\">patrol: {} notice(s) — {}</p>",
            items.len(),
            escape_html(&summary)
        ));
        for (r, _) in &items {
            let color = match r.severity {
                Severity::Critical => "#a4262c",
                Severity::Warning => "#8a6d00",
                Severity::Info => "#107c10",
            };
            html.push_str(&format!(
                "<div style=\"border-left:4px solid {color};padding:4px 12px;margin:12px 0\">\
                 <p style=\"margin:4px 0\"><strong style=\"color:{color}\">{}</strong> <strong>{}</strong></p><table>",
                severity_label(r.severity),
                escape_html(&r.title)
            ));
            for (k, v) in &r.facts {
                html.push_str(&format!(
                    "<tr><td style=\"color:#555;padding-right:12px\">{}</td><td>{}</td></tr>",
                    escape_html(k),
                    escape_html(v)
                ));
            }
            html.push_str("</table>");
            if let Some(a) = &r.action {
                html.push_str(&format!(
                    "<p style=\"margin:6px 0\"><strong>What to do:</strong> {}</p>",
                    escape_html(a)
                ));
            }
            html.push_str("</div>");
        }
        html.push_str(&format!("<p style=\"color:#777;font-size:small\">{}</p></body></html>", escape_html(&footer)));

        let notices = items
            .iter()
            .map(|(r, n)| {
                let v = serde_json::to_value(n).unwrap_or(serde_json::Value::Null);
                // Identifiers in the rendered title are known to be names, not secrets.
                let allowed: Vec<&str> = r.facts.iter().map(|(_, v)| v.as_str()).collect();
                redact_json(v, redactor, &allowed)
            })
            .collect();

        Message {
            subject: redactor.clean(&subject),
            severity,
            text,
            html,
            items: items.into_iter().map(|(r, _)| r).collect(),
            notices,
        }
    }
}

impl Report {
    pub fn message(&self, redactor: &Redactor) -> Message {
        let html = match &self.html {
            Some(h) => redactor.clean(h),
            None => format!(
                "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body><pre>{}</pre></body></html>",
                escape_html(&redactor.clean(&self.text))
            ),
        };
        Message {
            subject: redactor.clean(&one_line(&self.subject, 200)),
            severity: self.severity,
            text: redactor.clean(&self.text),
            html,
            items: Vec::new(),
            notices: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuthorizationId, OwnerId, SecretName};
    use crate::notify::PatRef;
    use time::macros::datetime;

    fn warning(name: &str, th: u32) -> Notice {
        Notice::ExpiryWarning {
            pat: PatRef {
                display_name: name.into(),
                authorization_id: AuthorizationId::from_uuid(uuid::Uuid::new_v4()),
                organization: "contoso".into(),
                owner: OwnerId::parse("alice@contoso.com").unwrap(),
                valid_to: datetime!(2027-02-01 12:00 UTC),
                secret: None,
            },
            threshold_days: th,
            days_left: i64::from(th),
        }
    }

    #[test]
    fn one_digest_per_target_grouping_its_notices() {
        let ops = Target::Email("ops@contoso.com".into());
        let dev = Target::Email("dev@contoso.com".into());
        let (a, b) = (warning("a", 30), warning("b", 7));
        let c = Notice::SignInRequired { owner: OwnerId::parse("bob@contoso.com").unwrap(), reason: "x".into() };
        let digests = group(&[
            Addressed { targets: vec![ops.clone(), Target::Teams, ops.clone()], notice: a.clone() },
            Addressed { targets: vec![ops.clone()], notice: b.clone() },
            Addressed { targets: vec![dev.clone(), ops.clone()], notice: c.clone() },
            Addressed { targets: vec![ops.clone()], notice: b.clone() },
        ]);
        let got: Vec<(String, usize)> = digests.iter().map(|d| (d.target.to_string(), d.notices.len())).collect();
        assert_eq!(
            got,
            vec![("email:dev@contoso.com".into(), 1), ("email:ops@contoso.com".into(), 3), ("teams".into(), 1)]
        );

        let ops_digest = digests.iter().find(|d| d.target == ops).unwrap();
        let m = ops_digest.message(&Redactor::new(), datetime!(2027-01-25 03:00 UTC));
        assert_eq!(m.severity, Severity::Critical);
        assert_eq!(m.subject, "[patrol] Action required: 3 PAT notices (1 critical, 2 warnings)");
        // Critical first.
        assert!(m.items[0].title.contains("must sign in"));
        assert!(m.text.find("must sign in").unwrap() < m.text.find("\"a\"").unwrap());
        assert!(m.html.contains("&quot;a&quot;"));
        assert_eq!(m.notices.len(), 3);
        let single = digests[0].message(&Redactor::new(), datetime!(2027-01-25 03:00 UTC));
        assert_eq!(single.subject, "[patrol] Action required: bob@contoso.com must sign in to patrol again");
    }

    #[test]
    fn subject_is_one_line_and_html_is_escaped() {
        let n = Notice::RotationFailed {
            secret: SecretName::parse("ado-build").unwrap(),
            step: "create\r\nBcc: evil@example.com".into(),
            error: "<script>alert(1)</script>".into(),
            next: "retry".into(),
        };
        let m = group(&[Addressed { targets: vec![Target::Slack], notice: n }])[0]
            .message(&Redactor::new(), datetime!(2027-01-25 03:00 UTC));
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
        assert!(!m.html.contains("<script>"));
    }

    #[test]
    fn report_message() {
        let r = Report { subject: "Weekly\nreport".into(), text: "a & b".into(), html: None, severity: Severity::Info };
        let m = r.message(&Redactor::new());
        assert_eq!(m.subject, "Weekly report");
        assert!(m.html.contains("a &amp; b"));
    }
}
