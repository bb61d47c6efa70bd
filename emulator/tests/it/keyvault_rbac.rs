//! Key Vault RBAC per vault and per secret, and several vaults in one emulator: role assignments set through
//! the control API are enforced on the data plane with 403 `ForbiddenByRbac`, a secret-scope assignment
//! reaches only that secret (and never allows a list), and each hosted vault has its own assignments.

use crate::keyvault_join::vault_token;
use crate::support::{APP_ID, seed, start_with};
use patrol_emulator::EmulatorConfig;
use patrol_emulator::server::KeyVaultConfig;
use serde_json::{Value, json};

const API: &str = "api-version=2026-04-01";

#[tokio::test]
async fn role_assignments_per_vault_and_per_secret_are_enforced() {
    let env = start_with(EmulatorConfig {
        seed: Some(seed()),
        keyvault: KeyVaultConfig { extra_vaults: vec!["patrol-own".into()], ..KeyVaultConfig::default() },
        ..Default::default()
    })
    .await;
    let ready: Value = serde_json::from_str(&env.emu.ready_line()).unwrap();
    let (main, own) = (ready["keyvault"].as_str().unwrap(), ready["keyvault.patrol-own"].as_str().unwrap());
    assert_ne!(main, own, "each vault has its own listener");
    // Every listener (Entra, each vault, GitHub) serves a certificate of the emulator's one CA: the CA file
    // holds just it.
    let pem = std::fs::read(ready["ca_cert"].as_str().unwrap()).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    assert_eq!(certs.len(), 1);
    let kv = reqwest::Client::builder().tls_certs_only(certs).build().unwrap();
    let token = vault_token(&env.http, ready["entra"].as_str().unwrap(), ready["tenant"].as_str().unwrap()).await;
    let call = |method: reqwest::Method, base: &str, path: &str, body: Option<Value>| {
        let mut rb = kv.request(method, format!("{base}{path}?{API}")).bearer_auth(&token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    // Without assignments every authenticated caller is admitted (as before).
    for name in ["ci-pat", "patrol-owner-x"] {
        let (s, _) = call(Method::PUT, own, &format!("secrets/{name}"), Some(json!({"value": "v"}))).await;
        assert_eq!(s, 200, "{name}");
    }
    // Bad assignments are refused; an unknown vault is 404.
    let (s, _) = env
        .ctl(Method::PUT, "/_control/keyvaults/patrol-own/rbac", json!([{"principal": APP_ID, "role": "Owner"}]))
        .await;
    assert_eq!(s, 400);
    let (s, _) = env.ctl(Method::PUT, "/_control/keyvaults/nope-kv/rbac", json!([])).await;
    assert_eq!(s, 404);
    // The app may only read one secret of patrol-own.
    let (s, v) = env
        .ctl(
            Method::PUT,
            "/_control/keyvaults/patrol-own/rbac",
            json!([{"principal": APP_ID, "role": "Key Vault Secrets User", "secret": "ci-pat"}]),
        )
        .await;
    assert_eq!((s, &v["enforced"]), (200, &json!(true)), "{v}");
    assert_eq!(call(Method::GET, own, "secrets/ci-pat", None).await.0, 200);
    for (method, path) in [
        (Method::GET, "secrets/patrol-owner-x"),
        (Method::GET, "secrets"),
        (Method::PUT, "secrets/ci-pat"),
        (Method::DELETE, "secrets/ci-pat"),
    ] {
        let body = (method == Method::PUT).then(|| json!({"value": "w"}));
        let (s, v) = call(method.clone(), own, path, body).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["innererror"]["code"], "ForbiddenByRbac", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("vaults/patrol-own"), "{v}");
    }
    // The other vault keeps its own (no) assignments.
    assert_eq!(call(Method::PUT, main, "secrets/ci-pat", Some(json!({"value": "v"}))).await.0, 200);
    // Officer at the vault's scope: everything; removing the assignments admits everyone again.
    env.ctl(Method::PUT, "/_control/keyvault/rbac", json!([{"principal": APP_ID, "role": "Key Vault Reader"}])).await;
    assert_eq!(call(Method::GET, main, "secrets", None).await.0, 200, "Reader lists");
    assert_eq!(call(Method::GET, main, "secrets/ci-pat", None).await.0, 403, "but never reads values");
    let (s, v) = env.ctl(Method::DELETE, "/_control/keyvaults/patrol-own/rbac", Value::Null).await;
    assert_eq!((s, &v["enforced"]), (200, &json!(false)));
    assert_eq!(call(Method::GET, own, "secrets/patrol-owner-x", None).await.0, 200);
    env.emu.shutdown().await.unwrap();
}
