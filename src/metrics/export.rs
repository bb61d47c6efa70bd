//! Export: [`Metrics`] takes batches of [`Point`]s into a bounded queue (a full queue drops the batch and
//! counts it; [`Metrics::record`] never waits), and one background task records them into OpenTelemetry
//! SDK instruments and, [`EXPORT_DELAY`] after the first point not yet exported, collects them (delta
//! temporality: what was recorded since the last collection) and exports them with `opentelemetry-otlp`
//! (OTLP/HTTP protobuf, `PATROL_OTLP_ENDPOINT`) and `opentelemetry-application-insights`
//! (`APPLICATIONINSIGHTS_CONNECTION_STRING`). One export is in flight at a time, bounded by
//! [`EXPORT_TIMEOUT`]; points recorded meanwhile go into the next one.
//!
//! Nothing is built until the first batch: no task, no HTTP client, no SDK — so the handler's start is
//! untouched, and without an endpoint [`Metrics::from_settings`] returns `None` and nothing exists at all.
//! [`Metrics::flush`] waits for what was recorded before it to be exported, at most
//! `PATROL_METRICS_FLUSH_TIMEOUT_MS`: `patrol serve` on shutdown, each CLI run before it exits, and the
//! handler after `RotateTimer` (`handler::metered`). A failure is only counted and logged.

use super::settings::{AadAuth, MetricsSettings, OwnerLabel};
use super::{Def, Kind, Point, Value};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long one export may take in the background (each exporter's HTTP timeout too).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Points are exported at most this long after they were recorded (once the export in flight, if any, has
/// ended): long enough to gather a burst of invocations into one request, short enough that an instance
/// frozen after it answers has rarely anything left to send.
pub const EXPORT_DELAY: Duration = Duration::from_millis(100);

/// Most queued messages the worker takes at once.
const QUEUE_DRAIN: usize = 64;

/// Histogram bounds for durations in seconds (runs take milliseconds to the 480 s budget).
const DURATION_BOUNDS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

enum Msg {
    Batch(Vec<Point>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    failures: AtomicU64,
    exports: AtomicU64,
}

/// The metrics pipeline of one process (the handler, or one CLI run).
pub struct Metrics {
    tx: mpsc::Sender<Msg>,
    /// Taken by the worker when it starts (on the first batch).
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    counters: Arc<Counters>,
    settings: MetricsSettings,
    ca_cert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("otlp_endpoint", &self.settings.otlp_endpoint.as_ref().map(|u| u.as_str()))
            .field("appinsights", &self.settings.appinsights.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`Metrics::flush`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Exported (or the export failed and was counted) within the bound.
    Done,
    /// The bound passed; the export goes on in the background.
    TimedOut,
    /// The worker is gone: nothing waited for.
    Skipped,
}

impl Metrics {
    /// `None` when no exporter is configured (nothing is built, nothing is recorded).
    pub fn from_settings(settings: &MetricsSettings, ca_cert: Option<&std::path::Path>) -> Option<Arc<Self>> {
        Self::new(settings.clone(), ca_cert.map(std::path::Path::to_path_buf))
    }

    pub fn new(settings: MetricsSettings, ca_cert: Option<std::path::PathBuf>) -> Option<Arc<Self>> {
        if !settings.enabled() {
            return None;
        }
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        Some(Arc::new(Self { tx, rx: Mutex::new(Some(rx)), counters: Arc::default(), settings, ca_cert }))
    }

    /// The flush bound (`PATROL_METRICS_FLUSH_TIMEOUT_MS`).
    pub fn flush_timeout(&self) -> Duration {
        self.settings.flush_timeout
    }

    /// Batches dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Exports that failed or timed out.
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::Relaxed)
    }

    /// Exports finished (successful or not).
    pub fn exports(&self) -> u64 {
        self.counters.exports.load(Ordering::Relaxed)
    }

    /// Queues a batch; never waits. A full queue drops it (counted as `patrol.metrics.dropped`).
    pub fn record(&self, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        self.start();
        if self.tx.try_send(Msg::Batch(points)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until what was recorded before this call has been exported (or its export failed), at most the
    /// flush bound; the export goes on in the background after that.
    pub async fn flush(&self) -> Flushed {
        self.flush_within(self.settings.flush_timeout).await
    }

    pub async fn flush_within(&self, bound: Duration) -> Flushed {
        self.start();
        let (done, wait) = oneshot::channel();
        // A full queue is waited on too (the worker empties it quickly), all within the bound: a flush at
        // shutdown right after a burst must not be skipped.
        let flushed = async {
            self.tx.send(Msg::Flush(done)).await.map_err(|_| ())?;
            wait.await.map_err(|_| ())
        };
        match tokio::time::timeout(bound, flushed).await {
            Ok(Ok(())) => Flushed::Done,
            Ok(Err(())) => Flushed::Skipped,
            Err(_) => {
                tracing::warn!(bound_ms = bound.as_millis() as u64, "metrics export still running; not waiting for it");
                Flushed::TimedOut
            }
        }
    }

    /// Starts the worker on first use (inside the caller's tokio runtime).
    fn start(&self) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let settings = self.settings.clone();
        let ca = self.ca_cert.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            match Pipeline2::build(&settings, ca.as_deref(), counters.clone()) {
                Ok(p) => p.run(rx).await,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics export is off: the exporter could not be built");
                    drain(rx, &counters).await;
                }
            }
        });
    }
}

