//! patrol's Azure DevOps client against patrol-emulator over real HTTP: the PAT lifecycle, paging, policy
//! refusals and drift, every injected fault (latency, 5xx, 429 + Retry-After also on 200, a lost Create
//! response), the sign-in page, refused credentials, Token Admin and the audit log.

use crate::client_env::*;
use futures::StreamExt;
use patrol::auth::{AccessToken, StaticToken, TokenSource, TokenSources};
use patrol::devops::audit::AuditQuery;
use patrol::devops::*;
use patrol::domain::{DisplayName, OwnerId, Scopes};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn create_request(name: &str, scopes: &str, valid_to: OffsetDateTime) -> CreatePat {
    CreatePat {
        display_name: DisplayName::parse(name).unwrap(),
        scopes: Scopes::parse(scopes).unwrap(),
        valid_to,
        all_orgs: false,
    }
}

fn alice() -> OwnerId {
    OwnerId::parse(ALICE).unwrap()
}

/// Token sources that hand out one fixed token per identity (app tokens, hand-minted user tokens).
#[derive(Debug)]
struct Fixed(Arc<dyn TokenSource>);
impl TokenSources for Fixed {
    fn for_identity(&self, _: &OwnerId) -> Arc<dyn TokenSource> {
        self.0.clone()
    }
}

