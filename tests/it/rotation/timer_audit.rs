//! `RotateTimer` also runs the audit pass when the policy has an `[audit]` section: a managed PAT used from
//! outside the allowed ranges is found by the next timer run of a real `patrol serve` process and announced
//! (mailbox), while patrol's own creation of that PAT is not mistaken for someone else's.

use super::two_instances::{invoke, start_instance, timer};
use super::world::{ORG, OWNER, Setup, World, admin_scopes, admin_seed, advance_clock, use_pat};
use patrol::domain::SecretName;
use secrecy::ExposeSecret;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_polls_the_audit_log_and_announces_findings() {
    scenario("response = { critical = \"alert\" }\n").await;
}

/// With `response = { critical = "rotate" }` (the default for critical findings) the finding rotates the token through the engine's state
/// machine (compromised: no grace) and revokes the suspect PAT in the same timer run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_finding_rotates_the_token_and_revokes_the_suspect() {
    scenario("response = { critical = \"rotate\" }\n").await;
}

async fn scenario(response: &str) {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"audited-pat\"\ndisplay_name = \"Audited\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\nnotify = [\"email:security@fabrikam.test\"]\n{response}"
    );
    let mut setup = Setup::start(admin_seed(), &policy).await;
    // The owner is also the administrator who reads the audit log (PATROL_AUDIT_READER).
    setup.set("PATROL_AUDIT_READER", OWNER);
    let mailbox = setup.mailbox();
    // The owner also reads the audit log (an organization administrator consenting to vso.auditlog).
    let w = World::open(setup, Some(admin_scopes()), false).await;
    let (emu, env) = (&w.emu, &w.env);

    let instance = start_instance(env).await;
    let first = invoke(&instance, "RotateTimer", timer(), emu.clock().now()).await;
    let detail = &first["ReturnValue"]["detail"];
    assert_eq!(detail["rotated"], 1, "onboarding: {first}");
    assert_eq!(detail["audit"]["errors"], json!([]), "{first}");
    assert_eq!(detail["audit"]["findings"], 0, "patrol's own Create is not a finding: {first}");

    // A consumer uses the stored PAT from outside the allowed ranges.
    let (_, value) = w.current("audited-pat").await.unwrap();
    let used = json!({ "token": value, "organization": ORG, "ipAddress": "203.0.113.9", "userAgent": "git/2.45" });
    assert!(use_pat(&reqwest::Client::new(), emu, used).await);
    advance_clock(&reqwest::Client::new(), emu, time::Duration::seconds(60)).await;

    let second = invoke(&instance, "RotateTimer", timer(), emu.clock().now()).await;
    let audit = &second["ReturnValue"]["detail"]["audit"];
    assert_eq!(audit["findings"], 1, "{second}");
    assert_eq!(audit["organizations"][0]["organization"], ORG, "{second}");
    assert_eq!(audit["notifications_delivered"], true, "{second}");
    let mail = std::fs::read_to_string(&mailbox).unwrap();
    assert!(mail.contains("security@fabrikam.test"), "the finding went to the audit recipients");
    assert!(mail.contains("203.0.113.9"), "the evidence names the caller's address");
    assert!(!mail.contains(&value) && !second.to_string().contains(&value), "a PAT value leaked");
    let secret = SecretName::parse("audited-pat").unwrap();
    let now_current = w.local.store.get(&secret, None).await.unwrap().unwrap();
    if response.contains("alert") {
        assert!(w.authenticates(&value).await, "the suspect is untouched when the response is alert");
    } else {
        assert_eq!(audit["executed"], 1, "{second}");
        assert!(!w.authenticates(&value).await, "the suspect PAT was revoked");
        let new_value = now_current.value.expose_secret().to_owned();
        assert_ne!(new_value, value, "the secret holds a new PAT");
        assert!(w.authenticates(&new_value).await, "the new PAT works");
        assert_eq!(w.local.store.list_versions(&secret).await.unwrap().len(), 2, "one new vault version");
        assert!(!mail.contains(&new_value), "a PAT value leaked");
    }
    drop(instance);
    w.emu.shutdown().await.unwrap();
}

/// Issue 20, defect 2, through the timer of a real `patrol serve`: an existing PAT onboarded the documented
/// way (its value in the vault with only an `authorization-id` tag) is watched from the first run — the
/// run adopts it without rotating, and its use from a foreign address is found by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pat_onboarded_with_its_authorization_id_tag_is_watched_from_the_first_run() {
    use patrol::store::{NewVersion, PAT_CONTENT_TYPE, tags};
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"legacy-pat\"\ndisplay_name = \"Legacy\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\nresponse = {{ critical = \"alert\" }}\n"
    );
    let mut setup = Setup::start(admin_seed(), &policy).await;
    setup.set("PATROL_AUDIT_READER", OWNER);
    let w = World::open(setup, Some(admin_scopes()), false).await;
    let (emu, env) = (&w.emu, &w.env);
    // The owner's existing PAT, created before patrol (no audit event), valid 20 more days: not due.
    let now = emu.clock().now();
    let r = w
        .post(
            "pats",
            json!({ "owner": OWNER, "organization": ORG, "displayName": "Legacy", "scope": "vso.code",
                    "validFrom": patrol_emulator::wire::format_time(now - time::Duration::days(10)),
                    "validTo": patrol_emulator::wire::format_time(now + time::Duration::days(20)) }),
        )
        .await;
    let minted: serde_json::Value = r.json().await.unwrap();
    let (id, value) = (minted["authorizationId"].as_str().unwrap(), minted["token"].as_str().unwrap().to_owned());
    let mut t = std::collections::BTreeMap::new();
    t.insert(tags::AUTHORIZATION_ID.to_owned(), id.to_owned());
    let new = NewVersion { content_type: Some(PAT_CONTENT_TYPE.into()), tags: t, ..Default::default() };
    let secret = SecretName::parse("legacy-pat").unwrap();
    w.local.store.set(&secret, &secrecy::SecretString::from(value.clone()), new).await.unwrap();

    let instance = start_instance(env).await;
    let first = invoke(&instance, "RotateTimer", timer(), emu.clock().now()).await;
    let detail = &first["ReturnValue"]["detail"];
    assert_eq!(detail["rotated"], 0, "not due: adopted, not rotated: {first}");
    assert_eq!(detail["audit"]["organizations"][0]["organization"], ORG, "watched from the first run: {first}");
    assert_eq!(detail["audit"]["errors"], json!([]), "{first}");

    let used = json!({ "token": value, "organization": ORG, "ipAddress": "203.0.113.66", "userAgent": "git/2.45" });
    assert!(use_pat(&reqwest::Client::new(), emu, used).await);
    advance_clock(&reqwest::Client::new(), emu, time::Duration::seconds(60)).await;
    let second = invoke(&instance, "RotateTimer", timer(), emu.clock().now()).await;
    let audit = &second["ReturnValue"]["detail"]["audit"];
    assert_eq!(audit["findings"], 1, "the onboarded PAT's foreign use was found: {second}");
    assert!(second.to_string().contains(ORG) && !second.to_string().contains(&value), "{second}");
    drop(instance);
    w.emu.shutdown().await.unwrap();
}
