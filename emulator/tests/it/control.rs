//! Control API, faults, rate limiting, persistence and the binary's ready line.

use crate::support::*;
use patrol_emulator::EmulatorConfig;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn committed_but_response_lost_creates_the_pat() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    env.post_ctl(
        "/_control/faults/once",
        json!({ "kind": "loseResponse", "service": "devops", "method": "POST", "pathContains": "/tokens/pats" }),
    )
    .await;
    let r = env
        .pat_api(Method::POST, "fabrikam", "api-version=7.2-preview.1", &t)
        .json(&json!({ "displayName": "lost", "scope": "vso.code", "validTo": in_days(&env, 30) }))
        .send()
        .await;
    let err = r.expect_err("the connection must drop without a response");
    assert!(!err.is_timeout());
    let listed: Value = env
        .pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["patTokens"][0]["displayName"], "lost", "the operation was committed: {listed}");
    let stats = env.ctl(Method::GET, "/_control/stats", Value::Null).await.1;
    assert_eq!(stats["responsesLost"], 1);
}

#[tokio::test]
async fn status_faults_throttle_bursts_and_fail_rate() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    env.post_ctl("/_control/faults/once", json!({ "kind": "status", "status": 500, "count": 2 })).await;
    for _ in 0..2 {
        let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    env.post_ctl("/_control/faults/once", json!({ "kind": "throttle", "retryAfterSecs": 7 })).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    env.put_ctl("/_control/faults", json!({ "failRate": 1.0, "services": ["entra"] })).await;
    let tenant = env.emu.endpoints().tenant.clone();
    let r = env
        .http
        .post(env.entra(&format!("/{tenant}/oauth2/v2.0/token")))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
    assert_eq!(r.status(), 200, "the fail rate targets entra only");
    env.put_ctl("/_control/faults", json!({ "latencyMs": 150 })).await;
    let started = std::time::Instant::now();
    env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    let (s, _) = env.ctl(Method::PUT, "/_control/faults", json!({ "failRate": 2.0 })).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn rate_limit_headers_delay_and_429() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    env.put_ctl(
        "/_control/ratelimit",
        json!({ "enabled": true, "limitTstu": 5, "blockTstu": 7, "delayMsPerTstu": 20 }),
    )
    .await;
    let mut statuses = Vec::new();
    let mut last_headers = None;
    for i in 0..8 {
        let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
        statuses.push(r.status().as_u16());
        last_headers = Some(r.headers().clone());
        if r.status() == 200 {
            assert_eq!(r.headers()["x-ratelimit-limit"], "5");
            assert!(r.headers().contains_key("x-ratelimit-reset"));
            // Retry-After appears on a 200 once usage reaches 80 % of the limit (4 of 5).
            assert_eq!(r.headers().contains_key("retry-after"), i >= 3, "request {i}");
        }
        if i == 5 || i == 6 {
            assert!(r.headers().contains_key("x-ratelimit-delay"), "request {i} is delayed");
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 200, 429]);
    let h = last_headers.unwrap();
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["x-ratelimit-remaining"], "0");
    // Another identity has its own budget.
    let bob = env.pats_token(BOB).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &bob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "4");
    // The window slides on the virtual clock.
    env.advance(301).await;
    let t = env.pats_token(ALICE).await;
    let r = env.pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// `--state-read-only`: the saved world is loaded (its PATs and refresh tokens work) but never written —
