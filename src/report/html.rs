//! The self-contained HTML report.

use super::{ReportData, date, escape, render_timeline_svg, severity_word};
use std::fmt::Write;

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1000px;color:#111827;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e5e7eb;padding-bottom:.3rem}
.meta{color:#6b7280}.summary{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:.6rem 1rem;min-width:120px}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #f3f4f6}
th{background:#f9fafb}.critical{color:#b91c1c;font-weight:600}.warning{color:#b45309}.info{color:#1d4ed8}
.tag{display:inline-block;border-radius:4px;padding:0 .35rem;font-size:.75rem;background:#f3f4f6;margin-left:.3rem}
.tag.bad{background:#fee2e2;color:#991b1b}.tag.managed{background:#dbeafe;color:#1e40af}.tag.unmanaged{background:#fef3c7;color:#92400e}
svg{max-width:100%;height:auto}.d{white-space:nowrap}
"#;

/// Renders the whole page.
pub fn render_html(data: &ReportData) -> String {
    let now = data.generated_at;
    let expiring = data.tokens.iter().filter(|t| (0..=30).contains(&t.days_left(now)) && t.valid_to > now).count();
    let expired = data.tokens.iter().filter(|t| t.valid_to <= now).count();
    let managed = data.tokens.iter().filter(|t| t.managed).count();
    let critical = data.problems.iter().filter(|p| p.severity == crate::notify::Severity::Critical).count();

    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body>",
        title = escape(&data.title)
    );
    let _ = write!(s, "<h1>{}</h1><p class=\"meta\">Generated {} UTC by patrol.</p>", escape(&data.title), date(now));
    let _ = write!(
        s,
        "<div class=\"summary\"><div class=\"card\"><b>{}</b>PATs</div><div class=\"card\"><b>{managed}</b>managed</div><div class=\"card\"><b>{expiring}</b>expire within 30 days</div><div class=\"card\"><b>{expired}</b>expired</div><div class=\"card\"><b>{critical}</b>critical problems</div></div>",
        data.tokens.len()
    );

    s.push_str("<h2>Expiry timeline</h2>");
    s.push_str(&render_timeline_svg(data));

    s.push_str("<h2>Open problems</h2>");
    if data.problems.is_empty() {
        s.push_str("<p>None.</p>");
    } else {
        s.push_str("<table><thead><tr><th>severity</th><th>problem</th><th>what to do</th></tr></thead><tbody>");
        for p in &data.problems {
            let w = severity_word(p.severity);
            let _ = write!(
                s,
                "<tr><td class=\"{w}\">{w}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.summary),
                escape(&p.detail)
            );
        }
        s.push_str("</tbody></table>");
    }

    if !data.usage.is_empty() {
        let _ = write!(
            s,
            "<h2>Stale, shared and dead PATs</h2><p>{}</p><table><thead><tr><th>PAT</th><th>organization</th><th>owner</th><th>finding</th><th>evidence</th><th>what to do</th></tr></thead><tbody>",
            escape(super::NO_AUDITED_USE_CAVEAT)
        );
        for u in &data.usage {
            let evidence: Vec<String> =
                u.evidence.iter().filter(|e| e.as_str() != super::NO_AUDITED_USE_CAVEAT).map(|e| escape(e)).collect();
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&u.display_name),
                escape(&u.organization),
                escape(&u.owner),
                escape(&u.kind),
                evidence.join("<br>"),
                escape(&u.what_to_do)
            );
        }
        s.push_str("</tbody></table>");
    }

    s.push_str("<h2>Inventory</h2><table><thead><tr><th>PAT</th><th>organization</th><th>owner</th><th>secret</th><th>scope</th><th>expires</th><th>days</th><th>state</th></tr></thead><tbody>");
    let mut tokens: Vec<_> = data.tokens.iter().collect();
    tokens.sort_by_key(|t| (t.valid_to, t.display_name.clone()));
    for t in tokens {
        let mut tags = String::new();
        tags.push_str(if t.managed {
            "<span class=\"tag managed\">managed</span>"
        } else {
            "<span class=\"tag unmanaged\">unmanaged</span>"
        });
        if t.global {
            tags.push_str(if now >= crate::devops::GLOBAL_PAT_CUTOFF {
                "<span class=\"tag bad\">all organizations — stopped working 2026-12-01</span>"
            } else {
                "<span class=\"tag bad\">all organizations — stops working 2026-12-01</span>"
            });
        }
        if t.full_access() {
            tags.push_str("<span class=\"tag bad\">full access</span>");
        }
        let days = t.days_left(now);
        let class = if t.valid_to <= now {
            "critical"
        } else if days <= 7 {
            "warning"
        } else {
            ""
        };
        let _ = write!(
            s,
            "<tr><td>{}{tags}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"d\">{}</td><td class=\"{class}\">{days}</td><td>{}</td></tr>",
            escape(&t.display_name),
            escape(&t.organization),
            escape(&t.owner),
            t.secret.as_deref().map(escape).unwrap_or_else(|| "—".into()),
            escape(&t.scope),
            date(t.valid_to),
            escape(&t.state)
        );
    }
    s.push_str("</tbody></table>");

    s.push_str("<h2>Consumers</h2>");
    if data.consumers.iter().all(|t| t.consumers.is_empty()) {
        s.push_str("<p>No token declares consumers.</p>");
    } else {
        s.push_str("<table><thead><tr><th>secret</th><th>consumer</th><th>where</th><th>state</th><th>delivered</th><th>last used</th><th>failing since</th><th>lag</th><th>detail</th></tr></thead><tbody>");
        for t in &data.consumers {
            for c in &t.consumers {
                let class = if c.state == "failing" {
                    "critical"
                } else if c.moved {
                    ""
                } else {
                    "warning"
                };
                let when = |t: Option<time::OffsetDateTime>| t.map(date).unwrap_or_else(|| "—".into());
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"{class}\">{}{}</td><td class=\"d\">{}</td><td class=\"d\">{}</td><td class=\"d\">{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&t.secret),
                    escape(&c.consumer),
                    escape(&c.target),
                    escape(&c.state),
                    if c.moved { " (moved)" } else { "" },
                    when(c.delivered_at),
                    when(c.last_used_at),
                    when(c.failing_since),
                    c.lag_hours.map(|h| format!("{h} h")).unwrap_or_else(|| "—".into()),
                    escape(&c.detail)
                );
            }
        }
        s.push_str("</tbody></table>");
    }

    s.push_str("<h2>Recent rotations and revocations</h2>");
    if data.rotations.is_empty() {
        s.push_str("<p>None in this period.</p>");
    } else {
        s.push_str("<table><thead><tr><th>when</th><th>secret</th><th>old PAT</th><th>new PAT</th><th>new expiry</th><th>outcome</th></tr></thead><tbody>");
        for r in &data.rotations {
            let _ = write!(
                s,
                "<tr><td class=\"d\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"d\">{}</td><td>{}</td></tr>",
                date(r.at),
                escape(&r.secret),
                r.old_display_name.as_deref().map(escape).unwrap_or_else(|| "—".into()),
                escape(&r.new_display_name),
                date(r.new_valid_to),
                escape(&r.outcome)
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let html = render_html(&sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("patrol report &lt;fabrikam&gt;"));
        assert!(!html.contains("<fabrikam>"));
        assert!(!html.contains("src=\"http"), "no external resources");
        assert!(!html.contains("<script"));
        // The sample is dated 2026-11-23, before the cutoff: "stops"; after it, "stopped working".
        assert!(html.contains("stops working 2026-12-01"));
        let mut after = sample();
        after.generated_at = crate::devops::GLOBAL_PAT_CUTOFF;
        assert!(render_html(&after).contains("stopped working 2026-12-01"));
        assert!(html.contains("full access"));
        assert_eq!(
            html.matches("<tr><td>").count() + html.matches("<tr><td class=\"d\">").count(),
            9,
            "6 tokens + 1 stale/shared/dead PAT + 1 consumer + 1 rotation"
        );
        assert!(
            html.contains("<h2>Consumers</h2>")
                && html.contains("<code>service-connection:fabrikam/web/&lt;npm&gt;</code>")
        );
        assert!(html.contains("delivered (moved)"), "the consumer's state is shown");
    }
}
