//! What operators see of a token's consumers — one view model, built purely from the policy, the token's
//! journal and the time, and shown by `status`, `plan`, `inventory`, `report`, `consumers` and
//! `demo --json` alike (JSON field names are stable, snake_case; `docs/cli.md`). Never a secret value: a
//! webhook is named by the store secret that holds its URL, never by the URL.

use super::gate;
use super::policy::{Consumer, ConsumerKind, GithubTarget};
use super::state::{Delivery, DeliveryStep};
use crate::domain::AuthorizationId;
use crate::policy::ManagedToken;
use crate::state::journal::Journal;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// One declared consumer and where its delivery of the current PAT stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerView {
    /// The consumer's id (`<kind>:<where>`), stable across runs.
    pub consumer: String,
    pub kind: String,
    /// Where it lives, in words (organization/project/object, repository, store secret names).
    pub target: String,
    /// patrol writes the new value to it (false: it reads the vault itself, or is inventory only).
    pub written: bool,
    /// `pending`, `writing`, `delivered`, `reads-vault`, `failing`, or `unknown` (no record for the current
    /// PAT yet).
    pub state: String,
    /// Whether it counts as moved to the current PAT for the revocation of the previous one.
    pub moved: bool,
    /// Why (not), in words: the revocation gate's reason.
    pub detail: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    /// The last evidence that it used the current PAT (a pipeline run, an acknowledgement).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub evidence: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The declared lag of a `reference` consumer.
    pub lag_hours: Option<u32>,
    /// Until when that lag holds the previous PAT back (from when the current PAT became current).
    #[serde(with = "time::serde::rfc3339::option")]
    pub lag_until: Option<OffsetDateTime>,
}

/// A token's consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenConsumers {
    pub secret: String,
    pub consumers: Vec<ConsumerView>,
}

/// Where a consumer lives, in words (no secret value: a webhook is named by its URL's store secret).
pub fn target(c: &Consumer) -> String {
    match &c.kind {
        ConsumerKind::Keyvault { vault, secret } => match vault {
            Some(v) => format!("secret {secret} in {v}"),
            None => format!("secret {secret} in the token's vault"),
        },
        ConsumerKind::DevopsServiceConnection {
            organization, project, connection, connection_type, scheme, ..
        } => {
            format!("{organization}/{project} service connection {connection} ({connection_type}/{scheme})")
        }
        ConsumerKind::DevopsVariableGroup { organization, project, group, variable, key_vault_linked } => {
            match (variable, key_vault_linked) {
                (_, true) => format!("{organization}/{project} variable group {group} (linked to Key Vault)"),
                (Some(v), false) => format!("{organization}/{project} variable group {group}, secret {v}"),
                (None, false) => format!("{organization}/{project} variable group {group}"),
            }
        }
        ConsumerKind::GithubActionsSecret { target, name } => match target {
            GithubTarget::Repository { repository } => format!("GitHub {repository} secret {name}"),
            GithubTarget::Environment { repository, environment } => {
                format!("GitHub {repository} environment {environment} secret {name}")
            }
            GithubTarget::Organization { org, visibility, .. } => {
                format!("GitHub organization {org} secret {name} ({visibility})")
            }
        },
        ConsumerKind::Webhook { url_secret, ack, .. } => {
            format!("webhook at the URL in {url_secret}{}", if *ack { " (acknowledges)" } else { "" })
        }
        ConsumerKind::Reference { description, lag_hours } => format!("{description} (may lag {lag_hours} h)"),
    }
}

/// One consumer's view, given its delivery record of the current PAT (if any).
pub fn consumer_view(
    c: &Consumer,
    d: Option<&Delivery>,
    current: Option<AuthorizationId>,
    now: OffsetDateTime,
) -> ConsumerView {
    let d = d.filter(|d| Some(d.authorization_id) == current);
    let (moved, detail) = match current {
        None => (false, "no current PAT yet".to_owned()),
        Some(cur) => match gate::moved(c, d, cur, now) {
            Ok(why) => (true, why),
            Err((why, _)) => (false, why),
        },
    };
    let state = match d {
        None => "unknown".to_owned(),
        Some(d) if d.failing_since.is_some() && !matches!(d.step, DeliveryStep::Delivered { .. }) => {
            "failing".to_owned()
        }
        Some(d) => d.step.name().to_owned(),
    };
    let lag_hours = c.lag_hours();
    ConsumerView {
        consumer: c.id.clone(),
        kind: c.kind_name().to_owned(),
        target: target(c),
        written: c.is_written(),
        state,
        moved,
        detail,
        delivered_at: d.and_then(Delivery::delivered_at),
        last_used_at: d.and_then(|d| d.evidence.as_ref().map(|e| e.at)),
        evidence: d.and_then(|d| d.evidence.as_ref().map(|e| e.what.clone())),
        failing_since: d.and_then(|d| d.failing_since),
        last_error: d.and_then(|d| d.last_error.clone()),
        lag_hours,
        lag_until: lag_hours.zip(d).map(|(h, d)| d.since + Duration::hours(i64::from(h))),
    }
}

/// Every consumer of `token`, in policy order, against the journal's deliveries of `current`.
pub fn token_view(
    token: &ManagedToken,
    journal: &Journal,
    current: Option<AuthorizationId>,
    now: OffsetDateTime,
) -> Vec<ConsumerView> {
    token
        .consumers
        .list
        .iter()
        .map(|c| {
            let d = journal.deliveries.iter().find(|d| d.consumer == c.id && Some(d.authorization_id) == current);
            consumer_view(c, d, current, now)
        })
        .collect()
}

/// The columns of the consumer table every command prints.
pub const HEADERS: [&str; 7] = ["SECRET", "CONSUMER", "STATE", "DELIVERED", "LAST USED", "FAILING SINCE", "DETAIL"];

