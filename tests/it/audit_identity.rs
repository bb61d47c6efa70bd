//! Issue 20 end to end, with the real `patrol` binary against patrol-emulator:
//! - who reads the audit log: an administrator signed in with `patrol login --admin` (delegated
//!   `vso.auditlog` + `vso.tokenadministration`; an owner cannot be one), or the Function App's own identity
//!   (`PATROL_AUDIT_READER=app`: a service principal added to the organization, app-only token) — which the
//!   PAT Lifecycle API still refuses;
//! - a PAT onboarded the documented way (its value in the vault with only an `authorization-id` tag) is
//!   watched from day one; a managed token patrol cannot identify is a reported problem (exit 1), not silence;
//! - `patrol audit` runs the timer's pass: patrol's own forced rotation and revocation are not reported as
//!   someone else's; consumer lag, policy changes and audit-stream tampering are found.

use super::login::{finish, read_prompt};
use patrol::clock::Clock;
use patrol::domain::SecretName;
use patrol::store::{FileSecretStore, NewVersion, PAT_CONTENT_TYPE, SecretStore, tags};
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

const OWNER: &str = "build@fabrikam.example";
const ADMIN: &str = "secops@fabrikam.example";
const CLIENT_ID: &str = "3b1f0c2d-9e8a-4f7b-a6c5-d4e3f2a1b0c9";
/// The Function App's identity (a service principal here: the emulator's Key Vault needs a client secret).
const APP_ID: &str = "6f5e4d3c-2b1a-4c9d-8e7f-0a1b2c3d4e5f";
const DEVOPS: &str = "499b84ac-1321-427f-aa17-267ca6975798";

async fn emulator(app_grant: Value) -> (Emulator, String) {
    let mut app = json!({ "clientId": APP_ID, "displayName": "patrol-func", "kind": "servicePrincipal" });
    app.as_object_mut().unwrap().extend(app_grant.as_object().unwrap().clone());
    let seed = serde_json::from_value(json!({
        "organizations": [{ "name": "fabrikam" }],
        "users": [
            { "upn": OWNER, "displayName": "Build Account", "organizations": ["fabrikam"] },
            { "upn": ADMIN, "displayName": "Security Ops", "adminOf": ["fabrikam"] }
        ],
        "apps": [app]
    }))
    .unwrap();
    let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..Default::default() }).await.unwrap();
    let secret = emu.context().secrets.list().into_iter().find(|(k, _)| *k == "client_secret").unwrap().1;
    (emu, secret)
}

fn write_policy(dir: &Path, extra_token: bool) {
    let mut text = format!(
        "[defaults]\norganization = \"fabrikam\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 0\n\n[[token]]\nsecret = \"ci-build\"\ndisplay_name = \"CI build\"\n"
    );
    if extra_token {
        text.push_str("\n[[token]]\nsecret = \"deploy\"\ndisplay_name = \"Deploy\"\n");
    }
    text.push_str("\n[audit]\nallowed_cidrs = [\"10.20.0.0/16\"]\n");
    std::fs::write(dir.join("patrol.toml"), text).unwrap();
}

/// patrol's settings: the embedded file store, or (`vault`) the emulated Key Vault whose credential is the
/// Function App's own identity.
fn settings(emu: &Emulator, dir: &Path, vault: Option<&str>) -> Vec<(String, String)> {
    let e = emu.endpoints();
    let p = |f: &str| dir.join(f).display().to_string();
    let mut v = vec![
        ("PATROL_POLICY_FILE".to_owned(), p("patrol.toml")),
        ("PATROL_STATE_DIR".to_owned(), p("state")),
        ("PATROL_STORE_KEY_FILE".to_owned(), p("store.key")),
        ("PATROL_DEVOPS_URL".to_owned(), e.devops.clone()),
        ("PATROL_AUDIT_URL".to_owned(), e.audit.clone()),
        ("PATROL_ENTRA_AUTHORITY".to_owned(), e.entra.clone()),
        ("PATROL_TENANT_ID".to_owned(), e.tenant.clone()),
        ("PATROL_CLIENT_ID".to_owned(), CLIENT_ID.to_owned()),
        ("PATROL_LEASE".to_owned(), "local".to_owned()),
        // Entra and Key Vault speak https with the emulator's CA.
        ("PATROL_CA_CERT".to_owned(), e.extra["ca_cert"].clone()),
    ];
    if let Some(client_secret) = vault {
        v.extend([
            ("PATROL_KEYVAULT_URL".to_owned(), e.extra["keyvault"].replace("127.0.0.1", "localhost")),
            ("PATROL_KEYVAULT_CREDENTIAL".to_owned(), "client-secret".to_owned()),
            ("PATROL_KEYVAULT_TENANT_ID".to_owned(), e.tenant.clone()),
            ("PATROL_KEYVAULT_CLIENT_ID".to_owned(), APP_ID.to_owned()),
            ("PATROL_KEYVAULT_CLIENT_SECRET".to_owned(), client_secret.to_owned()),
        ]);
    }
    v
}

