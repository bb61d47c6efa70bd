//! Reports: the self-contained HTML page (with an SVG expiry timeline) and the markdown a security lead
//! opens weekly — the inventory, what expires when against the 30/14/7/1-day thresholds, recent rotations,
//! and open problems.
//!
//! [`build()`] is the one builder of the model, for `patrol report` and the weekly mail (its [`weekly()`] view).
//! Rendering is pure: [`ReportData`] in, a `String` out. No scripts, fonts or images are fetched, so the page
//! renders the same in a mail client, a browser or headless Chromium. Nothing secret is ever part of
//! [`ReportData`].

mod build;
mod html;
mod markdown;
mod timeline;

pub use build::{
    Inputs, ListProblem, LoggedFinding, PERIOD, PatRow, Role, build, finding_problem, journals, lifecycle_rows,
    listing_problem, pat_problems, weekly,
};
pub use html::render_html;
pub use markdown::render_markdown;
pub use timeline::render_timeline_svg;

use crate::notify::Severity;
use serde::Serialize;
use time::OffsetDateTime;

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Expiry thresholds in days, marked on the timeline (default 30/14/7/1).
    pub thresholds: Vec<u32>,
    pub tokens: Vec<TokenRow>,
    pub rotations: Vec<RotationRow>,
    pub problems: Vec<ProblemRow>,
    /// Each token's consumers and where their delivery of the current PAT stands.
    pub consumers: Vec<crate::consumers::view::TokenConsumers>,
    /// Stale (no audited use in N days), shared and dead (all-organization) PATs, with what to do.
    pub usage: Vec<UsageRow>,
}

/// The caveat printed with every "no audited use" (`../shared/research/azure-devops-token-apis.md`).
pub const NO_AUDITED_USE_CAVEAT: &str = "The audit log records audited actions, not every use: a PAT that only \
    reads (clones, downloads, API reads) leaves no entry, so \"no audited use\" is evidence, not proof.";

/// One PAT of the "stale, shared and dead PATs" section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// `no audited use`, `shared` or `dead`.
    pub kind: String,
    pub authorization_id: crate::domain::AuthorizationId,
    pub display_name: String,
    pub owner: String,
    pub organization: String,
    /// The managed secret holding it, if any.
    pub secret: Option<String>,
    pub evidence: Vec<String>,
    pub what_to_do: String,
}

/// One PAT in the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub display_name: String,
    pub organization: String,
    pub owner: String,
    pub managed: bool,
    pub secret: Option<String>,
    pub scope: String,
    /// All-organization PAT (stops working on 2026-12-01).
    pub global: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_to: OffsetDateTime,
    /// active, expired, revoked, draining…
    pub state: String,
}

impl TokenRow {
    pub fn full_access(&self) -> bool {
        self.scope.split_whitespace().any(|s| s == "app_token")
    }

    /// Whole days until `valid_to` (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        let secs = (self.valid_to - now).whole_seconds();
        secs.div_euclid(86_400)
    }
}

/// One rotation that happened in the reporting period.
#[derive(Debug, Clone, Serialize)]
pub struct RotationRow {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub secret: String,
    pub old_display_name: Option<String>,
    pub new_display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub new_valid_to: OffsetDateTime,
    pub outcome: String,
}

/// Something that needs a person.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemRow {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
}

/// Escapes text for HTML/SVG content and attribute values (one implementation, shared with notify).
pub(crate) use crate::notify::render::escape_html as escape;

pub(crate) fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

pub(crate) fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::{Duration, macros::datetime};

    pub(crate) fn sample() -> ReportData {
        let now = datetime!(2026-11-23 09:00 UTC);
        let row = |name: &str, days: i64, managed: bool, global: bool, scope: &str| TokenRow {
            display_name: name.into(),
            organization: "fabrikam".into(),
            owner: "alice@contoso.com".into(),
            managed,
            secret: managed.then(|| format!("{name}-secret")),
            scope: scope.into(),
            global,
            valid_to: now + Duration::days(days),
            state: if days < 0 { "expired".into() } else { "active".into() },
        };
        ReportData {
            title: "patrol report <fabrikam>".into(),
            generated_at: now,
            thresholds: vec![30, 14, 7, 1],
            tokens: vec![
                row("build-pipeline", 3, true, false, "vso.build vso.code"),
                row("release", 10, true, false, "vso.release"),
                row("packaging", 20, true, false, "vso.packaging"),
                row("reporting", 40, true, false, "vso.analytics"),
                row("old-script", -2, false, false, "vso.code"),
                row("everything", 25, false, true, "app_token"),
            ],
            rotations: vec![RotationRow {
                at: now,
                secret: "build-pipeline-secret".into(),
                old_display_name: Some("build-pipeline".into()),
                new_display_name: "build-pipeline (patrol:0123456789ab)".into(),
                new_valid_to: now + Duration::days(30),
                outcome: "done".into(),
            }],
            problems: vec![ProblemRow {
                severity: Severity::Critical,
                summary: "All-organization PAT \"everything\" stops working on 2026-12-01".into(),
                detail: "Replace it with an organization-scoped PAT (patrol migrate-global).".into(),
            }],
            consumers: vec![crate::consumers::view::TokenConsumers {
                secret: "build-pipeline-secret".into(),
                consumers: vec![crate::consumers::view::ConsumerView {
                    consumer: "service-connection:fabrikam/web/<npm>".into(),
                    kind: "devops-service-connection".into(),
                    target: "fabrikam/web service connection \"<npm>\" (externalnpmregistry/Token)".into(),
                    written: true,
                    state: "delivered".into(),
                    moved: true,
                    detail: "delivered at 2026-11-23T08:00:00Z, used: Build 7 succeeded".into(),
                    delivered_at: Some(now - Duration::hours(1)),
                    last_used_at: Some(now - Duration::minutes(30)),
                    evidence: Some("Build 7 succeeded".into()),
                    failing_since: None,
                    last_error: None,
                    lag_hours: None,
                    lag_until: None,
                }],
            }],
            usage: vec![UsageRow {
                kind: "no audited use".into(),
                authorization_id: crate::domain::AuthorizationId::parse("0f8e4b5a-1111-2222-3333-444455556666")
                    .unwrap(),
                display_name: "old-script".into(),
                owner: "alice@contoso.com".into(),
                organization: "fabrikam".into(),
                secret: None,
                evidence: vec!["no audited use since the log is watched (31 days)".into()],
                what_to_do: "Ask its owner whether anything still uses it; revoke it if not.".into(),
            }],
        }
    }

    #[test]
    fn escape_handles_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn days_left_rounds_down() {
        let d = sample();
        assert_eq!(d.tokens[0].days_left(d.generated_at), 3);
        assert_eq!(d.tokens[4].days_left(d.generated_at), -2);
    }
}
