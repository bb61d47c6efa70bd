//! Metrics around every invocation: [`Metered`] wraps the [`Functions`], takes the points the run measured
//! (`Report::metrics`), adds the invocation's own (`patrol.invocations`, `faas.invoke_duration`) and queues
//! them; the metrics worker exports them in the background soon after (`metrics::export::EXPORT_DELAY`), and
//! `patrol serve` flushes what is left when it shuts down. Only `RotateTimer` waits for its export (at most
//! `PATROL_METRICS_FLUSH_TIMEOUT_MS`) before answering ([`must_wait`]). Exporting never changes the outcome.

use super::eventgrid::SecretEvent;
use super::functions::{Functions, Invocation, Outcome, Status};
use super::http::RotateRequest;
use super::timer::TimerRun;
use crate::metrics::{self as m, Metrics, Point, attr};
use async_trait::async_trait;
use std::sync::Arc;

pub struct Metered {
    inner: Arc<dyn Functions>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Functions>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// `inner`, metered when `metrics` is configured.
    pub fn wrap(inner: Arc<dyn Functions>, metrics: Option<Arc<Metrics>>) -> Arc<dyn Functions> {
        match metrics {
            Some(metrics) => Arc::new(Self::new(inner, metrics)),
            None => inner,
        }
    }

    async fn done(&self, inv: &Invocation, trigger: &'static str, mut outcome: Outcome) -> Outcome {
        let mut points = match &mut outcome {
            Ok(report) => std::mem::take(&mut report.metrics),
            Err(_) => Vec::new(),
        };
        let label = outcome_label(&outcome);
        let function = inv.function.as_str();
        points.push(m::invocation_point(function, trigger, label));
        points.push(
            Point::new(&m::INVOKE_DURATION, inv.received.elapsed().as_secs_f64())
                .with(attr::TRIGGER, trigger)
                .with(attr::FUNCTION, function)
                .with(attr::OUTCOME, label),
        );
        self.metrics.record(points);
        if must_wait(function) {
            self.metrics.flush().await;
        }
        outcome
    }
}

/// Whether an invocation waits (within the bound) for its points to be exported before it answers: only
/// `RotateTimer`. It runs once a day, its run takes seconds, and its `patrol.invocations` point is what the
/// silence alert ("no successful RotateTimer in 26 h") counts: a Flex Consumption instance may be frozen or
/// recycled right after it answers, and a day's only timer point lost there would raise a false alarm. The
/// wait costs at most the bound once a day. Every other invocation answers at once; its points go out in
/// the background within `EXPORT_DELAY`, or at shutdown.
pub fn must_wait(function: &str) -> bool {
    function == "RotateTimer"
}

/// completed, incomplete, failed, planned, ignored, not-configured, or error (the function failed).
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(r) => match r.status {
            Status::Completed => "completed",
            Status::Planned => "planned",
            Status::Incomplete => "incomplete",
            Status::Ignored => "ignored",
            Status::NotConfigured => "not-configured",
            Status::Failed => "failed",
        },
        Err(_) => "error",
    }
}

#[async_trait]
impl Functions for Metered {
    async fn rotate_timer(&self, inv: &Invocation, timer: TimerRun) -> Outcome {
        let o = self.inner.rotate_timer(inv, timer).await;
        self.done(inv, "timer", o).await
    }

    async fn rotate_http(&self, inv: &Invocation, req: RotateRequest) -> Outcome {
        let o = self.inner.rotate_http(inv, req).await;
        self.done(inv, "http", o).await
    }

    async fn secret_changed(&self, inv: &Invocation, event: SecretEvent) -> Outcome {
        let o = self.inner.secret_changed(inv, event).await;
        self.done(inv, "pubsub", o).await
    }
}
