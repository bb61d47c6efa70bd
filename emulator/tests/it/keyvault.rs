//! The Key Vault emulator over real HTTPS: the bearer challenge, conformance of every response with the
//! `secrets.json` (2026-04-01) schemas and examples, errors, and Event Grid delivery on the virtual clock.

use patrol_emulator::clock::VirtualClock;
use patrol_emulator::eventgrid::{DeliveryConfig, DeliveryMode, EventGrid};
use patrol_emulator::keyvault::{Faults, KeyVaultOptions, KeyVaultServer};
use patrol_emulator::tokens::{Grant, KEYVAULT_RESOURCE, Subject, TokenIssuer};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const API: &str = "api-version=2026-04-01";

struct Env {
    kv: KeyVaultServer,
    events: EventGrid,
    clock: VirtualClock,
    http: reqwest::Client,
    token: String,
}

async fn start() -> Env {
    let clock = VirtualClock::new();
    let issuer = TokenIssuer::new(clock.clone());
    let (events, sink) = EventGrid::start(clock.clone(), DeliveryConfig::default());
    let kv = KeyVaultServer::start(KeyVaultOptions::default(), clock.clone(), issuer.clone(), sink).await.unwrap();
    kv.set_faults(Faults { async_delay_ms: 100, ..Default::default() });
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(kv.ca_cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let token = issuer.issue(Grant {
        subject: Subject::App { client_id: "conformance".into() },
        resource: KEYVAULT_RESOURCE.into(),
        scopes: vec![".default".into()],
        expires_at: clock.now() + time::Duration::days(400),
    });
    Env { kv, events, clock, http, token }
}

impl Env {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{}{sep}{API}", self.kv.url, path.trim_start_matches('/'));
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let rsp = rb.send().await.unwrap();
        let status = rsp.status().as_u16();
        let text = rsp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
}

/// A file of Microsoft's Key Vault secrets spec (`../shared/specs`, or `PATROL_SPECS_DIR`).
fn load(path: &str) -> Value {
    patrol_emulator::specs::spec_json(&format!("keyvault/secrets/stable/2026-04-01/{path}"))
}

/// Validates `instance` against a definition of secrets.json, with `additionalProperties: false` added to
/// every object definition so a field the spec does not define fails too.
fn assert_conforms(definition: &str, instance: &Value) {
    let spec = load("secrets.json");
    let mut defs = spec["definitions"].clone();
    for (_, d) in defs.as_object_mut().unwrap() {
        if d.get("properties").is_some() {
            d["additionalProperties"] = json!(false);
        }
    }
    let schema = json!({ "$ref": format!("#/definitions/{definition}"), "definitions": defs });
    let validator = jsonschema::draft4::new(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{definition} does not conform: {errors:?}\n{instance:#}");
}

/// Every key the spec example's response has (at the top level and in `attributes`) is in ours.
fn assert_like_example(example: &str, ours: &Value) {
    let ex = load(&format!("examples/{example}"));
    let body = &ex["responses"]["200"]["body"];
    for k in body.as_object().unwrap().keys() {
        if ["kid", "managed", "contentType", "tags", "nextLink"].contains(&k.as_str()) {
            continue; // certificate-backed only, optional input echoed back, or only on non-final pages
        }
        assert!(ours.get(k).is_some(), "{example}: our response lacks {k:?}: {ours:#}");
    }
    if let Some(attrs) = body["attributes"].as_object() {
        for k in attrs.keys().filter(|k| !["nbf", "exp"].contains(&k.as_str())) {
            assert!(ours["attributes"].get(k).is_some(), "{example}: attributes lack {k:?}");
        }
    }
}

#[tokio::test]
async fn unauthenticated_requests_get_the_bearer_challenge() {
    let env = start().await;
    let rsp = env.http.put(format!("{}secrets/x?{API}", env.kv.url)).send().await.unwrap();
    assert_eq!(rsp.status(), 401);
    let challenge = rsp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer authorization=\"https://login.microsoftonline.com/"), "{challenge}");
    assert!(challenge.contains("resource=\"https://vault.azure.net\""), "{challenge}");
    let body: Value = rsp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("AKV10000"));
    assert_conforms("KeyVaultError", &body);
    let rsp = env.http.get(format!("{}secrets?{API}", env.kv.url)).bearer_auth("forged").send().await.unwrap();
    assert_eq!(rsp.status(), 401);
    assert!(rsp.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn responses_conform_to_the_spec() {
    use reqwest::Method;
    let env = start().await;
    let set_body = json!({"value": "s3cr3t", "contentType": "text/plain", "tags": {"managed-by": "patrol"},
                          "attributes": {"enabled": true, "exp": 1893484800, "nbf": 1262332800}});
    let (s, v1) = env.call(Method::PUT, "secrets/conf", Some(set_body.clone())).await;
    assert_eq!(s, 200, "{v1}");
    assert_conforms("SecretBundle", &v1);
    assert_like_example("SetSecret-example.json", &v1);
    let ver1 = v1["id"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    assert_eq!(ver1.len(), 32);
    assert!(ver1.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, v2) = env.call(Method::PUT, "secrets/conf", Some(json!({"value": "two"}))).await;

    let (s, latest) = env.call(Method::GET, "secrets/conf/", None).await;
    assert_eq!((s, &latest["value"]), (200, &json!("two")), "trailing-slash latest form");
    assert_eq!(latest["id"], v2["id"]);
    assert_conforms("SecretBundle", &latest);
    assert_like_example("GetSecret-example.json", &latest);
    let (_, by_version) = env.call(Method::GET, &format!("secrets/conf/{ver1}"), None).await;
    assert_eq!(by_version["value"], "s3cr3t");

    let (s, upd) =
        env.call(Method::PATCH, &format!("secrets/conf/{ver1}"), Some(json!({"attributes": {"enabled": false}}))).await;
    assert_eq!(s, 200);
    assert!(upd.get("value").is_none());
    assert_conforms("SecretBundle", &upd);
    assert_like_example("UpdateSecret-example.json", &upd);
    let (s, disabled) = env.call(Method::GET, &format!("secrets/conf/{ver1}"), None).await;
    assert_eq!(s, 403);
    assert_eq!(disabled["error"]["innererror"]["code"], "SecretDisabled");
    assert_eq!(disabled["error"]["message"], "Operation get is not allowed on a disabled secret.");

    for i in 0..3 {
        env.call(Method::PUT, &format!("secrets/page-{i}"), Some(json!({"value": "p"}))).await;
    }
    let (s, page) = env.call(Method::GET, "secrets?maxresults=1", None).await;
    assert_eq!(s, 200);
    assert_conforms("SecretListResult", &page);
    assert_like_example("GetSecrets-example.json", &page);
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    assert!(!page["value"][0]["id"].as_str().unwrap().ends_with(&ver1), "list ids carry no version");
    // Follow nextLink to the end.
    let mut seen = 1;
    let mut next = page["nextLink"].as_str().map(str::to_owned);
    while let Some(link) = next {
        assert!(link.contains("$skiptoken="), "{link}");
        let rsp: Value = env.http.get(&link).bearer_auth(&env.token).send().await.unwrap().json().await.unwrap();
        seen += rsp["value"].as_array().unwrap().len();
        next = rsp["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 4);
    let (s, bad) = env.call(Method::GET, "secrets?maxresults=26", None).await;
    assert_eq!((s, bad["error"]["code"].as_str()), (400, Some("BadParameter")));

    let (s, versions) = env.call(Method::GET, "secrets/conf/versions", None).await;
    assert_eq!(s, 200);
    assert_conforms("SecretListResult", &versions);
    assert_like_example("GetSecretVersions-example.json", &versions);
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);

    let (s, backup) = env.call(Method::POST, "secrets/conf/backup", None).await;
    assert_eq!(s, 200);
    assert_conforms("BackupSecretResult", &backup);

    let (s, deleted) = env.call(Method::DELETE, "secrets/conf", None).await;
    assert_eq!(s, 200);
    assert_conforms("DeletedSecretBundle", &deleted);
    assert_like_example("DeleteSecret-example.json", &deleted);
    // The delete finishes asynchronously.
    let (s, _) = env.call(Method::GET, "deletedsecrets/conf", None).await;
    assert_eq!(s, 404);
    let (s, busy) = env.call(Method::PUT, "secrets/conf", Some(json!({"value": "x"}))).await;
    assert_eq!((s, busy["error"]["message"].as_str()), (409, Some("Secret conf is currently being deleted.")));
    env.clock.advance(time::Duration::seconds(1));
    let (s, got) = env.call(Method::GET, "deletedsecrets/conf", None).await;
    assert_eq!(s, 200);
    assert_conforms("DeletedSecretBundle", &got);
    assert_like_example("GetDeletedSecret-example.json", &got);
    let (s, list) = env.call(Method::GET, "deletedsecrets", None).await;
    assert_eq!(s, 200);
    assert_conforms("DeletedSecretListResult", &list);
    assert_like_example("GetDeletedSecrets-example.json", &list);
    let (s, conflict) = env.call(Method::PUT, "secrets/conf", Some(json!({"value": "x"}))).await;
    assert_eq!(s, 409);
    assert_eq!(conflict["error"]["innererror"]["code"], "ObjectIsDeletedButRecoverable");
    assert_conforms("KeyVaultError", &conflict);

    let (s, recovered) = env.call(Method::POST, "deletedsecrets/conf/recover", None).await;
    assert_eq!(s, 200);
    assert_conforms("SecretBundle", &recovered);
    assert_like_example("RecoverDeletedSecret-example.json", &recovered);
    env.clock.advance(time::Duration::seconds(1));
    assert_eq!(env.call(Method::GET, "secrets/conf/", None).await.0, 200);

    env.call(Method::DELETE, "secrets/conf", None).await;
    env.clock.advance(time::Duration::seconds(1));
    let rsp = env
        .http
        .delete(format!("{}deletedsecrets/conf?{API}", env.kv.url))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 204);
    let (s, nf) = env.call(Method::GET, "secrets/conf/", None).await;
    assert_eq!((s, nf["error"]["code"].as_str()), (404, Some("SecretNotFound")));
    assert_conforms("KeyVaultError", &nf);

    let (s, restored) = env.call(Method::POST, "secrets/restore", Some(backup.clone())).await;
    assert_eq!(s, 200, "{restored}");
    assert_conforms("SecretBundle", &restored);
    assert_like_example("RestoreSecret-example.json", &restored);
    assert_eq!(env.call(Method::GET, "secrets/conf/versions", None).await.1["value"].as_array().unwrap().len(), 2);

    let (s, nover) = env.call(Method::GET, "secrets", None).await;
    assert_eq!(s, 200);
    assert_conforms("SecretListResult", &nover);
    let missing = env.http.get(format!("{}secrets", env.kv.url)).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(missing.status(), 400);
}

#[tokio::test]
async fn throttling_fault_answers_429_with_retry_after() {
    let env = start().await;
    env.kv.set_faults(Faults { throttle_next: 1, retry_after_secs: 3, ..Default::default() });
    let rsp = env.http.get(format!("{}secrets?{API}", env.kv.url)).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(rsp.status(), 429);
    assert_eq!(rsp.headers()["retry-after"], "3");
    let body: Value = rsp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Throttled");
    assert_eq!(env.call(reqwest::Method::GET, "secrets", None).await.0, 200);
}

/// A subscriber that records what it receives and fails the first `fail_first` deliveries with 500.
async fn subscriber(fail_first: u32) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(fail_first));
    let app = axum::Router::new().fallback({
        let got = got.clone();
        move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let got = got.clone();
            let failures = failures.clone();
            async move {
                if failures.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    failures.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                got.lock().unwrap().push((uri.path().to_owned(), serde_json::from_slice(&body).unwrap()));
                axum::http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn wait_for(got: &Mutex<Vec<(String, Value)>>, n: usize) {
    for _ in 0..100 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("expected {n} deliveries, got {}", got.lock().unwrap().len());
}

#[tokio::test]
async fn events_reach_the_custom_handler_with_retries_and_duplicates() {
    let env = start().await;
    let (url, got) = subscriber(1).await;
    env.events.set_config(DeliveryConfig {
        target: Some(url),
        mode: DeliveryMode::FunctionsHost,
        duplicates: 1,
        retry: patrol_emulator::eventgrid::RetryPolicy::Fast,
        retry_delays_ms: vec![20],
        topic: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/patrol-emu".into(),
        ..Default::default()
    });
    let exp = (env.clock.now() + time::Duration::days(40)).unix_timestamp();
    let (_, v) = env
        .call(reqwest::Method::PUT, "secrets/rotating", Some(json!({"value": "x", "attributes": {"exp": exp}})))
        .await;
    let version = v["id"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    wait_for(&got, 2).await;
    {
        let got = got.lock().unwrap();
        let (path, body) = &got[0];
        assert_eq!(path, "/EventGridSecretChanged");
        let ev = &body["Data"]["eventGridEvent"];
        assert_eq!(ev["eventType"], "Microsoft.KeyVault.SecretNewVersionCreated");
        assert_eq!(ev["subject"], "rotating");
        assert_eq!(ev["data"]["Version"], version.as_str());
        assert_eq!(ev["data"]["EXP"], exp);
        assert_eq!(body["Metadata"]["data"], ev["data"]);
        assert_eq!(body["Metadata"]["sys"]["MethodName"], "EventGridSecretChanged");
        assert_eq!(got[1].1["Data"]["eventGridEvent"]["id"], ev["id"], "duplicate keeps the event id");
    }
    let attempts = env.events.deliveries();
    assert!(attempts.iter().any(|d| d.status == Some(500)), "the failed attempt was retried: {attempts:?}");

    // 30 days before exp: SecretNearExpiry; at exp: SecretExpired — on the virtual clock, once each.
    env.events.set_config(DeliveryConfig { duplicates: 0, ..env.events.config() });
    env.clock.advance(time::Duration::days(11));
    env.kv.evaluate_expiry();
    wait_for(&got, 3).await;
    env.kv.evaluate_expiry();
    env.clock.advance(time::Duration::days(30));
    env.kv.evaluate_expiry();
    wait_for(&got, 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let types: Vec<String> = got.lock().unwrap()[2..]
        .iter()
        .map(|(_, b)| b["Data"]["eventGridEvent"]["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"]);
}

#[tokio::test]
async fn raw_event_grid_webhook_arrays() {
    let env = start().await;
    let (url, got) = crate::eventgrid::handshaking_subscriber().await;
    env.events.set_config(DeliveryConfig {
        target: Some(format!("{url}/api/events")),
        mode: DeliveryMode::EventGridSchema,
        ..Default::default()
    });
    env.call(reqwest::Method::PUT, "secrets/hook", Some(json!({"value": "x"}))).await;
    wait_for(&got, 1).await;
    let (path, body) = got.lock().unwrap()[0].clone();
    assert_eq!(path, "/api/events");
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    let sample =
        patrol_emulator::specs::spec_json("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&arr[0]), keys(&sample));
    assert_eq!(keys(&arr[0]["data"]), keys(&sample["data"]));
    assert_eq!(arr[0]["data"]["EXP"], Value::Null);
}