/// Answers flushes and counts batches when no exporter could be built.
async fn drain(mut rx: mpsc::Receiver<Msg>, counters: &Counters) {
    while let Some(m) = rx.recv().await {
        match m {
            Msg::Batch(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The manual reader, shared between the provider (which registers it) and the worker (which collects).
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

enum Instrument {
    Gauge(Gauge<f64>),
    Counter(Counter<f64>),
    Histogram(Histogram<f64>),
}

type AppInsights = opentelemetry_application_insights::Exporter<Client>;

/// The SDK side, owned by the worker task.
struct Pipeline2 {
    provider: SdkMeterProvider,
    reader: SharedReader,
    instruments: HashMap<&'static str, Instrument>,
    exporters: Arc<Exporters>,
    owner_label: OwnerLabel,
    counters: Arc<Counters>,
    reported_dropped: u64,
    reported_failures: u64,
}

impl Pipeline2 {
    fn build(s: &MetricsSettings, ca: Option<&std::path::Path>, counters: Arc<Counters>) -> Result<Self, String> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let http = http_client(ca)?;
        let otlp = match &s.otlp_endpoint {
            None => None,
            Some(base) => Some(
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_http_client(http.clone())
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(otlp_metrics_url(base))
                    .with_timeout(EXPORT_TIMEOUT)
                    .with_temporality(Temporality::Delta)
                    .build()
                    .map_err(|e| format!("PATROL_OTLP_ENDPOINT: {e}"))?,
            ),
        };
        let appinsights = match &s.appinsights {
            None => None,
            Some(cs) => {
                let client = Client { http, aad: s.appinsights_aad.as_ref().map(aad_credential).transpose()? };
                Some(
                    opentelemetry_application_insights::Exporter::new_from_connection_string(
                        cs.expose_secret(),
                        client,
                    )
                    // The crate's own message could quote the string: name the setting only.
                    .map_err(|_| "APPLICATIONINSIGHTS_CONNECTION_STRING is not a valid connection string".to_owned())?,
                )
            }
        };
        let reader = SharedReader(Arc::new(ManualReader::builder().with_temporality(Temporality::Delta).build()));
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "patrol"),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.clone()).build();
        let meter = provider.meter("patrol");
        let mut instruments = HashMap::new();
        for d in super::CATALOG {
            let i = match d.kind {
                Kind::Gauge => {
                    Instrument::Gauge(meter.f64_gauge(d.name).with_unit(d.unit).with_description(d.description).build())
                }
                Kind::Counter => Instrument::Counter(
                    meter.f64_counter(d.name).with_unit(d.unit).with_description(d.description).build(),
                ),
                Kind::Histogram => Instrument::Histogram(
                    meter
                        .f64_histogram(d.name)
                        .with_unit(d.unit)
                        .with_description(d.description)
                        .with_boundaries(DURATION_BOUNDS.to_vec())
                        .build(),
                ),
            };
            instruments.insert(d.name, i);
        }
        Ok(Self {
            provider,
            reader,
            instruments,
            exporters: Arc::new(Exporters { otlp, appinsights }),
            owner_label: s.owner_label,
            counters,
            reported_dropped: 0,
            reported_failures: 0,
        })
    }

    /// The worker: records every batch as it arrives and exports what was recorded at most
    /// [`EXPORT_DELAY`] later (one export in flight at a time; points recorded meanwhile go into the next).
    /// A flush is answered when the points recorded before it have been exported (or the export failed).
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        // The export in flight, and the flushes answered when it ends.
        let mut in_flight: Option<futures::future::BoxFuture<'static, ()>> = None;
        let mut waiting_current: Vec<oneshot::Sender<()>> = Vec::new();
        // Points recorded since the last collection, when they are due, and the flushes waiting for them.
        let mut pending = false;
        let mut due: Option<tokio::time::Instant> = None;
        let mut waiting_next: Vec<oneshot::Sender<()>> = Vec::new();
        let mut open = true;
        // One timer, re-armed only when the due time changes, and the queue drained in bulk: the worker's own
        // cost per batch stays small next to the invocations it shares the threads with.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut batch = Vec::with_capacity(QUEUE_DRAIN);
        while open || in_flight.is_some() || pending {
            let ready = in_flight.is_none() && pending;
            if let Some(d) = due
                && sleep.deadline() != d
            {
                sleep.as_mut().reset(d);
            }
            tokio::select! {
                n = rx.recv_many(&mut batch, QUEUE_DRAIN), if open => {
                    if n == 0 {
                        // Every sender is gone: export what is left, then stop.
                        open = false;
                        due = Some(tokio::time::Instant::now());
                    }
                    for m in batch.drain(..) {
                        match m {
                            Msg::Batch(points) => {
                                self.record(points);
                                pending = true;
                                due.get_or_insert_with(|| tokio::time::Instant::now() + EXPORT_DELAY);
                            }
                            Msg::Flush(done) => {
                                if pending {
                                    waiting_next.push(done);
                                    due = Some(tokio::time::Instant::now());
                                } else if in_flight.is_some() {
                                    waiting_current.push(done);
                                } else {
                                    let _ = done.send(());
                                }
                            }
                        }
                    }
                },
                () = async {
                    match in_flight.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => {
                    in_flight = None;
                    for w in waiting_current.drain(..) {
                        let _ = w.send(());
                    }
                }
                () = &mut sleep, if ready && due.is_some() => {
                    pending = false;
                    due = None;
                    in_flight = self.collect();
                    waiting_current.append(&mut waiting_next);
                    if in_flight.is_none() {
                        for w in waiting_current.drain(..) {
                            let _ = w.send(());
                        }
                    }
                }
            }
        }
        let _ = self.provider.shutdown();
    }

    fn record(&self, points: Vec<Point>) {
        for p in points {
            self.record_one(p.def, p.value, &p.attrs);
        }
    }

    fn record_one(&self, def: &Def, value: f64, attrs: &[(&'static str, Value)]) {
        let Some(inst) = self.instruments.get(def.name) else { return };
        let kvs: Vec<KeyValue> = attrs
            .iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::Str(s) if *k == super::attr::OWNER => super::owner_label(s, self.owner_label)?.into(),
                    Value::Str(s) => opentelemetry::Value::from(s.clone()),
                    Value::Bool(b) => opentelemetry::Value::from(*b),
                };
                Some(KeyValue::new(*k, v))
            })
            .collect();
        match inst {
            Instrument::Gauge(g) => g.record(value, &kvs),
            Instrument::Counter(c) => c.add(value.max(0.0), &kvs),
            Instrument::Histogram(h) => h.record(value.max(0.0), &kvs),
        }
    }

    /// Collects what was recorded since the last collection (delta) and returns its export, or `None` when
    /// nothing was recorded.
    fn collect(&mut self) -> Option<futures::future::BoxFuture<'static, ()>> {
        // The pipeline's own health, as deltas since the last export.
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_dropped {
            self.record_one(&super::DROPPED, (dropped - self.reported_dropped) as f64, &[]);
            self.reported_dropped = dropped;
        }
        let failures = self.counters.failures.load(Ordering::Relaxed);
        if failures > self.reported_failures {
            self.record_one(&super::EXPORT_FAILURES, (failures - self.reported_failures) as f64, &[]);
            self.reported_failures = failures;
        }
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            tracing::warn!(error = %e, "collecting metrics failed");
            return None;
        }
        if rm.scope_metrics().all(|s| s.metrics().next().is_none()) {
            return None;
        }
        Some(Box::pin(send(self.exporters.clone(), rm, self.counters.clone())))
    }
}

