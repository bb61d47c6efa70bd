//! Metrics: what each run measured, as OpenTelemetry instruments (see `docs/metrics.md`).
//!
//! The core produces [`Point`]s — plain values of the instruments in [`CATALOG`] with a small, closed set
//! of attributes ([`attr`]) — and never touches OpenTelemetry: `rotation::measure` turns a run into points,
//! the audit pass its findings, the handler its invocations. [`export::Metrics`] (built only when
//! `PATROL_OTLP_ENDPOINT` or `APPLICATIONINSIGHTS_CONNECTION_STRING` is set) records them into the
//! OpenTelemetry SDK behind a bounded queue and exports them over OTLP/HTTP and to Application Insights.
//!
//! No attribute holds a secret: the values are secret names, organization names, owner labels (hashed by
//! default, `PATROL_METRICS_OWNER_LABEL`), PAT authorization ids (identifiers, not credentials), rule ids
//! and fixed words.

pub mod export;
pub mod settings;

pub use export::Metrics;

/// How an instrument aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The last value per attribute set in an export (delta temporality: only what was recorded since).
    Gauge,
    /// A monotonic sum (delta temporality).
    Counter,
    /// A distribution of durations.
    Histogram,
}

/// One instrument.
#[derive(Debug, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    /// UCUM unit (`s`, `{token}` …), as OpenTelemetry's conventions ask.
    pub unit: &'static str,
    pub description: &'static str,
}

macro_rules! def {
    ($id:ident, $name:literal, $kind:ident, $unit:literal, $desc:literal) => {
        pub static $id: Def = Def { name: $name, kind: Kind::$kind, unit: $unit, description: $desc };
    };
}

def!(
    PAT_EXPIRY,
    "patrol.pat.expiry.remaining",
    Gauge,
    "s",
    "Time until a PAT expires (negative: expired), per managed token's current or draining PAT and per unmanaged PAT."
);
def!(
    TOKEN_STATE,
    "patrol.token.state",
    Gauge,
    "{token}",
    "1 for each managed token in its state (patrol.token.state = current, draining or failing)."
);
def!(
    CONSUMER_DELIVERIES,
    "patrol.consumer.deliveries",
    Gauge,
    "{delivery}",
    "Consumers of a managed token's current PAT by delivery state (delivered, pending, failing)."
);
def!(
    RUN_TOKENS,
    "patrol.run.tokens",
    Counter,
    "{token}",
    "Tokens a run planned, rotated, revoked (previous PATs), failed, found busy or deferred (patrol.run.result)."
);
def!(RUN_DURATION, "patrol.run.duration", Histogram, "s", "How long a rotation run took.");
def!(
    ROTATION_FAILURES,
    "patrol.token.rotation.failures",
    Counter,
    "{run}",
    "Runs in which a managed token's rotation failed or the token was left at risk."
);
def!(
    SIGN_IN_REQUIRED,
    "patrol.owner.sign_in_required",
    Gauge,
    "{owner}",
    "1 for each owner whose Entra session is gone and who must sign in again (patrol login), 0 for the others."
);
def!(
    DEVOPS_REQUESTS,
    "patrol.devops.requests",
    Counter,
    "{request}",
    "Azure DevOps responses received (every attempt, retries included)."
);
def!(DEVOPS_THROTTLED, "patrol.devops.throttled", Counter, "{request}", "Azure DevOps 429 responses.");
def!(
    DEVOPS_WAIT,
    "patrol.devops.throttle.wait",
    Counter,
    "s",
    "Time calls waited because Azure DevOps asked to slow down (Retry-After, X-RateLimit-*)."
);
def!(AUDIT_FINDINGS, "patrol.audit.findings", Counter, "{finding}", "Audit-log findings by rule and severity.");
def!(
    AUDIT_LAG,
    "patrol.audit.log.lag",
    Gauge,
    "s",
    "How far behind now the audit log has been read, per organization."
);
def!(
    INVOCATIONS,
    "patrol.invocations",
    Counter,
    "{invocation}",
    "Function invocations and CLI runs by function and outcome."
);
def!(
    INVOKE_DURATION,
    "faas.invoke_duration",
    Histogram,
    "s",
    "Duration of a function invocation (OpenTelemetry FaaS semantic convention), as the handler measured it."
);
def!(
    DROPPED,
    "patrol.metrics.dropped",
    Counter,
    "{batch}",
    "Metric batches dropped because the export queue was full."
);
def!(
    EXPORT_FAILURES,
    "patrol.metrics.export.failures",
    Counter,
    "{export}",
    "Exports that failed or timed out (counted, never failing an invocation)."
);

/// Every instrument patrol records (`docs/metrics.md` lists each).
pub static CATALOG: &[&Def] = &[
    &PAT_EXPIRY,
    &TOKEN_STATE,
    &CONSUMER_DELIVERIES,
    &RUN_TOKENS,
    &RUN_DURATION,
    &ROTATION_FAILURES,
    &SIGN_IN_REQUIRED,
    &DEVOPS_REQUESTS,
    &DEVOPS_THROTTLED,
    &DEVOPS_WAIT,
    &AUDIT_FINDINGS,
    &AUDIT_LAG,
    &INVOCATIONS,
    &INVOKE_DURATION,
    &DROPPED,
    &EXPORT_FAILURES,
];

