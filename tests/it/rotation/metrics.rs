//! Metrics end to end (issue 18): a real `patrol serve` process, driven as the Functions host drives it,
//! exports over OTLP/HTTP to a real receiver (tests/it/otlp_receiver.py: the official `opentelemetry-proto`
//! protobuf definitions from PyPI decode every request). The values are checked against the emulator's PATs
//! and the run; no minted secret and no raw owner UPN appears in any byte sent. An unreachable or silent
//! collector changes neither the invocation's answer nor its time beyond `PATROL_METRICS_FLUSH_TIMEOUT_MS`.

use super::two_instances::{invoke, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, seed, settings_of};
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
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/otlp_receiver.py");
        let mut child = Command::new(test_python())
            .arg(&script)
            .arg("--out")
            .arg(out.path())
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
}

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
    for _ in 0..3 {
        base.push(timed(&off, w.emu.clock().now()).await);
        with_refused.push(timed(&refused, w.emu.clock().now()).await);
        with_silent.push(timed(&blackhole, w.emu.clock().now()).await);
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
    assert!(s >= bound, "the silent collector's export was waited for up to the bound: {s:?}");
    acceptor.abort();
}