fn time_cell(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_else(|| "-".into())
}

impl ConsumerView {
    /// The table row for [`HEADERS`].
    pub fn cells(&self, secret: &str) -> Vec<String> {
        let mut detail = self.detail.clone();
        if let Some(e) = self.last_error.as_deref().filter(|e| !detail.contains(*e)) {
            detail.push_str(&format!(" (last error: {e})"));
        }
        vec![
            secret.to_owned(),
            self.consumer.clone(),
            if self.moved { format!("{} (moved)", self.state) } else { self.state.clone() },
            time_cell(self.delivered_at),
            time_cell(self.last_used_at),
            time_cell(self.failing_since),
            detail,
        ]
    }
}

impl TokenConsumers {
    /// Rows for [`HEADERS`], one per consumer.
    pub fn rows(list: &[TokenConsumers]) -> Vec<Vec<String>> {
        list.iter().flat_map(|t| t.consumers.iter().map(|c| c.cells(&t.secret))).collect()
    }

    /// `moved/total moved; failing: …` for a one-cell summary (`-` without consumers).
    pub fn summary(consumers: &[ConsumerView]) -> String {
        if consumers.is_empty() {
            return "-".into();
        }
        let moved = consumers.iter().filter(|c| c.moved).count();
        let mut s = format!("{moved}/{} moved", consumers.len());
        let failing: Vec<&str> =
            consumers.iter().filter(|c| c.state == "failing").map(|c| c.consumer.as_str()).collect();
        if !failing.is_empty() {
            s.push_str(&format!("; failing: {}", failing.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::state::UseEvidence;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2027-01-10 12:00 UTC);

    fn consumer(kind: ConsumerKind, id: &str) -> Consumer {
        Consumer { id: id.into(), kind, line: 1 }
    }

    fn connection() -> Consumer {
        consumer(
            ConsumerKind::DevopsServiceConnection {
                organization: crate::domain::OrgName::parse("fabrikam").unwrap(),
                project: "web".into(),
                connection: super::super::policy::ObjectRef::Name("npm-feed".into()),
                connection_type: "externalnpmregistry".into(),
                scheme: "Token".into(),
                parameter: "apitoken".into(),
            },
            "service-connection:fabrikam/web/npm-feed",
        )
    }

    #[test]
    fn a_delivered_connection_without_a_run_has_not_moved_and_with_one_has() {
        let id = AuthorizationId::from_uuid(uuid::Uuid::new_v4());
        let c = connection();
        let mut d = Delivery::new(&c.id, id, "v2", NOW - Duration::hours(3));
        d.step = DeliveryStep::Delivered { at: NOW - Duration::hours(2), after: Some("m".into()) };
        let v = consumer_view(&c, Some(&d), Some(id), NOW);
        assert_eq!((v.state.as_str(), v.moved), ("delivered", false), "{v:?}");
        assert!(v.detail.contains("no pipeline run"), "{v:?}");
        assert_eq!(v.delivered_at, Some(NOW - Duration::hours(2)));
        d.evidence = Some(UseEvidence { at: NOW - Duration::hours(1), what: "Build 7 succeeded".into() });
        let v = consumer_view(&c, Some(&d), Some(id), NOW);
        assert!(v.moved && v.last_used_at == Some(NOW - Duration::hours(1)), "{v:?}");
        assert_eq!(v.evidence.as_deref(), Some("Build 7 succeeded"));
        let json = serde_json::to_value(&v).unwrap();
        for field in
            ["consumer", "kind", "target", "state", "delivered_at", "last_used_at", "failing_since", "lag_hours"]
        {
            assert!(json.get(field).is_some(), "{field}: {json}");
        }
    }

    #[test]
    fn a_reference_holds_until_its_lag_passed_and_a_record_of_another_pat_is_unknown() {
        let id = AuthorizationId::from_uuid(uuid::Uuid::new_v4());
        let c = consumer(
            ConsumerKind::Reference { description: "App Service web".into(), lag_hours: 24 },
            "reference:app-service-web",
        );
        let mut d = Delivery::new(&c.id, id, "v2", NOW - Duration::hours(10));
        d.step = DeliveryStep::ReadsVault;
        let v = consumer_view(&c, Some(&d), Some(id), NOW);
        assert!(!v.moved && v.lag_until == Some(NOW + Duration::hours(14)), "{v:?}");
        assert!(v.target.contains("may lag 24 h"));
        let v = consumer_view(&c, Some(&d), Some(id), NOW + Duration::hours(15));
        assert!(v.moved, "{v:?}");
        let other = AuthorizationId::from_uuid(uuid::Uuid::new_v4());
        let v = consumer_view(&c, Some(&d), Some(other), NOW);
        assert_eq!((v.state.as_str(), v.moved), ("unknown", false));
    }

    #[test]
    fn a_failing_write_is_failing_and_summarised() {
        let id = AuthorizationId::from_uuid(uuid::Uuid::new_v4());
        let c = connection();
        let mut d = Delivery::new(&c.id, id, "v2", NOW - Duration::hours(3));
        d.failing_since = Some(NOW - Duration::hours(2));
        d.last_error = Some("access refused: HTTP 403".into());
        let v = consumer_view(&c, Some(&d), Some(id), NOW);
        assert_eq!(v.state, "failing");
        assert!(v.cells("feed-pat")[6].contains("403"), "{:?}", v.cells("feed-pat"));
        assert_eq!(TokenConsumers::summary(&[v]), "0/1 moved; failing: service-connection:fabrikam/web/npm-feed");
        assert_eq!(TokenConsumers::summary(&[]), "-");
    }
}
