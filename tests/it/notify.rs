//! Notifications end to end, against real components: a real SMTP server (aiosmtpd, started by the test,
//! plain + AUTH, STARTTLS and implicit TLS with a CA generated here) and real HTTP receivers (axum on
//! 127.0.0.1:0) for Teams, Slack and the generic webhook — including one that fails first and one that
//! always fails. Every test checks what actually arrived, that it arrived once, and that no PAT value,
//! SMTP password or webhook URL appears in any message, delivery report or log line.

use axum::Router;
use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::devops::models::PatTokenError;
use patrol::domain::{AuthorizationId, OwnerId, SecretName};
use patrol::notify::expiry::evaluate;
use patrol::notify::{
    Addressed, DeliveryPolicy, DeliveryReport, DeliveryStatus, Notice, Notifier, PatRef, Report, Severity, Target,
    Thresholds,
};
use patrol::state::{FileStateStore, StateStore};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::datetime;

// ---------------------------------------------------------------------------------------------------------
// A real SMTP server: tests/it/notify_smtp_sink.py (aiosmtpd)

/// The Python the tests run: `PATROL_TEST_PYTHON` (scripts/test.sh sets it), else the repository's `.venv/`
/// (scripts/setup.sh makes it with the pinned aiosmtpd), else `python3` from PATH.
pub(crate) fn test_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PATROL_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

pub(crate) struct SmtpSink {
    child: Child,
    pub(crate) port: u16,
    out: tempfile::TempDir,
}

#[derive(Default)]
pub(crate) struct SinkOpts<'a> {
    pub(crate) tls: Option<(&'a str, &'a Path, &'a Path)>,
    pub(crate) auth: Option<(&'a str, &'a str)>,
    pub(crate) fail_first: u32,
}

