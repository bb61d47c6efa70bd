//! Handler benchmarks (hand-rolled timing, `harness = false`). Run: `cargo bench --bench handler`.
//!
//! 1. In-process: one `EventGridSecretChanged` invocation for a secret patrol does not manage, through
//!    `Handler::invoke` (parse, validate, dispatch, JSON log line + `Logs` capture, envelope) — p50/p99.
//! 2. Loopback: the release `patrol` binary started like the host starts it (real rotation engine, empty
//!    policy, so the event is for a secret patrol does not manage), driven over 127.0.0.1 by keep-alive
//!    connections — invocations per second.
//! 3. Start-up: spawn to first answered `GET /` (median over many starts) and idle RSS (`VmRSS`), of the
//!    binary in `PATROL_HANDLER_BINARY` when set — the production build, as scripts/package.sh makes it
//!    (`cargo build --release --no-default-features --bin patrol`, copied aside: see docs/benchmarks.md) —
//!    else of the default (demo) build cargo made for this bench.
//!
//! 4. Metrics (issue 18): in-process throughput, 16 invocations at a time on 2 worker threads, without
//!    metrics and with OTLP export to a collector stand-in on loopback (a separate runtime answering 200) —
//!    for invocations that change nothing and for invocations that did work (neither waits for its export:
//!    the worker exports in the background; only `RotateTimer`, once a day, waits). Batches dropped by the
//!    full queue are printed. The loopback part honours `BENCH_HANDLER_OTLP=1` (the spawned handler exports
//!    to the stand-in), to compare the real binary with and without metrics.
//!
//! Optional arguments: `cargo bench --bench handler -- [inproc|loopback|startup|metrics]…` selects parts;
//! `BENCH_HANDLER_LOG=<filter>` sets the spawned handler's `PATROL_LOG` (e.g. `off`, to price logging).

use patrol::clock::Clock;
use patrol::handler::eventgrid::SecretEvent;
use patrol::handler::http::RotateRequest;
use patrol::handler::timer::TimerRun;
use patrol::handler::{FunctionName, Functions, Handler, Invocation, Outcome, Report, Status};
use patrol::telemetry::CaptureLayer;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;

const BIN: &str = env!("CARGO_BIN_EXE_patrol");
/// Microsoft's sample event, read from ../shared/specs (or PATROL_SPECS_DIR) at run time.
const EVENT: &str = "eventgrid/keyvault/event-grid-schema/secret_new_version_created.json";

/// What the rotation engine answers for a secret it does not manage.
struct Unmanaged;

#[async_trait::async_trait]
impl Functions for Unmanaged {
    async fn rotate_timer(&self, _: &Invocation, _: TimerRun) -> Outcome {
        Ok(Report::new(Status::Ignored, "nothing managed"))
    }
    async fn rotate_http(&self, _: &Invocation, _: RotateRequest) -> Outcome {
        Ok(Report::new(Status::Ignored, "nothing managed"))
    }
    async fn secret_changed(&self, _: &Invocation, event: SecretEvent) -> Outcome {
        Ok(Report::new(Status::Ignored, format!("secret {} is not managed by patrol", event.secret)))
    }
}

