//! Rotating due tokens against patrol-emulator (issue 5): `ROTATE_BENCH_TOKENS` (default 1,000) due
//! tokens spread over `ROTATE_BENCH_OWNERS` (default 20) identities, with the emulator's 25 ms latency
//! per call and its default rate limits (200 TSTU per identity per 5 minutes, 1 TSTU per request,
//! blocking at 300), must finish within 1.25× of the lower bound those impose, with zero failed
//! rotations and a peak RSS of patrol's side ≤ 64 MB.
//!
//! Three processes: this one orchestrates; `patrol-emulator` (the real binary, `--latency-ms 25
//! --tstu-limit 200`) is the world; and this bench re-executed as `rotate-bench run` is patrol's side —
//! the CLI's wiring from settings (`cli::runtime::Local`): the HTTP Azure DevOps client with owner
//! sessions (refresh token → access token through Entra), the encrypted file secret store, the file
//! journal, in-process leases and `PATROL_MAX_CONCURRENCY`. Its peak RSS is its own `VmHWM`.
//!
//! Setup (not timed): seed the identities, mint each one's refresh token into the file store (what
//! `patrol login` leaves behind), and with latency and rate limits switched off let patrol create every
//! token's first PAT; then move the virtual clock 24 days on, so every token is within its
//! `rotate_before_days` (30/7/2 policy) and every access token has expired, and switch latency and the
//! default rate limits back on (which also empties the rate-limit windows). The timed run is one full
//! pass (`Engine::run`): inventory, plan, rotate every token.
//!
//! With `ROTATE_BENCH_CONSUMERS=1` (issue 13) every token also feeds three write consumers — a service
//! connection, a secret variable of a variable group (both written with patrol's own app-only Entra
//! identity) and a GitHub Actions repository secret (sealed box) — and the timed pass rotates and delivers
//! all of them; the bound is the consumer one (docs/benchmarks.md, "Consumer bound"), the target 1.3×.
//!
//! Run: `cargo build --release -p patrol-emulator && cargo bench --bench rotate`.
//! Knobs: `ROTATE_BENCH_TOKENS`, `ROTATE_BENCH_OWNERS`, `ROTATE_BENCH_CONCURRENCY` (default 8, patrol's default
//! `PATROL_MAX_CONCURRENCY`),
//! `ROTATE_BENCH_EMULATOR` (path of the patrol-emulator binary), `ROTATE_BENCH_NO_ASSERT=1` (report only,
//! for scaling runs that are meant to exceed the bound).

use patrol::auth::session::store_refresh_token;
use patrol::cli::runtime::Local;
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::domain::OwnerId;
use patrol::rotation::engine::RunOptions;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORG: &str = "fabrikam";
const CLIENT_ID: &str = "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6";
const LATENCY_MS: u64 = 25;
/// The emulator's defaults (Azure DevOps' documented figures): 200 TSTU per 5-minute window before
/// delays, 429 beyond 300, `Retry-After` on successful answers from 80 % of the limit.
const TSTU_LIMIT: f64 = 200.0;
const TSTU_WARN: f64 = 0.8 * TSTU_LIMIT;
const WINDOW_SECS: f64 = 300.0;
const RSS_LIMIT_KB: u64 = 64 * 1024;
/// patrol's own Entra app (the Function App's identity) that writes Azure DevOps consumers.
const APP: &str = "7c1f0e2a-9b3d-4e5f-8a6b-0c1d2e3f4a5b";
const APP_SECRET: &str = "patrol-consumer-writer-bench-secret";
const GH_TOKEN: &str = "github_pat_11BENCH0000patrolConsumerBench0_writewritewritewritewritewritewrite";

fn consumers_on() -> bool {
    std::env::var("ROTATE_BENCH_CONSUMERS").is_ok_and(|v| v == "1")
}

