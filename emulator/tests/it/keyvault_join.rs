//! Key Vault + Event Grid joined into `Emulator::start`: the ready line names the vault and its CA, the
//! vault accepts tokens the emulated Entra issues (client credentials), shares the virtual clock, and the
//! control API sets delivery and faults and lists version ids (never values); the binary's flags.

use crate::support::{APP_ID, APP_SECRET, seed, start_with};
use patrol_emulator::EmulatorConfig;
use patrol_emulator::eventgrid::{DeliveryConfig, DeliveryMode};
use patrol_emulator::server::KeyVaultConfig;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const API: &str = "api-version=2026-04-01";

fn vault_client(ca_pem_path: &str) -> reqwest::Client {
    let pem = std::fs::read(ca_pem_path).unwrap();
    reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap()
}

/// Client credentials for Key Vault from the emulated Entra, as the SDK asks for them.
pub(crate) async fn vault_token(http: &reqwest::Client, entra: &str, tenant: &str) -> String {
    let r = http
        .post(format!("{entra}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let app = axum::Router::new().fallback({
        let got = got.clone();
        move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap();
                // A webhook performs Event Grid's subscription validation handshake.
                if v[0]["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent" {
                    return axum::Json(json!({ "validationResponse": v[0]["data"]["validationCode"] }));
                }
                got.lock().unwrap().push((uri.path().to_owned(), v));
                axum::Json(Value::Null)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn wait_until(got: &Mutex<Vec<(String, Value)>>, what: &str, pred: impl Fn(&[(String, Value)]) -> bool) {
    for _ in 0..100 {
        if pred(&got.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}: got {:?}", got.lock().unwrap());
}

fn event_types(got: &[(String, Value)]) -> Vec<String> {
    got.iter().map(|(_, v)| v["Data"]["eventGridEvent"]["eventType"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn vault_joins_the_emulator_with_entra_tokens_clock_and_event_delivery() {
    let env = start_with(EmulatorConfig { seed: Some(seed()), ..Default::default() }).await;
    let ready: Value = serde_json::from_str(&env.emu.ready_line()).unwrap();
    let vault = ready["keyvault"].as_str().unwrap().to_owned();
    let ca = ready["ca_cert"].as_str().unwrap().to_owned();
    assert!(vault.starts_with("https://127.0.0.1:") && vault.ends_with('/'), "{vault}");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let kv = vault_client(&ca);

    // The bearer challenge names the emulated Entra and tenant.
    let r = kv.get(format!("{vault}secrets?{API}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let authority = format!("{}/{}", ready["entra"].as_str().unwrap(), ready["tenant"].as_str().unwrap());
    assert!(challenge.contains(&format!("authorization=\"{authority}\"")), "{challenge}");

    // Deliveries as the Functions host invokes the handler, configured at run time.
    let (target, got) = receiver().await;
    let (s, v) = env
        .ctl(reqwest::Method::PUT, "/_control/eventgrid", json!({ "target": target, "mode": "functions-host" }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["topic"].as_str().unwrap().ends_with("/providers/Microsoft.KeyVault/vaults/patrol-emu"), "{v}");

    let token = vault_token(&env.http, ready["entra"].as_str().unwrap(), ready["tenant"].as_str().unwrap()).await;
    let exp = env.emu.clock().now().unix_timestamp() + 31 * 86_400;
    let value = "kvjoin-secret-value-0123456789";
    let r = kv
        .put(format!("{vault}secrets/pat-demo?{API}"))
        .bearer_auth(&token)
        .json(&json!({ "value": value, "attributes": { "exp": exp } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Value = r.json().await.unwrap();
    let version = set["id"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    assert_eq!(version.len(), 32);
    wait_until(&got, "SecretNewVersionCreated", |g| event_types(g).iter().any(|t| t.ends_with("NewVersionCreated")))
        .await;
    {
        let g = got.lock().unwrap();
        assert_eq!(g[0].0, "/EventGridSecretChanged");
        assert_eq!(g[0].1["Data"]["eventGridEvent"]["data"]["Version"], json!(version));
    }

    // The vault shares the emulator's virtual clock: two days on, the version is 29 days from `exp`.
    env.advance(2 * 86_400).await;
    wait_until(&got, "SecretNearExpiry", |g| event_types(g).iter().any(|t| t.ends_with("SecretNearExpiry"))).await;

    // Version ids only, never values.
    let (s, listed) = env.ctl(reqwest::Method::GET, "/_control/keyvault/secrets", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(listed["value"][0]["name"], json!("pat-demo"));
    assert_eq!(listed["value"][0]["versions"][0]["id"], json!(version));
    assert!(!listed.to_string().contains(value), "control API exposed a secret value");
    let (_, events) = env.ctl(reqwest::Method::GET, "/_control/eventgrid/events", Value::Null).await;
    assert!(events["count"].as_u64().unwrap() >= 2);
    assert!(!events.to_string().contains(value));
    let (_, info) = env.ctl(reqwest::Method::GET, "/_control/keyvault", Value::Null).await;
    assert_eq!(info["caCert"], json!(ca));

    env.emu.shutdown().await.unwrap();
    assert!(!std::path::Path::new(&ca).exists(), "the temporary CA directory is removed at shutdown");
}

#[tokio::test]
async fn control_api_sets_faults_and_refuses_unsafe_delivery() {
    let env = start_with(EmulatorConfig { seed: Some(seed()), ..Default::default() }).await;
    let ready: Value = serde_json::from_str(&env.emu.ready_line()).unwrap();
    let vault = ready["keyvault"].as_str().unwrap();
    let kv = vault_client(ready["ca_cert"].as_str().unwrap());
    let token = vault_token(&env.http, ready["entra"].as_str().unwrap(), ready["tenant"].as_str().unwrap()).await;

    let f = env.put_ctl("/_control/keyvault/faults", json!({ "throttleNext": 1, "retryAfterSecs": 7 })).await;
    assert_eq!(f["throttleNext"], json!(1));
    let r = kv.get(format!("{vault}secrets?{API}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = kv.get(format!("{vault}secrets?{API}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    env.put_ctl("/_control/keyvault/faults", json!({ "forbiddenPrincipals": [APP_ID] })).await;
    let r = kv.get(format!("{vault}secrets?{API}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let (s, _) = env.ctl(reqwest::Method::DELETE, "/_control/keyvault/faults", Value::Null).await;
    assert_eq!(s, 200);
    let r = kv.get(format!("{vault}secrets?{API}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    for (body, why) in [
        (json!({ "target": "http://example.com/hook" }), "loopback"),
        (json!({ "target": "ftp://127.0.0.1/x" }), "http or https"),
        (json!({ "target": "http://127.0.0.1:1/", "duplicates": 1000 }), "duplicates"),
        (json!({ "target": "http://127.0.0.1:1/", "maxAttempts": 0 }), "maxAttempts"),
        (json!({ "mode": "smoke-signals" }), "invalid JSON"),
    ] {
        let (s, v) = env.ctl(reqwest::Method::PUT, "/_control/eventgrid", body.clone()).await;
        assert_eq!(s, 400, "{body}");
        assert!(v["error"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    let (s, _) = env.ctl(reqwest::Method::PUT, "/_control/keyvault/faults", json!({ "retryAfterSecs": 999_999 })).await;
    assert_eq!(s, 400);
    env.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn config_delivers_raw_event_grid_arrays_with_duplicates_to_a_fixed_ca_path() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (target, got) = receiver().await;
    let env = start_with(EmulatorConfig {
        seed: Some(seed()),
        keyvault: KeyVaultConfig {
            vault_name: "fabrikam-kv".into(),
            ca_cert_path: Some(ca.clone()),
            delivery: DeliveryConfig {
                target: Some(format!("{target}/hook")),
                mode: DeliveryMode::EventGridSchema,
                duplicates: 1,
                ..DeliveryConfig::default()
            },
            ..KeyVaultConfig::default()
        },
        ..Default::default()
    })
    .await;
    let ready: Value = serde_json::from_str(&env.emu.ready_line()).unwrap();
    assert_eq!(ready["ca_cert"], json!(ca.to_str().unwrap()));
    let vault = ready["keyvault"].as_str().unwrap();
    let kv = vault_client(ca.to_str().unwrap());
    let token = vault_token(&env.http, ready["entra"].as_str().unwrap(), ready["tenant"].as_str().unwrap()).await;
    let r = kv
        .put(format!("{vault}secrets/a?{API}"))
        .bearer_auth(&token)
        .json(&json!({ "value": "v-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(&got, "two copies", |g| g.len() >= 2).await;
    let g = got.lock().unwrap().clone();
    assert!(g.iter().all(|(p, v)| p == "/hook" && v.is_array()));
    assert_eq!(g[0].1[0]["id"], g[1].1[0]["id"], "a duplicate keeps the event id");
    assert_eq!(g[0].1[0]["data"]["VaultName"], json!("fabrikam-kv"));
    assert!(g[0].1[0]["topic"].as_str().unwrap().ends_with("/vaults/fabrikam-kv"));
    env.emu.shutdown().await.unwrap();
    assert!(ca.exists(), "a configured CA path is left in place");
}

#[tokio::test]
async fn start_refuses_bad_vault_names_and_non_loopback_targets() {
    for (kv, why) in [
        (KeyVaultConfig { vault_name: "x".into(), ..KeyVaultConfig::default() }, "vault name"),
        (
            KeyVaultConfig {
                delivery: DeliveryConfig { target: Some("http://10.0.0.1/".into()), ..DeliveryConfig::default() },
                ..KeyVaultConfig::default()
            },
            "loopback",
        ),
    ] {
        let err = patrol_emulator::Emulator::start(EmulatorConfig { keyvault: kv, ..Default::default() })
            .await
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains(why), "{err:#}");
    }
}

#[tokio::test]
async fn binary_flags_configure_the_vault_and_delivery() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, serde_json::to_vec(&seed()).unwrap()).unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_patrol-emulator"))
        .args(["--seed", seed_path.to_str().unwrap(), "--ca-cert", ca.to_str().unwrap()])
        .args(["--vault-name", "flag-vault", "--eventgrid-target", "http://127.0.0.1:9/", "--eventgrid-mode"])
        .args(["cloudevents", "--eventgrid-duplicates", "2", "--eventgrid-reorder", "--keyvault-throttle-next"])
        .args(["3", "--keyvault-empty-pages", "--keyvault-forbid", "someone@fabrikam.test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(ready["ca_cert"], json!(ca.to_str().unwrap()));
    assert!(ready["keyvault"].as_str().unwrap().starts_with("https://127.0.0.1:"));
    let control = ready["control"].as_str().unwrap();
    let http = reqwest::Client::new();
    let get = |p: &'static str| {
        let http = http.clone();
        let url = format!("{control}{p}");
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let d = get("/_control/eventgrid").await;
    assert_eq!(
        (d["mode"].as_str(), d["duplicates"].as_u64(), d["reorder"].as_bool()),
        (Some("cloud-events"), Some(2), Some(true))
    );
    assert_eq!(d["target"], json!("http://127.0.0.1:9/"));
    let f = get("/_control/keyvault/faults").await;
    assert_eq!((f["throttleNext"].as_u64(), f["emptyPages"].as_bool()), (Some(3), Some(true)));
    assert_eq!(f["forbiddenPrincipals"], json!(["someone@fabrikam.test"]));
    assert_eq!(get("/_control/keyvault").await["vaultName"], json!("flag-vault"));
    child.kill().unwrap();
    let _ = child.wait();
}
