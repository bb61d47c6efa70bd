//! The expiry timeline: one row per PAT, a marker at its `validTo`, the threshold days drawn as dashed lines
//! from "now", managed and unmanaged PATs in different colours, expired ones in red.

use super::{ReportData, date, escape};
use std::fmt::Write;
use time::{Duration, OffsetDateTime};

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 300.0;
const ROW_H: f64 = 24.0;
const TOP: f64 = 46.0;
const RIGHT_PAD: f64 = 24.0;
const MANAGED: &str = "#2563eb";
const UNMANAGED: &str = "#d97706";
const EXPIRED: &str = "#dc2626";

/// Renders the timeline as a standalone `<svg>` element.
pub fn render_timeline_svg(data: &ReportData) -> String {
    let now = data.generated_at;
    let mut tokens: Vec<_> = data.tokens.iter().collect();
    tokens.sort_by_key(|t| (t.valid_to, t.display_name.clone()));

    // Domain: a week of history, and at least the largest threshold plus two weeks ahead (at most 400 days).
    let max_threshold = data.thresholds.iter().copied().max().unwrap_or(30) as i64;
    let latest = tokens.iter().map(|t| t.valid_to).max().unwrap_or(now);
    let start = now - Duration::days(7);
    let end = (latest + Duration::days(3)).max(now + Duration::days(max_threshold + 14)).min(now + Duration::days(400));
    let span = (end - start).whole_seconds().max(1) as f64;
    let x = |t: OffsetDateTime| -> f64 {
        let t = t.clamp(start, end);
        LABEL_W + (t - start).whole_seconds() as f64 / span * (WIDTH - LABEL_W - RIGHT_PAD)
    };

    let height = TOP + ROW_H * tokens.len().max(1) as f64 + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="PAT expiry timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif" font-size="12">"#
    );
    s.push_str("<title>PAT expiry timeline</title>");
    let bottom = TOP + ROW_H * tokens.len().max(1) as f64;

    // Threshold lines and "now".
    for days in &data.thresholds {
        let tx = x(now + Duration::days(*days as i64));
        let _ = write!(
            s,
            r##"<line class="threshold" x1="{tx:.1}" y1="{y1}" x2="{tx:.1}" y2="{bottom}" stroke="#9ca3af" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" text-anchor="middle" fill="#4b5563">{days}d</text>"##,
            y1 = TOP - 14.0,
            ty = TOP - 18.0
        );
    }
    let nx = x(now);
    let _ = write!(
        s,
        r##"<line class="now" x1="{nx:.1}" y1="{y1}" x2="{nx:.1}" y2="{bottom}" stroke="#111827" stroke-width="1.5"/><text x="{nx:.1}" y="{ty}" text-anchor="middle" font-weight="bold">now</text>"##,
        y1 = TOP - 30.0,
        ty = TOP - 34.0
    );

    if tokens.is_empty() {
        let _ =
            write!(s, r##"<text x="{LABEL_W}" y="{}" fill="#6b7280">No PATs in the inventory.</text>"##, TOP + 16.0);
    }
    for (i, t) in tokens.iter().enumerate() {
        let y = TOP + ROW_H * i as f64 + ROW_H / 2.0;
        let expired = t.valid_to <= now;
        let colour = if expired {
            EXPIRED
        } else if t.managed {
            MANAGED
        } else {
            UNMANAGED
        };
        let class = if expired {
            "token expired"
        } else if t.managed {
            "token managed"
        } else {
            "token unmanaged"
        };
        let label = format!("{}{}", t.display_name, if t.global { " (all orgs)" } else { "" });
        let label = if label.chars().count() > 42 {
            format!("{}…", label.chars().take(41).collect::<String>())
        } else {
            label
        };
        let vx = x(t.valid_to);
        let _ = write!(
            s,
            r##"<g class="{class}"><text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text><line x1="{nx:.1}" y1="{y:.1}" x2="{vx:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="4" stroke-opacity="0.35"/><circle cx="{vx:.1}" cy="{y:.1}" r="6" fill="{colour}"><title>{title}</title></circle></g>"##,
            lx = LABEL_W - 10.0,
            ty = y + 4.0,
            label = escape(&label),
            title = escape(&format!(
                "{} — {} {} ({} days)",
                t.display_name,
                if expired { "expired" } else { "expires" },
                date(t.valid_to),
                t.days_left(now)
            )),
        );
    }

    // Legend.
    let ly = bottom + 24.0;
    let mut lx = LABEL_W;
    for (name, colour) in [("managed", MANAGED), ("unmanaged", UNMANAGED), ("expired", EXPIRED)] {
        let _ = write!(
            s,
            r##"<circle cx="{cx}" cy="{cy}" r="6" fill="{colour}"/><text x="{tx}" y="{ty}">{name}</text>"##,
            cx = lx,
            cy = ly - 4.0,
            tx = lx + 10.0,
            ty = ly
        );
        lx += 110.0;
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{ly}" text-anchor="end" fill="#6b7280">{} → {}</text>"##,
        WIDTH - RIGHT_PAD,
        date(start),
        date(end)
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn one_marker_per_token_and_thresholds_marked() {
        let d = sample();
        let svg = render_timeline_svg(&d);
        assert_eq!(svg.matches("<circle cx=").count(), d.tokens.len() + 3, "markers + legend");
        assert_eq!(svg.matches(r#"class="threshold""#).count(), 4);
        for days in ["30d", "14d", "7d", "1d"] {
            assert!(svg.contains(&format!(">{days}</text>")), "{days}");
        }
        assert_eq!(svg.matches(r#"class="token managed""#).count(), 4);
        assert_eq!(svg.matches(r#"class="token unmanaged""#).count(), 1);
        assert_eq!(svg.matches(r#"class="token expired""#).count(), 1);
        assert!(svg.contains("everything (all orgs)"));
    }

    #[test]
    fn expiry_order_is_left_to_right() {
        let d = sample();
        let svg = render_timeline_svg(&d);
        let xs: Vec<f64> = svg
            .split(r#"<circle cx=""#)
            .skip(1)
            .take(d.tokens.len())
            .map(|p| p.split('"').next().unwrap().parse().unwrap())
            .collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{xs:?}");
    }

    #[test]
    fn empty_inventory_renders() {
        let mut d = sample();
        d.tokens.clear();
        assert!(render_timeline_svg(&d).contains("No PATs"));
    }
}
