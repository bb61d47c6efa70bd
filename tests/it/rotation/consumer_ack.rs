//! Webhook acknowledgements end to end: a real `patrol serve` process (the custom handler) receives the
//! consumer's signed acknowledgement exactly as the Functions host passes a `RotateHttp` request on
//! (patrol-emulator's webhook consumer, `via: functions-host`), verifies it against the consumer's key in
//! patrol's store and records it; the next run counts it as the consumer's evidence of use and revokes the
//! previous PAT. A forged, stale, replayed, unsigned or misaddressed acknowledgement is refused with its
//! 4xx and releases nothing. The handler's output, every answer, the webhook bodies and the state are
//! scanned for the signing key, every signature, the function key and every PAT value.

use super::consumers::{Cons, GH_TOKEN, HOOK_KEY, walk};
use super::two_instances::{Instance, start_instance_logging};
use patrol::devops::DisplayFilter;
use serde_json::{Value, json};
use time::Duration;

const FUNCTION_KEY: &str = "fnKEY-consumer-ack-7Qp2Lm9Xv4";
const CONSUMER: &str = "webhook:hook-url";

struct Acks<'a> {
    c: &'a Cons,
    handler: &'a Instance,
    /// Every answer the consumer got, for the leak scan.
    answers: std::cell::RefCell<Vec<String>>,
}

impl Acks<'_> {
    /// The emulator's webhook consumer acknowledges through the Functions host's HTTP trigger.
    async fn send(&self, body: Value, key: Option<&str>, timestamp: Option<i64>) -> (u16, Value) {
        let mut req = json!({
            "url": format!("{}/RotateHttp", self.handler.url()),
            "body": body,
            "via": "functions-host",
            "routeSecret": "feed-pat",
            "functionKey": FUNCTION_KEY,
        });
        if let Some(k) = key {
            req["hmacKey"] = json!(k);
        }
        if let Some(t) = timestamp {
            req["timestamp"] = json!(t);
        }
        let r = self.c.w.post("consumers/webhooks/team-a/ack", req).await;
        assert!(r.status().is_success(), "control API: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        self.answers.borrow_mut().push(v.to_string());
        (v["status"].as_u64().unwrap_or(0) as u16, v["body"].clone())
    }

    fn now(&self) -> i64 {
        self.c.w.emu.clock().now().unix_timestamp()
    }
}

fn ack(version: &str) -> Value {
    json!({ "ack": { "secret": "feed-pat", "version": version, "consumer": CONSUMER } })
}