impl SmtpSink {
    pub(crate) fn start(opts: SinkOpts<'_>) -> Self {
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/notify_smtp_sink.py");
        let mut cmd = Command::new(test_python());
        cmd.arg(&script).arg("--out").arg(out.path());
        if let Some((mode, cert, key)) = opts.tls {
            cmd.args(["--tls", mode]).arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = opts.auth {
            cmd.args(["--user", user, "--password-env", "NOTIFY_SINK_PASSWORD"]).env("NOTIFY_SINK_PASSWORD", password);
        }
        if opts.fail_first > 0 {
            cmd.args(["--fail-first", &opts.fail_first.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python is needed for the SMTP tests (bash scripts/setup.sh makes .venv/ with aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = match line.trim().strip_prefix("READY ") {
            Some(p) => p.parse().unwrap(),
            None => {
                let _ = child.kill();
                panic!("SMTP sink did not start ({line:?}); run bash scripts/setup.sh to install aiosmtpd");
            }
        };
        Self { child, port, out }
    }

    /// Every message received so far, in arrival order.
    pub(crate) fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Real HTTP receivers for the webhooks

#[derive(Clone, Default)]
struct Hooks {
    /// (path, body) of every request, in arrival order.
    received: Arc<Mutex<Vec<(String, String)>>>,
    /// Failures still to answer per path.
    fail_left: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

async fn hook(State(h): State<Hooks>, AxPath(name): AxPath<String>, body: String) -> impl IntoResponse {
    h.received.lock().unwrap().push((name.clone(), body));
    if name.starts_with("down") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "receiver is down").into_response();
    }
    if name.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if name.starts_with("gone") {
        return (StatusCode::NOT_FOUND, "no_service").into_response();
    }
    let mut fail = h.fail_left.lock().unwrap();
    if let Some(n) = fail.get_mut(&name).filter(|n| **n > 0) {
        *n -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response();
    }
    // Teams Workflows answers 202, Slack 200 "ok".
    if name.starts_with("teams") {
        (StatusCode::ACCEPTED, "").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

/// Slack-style URLs carry their token in the path: `/hook/slack/T000/B000/<token>` records as `slack`.
async fn hook_with_path(
    state: State<Hooks>,
    AxPath((name, _rest)): AxPath<(String, String)>,
    body: String,
) -> impl IntoResponse {
    hook(state, AxPath(name), body).await
}

impl Hooks {
    async fn start() -> (Self, String) {
        let hooks = Hooks::default();
        let app = Router::new()
            .route("/hook/{name}", axum::routing::post(hook))
            .route("/hook/{name}/{*rest}", axum::routing::post(hook_with_path))
            .with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hooks, base)
    }

    fn fail_next(&self, name: &str, times: u32) {
        self.fail_left.lock().unwrap().insert(name.to_owned(), times);
    }

    fn bodies(&self, name: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect()
    }

    fn all_raw(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Secrets the messages must never contain

/// A realistic Azure DevOps PAT value: 84 characters, 52 random, the `AZDO` signature at 76–80.
fn fake_pat() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s: String = (0..76).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    s.push_str("AZDO");
    s.extend((0..4).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char));
    assert_eq!(s.len(), 84);
    s
}

fn random_secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn assert_no_secrets(haystacks: &[String], secrets: &[String]) {
    assert!(!haystacks.is_empty());
    for h in haystacks {
        for s in secrets {
            assert!(!h.contains(s.as_str()), "a secret leaked into a message/log: …{}…", &s[..6.min(s.len())]);
        }
    }
}

/// Captures log lines of the current thread (the tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl LogBuf {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn pat(name: &str, valid_to: OffsetDateTime, secret: Option<&str>) -> PatRef {
    PatRef {
        display_name: name.into(),
        authorization_id: AuthorizationId::from_uuid(uuid::Uuid::new_v4()),
        organization: "contoso".into(),
        owner: OwnerId::parse("alice@contoso.com").unwrap(),
        valid_to,
        secret: secret.map(|s| SecretName::parse(s).unwrap()),
    }
}

fn email(a: &str) -> Target {
    Target::Email(a.into())
}

fn fast_retry() -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: 3,
        backoff: patrol::backoff::Backoff::exponential(Duration::from_millis(20), Duration::from_millis(100)),
        attempt_timeout: Duration::from_secs(20),
        ..DeliveryPolicy::default()
    }
}

async fn notifier(pairs: &[(&str, &str)], state: &Path, now: OffsetDateTime) -> Notifier {
    let settings = Settings::from_source(&Source::from_pairs(pairs.iter().copied())).unwrap();
    let state: Arc<dyn StateStore> = Arc::new(FileStateStore::new(state));
    Notifier::from_settings(&settings, None, Some(state), Clock::starting_at(now)).await.with_retry(fast_retry())
}

fn status_of<'a>(r: &'a DeliveryReport, target: &str, channel: &str) -> &'a patrol::notify::DeliveryOutcome {
    r.outcomes
        .iter()
        .find(|o| o.target == target && o.channel == channel)
        .unwrap_or_else(|| panic!("no outcome for {target} via {channel} in {r:?}"))
}

// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn digests_over_smtp_with_auth_and_webhooks_once_only_and_without_secrets() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let smtp_password = random_secret("smtp-pw");
    let sink = SmtpSink::start(SinkOpts { auth: Some(("patrol-mailer", &smtp_password)), ..Default::default() });
    let (hooks, base) = Hooks::start().await;
    let sig = random_secret("sig");
    let teams_url = format!("{base}/hook/teams?api-version=2016-06-01&sig={sig}");
    let slack_url = format!("{base}/hook/slack/T000/B000/{}", random_secret("slacktoken"));
    let webhook_url = format!("{base}/hook/generic?code={}", random_secret("code"));
    let state = tempfile::tempdir().unwrap();
    let port = sink.port.to_string();
    let now = datetime!(2027-01-18 03:00 UTC);
    let pairs = [
        ("PATROL_SMTP_HOST", "127.0.0.1"),
        ("PATROL_SMTP_PORT", port.as_str()),
        ("PATROL_SMTP_TLS", "none"),
        ("PATROL_SMTP_USERNAME", "patrol-mailer"),
        ("PATROL_SMTP_PASSWORD", smtp_password.as_str()),
        ("PATROL_SMTP_FROM", "patrol@contoso.com"),
        ("PATROL_TEAMS_WEBHOOK_URL", teams_url.as_str()),
        ("PATROL_SLACK_WEBHOOK_URL", slack_url.as_str()),
        ("PATROL_WEBHOOK_URL", webhook_url.as_str()),
    ];
    let n = notifier(&pairs, state.path(), now).await;

