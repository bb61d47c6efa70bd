//! Delegated sign-in against patrol-emulator's Entra: device-code login, refresh-token rotation stored as
//! new versions, proactive refresh so a long run never sends an expired access token, single-flight
//! refresh, and "sign in again" on revoked/expired refresh tokens or required interaction.

use crate::client_env::*;
use patrol::auth::TokenSource;
use patrol::auth::device_code::{LoginError, LoginOptions, login};
use patrol::auth::session::{TAG_REFRESHED_AT, TAG_SIGNED_IN_AT, refresh_status};
use patrol::devops::{Connector, DevOpsError, DisplayFilter};
use patrol::domain::OwnerId;
use patrol::store::{REFRESH_TOKEN_CONTENT_TYPE, SecretStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn alice() -> OwnerId {
    OwnerId::parse(ALICE).unwrap()
}

async fn versions(env: &Env) -> usize {
    env.store.list_versions(&alice().refresh_token_secret()).await.unwrap().len()
}

#[tokio::test]
async fn device_code_login_stores_the_refresh_token() {
    let env = Env::start().await;
    let entra = env.entra_client();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let options = LoginOptions { poll_interval: Some(Duration::from_millis(50)), ..Default::default() };
    let store = env.store.clone();
    let clock = env.clock.clone();
    let owner = alice();
    let login_task = async move {
        login(&entra, store.as_ref(), &owner, &clock, &options, |p| {
            assert!(p.message.contains(&p.user_code));
            let _ = tx.send(p.user_code.clone());
        })
        .await
    };
    let approve = async {
        let code = rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await; // a few authorization_pending polls first
        env.control_ok("POST", "/_control/devicecodes/approve", json!({ "userCode": code, "upn": ALICE })).await;
    };
    let (outcome, ()) = tokio::join!(login_task, approve);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.owner, alice());

    let stored = env.store.get(&alice().refresh_token_secret(), None).await.unwrap().unwrap();
    assert_eq!(stored.properties.version, outcome.version);
    assert_eq!(stored.properties.content_type.as_deref(), Some(REFRESH_TOKEN_CONTENT_TYPE));
    assert!(stored.properties.tags.contains_key(TAG_SIGNED_IN_AT));
    assert!(stored.properties.tags.contains_key(TAG_REFRESHED_AT));
    let status = refresh_status(env.store.as_ref(), &alice(), env.clock.now()).await.unwrap().unwrap();
    assert!(status.signed_in_at.is_some());
    assert_eq!(status.refresh_token_age_days, Some(0));

    // The stored refresh token works.
    let sessions = env.sessions();
    let pats = env.connector(&sessions).pats(&alice(), &env.org());
    pats.list(DisplayFilter::Active).await.unwrap();
    env.assert_no_leaks(&format!("{outcome:?} {status:?}")).await;
}

#[tokio::test]
async fn declined_sign_in_is_reported() {
    let env = Env::start().await;
    let entra = env.entra_client();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let options = LoginOptions { poll_interval: Some(Duration::from_millis(50)), ..Default::default() };
    let store = env.store.clone();
    let clock = env.clock.clone();
    let owner = alice();
    let login_task = async move {
        login(&entra, store.as_ref(), &owner, &clock, &options, |p| {
            let _ = tx.send(p.user_code.clone());
        })
        .await
    };
    let deny = async {
        let code = rx.await.unwrap();
        env.control_ok("POST", "/_control/devicecodes/deny", json!({ "userCode": code })).await;
    };
    let (outcome, ()) = tokio::join!(login_task, deny);
    assert!(matches!(outcome, Err(LoginError::Declined)), "{outcome:?}");
    assert!(env.store.get(&alice().refresh_token_secret(), None).await.unwrap().is_none());
}

