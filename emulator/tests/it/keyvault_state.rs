//! The emulated Key Vault saved with `--state`: secrets written over HTTPS survive a clean restart on the
//! same file (versions, values, attributes, tags, soft-deleted secrets), list/get/update/recover behave as
//! before, the virtual clock goes on from the saved time, expiry events are not raised twice across restarts, changes are saved without a shutdown, an
//! older state file without the vault's section loads with an empty vault, and a corrupt section is refused
//! with an error naming the file. The binary does the same across SIGTERM and a restart.

use crate::support::seed;
use patrol_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const API: &str = "api-version=2026-04-01";
const VALUE_1: &str = "refresh-token-value-one-7f3a9c";
const VALUE_2: &str = "refresh-token-value-two-b81d44";
const GONE_VALUE: &str = "deleted-secret-value-5e0c12";

/// A vault client of one emulator run: its CA, its URL and a client-credentials token from its Entra.
struct Vault {
    http: reqwest::Client,
    url: String,
    token: String,
}

async fn start(path: &Path) -> Emulator {
    let config = EmulatorConfig { seed: Some(seed()), state_path: Some(path.to_owned()), ..Default::default() };
    Emulator::start(config).await.unwrap()
}

async fn vault(emu: &Emulator) -> Vault {
    let e = emu.endpoints();
    let pem = std::fs::read(&e.extra["ca_cert"]).unwrap();
    let http =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap();
    let token = crate::keyvault_join::vault_token(&http, &e.entra, &e.tenant).await;
    Vault { http, url: e.extra["keyvault"].clone(), token }
}

impl Vault {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}?{API}", self.url);
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    /// A response with this run's base URL taken out of the ids (the port changes at every start).
    fn portable(&self, v: &Value) -> Value {
        serde_json::from_str(&v.to_string().replace(self.url.trim_end_matches('/'), "https://vault")).unwrap()
    }
}

