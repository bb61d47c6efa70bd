//! Telemetry: `tracing` with JSON lines on stdout (the Functions host forwards stdout to Application
//! Insights) or human text, filtered by `PATROL_LOG`.
//!
//! Also owns per-invocation log capture: the handler opens one span per invocation and attaches a
//! [`LogCapture`] to it; [`CaptureLayer`] copies every event inside that span (and its children) into the
//! capture, and the handler returns those lines in the reply's `Logs`, which the host files under the
//! invocation id. Nothing here formats secrets: they are held in types that cannot be printed.

use crate::config::{ConfigError, LogFormat};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use crate::trigger::{trigger, with_trigger};

/// Most lines and bytes one invocation returns in `Logs`; the rest are counted, not kept (stdout has all).
pub const MAX_CAPTURED_LINES: usize = 500;
pub const MAX_CAPTURED_BYTES: usize = 64 * 1024;

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax; an invalid one is a [`ConfigError`]
/// naming `PATROL_LOG`. Calling it twice keeps the first subscriber.
pub fn init(filter: &str, format: LogFormat) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| ConfigError::new("PATROL_LOG", format!("{filter:?} is not a valid log filter ({e})")))?;
    let registry = tracing_subscriber::registry().with(filter).with(CaptureLayer);
    let result = match format {
        LogFormat::Json => registry.with(json_layer(std::io::stdout)).try_init(),
        LogFormat::Text => {
            registry.with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::io::stdout)).try_init()
        }
    };
    // Already initialised (tests, or `serve` called twice in one process): keep the first.
    let _ = result;
    Ok(())
}

/// The JSON lines Application Insights receives: each event flattened, with the fields of the span it was
/// emitted in under `span` (the engine's `rotation` span: `secret`, `organization`, `owner`, `operation_id`),
/// so one rotation can be followed across its steps.
pub fn json_layer<S, W>(
    writer: W,
) -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    W,
>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
}

/// The lines captured for one invocation.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    lines: Vec<String>,
    bytes: usize,
    dropped: usize,
}

impl LogCapture {
    /// Attaches a new capture to `span`. `None` when no [`CaptureLayer`] subscriber records the span
    /// (telemetry not initialised, or the span filtered out).
    pub fn attach(span: &Span) -> Option<Self> {
        let capture = Self::default();
        let attached = span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            dispatch.downcast_ref::<CaptureLayer>()?;
            let span = registry.span(id)?;
            span.extensions_mut().insert(capture.clone());
            Some(())
        });
        attached.flatten().map(|()| capture)
    }

    fn push(&self, line: String) {
        let Ok(mut c) = self.0.lock() else { return };
        if c.lines.len() >= MAX_CAPTURED_LINES || c.bytes + line.len() > MAX_CAPTURED_BYTES {
            c.dropped += 1;
            return;
        }
        c.bytes += line.len();
        c.lines.push(line);
    }

    /// The captured lines (and a note of any that did not fit).
    pub fn take(&self) -> Vec<String> {
        let Ok(mut c) = self.0.lock() else { return Vec::new() };
        let mut lines = std::mem::take(&mut c.lines);
        if c.dropped > 0 {
            lines.push(format!("({} more log lines are in the handler's stdout)", c.dropped));
        }
        c.bytes = 0;
        c.dropped = 0;
        lines
    }
}

/// Copies events inside a span carrying a [`LogCapture`] into it, as `LEVEL message key=value…`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureLayer;

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            let ext = span.extensions();
            if let Some(capture) = ext.get::<LogCapture>() {
                capture.push(format_event(event));
                return;
            }
        }
    }
}

fn format_event(event: &Event<'_>) -> String {
    let mut v = LineVisitor { message: String::new(), fields: String::new() };
    event.record(&mut v);
    let mut line = format!("{} {}", event.metadata().level(), v.message);
    if !v.fields.is_empty() {
        line.push_str(&v.fields);
    }
    line
}

struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_events_of_the_invocation_span_only() {
        let subscriber = tracing_subscriber::registry().with(CaptureLayer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("invocation", invocation_id = "abc");
            let capture = LogCapture::attach(&span).expect("registry present");
            tracing::info!("outside");
            span.in_scope(|| {
                tracing::warn!(secret = "db-password", "not configured");
                tracing::info_span!("child").in_scope(|| tracing::info!(n = 3, "nested"));
            });
            let lines = capture.take();
            assert_eq!(lines, vec!["WARN not configured secret=\"db-password\"", "INFO nested n=3"]);
        });
    }

    #[test]
    fn capture_is_bounded() {
        let subscriber = tracing_subscriber::registry().with(CaptureLayer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("invocation");
            let capture = LogCapture::attach(&span).unwrap();
            span.in_scope(|| {
                for i in 0..(MAX_CAPTURED_LINES + 5) {
                    tracing::info!(i, "line");
                }
            });
            let lines = capture.take();
            assert_eq!(lines.len(), MAX_CAPTURED_LINES + 1);
            assert_eq!(lines.last().unwrap(), "(5 more log lines are in the handler's stdout)");
        });
    }

    #[test]
    fn no_subscriber_no_capture() {
        let span = tracing::info_span!("invocation");
        assert!(LogCapture::attach(&span).is_none());
    }

    #[test]
    fn invalid_filter_names_the_setting() {
        let e = init("patrol=[", LogFormat::Json).unwrap_err();
        assert_eq!(e.setting, "PATROL_LOG");
    }
}