/// The version named by the last notification the webhook consumer received.
async fn notified_version(c: &Cons) -> String {
    let hooks = c.ctl("consumers/webhooks/team-a").await;
    let last = hooks["received"].as_array().unwrap().last().unwrap().clone();
    last["body"]["version"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_acknowledgement_through_the_handler_releases_the_revocation_and_forged_stale_or_replayed_ones_do_not()
{
    let c = Cons::start_with(true).await;
    let mut env = c.w.env.clone();
    env.push(("PATROL_LOG".into(), "info,patrol=debug".into()));
    let log = c.w.dir.path().join("serve.log");
    let handler = start_instance_logging(&env, &log).await;
    let a = Acks { c: &c, handler: &handler, answers: Default::default() };

    let first = c.run().await;
    assert_eq!((first.rotated, first.failed), (1, 0), "{:?}", first.reports);
    let (old, _) = c.w.current("feed-pat").await.unwrap();
    let old_version = notified_version(&c).await;
    c.w.advance(Duration::days(24)).await;
    let s = c.run().await;
    assert_eq!((s.rotated, s.failed), (1, 0), "{:?}", s.reports);
    let (new, _) = c.w.current("feed-pat").await.unwrap();
    let version = notified_version(&c).await;
    assert_ne!(version, old_version);
    let hooks = c.ctl("consumers/webhooks/team-a").await;
    assert_eq!(hooks["received"].as_array().unwrap().last().unwrap()["body"]["ackRequested"], true, "{hooks}");

    // Grace and the reference's lag over, a pipeline used the connection: only the acknowledgement is missing.
    c.w.advance(Duration::hours(25)).await;
    assert_eq!(c.pipeline_run().await["result"], "succeeded");
    let s = c.run().await;
    let plan = serde_json::to_string(&s.plan).unwrap();
    assert!(plan.contains("no acknowledgement recorded since"), "{plan}");
    assert!(!c.revoked(&c.w.pats(DisplayFilter::Active).await, old), "held for the acknowledgement");

    // Refused, each with its status and what was wrong; none releases the previous PAT.
    let now = a.now();
    let refusals = [
        (a.send(ack(&version), Some("whsec-forged-0000000000000000"), None).await, 401, "does not match"),
        (a.send(ack(&version), Some(HOOK_KEY), Some(now - 3600)).await, 401, "s behind patrol's clock"),
        (a.send(ack(&version), Some(HOOK_KEY), Some(now + 900)).await, 401, "ahead of"),
        (a.send(ack(&version), None, None).await, 400, "X-Patrol-Timestamp header is missing"),
        (a.send(ack(&old_version), Some(HOOK_KEY), None).await, 409, "not the current version"),
        (
            a.send(
                json!({"ack": {"secret": "feed-pat", "version": version, "consumer": "webhook:other"}}),
                Some(HOOK_KEY),
                None,
            )
            .await,
            404,
            "is not a webhook consumer of feed-pat",
        ),
        (
            a.send(json!({"ack": {"secret": "feed-pat", "version": version}}), Some(HOOK_KEY), None).await,
            400,
            "ack.consumer is missing",
        ),
    ];
    for ((status, body), want, words) in &refusals {
        assert_eq!(status, want, "{words}: {body}");
        assert!(body["error"].as_str().unwrap_or_default().contains(words), "{body} should say {words}");
    }
    let s = c.run().await;
    assert!(!c.revoked(&c.w.pats(DisplayFilter::Active).await, old), "refused acknowledgements count for nothing");
    assert!(serde_json::to_string(&s.plan).unwrap().contains("no acknowledgement recorded since"));

    // The consumer acknowledges the version it was told about: recorded; the same request again is a replay.
    let t = a.now();
    let (status, body) = a.send(ack(&version), Some(HOOK_KEY), Some(t)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["detail"]["acknowledged"]["version"], version.as_str(), "{body}");
    let (status, body) = a.send(ack(&version), Some(HOOK_KEY), Some(t)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("replay"), "{body}");

    // The next run finds the acknowledgement (evidence) and revokes the previous PAT; the current one stays.
    let s1 = c.run().await;
    let s2 = c.run().await;
    let done = format!("{:?}{:?}", s1.reports, s2.reports);
    assert!(done.contains(&format!("{CONSUMER} used the new PAT: acknowledged version {version}")), "{done}");
    let active = c.w.pats(DisplayFilter::Active).await;
    assert!(c.revoked(&active, old), "{done}");
    assert!(!c.revoked(&active, new));

    // Leaks: nothing the handler printed, answered or stored holds a key, a signature or a PAT.
    let answers = a.answers.take();
    drop(a);
    drop(handler);
    let signed = |body: &Value, ts: i64| {
        patrol::consumers::webhook::sign(HOOK_KEY.as_bytes(), ts, body.to_string().as_bytes())
            .trim_start_matches("sha256=")
            .to_owned()
    };
    let mut secrets = c.w.minted().await;
    secrets.extend([HOOK_KEY.to_owned(), GH_TOKEN.to_owned(), FUNCTION_KEY.to_owned(), signed(&ack(&version), t)]);
    secrets.retain(|s| s.len() >= 20);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("acknowledgement refused"), "the handler logged the refusals: {log_text}");
    let mut texts = answers;
    texts.push(log_text);
    texts.push(c.ctl("consumers/webhooks/team-a").await.to_string());
    texts.push(format!("{:?}{:?}{:?}{:?}", s1.reports, s2.reports, s1.notices, s2.notices));
    // The journal, the recorded acknowledgement, leases, notices (the secret store is encrypted).
    texts.extend(walk(&c.w.dir.path().join("state")));
    for t in &texts {
        for secret in &secrets {
            assert!(!t.contains(secret.as_str()), "a secret leaked: {}", &t[..t.len().min(300)]);
        }
    }
}
