//! `patrol plan` end to end for 10,000 managed tokens (issue 16: ≤ 300 ms from process start to output,
//! peak RSS ≤ 48 MB): 20 owners × 500 PATs on patrol-emulator without latency, the real `patrol` binary
//! started as a process each time, its output read to the end.
//!
//! Three kinds of process: this one orchestrates; `patrol-emulator` (the real binary, no latency, default
//! rate limits) is the world; `patrol plan --format json` (the release binary) is what is timed, from
//! spawn to exit with its whole output read. Each run's peak RSS is the kernel's `ru_maxrss` for that
//! child (`wait4`).
//!
//! Setup (not timed): seed the owners, put each one's refresh token in the file secret store (what
//! `patrol login` leaves behind), and let patrol create every token's first PAT (this bench re-executed
//! as `plan-e2e setup`, through the CLI wiring, rate limits off for it). The policy, the file store and
//! the journal are then what an operator's `patrol plan` reads. The setup takes minutes (10,000 rotations,
//! each journaled), so it is kept: the emulator's world (its `--state` file) and patrol's files are saved
//! under `target/plan-e2e-cache/<tokens>x<owners>/` and reused for 12 hours (`PLAN_BENCH_FRESH=1` makes a
//! new one). Each bench run copies it to a temporary directory and starts the emulator from the copy with
//! `--state-read-only`, so every run starts from the same world and nothing is saved while it is timed.
//!
//! Run: `cargo build --release -p patrol -p patrol-emulator --bins && cargo bench --bench plan_e2e`.
//! Knobs: `PLAN_BENCH_TOKENS` (10,000), `PLAN_BENCH_OWNERS` (20), `PLAN_BENCH_RUNS` (10),
//! `PLAN_BENCH_PATROL` / `PLAN_BENCH_EMULATOR` (binaries), `PLAN_BENCH_FRESH=1`, `PLAN_BENCH_NO_ASSERT=1`.

use patrol::auth::session::store_refresh_token;
use patrol::cli::runtime::Local;
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::domain::OwnerId;
use patrol::rotation::engine::RunOptions;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORG: &str = "fabrikam";
const CLIENT_ID: &str = "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6";
const TARGET_MS: f64 = 300.0;
const RSS_LIMIT_KB: i64 = 48 * 1024;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn owner(i: usize) -> String {
    format!("svc-plan-{i:03}@contoso.example")
}

/// patrol's settings for this world, as environment variables.
fn env_pairs(dir: &Path, endpoints: &Value) -> Vec<(String, String)> {
    let p = |f: &str| dir.join(f).display().to_string();
    let s = |k: &str| endpoints[k].as_str().unwrap_or_default().to_owned();
    vec![
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
        ("PATROL_MAX_CONCURRENCY".into(), "32".into()),
    ]
}

fn settings(dir: &Path, endpoints: &Value) -> Settings {
    let pairs = env_pairs(dir, endpoints);
    Settings::from_source(&Source::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))).expect("settings")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("setup") {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        rt.block_on(setup_child(Path::new(&args[2])));
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(orchestrate());
}

/// patrol's side of the setup: every token's first PAT.
async fn setup_child(dir: &Path) {
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("endpoints.json")).expect("endpoints")).expect("json");
    let local = Local::open(settings(dir, &endpoints), Clock::system()).expect("local");
    let summary = local.engine().expect("engine").run(RunOptions::default()).await.expect("run");
    println!("{}", json!({ "rotated": summary.rotated, "failed": summary.failed }));
}

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str, var: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/plan_e2e-… → target/release/<name>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).and_then(Path::parent).map(|d| d.join("release").join(name)).expect("target")
}