    // The run's PAT values (as the emulator would mint them); one leaks into an error text.
    let pat_values: Vec<String> = (0..4).map(|_| fake_pat()).collect();
    let ops = email("ops@contoso.com");
    let dev = email("dev@contoso.com");
    let thresholds = Thresholds::default();
    let build = pat("build-agent", datetime!(2027-01-31 12:00 UTC), Some("ado-build"));
    let legacy = pat("legacy-deploy", datetime!(2027-01-17 00:00 UTC), None);
    let warn = evaluate(&build, now, &thresholds).unwrap();
    assert!(matches!(warn, Notice::ExpiryWarning { threshold_days: 14, days_left: 13, .. }), "{warn:?}");
    let expired = evaluate(&legacy, now, &thresholds).unwrap();
    let refusal = PatTokenError::from_wire("globalPatsNotAllowed");
    let run1 = vec![
        Addressed { targets: vec![ops.clone(), Target::Teams], notice: warn.clone() },
        Addressed { targets: vec![ops.clone(), dev.clone(), Target::Slack], notice: expired.clone() },
        Addressed {
            targets: vec![ops.clone(), Target::Webhook],
            notice: Notice::RotationSucceeded {
                secret: SecretName::parse("ado-release").unwrap(),
                old_display_name: Some("release (patrol:0a1b2c3d4e5f)".into()),
                new_display_name: "release (patrol:9f8e7d6c5b4a)".into(),
                new_valid_to: datetime!(2027-02-17 03:00 UTC),
                stored_at: "https://kv.vault.azure.net/secrets/ado-release/0123456789abcdef0123456789abcdef".into(),
            },
        },
        Addressed {
            targets: vec![ops.clone(), Target::Webhook],
            notice: Notice::RotationFailed {
                secret: SecretName::parse("ado-nightly").unwrap(),
                step: "store".into(),
                error: format!("Key Vault answered 403 for value {}", pat_values[0]),
                next: "the new PAT was revoked; patrol retries on the next run".into(),
            },
        },
        Addressed {
            targets: vec![dev.clone()],
            notice: Notice::SignInRequired {
                owner: OwnerId::parse("bob@contoso.com").unwrap(),
                reason: "the refresh token was rejected (invalid_grant)".into(),
            },
        },
        Addressed {
            targets: vec![ops.clone()],
            notice: Notice::PolicyRefusal {
                secret: SecretName::parse("ado-global").unwrap(),
                error: refusal.as_wire().to_owned(),
                explanation: refusal.explain(),
            },
        },
    ];
    let report = n.deliver_run(run1).await;
    assert!(report.all_delivered(), "{report:#?}");
    assert_eq!(report.suppressed_repeats, 0);

