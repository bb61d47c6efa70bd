//! Expiry alerts for PATs patrol does not manage, through the real CLI (`patrol rotate`) and the real timer
//! (`RotateTimer` to a `patrol serve` process), mailed to a real local SMTP server (aiosmtpd): the owner's
//! unmanaged PAT expiring in 5 days gets its 7-day warning, one that expired 2 days ago a "PAT expired"
//! notice, each once (a second run, CLI or timer, sends nothing again: `notify/sent` is shared); later
//! thresholds and the expiry itself follow on the timer. PATs expired long ago and far from expiry are not
//! announced. The managed token, which patrol rotates before it expires, gets no countdown. No PAT or
//! token value appears in any mail.

use super::two_instances::{invoke, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, advance_clock, seed};
use crate::notify::{SinkOpts, SmtpSink};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use time::{Duration, OffsetDateTime};

/// `patrol rotate` as a real process; returns (exit code, stdout + stderr).
fn rotate_cli(env: &[(String, String)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("rotate").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run patrol rotate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The decoded plain text of every mail after the first `seen`.
fn new_mails(sink: &SmtpSink, seen: &mut usize) -> Vec<String> {
    let all = sink.messages();
    let fresh =
        all[*seen..].iter().map(|m| format!("{}\n{}", m["subject"], m["text"].as_str().unwrap_or(""))).collect();
    *seen = all.len();
    fresh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_pats_are_warned_once_per_threshold_by_cli_and_timer() {
    let now = OffsetDateTime::now_utc();
    let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let pat = |name: &str, from: Duration, to: Duration| {
        json!({ "owner": OWNER, "organization": ORG, "displayName": name, "scope": "vso.build",
                "validFrom": fmt(now + from), "validTo": fmt(now + to) })
    };
    let mut s = seed();
    s["pats"] = json!([
        pat("laptop sync", Duration::days(-20), Duration::days(5) + Duration::hours(2)),
        pat("old deploy script", Duration::days(-40), Duration::days(-2)),
        pat("ancient hook", Duration::days(-100), Duration::days(-60)),
        pat("far future", Duration::days(-1), Duration::days(100)),
    ]);
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         notify = [\"email:ops@fabrikam.test\"]\n\
         [[token]]\nsecret = \"alerts-api\"\ndisplay_name = \"Alerts API\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n"
    );
    let mut setup = Setup::start(s, &policy).await;
    let sink = SmtpSink::start(SinkOpts::default());
    for (k, v) in [
        ("PATROL_SMTP_HOST", "127.0.0.1".to_owned()),
        ("PATROL_SMTP_PORT", sink.port.to_string()),
        ("PATROL_SMTP_TLS", "none".to_owned()),
        ("PATROL_SMTP_FROM", "patrol@fabrikam.test".to_owned()),
    ] {
        setup.set(k, v);
    }
    let w = World::open(setup, None, false).await;
    let mut seen = 0;

    // The CLI's full run: onboarding of the managed token, and the unmanaged PATs' alerts.
    let (code, out) = rotate_cli(&w.env);
    assert_eq!(code, 0, "{out}");
    let mails = new_mails(&sink, &mut seen);
    assert_eq!(mails.len(), 1, "one digest for ops: {mails:#?}");
    let m = &mails[0];
    assert!(m.contains("\"laptop sync\" in fabrikam expires in 5 days (7-day warning)"), "{m}");
    assert!(m.contains("\"old deploy script\" in fabrikam has expired"), "{m}");
    assert!(m.contains(OWNER), "the owner who must act is named: {m}");
    for absent in ["ancient hook", "far future", "(30-day warning)", "(14-day warning)"] {
        assert!(!m.contains(absent), "{absent:?} announced: {m}");
    }
    assert!(sink.messages()[0]["rcpt_tos"] == json!(["ops@fabrikam.test"]));

    // Again: each announcement once; the new managed PAT (30 days left, 30-day threshold) gets no countdown.
    let (code, out) = rotate_cli(&w.env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(new_mails(&sink, &mut seen), Vec::<String>::new(), "a second run repeated announcements");

    // Day 5 on the timer: less than a day left — the 1-day warning, critical, once.
    advance_clock(&w.http, &w.emu, Duration::days(5)).await;
    let log = w.dir.path().join("serve.log");
    let instance = start_instance_logging(&w.env, &log).await;
    let mut answers: Vec<Value> = Vec::new();
    answers.push(invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await);
    let mails = new_mails(&sink, &mut seen);
    assert_eq!(mails.len(), 1, "{mails:#?} {answers:?}");
    assert!(mails[0].contains("\"laptop sync\" in fabrikam expires in less than a day (1-day warning)"), "{mails:?}");
    assert!(!mails[0].contains("old deploy script") && !mails[0].contains("Alerts API"), "{mails:?}");
    advance_clock(&w.http, &w.emu, Duration::minutes(5)).await;
    answers.push(invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await);
    assert_eq!(new_mails(&sink, &mut seen), Vec::<String>::new(), "the timer repeated the 1-day warning");

    // Day 6: it has expired (no longer an active PAT): "PAT expired", once.
    advance_clock(&w.http, &w.emu, Duration::days(1)).await;
    answers.push(invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await);
    answers.push(invoke(&instance, "RotateTimer", timer(), w.emu.clock().now()).await);
    let mails = new_mails(&sink, &mut seen);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].contains("\"laptop sync\" in fabrikam has expired"), "{mails:?}");
    assert!(!mails[0].contains("old deploy script"), "{mails:?}");

    // No secret in any mail, answer or log.
    drop(instance);
    let logs = std::fs::read_to_string(&log).unwrap();
    let all_mail: String = sink.messages().iter().map(|m| m["data"].as_str().unwrap_or("").to_owned()).collect();
    let answers = serde_json::to_string(&answers).unwrap();
    let secrets = w.minted().await;
    assert!(secrets.len() > 4, "the emulator minted PATs and tokens");
    for s in &secrets {
        assert!(!all_mail.contains(s.as_str()), "a secret appeared in a mail");
        assert!(!answers.contains(s.as_str()) && !logs.contains(s.as_str()), "a secret appeared in patrol's output");
    }
    w.emu.shutdown().await.unwrap();
}
