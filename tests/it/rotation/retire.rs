//! `patrol retire` (issue 21) as real processes against patrol-emulator with its Key Vault: the dry run and
//! the unconfirmed run change nothing; a token with declared consumers is refused without `--force`; a
//! process killed after the revocation (and one killed after the journal said done, before the lifecycle
//! log) converges when run again — the PATs revoked, every vault version disabled, one `retired` event in
//! `patrol history`; meanwhile and afterwards no plan or run creates or rotates the retired token, and the
//! plan tells the operator to delete its `[[token]]` block. Every output is scanned for minted secrets.

use super::world::{ORG, OWNER, Setup, World, seed};
use patrol::devops::DisplayFilter;
use patrol::domain::{AuthorizationId, SecretName};
use patrol::rotation::engine::RunOptions;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

const APP: &str = "0b6f7c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5d";
const APP_SECRET: &str = "retire-client-secret-6b5c4d3e2f1a";

/// `patrol args…` with exactly `env` (plus PATH), stdin closed, optionally killed at a crash point.
fn patrol(cwd: &Path, env: &[(String, String)], crash: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.args(args).current_dir(cwd).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(b) = crash {
        cmd.env("PATROL_TEST_CRASH_AFTER", b);
    }
    cmd.stdin(Stdio::null());
    let out = cmd.output().expect("run patrol");
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code().unwrap_or(-1), o, e)
}

/// Every file under `dir` with its bytes (the state a read-only command must leave as it was).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else if !p.components().any(|c| c.as_os_str() == "leases") {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// (version, enabled) of every version of `secret` in the emulated vault.
async fn versions(w: &World, secret: &str) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = w
        .local
        .store
        .list_versions(&SecretName::parse(secret).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.enabled))
        .collect();
    v.sort();
    v
}

async fn active(w: &World, id: AuthorizationId) -> bool {
    w.pats(DisplayFilter::Active).await.iter().any(|p| p.authorization_id == id)
}