/// The exporters, shared by the worker and the export in flight.
struct Exporters {
    otlp: Option<opentelemetry_otlp::MetricExporter>,
    appinsights: Option<AppInsights>,
}

/// One export to every configured exporter, each bounded by [`EXPORT_TIMEOUT`]; a failure is counted and
/// logged, never returned.
async fn send(exporters: Arc<Exporters>, rm: ResourceMetrics, counters: Arc<Counters>) {
    let otlp = async {
        match &exporters.otlp {
            Some(x) => Some(("otlp", tokio::time::timeout(EXPORT_TIMEOUT, x.export(&rm)).await)),
            None => None,
        }
    };
    let ai = async {
        match &exporters.appinsights {
            Some(x) => Some(("application insights", tokio::time::timeout(EXPORT_TIMEOUT, x.export(&rm)).await)),
            None => None,
        }
    };
    let (a, b) = tokio::join!(otlp, ai);
    for (what, r) in [a, b].into_iter().flatten() {
        let problem = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", EXPORT_TIMEOUT.as_secs())),
        };
        if let Some(problem) = problem {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(exporter = what, error = %problem, "metrics export failed; counted, the run is unaffected");
        }
    }
    counters.exports.fetch_add(1, Ordering::Relaxed);
}

/// `PATROL_OTLP_ENDPOINT` is a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`: metrics go to `<base>/v1/metrics`
/// (a URL already ending in `/v1/metrics` is kept).
pub fn otlp_metrics_url(base: &url::Url) -> String {
    let s = base.as_str().trim_end_matches('/');
    if s.ends_with("/v1/metrics") { s.to_owned() } else { format!("{s}/v1/metrics") }
}