fn payload() -> String {
    let ev = patrol_emulator::specs::read_spec(EVENT);
    format!(
        r#"{{"Data":{{"eventGridEvent":{ev}}},"Metadata":{{"data":{{}},"sys":{{"MethodName":"EventGridSecretChanged","UtcNow":"{}","RandGuid":"35e6e68c-5583-436c-a277-5aec2b416ba8"}}}}}}"#,
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn inproc() {
    // The production telemetry stack (JSON formatting + capture), writing to a sink instead of stdout.
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new("info")).with(CaptureLayer).with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::sink),
        );
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let handler = Handler::new(Arc::new(Unmanaged), Clock::system());
    let body = payload();
    let id = "5f0c0a31-0d6b-4a5e-9a53-6b8f6f1c0b7e";
    const WARMUP: usize = 2_000;
    const N: usize = 50_000;
    let mut samples = Vec::with_capacity(N);
    rt.block_on(async {
        for i in 0..WARMUP + N {
            let t = Instant::now();
            let reply = handler.invoke(FunctionName::EventGridSecretChanged, Some(id), body.as_bytes()).await;
            let d = t.elapsed();
            assert_eq!(reply.status, 200);
            if i >= WARMUP {
                samples.push(d);
            }
        }
    });
    samples.sort();
    println!(
        "in-process EventGridSecretChanged (unmanaged secret), {N} invocations: p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples[samples.len() - 1]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The handler as the host starts it, running the real rotation engine with an empty policy (nothing
/// managed) and every Azure endpoint on a closed loopback port.
fn spawn_handler(port: u16) -> Child {
    spawn_binary(BIN, port)
}

fn spawn_binary(bin: &str, port: u16) -> Child {
    let root = std::env::temp_dir().join(format!("patrol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("patrol.toml"), "# nothing managed\n").unwrap();
    Command::new(bin)
        .env_clear()
        .current_dir(&root)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", &root)
        .env("PATROL_STATE_DIR", root.join(".patrol"))
        .env("PATROL_CLIENT_ID", "00000000-0000-4000-8000-00000000be0c")
        .env("PATROL_DEVOPS_URL", "http://127.0.0.1:9")
        .env("PATROL_AUDIT_URL", "http://127.0.0.1:9")
        .env("PATROL_ENTRA_AUTHORITY", "http://127.0.0.1:9")
        .envs(std::env::var("BENCH_HANDLER_LOG").ok().map(|v| ("PATROL_LOG", v)))
        .envs(otlp_sink_for_loopback().map(|url| ("PATROL_OTLP_ENDPOINT", url)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Polls `GET /` on a fresh connection until it answers; returns when it did.
fn wait_ready(port: u16, deadline: Duration) -> Option<Instant> {
    use std::io::{Read, Write};
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_nodelay(true);
            if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"HTTP/1.1 200")
                {
                    return Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stop(mut child: Child) {
    let _ = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status();
    let _ = child.wait();
}

fn startup() {
    const RUNS: usize = 40;
    let bin = std::env::var("PATROL_HANDLER_BINARY").unwrap_or_else(|_| BIN.to_owned());
    let image = std::fs::read(&bin).unwrap_or_else(|e| panic!("cannot read {bin}: {e}"));
    let has_emulator = image.windows(b"patrol_emulator".len()).any(|w| w == b"patrol_emulator");
    println!(
        "start-up of {bin} ({:.1} MiB, {})",
        image.len() as f64 / 1048576.0,
        if has_emulator { "demo build: emulator linked in" } else { "production build: no emulator" }
    );
    let mut times = Vec::with_capacity(RUNS);
    let mut rss = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let port = free_port();
        let t = Instant::now();
        let child = spawn_binary(&bin, port);
        let ready = wait_ready(port, Duration::from_secs(10)).expect("handler never answered GET /");
        times.push(ready - t);
        std::thread::sleep(Duration::from_millis(200));
        rss.push(rss_kib(child.id()));
        stop(child);
    }
    times.sort();
    rss.sort_unstable();
    println!(
        "spawn → first answered GET /, {RUNS} starts: median {:?}  p90 {:?}  max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times[RUNS - 1]
    );
    println!("idle RSS (VmRSS 200 ms after ready): median {} KiB  max {} KiB", rss[RUNS / 2], rss[RUNS - 1]);
}

/// One keep-alive HTTP/1.1 connection sending `n` invocations; reads each reply fully.
async fn drive(port: u16, body: Arc<String>, n: usize, done: Arc<AtomicUsize>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let request = format!(
        "POST /EventGridSecretChanged HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json; charset=utf-8\r\n\
         X-Azure-Functions-InvocationId: 5f0c0a31-0d6b-4a5e-9a53-6b8f6f1c0b7e\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    );
    let mut buf = Vec::with_capacity(16 * 1024);
    for _ in 0..n {
        s.write_all(request.as_bytes()).await.unwrap();
        buf.clear();
        // Read the head, then Content-Length bytes of body.
        let (head_end, len) = loop {
            let mut chunk = [0u8; 8192];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "connection closed");
            buf.extend_from_slice(&chunk[..k]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("content-length");
                break (i + 4, len);
            }
        };
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "connection closed");
            buf.extend_from_slice(&chunk[..k]);
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // rest = " S ppid pgrp …": token 0 is the state (field 3), so utime (14) is token 11, stime token 12.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn loopback() {
    const CONNECTIONS: usize = 16;
    const PER_CONNECTION: usize = 2_000;
    const ROUNDS: usize = 3;
    let port = free_port();
    let child = spawn_handler(port);
    let pid = child.id().to_string();
    wait_ready(port, Duration::from_secs(10)).expect("handler never answered GET /");
    let idle = rss_kib(child.id());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let body = Arc::new(payload());
    let done = Arc::new(AtomicUsize::new(0));
    rt.block_on(drive(port, body.clone(), 500, done.clone())); // warm-up
    let mut rates = Vec::new();
    let (mut server_cpu, mut client_cpu, mut total) = (Duration::ZERO, Duration::ZERO, 0usize);
    for _ in 0..ROUNDS {
        done.store(0, Ordering::Relaxed);
        let (s0, c0) = (cpu_time(&pid), cpu_time("self"));
        let t = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..CONNECTIONS)
                .map(|_| tokio::spawn(drive(port, body.clone(), PER_CONNECTION, done.clone())))
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        let elapsed = t.elapsed();
        server_cpu += cpu_time(&pid) - s0;
        client_cpu += cpu_time("self") - c0;
        let n = done.load(Ordering::Relaxed);
        total += n;
        rates.push(n as f64 / elapsed.as_secs_f64());
    }
    let busy = rss_kib(child.id());
    stop(child);
    rates.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    let (s_us, c_us) = (per(server_cpu), per(client_cpu));
    println!(
        "loopback EventGridSecretChanged (release binary, rotation engine, unmanaged secret, JSON logs to /dev/null), \
         {ROUNDS} rounds of {} invocations over {CONNECTIONS} keep-alive connections: median {:.0}/s, best {:.0}/s",
        CONNECTIONS * PER_CONNECTION,
        rates[ROUNDS / 2],
        rates[ROUNDS - 1]
    );
    println!(
        "  CPU per invocation: handler {s_us:.1} µs, load client {c_us:.1} µs → 2 cores saturate at ≈{:.0}/s; \
         RSS idle {idle} KiB, after load {busy} KiB",
        2e6 / (s_us + c_us)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    println!("cores: {}", std::thread::available_parallelism().map_or(0, |n| n.get()));
    if want("inproc") {
        inproc();
    }
    if want("loopback") {
        loopback();
    }
    if want("startup") {
        startup();
    }
    if want("metrics") {
        metrics();
    }
}

/// A collector stand-in: answers every POST with 200 and an empty body (what an OTLP/HTTP receiver
/// answers), on its own thread and runtime; returns its base URL and a request counter.
fn otlp_sink() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/metrics",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let c = c.clone();
                    async move {
                        assert!(!body.is_empty());
                        c.fetch_add(1, Ordering::Relaxed);
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, count)
}

fn otlp_sink_for_loopback() -> Option<String> {
    static SINK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SINK.get_or_init(|| (std::env::var("BENCH_HANDLER_OTLP").as_deref() == Ok("1")).then(|| otlp_sink().0)).clone()
}

/// Answers every event as the engine answers one it acted on (`Completed`).
struct Worked;

#[async_trait::async_trait]
impl Functions for Worked {
    async fn rotate_timer(&self, _: &Invocation, _: TimerRun) -> Outcome {
        Ok(Report::new(Status::Completed, "done"))
    }
    async fn rotate_http(&self, _: &Invocation, _: RotateRequest) -> Outcome {
        Ok(Report::new(Status::Completed, "done"))
    }
    async fn secret_changed(&self, _: &Invocation, event: SecretEvent) -> Outcome {
        Ok(Report::new(Status::Completed, format!("rotated {}", event.secret)))
    }
}

/// Invocations per second through `Handler::invoke`, `CONCURRENCY` at a time.
/// `metrics`: flushed after the timed part (not timed), so every batch is exported before the runtime ends.
fn throughput(handler: Handler, body: &str, metrics: Option<Arc<patrol::metrics::Metrics>>) -> f64 {
    const CONCURRENCY: usize = 16;
    const N: usize = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let body = Arc::new(body.to_owned());
    rt.block_on(async move {
        let run = |n: usize| {
            let handler = handler.clone();
            let body = body.clone();
            async move {
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|_| {
                        let (handler, body) = (handler.clone(), body.clone());
                        tokio::spawn(async move {
                            for _ in 0..n / CONCURRENCY {
                                let r =
                                    handler.invoke(FunctionName::EventGridSecretChanged, None, body.as_bytes()).await;
                                assert_eq!(r.status, 200);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        };
        run(2_000).await;
        let t = Instant::now();
        run(N).await;
        let rate = N as f64 / t.elapsed().as_secs_f64();
        if let Some(m) = metrics {
            m.flush_within(Duration::from_secs(10)).await;
        }
        rate
    })
}

fn metrics() {
    let (url, exports) = otlp_sink();
    let settings =
        patrol::config::MetricsSettings { otlp_endpoint: Some(url::Url::parse(&url).unwrap()), ..Default::default() };
    let body = payload();
    let handler = |f: Arc<dyn Functions>, m: Option<Arc<patrol::metrics::Metrics>>| {
        Handler::new(patrol::handler::metered::Metered::wrap(f, m), Clock::system())
    };
    for (what, f) in [
        ("ignored (unmanaged secret)", Arc::new(Unmanaged) as Arc<dyn Functions>),
        ("completed (did work)", Arc::new(Worked) as Arc<dyn Functions>),
    ] {
        let mut offs = Vec::new();
        let mut ons = Vec::new();
        let mut dropped = 0;
        for _ in 0..3 {
            offs.push(throughput(handler(f.clone(), None), &body, None));
            let before = exports.load(Ordering::Relaxed);
            let m = patrol::metrics::Metrics::new(settings.clone(), None).unwrap();
            ons.push(throughput(handler(f.clone(), Some(m.clone())), &body, Some(m.clone())));
            dropped += m.dropped();
            assert!(exports.load(Ordering::Relaxed) > before, "nothing exported");
        }
        offs.sort_by(f64::total_cmp);
        ons.sort_by(f64::total_cmp);
        println!(
            "metrics, {what}: without {:.0}/s, with OTLP export {:.0}/s (medians of 3) = {:.0} %; \
             batches dropped (queue full): {dropped} of {}",
            offs[1],
            ons[1],
            100.0 * ons[1] / offs[1],
            3 * 22_000
        );
    }
    println!("exports received by the stand-in collector: {}", exports.load(Ordering::Relaxed));
}