async fn fixed_token(env: &Env, upn: &str, minted: &serde_json::Value) -> Arc<Fixed> {
    let expires_at = OffsetDateTime::parse(
        minted["expires_at"].as_str().unwrap_or("2999-01-01T00:00:00Z"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or(env.clock.now() + time::Duration::minutes(30));
    let token =
        AccessToken { value: SecretString::from(minted["access_token"].as_str().unwrap().to_owned()), expires_at };
    Arc::new(Fixed(Arc::new(StaticToken::new(OwnerId::parse(upn).unwrap(), token, env.clock.clone()))))
}

#[tokio::test]
async fn pat_lifecycle_round_trip() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let valid_to = env.clock.now() + time::Duration::days(30);

    let created =
        api.create(&create_request("ci build (patrol:0123456789ab)", "vso.code vso.build", valid_to)).await.unwrap();
    let secret = created.token.expose_secret().to_owned();
    assert_eq!(secret.len(), 84, "the real PAT format is 84 characters");
    assert!(created.drift.is_empty(), "{:?}", created.drift);
    assert!(!created.pat.is_global());
    let id = created.pat.authorization_id;

    let listed = api.list(DisplayFilter::Active).await.unwrap();
    assert!(listed.iter().any(|p| p.authorization_id == id));
    let got = api.get(id).await.unwrap().expect("the new PAT is found");
    assert_eq!(got.scope.split_whitespace().count(), 2);

    let new_valid_to = env.clock.now() + time::Duration::days(10);
    let updated = api
        .update(&UpdatePat {
            authorization_id: id,
            display_name: None,
            scopes: None,
            valid_to: Some(new_valid_to),
            all_orgs: None,
        })
        .await
        .unwrap();
    assert!(updated.drift.is_empty(), "{:?}", updated.drift);
    assert!((updated.pat.valid_to - new_valid_to).abs() < time::Duration::seconds(1));

    api.revoke(id).await.unwrap();
    api.revoke(id).await.unwrap(); // revoking twice is not an error
    let revoked = api.list(DisplayFilter::Revoked).await.unwrap();
    assert!(revoked.iter().any(|p| p.authorization_id == id));
    assert!(!api.list(DisplayFilter::Active).await.unwrap().iter().any(|p| p.authorization_id == id));
    // A PAT that does not exist.
    let unknown = patrol::domain::AuthorizationId::from_uuid(uuid::Uuid::new_v4());
    assert!(api.get(unknown).await.unwrap().is_none());

    let debug = format!("{created:?} {updated:?}");
    assert!(!debug.contains(&secret), "Debug of a created PAT must not show its secret");
    env.assert_no_leaks(&debug).await;
}

#[tokio::test]
async fn list_follows_every_page_with_the_same_filters() {
    let env = Env::start().await;
    let valid_to = patrol::devops::wire::format_timestamp(env.clock.now() + time::Duration::days(20));
    for i in 0..230 {
        env.control_ok(
            "POST",
            "/_control/pats",
            json!({ "owner": ALICE, "organization": ORG, "displayName": format!("seeded-{i:03}"), "scope": "vso.code", "validTo": valid_to }),
        )
        .await;
    }
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let all = api.list(DisplayFilter::Active).await.unwrap();
    assert_eq!(all.len(), 230);
    let mut names: Vec<&str> = all.iter().map(|p| p.display_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 230, "no PAT twice across pages");
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn policies_refuse_and_clamping_is_reported() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());

    env.control_ok("PUT", "/_control/policies/tenant", json!({ "maxLifespanDays": 7, "restrictFullScoped": true }))
        .await;
    let asked = env.clock.now() + time::Duration::days(30);
    let created = api.create(&create_request("clamped", "vso.code", asked)).await.unwrap();
    match created.drift.as_slice() {
        [Drift::ValidToClamped { requested, granted }] => {
            assert_eq!(*requested, asked);
            assert!(*granted < asked - time::Duration::days(20), "granted {granted}");
        }
        other => panic!("expected a clamp, got {other:?}"),
    }

    let err = api.create(&create_request("full", "app_token", asked)).await.unwrap_err();
    match &err {
        DevOpsError::Refused { error, message } => {
            assert_eq!(*error, PatTokenError::FullScopePatPolicyViolation);
            assert!(message.is_some(), "7.2 carries patTokenErrorMessage");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());

    // 7.1 has no patTokenErrorMessage; the refusal still comes through.
    let v71 = env.connector_with(sessions.clone(), ApiVersion::V71).pats(&alice(), &env.org());
    match v71.create(&create_request("full71", "app_token", asked)).await.unwrap_err() {
        DevOpsError::Refused { error: PatTokenError::FullScopePatPolicyViolation, message: None } => {}
        other => panic!("{other:?}"),
    }
    env.assert_no_leaks(&format!("{err} {created:?}")).await;
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls_only() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let valid_to = env.clock.now() + time::Duration::days(5);

    env.fault_once(
        json!({ "kind": "status", "status": 503, "count": 2, "method": "GET", "pathContains": "tokens/pats" }),
    )
    .await;
    api.list(DisplayFilter::All).await.expect("List rides out two 503s");

    env.fault_once(json!({ "kind": "status", "status": 503, "method": "POST", "pathContains": "tokens/pats" })).await;
    match api.create(&create_request("after-503", "vso.code", valid_to)).await.unwrap_err() {
        DevOpsError::Uncertain { operation: "Pats_Create", .. } => {}
        other => panic!("a 5xx on Create must be Uncertain, got {other:?}"),
    }
    // The 503 came before processing: reconciliation finds nothing, so creating again is safe.
    let name = DisplayName::parse("after-503").unwrap();
    assert!(matches!(reconcile_create(api.as_ref(), &name, env.clock.now()).await.unwrap(), Reconciled::Absent));

    // Exhausted retries surface the service error.
    env.fault_once(
        json!({ "kind": "status", "status": 500, "count": 10, "method": "GET", "pathContains": "tokens/pats" }),
    )
    .await;
    match api.list(DisplayFilter::All).await.unwrap_err() {
        DevOpsError::Service { status: 500, .. } => {}
        other => panic!("{other:?}"),
    }
    env.control_ok("DELETE", "/_control/faults", serde_json::Value::Null).await;
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn a_lost_create_response_is_reconciled_by_listing_never_retried() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let request =
        create_request("rotation (patrol:aaaaaaaaaaaa)", "vso.packaging", env.clock.now() + time::Duration::days(5));
    let started = env.clock.now();

    env.fault_once(json!({ "kind": "loseResponse", "method": "POST", "pathContains": "tokens/pats" })).await;
    let err = api.create(&request).await.unwrap_err();
    assert!(matches!(err, DevOpsError::Uncertain { .. }), "{err:?}");
    // It happened on the service side, exactly once (no blind retry).
    let named = |pats: Vec<Pat>| pats.into_iter().filter(|p| p.display_name == request.display_name.as_str()).count();
    assert_eq!(named(api.list(DisplayFilter::All).await.unwrap()), 1);
    match reconcile_create(api.as_ref(), &request.display_name, started).await.unwrap() {
        Reconciled::Orphaned(p) => assert_eq!(p.len(), 1),
        other => panic!("{other:?}"),
    }

    // The helper: lose the answer again, reconcile (revoke the orphan), create again.
    env.fault_once(json!({ "kind": "loseResponse", "method": "POST", "pathContains": "tokens/pats" })).await;
    let request2 =
        create_request("rotation (patrol:bbbbbbbbbbbb)", "vso.packaging", env.clock.now() + time::Duration::days(5));
    let done = create_reconciling(api.as_ref(), &request2, env.clock.now(), 2).await.unwrap();
    assert_eq!(done.revoked_orphans.len(), 1);
    let active: Vec<Pat> = api.list(DisplayFilter::Active).await.unwrap();
    let live: Vec<&Pat> = active.iter().filter(|p| p.display_name == request2.display_name.as_str()).collect();
    assert_eq!(live.len(), 1, "exactly one live PAT, and it is the one whose secret we hold");
    assert_eq!(live[0].authorization_id, done.created.pat.authorization_id);
    env.assert_no_leaks(&format!("{err}")).await;
}

#[tokio::test]
async fn throttling_honours_retry_after_on_429_and_on_200() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let connector = env.connector(&sessions);
    let api = connector.pats(&alice(), &env.org());
    api.list(DisplayFilter::Active).await.unwrap(); // warm up (sign-in refresh)

    env.fault_once(json!({ "kind": "throttle", "retryAfterSecs": 1, "method": "GET", "pathContains": "tokens/pats" }))
        .await;
    let t = Instant::now();
    api.list(DisplayFilter::Active).await.expect("a 429 is waited out");
    assert!(t.elapsed() >= Duration::from_millis(950), "waited {:?}", t.elapsed());
    assert!(connector.limiter(&alice()).snapshot().1 >= 1, "the 429 was seen by the identity's limiter");

    // Create after a 429 is safe to resend (nothing happened) and is resent.
    env.fault_once(json!({ "kind": "throttle", "retryAfterSecs": 1, "method": "POST", "pathContains": "tokens/pats" }))
        .await;
    api.create(&create_request("after-429", "vso.code", env.clock.now() + time::Duration::days(3))).await.unwrap();

    // Near the limit the service sends Retry-After on a 200; the next call of the same identity waits.
    env.control_ok(
        "PUT",
        "/_control/ratelimit",
        json!({ "enabled": true, "limitTstu": 4.0, "blockTstu": 1000.0, "windowSecs": 2, "tstuPerRequest": 1.0,
                "delayMsPerTstu": 1, "maxDelayMs": 10, "warnFraction": 0.25 }),
    )
    .await;
    let mut saw_retry_after_on_200 = false;
    for _ in 0..4 {
        api.list(DisplayFilter::Active).await.unwrap();
        let (last, _) = connector.limiter(&alice()).snapshot();
        let last = last.unwrap();
        if last.status == 200 && last.retry_after.is_some() {
            saw_retry_after_on_200 = true;
            let wait = connector.limiter(&alice()).wait_time();
            assert!(!wait.is_zero(), "Retry-After on a 200 holds the next call");
            let t = Instant::now();
            api.list(DisplayFilter::Active).await.unwrap();
            assert!(t.elapsed() >= wait.saturating_sub(Duration::from_millis(50)));
            break;
        }
    }
    assert!(saw_retry_after_on_200, "the emulator sent no Retry-After on a 200 near the limit");

    // A Retry-After longer than the policy allows fails fast as Throttled.
    env.control_ok("PUT", "/_control/ratelimit", json!({ "enabled": false })).await;
    env.fault_once(
        json!({ "kind": "throttle", "retryAfterSecs": 3600, "method": "GET", "pathContains": "tokens/pats" }),
    )
    .await;
    let t = Instant::now();
    match api.list(DisplayFilter::Active).await.unwrap_err() {
        DevOpsError::Throttled { retry_after_secs, .. } => assert!(retry_after_secs >= 3000),
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}\n{}",
        t.elapsed(),
        env.logs.text().lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn latency_is_tolerated() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    env.control_ok("PUT", "/_control/faults", json!({ "latencyMs": 200, "jitterMs": 100, "services": ["devops"] }))
        .await;
    let t = Instant::now();
    api.create(&create_request("slow", "vso.code", env.clock.now() + time::Duration::days(3))).await.unwrap();
    api.list(DisplayFilter::Active).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400));
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn sign_in_page_pats_and_app_tokens_are_refused() {
    let env = Env::start().await;
    let list_url = env.devops.join(&format!("{ORG}/_apis/tokens/pats?api-version=7.2-preview.1")).unwrap();

    // Without X-TFS-FedAuthRedirect: Suppress an unauthenticated call gets the 203 sign-in page; the
    // client's classification turns that real answer into an authentication failure.
    let resp = env.raw.get(list_url.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 203);
    let answer = patrol::devops::http::Answer {
        status: 203,
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap(),
    };
    let limiter = patrol::devops::ratelimit::RateLimiter::new();
    assert!(matches!(
        patrol::devops::http::classify("Pats_List", answer, &limiter),
        Err(DevOpsError::Unauthorized(m)) if m.contains("203")
    ));

    // An application (service principal) token: refused with the real message, after one fresh try.
    let app = env
        .control_ok(
            "POST",
            "/_control/app-tokens",
            json!({ "clientId": SP_CLIENT_ID, "resource": patrol::auth::DEVOPS_RESOURCE }),
        )
        .await;
    let fixed = fixed_token(&env, "ci-sp@contoso.com", &app).await;
    let api =
        env.connector_with(fixed, ApiVersion::Auto).pats(&OwnerId::parse("ci-sp@contoso.com").unwrap(), &env.org());
    let err = api.list(DisplayFilter::Active).await.unwrap_err();
    assert!(matches!(&err, DevOpsError::Unauthorized(m) if m.contains("Service principals")), "{err:?}");

    // A garbage bearer: 401 (the client always sends Suppress, so never the HTML page).
    let bogus = json!({ "access_token": "not-a-token" });
    let api = env.connector_with(fixed_token(&env, ALICE, &bogus).await, ApiVersion::Auto).pats(&alice(), &env.org());
    assert!(matches!(api.list(DisplayFilter::Active).await.unwrap_err(), DevOpsError::Unauthorized(_)));

    // A signed-in user the organization does not know: 401 after one fresh token, counted by the session.
    env.sign_in(CAROL).await;
    let sessions = env.sessions();
    let carol = OwnerId::parse(CAROL).unwrap();
    let api = env.connector(&sessions).pats(&carol, &env.org());
    assert!(
        matches!(api.list(DisplayFilter::Active).await.unwrap_err(), DevOpsError::Unauthorized(m) if m.contains("TF400813"))
    );
    assert_eq!(sessions.session(&carol).refused_count(), 1, "the refused token was dropped and replaced once");
    assert_eq!(sessions.session(&carol).refresh_count().await, 2);

    // A PAT over Basic auth is refused by the PAT API.
    let seeded = env
        .control_ok(
            "POST",
            "/_control/pats",
            json!({ "owner": ALICE, "organization": ORG, "displayName": "consumer", "scope": "vso.code",
                    "validTo": patrol::devops::wire::format_timestamp(env.clock.now() + time::Duration::days(3)) }),
        )
        .await;
    let pat = seeded["token"].as_str().unwrap();
    let resp = env
        .raw
        .get(list_url)
        .basic_auth("", Some(pat))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    env.assert_no_leaks(&format!("{err}")).await;
}