/// The HTTP client of the Application Insights exporter: reqwest, plus an Entra bearer token (audience
/// `https://monitor.azure.com`) when local authentication is off.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    aad: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("aad", &self.aad.is_some()).finish_non_exhaustive()
    }
}

/// As the Application Insights SDKs ask for it (audience `https://monitor.azure.com/`).
const MONITOR_SCOPE: &str = "https://monitor.azure.com//.default";

fn aad_credential(aad: &AadAuth) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, String> {
    let opts = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: aad.client_id.clone().map(azure_identity::UserAssignedId::ClientId),
        ..Default::default()
    };
    let c = azure_identity::ManagedIdentityCredential::new(Some(opts))
        .map_err(|e| format!("APPLICATIONINSIGHTS_AUTHENTICATION_STRING: managed identity credential: {e}"))?;
    Ok(c)
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        if let Some(cred) = &self.aad {
            let t = cred.get_token(&[MONITOR_SCOPE], None).await.map_err(|e| format!("Entra token: {e}"))?;
            let value = http::HeaderValue::from_str(&format!("Bearer {}", t.token.secret()))?;
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        self.http.send_bytes(request).await
    }
}

/// The exporters' HTTP client: the export timeout, and the CA bundle patrol trusts (`PATROL_CA_CERT`).
fn http_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    crate::net::client_builder(ca, EXPORT_TIMEOUT, EXPORT_TIMEOUT)
        .map_err(|e| e.to_string())?
        .user_agent(concat!("patrol/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the metrics HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_base_url() {
        let u = |s: &str| otlp_metrics_url(&url::Url::parse(s).unwrap());
        assert_eq!(u("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(u("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(u("https://c.example/otlp/"), "https://c.example/otlp/v1/metrics");
        assert_eq!(u("http://127.0.0.1:4318/v1/metrics"), "http://127.0.0.1:4318/v1/metrics");
    }

    #[test]
    fn nothing_exists_without_an_endpoint() {
        assert!(Metrics::new(MetricsSettings::default(), None).is_none());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let s = MetricsSettings {
            otlp_endpoint: Some(url::Url::parse("http://127.0.0.1:9").unwrap()),
            queue: 1,
            ..Default::default()
        };
        let m = Metrics::new(s, None).unwrap();
        // The worker has not run yet (single-threaded test runtime): the second batch finds the queue full.
        m.record(vec![Point::new(&super::super::RUN_DURATION, 1.0)]);
        m.record(vec![Point::new(&super::super::RUN_DURATION, 2.0)]);
        assert_eq!(m.dropped(), 1);
        // A flush that finds the queue full waits for room (the worker takes the batch), then for the export:
        // an endpoint nobody listens on, so the flush is answered with the failure counted, never an error.
        assert_eq!(m.flush_within(Duration::from_secs(5)).await, Flushed::Done);
        assert_eq!((m.exports(), m.failures()), (1, 1), "the queued batch, exported once, failed");
        // Recorded without a flush: exported in the background soon after.
        m.record(vec![Point::new(&super::super::RUN_DURATION, 3.0)]);
        for _ in 0..100 {
            if m.exports() == 2 {
                break;
            }
            tokio::time::sleep(EXPORT_DELAY / 4).await;
        }
        assert_eq!(m.exports(), 2, "a background export within EXPORT_DELAY and a refused connection");
        // Nothing pending: a flush is answered at once.
        assert_eq!(m.flush_within(Duration::from_millis(50)).await, Flushed::Done);
    }
}
