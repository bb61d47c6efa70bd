//! Metrics end to end (issue 18): a real `patrol serve` process, driven as the Functions host drives it,
//! exports over OTLP/HTTP to a real receiver (tests/it/otlp_receiver.py: the official `opentelemetry-proto`
//! protobuf definitions from PyPI decode every request). The values are checked against the emulator's PATs
//! and the run; no minted secret and no raw owner UPN appears in any byte sent. Invocations answer without
//! waiting for the export (only `RotateTimer` waits, within `PATROL_METRICS_FLUSH_TIMEOUT_MS`); their points
//! reach the receiver in the background soon after, and a SIGTERM'd `patrol serve` exports what is still
//! pending before it exits, within the bound. An unreachable or silent collector changes neither the
//! invocation's answer nor its time beyond the bound. Consumer deliveries (`patrol rotate`) and the audit
//! pass's series (the timer's, and `patrol audit`'s) are checked value by value.

use super::two_instances::{invoke, start_instance, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, admin_scopes, admin_seed, seed, settings_of};
use crate::notify::test_python;
use patrol::handler::{FunctionName, Handler};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// tests/it/otlp_receiver.py, killed on drop.
pub(crate) struct Receiver {
    child: Child,
    pub(crate) url: String,
    out: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments, e.g. `["--delay", "2"]`: a collector that holds every answer 2 s.
    pub(crate) fn start_with(args: &[&str]) -> Self {
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/otlp_receiver.py");
        let mut child = Command::new(test_python())
            .arg(&script)
            .arg("--out")
            .arg(out.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python with opentelemetry-proto is needed (requirements-test.txt)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = match line.trim().strip_prefix("READY ") {
            Some(p) => p.parse().unwrap(),
            None => panic!("the OTLP receiver did not start (is opentelemetry-proto installed?): {line:?}"),
        };
        Self { child, url: format!("http://127.0.0.1:{port}"), out }
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Value> {
        let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "json").then_some((n, p))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, p)| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }

    /// The points of request `from` and later.
    pub(crate) fn points_since(&self, from: usize) -> Vec<Value> {
        self.requests().iter().skip(from).flat_map(|r| r["points"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// Waits (at most `within`) until at least `n` requests have arrived; how long that took.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Duration {
        let started = Instant::now();
        while self.requests().len() < n {
            assert!(started.elapsed() < within, "{} request(s) after {within:?}, expected {n}", self.requests().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

/// How late a point recorded by an invocation that did not wait may reach the receiver: the worker's
/// `EXPORT_DELAY`, plus one export round trip, with slack for a shared 2-core machine.
const BACKGROUND_BOUND: Duration = Duration::from_secs(3);

/// Points named `name` whose attributes include every pair of `with`.
fn find<'a>(points: &'a [Value], name: &str, with: &[(&str, Value)]) -> Vec<&'a Value> {
    points.iter().filter(|p| p["name"] == name && with.iter().all(|(k, v)| &p["attributes"][*k] == v)).collect()
}

fn one<'a>(points: &'a [Value], name: &str, with: &[(&str, Value)]) -> &'a Value {
    let found = find(points, name, with);
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:#?}\nall: {}", serde_json::to_string(points).unwrap());
    found[0]
}

fn value(p: &Value) -> f64 {
    p["value"].as_f64().unwrap()
}

fn policy() -> String {
    format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"metrics-api\"\ndisplay_name = \"Metrics API\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n"
    )
}

fn unmanaged_seed(now: OffsetDateTime) -> Value {
    let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let mut s = seed();
    s["pats"] = json!([{ "owner": OWNER, "organization": ORG, "displayName": "laptop sync", "scope": "vso.build",
        "validFrom": fmt(now - time::Duration::days(20)), "validTo": fmt(now + time::Duration::days(5)) }]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_runs_export_expiry_state_and_run_series_to_a_real_otlp_receiver() {
    let receiver = Receiver::start();
    let mut setup = Setup::start(unmanaged_seed(OffsetDateTime::now_utc()), &policy()).await;
    setup.set("PATROL_OTLP_ENDPOINT", receiver.url.clone());
    let w = World::open(setup, None, false).await;
    let log = w.dir.path().join("serve.log");
    let instance = start_instance_logging(&w.env, &log).await;
    let owner = patrol::metrics::owner_label(OWNER, patrol::config::OwnerLabel::Hash).unwrap();

    // Day 0: the token does not exist yet: the timer creates its first PAT.
    let first = invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(first["ReturnValue"]["detail"]["rotated"], 1, "{first}");
    // The handler answered after the flush: the export is already there.
    assert_eq!(receiver.requests().len(), 1, "one export per invocation, before the answer");
    let r = &receiver.requests()[0];
    assert_eq!(r["path"], "/v1/metrics");
    assert_eq!(r["content_type"], "application/x-protobuf");
    let pts = receiver.points_since(0);
    let now = w.emu.clock().now();
    let (id, _) = w.current("metrics-api").await.unwrap();
    let pat = w.pats(patrol::devops::DisplayFilter::Active).await;
    let valid_to = pat.iter().find(|p| p.authorization_id == id).unwrap().valid_to;
    let expiry = one(
        &pts,
        "patrol.pat.expiry.remaining",
        &[("patrol.secret.name", json!("metrics-api")), ("patrol.pat.state", json!("current"))],
    );
    assert_eq!(expiry["unit"], "s");
    assert_eq!(expiry["kind"], "gauge");
    assert_eq!(expiry["attributes"]["patrol.pat.authorization_id"], json!(id.to_string()));
    assert_eq!(expiry["attributes"]["patrol.organization"], json!(ORG));
    assert_eq!(expiry["attributes"]["patrol.owner"], json!(owner), "owners are pseudonymous by default");
    assert_eq!(expiry["attributes"]["patrol.pat.managed"], json!(true));
    let expected = (valid_to - now).as_seconds_f64();
    assert!((value(expiry) - expected).abs() < 120.0, "{} vs {expected}", value(expiry));
    assert!((value(expiry) / 86_400.0 - 30.0).abs() < 0.1, "a 30-day PAT: {}", value(expiry));
    // The unmanaged PAT, 5 days left.
    let laptop = one(&pts, "patrol.pat.expiry.remaining", &[("patrol.pat.state", json!("unmanaged"))]);
    assert!((value(laptop) / 86_400.0 - 5.0).abs() < 0.1, "{laptop}");
    assert_eq!(laptop["attributes"]["patrol.pat.managed"], json!(false));
    assert_eq!(
        value(one(
            &pts,
            "patrol.token.state",
            &[("patrol.secret.name", json!("metrics-api")), ("patrol.token.state", json!("current"))]
        )),
        1.0
    );
    let count = |pts: &[Value], result: &str| {
        let p = one(pts, "patrol.run.tokens", &[("patrol.run.result", json!(result))]);
        assert_eq!(p["kind"], "sum");
        assert_eq!(p["temporality"], "delta");
        value(p)
    };
    assert_eq!(count(&pts, "planned"), 1.0);
    assert_eq!(count(&pts, "rotated"), 1.0);
    assert_eq!(count(&pts, "revoked"), 0.0);
    assert_eq!(count(&pts, "failed"), 0.0);
    let inv =
        one(&pts, "patrol.invocations", &[("patrol.function", json!("RotateTimer")), ("faas.trigger", json!("timer"))]);
    assert_eq!((value(inv), &inv["attributes"]["patrol.outcome"]), (1.0, &json!("completed")));
    let d = one(&pts, "faas.invoke_duration", &[("patrol.function", json!("RotateTimer"))]);
    assert_eq!((d["kind"].as_str(), d["count"].as_u64()), (Some("histogram"), Some(1)));
    assert!(d["sum"].as_f64().unwrap() > 0.0);
    let run = one(&pts, "patrol.run.duration", &[]);
    assert!(run["sum"].as_f64().unwrap() <= d["sum"].as_f64().unwrap(), "the run is inside the invocation");
    // Create + list + probe + Get…: at least the Create and the listing went to Azure DevOps.
    assert!(value(one(&pts, "patrol.devops.requests", &[])) >= 2.0);
    assert_eq!(value(one(&pts, "patrol.devops.throttled", &[])), 0.0);
    assert_eq!(value(one(&pts, "patrol.owner.sign_in_required", &[("patrol.owner", json!(owner.clone()))])), 0.0);
    assert_eq!(r["points"][0]["resource"]["service.name"], "patrol");

    // Day 24: due (30 − 7 days): rotated; the first PAT drains with ~6 days left.
    w.advance(time::Duration::days(24)).await;
    let second = invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(second["ReturnValue"]["detail"]["rotated"], 1, "{second}");
    let pts = receiver.points_since(1);
    let draining = one(&pts, "patrol.pat.expiry.remaining", &[("patrol.pat.state", json!("draining"))]);
    assert_eq!(draining["attributes"]["patrol.pat.authorization_id"], json!(id.to_string()));
    assert!((value(draining) / 86_400.0 - 6.0).abs() < 0.1, "{draining}");
    let current = one(&pts, "patrol.pat.expiry.remaining", &[("patrol.pat.state", json!("current"))]);
    assert!((value(current) / 86_400.0 - 30.0).abs() < 0.1, "{current}");
    assert_ne!(current["attributes"]["patrol.pat.authorization_id"], json!(id.to_string()));
    assert_eq!(
        value(one(&pts, "patrol.token.state", &[("patrol.token.state", json!("draining"))])),
        1.0,
        "the token has a previous PAT in its grace period"
    );
    assert_eq!(count(&pts, "rotated"), 1.0, "delta: this run only");
    // The unmanaged PAT expired during the 24 days: no longer listed as active, so no longer reported (delta
    // gauges: nothing stale is exported again).
    assert!(find(&pts, "patrol.pat.expiry.remaining", &[("patrol.pat.state", json!("unmanaged"))]).is_empty());

    // Day 27: grace over: the previous PAT is revoked, the token is back to one current PAT.
    w.advance(time::Duration::days(3)).await;
    invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    let pts = receiver.points_since(2);
    assert_eq!(count(&pts, "revoked"), 1.0);
    assert!(find(&pts, "patrol.pat.expiry.remaining", &[("patrol.pat.state", json!("draining"))]).is_empty());
    assert_eq!(value(one(&pts, "patrol.token.state", &[("patrol.token.state", json!("current"))])), 1.0);

    // No secret in any byte sent: not a PAT, not a token, not the owner's UPN.
    let mut secrets = w.minted().await;
    assert!(secrets.len() >= 3, "the emulator minted PATs and tokens");
    secrets.push(OWNER.to_owned());
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        let raw = hex_decode(r["raw_hex"].as_str().unwrap());
        for s in &secrets {
            assert!(!contains(&raw, s.as_bytes()), "a minted secret (or the UPN) appeared in an export");
        }
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One `RotateTimer` through the in-process handler; its status, its `ReturnValue` without the timing, and
/// how long it took.
async fn timed(handler: &Handler, now: OffsetDateTime) -> (u16, Value, Duration) {
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({ "Data": timer(), "Metadata": { "sys": { "MethodName": "RotateTimer", "UtcNow": utc } } });
    let started = Instant::now();
    let reply = handler.invoke(FunctionName::RotateTimer, None, &serde_json::to_vec(&body).unwrap()).await;
    let took = started.elapsed();
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    (reply.status, v["ReturnValue"].clone(), took)
}

/// One `RotateHttp` plan (`GET /api/rotate`) through the in-process handler: status, the `res` output's
/// status and body (every timestamp `at` nulled), and how long it took.
async fn timed_http(handler: &Handler, now: OffsetDateTime) -> (u16, Value, Duration) {
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({ "Data": plan_request(), "Metadata": { "sys": { "MethodName": "RotateHttp", "UtcNow": utc } } });
    let started = Instant::now();
    let reply = handler.invoke(FunctionName::RotateHttp, None, &serde_json::to_vec(&body).unwrap()).await;
    let took = started.elapsed();
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    let res = &v["Outputs"]["res"];
    let mut inner: Value = res["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    null_timestamps(&mut inner);
    (reply.status, json!({ "status": res["statusCode"], "body": inner }), took)
}

fn null_timestamps(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "at" {
                    *x = Value::Null;
                } else {
                    null_timestamps(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(null_timestamps),
        _ => {}
    }
}

/// `GET /api/rotate`: the plan, as the Functions host passes the HTTP request on.
fn plan_request() -> Value {
    json!({ "req": { "Url": "http://localhost/api/rotate", "Method": "GET", "Query": {}, "Headers": {}, "Params": {} } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_collector_changes_neither_the_answer_nor_the_time_beyond_the_bound() {
    let mut setup = Setup::start(seed(), &policy()).await;
    // A port nobody listens on, and a collector that accepts the connection and never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((sock, _)) = silent.accept().await {
            h.lock().await.push(sock);
        }
    });
    setup.set("PATROL_METRICS_FLUSH_TIMEOUT_MS", "300");
    let w = World::open(setup, None, false).await;
    let handler_with = |endpoint: Option<String>| {
        let mut env = w.env.clone();
        if let Some(e) = endpoint {
            env.push(("PATROL_OTLP_ENDPOINT".into(), e));
        }
        let settings = settings_of(&env);
        let functions = patrol::app::functions::RotationFunctions::new(settings.clone(), w.local.clock.clone());
        let functions = patrol::handler::metered::Metered::wrap(
            Arc::new(functions),
            patrol::metrics::Metrics::from_settings(&settings.metrics, settings.ca_cert.as_deref()),
        );
        Handler::new(functions, w.local.clock.clone())
    };
    let off = handler_with(None);
    let refused = handler_with(Some(format!("http://127.0.0.1:{closed}")));
    let blackhole = handler_with(Some(format!("http://127.0.0.1:{silent_port}")));
    // The first run creates the PAT (no metrics); the runs compared below have the same (no) work to do.
    let (status, first, _) = timed(&off, w.emu.clock().now()).await;
    assert_eq!((status, &first["detail"]["rotated"]), (200, &json!(1)), "{first}");
    // Warm each handler up (its engine is built on the first invocation), then time one run each.
    for h in [&off, &refused, &blackhole] {
        timed(h, w.emu.clock().now()).await;
    }
    let mut base = Vec::new();
    let mut with_refused = Vec::new();
    let mut with_silent = Vec::new();
    let (mut http_base, mut http_refused, mut http_silent) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        base.push(timed(&off, w.emu.clock().now()).await);
        with_refused.push(timed(&refused, w.emu.clock().now()).await);
        with_silent.push(timed(&blackhole, w.emu.clock().now()).await);
        http_base.push(timed_http(&off, w.emu.clock().now()).await);
        http_refused.push(timed_http(&refused, w.emu.clock().now()).await);
        http_silent.push(timed_http(&blackhole, w.emu.clock().now()).await);
    }
    let bound = Duration::from_millis(300);
    let median = |v: &[(u16, Value, Duration)]| {
        let mut d: Vec<Duration> = v.iter().map(|x| x.2).collect();
        d.sort();
        d[d.len() / 2]
    };
    let strip = |v: &Value| {
        let mut v = v.clone();
        v["detail"]["plan"]["at"] = Value::Null;
        v
    };
    for (s, v, _) in with_refused.iter().chain(&with_silent) {
        assert_eq!(*s, 200);
        assert_eq!(strip(v), strip(&base[0].1), "exporting changed the answer");
    }
    let (b, r, s) = (median(&base), median(&with_refused), median(&with_silent));
    // Slack for a shared 2-core machine: the bound is the point, not a few scheduler ticks.
    let slack = Duration::from_millis(250);
    assert!(r <= b + bound + slack, "refused: {r:?} vs {b:?} without metrics");
    assert!(s <= b + bound + slack, "silent collector: {s:?} vs {b:?} without metrics");
    assert!(s >= bound, "RotateTimer waits for its export, up to the bound: {s:?}");
    // Every other invocation answers without waiting for the export at all: not even the bound is added,
    // although the silent collector holds every export for its full 10 s timeout.
    for (st, v, _) in http_refused.iter().chain(&http_silent) {
        assert_eq!(*st, 200);
        assert_eq!(v, &http_base[0].1, "exporting changed the RotateHttp answer");
    }
    assert_eq!(http_base[0].1["status"], 200, "{}", http_base[0].1);
    let (hb, hr, hs) = (median(&http_base), median(&http_refused), median(&http_silent));
    assert!(hr <= hb + slack, "RotateHttp, refused: {hr:?} vs {hb:?} without metrics");
    assert!(hs <= hb + slack, "RotateHttp, silent collector: {hs:?} vs {hb:?} without metrics");
    acceptor.abort();
}

/// The `RotateHttp` reply's `res` status.
fn http_status(reply: &Value) -> &Value {
    &reply["Outputs"]["res"]["statusCode"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_answer_at_once_their_points_follow_and_a_sigterm_flushes_what_is_pending() {
    let receiver = Receiver::start();
    let mut setup = Setup::start(seed(), &policy()).await;
    setup.set("PATROL_OTLP_ENDPOINT", receiver.url.clone());
    setup.set("PATROL_METRICS_FLUSH_TIMEOUT_MS", "10000");
    let w = World::open(setup, None, false).await;

    // A prompt collector: a RotateHttp plan is answered, then its points arrive in the background.
    let mut instance = start_instance(&w.env).await;
    let reply = invoke(&instance, "RotateHttp", plan_request(), w.emu.clock().now()).await;
    assert_eq!(http_status(&reply), 200, "{reply}");
    let late = receiver.wait_for(1, BACKGROUND_BOUND).await;
    let pts = receiver.points_since(0);
    let inv = one(&pts, "patrol.invocations", &[("patrol.function", json!("RotateHttp"))]);
    assert_eq!(inv["attributes"]["faas.trigger"], "http");
    assert_eq!((value(inv), &inv["attributes"]["patrol.outcome"]), (1.0, &json!("planned")), "after {late:?}");
    let planned =
        one(&pts, "patrol.run.tokens", &[("patrol.run.result", json!("planned")), ("patrol.run.dry_run", json!(true))]);
    assert_eq!(value(planned), 1.0, "the plan: the token's first PAT");
    // Nothing is pending: SIGTERM ends it at once and sends nothing more.
    assert!(instance.terminate(Duration::from_secs(10)).await.success());
    assert_eq!(receiver.requests().len(), 1);

    // A slow collector (every answer held 3 s): invocations still answer at once. A's export is in flight
    // when B is answered, so B's points are pending when the host sends SIGTERM; serve's graceful shutdown
    // waits (within PATROL_METRICS_FLUSH_TIMEOUT_MS) for A's export, then exports B's, then exits.
    let slow = Receiver::start_with(&["--delay", "3"]);
    let mut env = w.env.clone();
    env.push(("PATROL_OTLP_ENDPOINT".into(), slow.url.clone()));
    let mut instance = start_instance(&env).await;
    let started = Instant::now();
    let a = invoke(&instance, "RotateHttp", plan_request(), w.emu.clock().now()).await;
    assert_eq!(http_status(&a), 200, "{a}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = invoke(&instance, "RotateHttp", plan_request(), w.emu.clock().now()).await;
    assert_eq!(http_status(&b), 200, "{b}");
    let answered = started.elapsed();
    // Both answered before the collector answered anything: neither waited for an export.
    assert!(slow.requests().is_empty(), "both answered after {answered:?}, before the collector's first answer");
    let exit = instance.terminate(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    let requests = slow.requests();
    assert_eq!(requests.len(), 2, "A's export, then B's at shutdown");
    for (i, r) in requests.iter().enumerate() {
        let pts = r["points"].as_array().unwrap().clone();
        let inv = one(&pts, "patrol.invocations", &[("patrol.function", json!("RotateHttp"))]);
        assert_eq!(value(inv), 1.0, "request {i}: one invocation each");
    }

    // A collector that never answers: the shutdown waits at most the bound, then exits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut env = w.env.clone();
    env.push(("PATROL_OTLP_ENDPOINT".into(), format!("http://{}", silent.local_addr().unwrap())));
    env.push(("PATROL_METRICS_FLUSH_TIMEOUT_MS".into(), "500".into()));
    let mut instance = start_instance(&env).await;
    let r = invoke(&instance, "RotateHttp", plan_request(), w.emu.clock().now()).await;
    assert_eq!(http_status(&r), 200, "{r}");
    let stopping = Instant::now();
    // The export's own timeout is 10 s: exiting well before it is the bound at work.
    assert!(instance.terminate(Duration::from_secs(5)).await.success());
    assert!(
        stopping.elapsed() >= Duration::from_millis(400),
        "the shutdown waited for the export: {:?}",
        stopping.elapsed()
    );
    drop(silent);
}

/// `patrol rotate` as a child process with `env`; (exit code, stdout + stderr).
fn patrol_cli(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run patrol");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Every request's raw bytes scanned for every secret.
fn assert_no_secret_sent(receiver: &Receiver, secrets: &[String]) {
    for r in &receiver.requests() {
        let raw = hex_decode(r["raw_hex"].as_str().unwrap());
        for s in secrets {
            assert!(!contains(&raw, s.as_bytes()), "a secret appeared in an export");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_rotation_exports_each_tokens_consumer_deliveries_before_it_exits() {
    use super::consumers::{APP, APP_SECRET, Cons, GH_TOKEN, HOOK_KEY};
    let receiver = Receiver::start();
    let c = Cons::start().await;
    let first = c.run().await;
    assert_eq!((first.rotated, first.failed), (1, 0), "{:?}", first.reports);
    // Someone takes patrol's Administrator role on the variable group away.
    let r =
        c.w.http
            .put(c.w.control("consumers/variable-groups/7/administrators"))
            .json(&json!({ "remove": [APP] }))
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (old, _) = c.w.current("feed-pat").await.unwrap();

    // `patrol rotate --force` (the CLI reads the system clock, as the emulator's here).
    let mut env = c.w.env.clone();
    env.push(("PATROL_OTLP_ENDPOINT".into(), receiver.url.clone()));
    let (code, out) = patrol_cli(&env, &["rotate", "--force"]);
    assert!(out.contains("feed-pat"), "{code}: {out}");
    // The CLI waited for its export before exiting: the points are there now.
    assert_eq!(receiver.requests().len(), 1, "{out}");
    let pts = receiver.points_since(0);
    let (new, _) = c.w.current("feed-pat").await.unwrap();
    assert_ne!(new, old, "rotated: {out}");

    // What `patrol status` says about each consumer of the current PAT, counted as the metric counts it.
    let status = serde_json::to_value(patrol::cli::status::gather(&c.w.local).await).unwrap();
    let rows = status["tokens"][0]["consumers"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 6, "{rows:?}");
    let state = |id: &str| rows.iter().find(|r| r["consumer"] == id).map(|r| r["state"].clone()).unwrap();
    assert_eq!(state("variable-group:fabrikam/web/7/AZDO_PAT"), "failing", "{rows:?}");
    assert_eq!(state("reference:app-service-web-prod"), "reads-vault", "{rows:?}");
    let expected = |s: &str| {
        rows.iter()
            .filter(|r| match s {
                "delivered" => r["state"] == "delivered" || r["state"] == "reads-vault",
                "failing" => r["state"] == "failing",
                _ => r["state"] != "delivered" && r["state"] != "reads-vault" && r["state"] != "failing",
            })
            .count() as f64
    };
    let deliveries = |s: &str| {
        let p = one(
            &pts,
            "patrol.consumer.deliveries",
            &[("patrol.secret.name", json!("feed-pat")), ("patrol.consumer.state", json!(s))],
        );
        assert_eq!((p["kind"].as_str(), p["unit"].as_str()), (Some("gauge"), Some("{delivery}")));
        value(p)
    };
    assert_eq!(deliveries("delivered"), 5.0, "service connection, GitHub, vault copy, webhook, reference");
    assert_eq!(deliveries("failing"), 1.0, "the variable group");
    assert_eq!(deliveries("pending"), 0.0);
    for s in ["delivered", "failing", "pending"] {
        assert_eq!(deliveries(s), expected(s), "{s}: as patrol status counts it: {rows:?}");
    }
    // The token's state and the run: rotated, the failed delivery makes the token failing.
    assert_eq!(value(one(&pts, "patrol.run.tokens", &[("patrol.run.result", json!("rotated"))])), 1.0);
    let inv = one(&pts, "patrol.invocations", &[("patrol.function", json!("cli"))]);
    assert_eq!((value(inv), &inv["attributes"]["faas.trigger"]), (1.0, &json!("other")));
    assert_eq!(inv["attributes"]["patrol.outcome"], json!(if code == 0 { "completed" } else { "failed" }), "{out}");

    let mut secrets = c.w.minted().await;
    secrets.extend([GH_TOKEN.to_owned(), HOOK_KEY.to_owned(), APP_SECRET.to_owned(), OWNER.to_owned()]);
    assert_no_secret_sent(&receiver, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timers_audit_pass_exports_findings_by_rule_and_severity_and_the_log_lag() {
    let receiver = Receiver::start();
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"audited-pat\"\ndisplay_name = \"Audited\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\nresponse = {{ critical = \"alert\" }}\n"
    );
    let mut setup = Setup::start(admin_seed(), &policy).await;
    setup.set("PATROL_AUDIT_READER", OWNER);
    setup.set("PATROL_OTLP_ENDPOINT", receiver.url.clone());
    let w = World::open(setup, Some(admin_scopes()), false).await;
    let instance = start_instance(&w.env).await;
    let org = json!(ORG);

    // Onboarding: no managed PAT before this run, so no log was read (no lag figure); no finding, no count.
    let first = invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    let audit = &first["ReturnValue"]["detail"]["audit"];
    assert_eq!(audit["findings"], 0, "{first}");
    let pts = receiver.points_since(0);
    let read = audit["organizations"].as_array().map_or(0, Vec::len);
    assert_eq!(find(&pts, "patrol.audit.log.lag", &[]).len(), read, "one lag per organization read: {first}");
    assert!(find(&pts, "patrol.audit.findings", &[]).is_empty(), "no finding, no count");

    // A consumer uses the stored PAT from outside the allowed ranges: one critical outside_cidr finding.
    let (_, pat) = w.current("audited-pat").await.unwrap();
    let used = json!({ "token": pat, "organization": ORG, "ipAddress": "203.0.113.9", "userAgent": "git/2.45" });
    assert!(super::world::use_pat(&w.http, &w.emu, used).await);
    w.advance(time::Duration::seconds(60)).await;
    let before = receiver.requests().len();
    let second = invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(second["ReturnValue"]["detail"]["audit"]["findings"], 1, "{second}");
    let pts = receiver.points_since(before);
    let found = one(&pts, "patrol.audit.findings", &[]);
    assert_eq!((found["kind"].as_str(), found["temporality"].as_str()), (Some("sum"), Some("delta")));
    assert_eq!(found["attributes"]["patrol.organization"], org);
    assert_eq!(found["attributes"]["patrol.audit.rule"], "outside_cidr");
    assert_eq!(found["attributes"]["patrol.audit.severity"], "critical");
    assert_eq!(found["attributes"]["patrol.run.dry_run"], false, "the timer's pass, not a read-only one");
    assert_eq!(value(found), 1.0);
    // The log was read up to now.
    let lag = one(&pts, "patrol.audit.log.lag", &[("patrol.organization", org.clone())]);
    assert_eq!((lag["unit"].as_str(), lag["kind"].as_str()), (Some("s"), Some("gauge")));
    assert!(value(lag).abs() < 1.0, "read up to now: {lag}");

    // Every audit-log request fails from now on; six hours later the log is still read up to the second
    // run's end: the lag shows it.
    let faults = json!({ "failRate": 1.0, "failStatus": 503, "services": ["audit"] });
    assert!(w.http.put(w.control("faults")).json(&faults).send().await.unwrap().status().is_success());
    let last_read = w.emu.clock().now();
    w.advance(time::Duration::hours(6)).await;
    let before = receiver.requests().len();
    let blind = invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_ne!(blind["ReturnValue"]["detail"]["audit"]["errors"], json!([]), "the poll failed: {blind}");
    let pts = receiver.points_since(before);
    let expected = (w.emu.clock().now() - last_read).as_seconds_f64();
    let lag = value(one(&pts, "patrol.audit.log.lag", &[("patrol.organization", org.clone())]));
    assert!((lag - expected).abs() < 120.0, "lag {lag} s, expected about {expected} s");
    assert!(find(&pts, "patrol.audit.findings", &[]).is_empty(), "nothing read, nothing found");
    assert!(w.http.delete(w.control("faults")).send().await.unwrap().status().is_success());

    let mut secrets = w.minted().await;
    secrets.push(OWNER.to_owned());
    assert!(secrets.contains(&pat));
    assert_no_secret_sent(&receiver, &secrets);
}