    // Email: one digest per recipient, authenticated, multipart text + HTML.
    let mails = sink.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let by_rcpt = |a: &str| mails.iter().find(|m| m["rcpt_tos"] == serde_json::json!([a])).unwrap().clone();
    let ops_mail = by_rcpt("ops@contoso.com");
    let dev_mail = by_rcpt("dev@contoso.com");
    for m in [&ops_mail, &dev_mail] {
        assert_eq!(m["auth_user"], "patrol-mailer");
        assert_eq!(m["mail_from"], "patrol@contoso.com");
        assert_eq!(m["content_type"], "multipart/alternative");
        assert_eq!(m["severity"], "critical");
    }
    assert_eq!(ops_mail["subject"], "[patrol] Action required: 5 PAT notices (2 critical, 2 warnings, 1 update)");
    let ops_text = ops_mail["text"].as_str().unwrap();
    for needle in [
        "PAT \"legacy-deploy\" in contoso has expired",
        "PAT \"build-agent\" in contoso expires in 13 days (14-day warning)",
        "Rotated ado-release",
        "Rotation of ado-nightly failed at step store",
        "Azure DevOps refused the new PAT for ado-global",
        refusal.explain().as_str(),
        "What to do:",
        "Stored at: https://kv.vault.azure.net/secrets/ado-release/0123456789abcdef0123456789abcdef",
        "Key Vault answered 403 for value [redacted]",
    ] {
        assert!(ops_text.contains(needle), "ops text lacks {needle:?}:\n{ops_text}");
    }
    // Critical first.
    assert!(ops_text.find("has expired").unwrap() < ops_text.find("Rotated ado-release").unwrap());
    let ops_html = ops_mail["html"].as_str().unwrap();
    assert!(ops_html.contains("PAT &quot;legacy-deploy&quot; in contoso has expired"), "{ops_html}");
    assert_eq!(dev_mail["subject"], "[patrol] Action required: 2 PAT notices (2 critical)");
    assert!(dev_mail["text"].as_str().unwrap().contains("bob@contoso.com must sign in to patrol again"));
    assert!(!dev_mail["text"].as_str().unwrap().contains("Rotated"), "dev only gets its own notices");