fn endpoint_id(i: usize) -> String {
    format!("0f6a6f2e-1c7b-4d5e-9f00-{i:012}")
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn owner(i: usize) -> String {
    format!("svc-rotate-{i:03}@contoso.example")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; the child mode is `run <dir> <control url>`.
    if args.get(1).map(String::as_str) == Some("run") {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let report = rt.block_on(child_run(Path::new(&args[2]), &args[3]));
        println!("{report}");
        return;
    }
    parent();
}

/// Settings of patrol's side: the emulator's endpoints, files under `dir`.
fn settings(dir: &Path, endpoints: &Value, concurrency: usize) -> Settings {
    let p = |f: &str| dir.join(f).display().to_string();
    let s = |k: &str| endpoints[k].as_str().unwrap_or_default().to_owned();
    let pairs: Vec<(String, String)> = vec![
        ("PATROL_POLICY_FILE".into(), p("patrol.toml")),
        ("PATROL_STATE_DIR".into(), p("state")),
        ("PATROL_STORE_KEY_FILE".into(), p("store.key")),
        ("PATROL_DEVOPS_URL".into(), s("devops")),
        ("PATROL_AUDIT_URL".into(), s("audit")),
        ("PATROL_ENTRA_AUTHORITY".into(), s("entra")),
        ("PATROL_CA_CERT".into(), s("ca_cert")),
        ("PATROL_TENANT_ID".into(), s("tenant")),
        ("PATROL_CLIENT_ID".into(), CLIENT_ID.into()),
        ("PATROL_LEASE".into(), "local".into()),
        ("PATROL_MAX_CONCURRENCY".into(), concurrency.to_string()),
    ];
    let mut pairs = pairs;
    if consumers_on() {
        pairs.extend([
            ("PATROL_CONSUMER_CREDENTIAL".into(), "client-secret".into()),
            ("PATROL_CONSUMER_TENANT_ID".into(), s("tenant")),
            ("PATROL_CONSUMER_CLIENT_ID".into(), APP.into()),
            ("PATROL_CONSUMER_CLIENT_SECRET".into(), APP_SECRET.into()),
        ]);
    }
    Settings::from_source(&Source::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))).expect("settings")
}

/// patrol's side: one full pass, then a JSON line with what happened and the peak RSS.
async fn child_run(dir: &Path, control: &str) -> Value {
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("endpoints.json")).expect("endpoints")).expect("json");
    let concurrency = env_num("ROTATE_BENCH_CONCURRENCY", 8);
    let http = reqwest::Client::new();
    let vnow = virtual_now(&http, control).await;
    let local = Local::open(settings(dir, &endpoints, concurrency), Clock::starting_at(vnow)).expect("local");
    let engine = local.engine().expect("engine");
    let t = Instant::now();
    let summary = engine.run(RunOptions::default()).await.expect("run");
    let elapsed = t.elapsed();
    let errors: Vec<String> =
        summary.reports.iter().filter_map(|r| r.error.clone().or(r.deferred.clone())).take(5).collect();
    let delivered = summary.reports.iter().flat_map(|r| &r.done).filter(|d| d.starts_with("delivered to ")).count();
    json!({
        "elapsed_s": elapsed.as_secs_f64(),
        "planned": summary.plan.entries.len(),
        "rotated": summary.rotated,
        "delivered": delivered,
        "failed": summary.failed,
        "deferred": summary.deferred.len(),
        "busy": summary.busy.len(),
        "errors": errors,
        "vm_hwm_kb": status_kb("VmHWM"),
        "cpu_s": cpu_seconds(),
        "threads": status_kb("Threads"),
    })
}

/// A field of `/proc/self/status` (kB figures, or a plain count).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{field}:")))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process so far (`/proc/self/stat`, USER_HZ = 100).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