async fn control_call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let req = if method == "GET" {
        http.get(url)
    } else if method == "PUT" {
        http.put(url)
    } else {
        http.post(url)
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

/// One timed `patrol plan`: wall time from spawn to exit (output read to the end), the child's peak RSS
/// (kB), its exit code and what it wrote. The child is reaped by `wait4`, not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn timed_plan(patrol: &Path, env: &[(String, String)]) -> (Duration, i64, i32, Vec<u8>) {
    let t = Instant::now();
    let mut child = Command::new(patrol)
        .args(["plan", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patrol plan");
    let mut out = Vec::with_capacity(8 << 20);
    child.stdout.take().expect("stdout").read_to_end(&mut out).expect("read plan");
    let (code, maxrss) = wait4(child.id() as i32);
    let elapsed = t.elapsed();
    (elapsed, maxrss, code, out)
}

/// Reaps `pid`: (exit code, peak RSS in kB).
fn wait4(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain old data, zeroed is a valid value; wait4 writes both out-parameters.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, usage.ru_maxrss)
}

/// Starts the emulator binary with `args`: the child and its ready line (the endpoints, as JSON).
fn start_emulator(emulator: &Path, args: &[&str]) -> (Emulator, String) {
    let mut child = Command::new(emulator)
        .args(args)
        .env("PATROL_EMULATOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patrol-emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    assert!(!line.is_empty(), "patrol-emulator {args:?} did not start");
    (Emulator(child), line)
}

/// Stops the emulator the way Ctrl-C does (SIGTERM), so that it saves its `--state`.
fn stop_and_save(emu: Emulator) {
    let mut emu = std::mem::ManuallyDrop::new(emu);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(emu.0.id() as i32, libc::SIGTERM) };
    let status = emu.0.wait().expect("wait for patrol-emulator");
    assert!(status.success() || status.code().is_none(), "patrol-emulator exited with {status}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read cache") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        let kind = e.file_type().expect("type");
        if kind.is_dir() {
            copy_tree(&e.path(), &target);
        } else if kind.is_symlink() {
            // The file store's `current` links stay links (a copy of the file they name would be ignored).
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).expect("readlink"), &target).expect("symlink");
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The saved setup for `n` tokens over `k` owners, when it exists and is recent enough to be reused (its
/// PATs were created with 30 days of validity, 7 before rotation: hours later nothing is due yet).
fn cached(cache: &Path) -> bool {
    let fresh = std::env::var("PLAN_BENCH_FRESH").is_ok_and(|v| v == "1");
    let age =
        std::fs::read_to_string(cache.join("created")).ok().and_then(|t| t.trim().parse::<u64>().ok()).and_then(|t| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs().checked_sub(t)
        });
    !fresh && age.is_some_and(|a| a < 12 * 3600) && cache.join("emulator.json").is_file()
}

/// Builds the world into `dir` (not timed): owners seeded and signed in, every token's first PAT created by
/// patrol, the emulator's world saved as `dir/emulator.json`.
async fn setup_into(dir: &Path, emulator: &Path, n: usize, k: usize) {
    let state = dir.join("emulator.json");
    let (emu, line) = start_emulator(emulator, &["--state", &state.display().to_string()]);
    let endpoints: Value = serde_json::from_str(&line).expect("ready line is JSON");
    std::fs::write(dir.join("endpoints.json"), &line).expect("write endpoints");
    let control = endpoints["control"].as_str().expect("control endpoint").to_owned();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("http");

    let users: Vec<Value> = (0..k).map(|i| json!({ "upn": owner(i), "organizations": [ORG] })).collect();
    control_call(
        &http,
        "POST",
        &format!("{control}/_control/seed"),
        Some(json!({ "organizations": [{ "name": ORG }], "users": users })),
    )
    .await;
    let mut policy = String::from(
        "[defaults]\norganization = \"fabrikam\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\n",
    );
    for i in 0..n {
        policy.push_str(&format!(
            "[[token]]\nsecret = \"plan-{i}\"\ndisplay_name = \"Plan token {i}\"\nowner = \"{}\"\n",
            owner(i % k)
        ));
    }
    std::fs::write(dir.join("patrol.toml"), policy).expect("policy");
    {
        let s = settings(dir, &endpoints);
        let clock = Clock::system();
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
            let signed_in = patrol::timestamp::rfc3339(clock.now());
            store_refresh_token(store.as_ref(), &who, &rt_value, &signed_in, patrol::auth::PAT_SCOPES, clock.now())
                .await
                .expect("store rt");
        }
    }
    // Every token's first PAT, with the rate limits off (500 Creates per identity exceed any window).
    let limits = control_call(&http, "GET", &format!("{control}/_control/ratelimit"), None).await;
    let mut unlimited = limits.clone();
    unlimited["enabled"] = json!(false);
    control_call(&http, "PUT", &format!("{control}/_control/ratelimit"), Some(unlimited)).await;
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["setup", &dir.display().to_string()])
        .env("PATROL_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("setup");
    let text = String::from_utf8_lossy(&out.stdout);
    let setup: Value = serde_json::from_str(text.lines().last().unwrap_or("")).expect("setup summary");
    assert_eq!(setup["rotated"].as_u64(), Some(n as u64), "setup: {setup}");
    eprintln!("setup: {n} first PATs in {:.1} s", t.elapsed().as_secs_f64());
    control_call(&http, "PUT", &format!("{control}/_control/ratelimit"), Some(limits)).await;
    stop_and_save(emu);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    std::fs::write(dir.join("created"), now.to_string()).expect("stamp");
}

