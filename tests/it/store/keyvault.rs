//! patrol's Key Vault store through the official SDK against patrol-emulator's Key Vault over TLS (CA
//! generated at start, bearer challenge, real HTTP on 127.0.0.1).

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use patrol::domain::SecretName;
use patrol::store::{KeyVaultSecretStore, NewVersion, PropertiesUpdate, SecretStore, StoreError};
use patrol_emulator::clock::VirtualClock;
use patrol_emulator::eventgrid::{DeliveryConfig, EventGrid};
use patrol_emulator::keyvault::{Faults, KeyVaultOptions, KeyVaultServer};
use patrol_emulator::tokens::{Grant, KEYVAULT_RESOURCE, Subject, TokenIssuer};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Mints app tokens directly from the emulator's issuer (stands in for the Entra client-credentials
/// endpoint) and counts how often the SDK asked.
#[derive(Debug)]
struct IssuerCredential {
    issuer: TokenIssuer,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl TokenCredential for IssuerCredential {
    async fn get_token(&self, scopes: &[&str], _: Option<TokenRequestOptions<'_>>) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://vault.azure.net/.default"], "scope derived from the challenge");
        self.calls.fetch_add(1, Ordering::SeqCst);
        let expires = self.issuer.clock().now() + time::Duration::hours(1);
        let token = self.issuer.issue(Grant {
            subject: Subject::App { client_id: "patrol-test-app".into() },
            resource: KEYVAULT_RESOURCE.into(),
            scopes: vec![".default".into()],
            expires_at: expires,
        });
        Ok(AccessToken::new(Secret::new(token), time::OffsetDateTime::now_utc() + time::Duration::hours(1)))
    }
}

struct Env {
    _dir: tempfile::TempDir,
    kv: KeyVaultServer,
    events: EventGrid,
    cred: Arc<IssuerCredential>,
    ca: std::path::PathBuf,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = VirtualClock::new();
    let issuer = TokenIssuer::new(clock.clone());
    let (events, sink) = EventGrid::start(clock.clone(), DeliveryConfig::default());
    let ca = dir.path().join("emulator-ca.pem");
    let kv = KeyVaultServer::start(
        KeyVaultOptions { ca_cert_path: Some(ca.clone()), ..Default::default() },
        clock,
        issuer.clone(),
        sink,
    )
    .await
    .unwrap();
    kv.set_faults(Faults { async_delay_ms: 200, ..Default::default() });
    let cred = Arc::new(IssuerCredential { issuer, calls: AtomicU32::new(0) });
    Env { _dir: dir, kv, events, cred, ca }
}

fn client(env: &Env, retry: Option<RetryOptions>) -> SecretClient {
    let http = patrol::store::keyvault::http_client(Some(&env.ca)).unwrap();
    let client_options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: retry.unwrap_or_default(),
        ..Default::default()
    };
    let opts = SecretClientOptions { client_options, verify_challenge_resource: Some(false), ..Default::default() };
    SecretClient::new(&env.kv.url, env.cred.clone(), Some(opts)).unwrap()
}

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

#[tokio::test]
async fn set_read_versions_disable_and_list_over_tls() {
    let env = start().await;
    let store = KeyVaultSecretStore::with_client(client(&env, None), false);
    let n = name("ado-pat-build-1a2b3c4d");
    assert!(store.get(&n, None).await.unwrap().is_none());

    let exp = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::days(7);
    let tags = BTreeMap::from([
        (patrol::store::tags::MANAGED_BY.to_owned(), "patrol".to_owned()),
        (patrol::store::tags::AUTHORIZATION_ID.to_owned(), "3e5d3b5a-0000-4000-8000-000000000001".to_owned()),
    ]);
    let new = NewVersion {
        content_type: Some(patrol::store::PAT_CONTENT_TYPE.into()),
        expires: Some(exp),
        tags: tags.clone(),
        ..Default::default()
    };
    let v1 = store.set(&n, &SecretString::from("pat-one-value"), new.clone()).await.unwrap();
    assert_eq!(v1.version.len(), 32);
    assert_eq!(v1.expires, Some(exp));
    assert_eq!(v1.tags, tags);
    let v2 = store.set(&n, &SecretString::from("pat-two-value"), new).await.unwrap();

    let cur = store.get(&n, None).await.unwrap().unwrap();
    assert_eq!(cur.value.expose_secret(), "pat-two-value");
    assert_eq!(cur.properties.version, v2.version);
    assert_eq!(cur.properties.content_type.as_deref(), Some(patrol::store::PAT_CONTENT_TYPE));
    let old = store.get(&n, Some(&v1.version)).await.unwrap().unwrap();
    assert_eq!(old.value.expose_secret(), "pat-one-value");
    assert!(store.get(&n, Some("0123456789abcdef0123456789abcdef")).await.unwrap().is_none());
    assert!(store.get(&n, Some("../x")).await.unwrap().is_none());

    let mut versions: Vec<String> = store.list_versions(&n).await.unwrap().into_iter().map(|v| v.version).collect();
    versions.sort();
    let mut expected = vec![v1.version.clone(), v2.version.clone()];
    expected.sort();
    assert_eq!(versions, expected);

    let upd =
        store.update(&n, &v1.version, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.unwrap();
    assert!(!upd.enabled);
    assert!(matches!(store.get(&n, Some(&v1.version)).await, Err(StoreError::Disabled { .. })));

    // Many pages, with empty pages that still carry nextLink.
    env.kv.set_faults(Faults { empty_pages: true, async_delay_ms: 200, ..Default::default() });
    for i in 0..60 {
        store.set(&name(&format!("bulk-{i:03}")), &SecretString::from("x"), NewVersion::default()).await.unwrap();
    }
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 61);
    assert!(listed.iter().any(|s| s.name.as_str() == "bulk-059"));
    let build = listed.iter().find(|s| s.name == n).unwrap();
    assert_eq!(build.tags, tags);

    // One token for the whole run: the SDK caches the challenge scope and the token.
    assert_eq!(env.cred.calls.load(Ordering::SeqCst), 1);
    // Every write raised SecretNewVersionCreated.
    let created = env.events.events().iter().filter(|e| e.event_type.ends_with("SecretNewVersionCreated")).count();
    assert_eq!(created, 62);
}

