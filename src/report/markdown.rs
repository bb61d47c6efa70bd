//! The markdown report (for chat, pull requests and terminals).

use super::{ReportData, date, severity_word};
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

    s.push_str("\n## Recent rotations and revocations\n\n");
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
        let inventory = md.split("## Inventory").nth(1).unwrap().split("## Recent").next().unwrap();
        assert_eq!(
            inventory
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| PAT") && !l.starts_with("| ---"))
                .count(),
            6
        );
        assert!(md.contains("⚠ all organizations"));
        assert!(md.contains("6 PATs (4 managed), 4 expire within 30 days, 1 expired, open problems: 1."));
    }
}