#[tokio::test]
async fn token_admin_lists_by_descriptor_and_revokes_in_batches() {
    let env = Env::start().await;
    let valid_to = patrol::devops::wire::format_timestamp(env.clock.now() + time::Duration::days(20));
    for i in 0..130 {
        env.control_ok(
            "POST",
            "/_control/pats",
            json!({ "owner": ALICE, "organization": ORG, "displayName": format!("t{i}"), "scope": "vso.code", "validTo": valid_to }),
        )
        .await;
    }
    env.sign_in(ADMIN).await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let connector = env.connector(&sessions);
    let admin = connector.token_admin(&OwnerId::parse(ADMIN).unwrap(), &env.org());
    use base64::Engine;
    let descriptor = format!("aad.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ALICE_ID));

    let first = admin.list_page(&descriptor, None).await.unwrap();
    assert!(first.continuation_token.is_some(), "130 tokens take more than one page");
    let all = admin.list_all(&descriptor).await.unwrap();
    assert_eq!(all.len(), 130);

    let ids: Vec<_> = all.iter().map(|t| t.authorization_id).collect();
    assert_eq!(admin.revoke(&ids).await.unwrap(), 130);
    let alice_api = connector.pats(&alice(), &env.org());
    assert!(alice_api.list(DisplayFilter::Active).await.unwrap().is_empty());
    admin.create_revocation_rule("vso.code", None).await.unwrap();

    // Not an administrator: refused.
    let not_admin = connector.token_admin(&alice(), &env.org());
    assert!(not_admin.list_page(&descriptor, None).await.is_err());
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn audit_log_streams_page_by_page() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    env.sign_in(ADMIN).await;
    let sessions = env.sessions();
    let connector = env.connector(&sessions);
    let api = connector.pats(&alice(), &env.org());
    let start = env.clock.now() - time::Duration::minutes(1);
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = api
            .create(&create_request(&format!("audited-{i}"), "vso.code", env.clock.now() + time::Duration::days(3)))
            .await
            .unwrap();
        ids.push(c.pat.authorization_id);
        if i == 0 {
            // A consumer uses the PAT for an audited action.
            env.control_ok(
                "POST",
                "/_control/pats/use",
                json!({ "token": c.token.expose_secret(), "organization": ORG, "ipAddress": "203.0.113.7", "userAgent": "curl/8.5" }),
            )
            .await;
        }
    }
    api.revoke(ids[1]).await.unwrap();
    env.advance(5).await;

    let audit = connector.audit(&OwnerId::parse(ADMIN).unwrap(), &env.org());
    let mut query = AuditQuery::window(start, env.clock.now() + time::Duration::minutes(1));
    query.batch_size = 2;
    let mut pages = Box::pin(audit.pages(query.clone()));
    let mut entries = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        assert!(page.entries.len() <= 2);
        page_count += 1;
        entries.extend(page.entries);
    }
    assert!(page_count >= 4, "{page_count} pages");
    let creates = entries.iter().filter(|e| e.action_id == "Token.PatCreateEvent").count();
    assert_eq!(creates, 5);
    assert!(entries.iter().any(|e| e.action_id == "Token.PatRevokeEvent"));
    let used = entries.iter().find(|e| e.by_pat()).expect("the PAT-authenticated action is in the log");
    assert_eq!(used.authorization_id(), Some(ids[0]));
    assert_eq!(used.ip_address.as_deref(), Some("203.0.113.7"));
    let ids_seen: std::collections::HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids_seen.len(), entries.len(), "no entry twice across pages");
    assert_eq!(audit.query_all(query).await.unwrap().len(), entries.len());

    // Reading the audit log needs an administrator.
    let denied =
        connector.audit(&alice(), &env.org()).query_page(&AuditQuery::window(start, env.clock.now()), None).await;
    assert!(denied.is_err());
    env.assert_no_leaks("").await;
}
