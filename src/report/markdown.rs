//! The markdown report (for chat, pull requests and terminals).

use super::{NO_AUDITED_USE_CAVEAT, ReportData, date, severity_word};
use std::fmt::Write;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render_markdown(data: &ReportData) -> String {
    let now = data.generated_at;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n\nGenerated {} UTC by patrol.\n", cell(&data.title), date(now));
    let expired = data.tokens.iter().filter(|t| t.valid_to <= now).count();
    let soon = data.tokens.iter().filter(|t| t.valid_to > now && t.days_left(now) <= 30).count();
    let _ = writeln!(
        s,
        "{} PATs ({} managed), {soon} expire within 30 days, {expired} expired, open problems: {}.\n",
        data.tokens.len(),
        data.tokens.iter().filter(|t| t.managed).count(),
        data.problems.len()
    );

    s.push_str("## Open problems\n\n");
    if data.problems.is_empty() {
        s.push_str("None.\n\n");
    } else {
        s.push_str("| severity | problem | what to do |\n| --- | --- | --- |\n");
        for p in &data.problems {
            let _ = writeln!(s, "| {} | {} | {} |", severity_word(p.severity), cell(&p.summary), cell(&p.detail));
        }
        s.push('\n');
    }

    if !data.usage.is_empty() {
        s.push_str("## Stale, shared and dead PATs\n\n");
        let _ = writeln!(s, "{NO_AUDITED_USE_CAVEAT}\n");
        s.push_str(
            "| PAT | organization | owner | finding | evidence | what to do |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for u in &data.usage {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&u.display_name),
                cell(&u.organization),
                cell(&u.owner),
                cell(&u.kind),
                cell(
                    &u.evidence
                        .iter()
                        .filter(|e| e.as_str() != NO_AUDITED_USE_CAVEAT)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                cell(&u.what_to_do)
            );
        }
        s.push('\n');
    }

    s.push_str("## Inventory\n\n| PAT | organization | owner | managed | secret | scope | expires | days | state |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let mut tokens: Vec<_> = data.tokens.iter().collect();
    tokens.sort_by_key(|t| (t.valid_to, t.display_name.clone()));
    for t in tokens {
        let mut name = cell(&t.display_name);
        if t.global {
            name.push_str(" ⚠ all organizations");
        }
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | `{}` | {} | {} | {} |",
            cell(&t.organization),
            cell(&t.owner),
            if t.managed { "yes" } else { "no" },
            t.secret.as_deref().map(cell).unwrap_or_else(|| "—".into()),
            cell(&t.scope),
            date(t.valid_to),
            t.days_left(now),
            cell(&t.state)
        );
    }

    s.push_str("\n## Consumers\n\n");
    if data.consumers.iter().all(|t| t.consumers.is_empty()) {
        s.push_str("No token declares consumers.\n");
    } else {
        s.push_str("| secret | consumer | where | state | delivered | last used | failing since | lag | detail |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        let when = |t: Option<time::OffsetDateTime>| t.map(date).unwrap_or_else(|| "—".into());
        for t in &data.consumers {
            for c in &t.consumers {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {}{} | {} | {} | {} | {} | {} |",
                    cell(&t.secret),
                    cell(&c.consumer),
                    cell(&c.target),
                    cell(&c.state),
                    if c.moved { " (moved)" } else { "" },
                    when(c.delivered_at),
                    when(c.last_used_at),
                    when(c.failing_since),
                    c.lag_hours.map(|h| format!("{h} h")).unwrap_or_else(|| "—".into()),
                    cell(&c.detail)
                );
            }
        }
    }

    s.push_str("\n## Recent rotations\n\n");
    if data.rotations.is_empty() {
        s.push_str("None in this period.\n");
    } else {
        s.push_str(
            "| when | secret | old PAT | new PAT | new expiry | outcome |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &data.rotations {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                date(r.at),
                cell(&r.secret),
                r.old_display_name.as_deref().map(cell).unwrap_or_else(|| "—".into()),
                cell(&r.new_display_name),
                date(r.new_valid_to),
                cell(&r.outcome)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn tables_have_one_row_per_item() {
        let md = render_markdown(&sample());
        let inventory = md.split("## Inventory").nth(1).unwrap().split("## Consumers").next().unwrap();
        assert_eq!(
            inventory
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| PAT") && !l.starts_with("| ---"))
                .count(),
            6
        );
        assert!(md.contains("⚠ all organizations"));
        assert!(md.contains("| build-pipeline-secret | `service-connection:fabrikam/web/<npm>` |"), "{md}");
        assert!(md.contains("| delivered (moved) | 2026-11-23 |"), "{md}");
        assert!(md.contains("6 PATs (4 managed), 4 expire within 30 days, 1 expired, open problems: 1."));
    }
}