fn command(dir: &Path, args: &[&str], env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
    c.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Runs a non-interactive command: (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = command(dir, args, env).output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

/// `patrol login <args>` with the emulator approving the code as `upn`.
async fn login(emu: &Emulator, dir: &Path, args: &[&str], upn: &str, env: &[(String, String)]) -> (i32, String) {
    let mut full = vec!["login"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--poll-interval-ms", "50"]);
    let mut child = command(dir, &full, env).spawn().unwrap();
    let (code, seen, rest) = tokio::task::block_in_place(|| read_prompt(&mut child));
    let r = reqwest::Client::new()
        .post(format!("{}/_control/devicecodes/approve", emu.endpoints().control))
        .json(&json!({ "userCode": code, "upn": upn }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (code, stdout, stderr) = tokio::task::block_in_place(|| finish(child, seen, rest));
    (code, format!("{stdout}{stderr}"))
}

async fn ctl(emu: &Emulator, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}{path}", emu.endpoints().control)).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// A PAT the owner created ten days before patrol was deployed: (authorization id, value).
async fn existing_pat(emu: &Emulator, name: &str) -> (String, String) {
    let now = emu.clock().now();
    let v = ctl(
        emu,
        "/_control/pats",
        json!({
            "owner": OWNER, "organization": "fabrikam", "displayName": name, "scope": "vso.code",
            "validFrom": patrol_emulator::wire::format_time(now - time::Duration::days(10)),
            "validTo": patrol_emulator::wire::format_time(now + time::Duration::days(20)),
        }),
    )
    .await;
    (v["authorizationId"].as_str().unwrap().to_owned(), v["token"].as_str().unwrap().to_owned())
}

/// Onboarding as documented: the PAT's value in the vault, tagged with its authorization id only.
async fn onboard(store: &dyn SecretStore, secret: &str, id: Option<&str>, value: &str) {
    let mut t = BTreeMap::new();
    if let Some(id) = id {
        t.insert(tags::AUTHORIZATION_ID.to_owned(), id.to_owned());
    }
    let new = NewVersion { content_type: Some(PAT_CONTENT_TYPE.into()), tags: t, ..Default::default() };
    store.set(&SecretName::parse(secret).unwrap(), &SecretString::from(value.to_owned()), new).await.unwrap();
}

async fn use_pat(emu: &Emulator, value: &str, ip: &str) {
    ctl(
        emu,
        "/_control/pats/use",
        json!({ "token": value, "organization": "fabrikam", "ipAddress": ip, "userAgent": "git/2.45" }),
    )
    .await;
}

fn rules(json_out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json_out).unwrap_or_else(|e| panic!("{e}: {json_out}"));
    let mut r: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["findings"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap().to_owned()))
        .collect();
    r.sort();
    r
}

/// The points `patrol audit` exported match its JSON report: per organization, rule and severity, the
/// number of findings (`patrol.run.dry_run=true`: a read-only pass); its own invocation; the calls it made;
/// no lag figure, since the timer never read this log (`patrol audit` never writes a checkpoint).
fn assert_audit_exported(points: &[Value], report: &str) {
    let report: Value = serde_json::from_str(report).unwrap();
    let mut expected: std::collections::BTreeMap<(String, String, String), f64> = Default::default();
    for org in report.as_array().unwrap() {
        for f in org["findings"].as_array().unwrap() {
            let key = (
                org["organization"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
            );
            *expected.entry(key).or_default() += 1.0;
        }
    }
    let mut exported: std::collections::BTreeMap<(String, String, String), f64> = Default::default();
    for p in points.iter().filter(|p| p["name"] == "patrol.audit.findings") {
        let a = &p["attributes"];
        assert_eq!(a["patrol.run.dry_run"], true, "{p}");
        assert_eq!((p["kind"].as_str(), p["unit"].as_str()), (Some("sum"), Some("{finding}")));
        let key = |k: &str| a[k].as_str().unwrap().to_owned();
        let k = (key("patrol.organization"), key("patrol.audit.rule"), key("patrol.audit.severity"));
        assert!(exported.insert(k, p["value"].as_f64().unwrap()).is_none(), "one point per series: {p}");
    }
    assert_eq!(exported, expected, "exported findings vs the report");
    assert!(expected.keys().any(|(_, r, s)| r == "outside_cidr" && s == "critical"), "{expected:?}");
    assert!(expected.len() >= 4, "{expected:?}");
    let inv: Vec<&Value> = points.iter().filter(|p| p["name"] == "patrol.invocations").collect();
    assert_eq!(inv.len(), 1, "{points:?}");
    let a = &inv[0]["attributes"];
    assert_eq!((a["patrol.function"].as_str(), a["faas.trigger"].as_str()), (Some("cli"), Some("other")));
    assert_eq!((a["patrol.outcome"].as_str(), inv[0]["value"].as_f64()), (Some("completed"), Some(1.0)));
    let requests = points.iter().find(|p| p["name"] == "patrol.devops.requests").expect("devops requests");
    assert!(requests["value"].as_f64().unwrap() >= 1.0, "the audit log was read: {requests}");
    assert!(!points.iter().any(|p| p["name"] == "patrol.audit.log.lag"), "no timer checkpoint, no lag: {points:?}");
}

fn assert_no_secret(emu: &Emulator, text: &str, pats: &[&str]) {
    for (kind, value) in emu.context().secrets.list() {
        assert!(!text.contains(&value), "a {kind} reached the output");
    }
    for p in pats {
        assert!(!text.contains(p), "a PAT value reached the output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_signed_in_with_login_admin_audits_onboarded_pats_and_patrol_knows_its_own_work() {
    let (emu, _) = emulator(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_policy(d, false);
    let env = settings(&emu, d, None);
    let store = FileSecretStore::open(d.join("state/secrets"), &d.join("store.key"), Clock::system()).unwrap();

    // Least privilege: the owner consents to the PAT scopes only and cannot be the administrator.
    let (code, out) = login(&emu, d, &["--owner", OWNER], OWNER, &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(d, &["login", "--admin", OWNER], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("owns managed PATs"), "{err}");
    let (code, out) = login(&emu, d, &["--admin", ADMIN], ADMIN, &env).await;
    assert_eq!(code, 0, "{out}");

    // An existing PAT onboarded the documented way, then used from a foreign address.
    let (id, value) = existing_pat(&emu, "CI build (legacy)").await;
    onboard(&store, "ci-build", Some(&id), &value).await;
    use_pat(&emu, &value, "203.0.113.66").await;

    // No reader configured (no Key Vault, so no Function App identity; no PATROL_AUDIT_READER): reported, and
    // never the owner by default.
    let (code, _, err) = run(d, &["audit", "--since", "1h"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nobody reads the audit log of fabrikam"), "{err}");
    let (code, _, err) = run(d, &["audit", "--since", "1h", "--org", "contoso"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nobody reads the audit log of contoso"), "{err}");
    // Defect 1: the owner's sign-in cannot read the log (vso.auditlog is not among its scopes)...
    let (code, _, err) = run(d, &["audit", "--since", "1h", "--reader", OWNER, "--format", "json"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not readable by this identity"), "{err}");
    // ... the administrator's can (PATROL_AUDIT_READER), and defect 2: the onboarded PAT is watched.
    let mut env_admin = env.clone();
    env_admin.push(("PATROL_AUDIT_READER".into(), ADMIN.into()));
    let (code, out, err) = run(d, &["audit", "--since", "1h", "--format", "json"], &env_admin);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(rules(&out), ["outside_cidr"], "{out}");
    assert!(out.contains("203.0.113.66") && out.contains("ci-build"), "{out}");

    // Defect 3: patrol's own forced rotation (Create) is not someone else's; the old PAT, still in its grace,
    // is used by a lagging consumer; an administrator loosens a policy and deletes the audit stream.
    let (code, out, err) = run(d, &["rotate", "ci-build", "--force"], &env);
    assert_eq!(code, 0, "{out}{err}");
    use_pat(&emu, &value, "10.20.7.7").await;
    for action in ["OrganizationPolicy.PolicyValueUpdated", "AuditLog.StreamDeleted"] {
        ctl(
            &emu,
            "/_control/orgs/fabrikam/audit",
            json!({ "actionId": action, "actorUpn": ADMIN, "ipAddress": "198.51.100.7" }),
        )
        .await;
    }
    // With PATROL_OTLP_ENDPOINT, `patrol audit` exports its findings (by rule and severity, as a read-only
    // pass) to a real OTLP receiver before it exits.
    let receiver = crate::rotation::metrics::Receiver::start();
    env_admin.push(("PATROL_OTLP_ENDPOINT".into(), receiver.url.clone()));
    let (code, out, err) = run(d, &["audit", "--since", "1h", "--format", "json"], &env_admin);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        rules(&out),
        ["audit_tampering", "consumer_lag", "outside_cidr", "policy_change"],
        "patrol's forced rotation must not be a foreign lifecycle event: {out}"
    );
    assert_eq!(receiver.requests().len(), 1, "exported before the process exited: {err}");
    assert_audit_exported(&receiver.points_since(0), &out);

    // patrol revokes the adopted PAT (break glass through the owner's PAT API): its revocation is patrol's too;
    // `patrol revoke` exports what it revoked.
    let mut env_metrics = env.clone();
    env_metrics.push(("PATROL_OTLP_ENDPOINT".into(), receiver.url.clone()));
    let (code, out, err) = run(d, &["revoke", "--org", "fabrikam", "--pat", &id, "--yes"], &env_metrics);
    assert_eq!(code, 0, "{out}{err}");
    let pts = receiver.points_since(1);
    let count = |result: &str| {
        let p: Vec<&Value> = pts
            .iter()
            .filter(|p| p["name"] == "patrol.run.tokens" && p["attributes"]["patrol.run.result"] == result)
            .collect();
        assert_eq!(p.len(), 1, "{result}: {pts:?}");
        assert_eq!(p[0]["attributes"]["patrol.run.dry_run"], false);
        p[0]["value"].as_f64().unwrap()
    };
    assert_eq!((count("revoked"), count("failed")), (1.0, 0.0), "{out}");
    let inv: Vec<&Value> = pts.iter().filter(|p| p["name"] == "patrol.invocations").collect();
    assert_eq!(inv.len(), 1, "{pts:?}");
    assert_eq!((inv[0]["attributes"]["patrol.function"].as_str(), inv[0]["value"].as_f64()), (Some("cli"), Some(1.0)));
    assert_eq!(inv[0]["attributes"]["patrol.outcome"], "completed");
    for r in receiver.requests() {
        assert_no_secret(&emu, &r.to_string(), &[&value]);
        assert!(!r.to_string().contains(OWNER) && !r.to_string().contains(ADMIN), "a UPN was exported");
    }
    let (code, out, err) = run(d, &["audit", "--since", "1h", "--format", "json"], &env_admin);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!rules(&out).contains(&"foreign_lifecycle".to_owned()), "{out}");

    // A managed token patrol cannot identify (no authorization-id tag, never rotated) is a reported problem.
    write_policy(d, true);
    onboard(&store, "deploy", None, "not-a-pat-value-but-a-placeholder").await;
    let (code, out, err) = run(d, &["audit", "--since", "1h", "--format", "json"], &env_admin);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("deploy") && err.contains("not watched") && err.contains("authorization-id"), "{err}");
    assert_no_secret(&emu, &format!("{out}{err}"), &[&value]);
    emu.shutdown().await.unwrap();
}

/// An app-only token of `client_id` for the Azure DevOps resource (what a managed identity gets).
async fn app_token(emu: &Emulator, client_id: &str) -> String {
    let v = ctl(emu, "/_control/app-tokens", json!({ "clientId": client_id, "resource": DEVOPS })).await;
    v["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_apps_own_identity_reads_the_audit_log_and_the_pat_api_still_refuses_it() {
    // The Function App's identity was added to the organization as a Project Collection Administrator.
    let (emu, kv_secret) = emulator(json!({ "adminOf": ["fabrikam"] })).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_policy(d, false);
    let env = settings(&emu, d, Some(&kv_secret));
    let pairs = env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let local = patrol::cli::runtime::Local::open(
        patrol::config::Settings::from_source(&patrol::config::Source::from_pairs(pairs)).unwrap(),
        Clock::system(),
    )
    .unwrap();
    let (id, value) = existing_pat(&emu, "CI build (legacy)").await;
    onboard(local.store.as_ref(), "ci-build", Some(&id), &value).await;
    use_pat(&emu, &value, "203.0.113.66").await;

    // No administrator signed in, no --reader: PATROL_AUDIT_READER defaults to the Function App's identity.
    let (code, out, err) = run(d, &["audit", "--since", "1h", "--format", "json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(rules(&out), ["outside_cidr"], "{out}");
    assert_no_secret(&emu, &format!("{out}{err}"), &[&value]);

    // As in Azure DevOps: the PAT Lifecycle API refuses app-only tokens, Token Admin accepts the
    // administrator principal, and a principal granted only "View audit log" reads the log but cannot
    // administer tokens; one not added to the organization can do neither.
    let http = reqwest::Client::new();
    let e = emu.endpoints();
    let token = app_token(&emu, APP_ID).await;
    let r = http
        .get(format!("{}/fabrikam/_apis/tokens/pats?api-version=7.2-preview.1", e.devops))
        .bearer_auth(&token)
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Service principals aren't allowed"));
    let revoke = |token: String| {
        let http = http.clone();
        let url = format!("{}/fabrikam/_apis/tokenadmin/revocations?api-version=7.2-preview.1", e.devops);
        let id = id.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("X-TFS-FedAuthRedirect", "Suppress")
                .json(&json!([{ "authorizationId": id }]))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let audit = |token: String| {
        let http = http.clone();
        let url = format!("{}/fabrikam/_apis/audit/auditlog?api-version=7.2-preview.1", e.audit);
        async move {
            http.get(url).bearer_auth(token).header("X-TFS-FedAuthRedirect", "Suppress").send().await.unwrap().status()
        }
    };
    for (client, grant) in [
        ("7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", json!({ "auditReaderOf": ["fabrikam"] })),
        ("8b7c6d5e-4f3a-4b2c-8d9e-0f1a2b3c4d5e", json!({})),
    ] {
        let mut app = json!({ "clientId": client, "displayName": "other", "kind": "managedIdentity" });
        app.as_object_mut().unwrap().extend(grant.as_object().unwrap().clone());
        ctl(&emu, "/_control/apps", app).await;
        let t = app_token(&emu, client).await;
        assert_eq!(revoke(t.clone()).await, 401, "{client} administered tokens");
        let reads = grant.get("auditReaderOf").is_some();
        assert_eq!(audit(t).await.is_success(), reads, "{client}");
    }
    assert_eq!(revoke(token).await, 204);
    assert!(!emu.context().state().pats.values().any(|p| p.id.to_string() == id && p.status(emu.clock().now()) == patrol_emulator::state::PatStatus::Active));
    emu.shutdown().await.unwrap();
}
