//! The custom handler driven exactly as the Functions host drives it: spawn the real `patrol` binary with
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, poll `GET /` until it answers, POST invocation payloads built from the
//! research note's captured samples and the vendored Event Grid samples (plus every quirk the host has),
//! and check the envelope, `Outputs.res`, the logs on stdout, the function key never leaking, limits,
//! and graceful shutdown.
//!
//! The binary runs the real rotation engine with a policy of no tokens (`patrol.toml` with only `[audit]`) and every
//! Azure endpoint pointed at a closed loopback port, so nothing is managed and nothing leaves the machine:
//! timer runs complete with nothing to do, events are ignored, manual requests for a secret get 404.
//! Without a policy file the binary falls back to `NotConfigured`, which says so. What the handler
//! understood is read from its own `DEBUG received input=…` line, independent of the engine.

use base64::Engine;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_patrol");
/// A recognisable function key: it must never appear in a reply, stdout or stderr.
const FUNCTION_KEY: &str = "fnKEY-patrol-test-Zq8w1x0c9v";

/// A file of Microsoft's specs, from ../shared/specs (or PATROL_SPECS_DIR).
fn spec(path: &str) -> Value {
    patrol_emulator::specs::spec_json(path)
}

fn free_port() -> u16 {
    // Like the host's GetUnusedTcpPort: bind port 0, read it, release it.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A spawned handler, as the Functions host keeps it.
struct HostedHandler {
    child: Child,
    base: String,
    client: reqwest::Client,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn pipe_to_string(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

/// Spawns the handler in a fresh app root holding `policy` as `patrol.toml` (none when `None`).
fn spawn_with_policy(port_var: &str, env: &[(&str, &str)], policy: Option<&str>) -> (Child, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(policy) = policy {
        std::fs::write(dir.path().join("patrol.toml"), policy).unwrap();
    }
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .current_dir(dir.path())
        .env(port_var, port.to_string())
        .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "7c3e1a0e-0000-4000-8000-000000000001")
        .env("FUNCTIONS_APP_ROOT_PATH", dir.path())
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .env("AzureWebJobsStorage", "UseDevelopmentStorage=true")
        .env("PATROL_STATE_DIR", dir.path().join(".patrol"))
        // Debug for patrol: the handler then logs the validated input of each invocation (`received`).
        .env("PATROL_LOG", "info,patrol=debug")
        // Nothing may leave the machine: every endpoint is a closed loopback port.
        .env("PATROL_CLIENT_ID", "00000000-0000-4000-8000-00000000c11e")
        .env("PATROL_DEVOPS_URL", "http://127.0.0.1:9")
        .env("PATROL_AUDIT_URL", "http://127.0.0.1:9")
        .env("PATROL_ENTRA_AUTHORITY", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd.spawn().unwrap(), port, dir)
}

/// A policy that manages no token (an empty one is refused): only the audit log would be watched, for
/// the managed PATs the (empty) secret store names — none.
const EMPTY_POLICY: &str = "# patrol manages no tokens in these tests\n[audit]\n";

fn spawn(port_var: &str, env: &[(&str, &str)]) -> (Child, u16, tempfile::TempDir) {
    spawn_with_policy(port_var, env, Some(EMPTY_POLICY))
}

impl HostedHandler {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with("FUNCTIONS_CUSTOMHANDLER_PORT", env).await
    }

    async fn start_with(port_var: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(spawn(port_var, env)).await
    }

    async fn start_in((mut child, port, dir): (Child, u16, tempfile::TempDir)) -> Self {
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            pipe_to_string(child.stdout.take().unwrap(), stdout.clone()),
            pipe_to_string(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
        let h = Self { child, base, client, stdout, stderr, readers, _dir: dir };
        // The host polls GET / every 25 ms; any HTTP answer means ready.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = h.client.get(format!("{}/", h.base)).send().await {
                assert_eq!(r.status(), 200);
                break;
            }
            assert!(Instant::now() < deadline, "handler never became ready; stderr: {}", h.stderr.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        h
    }

    /// POSTs like the host: `/{FunctionName}`, JSON, an invocation id header. Returns status, content type
    /// and the raw body.
    async fn post(&self, function: &str, id: &str, body: impl Into<reqwest::Body>) -> (u16, String, String) {
        let r = self
            .client
            .post(format!("{}/{function}", self.base))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", id)
            .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
            .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    }

    /// POSTs with `Transfer-Encoding: chunked`, as the host does, over a raw connection; returns the status.
    async fn post_chunked(&self, function: &str, body: &[u8], chunk: usize) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "POST /{function} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
             X-Azure-Functions-InvocationId: 9e1d7c55-1111-4222-8333-444455556666\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for c in body.chunks(chunk) {
            req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            req.extend_from_slice(c);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        // The server may answer 413 and close before reading everything; a failed write is fine then.
        let _ = s.write_all(&req).await;
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply).await;
        let head = String::from_utf8_lossy(&reply);
        let status = head.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status line: {head}"));
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        status.parse().unwrap()
    }

    /// A handled invocation: asserts 2xx + JSON + a non-empty envelope, returns it.
    async fn invoke(&self, function: &str, payload: &Value) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let (status, ct, body) = self.post(function, &id, payload.to_string()).await;
        assert_eq!(status, 200, "{function}: {body}");
        assert!(ct.starts_with("application/json"), "{ct}");
        assert!(!body.is_empty());
        assert!(!body.contains(FUNCTION_KEY), "the function key leaked into a reply: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["Outputs"].is_object(), "{v}");
        assert!(v["Logs"].is_array(), "{v}");
        assert!(v.as_object().unwrap().contains_key("ReturnValue"), "{v}");
        v
    }

    /// The HTTP function's response, with its body parsed.
    async fn http(&self, req: Value) -> (u16, Value, Value, Value) {
        let payload = json!({
            "Data": { "req": req.clone() },
            "Metadata": {
                "Query": req.get("Query").cloned().unwrap_or(json!({})),
                "Headers": { "Content-Type": "application/json", "x-functions-key": FUNCTION_KEY },
                "sys": sys("RotateHttp"),
            }
        });
        let v = self.invoke("RotateHttp", &payload).await;
        let res = &v["Outputs"]["res"];
        assert!(res["headers"].as_object().unwrap().values().all(Value::is_string), "header values are strings");
        let body: Value = serde_json::from_str(res["body"].as_str().expect("body is a string")).unwrap();
        let input = if logs(&v).contains("DEBUG received input=") { received(&v) } else { Value::Null };
        (res["statusCode"].as_u64().unwrap() as u16, body, res["headers"].clone(), input)
    }

    /// Stops like the host (SIGTERM), waits, and returns the exit status, stdout and stderr.
    fn stop(mut self) -> (ExitStatus, String, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("handler did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for HostedHandler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sys(method: &str) -> Value {
    json!({ "MethodName": method, "UtcNow": "2026-10-02T03:00:00.0151234Z", "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8" })
}

fn timer(binding: &str, timer: Value) -> Value {
    json!({ "Data": { binding: timer }, "Metadata": { "sys": sys("RotateTimer") } })
}

fn event(ev: Value) -> Value {
    let data = ev.get("data").cloned().unwrap_or(Value::Null);
    json!({ "Data": { "eventGridEvent": ev }, "Metadata": { "data": data, "sys": sys("EventGridSecretChanged") } })
}

/// The handler's own record of the validated input (its `DEBUG received input=…` line in `Logs`).
fn received(v: &Value) -> Value {
    let line = v["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| l.as_str().unwrap().strip_prefix("DEBUG received input="))
        .unwrap_or_else(|| panic!("no received line in {v}"));
    serde_json::from_str(line).unwrap()
}

fn logs(v: &Value) -> String {
    v["Logs"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn timer_payloads_from_the_host() {
    let h = HostedHandler::start(&[]).await;

    // Verbatim from an Azure host (binding "timer", ScheduleStatus null).
    let observed: Value = serde_json::from_str(
        r#"{ "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
  "Metadata": { "sys": { "MethodName": "azure", "UtcNow": "2023-09-07T11:40:45.004275Z",
                         "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8" } } }"#,
    )
    .unwrap();
    let v = h.invoke("RotateTimer", &observed).await;
    assert_eq!(received(&v), json!({"isPastDue": false, "adjustForDst": true}));
    assert_eq!(v["ReturnValue"]["status"], "completed", "an empty policy: a run with nothing to do");

    // Monitored: 7 fraction digits, +00:00, Z, no offset, year-0001 sentinels; and key case.
    for (last, next, updated, want_last) in [
        (
            "2026-10-01T03:00:00.0123456+00:00",
            "2026-10-02T03:00:00+00:00",
            "2026-10-01T03:00:00.0123456+00:00",
            Some("2026-10-01T03:00:00.0123456Z"),
        ),
        ("2026-10-01T03:00:00Z", "2026-10-02T03:00:00.1Z", "2026-10-01T03:00:00.12Z", Some("2026-10-01T03:00:00Z")),
        (
            "2026-10-01T03:00:00.123",
            "2026-10-02T03:00:00",
            "2026-10-01T03:00:00.1234567",
            Some("2026-10-01T03:00:00.123Z"),
        ),
        ("0001-01-01T00:00:00", "2026-10-02T03:00:00+00:00", "0001-01-01T00:00:00", None),
        ("0001-01-01T00:00:00+00:00", "2026-10-02T03:00:00Z", "0001-01-01T00:00:00Z", None),
    ] {
        let payload = timer(
            "myTimer",
            json!({ "Schedule": { "AdjustForDST": true }, "IsPastDue": true,
                    "ScheduleStatus": { "Last": last, "Next": next, "LastUpdated": updated } }),
        );
        let v = h.invoke("RotateTimer", &payload).await;
        let got = received(&v);
        assert_eq!(got["isPastDue"], true);
        assert_eq!(got["scheduleStatus"]["last"], want_last.map_or(Value::Null, |s| json!(s)), "{last}");
        assert!(got["scheduleStatus"]["next"].as_str().unwrap().starts_with("2026-10-02T03:00:00"));
    }
    let v =
        h.invoke("RotateTimer", &json!({"data": {"MYTIMER": {"isPastDue": "False", "scheduleStatus": null}}})).await;
    assert_eq!(received(&v)["isPastDue"], false);

    // A timer invocation the handler cannot read fails, naming the field.
    let (status, ct, body) = h
        .post("RotateTimer", "a1", timer("myTimer", json!({"ScheduleStatus": {"Last": "last week"}})).to_string())
        .await;
    assert_eq!(status, 400);
    assert!(ct.starts_with("application/json"));
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(err["error"].as_str().unwrap().contains("Data.myTimer.ScheduleStatus.Last"), "{err}");

    let (status, _, stderr) = h.stop();
    assert!(status.success(), "exit {status:?}; stderr {stderr}");
}

#[tokio::test]
async fn rotate_http_requests_and_the_function_key() {
    let h = HostedHandler::start(&[]).await;
    let base = |method: &str| {
        json!({
            "Url": format!("https://patrol-app.azurewebsites.net/api/rotate/db-password?force=true&code={FUNCTION_KEY}"),
            "Method": method,
            "Query": { "code": FUNCTION_KEY },
            "Headers": { "Content-Type": ["application/json"], "x-functions-key": [FUNCTION_KEY],
                         "Host": ["patrol-app.azurewebsites.net"] },
            "Params": {},
            "Identities": [{ "AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true,
                             "Claims": [{ "Type": "http://schemas.microsoft.com/2017/07/functions/claims/keyid", "Value": "default" }] }]
        })
    };
    let with = |method: &str, extra: Value| {
        let mut r = base(method);
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };

    // The research note's sample: POST, route param, body as a JSON string.
    let (status, body, headers, input) =
        h.http(with("POST", json!({"Params": {"secret": "db-password"}, "Body": "{\"force\":true}"}))).await;
    assert_eq!(input, json!({"mode": "run", "secret": "db-password", "force": true}));
    assert_eq!(status, 404, "{body}");
    assert_eq!(headers["Content-Type"], "application/json; charset=utf-8");
    assert_eq!(body["kind"], "not-found");
    assert!(body["error"].as_str().unwrap().contains("db-password"), "{body}");

    // GET plans; Query as an object with the secret, force from the query.
    let (_, _, _, input) =
        h.http(with("GET", json!({"Query": {"secret": "ci-build", "force": "1", "code": FUNCTION_KEY}}))).await;
    assert_eq!(input, json!({"mode": "plan", "secret": "ci-build", "force": true}));

    // Old hosts' Query as a JSON string; no body at all.
    let (status, body, _, input) = h.http(with("POST", json!({"Query": "{}"}))).await;
    assert_eq!(input, json!({"mode": "run", "secret": null, "force": false}));
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")), "{body}");

    // A base64 body (application/octet-stream), header values as arrays, key case.
    let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"Secret":"from-body","FORCE":"yes"}"#);
    let (_, _, _, input) = h
        .http(json!({"method": "POST", "headers": {"content-type": ["application/octet-stream"]}, "body": b64, "query": {}}))
        .await;
    assert_eq!(input, json!({"mode": "run", "secret": "from-body", "force": true}));

    // The caller's mistakes: 4xx in Outputs.res with a reason (the invocation itself succeeds).
    for (req, want, words) in [
        (with("POST", json!({"Params": {"secret": "not/a/name"}})), 400, "'/'"),
        (with("POST", json!({"Query": {"force": "sometimes", "code": FUNCTION_KEY}})), 400, "\"sometimes\""),
        (with("POST", json!({"Body": "{\"secrte\":\"x\"}"})), 400, "unknown field \"secrte\""),
        (with("POST", json!({"Body": "rotate please"})), 400, "not JSON"),
        (with("POST", json!({"Params": {"secret": "a"}, "Body": "{\"secret\":\"b\"}"})), 400, "name one"),
        (with("PUT", json!({})), 405, "GET shows the rotation plan"),
    ] {
        let (status, body, headers, input) = h.http(req).await;
        assert_eq!(input, Value::Null, "refused before reaching the engine");
        assert_eq!(status, want, "{body}");
        assert!(body["error"].as_str().unwrap().contains(words), "{body}");
        if want == 405 {
            assert_eq!(headers["Allow"], "GET, POST");
        }
    }

    // Structurally broken: the invocation fails with a reason.
    let (status, _, body) =
        h.post("RotateHttp", "b1", json!({"Data": {"req": {"Query": {"code": FUNCTION_KEY}}}}).to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("Data.req.Method: is missing"), "{body}");
    assert!(!body.contains(FUNCTION_KEY));

    let (status, stdout, stderr) = h.stop();
    assert!(status.success());
    assert!(stdout.contains("\"received\""), "the handler logged its invocations");
    assert!(!stdout.contains(FUNCTION_KEY), "the function key leaked to stdout");
    assert!(!stderr.contains(FUNCTION_KEY), "the function key leaked to stderr");
}

#[tokio::test]
async fn event_grid_events_from_the_specs_and_their_quirks() {
    let h = HostedHandler::start(&[]).await;
    let sample = spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
    let want = json!({
        "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
        "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
        "vault": "sample-kv", "secret": "newsecret", "version": "ee059b2bb5bc48398a53b168c6cdcb10",
        "notBefore": "2019-05-28T22:19:40Z", "expires": "2019-05-28T22:21:42Z",
        "eventTime": "2019-07-25T01:08:33.1036736Z"
    });

    // The official sample (NBF/EXP as strings), as an object and as a JSON string; the CloudEvents form.
    let cloud = spec("eventgrid/keyvault/cloud-events-schema/secret_new_version_created.json");
    for ev in [sample.clone(), Value::String(sample.to_string()), cloud] {
        let v = h.invoke("EventGridSecretChanged", &event(ev)).await;
        assert_eq!(received(&v), want);
        assert_eq!(v["ReturnValue"]["status"], "ignored", "newsecret is not managed");
    }

    // NBF/EXP as numbers and null; near-expiry; keys in another case.
    let mut ev = sample.clone();
    ev["data"]["NBF"] = json!(1559081980);
    ev["data"]["EXP"] = Value::Null;
    ev["eventType"] = json!("Microsoft.KeyVault.SecretNearExpiry");
    let v = h.invoke("EventGridSecretChanged", &event(ev)).await;
    let got = &received(&v);
    assert_eq!(
        (got["eventType"].as_str(), got["notBefore"].as_str()),
        (Some("Microsoft.KeyVault.SecretNearExpiry"), Some("2019-05-28T22:19:40Z"))
    );
    assert!(got.get("expires").is_none());
    let upper: Value = serde_json::from_str(
        &sample.to_string().replace("\"data\"", "\"DATA\"").replace("\"VaultName\"", "\"vaultname\""),
    )
    .unwrap();
    let v = h.invoke("EventGridSecretChanged", &event(upper)).await;
    assert_eq!(received(&v), want);

    // Not a secret: answered by the handler, cheaply.
    let mut key_event = sample.clone();
    key_event["eventType"] = json!("Microsoft.KeyVault.KeyNewVersionCreated");
    key_event["data"]["ObjectType"] = json!("Key");
    let v = h.invoke("EventGridSecretChanged", &event(key_event)).await;
    assert_eq!(v["ReturnValue"]["status"], "ignored");

    // A broken event fails the invocation (Event Grid will redeliver), naming the field.
    let mut broken = sample.clone();
    broken["data"]["EXP"] = json!("soon");
    let (status, _, body) = h.post("EventGridSecretChanged", "c1", event(broken).to_string()).await;
    assert_eq!(status, 400);
    assert!(body.contains("Data.eventGridEvent.data.EXP"), "{body}");

    let (status, _, _) = h.stop();
    assert!(status.success());
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_and_it_keeps_serving() {
    let h = HostedHandler::start(&[("PATROL_MAX_BODY_BYTES", "4096")]).await;
    for (body, words) in [
        ("", "empty"),
        ("{not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ("{\"Metadata\":{}}", "Data: is missing"),
        ("{\"Data\":{\"myTimer\":5}}", "Data.myTimer: expected an object, got a number"),
    ] {
        let (status, ct, reply) = h.post("RotateTimer", "d1", body.to_owned()).await;
        assert_eq!(status, 400, "{body}");
        assert!(ct.starts_with("application/json"));
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert!(v["error"].as_str().unwrap().contains(words), "{body}: {v}");
        assert_eq!(v["function"], "RotateTimer");
        assert_eq!(v["invocationId"], "d1");
    }

    let (status, ct, reply) = h.post("NoSuchFunction", "e1", "{}").await;
    assert_eq!(status, 404);
    assert!(ct.starts_with("application/json"));
    assert!(reply.contains("no such function"), "{reply}");
    let r = h.client.get(format!("{}/RotateTimer", h.base)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = h.client.post(format!("{}/a/b", h.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Over the limit: with Content-Length, and chunked (the host sends chunked bodies).
    let big = format!("{{\"Data\":{{\"myTimer\":{{}}}},\"pad\":\"{}\"}}", "x".repeat(5000));
    let (status, _, reply) = h.post("RotateTimer", "f1", big.clone()).await;
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains("PATROL_MAX_BODY_BYTES"));
    assert_eq!(h.post_chunked("RotateTimer", big.as_bytes(), 1000).await, 413);

    // A chunked body under the limit is read whole.
    let ok = timer("myTimer", json!({}));
    assert_eq!(h.post_chunked("RotateTimer", ok.to_string().as_bytes(), 7).await, 200);

    // Still serving.
    h.invoke("RotateTimer", &ok).await;
    let (status, _, _) = h.stop();
    assert!(status.success());
}

#[tokio::test]
async fn json_log_lines_carry_the_invocation_and_concurrent_logs_stay_apart() {
    let h = Arc::new(HostedHandler::start(&[("PATROL_LOG_FORMAT", "json")]).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut ev = spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
            ev["data"]["ObjectName"] = json!(format!("secret-{i}"));
            let v = h.invoke("EventGridSecretChanged", &event(ev)).await;
            let lines = logs(&v);
            assert!(lines.contains(&format!("\"secret\":\"secret-{i}\"")), "{lines}");
            for j in (0..24).filter(|j| *j != i) {
                assert!(
                    !lines.contains(&format!("\"secret\":\"secret-{j}\"")),
                    "invocation {i} got {j}'s logs: {lines}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let id = "0b7d5f1e-3c2a-4e8f-9d6b-1a2b3c4d5e6f";
    let (status, _, _) = h.post("RotateTimer", id, timer("myTimer", json!({})).to_string()).await;
    assert_eq!(status, 200);
    let h = Arc::try_unwrap(h).ok().unwrap();
    let (status, stdout, _) = h.stop();
    assert!(status.success());
    let lines: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("listening"))));
    let mine: Vec<&Value> = lines.iter().filter(|l| l["span"]["invocation_id"] == id).collect();
    assert!(!mine.is_empty(), "no line for invocation {id}");
    assert!(mine.iter().all(|l| l["span"]["function"] == "RotateTimer"));
    assert!(mine.iter().any(|l| l["level"] == "INFO" && l["status"] == "completed"), "the outcome line");
    assert!(mine.iter().any(|l| l["level"] == "DEBUG" && l["message"] == "received"), "the input line");
}

#[tokio::test]
async fn text_logs_and_the_legacy_port_variable() {
    let h = HostedHandler::start_with("FUNCTIONS_HTTPWORKER_PORT", &[("PATROL_LOG_FORMAT", "text")]).await;
    h.invoke("RotateTimer", &timer("myTimer", json!({}))).await;
    let (status, stdout, _) = h.stop();
    assert!(status.success());
    assert!(stdout.contains("patrol custom handler listening"), "{stdout}");
    assert!(stdout.contains("invocation{invocation_id="), "{stdout}");
    assert!(serde_json::from_str::<Value>(stdout.lines().next().unwrap()).is_err(), "text, not JSON");
}

#[test]
fn invalid_settings_are_refused_at_start_naming_the_setting() {
    for (name, value) in
        [("PATROL_MAX_CONCURRENCY", "lots"), ("PATROL_LOG", "patrol=["), ("FUNCTIONS_CUSTOMHANDLER_PORT", "70000")]
    {
        let (mut child, _, _dir) = spawn("FUNCTIONS_CUSTOMHANDLER_PORT", &[(name, value)]);
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
}

/// A policy that declares a token (owners must sign in, so PATROL_CLIENT_ID is needed).
const ONE_TOKEN_POLICY: &str = "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\n[[token]]\nsecret = \"ci-pat\"\ndisplay_name = \"CI\"\n";

/// Runs the handler until it exits (it must refuse to start); returns (exit code, stderr).
fn refused(env: &[(&str, &str)], policy: Option<&str>) -> (Option<i32>, String) {
    let (mut child, _, _dir) = spawn_with_policy("FUNCTIONS_CUSTOMHANDLER_PORT", env, policy);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the handler started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), err)
}

#[test]
fn a_handler_whose_settings_cannot_work_refuses_to_start_naming_each_setting() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = file.path().to_str().unwrap();
    let webhook = "http://hooks.example.com/workflows/s3cr3t-sig";
    // (the setting named, the environment, the policy)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("PATROL_CLIENT_ID", vec![("PATROL_CLIENT_ID", "")], Some(ONE_TOKEN_POLICY)),
        ("PATROL_CLIENT_ID", vec![("PATROL_CLIENT_ID", "patrol-app")], Some(EMPTY_POLICY)),
        ("PATROL_KEYVAULT_URL", vec![("WEBSITE_INSTANCE_ID", "0a1b2c")], Some(EMPTY_POLICY)),
        ("PATROL_STATE_DIR", vec![("PATROL_STATE_DIR", not_a_dir)], Some(EMPTY_POLICY)),
        ("PATROL_WEBHOOK_URL", vec![("PATROL_WEBHOOK_URL", webhook)], Some(EMPTY_POLICY)),
        ("PATROL_TEAMS_WEBHOOK_URL", vec![("PATROL_TEAMS_WEBHOOK_URL", webhook)], Some(EMPTY_POLICY)),
        (
            "PATROL_SMTP_TLS",
            vec![("PATROL_SMTP_HOST", "smtp.example.com"), ("PATROL_SMTP_TLS", "none")],
            Some(EMPTY_POLICY),
        ),
        ("PATROL_LOG", vec![("PATROL_LOG", "patrol=[")], Some(EMPTY_POLICY)),
        ("PATROL_OWN_KEYVAULT_URL", vec![("PATROL_OWN_KEYVAULT_URL", "https://patrol-own.vault.azure.net/")], None),
    ];
    for (setting, env, policy) in cases {
        let (code, err) = refused(&env, policy);
        assert_eq!(code, Some(2), "{setting}: {err}");
        assert!(err.contains(&format!("setting {setting}:")), "{setting}: {err}");
        assert!(!err.contains("s3cr3t"), "a webhook URL is a secret: {err}");
    }
    // Every problem at once.
    let (code, err) = refused(
        &[("PATROL_CLIENT_ID", "nope"), ("PATROL_WEBHOOK_URL", webhook), ("PATROL_MAX_CONCURRENCY", "lots")],
        Some(EMPTY_POLICY),
    );
    assert_eq!(code, Some(2));
    for s in ["PATROL_CLIENT_ID", "PATROL_WEBHOOK_URL", "PATROL_MAX_CONCURRENCY"] {
        assert!(err.contains(s), "{s}: {err}");
    }
}

#[tokio::test]
async fn events_from_a_vault_patrol_does_not_manage_are_ignored_before_anything_is_built() {
    let kv = [("PATROL_KEYVAULT_URL", "https://consumer-kv.vault.azure.net/")];
    let foreign = spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
    let ours: Value = serde_json::from_str(&foreign.to_string().replace("sample-kv", "consumer-kv")).unwrap();
    let no_client_id = [kv[0], ("PATROL_CLIENT_ID", "")];
    for (case, env, policy) in [
        ("no policy", &kv[..], None),
        ("a broken policy", &kv[..], Some("[[token]\nsecret = ")),
        ("a missing client id", &no_client_id[..], Some(EMPTY_POLICY)),
    ] {
        let h = HostedHandler::start_in(spawn_with_policy("FUNCTIONS_CUSTOMHANDLER_PORT", env, policy)).await;
        let v = h.invoke("EventGridSecretChanged", &event(foreign.clone())).await;
        assert_eq!(v["ReturnValue"]["status"], "ignored", "{case}: {v}");
        assert!(logs(&v).contains("sample-kv"), "{case}: {v}");
        // The managed vault's event is not ignored: it reaches the (unworkable) engine.
        let (_, _, body) = h
            .post("EventGridSecretChanged", "7c3e1a0e-0000-4000-8000-0000000000ee", event(ours.clone()).to_string())
            .await;
        assert!(!body.contains("\"ignored\""), "{case}: {body}");
        h.stop();
    }
}

#[test]
fn a_one_vault_deployment_warns_at_start_that_consumers_can_read_refresh_tokens() {
    let (mut child, port, _dir) = spawn_with_policy(
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        &[("PATROL_KEYVAULT_URL", "https://consumer-kv.vault.azure.net/"), ("PATROL_LOG_FORMAT", "text")],
        Some(EMPTY_POLICY),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "never listened");
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.wait().unwrap();
    assert!(out.contains("WARN") && out.contains("PATROL_OWN_KEYVAULT_URL"), "{out}");
}

#[test]
fn the_bare_binary_without_a_port_shows_help() {
    let out = Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[test]
fn function_app_files_match_the_handler() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read =
        |p: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(format!("{root}/{p}")).unwrap()).unwrap() };
    let host = read("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "handler");
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert!(host["functionTimeout"].as_str().is_some());

    // One folder per row of the handler's function table, its trigger binding as the table says; no other.
    for f in patrol::handler::FUNCTIONS {
        let fj = read(&format!("{}/function.json", f.name));
        let ins: Vec<&Value> = fj["bindings"].as_array().unwrap().iter().filter(|b| b["direction"] == "in").collect();
        assert_eq!(ins.len(), 1, "{}: one trigger binding", f.name);
        assert_eq!(
            (ins[0]["type"].as_str(), ins[0]["name"].as_str()),
            (Some(f.trigger), Some(f.binding)),
            "{}",
            f.name
        );
    }
    let mut folders: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut table: Vec<String> = patrol::handler::FUNCTIONS.iter().map(|f| f.name.to_owned()).collect();
    table.sort();
    assert_eq!(folders, table, "every function folder is in the handler's table and the other way round");

    let t = &read("RotateTimer/function.json")["bindings"][0];
    assert_eq!((t["type"].as_str(), t["name"].as_str()), (Some("timerTrigger"), Some(patrol::handler::timer::BINDING)));
    assert_eq!(t["schedule"], "%PATROL_SCHEDULE%");
    assert_eq!((t["useMonitor"].as_bool(), t["runOnStartup"].as_bool()), (Some(true), Some(false)));

    let http = read("RotateHttp/function.json");
    let b = &http["bindings"][0];
    assert_eq!((b["type"].as_str(), b["name"].as_str()), (Some("httpTrigger"), Some(patrol::handler::http::BINDING)));
    assert_eq!(b["authLevel"], "function");
    assert_eq!(b["methods"], json!(["get", "post"]));
    assert_eq!(b["route"], format!("rotate/{{{}?}}", patrol::handler::http::ROUTE_PARAM));
    assert_eq!(
        (http["bindings"][1]["type"].as_str(), http["bindings"][1]["name"].as_str()),
        (Some("http"), Some("res"))
    );

    let e = &read("EventGridSecretChanged/function.json")["bindings"][0];
    assert_eq!(
        (e["type"].as_str(), e["name"].as_str()),
        (Some("eventGridTrigger"), Some(patrol::handler::eventgrid::BINDING))
    );

    let settings = read("local.settings.json.example");
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(settings["Values"]["AzureWebJobsStorage"], "UseDevelopmentStorage=true");
    let funcignore = std::fs::read_to_string(format!("{root}/.funcignore")).unwrap();
    for never_shipped in ["target/", ".patrol/", ".patrol-store.key", "local.settings.json"] {
        assert!(funcignore.lines().any(|l| l.trim() == never_shipped), ".funcignore must exclude {never_shipped}");
    }
}

/// An engine that takes a while and logs as it goes.
struct Slow(Duration);

#[async_trait::async_trait]
impl patrol::handler::Functions for Slow {
    async fn rotate_timer(
        &self,
        inv: &patrol::handler::Invocation,
        _: patrol::handler::timer::TimerRun,
    ) -> patrol::handler::Outcome {
        tracing::info!(retry = inv.retry.map(|r| r.retry_count), "engine: starting the run");
        tokio::time::sleep(self.0).await;
        tracing::info!("engine: run finished");
        Ok(patrol::handler::Report::new(patrol::handler::Status::Completed, "rotated 0 of 0"))
    }
    async fn rotate_http(
        &self,
        _: &patrol::handler::Invocation,
        _: patrol::handler::http::RotateRequest,
    ) -> patrol::handler::Outcome {
        Err(patrol::handler::Failure::new(patrol::handler::FailureKind::Conflict, "another run holds the lease"))
    }
    async fn secret_changed(
        &self,
        _: &patrol::handler::Invocation,
        _: patrol::handler::eventgrid::SecretEvent,
    ) -> patrol::handler::Outcome {
        Ok(patrol::handler::Report::new(patrol::handler::Status::Ignored, "not managed"))
    }
}

#[tokio::test]
async fn an_engine_plugs_in_its_logs_reach_the_envelope_and_shutdown_waits_for_it() {
    use patrol::handler::{Handler, server};
    use tracing_subscriber::layer::SubscriberExt;
    // Current-thread runtime: the server task runs on this thread, so a thread-local subscriber sees it.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(patrol::telemetry::CaptureLayer));

    let listener = server::bind(0).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = server::router(
        Handler::new(Arc::new(Slow(Duration::from_millis(400))), patrol::clock::Clock::system()),
        1 << 20,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}");

    // A conflict from the engine reaches the HTTP caller as 409.
    let r = client
        .post(format!("{url}/RotateHttp"))
        .body(json!({"Data": {"req": {"Method": "POST"}}}).to_string())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["Outputs"]["res"]["statusCode"], 409);

    let payload = json!({"Data": {"myTimer": {}}, "Metadata": {"RetryContext": {"RetryCount": 1, "MaxRetryCount": 2}}});
    let in_flight = tokio::spawn(client.post(format!("{url}/RotateTimer")).body(payload.to_string()).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();

    let r = in_flight.await.unwrap().expect("the in-flight invocation completed despite shutdown");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ReturnValue"]["status"], "completed");
    let lines = logs(&v);
    assert!(lines.contains("INFO engine: starting the run retry=1"), "{lines}");
    assert!(lines.contains("INFO engine: run finished"), "{lines}");
    assert!(lines.contains("INFO rotated 0 of 0"), "{lines}");

    tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap().unwrap();
    assert!(client.get(format!("{url}/")).send().await.is_err(), "no longer listening");
}

#[tokio::test]
async fn without_a_policy_file_each_function_says_rotation_is_not_configured() {
    let h = HostedHandler::start_in(spawn_with_policy("FUNCTIONS_CUSTOMHANDLER_PORT", &[], None)).await;
    let v = h.invoke("RotateTimer", &timer("myTimer", json!({"ScheduleStatus": null, "IsPastDue": false}))).await;
    assert_eq!(v["ReturnValue"]["status"], "not-configured", "no pretend success: {v}");
    assert!(logs(&v).contains("rotation is not configured"), "{v}");
    assert!(logs(&v).contains("last run: never"), "{v}");

    let (status, body, _, input) = h.http(json!({"Method": "POST", "Params": {"secret": "db-password"}})).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("not-configured")), "{body}");
    assert_eq!(body["detail"]["received"], input);

    let ev = spec("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
    let v = h.invoke("EventGridSecretChanged", &event(ev)).await;
    assert_eq!(v["ReturnValue"]["status"], "not-configured");
    assert!(logs(&v).contains("for secret newsecret in vault sample-kv"), "{v}");

    let (status, stdout, _) = h.stop();
    assert!(status.success());
    assert!(stdout.contains("no policy file"), "said at start: {stdout}");
}
