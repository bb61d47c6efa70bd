//! End to end: patrol's Key Vault store built from settings (`store::from_settings_with_clock`) against a
//! whole `patrol_emulator::Emulator` — client-secret credential through the emulated Entra, the vault over
//! HTTPS trusting only the ready line's CA, events delivered to a local receiver by the emulator's Event
//! Grid, and captured logs scanned for every secret involved.

use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::domain::SecretName;
use patrol::store::{NewVersion, PropertiesUpdate, StoreError};
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const APP_ID: &str = "6a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
const APP_SECRET: &str = "kvjoin-client-secret-5f4e3d2c1b";

async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/EventGridSecretChanged",
        axum::routing::post({
            let got = got.clone();
            move |body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn wait_for_event(got: &Mutex<Vec<Value>>, event_type: &str, version: &str) -> Value {
    for _ in 0..100 {
        let found = got.lock().unwrap().iter().find_map(|v| {
            let e = &v["Data"]["eventGridEvent"];
            (e["eventType"] == json!(event_type) && e["data"]["Version"] == json!(version)).then(|| e.clone())
        });
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {event_type} for {version}: {:?}", got.lock().unwrap());
}

#[tokio::test]
async fn store_from_settings_against_the_whole_emulator() {
    let logs = crate::support::captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let seed = serde_json::from_value(json!({
        "apps": [{ "clientId": APP_ID, "displayName": "patrol-kv", "kind": "servicePrincipal", "clientSecret": APP_SECRET }]
    }))
    .unwrap();
    let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..Default::default() }).await.unwrap();
    let ready: Value = serde_json::from_str(&emu.ready_line()).unwrap();
    let (target, got) = receiver().await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/_control/eventgrid", ready["control"].as_str().unwrap()))
        .json(&json!({ "target": target, "mode": "functions-host" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let state_dir = dir.path().join("state");
    let settings = Settings::from_source(&Source::from_pairs([
        ("PATROL_KEYVAULT_URL", ready["keyvault"].as_str().unwrap()),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret"),
        ("PATROL_KEYVAULT_TENANT_ID", ready["tenant"].as_str().unwrap()),
        ("PATROL_KEYVAULT_CLIENT_ID", APP_ID),
        ("PATROL_KEYVAULT_CLIENT_SECRET", APP_SECRET),
        ("PATROL_ENTRA_AUTHORITY", ready["entra"].as_str().unwrap()),
        ("PATROL_CA_CERT", ready["ca_cert"].as_str().unwrap()),
        ("PATROL_STATE_DIR", state_dir.to_str().unwrap()),
    ]))
    .unwrap();
    let store = patrol::store::from_settings_with_clock(&settings, Clock::system()).unwrap();

    let n = SecretName::parse("ado-pat-nightly-build-0f1e2d3c").unwrap();
    assert!(store.get(&n, None).await.unwrap().is_none());
    // `exp` 31 virtual days ahead: SecretNearExpiry is due after one more virtual day.
    let exp = (emu.clock().now() + time::Duration::days(31)).replace_nanosecond(0).unwrap();
    let tags = BTreeMap::from([
        (patrol::store::tags::MANAGED_BY.to_owned(), "patrol".to_owned()),
        (patrol::store::tags::AUTHORIZATION_ID.to_owned(), "3e5d3b5a-0000-4000-8000-00000000000a".to_owned()),
    ]);
    let new = NewVersion {
        content_type: Some(patrol::store::PAT_CONTENT_TYPE.into()),
        expires: Some(exp),
        tags: tags.clone(),
        ..Default::default()
    };
    let (one, two) = ("kvjoin-pat-value-one-7a6b5c4d3e2f", "kvjoin-pat-value-two-1a2b3c4d5e6f");
    let v1 = store.set(&n, &SecretString::from(one), new.clone()).await.unwrap();
    let v2 = store.set(&n, &SecretString::from(two), new).await.unwrap();
    assert_eq!((v1.version.len(), v1.expires, &v1.tags), (32, Some(exp), &tags));

    let cur = store.get(&n, None).await.unwrap().unwrap();
    assert_eq!((cur.value.expose_secret(), cur.properties.version.as_str()), (two, v2.version.as_str()));
    assert_eq!(store.get(&n, Some(&v1.version)).await.unwrap().unwrap().value.expose_secret(), one);
    let mut versions: Vec<String> = store.list_versions(&n).await.unwrap().into_iter().map(|v| v.version).collect();
    versions.sort();
    let mut expected = vec![v1.version.clone(), v2.version.clone()];
    expected.sort();
    assert_eq!(versions, expected);
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), &listed[0].tags), (n.as_str(), &tags));

    // Disable the superseded version (its PAT was revoked).
    let upd =
        store.update(&n, &v1.version, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.unwrap();
    assert!(!upd.enabled);
    assert!(matches!(store.get(&n, Some(&v1.version)).await, Err(StoreError::Disabled { .. })));

    // Events, as the Functions host would invoke the handler.
    let created = wait_for_event(&got, "Microsoft.KeyVault.SecretNewVersionCreated", &v2.version).await;
    assert_eq!(created["subject"], json!(n.as_str()));
    assert_eq!(created["data"]["VaultName"], json!("patrol-emu"));
    emu.clock().advance(time::Duration::days(1) + time::Duration::seconds(1));
    let near = wait_for_event(&got, "Microsoft.KeyVault.SecretNearExpiry", &v2.version).await;
    assert_eq!(near["data"]["EXP"], json!(exp.unix_timestamp()));

    // Nothing secret in logs or events: the values, the client secret, and every token Entra minted.
    let minted: Value = http
        .get(format!("{}/_control/secrets", ready["control"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secrets: Vec<String> = vec![one.into(), two.into(), APP_SECRET.into()];
    let minted = minted.as_array().or_else(|| minted["value"].as_array()).cloned().unwrap_or_default();
    secrets.extend(minted.iter().filter_map(|m| m.as_str().or_else(|| m["value"].as_str()).map(str::to_owned)));
    assert!(secrets.len() > 3, "the emulator minted a Key Vault access token: {minted:?}");
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("stored a new secret version"), "logging was captured");
    let events = serde_json::to_string(&*got.lock().unwrap()).unwrap();
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs");
        assert!(!events.contains(s.as_str()), "a secret reached an event");
    }
    emu.shutdown().await.unwrap();
}
