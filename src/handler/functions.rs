//! The seam between the protocol and the work: the [`Functions`] trait the rotation engine implements.
//!
//! The handler parses and validates each invocation, then calls one method with typed input and an
//! [`Invocation`] context, and turns the returned [`Report`] or [`Failure`] into the host's reply.
//! [`NotConfigured`] is the implementation used until an engine is plugged in: it says plainly what it
//! received and that rotation is not configured — it never pretends to have rotated anything.
//!
//! Implementations should build their clients lazily (on the first call that needs them): the handler
//! must answer the host's readiness probe within milliseconds of starting.

use super::eventgrid::SecretEvent;
use super::http::{AckRequest, RotateMode, RotateRequest};
use super::payload::RetryContext;
use super::timer::TimerRun;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Instant;
use time::OffsetDateTime;

/// The three functions of the Function App.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionName {
    RotateTimer,
    RotateHttp,
    EventGridSecretChanged,
}

/// What the host knows a function by: its folder (`<name>/function.json`), the name of its trigger binding
/// (the key of `Data` in the invocation) and the trigger's binding type in `function.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSpec {
    pub function: FunctionName,
    pub name: &'static str,
    pub binding: &'static str,
    pub trigger: &'static str,
}

/// The one table of functions: the handler's routes, its 404 text, the check of the Function App's
/// `function.json` files (tests/it/handler.rs) and `scripts/package.sh` (which reads the rows from this file:
/// keep each a literal `FunctionSpec { function, name: "…", binding: "…", trigger: "…" }`) all follow it. A new
/// trigger is a row here, a [`FunctionName`] variant, its `function.json` folder and a method on [`Functions`].
pub const FUNCTIONS: [FunctionSpec; 3] = [
    FunctionSpec {
        function: FunctionName::RotateTimer,
        name: "RotateTimer",
        binding: "myTimer",
        trigger: "timerTrigger",
    },
    FunctionSpec { function: FunctionName::RotateHttp, name: "RotateHttp", binding: "req", trigger: "httpTrigger" },
    FunctionSpec {
        function: FunctionName::EventGridSecretChanged,
        name: "EventGridSecretChanged",
        binding: "eventGridEvent",
        trigger: "eventGridTrigger",
    },
];

impl FunctionName {
    pub const ALL: [Self; FUNCTIONS.len()] = {
        let mut all = [Self::RotateTimer; FUNCTIONS.len()];
        let mut i = 0;
        while i < FUNCTIONS.len() {
            all[i] = FUNCTIONS[i].function;
            i += 1;
        }
        all
    };

    /// This function's row of [`FUNCTIONS`].
    pub fn spec(self) -> &'static FunctionSpec {
        // Every variant has its row (see the test).
        FUNCTIONS.iter().find(|s| s.function == self).unwrap_or(&FUNCTIONS[0])
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The function for a request path segment (function names are case-insensitive in the host).
    pub fn from_path(segment: &str) -> Option<Self> {
        FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(segment)).map(|f| f.function)
    }

    /// What the handler serves, in words (for the 404): "POST /RotateTimer, /RotateHttp and /…".
    pub fn served() -> String {
        let paths: Vec<String> = FUNCTIONS.iter().map(|f| format!("/{}", f.name)).collect();
        match paths.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("POST {} and {last}", rest.join(", ")),
            Some((last, _)) => format!("POST {last}"),
            None => "no function".into(),
        }
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The context of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `X-Azure-Functions-InvocationId` (a fresh id when a caller other than the host left it out).
    pub id: String,
    pub function: FunctionName,
    /// The host's `Metadata.sys.UtcNow`; patrol's clock has already been aligned with it.
    pub host_now: Option<OffsetDateTime>,
    /// Set while a function-level retry policy retries this invocation.
    pub retry: Option<RetryContext>,
    /// When the handler received the invocation (time budgets count from here).
    pub received: Instant,
}

/// How an invocation ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The work was done.
    Completed,
    /// A plan was computed and nothing was changed (`GET /api/rotate`).
    Planned,
    /// Some work was done and the rest is left for the next run (time budget spent).
    Incomplete,
    /// Nothing to do: the event or request is not about anything patrol manages.
    Ignored,
    /// No rotation engine is configured; nothing was done.
    NotConfigured,
    /// The work ran but left a token at risk (`rotation::verdict`): `RotateTimer` and
    /// `EventGridSecretChanged` fail the invocation (500, so the host's failed-invocation alerts fire and
    /// Event Grid redelivers); `RotateHttp` answers 500 with the report.
    Failed,
}

impl Status {
    /// The HTTP status `RotateHttp` answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Completed | Self::Planned | Self::Ignored => 200,
            Self::Incomplete => 202,
            Self::NotConfigured => 503,
            Self::Failed => 500,
        }
    }
}

/// What an invocation did: a one-line summary (logged, and returned in `Logs`) and structured detail
/// (`ReturnValue`, and the body of `RotateHttp`'s response). Never contains secret values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub status: Status,
    pub summary: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// What the run measured (exported by `handler::metered` when metrics are on; never serialized).
    #[serde(skip)]
    pub metrics: Vec<crate::metrics::Point>,
}

