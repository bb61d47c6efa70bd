//! Two Functions instances (two real `patrol serve` processes) get the same `RotateTimer` at the same
//! moment for a token that is due. They share the Function App's storage (Azurite: blob leases and the
//! blob journal) and the secret store, as instances of one Function App do. Exactly one rotation happens:
//! one new vault version, one new PAT.

use super::world::{ORG, OWNER, Setup, World, advance_clock, seed};
use patrol::devops::DisplayFilter;
use patrol::domain::SecretName;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(super) struct Instance {
    child: Child,
    url: String,
}

impl Instance {
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Sends SIGTERM, as the Functions host stops its worker, and waits at most `within` for the exit.
    pub(super) async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < within, "patrol serve did not exit within {within:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) async fn start_instance(env: &[(String, String)]) -> Instance {
    spawn_instance(env, Stdio::null(), Stdio::null()).await
}

/// As [`start_instance`], its stdout and stderr going to `log` (to be scanned for secrets).
pub(super) async fn start_instance_logging(env: &[(String, String)], log: &Path) -> Instance {
    let out = std::fs::File::create(log).unwrap();
    spawn_instance(env, Stdio::from(out.try_clone().unwrap()), Stdio::from(out)).await
}

async fn spawn_instance(env: &[(String, String)], stdout: Stdio, stderr: Stdio) -> Instance {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string()).stdout(stdout).stderr(stderr);
    // Owned by `Instance` at once, so the process is killed and reaped on every path (Drop).
    let instance =
        Instance { child: cmd.spawn().expect("spawn patrol serve"), url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(&instance.url).send().await.is_ok() {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("patrol serve did not answer GET / within 5 s");
}

fn sys(function: &str, now: time::OffsetDateTime) -> Value {
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    json!({ "sys": { "MethodName": function, "UtcNow": utc, "RandGuid": uuid::Uuid::new_v4().to_string() } })
}

/// Invokes a function as the host does; returns the envelope.
pub(super) async fn invoke(i: &Instance, function: &str, data: Value, now: time::OffsetDateTime) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/{function}", i.url))
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(&json!({ "Data": data, "Metadata": sys(function, now) }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{function}: {body}");
    body
}

pub(super) fn timer() -> Value {
    json!({ "myTimer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } })
}

fn plan_request() -> Value {
    json!({ "req": { "Url": "http://localhost/api/rotate", "Method": "GET", "Query": {}, "Headers": {}, "Params": {} } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_timers_on_two_instances_rotate_once() {
    let az = super::azurite().expect("azurite");
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"twin-pat\"\ndisplay_name = \"Two instances\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n"
    );
    let mut setup = Setup::start(seed(), &policy).await;
    setup.set("PATROL_LEASE", "blob");
    setup.set(
        "AzureWebJobsStorage",
        format!("UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1", az.port),
    );
    let World { emu, dir: _dir, env, local, api, .. } = World::open(setup, None, false).await;

    let (a, b) = (start_instance(&env).await, start_instance(&env).await);
    // Onboarding: the first run creates the token's PAT and stores it.
    let first = invoke(&a, "RotateTimer", timer(), emu.clock().now()).await;
    let secret = SecretName::parse("twin-pat").unwrap();
    let versions = || async { local.store.list_versions(&secret).await.unwrap().len() };
    assert_eq!(versions().await, 1, "onboarding: {first}");

    // 24 days later the token is due (rotate 7 days before a 30-day validity).
    advance_clock(&reqwest::Client::new(), &emu, time::Duration::days(24)).await;
    let now = emu.clock().now();
    // Each instance refreshes its owner session once, one after the other (the emulator's refresh tokens
    // are single-use), so the race below is about rotation only.
    invoke(&a, "RotateHttp", plan_request(), now).await;
    invoke(&b, "RotateHttp", plan_request(), now).await;

    // The same timer on both instances at once.
    let (ra, rb) = tokio::join!(invoke(&a, "RotateTimer", timer(), now), invoke(&b, "RotateTimer", timer(), now));
    let rotated = |v: &Value| v["ReturnValue"]["detail"]["rotated"].as_u64().unwrap_or(0);
    let busy = |v: &Value| v["ReturnValue"]["detail"]["busy"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(rotated(&ra) + rotated(&rb), 1, "exactly one instance rotated:\nA: {ra}\nB: {rb}");
    // The other one either found the lease held (busy: the next run picks the token up) or, arriving
    // after the rotation, re-planned under the lease and found nothing due.
    assert!(busy(&ra) + busy(&rb) <= 1, "A: {ra}\nB: {rb}");
    assert_eq!(versions().await, 2, "exactly one new vault version");

    // Exactly one new PAT: the current one plus the previous one in its grace period.
    let live: Vec<_> = api
        .list(DisplayFilter::Active)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.display_name.starts_with("Two instances"))
        .collect();
    assert_eq!(live.len(), 2, "{live:#?}");
    drop((a, b));
    emu.shutdown().await.unwrap();
}
