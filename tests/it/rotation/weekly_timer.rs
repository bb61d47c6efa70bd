//! The weekly report through the real timer: a real `patrol serve` process gets `RotateTimer` as the
//! Functions host sends it, with `PATROL_REPORT_RECIPIENTS` and SMTP (with AUTH) pointing at a real local
//! aiosmtpd. The report arrives once — with the PATs created, rotated and revoked that week, their scopes
//! and expiries, and the audit findings — is not sent again by later timers in the same week (last-sent
//! persisted in the state store), and is sent again once the virtual clock has moved a week. Neither the
//! SMTP password nor any PAT or token value appears in patrol's logs, its answers or the mail.

use super::two_instances::{Instance, invoke, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, admin_scopes, admin_seed, advance_clock};
use crate::notify::{SinkOpts, SmtpSink};
use patrol::domain::SecretName;
use patrol::rotation::engine::RunOptions;
use patrol::store::tags;
use patrol_emulator::Emulator;
use serde_json::{Value, json};

/// `RotateTimer` as the host fires it at the emulator's current time; returns the envelope.
async fn fire(i: &Instance, emu: &Emulator) -> Value {
    invoke(i, "RotateTimer", timer(), emu.clock().now()).await
}

fn weekly_mails(sink: &SmtpSink) -> Vec<Value> {
    sink.messages()
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap_or("").contains("patrol weekly report"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_mails_the_weekly_report_once_a_week() {
    // "weekly-short" is rotated by an operator (RotateHttp, force) on day 3 and its previous PAT is revoked a
    // day after that: within the first week, the report has a rotation and a revocation.
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"weekly-api\"\ndisplay_name = \"Weekly API\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [[token]]\nsecret = \"weekly-short\"\ndisplay_name = \"Weekly short\"\nscopes = \"vso.build\"\n\
         validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\
         [audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\nnotify = [\"email:security@fabrikam.test\"]\n\
         response = {{ critical = \"alert\" }}\n"
    );
    let mut setup = Setup::start(admin_seed(), &policy).await;
    // The owner is also the administrator who reads the audit log (PATROL_AUDIT_READER).
    setup.set("PATROL_AUDIT_READER", OWNER);
    let password = format!("smtp-{}", uuid::Uuid::new_v4().simple());
    let sink = SmtpSink::start(SinkOpts { auth: Some(("patrol-mailer", &password)), ..Default::default() });
    for (k, v) in [
        ("PATROL_SMTP_HOST", "127.0.0.1".to_owned()),
        ("PATROL_SMTP_PORT", sink.port.to_string()),
        ("PATROL_SMTP_TLS", "none".to_owned()),
        ("PATROL_SMTP_USERNAME", "patrol-mailer".to_owned()),
        ("PATROL_SMTP_PASSWORD", password.clone()),
        ("PATROL_SMTP_FROM", "patrol@contoso.com".to_owned()),
        ("PATROL_REPORT_RECIPIENTS", "email:weekly@fabrikam.test".to_owned()),
    ] {
        setup.set(k, v);
    }
    let w = World::open(setup, Some(admin_scopes()), false).await;
    let (emu, local) = (&w.emu, &w.local);
    // Someone loosens an organization policy: the first timer's audit pass finds it.
    let loosened =
        json!({ "actionId": "OrganizationPolicy.PolicyValueUpdated", "actorUpn": OWNER, "ipAddress": "198.51.100.7" });
    let r = w.post(&format!("orgs/{ORG}/audit"), loosened).await;
    assert!(r.status().is_success());

    // Onboarding (as `patrol rotate` would do it) creates both PATs before the Function App's first timer,
    // so that timer's audit pass, which runs before rotation, already watches them.
    let onboarding = local.engine().unwrap().run(RunOptions::default()).await.unwrap();
    assert_eq!(onboarding.rotated, 2, "{}", onboarding.line());
    let log = w.dir.path().join("serve.log");
    let instance = start_instance_logging(&w.env, &log).await;
    let mut answers = Vec::new();

    // Week 1, day 0: the first report goes out at once (none was ever sent).
    let first = fire(&instance, emu).await;
    answers.push(first.clone());
    let detail = &first["ReturnValue"]["detail"];
    assert_eq!(detail["rotated"], 0, "{first}");
    assert!(detail["audit"]["findings"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(detail["weekly_report"]["outcome"], "sent", "{first}");
    assert_eq!(detail["weekly_report"]["delivered"], 1, "{first}");
    let mails = weekly_mails(&sink);
    assert_eq!(mails.len(), 1, "one weekly report");
    let m = &mails[0];
    assert_eq!(m["rcpt_tos"], json!(["weekly@fabrikam.test"]));
    assert_eq!(m["auth_user"], "patrol-mailer", "SMTP AUTH was used");
    let text = m["text"].as_str().unwrap();
    for secret in ["weekly-api", "weekly-short"] {
        let cur = local.store.get(&SecretName::parse(secret).unwrap(), None).await.unwrap().unwrap();
        let id = &cur.properties.tags[tags::AUTHORIZATION_ID];
        let valid_to = &cur.properties.tags[tags::VALID_TO][..10];
        assert!(text.contains(id.as_str()), "{secret}: its new PAT is not in the report:\n{text}");
        assert!(text.contains(valid_to), "{secret}: its expiry {valid_to} is not in the report:\n{text}");
    }
    assert!(text.contains("created (missing)"), "created PATs are listed:\n{text}");
    assert!(text.contains("`vso.code`") && text.contains("`vso.build`"), "scopes are listed:\n{text}");
    assert!(text.contains("policy_change"), "the audit finding is listed:\n{text}");
    assert!(m["html"].as_str().unwrap().contains("Weekly short"), "the HTML part has the inventory");

    // A second timer in the same week: not sent again (the last-sent time is persisted).
    advance_clock(&reqwest::Client::new(), emu, time::Duration::minutes(5)).await;
    let again = fire(&instance, emu).await;
    answers.push(again.clone());
    assert_eq!(again["ReturnValue"]["detail"]["weekly_report"]["outcome"], "not_due", "{again}");
    // Day 3 and day 5: an operator rotates the short token (RotateHttp, force). The second run also revokes
    // the first previous PAT (one day of grace, over) — a PAT the secret's tags no longer name, which the
    // audit pass must still know as patrol's own revocation (from the lifecycle log).
    let force = json!({ "req": { "Url": "http://localhost/api/rotate/weekly-short?force=true", "Method": "POST",
        "Query": { "force": "true" }, "Headers": {}, "Params": { "secret": "weekly-short" } } });
    for (day, revoked) in [(3, 0), (2, 1)] {
        advance_clock(&reqwest::Client::new(), emu, time::Duration::days(day)).await;
        let rotated = invoke(&instance, "RotateHttp", force.clone(), emu.clock().now()).await;
        answers.push(rotated.clone());
        let body: Value = serde_json::from_str(rotated["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!((&body["detail"]["rotated"], &body["detail"]["revoked"]), (&json!(1), &json!(revoked)), "{rotated}");
        let quiet = fire(&instance, emu).await;
        answers.push(quiet.clone());
        assert_eq!(quiet["ReturnValue"]["detail"]["weekly_report"]["outcome"], "not_due", "{quiet}");
    }
    assert_eq!(weekly_mails(&sink).len(), 1, "sent again within the week");

    // A week after the first: sent again, with the week's rotation and revocation.
    advance_clock(&reqwest::Client::new(), emu, time::Duration::days(2)).await;
    let next = fire(&instance, emu).await;
    answers.push(next.clone());
    assert_eq!(next["ReturnValue"]["detail"]["weekly_report"]["outcome"], "sent", "{next}");
    let mails = weekly_mails(&sink);
    assert_eq!(mails.len(), 2);
    let text = mails[1]["text"].as_str().unwrap();
    assert!(text.contains("rotated (forced)"), "the rotation is listed:\n{text}");
    assert!(text.contains("revoked (previous PAT, grace over)"), "the revocation is listed:\n{text}");
    // patrol's own revocation (from the lifecycle log) is not mistaken for someone else's.
    assert!(!text.contains("foreign_lifecycle"), "patrol's own revocation was reported as foreign:\n{text}");
    let short = local.store.get(&SecretName::parse("weekly-short").unwrap(), None).await.unwrap().unwrap();
    assert!(text.contains(short.properties.tags[tags::AUTHORIZATION_ID].as_str()), "{text}");

    // No secret anywhere: not in patrol's logs, its answers to the host, or any mail.
    drop(instance);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.is_empty(), "patrol serve logged nothing");
    let mut secrets = w.minted().await;
    secrets.push(password.clone());
    assert!(secrets.len() > 3, "the emulator minted PATs and tokens");
    let all_mail: String = sink.messages().iter().map(|m| m["data"].as_str().unwrap_or("").to_owned()).collect();
    let answers = serde_json::to_string(&answers).unwrap();
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret appeared in patrol's log");
        assert!(!all_mail.contains(s.as_str()), "a secret appeared in a mail");
        assert!(!answers.contains(s.as_str()), "a secret appeared in an answer to the host");
    }
    w.emu.shutdown().await.unwrap();
}
