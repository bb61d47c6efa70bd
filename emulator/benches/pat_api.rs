//! Emulator benchmark (hand-rolled, `cargo bench -p patrol-emulator --bench pat_api`):
//! 1. PAT API throughput over loopback HTTP/1.1 keep-alive with no injected latency — Get, List and a
//!    Get/List/Create mix — from a bounded load generator (fixed request count, 60 s cap per phase);
//! 2. memory for 100,000 PATs (resident set growth) and the size and save time of the persisted state.
//!
//! Load generator and emulator share the machine's cores (2 on the development machine).

use patrol_emulator::seed::{Seed, SeedPat};
use patrol_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVOPS: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const CONNECTIONS: usize = 32;
const REQUESTS_PER_PHASE: usize = 60_000;
const PHASE_CAP: Duration = Duration::from_secs(60);

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// One keep-alive connection sending pre-built requests and reading whole responses.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, buf: Vec::with_capacity(64 * 1024) }
    }

    /// Sends one request, returns the status code.
    async fn send(&mut self, req: &[u8]) -> u16 {
        self.stream.write_all(req).await.unwrap();
        self.buf.clear();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let n = self.stream.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&tmp[..n]);
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).unwrap().to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut tmp).await.unwrap();
                    assert!(n > 0, "connection closed mid-body");
                    self.buf.extend_from_slice(&tmp[..n]);
                }
                return head[9..12].parse().unwrap();
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn request(method: &str, host: &str, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nX-TFS-FedAuthRedirect: Suppress\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs `total` requests over `CONNECTIONS` connections; `pick(i)` chooses request i. Returns req/s.
async fn phase(name: &str, addr: &str, total: usize, pick: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let next = next.clone();
        let pick = pick.clone();
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&addr).await;
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() > PHASE_CAP {
                    break;
                }
                let status = c.send(&pick(i)).await;
                assert_eq!(status, 200, "request {i} failed");
                done += 1;
            }
            done
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = done as f64 / secs;
    println!("{name:<34} {done:>7} requests in {secs:>6.2} s = {rate:>8.0} req/s");
    rate
}

async fn throughput() {
    let seed: Seed = serde_json::from_value(json!({
        "organizations": [{ "name": "fabrikam" }],
        "users": (0..64).map(|i| json!({ "upn": format!("u{i}@fabrikam.test"), "organizations": ["fabrikam"] })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let emu =
        Emulator::start(EmulatorConfig { seed: Some(seed), secrets_capacity: 0, ..Default::default() }).await.unwrap();
    let base = emu.endpoints().devops.clone();
    let addr = base.trim_start_matches("http://").to_string();
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    let valid_to = patrol_emulator::wire::format_time(emu.clock().now() + time::Duration::days(30));
    for i in 0..64 {
        let v: Value = http
            .post(format!("{}/_control/tokens", emu.endpoints().control))
            .json(&json!({ "upn": format!("u{i}@fabrikam.test"), "scope": format!("{DEVOPS}/vso.pats_manage") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = v["access_token"].as_str().unwrap().to_string();
        for j in 0..20 {
            let c: Value = http
                .post(format!("{base}/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1"))
                .bearer_auth(&t)
                .json(&json!({ "displayName": format!("pat-{j}"), "scope": "vso.code", "validTo": valid_to }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j == 0 {
                ids.push(c["patToken"]["authorizationId"].as_str().unwrap().to_string());
            }
        }
        tokens.push(t);
    }
    let (tokens, ids) = (Arc::new(tokens), Arc::new(ids));
    let mut results = Vec::new();
    {
        let (t, ids, addr2) = (tokens.clone(), ids.clone(), addr.clone());
        let get: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            let u = i % 64;
            request(
                "GET",
                &addr2,
                &format!("/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1&authorizationId={}", ids[u]),
                &t[u],
                None,
            )
        });
        results.push(("Get", phase("PAT Get", &addr, REQUESTS_PER_PHASE, get).await));
    }
    {
        let (t, addr2) = (tokens.clone(), addr.clone());
        let list: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            request("GET", &addr2, "/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1&$top=20", &t[i % 64], None)
        });
        results.push(("List", phase("PAT List ($top=20 of 20)", &addr, REQUESTS_PER_PHASE, list).await));
    }
    {
        let (t, ids, addr2, vt) = (tokens.clone(), ids.clone(), addr.clone(), valid_to.clone());
        let mix: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            let u = i % 64;
            match i % 10 {
                0 => {
                    let body = format!(r#"{{"displayName":"load-{i}","scope":"vso.code","validTo":"{vt}"}}"#);
                    request("POST", &addr2, "/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1", &t[u], Some(&body))
                }
                1..=3 => {
                    request("GET", &addr2, "/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1&$top=20", &t[u], None)
                }
                _ => request(
                    "GET",
                    &addr2,
                    &format!("/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1&authorizationId={}", ids[u]),
                    &t[u],
                    None,
                ),
            }
        });
        results.push(("Mix", phase("Mix 60% Get / 30% List / 10% Create", &addr, REQUESTS_PER_PHASE, mix).await));
    }
    emu.shutdown().await.unwrap();
    for (name, rate) in results {
        println!("RESULT throughput {name} {rate:.0} req/s");
    }
}

async fn memory() {
    let before = rss_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let users = 1000;
    let seed: Seed = serde_json::from_value(json!({
        "organizations": [{ "name": "fabrikam" }],
        "users": (0..users).map(|i| json!({ "upn": format!("m{i}@fabrikam.test"), "organizations": ["fabrikam"] })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let emu = Emulator::start(EmulatorConfig {
        seed: Some(seed),
        secrets_capacity: 0,
        state_path: Some(path.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let valid_to = patrol_emulator::wire::format_time(emu.clock().now() + time::Duration::days(90));
    let started = Instant::now();
    {
        let ctx = emu.context();
        let mut state = ctx.state();
        for i in 0..100_000usize {
            let p = SeedPat {
                authorization_id: None,
                owner: format!("m{}@fabrikam.test", i % users),
                organization: "fabrikam".into(),
                display_name: format!("service-connection-{i} (patrol:rotate)"),
                scope: "vso.code vso.build_execute".into(),
                valid_from: None,
                valid_to: valid_to.clone(),
                all_orgs: false,
                token: None,
                revoked: false,
            };
            patrol_emulator::seed::add_pat(ctx, &mut state, &p).unwrap();
        }
    }
    let insert = started.elapsed();
    let after = rss_bytes();
    let started = Instant::now();
    patrol_emulator::persist::save(emu.context(), &emu.keyvault().state, &path).unwrap();
    let save = started.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let loaded = patrol_emulator::persist::load(&path).unwrap().unwrap();
    let load = started.elapsed();
    assert_eq!(loaded.state.pats.len(), 100_000);
    println!(
        "100,000 PATs: inserted in {:.2} s, resident set grew {:.1} MB",
        insert.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1e6
    );
    println!(
        "state file {:.1} MB, saved in {:.2} s, loaded in {:.2} s",
        size as f64 / 1e6,
        save.as_secs_f64(),
        load.as_secs_f64()
    );
    println!("RESULT memory 100k PATs {:.1} MB", (after.saturating_sub(before)) as f64 / 1e6);
    drop(loaded);
    emu.shutdown().await.unwrap();
}

fn main() {
    // `PAT_BENCH=memory` or `PAT_BENCH=throughput` runs one part only.
    let only = std::env::var("PAT_BENCH").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if only.is_empty() || only == "memory" {
            memory().await;
        }
        if only.is_empty() || only == "throughput" {
            throughput().await;
        }
    });
}