/// not after changes, not at shutdown — so every start begins from the same world.
#[tokio::test]
async fn a_read_only_state_is_loaded_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = EmulatorConfig { seed: Some(seed()), state_path: Some(path.clone()), ..Default::default() };
    let env = start_with(config.clone()).await;
    let t = env.pats_token(ALICE).await;
    env.create_pat(&t, "fabrikam", "saved", "vso.project", 3).await;
    env.emu.shutdown().await.unwrap();
    let saved = std::fs::read(&path).unwrap();

    let env = start_with(EmulatorConfig { state_read_only: true, ..config }).await;
    let t = env.pats_token(ALICE).await;
    env.create_pat(&t, "fabrikam", "not saved", "vso.project", 3).await;
    let listed: Value = env
        .pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["patTokens"].as_array().unwrap().len(), 2, "the saved PAT was loaded");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // past the save debounce
    env.emu.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), saved, "the state file was not written");
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = EmulatorConfig { seed: Some(seed()), state_path: Some(path.clone()), ..Default::default() };
    let env = start_with(config.clone()).await;
    let t = env.pats_token(ALICE).await;
    let c = env.create_pat(&t, "fabrikam", "persisted", "vso.project", 3).await;
    let secret = c["patToken"]["token"].as_str().unwrap().to_string();
    let rt = env
        .post_ctl(
            "/_control/tokens",
            json!({ "upn": ALICE, "scope": format!("{DEVOPS}/vso.pats offline_access"), "clientId": CLIENT }),
        )
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    env.emu.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&secret), "the state file holds only hashes of PATs");
    assert!(!text.contains(&rt), "…and of refresh tokens");

    let env = start_with(config).await;
    let t = env.pats_token(ALICE).await;
    let listed: Value = env
        .pat_api(Method::GET, "fabrikam", "api-version=7.2-preview.1", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["patTokens"].as_array().unwrap().len(), 1, "seed not applied twice, PAT kept");
    let r = env.http.get(env.devops("/fabrikam/_apis/projects")).basic_auth("", Some(&secret)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the PAT still authenticates");
    let tenant = env.emu.endpoints().tenant.clone();
    let r = env
        .http
        .post(env.entra(&format!("/{tenant}/oauth2/v2.0/token")))
        .form(&[("grant_type", "refresh_token"), ("client_id", CLIENT), ("refresh_token", rt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "refresh tokens survive a restart");
}

#[tokio::test]
async fn control_api_validates_and_lists_minted_secrets() {
    let env = start().await;
    let (s, e) =
        env.ctl(Method::POST, "/_control/users", json!({ "upn": "x@y.test", "organizations": ["nope"] })).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("nope"));
    let (s, _) = env.ctl(Method::POST, "/_control/clock/advance", json!({ "seconds": -5 })).await;
    assert_eq!(s, 400);
    let (s, _) =
        env.ctl(Method::POST, "/_control/devicecodes/approve", json!({ "userCode": "NOPE", "upn": ALICE })).await;
    assert_eq!(s, 404);
    let before = env.ctl(Method::GET, "/_control/clock", Value::Null).await.1;
    env.post_ctl("/_control/clock/set", json!({ "time": "2099-01-01T00:00:00Z" })).await;
    let after = env.ctl(Method::GET, "/_control/clock", Value::Null).await.1;
    assert_ne!(before, after);
    assert!(after["now"].as_str().unwrap().starts_with("2099-01-01"), "{after}");
    let pat = env
        .post_ctl("/_control/pats", json!({ "owner": ALICE, "organization": "fabrikam", "displayName": "seeded", "scope": "vso.code", "validTo": "2099-02-01T00:00:00Z" }))
        .await;
    let token = pat["token"].as_str().unwrap();
    let secrets = env.ctl(Method::GET, "/_control/secrets", Value::Null).await.1;
    let values: Vec<&str> = secrets["value"].as_array().unwrap().iter().map(|s| s["value"].as_str().unwrap()).collect();
    assert!(values.contains(&token));
    assert!(values.contains(&APP_SECRET));
}

#[tokio::test]
async fn binary_prints_one_ready_line_and_never_logs_secrets() {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, serde_json::to_vec(&seed()).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_patrol-emulator"))
        .args(["--seed", seed_path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("PATROL_EMULATOR_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    for k in ["devops", "audit", "control"] {
        assert!(ready[k].as_str().unwrap().starts_with("http://127.0.0.1:"), "{k}");
    }
    assert!(ready["entra"].as_str().unwrap().starts_with("https://127.0.0.1:"), "Entra is served over TLS");
    let ca = std::fs::read(ready["ca_cert"].as_str().unwrap()).unwrap();
    let http =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]).build().unwrap();
    let control = ready["control"].as_str().unwrap();
    let tok: Value = http
        .post(format!("{control}/_control/tokens"))
        .json(&json!({ "upn": ALICE, "scope": format!("{DEVOPS}/vso.pats_manage offline_access") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = tok["access_token"].as_str().unwrap();
    let created: Value = http
        .post(format!("{}/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1", ready["devops"].as_str().unwrap()))
        .bearer_auth(at)
        .json(&json!({ "displayName": "bin", "scope": "vso.code", "validTo": patrol_emulator::wire::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(30)) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pat = created["patToken"]["token"].as_str().unwrap_or_else(|| panic!("{created}")).to_string();
    send_sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown on SIGTERM");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.trim().is_empty(), "exactly one line on stdout, got more: {rest}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("ready"));
    for secret in [pat.as_str(), at, tok["refresh_token"].as_str().unwrap(), APP_SECRET] {
        assert!(!stderr.contains(secret), "a secret leaked into the logs");
    }
}

pub(crate) fn send_sigterm(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

fn in_days(env: &Env, days: i64) -> String {
    patrol_emulator::wire::format_time(env.emu.clock().now() + time::Duration::days(days))
}

#[tokio::test]
async fn a_large_seed_goes_through_the_control_api() {
    let env = start().await;
    let valid_to = in_days(&env, 30);
    let pats: Vec<Value> = (0..12_000)
        .map(|i| json!({ "owner": BOB, "organization": "fabrikam", "displayName": format!("bulk-{i}-{}", "x".repeat(100)), "scope": "vso.code", "validTo": valid_to }))
        .collect();
    let body = json!({ "pats": pats });
    assert!(body.to_string().len() > 2 << 20, "bigger than axum's default limit");
    let minted = env.post_ctl("/_control/seed", body).await;
    assert_eq!(minted["pats"].as_array().unwrap().len(), 12_000);
    let stats = env.ctl(Method::GET, "/_control/stats", Value::Null).await.1;
    assert_eq!(stats["pats"], 12_000);
}
