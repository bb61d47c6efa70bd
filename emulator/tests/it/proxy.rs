//! The Azure-names proxy: Azure's real host names reach the emulated services through `CONNECT`, over TLS
//! with leaves from the emulator's CA, and URLs in responses name Azure's hosts; every other host, port or
//! plain-http request is refused; without `proxy` there is no proxy.

use crate::support::{ALICE, seed, start, start_with};
use patrol_emulator::EmulatorConfig;
use serde_json::Value;

fn through_proxy(env: &crate::support::Env) -> reqwest::Client {
    let proxy = env.emu.endpoints().extra.get("proxy").expect("the ready line names the proxy").clone();
    let ca = reqwest::Certificate::from_pem(env.emu.keyvault().ca_cert_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(&proxy).unwrap())
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn azure_names_reach_the_emulated_services_and_nothing_else() {
    let env = start_with(EmulatorConfig { seed: Some(seed()), proxy: true, ..Default::default() }).await;
    let c = through_proxy(&env);
    let tenant = env.emu.endpoints().tenant.clone();

    // Entra at its real authority: discovery names login.microsoftonline.com throughout.
    let d: Value = c
        .get(format!("https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], format!("https://login.microsoftonline.com/{tenant}/v2.0"));
    assert_eq!(d["token_endpoint"], format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"));

    // Azure DevOps: resource areas point at vssps and auditservice; a token works on both hosts.
    let at = env.user_token(ALICE, &["vso.pats", "vso.auditlog"]).await;
    let areas: Value = c
        .get("https://dev.azure.com/fabrikam/_apis/ResourceAreas")
        .header("accept", "application/json;api-version=7.1-preview.1")
        .bearer_auth(&at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let urls: Vec<&str> = areas["value"].as_array().unwrap().iter().filter_map(|a| a["locationUrl"].as_str()).collect();
    assert_eq!(urls, ["https://vssps.dev.azure.com/fabrikam/", "https://auditservice.dev.azure.com/fabrikam/"]);
    let r = c
        .get("https://vssps.dev.azure.com/fabrikam/_apis/tokens/pats?api-version=7.1-preview.1")
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Key Vault at <vault>.vault.azure.net: the challenge names Entra's real authority.
    let r = c.get("https://patrol-emu.vault.azure.net/secrets?api-version=7.6").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!(r#"authorization="https://login.microsoftonline.com/{tenant}""#))
            && challenge.contains(r#"resource="https://vault.azure.net""#),
        "{challenge}"
    );

    // GitHub's API host reaches the GitHub consumer emulation (unauthenticated: 401, not a refused tunnel).
    let r = c.get("https://api.github.com/repos/contoso/app/actions/secrets/public-key").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Anything else is refused before a connection is opened.
    for url in ["https://example.com/", "https://dev.azure.com:8443/", "https://login.microsoftonline.com.evil.test/"] {
        let e = c.get(url).send().await.expect_err(url);
        // reqwest reports a refused CONNECT (403) as an unsuccessful tunnel.
        assert!(format!("{e:?}").contains("TunnelUnsuccessful"), "{url}: {e:?}");
    }
    let plain = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(env.emu.endpoints().extra["proxy"].as_str()).unwrap())
        .build()
        .unwrap();
    let r = plain.get("http://example.com/").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The loopback listeners still name themselves.
    let d: Value = env
        .http
        .get(env.entra(&format!("/{tenant}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], format!("{}/{tenant}/v2.0", env.emu.endpoints().entra));
}

#[tokio::test]
async fn no_proxy_unless_asked() {
    let env = start().await;
    assert!(!env.emu.endpoints().extra.contains_key("proxy"));
}
