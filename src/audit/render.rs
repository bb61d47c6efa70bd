//! Findings for people: a plain table, markdown, or JSON (`patrol audit --format`). Never a secret —
//! findings carry none.

use super::breakglass::render_table;
use super::finding::{Finding, rfc3339};
use super::ingest::PollReport;
use crate::report::UsageRow;

/// Output format of `patrol audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

fn pat(f: &Finding) -> String {
    f.subject
        .as_ref()
        .map(|s| match (&s.display_name, s.authorization_id) {
            (Some(n), _) => n.clone(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "-".into(),
        })
        .unwrap_or_else(|| "-".into())
}

/// One organization in `patrol audit --format json`: its poll, and its stale, shared and dead PATs.
#[derive(serde::Serialize)]
struct OrgJson<'a> {
    #[serde(flatten)]
    report: &'a PollReport,
    stale_shared_dead: Vec<&'a UsageRow>,
}

/// The stale/shared/dead section (text or markdown), with the caveat; empty when there is nothing to say.
fn usage_section(rows: &[UsageRow], markdown: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = if markdown {
        format!("\n## Stale, shared and dead PATs\n\n> {}\n\n", crate::report::NO_AUDITED_USE_CAVEAT)
    } else {
        format!("\nStale, shared and dead PATs ({})\n", crate::report::NO_AUDITED_USE_CAVEAT)
    };
    if markdown {
        out.push_str("| Kind | PAT | Owner | Organization | Secret | Evidence | What to do |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    }
    for r in rows {
        let evidence: Vec<&str> =
            r.evidence.iter().map(String::as_str).filter(|e| *e != crate::report::NO_AUDITED_USE_CAVEAT).collect();
        if markdown {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.kind,
                cell(&r.display_name),
                cell(&r.owner),
                cell(&r.organization),
                r.secret.as_deref().unwrap_or("-"),
                cell(&evidence.join("; ")),
                cell(&r.what_to_do)
            ));
        } else {
            out.push_str(&format!(
                "* {} \"{}\" ({} / {}): {}\n  what to do: {}\n",
                r.kind,
                r.display_name,
                r.owner,
                r.organization,
                evidence.join("; "),
                r.what_to_do
            ));
        }
    }
    out
}

/// Renders the polls' findings (and auditing-off warnings) in `format`, then the stale, shared and dead PATs
/// of the organizations read (`usage`, `crate::audit::usage`).
pub fn render(reports: &[PollReport], usage: &[UsageRow], format: Format) -> String {
    let out = render_findings(reports, usage, format);
    match format {
        Format::Json => out,
        Format::Table => out + &usage_section(usage, false),
        Format::Markdown => out + &usage_section(usage, true),
    }
}

fn render_findings(reports: &[PollReport], usage: &[UsageRow], format: Format) -> String {
    let findings: Vec<&Finding> = reports.iter().flat_map(|r| &r.findings).collect();
    match format {
        Format::Json => {
            let orgs: Vec<OrgJson<'_>> = reports
                .iter()
                .map(|r| OrgJson {
                    report: r,
                    stale_shared_dead: usage
                        .iter()
                        .filter(|u| u.organization.eq_ignore_ascii_case(r.organization.as_str()))
                        .collect(),
                })
                .collect();
            serde_json::to_string_pretty(&orgs).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
        Format::Table => {
            let rows: Vec<[String; 5]> = findings
                .iter()
                .map(|f| {
                    [
                        rfc3339(f.evidence.timestamp),
                        crate::report::severity_word(f.severity).to_owned(),
                        f.rule.to_string(),
                        pat(f),
                        f.summary.clone(),
                    ]
                })
                .collect();
            let mut out = render_table(&["WHEN", "SEVERITY", "RULE", "PAT", "WHY"], &rows);
            for r in reports {
                if let Some(off) = &r.auditing_off {
                    out.push_str(&format!("warning: {off}\n"));
                }
                out.push_str(&format!(
                    "{}: {} entries from {} to {}, {} finding(s)\n",
                    r.organization,
                    r.entries,
                    rfc3339(r.window_start),
                    rfc3339(r.window_end),
                    r.findings.len()
                ));
            }
            out
        }
        Format::Markdown => {
            let mut out = String::from("# patrol audit findings\n\n");
            for r in reports {
                if let Some(off) = &r.auditing_off {
                    out.push_str(&format!("> **Warning:** {off}\n\n"));
                }
            }
            if findings.is_empty() {
                out.push_str("No findings.\n");
                return out;
            }
            out.push_str("| When | Severity | Rule | PAT | Why |\n| --- | --- | --- | --- | --- |\n");
            let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            for f in &findings {
                out.push_str(&format!(
                    "| {} | {} | `{}` | {} | {} |\n",
                    rfc3339(f.evidence.timestamp),
                    crate::report::severity_word(f.severity),
                    f.rule,
                    cell(&pat(f)),
                    cell(&f.summary)
                ));
            }
            out.push_str("\n## Evidence\n\n");
            for f in &findings {
                out.push_str(&format!("### `{}`\n\n", f.key()));
                for l in f.evidence.lines() {
                    out.push_str(&format!("- {}\n", cell(&l)));
                }
                out.push('\n');
            }
            out
        }
    }
}