    // Teams: an Adaptive Card in a Workflows message.
    let teams = hooks.bodies("teams");
    assert_eq!(teams.len(), 1);
    let att = &teams[0]["attachments"][0];
    assert_eq!(teams[0]["type"], "message");
    assert_eq!(att["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(att["content"]["type"], "AdaptiveCard");
    assert_eq!(att["content"]["version"], "1.4");
    let card = att["content"].to_string();
    assert!(card.contains("expires in 13 days (14-day warning)") && card.contains("FactSet"), "{card}");
    // Slack: blocks with a header and the expiry as a section.
    let slack = hooks.bodies("slack");
    assert_eq!(slack.len(), 1);
    assert_eq!(slack[0]["blocks"][0]["type"], "header");
    assert!(slack[0]["text"].as_str().unwrap().contains("legacy-deploy"));
    // Generic webhook: the rendered items and the structured notices.
    let generic = hooks.bodies("generic");
    assert_eq!(generic.len(), 1);
    assert_eq!(generic[0]["source"], "patrol");
    assert_eq!(generic[0]["severity"], "warning");
    let kinds: Vec<&str> =
        generic[0]["notices"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["rotation_failed", "rotation_succeeded"]);
    assert_eq!(generic[0]["notices"][0]["error"], "Key Vault answered 403 for value [redacted]");

    // The next day: the same expiry state is evaluated again, and nothing is repeated.
    let next_day = now + time::Duration::days(1);
    let n2 = notifier(&pairs, state.path(), next_day).await;
    let run2 = vec![
        Addressed {
            targets: vec![ops.clone(), Target::Teams],
            notice: evaluate(&build, next_day, &thresholds).unwrap(),
        },
        Addressed {
            targets: vec![ops.clone(), dev.clone(), Target::Slack],
            notice: evaluate(&legacy, next_day, &thresholds).unwrap(),
        },
    ];
    let report2 = n2.deliver_run(run2.clone()).await;
    assert!(report2.outcomes.is_empty(), "{report2:#?}");
    assert_eq!(report2.suppressed_repeats, 5);
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(hooks.bodies("teams").len(), 1);
    assert_eq!(hooks.bodies("slack").len(), 1);

    // A rotated PAT (new authorization id) starts fresh; the next threshold of the old one is new too.
    let rotated = PatRef { authorization_id: AuthorizationId::from_uuid(uuid::Uuid::new_v4()), ..build.clone() };
    let week_before = datetime!(2027-01-25 03:00 UTC);
    let n3 = notifier(&pairs, state.path(), week_before).await;
    let run3 = vec![
        Addressed { targets: vec![Target::Teams], notice: evaluate(&rotated, now, &thresholds).unwrap() },
        Addressed { targets: vec![Target::Teams], notice: evaluate(&build, week_before, &thresholds).unwrap() },
    ];
    let report3 = n3.deliver_run(run3.clone()).await;
    assert!(report3.all_delivered() && report3.suppressed_repeats == 0, "{report3:#?}");
    let teams = hooks.bodies("teams");
    assert_eq!(teams.len(), 2, "one digest with both");
    let card = teams[1].to_string();
    assert!(card.contains("14-day warning") && card.contains("7-day warning"), "{card}");
    assert_eq!(n3.deliver_run(run3).await.suppressed_repeats, 2);
    assert_eq!(hooks.bodies("teams").len(), 2);

    // Nothing secret anywhere: SMTP DATA (raw and decoded), webhook bodies, the reports, the logs.
    let mut haystacks: Vec<String> = sink.messages().iter().map(|m| m.to_string()).collect();
    haystacks.extend(hooks.all_raw());
    haystacks.push(serde_json::to_string(&report).unwrap());
    haystacks.push(format!("{report:?}{report2:?}{n:?}"));
    haystacks.push(logs.text());
    let mut secrets = pat_values.clone();
    secrets.extend([smtp_password.clone(), sig.clone(), teams_url.clone(), slack_url.clone(), webhook_url.clone()]);
    assert_no_secrets(&haystacks, &secrets);
    assert!(logs.text().contains("notification delivered"), "the logs were captured");
}

#[tokio::test]
async fn failing_channels_are_retried_reported_and_do_not_block() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let (hooks, base) = Hooks::start().await;
    hooks.fail_next("teams", 2);
    let teams_url = format!("{base}/hook/teams");
    let slack_url = format!("{base}/hook/down-slack");
    let webhook_url = format!("{base}/hook/gone");
    let state = tempfile::tempdir().unwrap();
    let now = datetime!(2027-01-18 03:00 UTC);
    let pairs = [
        ("PATROL_TEAMS_WEBHOOK_URL", teams_url.as_str()),
        ("PATROL_SLACK_WEBHOOK_URL", slack_url.as_str()),
        ("PATROL_WEBHOOK_URL", webhook_url.as_str()),
    ];
    let n = notifier(&pairs, state.path(), now).await;
    let build = pat("build-agent", datetime!(2027-01-31 12:00 UTC), None);
    let warn = evaluate(&build, now, &Thresholds::default()).unwrap();
    let everyone = vec![Target::Teams, Target::Slack, Target::Webhook, email("ops@contoso.com")];
    let run = vec![Addressed { targets: everyone.clone(), notice: warn.clone() }];
    let report = n.deliver_run(run.clone()).await;

    let teams = status_of(&report, "teams", "teams");
    assert_eq!((teams.attempts, &teams.status), (3, &DeliveryStatus::Delivered));
    let slack = status_of(&report, "slack", "slack");
    assert_eq!(slack.attempts, 3, "retried up to the limit");
    assert!(matches!(&slack.status, DeliveryStatus::Failed { error } if error.contains("HTTP 500")), "{slack:?}");
    let generic = status_of(&report, "webhook", "webhook");
    assert_eq!(generic.attempts, 1, "a 404 is not retried");
    assert!(matches!(&generic.status, DeliveryStatus::Failed { error } if error.contains("HTTP 404")));
    let mail = status_of(&report, "email:ops@contoso.com", "smtp");
    assert!(
        matches!(&mail.status, DeliveryStatus::NotConfigured { reason } if reason.contains("smtp or mailbox")),
        "{mail:?}"
    );
    assert!(!report.all_delivered());
    assert_eq!(report.failures().count(), 3);
    assert_eq!(hooks.bodies("teams").len(), 3);
    assert_eq!(hooks.bodies("down-slack").len(), 3);
    assert_eq!(hooks.bodies("gone").len(), 1);

    // The next run: what failed is tried again (its claim was released), what arrived is not repeated.
    let report2 = n.deliver_run(run.clone()).await;
    assert_eq!(report2.suppressed_repeats, 1, "teams got it; {report2:#?}");
    let retried: Vec<&str> = report2.outcomes.iter().map(|o| o.target.as_str()).collect();
    assert_eq!(retried, vec!["email:ops@contoso.com", "slack", "webhook"]);
    assert_eq!(hooks.bodies("teams").len(), 3);
    assert_eq!(hooks.bodies("down-slack").len(), 6);

    // Failures name the problem but never the URL.
    let text = format!("{report:?}{report2:?}{}", logs.text());
    assert_no_secrets(&[text], &[teams_url, slack_url, webhook_url]);
    assert!(logs.text().contains("notification delivery failed"));
}

/// A CA and a server certificate for 127.0.0.1, written as PEM files.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "patrol test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn smtp_starttls_and_implicit_tls_with_auth_send_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let password = random_secret("smtp-pw");
    let now = datetime!(2027-01-18 03:00 UTC);
    let weekly = Report {
        subject: "patrol weekly report: 12 PATs, 2 expiring".into(),
        text: "12 PATs inventoried; 2 expire within 14 days.\n".into(),
        html: Some("<h1>patrol weekly report</h1><p>12 PATs inventoried.</p>".into()),
        severity: Severity::Info,
    };
    for mode in ["starttls", "implicit"] {
        let sink = SmtpSink::start(SinkOpts {
            tls: Some((mode, &cert, &key)),
            auth: Some(("patrol-mailer", &password)),
            ..Default::default()
        });
        let port = sink.port.to_string();
        let ca_str = ca.to_str().unwrap();
        let base = [
            ("PATROL_SMTP_HOST", "127.0.0.1"),
            ("PATROL_SMTP_PORT", port.as_str()),
            ("PATROL_SMTP_TLS", mode),
            ("PATROL_SMTP_USERNAME", "patrol-mailer"),
            ("PATROL_SMTP_PASSWORD", password.as_str()),
            ("PATROL_SMTP_FROM", "patrol <patrol@contoso.com>"),
        ];
        // Without trusting the CA the server is refused (and reported), with it the report arrives.
        let untrusting = notifier(&base, dir.path(), now).await;
        let refused = untrusting.send_report(&[email("sec@contoso.com")], &weekly).await;
        assert!(matches!(refused.outcomes[0].status, DeliveryStatus::Failed { .. }), "{mode}: {refused:?}");
        assert!(sink.messages().is_empty());

        let mut with_ca = base.to_vec();
        with_ca.push(("PATROL_CA_CERT", ca_str));
        let n = notifier(&with_ca, dir.path(), now).await;
        let targets = [email("sec@contoso.com"), email("cto@contoso.com"), email("sec@contoso.com")];
        let r = n.send_report(&targets, &weekly).await;
        assert!(r.all_delivered(), "{mode}: {r:#?}");
        let mails = sink.messages();
        assert_eq!(mails.len(), 2, "{mode}: each recipient once");
        for m in &mails {
            assert_eq!(m["tls"], true, "{mode}");
            assert_eq!(m["auth_user"], "patrol-mailer");
            assert_eq!(m["subject"], "patrol weekly report: 12 PATs, 2 expiring");
            assert!(m["html"].as_str().unwrap().contains("<h1>patrol weekly report</h1>"));
            assert!(m["text"].as_str().unwrap().contains("12 PATs inventoried"));
        }
        assert_no_secrets(&mails.iter().map(|m| m.to_string()).collect::<Vec<_>>(), std::slice::from_ref(&password));
    }
}