async fn orchestrate() {
    let n = env_num("PLAN_BENCH_TOKENS", 10_000);
    let k = env_num("PLAN_BENCH_OWNERS", 20).clamp(1, n.max(1));
    let runs = env_num("PLAN_BENCH_RUNS", 10).max(1);
    let no_assert = std::env::var("PLAN_BENCH_NO_ASSERT").is_ok_and(|v| v == "1");
    let (patrol, emulator) =
        (sibling("patrol", "PLAN_BENCH_PATROL"), sibling("patrol-emulator", "PLAN_BENCH_EMULATOR"));
    for b in [&patrol, &emulator] {
        assert!(b.is_file(), "{} not found: cargo build --release -p patrol -p patrol-emulator --bins", b.display());
    }
    // target/<profile>/deps/plan_e2e-… → target/plan-e2e-cache/<n>x<k>
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir");
    let cache = target.join("plan-e2e-cache").join(format!("{n}x{k}"));
    if cached(&cache) {
        eprintln!("setup: reusing {} (PLAN_BENCH_FRESH=1 makes a new one)", cache.display());
    } else {
        let building = cache.with_extension("building");
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).expect("cache dir");
        setup_into(&building, &emulator, n, k).await;
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::rename(&building, &cache).expect("keep the setup");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&cache, dir.path());
    let state = dir.path().join("emulator.json").display().to_string();
    let (emu, line) = start_emulator(&emulator, &["--state", &state, "--state-read-only"]);
    let endpoints: Value = serde_json::from_str(&line).expect("ready line is JSON");

    let env = env_pairs(dir.path(), &endpoints);
    let (_, _, code, out) = timed_plan(&patrol, &env); // warm-up (page cache)
    assert_eq!(code, 0, "patrol plan failed (warm-up; PLAN_BENCH_FRESH=1 rebuilds the saved setup)");
    // What is timed is a real plan: every token found with its PAT, nothing blocked, nothing due.
    let bytes = out.len();
    let v: Value = serde_json::from_slice(&out).expect("plan JSON");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), n, "every token is planned");
    assert!(entries.iter().all(|e| e["actions"] == json!([]) && e["current"].is_object()), "nothing to do");
    drop(out);
    let mut walls = Vec::with_capacity(runs);
    let mut rss = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (wall, kb, code, _) = timed_plan(&patrol, &env);
        assert_eq!(code, 0, "patrol plan failed");
        walls.push(wall.as_secs_f64() * 1e3);
        rss.push(kb);
    }
    drop(emu);
    walls.sort_by(f64::total_cmp);
    rss.sort_unstable();
    let median = walls[runs / 2];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "patrol plan, {n} managed tokens ({k} owners), {runs} runs after a warm-up: wall min {:.1} ms, median {median:.1} ms, \
         max {:.1} ms; peak RSS median {:.1} MiB, max {:.1} MiB; output {bytes} bytes; binary {}; load average {}",
        walls[0],
        walls[runs - 1],
        rss[runs / 2] as f64 / 1024.0,
        rss[runs - 1] as f64 / 1024.0,
        patrol.display(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    if no_assert {
        return;
    }
    assert!(median <= TARGET_MS, "median {median:.1} ms > {TARGET_MS} ms");
    assert!(rss[runs - 1] <= RSS_LIMIT_KB, "peak RSS {} kB > {RSS_LIMIT_KB} kB", rss[runs - 1]);
}