/// Attribute keys: the only labels patrol exports.
pub mod attr {
    /// A managed token's secret name.
    pub const SECRET: &str = "patrol.secret.name";
    /// Azure DevOps organization.
    pub const ORGANIZATION: &str = "patrol.organization";
    /// The PAT's owner, as `PATROL_METRICS_OWNER_LABEL` says (the raw UPN never leaves unless `upn`).
    pub const OWNER: &str = "patrol.owner";
    /// current, draining, failing (managed) or unmanaged.
    pub const PAT_STATE: &str = "patrol.pat.state";
    /// The PAT's authorization id (an identifier, usable only by its owner to revoke; never the value).
    pub const AUTHORIZATION_ID: &str = "patrol.pat.authorization_id";
    pub const TOKEN_STATE: &str = "patrol.token.state";
    /// Whether patrol manages the PAT.
    pub const MANAGED: &str = "patrol.pat.managed";
    /// delivered, pending, failing.
    pub const DELIVERY_STATE: &str = "patrol.consumer.state";
    /// planned, rotated, revoked, failed, busy, deferred.
    pub const RUN_RESULT: &str = "patrol.run.result";
    pub const DRY_RUN: &str = "patrol.run.dry_run";
    /// completed, incomplete, failed, planned, ignored, rejected.
    pub const OUTCOME: &str = "patrol.outcome";
    /// RotateTimer, RotateHttp, EventGridSecretChanged, or cli.
    pub const FUNCTION: &str = "patrol.function";
    /// OpenTelemetry FaaS convention: timer, http, pubsub, other.
    pub const TRIGGER: &str = "faas.trigger";
    pub const RULE: &str = "patrol.audit.rule";
    pub const SEVERITY: &str = "patrol.audit.severity";
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Str(String),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub def: &'static Def,
    pub value: f64,
    pub attrs: Vec<(&'static str, Value)>,
}

impl Point {
    pub fn new(def: &'static Def, value: f64) -> Self {
        Self { def, value, attrs: Vec::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.attrs.push((key, value.into()));
        self
    }

    /// The value of attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The owner label: a pseudonym (default), the UPN, or nothing.
pub fn owner_label(owner: &str, mode: settings::OwnerLabel) -> Option<String> {
    use sha2::Digest as _;
    match mode {
        settings::OwnerLabel::Upn => Some(owner.to_owned()),
        settings::OwnerLabel::None => None,
        settings::OwnerLabel::Hash => {
            let digest = sha2::Sha256::digest(owner.trim().to_lowercase().as_bytes());
            Some(hex::encode(&digest[..8]))
        }
    }
}

/// Azure DevOps calls an identity (or a whole connector) made, for `patrol.devops.*`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallCounters {
    pub requests: u64,
    pub throttled: u64,
    pub waited_seconds: f64,
}

impl CallCounters {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &CallCounters) -> CallCounters {
        CallCounters {
            requests: self.requests.saturating_sub(before.requests),
            throttled: self.throttled.saturating_sub(before.throttled),
            waited_seconds: (self.waited_seconds - before.waited_seconds).max(0.0),
        }
    }

    pub fn points(&self) -> Vec<Point> {
        vec![
            Point::new(&DEVOPS_REQUESTS, self.requests as f64),
            Point::new(&DEVOPS_THROTTLED, self.throttled as f64),
            Point::new(&DEVOPS_WAIT, self.waited_seconds),
        ]
    }
}

/// One `patrol.invocations` point: which function (or `cli`), its trigger kind and its outcome word.
pub fn invocation_point(function: &str, trigger: &'static str, outcome: &'static str) -> Point {
    Point::new(&INVOCATIONS, 1.0)
        .with(attr::FUNCTION, function.to_owned())
        .with(attr::TRIGGER, trigger)
        .with(attr::OUTCOME, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for d in CATALOG {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("patrol.") || d.name.starts_with("faas."), "{}", d.name);
            assert!(!d.name.ends_with("_total") && !d.name.contains(char::is_uppercase), "{}", d.name);
            assert!(d.unit == "s" || (d.unit.starts_with('{') && d.unit.ends_with('}')), "{}: {}", d.name, d.unit);
        }
    }

    #[test]
    fn docs_name_every_instrument() {
        let doc = include_str!("../../docs/metrics.md");
        for d in CATALOG {
            assert!(doc.contains(&format!("`{}`", d.name)), "docs/metrics.md does not describe {}", d.name);
        }
    }

    #[test]
    fn owners_are_pseudonymous_by_default() {
        use super::settings::OwnerLabel;
        let a = owner_label("Alice@Contoso.com", OwnerLabel::Hash).unwrap();
        assert_eq!(a, owner_label("alice@contoso.com", OwnerLabel::Hash).unwrap());
        assert_eq!(a.len(), 16);
        assert!(!a.contains("alice"));
        assert_eq!(owner_label("alice@contoso.com", OwnerLabel::Upn).as_deref(), Some("alice@contoso.com"));
        assert_eq!(owner_label("alice@contoso.com", OwnerLabel::None), None);
    }
}