fn version_of(bundle: &Value) -> String {
    bundle["id"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

fn count(emu: &Emulator, event_type: &str, name: &str) -> usize {
    emu.eventgrid().events().iter().filter(|e| e.event_type == event_type && e.object_name == name).count()
}

/// Lets the evaluator and the writer run, then evaluates expiry once more.
async fn settle(emu: &Emulator) {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    emu.keyvault().evaluate_expiry();
}

fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("emulator-state.json")
}

#[tokio::test]
async fn the_vault_comes_back_after_a_restart_and_expiry_events_are_not_raised_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let exp;
    let (v1, v2, saved_listing, saved_current, saved_deleted, virtual_now);
    {
        let emu = start(&path).await;
        let kv = vault(&emu).await;
        let now = emu.clock().now().unix_timestamp();
        exp = now + 40 * 86_400;
        let tags = json!({"patrol-owner": "alice@fabrikam.test", "patrol-kind": "refresh-token"});
        let b1 =
            kv.ok(reqwest::Method::PUT, "secrets/Owner-Refresh", Some(json!({"value": VALUE_1, "tags": tags}))).await;
        v1 = version_of(&b1);
        let b2 = kv
            .ok(
                reqwest::Method::PUT,
                "secrets/owner-refresh",
                Some(json!({"value": VALUE_2, "contentType": "application/jwt", "tags": tags,
                            "attributes": {"nbf": now - 60, "exp": exp}})),
            )
            .await;
        v2 = version_of(&b2);
        kv.ok(
            reqwest::Method::PATCH,
            &format!("secrets/owner-refresh/{v1}"),
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
        kv.ok(reqwest::Method::PUT, "secrets/gone", Some(json!({"value": GONE_VALUE}))).await;
        kv.ok(reqwest::Method::DELETE, "secrets/gone", None).await;
        emu.clock().advance(time::Duration::seconds(2)); // the delete completes

        // 10 days before `exp`: SecretNearExpiry, once.
        emu.clock().set(OffsetDateTime::from_unix_timestamp(exp - 10 * 86_400).unwrap());
        settle(&emu).await;
        assert_eq!(count(&emu, "Microsoft.KeyVault.SecretNearExpiry", "Owner-Refresh"), 1);

        let kv = vault(&emu).await; // a token valid at the new virtual time
        saved_listing = kv.portable(&kv.ok(reqwest::Method::GET, "secrets/owner-refresh/versions", None).await);
        saved_current = kv.portable(&kv.ok(reqwest::Method::GET, "secrets/owner-refresh", None).await);
        saved_deleted = kv.portable(&kv.ok(reqwest::Method::GET, "deletedsecrets/gone", None).await);
        virtual_now = emu.clock().now();
        emu.shutdown().await.unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["keyVault"]["format"], 1, "{doc:#}");
    assert!(doc["virtualTime"].as_str().is_some_and(|t| t.starts_with(&virtual_now.year().to_string())), "{doc:#}");
    assert!(doc["users"].as_object().is_some_and(|u| !u.is_empty()), "the world is still at the top level");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    {
        let emu = start(&path).await;
        assert!(emu.clock().now() >= virtual_now, "the virtual clock goes on from where it was saved");
        let kv = vault(&emu).await;
        // Everything as it was: versions, attributes, tags, content type, value; the deleted secret.
        assert_eq!(
            kv.portable(&kv.ok(reqwest::Method::GET, "secrets/owner-refresh/versions", None).await),
            saved_listing
        );
        let current = kv.ok(reqwest::Method::GET, "secrets/OWNER-REFRESH", None).await;
        assert_eq!(kv.portable(&current), saved_current);
        assert_eq!(current["value"], VALUE_2);
        assert_eq!(version_of(&current), v2);
        assert_eq!(current["attributes"]["exp"], exp);
        assert_eq!(current["contentType"], "application/jwt");
        assert_eq!(current["tags"]["patrol-owner"], "alice@fabrikam.test");
        assert_eq!(kv.portable(&kv.ok(reqwest::Method::GET, "deletedsecrets/gone", None).await), saved_deleted);
        // v1 is still disabled; update enables it and its value is back.
        let (s, e) = kv.call(reqwest::Method::GET, &format!("secrets/owner-refresh/{v1}"), None).await;
        assert_eq!((s, e["error"]["innererror"]["code"].as_str()), (403, Some("SecretDisabled")), "{e}");
        kv.ok(
            reqwest::Method::PATCH,
            &format!("secrets/owner-refresh/{v1}"),
            Some(json!({"attributes": {"enabled": true}})),
        )
        .await;
        assert_eq!(kv.ok(reqwest::Method::GET, &format!("secrets/owner-refresh/{v1}"), None).await["value"], VALUE_1);
        // The list shows the secret under its original case.
        let list = kv.ok(reqwest::Method::GET, "secrets", None).await;
        let ids: Vec<&str> = list["value"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [format!("{}secrets/Owner-Refresh", kv.url)], "{list}");

        // The near-expiry event was raised before the restart: not again. Expiry comes once.
        settle(&emu).await;
        assert_eq!(count(&emu, "Microsoft.KeyVault.SecretNearExpiry", "Owner-Refresh"), 0);
        emu.clock().set(OffsetDateTime::from_unix_timestamp(exp + 1).unwrap());
        settle(&emu).await;
        assert_eq!(count(&emu, "Microsoft.KeyVault.SecretExpired", "Owner-Refresh"), 1);
        assert_eq!(count(&emu, "Microsoft.KeyVault.SecretNearExpiry", "Owner-Refresh"), 0);
        let after_expiry = emu.clock().now();
        let kv = vault(&emu).await;

        // Recovery of the deleted secret still works and its value is back.
        kv.ok(reqwest::Method::POST, "deletedsecrets/gone/recover", None).await;
        emu.clock().advance(time::Duration::seconds(2));
        assert_eq!(kv.ok(reqwest::Method::GET, "secrets/gone", None).await["value"], GONE_VALUE);
        emu.shutdown().await.unwrap();

        let emu = start(&path).await;
        assert!(emu.clock().now() >= after_expiry);
        let kv = vault(&emu).await;
        settle(&emu).await;
        assert_eq!(count(&emu, "Microsoft.KeyVault.SecretExpired", "Owner-Refresh"), 0, "expired raised again");
        // New versions get new ids; the old ones stay.
        let b3 = kv.ok(reqwest::Method::PUT, "secrets/owner-refresh", Some(json!({"value": "third"}))).await;
        let listing = kv.ok(reqwest::Method::GET, "secrets/owner-refresh/versions", None).await;
        let mut ids: Vec<String> = listing["value"].as_array().unwrap().iter().map(version_of).collect();
        ids.sort();
        let mut want = vec![v1.clone(), v2.clone(), version_of(&b3)];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(kv.ok(reqwest::Method::GET, "secrets/gone", None).await["value"], GONE_VALUE);
        emu.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn vault_changes_are_saved_without_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let emu = start(&path).await;
    let kv = vault(&emu).await;
    let b = kv.ok(reqwest::Method::PUT, "secrets/saved-soon", Some(json!({"value": VALUE_1}))).await;
    let version = version_of(&b);
    let mut saved = false;
    for _ in 0..100 {
        if std::fs::read_to_string(&path).unwrap_or_default().contains(&version) {
            saved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(saved, "the new version was not saved within 5 s");
    // What a crash would leave behind loads.
    let loaded = patrol_emulator::persist::load(&path).unwrap().unwrap();
    let shown = format!("{:?}", loaded.vault);
    assert!(shown.contains(&version) && !shown.contains(VALUE_1), "Debug of the vault shows no values: {shown}");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_older_state_file_without_the_vault_loads_with_an_empty_vault() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    start(&path).await.shutdown().await.unwrap();
    let mut doc: serde_json::Map<String, Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(doc.remove("keyVault").is_some() && doc.remove("virtualTime").is_some());
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let emu = start(&path).await;
    let kv = vault(&emu).await; // the seeded application came back from the file
    assert_eq!(kv.ok(reqwest::Method::GET, "secrets", None).await["value"], json!([]));
    kv.ok(reqwest::Method::PUT, "secrets/first", Some(json!({"value": VALUE_1}))).await;
    emu.shutdown().await.unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["keyVault"]["secrets"][0]["name"], "first");
}

/// Breaks a state file's document in one way.
type Corrupt = fn(&mut Value);

#[tokio::test]
async fn a_corrupt_vault_section_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    {
        let emu = start(&path).await;
        let kv = vault(&emu).await;
        kv.ok(reqwest::Method::PUT, "secrets/ok", Some(json!({"value": VALUE_1}))).await;
        emu.shutdown().await.unwrap();
    }
    let good = std::fs::read(&path).unwrap();
    let corruptions: [(&str, Corrupt); 4] = [
        ("secrets[0] \"ok\": the secret has no versions", |d| d["keyVault"]["secrets"][0]["versions"] = json!([])),
        ("secrets[0] \"bad/name\"", |d| d["keyVault"]["secrets"][0]["name"] = json!("bad/name")),
        ("format 7 is not supported", |d| d["keyVault"]["format"] = json!(7)),
        ("missing field `value`", |d| {
            if let Some(v) = d["keyVault"]["secrets"][0]["versions"][0].as_object_mut() {
                v.remove("value");
            }
        }),
    ];
    for (want, corrupt) in corruptions {
        let mut doc: Value = serde_json::from_slice(&good).unwrap();
        corrupt(&mut doc);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let config = EmulatorConfig { state_path: Some(path.clone()), ..Default::default() };
        let err =
            format!("{:#}", Emulator::start(config).await.err().expect("a corrupt vault section must be refused"));
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("Key Vault section"), "{err}");
        assert!(err.contains(want), "{want:?} in {err}");
        assert!(!err.contains(VALUE_1), "{err}");
    }
}

/// The `patrol-emulator` binary with `--state`: a secret written over HTTPS is back after SIGTERM and a
/// restart on the same file (new port and CA, same vault).
#[tokio::test]
async fn the_binary_keeps_the_vault_across_a_sigterm_restart() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, serde_json::to_vec(&seed()).unwrap()).unwrap();
    let spawn = |n: u32| {
        let ca = dir.path().join(format!("ca-{n}.pem"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_patrol-emulator"))
            .args(["--seed", seed_path.to_str().unwrap(), "--state", state.to_str().unwrap()])
            .args(["--ca-cert", ca.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        (child, ready)
    };
    let client = |ready: Value| async move {
        let pem = std::fs::read(ready["ca_cert"].as_str().unwrap()).unwrap();
        let http =
            reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap();
        let token = crate::keyvault_join::vault_token(
            &http,
            ready["entra"].as_str().unwrap(),
            ready["tenant"].as_str().unwrap(),
        )
        .await;
        Vault { http, url: ready["keyvault"].as_str().unwrap().to_owned(), token }
    };

    let (mut first, ready) = spawn(1);
    let v = client(ready).await;
    let body = json!({ "value": VALUE_1, "contentType": "text/plain", "tags": { "owner": "bin" } });
    let set = v.ok(reqwest::Method::PUT, "/secrets/bin-secret", Some(body)).await;
    crate::control::send_sigterm(first.id());
    assert!(first.wait().unwrap().success(), "clean shutdown on SIGTERM");

    let (mut second, ready) = spawn(2);
    let v = client(ready).await;
    let got = v.ok(reqwest::Method::GET, "/secrets/bin-secret", None).await;
    assert_eq!(got["value"], json!(VALUE_1), "the value survived the restart");
    assert_eq!(got["tags"]["owner"], json!("bin"));
    assert_eq!(version_of(&got), version_of(&set), "the same version is current");
    crate::control::send_sigterm(second.id());
    assert!(second.wait().unwrap().success());
}
