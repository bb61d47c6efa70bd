//! Evidence-gated revocation and the `revoke` response, end to end: a real `patrol serve` process gets
//! `RotateTimer` invocations as the Functions host sends them, against patrol-emulator on its virtual clock,
//! while a simulated consumer (`/_control/pats/use`) keeps using — or stops using — the rotated-away PAT.
//!
//! - still used after the grace period → the timer keeps it (the plan says wait, with the reason);
//! - the consumer stops → `quiet_hours` later the timer revokes it, with its evidence;
//! - a consumer that never stops → revoked at the hard deadline with an alert naming its IP and user agent
//!   (delivered to the token's and the audit section's recipients: the mailbox file);
//! - the audit poll failing (emulator fault) → no revocation before the deadline (fail closed);
//! - `response = { critical = "revoke" }`: the suspect previous PAT is revoked and reported with its
//!   evidence, the current PAT never (refused, alerted); `dry_run` only reports.

use super::two_instances::{Instance, invoke, start_instance, timer};
use super::world::{ORG, OWNER, Setup, World, admin_scopes, admin_seed, use_pat};
use patrol::devops::DisplayFilter;
use patrol::domain::AuthorizationId;
use serde_json::{Value, json};
use std::path::PathBuf;

const SECRET: &str = "gated-pat";
const QUIET_HOURS: i64 = 12;
const DEADLINE_HOURS: i64 = 72;
const CONSUMER_IP: &str = "198.51.100.23";
const CONSUMER_UA: &str = "nightly-backup/2.1";

/// A [`World`] whose owner reads the audit log, announcements going to a mailbox file, and a `patrol serve`.
struct Gate {
    w: World,
    mailbox: PathBuf,
    instance: Option<Instance>,
}

impl std::ops::Deref for Gate {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

fn policy(audit: &str) -> String {
    format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"{SECRET}\"\ndisplay_name = \"Gated\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 1\nnotify = [\"email:owner-team@fabrikam.test\"]\n\
         [audit]\nnotify = [\"email:security@fabrikam.test\"]\n{audit}"
    )
}

fn gated() -> String {
    policy(&format!(
        "revocation = {{ mode = \"evidence\", quiet_hours = {QUIET_HOURS}, deadline_hours = {DEADLINE_HOURS} }}\n"
    ))
}

impl Gate {
    async fn start(policy: &str) -> Gate {
        let mut setup = Setup::start(admin_seed(), policy).await;
        // The owner is also the administrator who reads the audit log (PATROL_AUDIT_READER).
        setup.set("PATROL_AUDIT_READER", OWNER);
        let mailbox = setup.mailbox();
        // The owner also reads the audit log (an organization administrator consenting to vso.auditlog).
        let w = World::open(setup, Some(admin_scopes()), false).await;
        let instance = Some(start_instance(&w.env).await);
        Gate { w, mailbox, instance }
    }

    /// A new `patrol serve` process with another policy (the old one is stopped first).
    async fn restart_with(&mut self, policy: &str) {
        self.instance = None;
        std::fs::write(self.w.dir.path().join("patrol.toml"), policy).unwrap();
        self.instance = Some(start_instance(&self.w.env).await);
    }

    async fn timer(&self) -> Value {
        let i = self.instance.as_ref().unwrap();
        let r = invoke(i, "RotateTimer", timer(), self.emu.clock().now()).await;
        r["ReturnValue"]["detail"].clone()
    }

    /// A consumer uses `value` (audited with its address and user agent); whether it authenticated.
    async fn use_pat(&self, value: &str, ip: &str, ua: &str) -> bool {
        use_pat(&self.http, &self.emu, json!({ "token": value, "organization": ORG, "ipAddress": ip, "userAgent": ua }))
            .await
    }

    async fn current(&self) -> (AuthorizationId, String) {
        self.w.current(SECRET).await.unwrap()
    }

    /// Whether the PAT is still active (listing does not count as a use in the audit log).
    async fn active(&self, id: AuthorizationId) -> bool {
        self.pats(DisplayFilter::Active).await.iter().any(|p| p.authorization_id == id)
    }

