//! The weekly report through the real timer: a real `patrol serve` process gets `RotateTimer` as the
//! Functions host sends it, with `PATROL_REPORT_RECIPIENTS` and SMTP (with AUTH) pointing at a real local
//! aiosmtpd. The report arrives once — with the PATs created, rotated and revoked that week, their scopes
//! and expiries, and the audit findings — is not sent again by later timers in the same week (last-sent
//! persisted in the state store), and is sent again once the virtual clock has moved a week. Neither the
//! SMTP password nor any PAT or token value appears in patrol's logs, its answers or the mail.

use super::two_instances::timer;
use super::world::{ORG, OWNER, collect_strings, env_pairs, settings_of, sign_in_with};
use crate::notify::{SinkOpts, SmtpSink};
use patrol::cli::runtime::Local;
use patrol::clock::Clock;
use patrol::domain::SecretName;
use patrol::rotation::engine::RunOptions;
use patrol::store::tags;
use patrol_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `patrol serve` whose stdout and stderr go to `log` (to be scanned for secrets).
struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(env: &[(String, String)], log: &std::path::Path) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string());
    cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out));
    let s = Serve { child: cmd.spawn().expect("spawn patrol serve"), url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(&s.url).send().await.is_ok() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("patrol serve did not answer GET / within 5 s");
}