#[tokio::test]
async fn transient_smtp_failures_are_retried_and_a_dead_server_is_reported() {
    let sink = SmtpSink::start(SinkOpts { fail_first: 1, ..Default::default() });
    let state = tempfile::tempdir().unwrap();
    let now = datetime!(2027-01-18 03:00 UTC);
    let port = sink.port.to_string();
    let n = notifier(
        &[("PATROL_SMTP_HOST", "127.0.0.1"), ("PATROL_SMTP_PORT", &port), ("PATROL_SMTP_TLS", "none")],
        state.path(),
        now,
    )
    .await;
    let notice = Notice::OutOfBandChange {
        secret: SecretName::parse("ado-build").unwrap(),
        description: "a new version was written without patrol's operation tag".into(),
    };
    let r = n.deliver_run(vec![Addressed { targets: vec![email("ops@contoso.com")], notice: notice.clone() }]).await;
    let o = status_of(&r, "email:ops@contoso.com", "smtp");
    assert_eq!((o.attempts, &o.status), (2, &DeliveryStatus::Delivered), "451 first, then accepted");
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["subject"], "[patrol] Action required: ado-build was changed outside patrol");
    assert!(mails[0]["text"].as_str().unwrap().contains("treat the PAT as compromised"));

    // The server goes away: delivery fails after its retries, the other recipients of the run are not
    // made to wait for the same dead server, and the call still returns.
    drop(sink);
    let n = n.with_retry(DeliveryPolicy { concurrency: 1, ..fast_retry() });
    let targets = vec![email("a@contoso.com"), email("b@contoso.com"), email("c@contoso.com")];
    let r = n.deliver_run(vec![Addressed { targets, notice }]).await;
    let a = status_of(&r, "email:a@contoso.com", "smtp");
    assert_eq!(a.attempts, 3);
    assert!(matches!(&a.status, DeliveryStatus::Failed { error } if error.contains("smtp 127.0.0.1")), "{a:?}");
    for t in ["email:b@contoso.com", "email:c@contoso.com"] {
        let o = status_of(&r, t, "smtp");
        assert_eq!(o.attempts, 0, "{o:?}");
        assert!(
            matches!(&o.status, DeliveryStatus::Failed { error } if error.contains("unreachable for another recipient"))
        );
    }
}

