//! Throughput of patrol's Azure DevOps client through its whole stack — owner session (cached access
//! token), rate limiter, retry loop, reqwest, JSON parsing, drift check — against patrol-emulator started
//! in-process on loopback. Shows what one patrol process can drive; the emulator shares the same 2 cores,
//! so these are lower bounds for the client.
//!
//! `cargo bench --bench devops_client` (`CLIENT_BENCH_N` sets the number of calls per phase).

use patrol::auth::entra::EntraClient;
use patrol::auth::session::{SessionOptions, Sessions, store_refresh_token};
use patrol::clock::Clock;
use patrol::devops::http::build_client;
use patrol::devops::retry::RetryPolicy;
use patrol::devops::{ApiVersion, Connector, CreatePat, DisplayFilter, Endpoints, HttpConnector, PatApi};
use patrol::domain::{DisplayName, OrgName, OwnerId, Scopes};
use patrol::store::SecretStore;
use patrol::store::memory::MemoryStore;
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "5b0c3f4e-7a1d-4c8e-9f21-6d3e8a9b0c11";
const OWNER: &str = "bench@contoso.com";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("CLIENT_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ep = emu.endpoints().clone();
    let raw = reqwest::Client::new();
    let control = |path: &str| format!("{}/{}", ep.control.trim_end_matches('/'), path.trim_start_matches('/'));
    raw.post(control("/_control/seed"))
        .json(&json!({
            "organizations": [{ "name": "fabrikam" }],
            "users": [{ "upn": OWNER, "organizations": ["fabrikam"] }]
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let minted: serde_json::Value = raw
        .post(control("/_control/tokens"))
        .json(&json!({ "upn": OWNER, "clientId": CLIENT_ID, "scope": patrol::auth::PAT_SCOPES }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let clock = Clock::system();
    clock.set(emu.clock().now());
    let store = Arc::new(MemoryStore::new());
    let owner = OwnerId::parse(OWNER).unwrap();
    let rt_value = SecretString::from(minted["refresh_token"].as_str().unwrap().to_owned());
    store_refresh_token(store.as_ref(), &owner, &rt_value, "", patrol::auth::PAT_SCOPES, clock.now()).await.unwrap();

    let ca = std::path::PathBuf::from(&ep.extra["ca_cert"]);
    let http = build_client(Some(&ca), Duration::from_secs(30)).unwrap();
    let entra =
        Arc::new(EntraClient::new(http.clone(), url::Url::parse(&ep.entra).unwrap(), &ep.tenant, CLIENT_ID).unwrap());
    let store: Arc<dyn SecretStore> = store;
    let sessions = Arc::new(Sessions::new(entra, store, clock.clone(), SessionOptions::default()));
    let endpoints = Endpoints {
        devops: url::Url::parse(&ep.devops).unwrap(),
        audit: url::Url::parse(&ep.audit).unwrap(),
        api_version: ApiVersion::Auto,
    };
    let connector = HttpConnector::new(http, clock.clone(), RetryPolicy::default(), endpoints, sessions);
    let api: Arc<dyn PatApi> = connector.pats(&owner, &OrgName::parse("fabrikam").unwrap());

    let request = |i: usize| CreatePat {
        display_name: DisplayName::parse(&format!("bench-{i}")).unwrap(),
        scopes: Scopes::parse("vso.code").unwrap(),
        valid_to: clock.now() + time::Duration::days(7),
        all_orgs: false,
    };
    for i in 0..10 {
        api.create(&request(i)).await.unwrap();
    }
    for _ in 0..50 {
        api.list(DisplayFilter::Active).await.unwrap();
    }

    println!("patrol devops client against in-process patrol-emulator (2 worker threads, loopback HTTP)");
    let t = Instant::now();
    for _ in 0..n {
        api.list(DisplayFilter::Active).await.unwrap();
    }
    report("List (10 PATs, one page), sequential", n, t.elapsed());

    let t = Instant::now();
    let per = n / 8;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    api.list(DisplayFilter::Active).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report("List, 8 concurrent callers", per * 8, t.elapsed());

    let pairs = n / 4;
    let t = Instant::now();
    for i in 0..pairs {
        let created = api.create(&request(1000 + i)).await.unwrap();
        api.revoke(created.pat.authorization_id).await.unwrap();
    }
    report("Create + Revoke, sequential (calls)", pairs * 2, t.elapsed());
    emu.shutdown().await.unwrap();
}

fn report(what: &str, calls: usize, took: Duration) {
    let rps = calls as f64 / took.as_secs_f64();
    let us = took.as_secs_f64() * 1e6 / calls as f64;
    println!("{what}: {calls} calls in {:.2}s = {rps:.0} calls/s ({us:.0} µs/call)", took.as_secs_f64());
}