#[tokio::test]
async fn refresh_tokens_rotate_and_every_one_is_stored() {
    let env = Env::start().await;
    env.control_ok(
        "PUT",
        "/_control/lifetimes",
        json!({ "accessTokenSecs": 600, "refreshTokenSecs": 7776000, "deviceCodeSecs": 900 }),
    )
    .await;
    env.sign_in(ALICE).await;
    assert_eq!(versions(&env).await, 1);
    let sessions = env.sessions();
    let session = sessions.session(&alice());

    let first = session.access_token().await.unwrap();
    assert_eq!(session.refresh_count().await, 1);
    assert_eq!(versions(&env).await, 2, "the rotated refresh token is a new version");
    // Within the margin nothing is refreshed.
    env.advance(240).await;
    session.access_token().await.unwrap();
    assert_eq!(session.refresh_count().await, 1);
    // Less than five minutes left: refreshed before use.
    env.advance(120).await;
    let second = session.access_token().await.unwrap();
    assert_eq!(session.refresh_count().await, 2);
    assert!(second.expires_at > first.expires_at);
    assert_eq!(versions(&env).await, 3);
    let all = env.store.list_versions(&alice().refresh_token_secret()).await.unwrap();
    assert_eq!(all.iter().filter(|v| v.enabled).count(), 1, "superseded refresh tokens are disabled");

    // A new session (another process) starts from the newest stored version; the older ones are spent.
    let again = env.sessions();
    again.session(&alice()).access_token().await.expect("the newest stored refresh token works");
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn a_long_run_never_sends_an_expired_access_token() {
    let env = Env::start().await;
    // Access tokens of ten minutes; a 90-minute run in 2-minute steps.
    env.control_ok(
        "PUT",
        "/_control/lifetimes",
        json!({ "accessTokenSecs": 600, "refreshTokenSecs": 7776000, "deviceCodeSecs": 900 }),
    )
    .await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    for _ in 0..45 {
        api.list(DisplayFilter::Active).await.unwrap();
        env.advance(120).await;
    }
    assert_eq!(
        sessions.session(&alice()).refused_count(),
        0,
        "Azure DevOps saw an expired or refused access token during the run"
    );
    let refreshes = sessions.session(&alice()).refresh_count().await;
    // Refresh whenever < 5 of the 10 minutes remain: about every 6 minutes over 90 minutes.
    assert!((12..=30).contains(&refreshes), "{refreshes} refreshes");
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let session = sessions.session(&alice());
    let calls = (0..20).map(|_| session.access_token());
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "a racing refresh would have spent the rotated token");
    assert_eq!(session.refresh_count().await, 1);

    // Through the connector too: many PAT calls at once, after the token expired.
    env.advance(3600).await;
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let lists = (0..10).map(|_| api.list(DisplayFilter::Active));
    assert!(futures::future::join_all(lists).await.iter().all(Result::is_ok));
    assert_eq!(session.refresh_count().await, 2);
    env.assert_no_leaks("").await;
}

async fn expect_sign_in_required(env: &Env, why: &str) {
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    let err = api.list(DisplayFilter::Active).await.unwrap_err();
    match &err {
        DevOpsError::SignInRequired { owner, reason } => {
            assert_eq!(owner, &alice());
            assert!(!reason.is_empty());
        }
        other => panic!("{why}: expected SignInRequired, got {other:?}"),
    }
    assert!(err.to_string().contains("patrol login"), "{err}");
    assert!(!err.is_transient());
    env.assert_no_leaks(&err.to_string()).await;
}

#[tokio::test]
async fn revoked_refresh_token_means_sign_in_again() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    env.control_ok("POST", "/_control/refresh-tokens/revoke", json!({ "upn": ALICE })).await;
    expect_sign_in_required(&env, "revoked").await;
}

#[tokio::test]
async fn expired_refresh_token_means_sign_in_again() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    env.control_ok("POST", "/_control/refresh-tokens/expire", json!({ "upn": ALICE })).await;
    expect_sign_in_required(&env, "expired").await;
}

#[tokio::test]
async fn required_interaction_means_sign_in_again() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    env.control_ok("PUT", &format!("/_control/users/{ALICE}/interaction"), json!({ "required": true })).await;
    expect_sign_in_required(&env, "interaction").await;
}

#[tokio::test]
async fn no_stored_refresh_token_means_sign_in() {
    let env = Env::start().await;
    env.mint(ALICE, None).await; // so the leak scan has secrets to look for
    expect_sign_in_required(&env, "never signed in").await;
}

#[tokio::test]
async fn a_refresh_in_flight_mid_run_is_invisible_to_callers() {
    // The access token expires while a run is going; the next call refreshes first, and the session keeps
    // working after the refresh token was rotated many times.
    let env = Env::start().await;
    env.control_ok(
        "PUT",
        "/_control/lifetimes",
        json!({ "accessTokenSecs": 60, "refreshTokenSecs": 7776000, "deviceCodeSecs": 900 }),
    )
    .await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let api = env.connector(&sessions).pats(&alice(), &env.org());
    for _ in 0..5 {
        api.list(DisplayFilter::Active).await.unwrap();
        env.advance(61).await;
    }
    // Lifetime below the margin: each call refreshes, and nothing expired was sent.
    assert!(sessions.session(&alice()).refresh_count().await >= 5);
    assert_eq!(sessions.session(&alice()).refused_count(), 0);
    env.assert_no_leaks("").await;
}