/// A function invoked as the host does at the emulator's current time; returns the envelope.
async fn invoke(s: &Serve, emu: &Emulator, function: &str, data: Value) -> Value {
    let now = emu.clock().now().format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({ "Data": data, "Metadata": { "sys": { "MethodName": function, "UtcNow": now } } });
    let r = reqwest::Client::new()
        .post(format!("{}/{function}", s.url))
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `RotateTimer` as the host fires it.
async fn fire(s: &Serve, emu: &Emulator) -> Value {
    invoke(s, emu, "RotateTimer", timer()).await
}

async fn advance(emu: &Emulator, by: time::Duration) {
    let r = reqwest::Client::new()
        .post(format!("{}/_control/clock/advance", emu.endpoints().control))
        .json(&json!({ "seconds": by.whole_seconds() }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

fn weekly_mails(sink: &SmtpSink) -> Vec<Value> {
    sink.messages()
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap_or("").contains("patrol weekly report"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_mails_the_weekly_report_once_a_week() {
    let seed = serde_json::from_value(json!({
        "organizations": [{ "name": ORG }],
        "users": [{ "upn": OWNER, "displayName": "Rotator", "organizations": [ORG], "adminOf": [ORG] }]
    }))
    .unwrap();
    let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // "weekly-short" is rotated by an operator (RotateHttp, force) on day 3 and its previous PAT is revoked a
    // day after that: within the first week, the report has a rotation and a revocation.
    std::fs::write(
        dir.path().join("patrol.toml"),
        format!(
            "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
             [[token]]\nsecret = \"weekly-api\"\ndisplay_name = \"Weekly API\"\nvalidity_days = 30\n\
             rotate_before_days = 7\ngrace_days = 2\n\
             [[token]]\nsecret = \"weekly-short\"\ndisplay_name = \"Weekly short\"\nscopes = \"vso.build\"\n\
             validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\
             [audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\nnotify = [\"email:security@fabrikam.test\"]\n\
             response = {{ critical = \"alert\" }}\n"
        ),
    )
    .unwrap();
    let password = format!("smtp-{}", uuid::Uuid::new_v4().simple());
    let sink = SmtpSink::start(SinkOpts { auth: Some(("patrol-mailer", &password)), ..Default::default() });
    let mut env = env_pairs(dir.path(), &emu);
    for (k, v) in [
        ("PATROL_SMTP_HOST", "127.0.0.1".to_owned()),
        ("PATROL_SMTP_PORT", sink.port.to_string()),
        ("PATROL_SMTP_TLS", "none".to_owned()),
        ("PATROL_SMTP_USERNAME", "patrol-mailer".to_owned()),
        ("PATROL_SMTP_PASSWORD", password.clone()),
        ("PATROL_SMTP_FROM", "patrol@contoso.com".to_owned()),
        ("PATROL_REPORT_RECIPIENTS", "email:weekly@fabrikam.test".to_owned()),
    ] {
        env.push((k.into(), v));
    }
    let local = Local::open(settings_of(&env), Clock::starting_at(emu.clock().now())).unwrap();
    let scopes = format!("{} {}", patrol::auth::PAT_SCOPES, patrol::auth::ADMIN_SCOPES);
    sign_in_with(&emu, &local, Some(scopes)).await;
    // Someone loosens an organization policy: the first timer's audit pass finds it.
    let r = reqwest::Client::new()
        .post(format!("{}/_control/orgs/{ORG}/audit", emu.endpoints().control))
        .json(&json!({ "actionId": "OrganizationPolicy.PolicyValueUpdated", "actorUpn": OWNER, "ipAddress": "198.51.100.7" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Onboarding (as `patrol rotate` would do it) creates both PATs before the Function App's first timer,
    // so that timer's audit pass, which runs before rotation, already watches them.
    let onboarding = local.engine().unwrap().run(RunOptions::default()).await.unwrap();
    assert_eq!(onboarding.rotated, 2, "{}", onboarding.line());
    let log = dir.path().join("serve.log");
    let instance = serve(&env, &log).await;
    let mut answers = Vec::new();

    // Week 1, day 0: the first report goes out at once (none was ever sent).
    let first = fire(&instance, &emu).await;
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
    advance(&emu, time::Duration::minutes(5)).await;
    let again = fire(&instance, &emu).await;
    answers.push(again.clone());
    assert_eq!(again["ReturnValue"]["detail"]["weekly_report"]["outcome"], "not_due", "{again}");
    // Day 3 and day 5: an operator rotates the short token (RotateHttp, force). The second run also revokes
    // the first previous PAT (one day of grace, over) — a PAT the secret's tags no longer name, which the
    // audit pass must still know as patrol's own revocation (from the lifecycle log).
    let force = json!({ "req": { "Url": "http://localhost/api/rotate/weekly-short?force=true", "Method": "POST",
        "Query": { "force": "true" }, "Headers": {}, "Params": { "secret": "weekly-short" } } });
    for (day, revoked) in [(3, 0), (2, 1)] {
        advance(&emu, time::Duration::days(day)).await;
        let rotated = invoke(&instance, &emu, "RotateHttp", force.clone()).await;
        answers.push(rotated.clone());
        let body: Value = serde_json::from_str(rotated["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!((&body["detail"]["rotated"], &body["detail"]["revoked"]), (&json!(1), &json!(revoked)), "{rotated}");
        let quiet = fire(&instance, &emu).await;
        answers.push(quiet.clone());
        assert_eq!(quiet["ReturnValue"]["detail"]["weekly_report"]["outcome"], "not_due", "{quiet}");
    }
    assert_eq!(weekly_mails(&sink).len(), 1, "sent again within the week");

    // A week after the first: sent again, with the week's rotation and revocation.
    advance(&emu, time::Duration::days(2)).await;
    let next = fire(&instance, &emu).await;
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
    let minted: Value =
        reqwest::get(format!("{}/_control/secrets", emu.endpoints().control)).await.unwrap().json().await.unwrap();
    let mut secrets = vec![password.clone()];
    collect_strings(&minted, &mut secrets);
    secrets.retain(|s| s.len() >= 20);
    assert!(secrets.len() > 3, "the emulator minted PATs and tokens");
    let all_mail: String = sink.messages().iter().map(|m| m["data"].as_str().unwrap_or("").to_owned()).collect();
    let answers = serde_json::to_string(&answers).unwrap();
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret appeared in patrol's log");
        assert!(!all_mail.contains(s.as_str()), "a secret appeared in a mail");
        assert!(!answers.contains(s.as_str()), "a secret appeared in an answer to the host");
    }
    emu.shutdown().await.unwrap();
}