impl Report {
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Self { status, summary: summary.into(), detail: Value::Null, metrics: Vec::new() }
    }

    pub fn with_metrics(mut self, points: Vec<crate::metrics::Point>) -> Self {
        self.metrics.extend(points);
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Why an invocation failed. Timer and Event Grid failures fail the invocation (Event Grid redelivers);
/// `RotateHttp` failures reach the caller as the matching HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The request names something patrol does not manage.
    NotFound,
    /// Another run holds the token's lease, or the state changed underneath.
    Conflict,
    /// A dependency (Azure DevOps, Entra, Key Vault) is unavailable; try again later.
    Unavailable,
    /// The caller could not be authenticated (a webhook acknowledgement's signature or timestamp).
    Unauthorized,
    /// Anything else.
    Internal,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn http_status(&self) -> u16 {
        match self.kind {
            FailureKind::NotFound => 404,
            FailureKind::Conflict => 409,
            FailureKind::Unauthorized => 401,
            FailureKind::Unavailable => 503,
            FailureKind::Internal => 500,
        }
    }
}

pub type Outcome = Result<Report, Failure>;

/// The work behind the three functions. Inputs are already parsed and validated.
#[async_trait]
pub trait Functions: Send + Sync + 'static {
    /// `RotateTimer`: the scheduled run over every managed token.
    async fn rotate_timer(&self, invocation: &Invocation, timer: TimerRun) -> Outcome;
    /// `RotateHttp`: a manual plan (GET) or run (POST), for one secret or all.
    async fn rotate_http(&self, invocation: &Invocation, request: RotateRequest) -> Outcome;
    /// `EventGridSecretChanged`: a Key Vault secret event. Must be fast (Event Grid gives up after 30 s)
    /// and idempotent (deliveries repeat); an event for an unmanaged secret is [`Status::Ignored`].
    async fn secret_changed(&self, invocation: &Invocation, event: SecretEvent) -> Outcome;
    /// `RotateHttp` with a webhook consumer's signed acknowledgement (`POST {"ack": …}`): verify it and
    /// record it as the consumer's evidence of use. Implementations that keep no consumers say so.
    async fn acknowledge(&self, _invocation: &Invocation, ack: AckRequest) -> Outcome {
        Ok(Report::new(
            Status::NotConfigured,
            format!(
                "received an acknowledgement of {} version {} from {}; {NOT_CONFIGURED}",
                ack.secret, ack.version, ack.consumer
            )
            .replace("nothing was rotated", "nothing was recorded"),
        ))
    }
}

/// The implementation used until a rotation engine is configured: validates, reports what it received,
/// and says that nothing was rotated.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotConfigured;

const NOT_CONFIGURED: &str = "rotation is not configured in this build of patrol; nothing was rotated";

#[async_trait]
impl Functions for NotConfigured {
    async fn rotate_timer(&self, _: &Invocation, timer: TimerRun) -> Outcome {
        let last = timer.last_run().map_or_else(|| "never".to_owned(), crate::timestamp::rfc3339);
        Ok(Report::new(
            Status::NotConfigured,
            format!("received a timer run (past due: {}, last run: {last}); {NOT_CONFIGURED}", timer.is_past_due),
        )
        .with_detail(json!({ "received": timer })))
    }

    async fn rotate_http(&self, _: &Invocation, request: RotateRequest) -> Outcome {
        let what = match request.mode {
            RotateMode::Plan => "a plan request",
            RotateMode::Run => "a rotation request",
        };
        let target = request.secret.as_ref().map_or("every managed secret", |s| s.as_str());
        let verb = if request.mode == RotateMode::Plan { "planned" } else { "rotated" };
        let tail = NOT_CONFIGURED.replace("rotated", verb);
        Ok(Report::new(
            Status::NotConfigured,
            format!("received {what} for {target} (force: {}); {tail}", request.force),
        )
        .with_detail(json!({ "received": request })))
    }

    async fn secret_changed(&self, _: &Invocation, event: SecretEvent) -> Outcome {
        Ok(Report::new(
            Status::NotConfigured,
            format!(
                "received {} for secret {} in vault {}; {NOT_CONFIGURED}",
                serde_json::to_value(event.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                event.secret,
                event.vault
            ),
        )
        .with_detail(json!({ "received": event })))
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_function_has_one_row_and_the_404_names_them_all() {
        for f in FunctionName::ALL {
            assert_eq!(f.spec().function, f);
            assert_eq!(FunctionName::from_path(&f.as_str().to_lowercase()), Some(f));
        }
        let mut names: Vec<_> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len(), "function names are unique");
        assert_eq!(FunctionName::from_path("RotateNothing"), None);
        assert_eq!(FunctionName::served(), "POST /RotateTimer, /RotateHttp and /EventGridSecretChanged");
        // The payload parsers read the bindings the table names.
        assert_eq!(FunctionName::RotateTimer.spec().binding, crate::handler::timer::BINDING);
        assert_eq!(FunctionName::RotateHttp.spec().binding, crate::handler::http::BINDING);
        assert_eq!(FunctionName::EventGridSecretChanged.spec().binding, crate::handler::eventgrid::BINDING);
    }
}