#[tokio::test]
async fn entra_outages_are_retried_and_a_persistent_one_is_transient() {
    let env = Env::start().await;
    env.sign_in(ALICE).await;
    let sessions = env.sessions();
    let session = sessions.session(&alice());

    // One 503 from Entra: the refresh is asked again and succeeds.
    env.fault_once(json!({ "kind": "status", "status": 503, "service": "entra", "pathContains": "token" })).await;
    session.access_token().await.expect("a single Entra 503 is ridden out");
    assert_eq!(versions(&env).await, 2);

    // Entra down for longer: a transient error, not "sign in again", and the refresh token survives.
    env.advance(3600).await;
    env.fault_once(json!({ "kind": "status", "status": 503, "count": 5, "service": "entra", "pathContains": "token" }))
        .await;
    let err = session.access_token().await.unwrap_err();
    assert!(matches!(err, DevOpsError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    env.control_ok("DELETE", "/_control/faults", serde_json::Value::Null).await;
    session.access_token().await.expect("the refresh token was kept for the next try");
    assert_eq!(versions(&env).await, 3);
    env.assert_no_leaks(&err.to_string()).await;
}

#[tokio::test]
async fn a_rotated_token_that_could_not_be_stored_is_kept_and_stored_later() {
    // The store refuses writes for a while (e.g. Key Vault throttling); the session must not lose the
    // rotated refresh token Entra handed out, because the old one is spent.
    #[derive(Debug)]
    struct Flaky {
        inner: Arc<patrol::store::memory::MemoryStore>,
        fail_writes: std::sync::atomic::AtomicBool,
    }
    #[async_trait::async_trait]
    impl SecretStore for Flaky {
        async fn set(
            &self,
            name: &patrol::domain::SecretName,
            value: &secrecy::SecretString,
            new: patrol::store::NewVersion,
        ) -> Result<patrol::store::VersionProperties, patrol::store::StoreError> {
            if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(patrol::store::StoreError::Throttled { retry_after_secs: 1 });
            }
            self.inner.set(name, value, new).await
        }
        async fn get(
            &self,
            name: &patrol::domain::SecretName,
            version: Option<&str>,
        ) -> Result<Option<patrol::store::StoredSecret>, patrol::store::StoreError> {
            self.inner.get(name, version).await
        }
        async fn list(&self) -> Result<Vec<patrol::store::SecretSummary>, patrol::store::StoreError> {
            self.inner.list().await
        }
        async fn list_versions(
            &self,
            name: &patrol::domain::SecretName,
        ) -> Result<Vec<patrol::store::VersionProperties>, patrol::store::StoreError> {
            self.inner.list_versions(name).await
        }
        async fn update(
            &self,
            name: &patrol::domain::SecretName,
            version: &str,
            update: patrol::store::PropertiesUpdate,
        ) -> Result<patrol::store::VersionProperties, patrol::store::StoreError> {
            self.inner.update(name, version, update).await
        }
    }

    let env = Env::start().await;
    env.control_ok(
        "PUT",
        "/_control/lifetimes",
        json!({ "accessTokenSecs": 600, "refreshTokenSecs": 7776000, "deviceCodeSecs": 900 }),
    )
    .await;
    env.sign_in(ALICE).await;
    let flaky = Arc::new(Flaky { inner: env.store.clone(), fail_writes: std::sync::atomic::AtomicBool::new(true) });
    let store: Arc<dyn SecretStore> = flaky.clone();
    let sessions = patrol::auth::session::Sessions::new(
        env.entra_client(),
        store,
        env.clock.clone(),
        patrol::auth::session::SessionOptions::default(),
    );
    let session = sessions.session(&alice());
    session.access_token().await.expect("a store failure does not fail the caller");
    assert_eq!(versions(&env).await, 1, "nothing could be stored yet");
    assert!(env.logs.text().contains("could not be stored"));
    env.advance(360).await;
    session.access_token().await.expect("the in-memory rotated token is used");
    flaky.fail_writes.store(false, std::sync::atomic::Ordering::SeqCst);
    env.advance(360).await;
    session.access_token().await.unwrap();
    assert_eq!(versions(&env).await, 2, "stored once the store works again");
    // And a fresh process can carry on from what was stored.
    env.sessions().session(&alice()).access_token().await.expect("the stored token is the live one");
    env.assert_no_leaks("").await;
}
