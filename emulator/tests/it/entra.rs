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
async fn device_code_then_refresh_tokens_reusable_as_in_entra() {
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
    // Entra: a used refresh token stays valid until it expires or is revoked; each use returns a new one.
    let (s, reused) = refresh(&env, &rt1).await;
    assert_eq!(s, 200, "a used refresh token is still valid: {reused}");
    assert_ne!(reused["refresh_token"], next["refresh_token"]);
    // Strict single use, as an option.
    let lt = env.ctl(reqwest::Method::GET, "/_control/lifetimes", Value::Null).await.1;
    let mut strict = lt.clone();
    strict["strictRefreshTokens"] = json!(true);
    env.put_ctl("/_control/lifetimes", strict).await;
    let (s, refused) = refresh(&env, &rt1).await;
    assert_eq!((s, refused["error"].as_str()), (400, Some("invalid_grant")), "strict mode: used once");
    env.put_ctl("/_control/lifetimes", lt).await;

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
    // Revocation reaches every valid refresh token of the user, used ones included.
    for rt in [&rt3, &rt2, &rt1] {
        let (s, e) = refresh(&env, rt).await;
        assert_eq!((s, e["error"].as_str(), e["error_codes"][0].as_u64()), (400, Some("invalid_grant"), Some(50173)));
    }
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

fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn discovery_keys_instance_discovery_client_info_and_signed_jwts() {
    let env = start().await;
    let tenant = env.emu.endpoints().tenant.clone();
    let entra = env.emu.endpoints().entra.clone();
    assert!(entra.starts_with("https://127.0.0.1:"), "{entra}");
    let get = |p: String| {
        let http = env.http.clone();
        async move {
            let r = http.get(p).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, d) = get(env.entra(&format!("/{tenant}/v2.0/.well-known/openid-configuration"))).await;
    assert_eq!(s, 200);
    for k in [
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        assert!(d[k].as_str().unwrap().starts_with(&format!("{entra}/{tenant}/")), "{k}: {d}");
    }
    for k in ["response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported"] {
        assert!(!d[k].as_array().unwrap().is_empty(), "{k}");
    }
    assert_eq!(d["issuer"], format!("{entra}/{tenant}/v2.0"));
    let (_, org) = get(env.entra("/organizations/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(org["issuer"], format!("{entra}/{{tenantid}}/v2.0"));
    let (s, _) = get(env.entra("/no-such-tenant/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(s, 400);

    // Instance discovery vouches for the emulator's own host only.
    let host = entra.trim_start_matches("https://");
    let (s, inst) = get(env.entra(&format!(
        "/common/discovery/instance?api-version=1.1&authorization_endpoint=https://{host}/{tenant}/oauth2/v2.0/authorize"
    )))
    .await;
    assert_eq!(s, 200, "{inst}");
    assert_eq!(
        inst["tenant_discovery_endpoint"],
        format!("https://{host}/{tenant}/v2.0/.well-known/openid-configuration")
    );
    assert_eq!(inst["metadata"][0]["aliases"][0], host);
    let (s, other) = get(env.entra(
        "/common/discovery/instance?api-version=1.1&authorization_endpoint=https://evil.example/x/oauth2/v2.0/authorize",
    ))
    .await;
    assert_eq!((s, other["error"].as_str()), (400, Some("invalid_instance")));

    // Tokens: client_info when asked for; access and ID tokens are RS256 JWTs verifiable with jwks_uri.
    let scope = format!("{DEVOPS}/vso.pats offline_access openid profile");
    let (_, dc) =
        form(&env, &format!("/{tenant}/oauth2/v2.0/devicecode"), &[("client_id", CLIENT), ("scope", &scope)]).await;
    env.post_ctl("/_control/devicecodes/approve", json!({ "userCode": dc["user_code"], "upn": ALICE })).await;
    let (s, t) = form(
        &env,
        &format!("/{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CLIENT),
            ("device_code", dc["device_code"].as_str().unwrap()),
            ("client_info", "1"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let ci: Value = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t["client_info"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let at = claims(t["access_token"].as_str().unwrap());
    assert_eq!(ci["uid"], at["oid"]);
    assert_eq!(ci["utid"], tenant.as_str());
    assert_eq!(at["aud"], DEVOPS);
    assert_eq!(at["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!((at["tid"].as_str(), at["upn"].as_str()), (Some(tenant.as_str()), Some(ALICE)));
    assert_eq!(at["scp"], "vso.pats");
    assert_eq!(at["appid"], CLIENT);
    for k in ["exp", "nbf", "iat"] {
        assert!(at[k].is_i64(), "{k}");
    }
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], format!("{entra}/{tenant}/v2.0"));
    assert_eq!((id["aud"].as_str(), id["oid"].clone()), (Some(CLIENT), at["oid"].clone()));
    let (_, keys) = get(d["jwks_uri"].as_str().unwrap().to_owned()).await;
    let key = &keys["keys"][0];
    for t in [t["access_token"].as_str().unwrap(), t["id_token"].as_str().unwrap()] {
        let header = jsonwebtoken::decode_header(t).unwrap();
        assert_eq!(header.kid.as_deref(), key["kid"].as_str());
        let dk = jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
            .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        v.validate_exp = false;
        jsonwebtoken::decode::<Value>(t, &dk, &v).expect("verifies with the published key");
    }
    // Without client_info=1 there is none; app tokens are JWTs with idtyp=app and no scp.
    let (_, app) = form(
        &env,
        &format!("/{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
            ("scope", "https://vault.azure.net/.default"),
            ("client_info", "1"),
        ],
    )
    .await;
    assert!(app.get("client_info").is_none());
    let ac = claims(app["access_token"].as_str().unwrap());
    assert_eq!(
        (ac["idtyp"].as_str(), ac["aud"].as_str(), ac.get("scp")),
        (Some("app"), Some("https://vault.azure.net"), None)
    );
}
