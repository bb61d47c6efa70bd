//! Findings for people: a plain table, markdown, or JSON (`patrol audit --format`). Never a secret —
//! findings carry none.

use super::breakglass::render_table;
use super::finding::{Finding, rfc3339};
use super::ingest::PollReport;

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

/// Renders the polls' findings (and auditing-off warnings) in `format`.
pub fn render(reports: &[PollReport], format: Format) -> String {
    let findings: Vec<&Finding> = reports.iter().flat_map(|r| &r.findings).collect();
    match format {
        Format::Json => serde_json::to_string_pretty(reports).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
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