#[tokio::test]
async fn soft_deleted_secret_conflicts_or_is_recovered() {
    let env = start().await;
    let raw = client(&env, None);
    let strict = KeyVaultSecretStore::with_client(client(&env, None), false);
    let n = name("deleted-one");
    strict.set(&n, &SecretString::from("before-delete"), NewVersion::default()).await.unwrap();
    raw.delete_secret(n.as_str(), None).await.unwrap();
    // Poll until the delete has finished, as the SDK leaves to callers.
    for _ in 0..50 {
        if raw.get_deleted_secret(n.as_str(), None).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let e = strict.set(&n, &SecretString::from("after"), NewVersion::default()).await.unwrap_err();
    assert!(matches!(e, StoreError::DeletedButRecoverable { .. }), "{e}");
    assert!(e.to_string().contains("PATROL_KEYVAULT_RECOVER_DELETED"));

    let recovering = KeyVaultSecretStore::with_client(client(&env, None), true);
    let v = recovering.set(&n, &SecretString::from("after-recover"), NewVersion::default()).await.unwrap();
    assert_eq!(recovering.get(&n, None).await.unwrap().unwrap().value.expose_secret(), "after-recover");
    assert_eq!(recovering.list_versions(&n).await.unwrap().len(), 2, "history survived the recovery");
    assert_eq!(recovering.get(&n, None).await.unwrap().unwrap().properties.version, v.version);
}

#[tokio::test]
async fn throttling_is_retried_and_then_reported() {
    let env = start().await;
    let store = KeyVaultSecretStore::with_client(client(&env, None), false);
    let n = name("throttled");
    store.set(&n, &SecretString::from("v"), NewVersion::default()).await.unwrap();
    // Two 429s with Retry-After: 1 — the SDK waits and retries; the caller sees success.
    env.kv.set_faults(Faults { throttle_next: 2, retry_after_secs: 1, ..Default::default() });
    let t0 = std::time::Instant::now();
    assert_eq!(store.get(&n, None).await.unwrap().unwrap().value.expose_secret(), "v");
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2), "Retry-After was honoured: {:?}", t0.elapsed());

    // Persistent throttling surfaces as Throttled with the service's Retry-After.
    let no_retry = KeyVaultSecretStore::with_client(client(&env, Some(RetryOptions::none())), false);
    env.kv.set_faults(Faults { throttle_next: 1, retry_after_secs: 7, ..Default::default() });
    let e = no_retry.get(&n, None).await.unwrap_err();
    assert!(matches!(e, StoreError::Throttled { retry_after_secs: 7 }), "{e}");
}

#[tokio::test]
async fn forbidden_and_values_never_in_logs_or_errors() {
    let logs = crate::support::captured_logs();
    let env = start().await;
    let store = KeyVaultSecretStore::with_client(client(&env, None), false);
    let secret_value = "pat-secret-value-q8w7e6r5t4y3";
    let n = name("logged");
    store.set(&n, &SecretString::from(secret_value), NewVersion::default()).await.unwrap();
    let got = store.get(&n, None).await.unwrap().unwrap();
    assert!(!format!("{got:?}").contains(secret_value));
    env.kv.set_faults(Faults { forbidden_principals: ["patrol-test-app".to_owned()].into(), ..Default::default() });
    let e = store.set(&n, &SecretString::from(secret_value), NewVersion::default()).await.unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("setSecret"), "{e}");
    assert!(!e.to_string().contains(secret_value));
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("stored a new secret version"), "logging was captured");
    assert!(!logs.contains(secret_value), "a secret value reached the logs");
}