async fn virtual_now(http: &reqwest::Client, control: &str) -> time::OffsetDateTime {
    let v: Value =
        http.get(format!("{control}/_control/clock")).send().await.expect("clock").json().await.expect("clock json");
    time::OffsetDateTime::parse(v["now"].as_str().expect("now"), &time::format_description::well_known::Rfc3339)
        .expect("virtual time")
}

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emulator_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ROTATE_BENCH_EMULATOR") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/rotate-… → target/<profile>/patrol-emulator
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).map(|d| d.join("patrol-emulator")).expect("target dir")
}

async fn control_call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let req = match method {
        "GET" => http.get(url),
        "PUT" => http.put(url),
        _ => http.post(url),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {url}: {status} {v}");
    v
}

fn run_child(dir: &Path, control: &str) -> Value {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["run", &dir.display().to_string(), control])
        .env("PATROL_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("patrol side");
    assert!(out.status.success(), "patrol side failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("patrol side said {text:?}: {e}"))
}

fn requests(stats: &Value, service: &str) -> u64 {
    stats["requests"][service].as_u64().unwrap_or(0)
}

fn parent() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(orchestrate());
}

async fn orchestrate() {
    let n = env_num("ROTATE_BENCH_TOKENS", 1000);
    let k = env_num("ROTATE_BENCH_OWNERS", 20).clamp(1, n.max(1));
    let c = env_num("ROTATE_BENCH_CONCURRENCY", 8);
    let no_assert = std::env::var("ROTATE_BENCH_NO_ASSERT").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = emulator_binary();
    assert!(bin.is_file(), "{} not found: run `cargo build --release -p patrol-emulator` first", bin.display());

    let mut child = Command::new(&bin)
        .args(["--latency-ms", &LATENCY_MS.to_string(), "--tstu-limit", &TSTU_LIMIT.to_string()])
        .env("PATROL_EMULATOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patrol-emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let emu = Emulator(child);
    let endpoints: Value = serde_json::from_str(&line).expect("ready line is JSON");
    std::fs::write(dir.path().join("endpoints.json"), &line).expect("write endpoints");
    let control = endpoints["control"].as_str().expect("control endpoint").to_owned();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http");

    // The world: one organization, k identities (and with consumers: each token's service connection,
    // variable group and GitHub repository, patrol's app in the organization, its GitHub token).
    let users: Vec<Value> = (0..k).map(|i| json!({ "upn": owner(i), "organizations": [ORG] })).collect();
    let mut seed = json!({ "organizations": [{ "name": ORG }], "users": users });
    let consumers = consumers_on();
    if consumers {
        let placeholder = "placeholder-not-a-pat-0000000000000000000000";
        seed["apps"] = json!([{ "clientId": APP, "displayName": "patrol-func", "clientSecret": APP_SECRET }]);
        seed["consumers"] = json!({
            "projects": [{ "organization": ORG, "name": "web" }],
            "appMembers": [{ "organization": ORG, "clientId": APP }],
            "serviceEndpoints": (0..n).map(|i| json!({
                "organization": ORG, "projects": ["web"], "id": endpoint_id(i), "name": format!("feed-{i}"),
                "type": "generic", "url": "https://feeds.example/", "scheme": "UsernamePassword",
                "parameters": { "username": "ci", "password": placeholder }, "administrators": [APP]
            })).collect::<Vec<_>>(),
            "variableGroups": (0..n).map(|i| json!({
                "organization": ORG, "projects": ["web"], "id": i + 1, "name": format!("release-{i}"),
                "variables": { "AZDO_PAT": { "value": placeholder, "isSecret": true }, "PLAIN": { "value": "x" } },
                "administrators": [APP]
            })).collect::<Vec<_>>(),
            "github": {
                "tokens": [{ "token": GH_TOKEN, "label": "patrol",
                             "repositories": (0..n).map(|i| format!("bench/app-{i}")).collect::<Vec<_>>() }],
                "repositories": (0..n).map(|i| json!({ "name": format!("bench/app-{i}") })).collect::<Vec<_>>()
            }
        });
    }
    control_call(&http, "POST", &format!("{control}/_control/seed"), Some(seed)).await;
    // The policy: n tokens, round-robin over the identities.
    let mut policy = String::from(
        "[defaults]\norganization = \"fabrikam\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\n",
    );
    if consumers {
        policy.push_str(&format!(
            "[consumers]\ngithub_credential = \"patrol-github\"\ngithub_api = \"{}\"\n",
            endpoints["github"].as_str().expect("github endpoint")
        ));
    }
    for i in 0..n {
        policy.push_str(&format!(
            "[[token]]\nsecret = \"bench-{i}\"\ndisplay_name = \"Bench token {i}\"\nowner = \"{}\"\n",
            owner(i % k)
        ));
        if consumers {
            policy.push_str(&format!(
                "[[token.consumer]]\nkind = \"devops-service-connection\"\nproject = \"web\"\nconnection = \"{}\"\n\
                 type = \"generic\"\nscheme = \"UsernamePassword\"\n\
                 [[token.consumer]]\nkind = \"devops-variable-group\"\nproject = \"web\"\ngroup = {}\nvariable = \"AZDO_PAT\"\n\
                 [[token.consumer]]\nkind = \"github-actions-secret\"\nrepository = \"bench/app-{i}\"\nname = \"AZDO_PAT\"\n",
                endpoint_id(i),
                i + 1
            ));
        }
    }
    std::fs::write(dir.path().join("patrol.toml"), policy).expect("policy");
    // What `patrol login` leaves behind: each identity's refresh token in the secret store.
    {
        let s = settings(dir.path(), &endpoints, c);
        let clock = Clock::starting_at(virtual_now(&http, &control).await);
        let store = patrol::store::from_settings_with_clock(&s, clock.clone()).expect("store");
        for i in 0..k {
            let v = control_call(
                &http,
                "POST",
                &format!("{control}/_control/tokens"),
                Some(json!({ "upn": owner(i), "clientId": CLIENT_ID, "scope": patrol::auth::PAT_SCOPES })),
            )
            .await;
            let rt_value = secrecy::SecretString::from(v["refresh_token"].as_str().expect("refresh token").to_owned());
            let who = OwnerId::parse(&owner(i)).expect("owner");
            let signed_in = clock.now().format(&time::format_description::well_known::Rfc3339).expect("time");
            store_refresh_token(store.as_ref(), &who, &rt_value, &signed_in, patrol::auth::PAT_SCOPES, clock.now())
                .await
                .expect("store rt");
        }
        if consumers {
            // patrol's GitHub credential lives in its own store.
            let name = patrol::domain::SecretName::parse("patrol-github").expect("name");
            store.set(&name, &secrecy::SecretString::from(GH_TOKEN), Default::default()).await.expect("github token");
        }
    }

    // Setup pass, fast: every token's first PAT.
    let got = control_call(&http, "GET", &format!("{control}/_control/faults"), None).await;
    // GET also reports pending one-shot faults; PUT takes the settings only.
    let faults: Value = ["latencyMs", "jitterMs", "failRate", "failStatus", "services"]
        .iter()
        .filter_map(|k| {
            got.get(*k).or_else(|| got.get("settings").and_then(|s| s.get(*k))).map(|v| (k.to_string(), v.clone()))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(faults["latencyMs"].as_u64(), Some(LATENCY_MS), "emulator faults: {got}");
    let limits = control_call(&http, "GET", &format!("{control}/_control/ratelimit"), None).await;
    let mut off = faults.clone();
    off["latencyMs"] = json!(0);
    control_call(&http, "PUT", &format!("{control}/_control/faults"), Some(off)).await;
    let mut unlimited = limits.clone();
    unlimited["enabled"] = json!(false);
    control_call(&http, "PUT", &format!("{control}/_control/ratelimit"), Some(unlimited)).await;
    let t = Instant::now();
    let setup = run_child(dir.path(), &control);
    assert_eq!(setup["rotated"].as_u64(), Some(n as u64), "setup pass: {setup}");
    eprintln!("setup: {n} first PATs in {:.1} s", t.elapsed().as_secs_f64());

    // 24 days later every token is due and every access token has expired; latency and limits back on.
    control_call(&http, "POST", &format!("{control}/_control/clock/advance"), Some(json!({ "seconds": 24 * 86_400 })))
        .await;
    control_call(&http, "PUT", &format!("{control}/_control/faults"), Some(faults)).await;
    let timed_limits = if consumers {
        // The consumer writes all go out as patrol's one app identity: at the emulator's 1 TSTU per call
        // its 5-minute budget would bind (see "Consumer bound"); this run measures latency/concurrency.
        let mut l = limits.clone();
        l["enabled"] = json!(false);
        l
    } else {
        limits.clone()
    };
    control_call(&http, "PUT", &format!("{control}/_control/ratelimit"), Some(timed_limits)).await;
    let before = control_call(&http, "GET", &format!("{control}/_control/stats"), None).await;
    let run = run_child(dir.path(), &control);
    let after = control_call(&http, "GET", &format!("{control}/_control/stats"), None).await;
    drop(emu);

    if consumers {
        return consumer_verdict(n, k, c, no_assert, &run, &before, &after);
    }
    let devops = requests(&after, "devops") - requests(&before, "devops");
    let entra = requests(&after, "entra") - requests(&before, "entra");
    let throttled = after["throttled"].as_u64().unwrap_or(0) - before["throttled"].as_u64().unwrap_or(0);
    let delayed = after["delayed"].as_u64().unwrap_or(0) - before["delayed"].as_u64().unwrap_or(0);
    let elapsed = run["elapsed_s"].as_f64().unwrap_or(f64::MAX);
    // Lower bounds. Latency: a full pass gathers the inventory before it plans, and each identity's
    // inventory is an Entra refresh (its access token expired) then its List pages, one after the other;
    // then every due token needs Create and Get (verify), one after the other, at most c tokens at once.
    let rotation_calls = 2 * n as u64;
    let list_pages = devops.saturating_sub(rotation_calls) as f64 / k as f64;
    let l = LATENCY_MS as f64 / 1e3;
    let inventory_bound = l * (1.0 + list_pages);
    let latency_bound = inventory_bound + (rotation_calls as f64 * l / c as f64).max(2.0 * l);
    let per_identity = devops as f64 / k as f64;
    // Rate limits: each identity spends one TSTU per call. Until TSTU_WARN (80 % of the 200 limit) in
    // the 5-minute window nothing slows it; from there the service answers with `Retry-After` (the time
    // until the window's oldest call leaves it), which a well-behaved client honours. So U calls of one
    // identity need at least ceil(U / TSTU_WARN) - 1 further whole windows (the 300-TSTU threshold, where 429s
    // start, only matters to a client that ignores Retry-After).
    let tstu_bound = ((per_identity / TSTU_WARN).ceil() - 1.0).max(0.0) * WINDOW_SECS;
    let bound = latency_bound.max(tstu_bound);
    let binds = if tstu_bound > latency_bound { "TSTU budget" } else { "latency / concurrency" };
    let ratio = elapsed / bound;
    let hwm = run["vm_hwm_kb"].as_u64().unwrap_or(u64::MAX);
    println!(
        "rotate: {n} due tokens, {k} identities, concurrency {c}, latency {LATENCY_MS} ms: {elapsed:.2} s wall \
         (lower bound {bound:.2} s, binding: {binds}; latency bound {latency_bound:.2} s of which inventory {inventory_bound:.2} s, TSTU bound {tstu_bound:.0} s) \
         = {ratio:.2}x; calls: {devops} Azure DevOps ({per_identity:.0} per identity) + {entra} Entra; \
         emulator delayed {delayed}, throttled {throttled}; rotated {}, failed {}, deferred {}; peak RSS {:.1} MiB; \
         patrol CPU {:.2} s; load average {}",
        run["rotated"],
        run["failed"],
        run["deferred"],
        hwm as f64 / 1024.0,
        run["cpu_s"].as_f64().unwrap_or(0.0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    if let Some(errors) = run["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("first errors: {errors:?}");
    }
    if no_assert {
        return;
    }
    assert_eq!(run["rotated"].as_u64(), Some(n as u64), "every due token rotated: {run}");
    assert_eq!(run["failed"].as_u64(), Some(0), "zero failed rotations: {run}");
    assert!(ratio <= 1.25, "{elapsed:.2} s is {ratio:.2}x the {bound:.2} s lower bound (target 1.25x)");
    assert!(hwm <= RSS_LIMIT_KB, "peak RSS {hwm} kB > {RSS_LIMIT_KB} kB");
}

/// The consumer pass against its bound ("Consumer bound" in docs/benchmarks.md): per identity the
/// inventory (an Entra refresh, then its List page), then per token, at most `c` tokens at once, the calls
/// on its critical path — Create, Get (verify), and its three consumers side by side, each one read (the
/// object and its version marker; GitHub's public key and secret metadata together) and one write: 4 calls.
fn consumer_verdict(n: usize, k: usize, c: usize, no_assert: bool, run: &Value, before: &Value, after: &Value) {
    let devops = requests(after, "devops") - requests(before, "devops");
    let github = requests(after, "github") - requests(before, "github");
    let entra = requests(after, "entra") - requests(before, "entra");
    let l = LATENCY_MS as f64 / 1e3;
    const CRITICAL_PATH_CALLS: f64 = 4.0;
    let inventory_bound = 2.0 * l;
    let bound = inventory_bound + (n as f64 * CRITICAL_PATH_CALLS * l / c as f64).max(CRITICAL_PATH_CALLS * l);
    let elapsed = run["elapsed_s"].as_f64().unwrap_or(f64::MAX);
    let ratio = elapsed / bound;
    let hwm = run["vm_hwm_kb"].as_u64().unwrap_or(u64::MAX);
    let app_calls = devops.saturating_sub(2 * n as u64 + k as u64);
    println!(
        "rotate + consumers: {n} due tokens x 3 write consumers, {k} identities, concurrency {c}, latency {LATENCY_MS} ms: \
         {elapsed:.2} s wall (lower bound {bound:.2} s = inventory {inventory_bound:.2} s + {n} x {CRITICAL_PATH_CALLS} calls x {LATENCY_MS} ms / {c}) \
         = {ratio:.2}x; calls: {devops} Azure DevOps (of them ~{app_calls} by patrol's app identity, {:.1} per token) + {github} GitHub ({:.1} per token) + {entra} Entra; \
         rotated {}, delivered {}, failed {}, deferred {}; peak RSS {:.1} MiB; patrol CPU {:.2} s; load average {}",
        app_calls as f64 / n as f64,
        github as f64 / n as f64,
        run["rotated"],
        run["delivered"],
        run["failed"],
        run["deferred"],
        hwm as f64 / 1024.0,
        run["cpu_s"].as_f64().unwrap_or(0.0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    if let Some(errors) = run["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("first errors: {errors:?}");
    }
    if no_assert {
        return;
    }
    assert_eq!(run["rotated"].as_u64(), Some(n as u64), "every due token rotated: {run}");
    assert_eq!(run["delivered"].as_u64(), Some(3 * n as u64), "every consumer delivered: {run}");
    assert_eq!(run["failed"].as_u64(), Some(0), "zero failed rotations: {run}");
    assert_eq!(run["deferred"].as_u64(), Some(0), "nothing deferred: {run}");
    assert!(ratio <= 1.3, "{elapsed:.2} s is {ratio:.2}x the {bound:.2} s lower bound (target 1.3x)");
    assert!(hwm <= RSS_LIMIT_KB, "peak RSS {hwm} kB > {RSS_LIMIT_KB} kB");
}
