//! The location service Microsoft's SDKs call first (OPTIONS `{org}/_apis`, ResourceAreas,
//! connectionData with a bearer token or a PAT over Basic auth), and api-version in the Accept header.

use crate::support::*;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn options_resource_areas_and_connection_data() {
    let env = start().await;
    let r = env.http.request(Method::OPTIONS, env.devops("/fabrikam/_apis")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let locs: Value = r.json().await.unwrap();
    let ids: Vec<&str> = locs["value"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"e81700f7-3be2-46de-8624-2eb35882fcaa"), "ResourceAreas: {ids:?}");
    assert!(ids.contains(&"af68438b-ed04-4407-9eb6-f1dbae3f922e"), "TokenAdmin: {ids:?}");
    assert_eq!(locs["count"].as_u64().unwrap() as usize, ids.len());
    let audit_locs: Value =
        env.http.request(Method::OPTIONS, env.audit_url("/fabrikam/_apis")).send().await.unwrap().json().await.unwrap();
    let audit_log = audit_locs["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "4e5fa14f-7097-4b73-9c85-00abc7353c61")
        .expect("the audit host lists auditlog");
    assert_eq!(audit_log["routeTemplate"], "_apis/{area}/{resource}");

    let areas: Value =
        env.http.get(env.devops("/fabrikam/_apis/ResourceAreas")).send().await.unwrap().json().await.unwrap();
    let audit_area = areas["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "94ff054d-5ee1-413d-9341-3f4a7827de2e")
        .expect("audit area");
    assert_eq!(audit_area["locationUrl"], env.audit_url("/fabrikam/"));
    let r = env.http.get(env.devops("/nowhere/_apis/ResourceAreas")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // connectionData: a delegated token, a PAT over Basic auth, nothing.
    let t = env.pats_token(ALICE).await;
    let cd: Value = env
        .http
        .get(env.devops("/fabrikam/_apis/connectionData"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cd["authenticatedUser"]["properties"]["Account"]["$value"], ALICE);
    let pat = env.create_pat(&t, "fabrikam", "cd", "vso.code", 1).await;
    let secret = pat["patToken"]["token"].as_str().unwrap();
    let r =
        env.http.get(env.devops("/fabrikam/_apis/connectionData")).basic_auth("", Some(secret)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cd: Value = r.json().await.unwrap();
    assert_eq!(cd["authenticatedUser"]["subjectDescriptor"].as_str().unwrap().get(..4), Some("aad."));
    assert_eq!(cd["authenticatedUser"]["properties"]["Account"]["$value"], ALICE);
    let r = env
        .http
        .get(env.devops("/fabrikam/_apis/connectionData"))
        .basic_auth("", Some("not-a-pat"))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .http
        .get(env.devops("/fabrikam/_apis/connectionData"))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn api_version_in_the_accept_header_counts_like_the_query_parameter() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    let r = env
        .http
        .get(env.devops("/fabrikam/_apis/tokens/pats"))
        .bearer_auth(&t)
        .header("Accept", "application/json;api-version=7.1-preview.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = env.http.get(env.devops("/fabrikam/_apis/tokens/pats")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 400, "no api-version anywhere");
    let r = env
        .http
        .get(env.devops("/fabrikam/_apis/tokens/pats"))
        .bearer_auth(&t)
        .header("Accept", "application/json;api-version=7.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the preview rule applies to the header too");
}