    /// The mailbox, with the quoted-printable bodies decoded (soft line breaks joined, `=XX` decoded).
    fn mail(&self) -> String {
        let raw = std::fs::read_to_string(&self.mailbox).unwrap_or_default().replace("=\n", "");
        let b = raw.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = (b[i] == b'=' && i + 2 < b.len())
                .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
                .flatten();
            match hex {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Onboarding, then the scheduled rotation 24 days later: returns the previous PAT and its value.
    async fn rotate_once(&self) -> (AuthorizationId, String) {
        let first = self.timer().await;
        assert_eq!(first["rotated"], 1, "onboarding: {first}");
        let previous = self.current().await;
        self.advance(time::Duration::days(24)).await;
        let second = self.timer().await;
        assert_eq!(second["rotated"], 1, "the scheduled rotation: {second}");
        assert_ne!(self.current().await.0, previous.0);
        previous
    }

    async fn finish(mut self, values: &[&str], outputs: &[&Value]) {
        let mail = self.mail();
        for v in values {
            assert!(!mail.contains(v), "a PAT value reached the mailbox");
            for o in outputs {
                assert!(!o.to_string().contains(v), "a PAT value reached the function's output");
            }
        }
        self.instance = None;
        self.w.emu.shutdown().await.unwrap();
    }
}

/// The plan's actions for the token in a timer's detail.
fn actions(detail: &Value) -> Vec<Value> {
    detail["plan"]["entries"][0]["actions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_pat_in_use_waits_and_is_revoked_after_quiet_hours() {
    let g = Gate::start(&gated()).await;
    let (old, old_value) = g.rotate_once().await;

    // The grace day passes; the consumer is still on the old value.
    g.advance(time::Duration::hours(25)).await;
    assert!(g.use_pat(&old_value, CONSUMER_IP, CONSUMER_UA).await);
    g.advance(time::Duration::minutes(1)).await;
    let waiting = g.timer().await;
    assert_eq!(waiting["revoked"], 0, "{waiting}");
    let a = actions(&waiting);
    assert_eq!(a.len(), 1, "{waiting}");
    assert_eq!(a[0]["action"], "wait-previous", "{waiting}");
    assert_eq!(a[0]["authorization_id"], old.to_string());
    let reason = a[0]["reason"].as_str().unwrap();
    assert!(reason.contains(CONSUMER_IP) && reason.contains(CONSUMER_UA), "{reason}");
    assert!(a[0]["until"].is_string(), "{waiting}");
    // The audit pass saw the lag but left the decision to the gate (no rotate/revoke response executed).
    assert_eq!(waiting["audit"]["executed"], 0, "{waiting}");
    assert!(g.active(old).await, "kept while in use");
    assert!(g.mail().contains("gated on evidence"), "the consumer-lag alert says the gate decides");

    // The consumer switches. Less than quiet_hours later: still kept.
    g.advance(time::Duration::hours(QUIET_HOURS - 2)).await;
    let still = g.timer().await;
    assert_eq!(actions(&still)[0]["action"], "wait-previous", "{still}");
    assert!(g.active(old).await);
    // quiet_hours after the last use (and the log read that far): revoked, with its evidence.
    g.advance(time::Duration::hours(3)).await;
    let revoked = g.timer().await;
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    let a = actions(&revoked);
    assert_eq!(a[0]["action"], "revoke-previous", "{revoked}");
    assert!(a[0]["evidence"].as_str().unwrap().contains("last audited use"), "{revoked}");
    assert!(a[0].get("alert").is_none(), "no deadline alert when it fell quiet: {revoked}");
    let done = revoked["reports"][0]["done"].to_string();
    assert!(done.contains("evidence for revoking previous"), "{done}");
    assert!(!g.active(old).await);
    assert!(!g.use_pat(&old_value, CONSUMER_IP, CONSUMER_UA).await, "the old value no longer authenticates");
    let (_, new_value) = g.current().await;
    assert!(g.use_pat(&new_value, CONSUMER_IP, CONSUMER_UA).await, "the current value is untouched");
    g.finish(&[&old_value, &new_value], &[&waiting, &still, &revoked]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_stops_is_cut_off_at_the_deadline_with_an_alert_naming_it() {
    let g = Gate::start(&gated()).await;
    let (old, old_value) = g.rotate_once().await;
    let mut outputs = Vec::new();
    // Used every 10 hours past the grace period, right up to the deadline.
    let mut elapsed = 0;
    while elapsed + 10 < DEADLINE_HOURS {
        g.advance(time::Duration::hours(10)).await;
        elapsed += 10;
        assert!(g.use_pat(&old_value, CONSUMER_IP, CONSUMER_UA).await, "still valid after {elapsed} h");
        if elapsed == 30 {
            let d = g.timer().await;
            assert_eq!(actions(&d)[0]["action"], "wait-previous", "{d}");
            outputs.push(d);
        }
    }
    g.advance(time::Duration::hours(DEADLINE_HOURS - elapsed) + time::Duration::minutes(1)).await;
    let cut = g.timer().await;
    assert_eq!(cut["revoked"], 1, "{cut}");
    let a = actions(&cut);
    assert_eq!(a[0]["action"], "revoke-previous", "{cut}");
    assert_eq!(a[0]["alert"]["severity"], "critical", "{cut}");
    assert!(!g.active(old).await);
    assert_eq!(cut["notifications"]["delivered"], true, "{cut}");
    let mail = g.mail();
    let alert = mail.split("From ").find(|m| m.contains("hard deadline")).expect("the deadline alert was mailed");
    assert!(alert.contains(CONSUMER_IP) && alert.contains(CONSUMER_UA), "names the last caller: {alert}");
    assert!(mail.contains("owner-team@fabrikam.test") && mail.contains("security@fabrikam.test"), "{mail}");
    outputs.push(cut);
    g.finish(&[&old_value], &outputs.iter().collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_poll_never_revokes_before_the_deadline() {
    let g = Gate::start(&gated()).await;
    let (old, old_value) = g.rotate_once().await;
    g.advance(time::Duration::hours(25)).await;
    assert!(g.use_pat(&old_value, CONSUMER_IP, CONSUMER_UA).await);
    g.advance(time::Duration::minutes(1)).await;
    let seen = g.timer().await;
    assert_eq!(actions(&seen)[0]["action"], "wait-previous", "{seen}");

    // From now on every audit request fails; the consumer has stopped.
    let url = format!("{}/_control/faults", g.emu.endpoints().control);
    let faults = json!({ "failRate": 1.0, "failStatus": 503, "services": ["audit"] });
    assert!(g.http.put(&url).json(&faults).send().await.unwrap().status().is_success());
    g.advance(time::Duration::hours(QUIET_HOURS + 3)).await;
    let blind = g.timer().await;
    assert_ne!(blind["audit"]["errors"], json!([]), "the poll failed: {blind}");
    assert_eq!(blind["revoked"], 0, "quiet by the clock is not quiet observed: {blind}");
    let a = actions(&blind);
    assert_eq!(a[0]["action"], "wait-previous", "{blind}");
    assert!(a[0]["reason"].as_str().unwrap().contains("no fresh evidence"), "{blind}");
    assert!(g.active(old).await);

    // Still failing at the deadline: revoked then, the alert naming the last caller seen.
    g.advance(time::Duration::hours(DEADLINE_HOURS - 25 - QUIET_HOURS - 3) + time::Duration::minutes(1)).await;
    let cut = g.timer().await;
    assert_eq!(cut["revoked"], 1, "{cut}");
    assert!(!g.active(old).await);
    assert!(g.mail().contains(CONSUMER_UA), "the deadline alert names the last caller seen");
    g.finish(&[&old_value], &[&seen, &blind, &cut]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_response_revokes_the_suspect_never_the_current_and_dry_run_only_reports() {
    let respond = |dry_run: bool| {
        policy(&format!(
            "allowed_cidrs = [\"10.20.0.0/16\"]\ndry_run = {dry_run}\nresponse = {{ critical = \"revoke\" }}\n"
        ))
    };
    let mut g = Gate::start(&respond(true)).await;
    let (old, old_value) = g.rotate_once().await;
    let (current, current_value) = g.current().await;
    let outside = "203.0.113.9";

    // Dry run: the previous PAT (still in its grace period) is used from outside the allowed ranges.
    assert!(g.use_pat(&old_value, outside, "curl/8.5").await);
    g.advance(time::Duration::minutes(1)).await;
    let dry = g.timer().await;
    assert_eq!(dry["audit"]["findings"], 1, "{dry}");
    assert_eq!(dry["audit"]["executed"], 0, "{dry}");
    assert!(g.active(old).await, "dry run revokes nothing");
    assert!(g.mail().contains("DRY RUN — would revoke PAT"), "{}", g.mail());

    // For real: the previous PAT and the current one are both used from outside.
    g.restart_with(&respond(false)).await;
    assert!(g.use_pat(&old_value, outside, "curl/8.5").await);
    assert!(g.use_pat(&current_value, outside, "curl/8.5").await);
    g.advance(time::Duration::minutes(1)).await;
    let real = g.timer().await;
    let audit = &real["audit"];
    assert_eq!(audit["findings"], 2, "{real}");
    assert_eq!(audit["executed"], 1, "only the previous PAT is revoked: {real}");
    let outcome = &audit["outcomes"][0];
    assert_eq!(outcome["step"]["suspect"], old.to_string(), "{real}");
    assert!(outcome["outcome"]["Ok"].as_str().unwrap().contains("revoked PAT"), "{real}");
    assert!(!g.active(old).await, "the suspect previous PAT was revoked");
    assert!(g.active(current).await, "the current PAT is never revoked by a revoke response");
    assert!(g.use_pat(&current_value, "10.20.1.1", "agent/1").await, "consumers of the current value keep working");
    // The weekly report's lifecycle log lists the revocation with the finding that caused it.
    let since = g.emu.clock().now() - time::Duration::days(1);
    let log = patrol::rotation::history::since(g.local.state.as_ref(), since).await.unwrap();
    let revoked: Vec<_> = log
        .iter()
        .filter(|e| e.authorization_id == old && e.kind == patrol::rotation::history::Kind::Revoked)
        .collect();
    assert_eq!(revoked.len(), 1, "one lifecycle event for the revoke response: {log:?}");
    assert!(revoked[0].detail.starts_with("revoked: "), "{:?}", revoked[0]);
    let mail = g.mail();
    assert!(mail.contains(&format!("done: revoked PAT {old}")), "reported with the outcome: {mail}");
    assert!(mail.contains(outside), "reported with its evidence: {mail}");
    assert!(mail.contains(&format!("it is the current value of {SECRET}")), "the refusal is explained: {mail}");
    g.finish(&[&old_value, &current_value], &[&dry, &real]).await;
}
