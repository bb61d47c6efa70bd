//! Entra: device code, refresh-token rotation, revocation/expiry/interaction, client credentials.

use crate::support::*;
use serde_json::{Value, json};

async fn form(env: &Env, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let r = env.http.post(env.entra(path)).form(params).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub async fn device_sign_in(env: &Env, upn: &str) -> Value {
    let tenant = env.emu.endpoints().tenant.clone();
    let scope = format!("{DEVOPS}/vso.pats {DEVOPS}/vso.pats_manage offline_access");
    let (s, dc) =
        form(env, &format!("/{tenant}/oauth2/v2.0/devicecode"), &[("client_id", CLIENT), ("scope", &scope)]).await;
    assert_eq!(s, 200, "{dc}");
    let code = dc["device_code"].as_str().unwrap().to_string();
    let grant = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", CLIENT),
        ("device_code", code.as_str()),
    ];
    let (s, pending) = form(env, &format!("/{tenant}/oauth2/v2.0/token"), &grant).await;
    assert_eq!((s, pending["error"].as_str()), (400, Some("authorization_pending")));
    assert_eq!(pending["error_codes"][0], 70016);
    env.post_ctl("/_control/devicecodes/approve", json!({ "userCode": dc["user_code"], "upn": upn })).await;
    let (s, tokens) = form(env, &format!("/{tenant}/oauth2/v2.0/token"), &grant).await;
    assert_eq!(s, 200, "{tokens}");
    let (s, again) = form(env, &format!("/{tenant}/oauth2/v2.0/token"), &grant).await;
    assert_eq!((s, again["error"].as_str()), (400, Some("invalid_grant")), "a device code is redeemed once");
    tokens
}

async fn refresh(env: &Env, rt: &str) -> (u16, Value) {
    let tenant = env.emu.endpoints().tenant.clone();
    form(
        env,
        &format!("/{tenant}/oauth2/v2.0/token"),
        &[("grant_type", "refresh_token"), ("client_id", CLIENT), ("refresh_token", rt)],
    )
    .await
}

#[tokio::test]
async fn device_code_then_rotating_refresh_tokens() {
    let env = start().await;
    let tokens = device_sign_in(&env, ALICE).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let at = tokens["access_token"].as_str().unwrap();
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_string();
    // The access token works on the PAT API.
    let r = env.pat_api(reqwest::Method::GET, "fabrikam", "api-version=7.1-preview.1", at).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let (s, next) = refresh(&env, &rt1).await;
    assert_eq!(s, 200, "{next}");
    let rt2 = next["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    let (s, reused) = refresh(&env, &rt1).await;
    assert_eq!((s, reused["error"].as_str()), (400, Some("invalid_grant")), "refresh tokens rotate on use");

    // Access tokens expire on the virtual clock.
    env.advance(3601).await;
    let r = env.pat_api(reqwest::Method::GET, "fabrikam", "api-version=7.1-preview.1", at).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Conditional Access demands an interactive sign-in.
    env.put_ctl(&format!("/_control/users/{ALICE}/interaction"), json!({ "required": true })).await;
    let (s, e) = refresh(&env, &rt2).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("interaction_required")));
    env.put_ctl(&format!("/_control/users/{ALICE}/interaction"), json!({ "required": false })).await;

    let (_, ok) = refresh(&env, &rt2).await;
    let rt3 = ok["refresh_token"].as_str().unwrap().to_string();
    env.post_ctl("/_control/refresh-tokens/revoke", json!({ "upn": ALICE })).await;
    let (s, e) = refresh(&env, &rt3).await;
    assert_eq!((s, e["error"].as_str(), e["error_codes"][0].as_u64()), (400, Some("invalid_grant"), Some(50173)));
}

#[tokio::test]
async fn refresh_tokens_expire_after_inactivity() {
    let env = start().await;
    let tokens = device_sign_in(&env, BOB).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    env.advance(91 * 86_400).await;
    let (s, e) = refresh(&env, rt).await;
    assert_eq!((s, e["error"].as_str(), e["error_codes"][0].as_u64()), (400, Some("invalid_grant"), Some(700082)));
}

#[tokio::test]
async fn client_credentials_for_key_vault_and_refused_by_pat_api() {
    let env = start().await;
    let tenant = env.emu.endpoints().tenant.clone();
    let path = format!("/{tenant}/oauth2/v2.0/token");
    let (s, kv) = form(
        &env,
        &path,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
            ("scope", "https://vault.azure.net/.default"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{kv}");
    assert!(kv.get("refresh_token").is_none());
    let (s, bad) = form(
        &env,
        &path,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", "wrong-secret-000000"),
            ("scope", "https://vault.azure.net/.default"),
        ],
    )
    .await;
    assert_eq!((s, bad["error"].as_str()), (401, Some("invalid_client")));
    let (_, devops) = form(
        &env,
        &path,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
            ("scope", &format!("{DEVOPS}/.default")),
        ],
    )
    .await;
    let at = devops["access_token"].as_str().unwrap();
    let r = env.pat_api(reqwest::Method::GET, "fabrikam", "api-version=7.2-preview.1", at).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Service principals aren't allowed to perform this action.");
    let (s, e) = form(&env, "/not-a-tenant/oauth2/v2.0/token", &[("grant_type", "client_credentials")]).await;
    assert_eq!((s, e["error_codes"][0].as_u64()), (400, Some(90002)));
}