/// PATs carrying a token's display name (patrol's marker included): a re-created token would add one.
async fn named(w: &World, name: &str) -> usize {
    w.pats(DisplayFilter::Active).await.iter().filter(|p| p.display_name.starts_with(name)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_revokes_disables_records_and_is_never_recreated_even_after_a_kill() {
    let mut seed = seed();
    seed["apps"] = json!([{ "clientId": APP, "displayName": "patrol-fn", "kind": "servicePrincipal", "clientSecret": APP_SECRET }]);
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [[token]]\nsecret = \"old-nightly\"\ndisplay_name = \"Old nightly\"\n\
         [[token]]\nsecret = \"old-weekly\"\ndisplay_name = \"Old weekly\"\n\
         [[token]]\nsecret = \"ci-api\"\ndisplay_name = \"CI API\"\n\
         [[token.consumer]]\nkind = \"reference\"\ndescription = \"App Service web-prod\"\nlag_hours = 1\n"
    );
    let mut setup = Setup::start(seed, &policy).await;
    let ep = setup.emu.endpoints().clone();
    for (k, v) in [
        ("PATROL_KEYVAULT_URL", ep.extra["keyvault"].clone()),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret".into()),
        ("PATROL_KEYVAULT_TENANT_ID", ep.tenant.clone()),
        ("PATROL_KEYVAULT_CLIENT_ID", APP.into()),
        ("PATROL_KEYVAULT_CLIENT_SECRET", APP_SECRET.into()),
    ] {
        setup.set(k, v);
    }
    let w = World::open(setup, None, false).await;
    let env = w.env.clone();
    let cwd = w.dir.path();
    let state_dir = cwd.join("state");
    let mut transcript = String::new();
    let mut run = |crash: Option<&str>, args: &[&str]| {
        let (code, out, err) = patrol(cwd, &env, crash, args);
        transcript.push_str(&format!("$ patrol {}\n{out}{err}", args.join(" ")));
        (code, out, err)
    };

    // Every token holds a PAT (a first rotation each).
    let (code, out, err) = run(None, &["rotate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (nightly, _) = w.current("old-nightly").await.unwrap();
    let (weekly, _) = w.current("old-weekly").await.unwrap();
    let (ci, _) = w.current("ci-api").await.unwrap();

    // The dry run says what it would do and writes nothing: no state file, no vault version, no PAT moved.
    let before = snapshot(&state_dir);
    let (code, out, err) = run(None, &["retire", "old-nightly", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&nightly.to_string()) && out.contains("current"), "{out}");
    assert!(out.contains("vault versions to disable") && out.contains("dry run: nothing was changed"), "{out}");
    assert!(out.contains("no evidence either way"), "the audit log is not read here: {out}");
    let (code, out, err) = run(None, &["retire", "old-nightly", "--dry-run", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("retire", &v);
    assert_eq!((v["outcome"].as_str(), v["dry_run"].as_bool()), (Some("would-retire"), Some(true)), "{v}");
    assert_eq!(v["pats"][0]["authorization_id"], nightly.to_string());
    assert_eq!(v["pats"][0]["revoked"], false);
    // No terminal and no --yes: the survey, then "not confirmed", exit 4.
    let (code, out, err) = run(None, &["retire", "old-nightly"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("declined; nothing was changed") && err.contains("--yes"), "{out}{err}");
    // Declared consumers: refused without --force, exit 1, naming them.
    let (code, out, err) = run(None, &["retire", "ci-api", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("refused:") && out.contains("app-service-web-prod") && err.contains("--force"), "{out}{err}");
    assert_eq!(snapshot(&state_dir), before, "a refused, declined or dry run wrote state");
    assert!(versions(&w, "old-nightly").await.iter().all(|(_, e)| *e));
    assert!(active(&w, nightly).await && active(&w, ci).await);
    // Unknown secret: exit 2.
    let (code, _, err) = run(None, &["retire", "no-such-token", "--yes"]);
    assert_eq!(code, 2, "{err}");

    // Killed right after the revocation: the PAT is gone, the vault version still enabled, the intent journaled.
    let (code, out, err) =
        run(Some("retire-revoked"), &["retire", "old-nightly", "--yes", "--reason", "unused 45 days"]);
    assert_eq!(code, 86, "{out}{err}");
    assert!(!active(&w, nightly).await, "not revoked before the kill");
    assert!(versions(&w, "old-nightly").await.iter().any(|(_, e)| *e));
    // Meanwhile nothing re-creates it: the plan says the retirement is unfinished, a run leaves it alone.
    let (code, out, err) = run(None, &["plan"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("old-nightly")).unwrap_or_default();
    assert!(line.contains("interrupted") && line.contains("patrol retire old-nightly"), "{out}");
    assert!(!line.contains("rotate ("), "{out}");
    let (code, out, err) = run(None, &["rotate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(named(&w, "Old nightly").await, 0, "a run re-created the token being retired: {out}");
    // The rerun finishes it.
    let (code, out, err) = run(None, &["retire", "old-nightly", "--yes", "--reason", "unused 45 days"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resuming the retirement") && out.contains("retired: delete its [[token]] block"), "{out}");
    let vs = versions(&w, "old-nightly").await;
    assert!(!vs.is_empty() && vs.iter().all(|(_, e)| !*e), "every version disabled: {vs:?}");

    // Killed after the journal said done, before the lifecycle log: the rerun records it once.
    let (code, out, err) = run(Some("retire-done"), &["retire", "old-weekly", "--yes"]);
    assert_eq!(code, 86, "{out}{err}");
    assert!(!active(&w, weekly).await);
    let (code, out, err) = run(None, &["retire", "old-weekly", "--yes", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("retire", &v);
    assert_eq!((v["outcome"].as_str(), v["dry_run"].as_bool()), (Some("retired"), Some(false)), "{v}");
    assert_eq!(v["pats"][0]["revoked"], true, "{v}");
    assert!(versions(&w, "old-weekly").await.iter().all(|(_, e)| !*e));
    let (code, out, err) = run(None, &["retire", "old-weekly", "--yes", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("retire", &v);
    assert_eq!(v["outcome"], "already-retired");

    // The lifecycle log: one `retired` event each, by `patrol retire`, with the reason.
    let (code, out, err) = run(None, &["history", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("history", &h);
    let retired: Vec<&Value> = h["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "retired").collect();
    assert_eq!(retired.len(), 2, "{h}");
    let n = retired.iter().find(|e| e["secret"] == "old-nightly").unwrap();
    assert_eq!(n["authorization_id"], nightly.to_string());
    assert_eq!(n["by"], "patrol retire");
    assert!(n["detail"].as_str().unwrap().contains("unused 45 days"), "{n}");
    let (code, out, _) = run(None, &["history", "old-weekly"]);
    assert_eq!(code, 0);
    assert!(out.contains("retired") && out.contains(&weekly.to_string()), "{out}");

    // Plans: retired, with what to do; JSON valid; inventory shows the role; status is clean.
    let (code, out, err) = run(None, &["plan", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("plan", &p);
    let entry = p["entries"].as_array().unwrap().iter().find(|e| e["secret"] == "old-nightly").unwrap();
    assert_eq!(entry["actions"].as_array().unwrap().len(), 1, "{entry}");
    assert_eq!(entry["actions"][0]["action"], "retired");
    assert_eq!(entry["actions"][0]["finished"], true);
    assert!(entry["actions"][0]["message"].as_str().unwrap().contains("delete its [[token]] block"), "{entry}");
    let (code, out, err) = run(None, &["inventory", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let inv: Value = serde_json::from_str(&out).unwrap();
    crate::schemas::assert_valid("inventory", &inv);
    let row = inv["pats"].as_array().unwrap().iter().find(|r| r["secret"] == "old-nightly").unwrap();
    assert_eq!((row["role"].as_str(), row["state"].as_str()), (Some("retired"), Some("retired")), "{row}");
    let (code, out, err) = run(None, &["rotate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("old-nightly") && l.contains("retired")), "{out}");
    assert_eq!((named(&w, "Old nightly").await, named(&w, "Old weekly").await), (0, 0), "{out}");

    // Weeks later the other token is due and rotated; the retired ones are not re-created or rotated.
    w.advance(time::Duration::days(25)).await;
    let summary = w.local.engine().unwrap().run(RunOptions::default()).await.unwrap();
    assert_eq!(summary.rotated, 1, "{}", summary.line());
    assert!(summary.reports.iter().all(|r| r.secret == "ci-api" || r.rotated.is_none()), "{}", summary.line());
    assert!(summary.at_risk.is_empty(), "{:?}", summary.at_risk);
    assert_eq!((named(&w, "Old nightly").await, named(&w, "Old weekly").await), (0, 0));
    assert_ne!(w.current("ci-api").await.unwrap().0, ci);

    for s in w.minted().await {
        assert!(!transcript.contains(&s), "a minted secret in the output");
    }
    w.emu.shutdown().await.unwrap();
}