#[tokio::test]
async fn a_hanging_receiver_cannot_exceed_the_run_budget() {
    let (hooks, base) = Hooks::start().await;
    let url = format!("{base}/hook/slow");
    let state = tempfile::tempdir().unwrap();
    let now = datetime!(2027-01-18 03:00 UTC);
    let n = notifier(&[("PATROL_WEBHOOK_URL", url.as_str())], state.path(), now)
        .await
        .with_retry(DeliveryPolicy { run_budget: Duration::from_millis(400), ..fast_retry() });
    let started = std::time::Instant::now();
    let weekly = Report { subject: "weekly".into(), text: "t".into(), html: None, severity: Severity::Info };
    let r = n.send_report(&[Target::Webhook], &weekly).await;
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the budget, not the 10 s hang");
    let o = status_of(&r, "webhook", "webhook");
    assert!(
        matches!(&o.status, DeliveryStatus::Failed { error } if error.contains("timed out") || error.contains("budget")),
        "{o:?}"
    );
    assert_eq!(hooks.bodies("slow").len(), 1);
}

#[tokio::test]
async fn mailbox_file_when_no_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mail/patrol.mbox");
    let now = datetime!(2027-01-18 03:00 UTC);
    let n = notifier(&[("PATROL_MAILBOX_FILE", mbox.to_str().unwrap())], &dir.path().join("state"), now).await;
    let legacy = pat("legacy-deploy", datetime!(2027-01-19 00:00 UTC), None);
    let warn = evaluate(&legacy, now, &Thresholds::default()).unwrap();
    let run = vec![
        Addressed { targets: vec![email("ops@contoso.com"), email("dev@contoso.com")], notice: warn.clone() },
        Addressed { targets: vec![Target::Teams], notice: warn },
    ];
    let r = n.deliver_run(run.clone()).await;
    assert_eq!(status_of(&r, "email:ops@contoso.com", "mailbox").status, DeliveryStatus::Delivered);
    assert!(matches!(status_of(&r, "teams", "teams").status, DeliveryStatus::NotConfigured { .. }));
    assert_eq!(n.deliver_run(run).await.suppressed_repeats, 2, "email targets were reached; teams is retried");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Python's mailbox module reads it as two messages.
    let out = Command::new(test_python())
        .args([
            "-c",
            "import mailbox,sys\nm=mailbox.mbox(sys.argv[1])\nfor x in m: print(x['To'], '|', ' '.join(str(x['Subject']).split()))",
            mbox.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = listing.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "dev@contoso.com | [patrol] Action required: PAT \"legacy-deploy\" in contoso expires in less than a day (1-day warning)",
            "ops@contoso.com | [patrol] Action required: PAT \"legacy-deploy\" in contoso expires in less than a day (1-day warning)",
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn smtp_password_from_the_secret_store() {
    use patrol::store::file::FileSecretStore;
    use patrol::store::{NewVersion, SecretStore};
    let dir = tempfile::tempdir().unwrap();
    let now = datetime!(2027-01-18 03:00 UTC);
    let store = FileSecretStore::open(dir.path().join("store"), &dir.path().join("store.key"), Clock::starting_at(now))
        .unwrap();
    let password = random_secret("smtp-pw");
    store
        .set(
            &SecretName::parse("patrol-smtp").unwrap(),
            &secrecy::SecretString::from(password.clone()),
            NewVersion::default(),
        )
        .await
        .unwrap();
    let sink = SmtpSink::start(SinkOpts { auth: Some(("patrol-mailer", &password)), ..Default::default() });
    let port = sink.port.to_string();
    let settings = |secret: &str| {
        Settings::from_source(&Source::from_pairs([
            ("PATROL_SMTP_HOST", "127.0.0.1"),
            ("PATROL_SMTP_PORT", port.as_str()),
            ("PATROL_SMTP_TLS", "none"),
            ("PATROL_SMTP_USERNAME", "patrol-mailer"),
            ("PATROL_SMTP_PASSWORD_SECRET", secret),
        ]))
        .unwrap()
    };
    let notice = Notice::SignInRequired {
        owner: OwnerId::parse("bob@contoso.com").unwrap(),
        reason: "the refresh token expired after 90 days of inactivity".into(),
    };
    let run = vec![Addressed { targets: vec![email("bob@contoso.com")], notice }];

    let n = Notifier::from_settings(&settings("patrol-smtp"), Some(&store), None, Clock::starting_at(now))
        .await
        .with_retry(fast_retry());
    let r = n.deliver_run(run.clone()).await;
    assert!(r.all_delivered(), "{r:#?}");
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["auth_user"], "patrol-mailer");
    assert!(mails[0]["text"].as_str().unwrap().contains("patrol login --owner bob@contoso.com"));

    // A missing secret is reported on delivery, naming the secret; nothing is sent, nothing fails.
    let n = Notifier::from_settings(&settings("no-such-secret"), Some(&store), None, Clock::starting_at(now)).await;
    let r = n.deliver_run(run).await;
    let o = status_of(&r, "email:bob@contoso.com", "smtp");
    assert!(
        matches!(&o.status, DeliveryStatus::NotConfigured { reason } if reason.contains("no-such-secret")),
        "{o:?}"
    );
    assert_eq!(sink.messages().len(), 1);
    assert_no_secrets(&[format!("{r:?}{n:?}"), mails[0].to_string()], &[password]);
}
