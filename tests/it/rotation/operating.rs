//! Operating patrol for real (issue 16 items 2–4), as real `patrol` processes against patrol-emulator:
//! break glass fails closed when it could not look; the CLI keeps one state wherever it is run from and says
//! "state missing" (never "compromised") when the state it should read is not there; `patrol adopt`
//! onboards an existing PAT without a second PAT and without a false alarm.

use super::world::{ORG, OWNER, Setup, World, seed};
use patrol::devops::{CreatePat, DisplayFilter};
use patrol::domain::{DisplayName, Scopes};
use secrecy::ExposeSecret;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `patrol args…` in `cwd` with exactly `env` (plus PATH and HOME), stdin from `stdin` (or closed); returns
/// (exit code, stdout, stderr).
fn patrol_in(cwd: &Path, env: &[(String, String)], args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.args(args).current_dir(cwd).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run patrol");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code().unwrap_or(-1), o, e)
}

fn policy(org: &str) -> String {
    format!(
        "[defaults]\norganization = \"{org}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [[token]]\nsecret = \"ops-api\"\ndisplay_name = \"Ops API\"\n"
    )
}

/// Item 2: `patrol revoke --all --dry-run` (and `--owner`, and without `--dry-run`) with the owner not
/// signed in says first that the survey is incomplete, names the owner and the exact command, never says
/// "0 PAT(s) would be revoked", and exits 3; once the sign-in is revoked it says "sign in again"; a listing
/// that fails for another reason exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_fails_closed_when_it_cannot_list_an_owner() {
    let setup = Setup::start(seed(), &policy(ORG)).await;
    let env = setup.env.clone();
    let cwd_buf = setup.dir.path().to_path_buf();
    let cwd = cwd_buf.as_path();
    let login_cmd = format!("patrol login --owner {OWNER}");
    for args in [
        &["revoke", "--org", ORG, "--all", "--dry-run"][..],
        &["revoke", "--org", ORG, "--owner", OWNER, "--dry-run"],
        &["revoke", "--org", ORG, "--all"],
        &["revoke", "--org", ORG, "--all", "--yes"],
    ] {
        let (code, out, err) = patrol_in(cwd, &env, args, None);
        let what = args.join(" ");
        assert_eq!(code, 3, "{what}: {out}{err}");
        assert!(out.starts_with("INCOMPLETE SURVEY"), "{what}: the gap is said first:\n{out}");
        assert!(out.contains(&login_cmd) && out.contains("has not signed in"), "{what}: {out}");
        assert!(!out.contains("sign in again") && !out.contains("<owner>"), "{what}: {out}");
        assert!(!out.contains("0 PAT(s) would be revoked") && !out.contains("nothing to revoke\n"), "{what}: {out}");
    }
    // An owner the policy does not name cannot sign in: the advice is Token Admin, and it is not exit 3.
    let (code, out, err) =
        patrol_in(cwd, &env, &["revoke", "--org", ORG, "--owner", "stranger@fabrikam.test", "--dry-run"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("INCOMPLETE SURVEY")
            && out.contains("--user")
            && !out.contains("patrol login --owner stranger"),
        "{out}"
    );
    // JSON says so too.
    let (code, out, _) =
        patrol_in(cwd, &env, &["revoke", "--org", ORG, "--all", "--dry-run", "--format", "json"], None);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["complete"], false, "{v}");
    assert_eq!(v["unlisted"][0]["who"], OWNER);
    assert_eq!(v["unlisted"][0]["sign_in"], "never-signed-in");

    // Signed in, then the refresh token revoked: "sign in again", still exit 3.
    let world = World::open(setup, None, false).await;
    let (code, out, err) = patrol_in(cwd, &env, &["revoke", "--org", ORG, "--all", "--dry-run"], None);
    assert_eq!(code, 0, "signed in: the survey is complete: {out}{err}");
    assert!(!out.contains("INCOMPLETE"), "{out}");
    // An organization patrol cannot list for another reason (the owner is no member of it): exit 1.
    std::fs::write(cwd.join("patrol.toml"), policy("nowhere-org")).unwrap();
    let (code, out, err) = patrol_in(cwd, &env, &["revoke", "--org", "nowhere-org", "--all", "--dry-run"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("INCOMPLETE SURVEY"), "{out}");
    // An organization with no owner patrol knows of: nothing to look at is not "nothing to revoke".
    let (code, out, err) = patrol_in(cwd, &env, &["revoke", "--org", "elsewhere", "--all", "--dry-run"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("INCOMPLETE SURVEY") && out.contains("--owner"), "{out}");
    std::fs::write(cwd.join("patrol.toml"), policy(ORG)).unwrap();
    let r = world.post("refresh-tokens/revoke", json!({ "upn": OWNER })).await;
    assert!(r.status().is_success());
    let (code, out, err) = patrol_in(cwd, &env, &["revoke", "--org", ORG, "--owner", OWNER, "--dry-run"], None);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("INCOMPLETE SURVEY") && out.contains("sign in again") && out.contains(&login_cmd), "{out}");

    world.emu.shutdown().await.unwrap();
}

const APP: &str = "0b6f7c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5c";
const APP_SECRET: &str = "ops-state-client-secret-5a4b3c2d1e0f";

fn mailbox_subjects(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Item 3: the CLI run from two working directories against one vault sees one state (the default is per
/// user, never the working directory; `patrol status` says where it is); pointed at an empty state it says
/// "state missing", names where it looked, refuses to act for the token and raises no CRITICAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_state_whatever_the_working_directory_and_state_missing_is_not_a_compromise() {
    let mut seed = seed();
    seed["apps"] = json!([{ "clientId": APP, "displayName": "patrol-fn", "kind": "servicePrincipal", "clientSecret": APP_SECRET }]);
    let policy = format!("{}notify = [\"email:sec@fabrikam.test\"]\n", policy(ORG));
    let mut setup = Setup::start(seed, &policy).await;
    let ep = setup.emu.endpoints().clone();
    let home = setup.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    setup.env.retain(|(k, _)| k != "PATROL_STATE_DIR" && k != "PATROL_STORE_KEY_FILE");
    for (k, v) in [
        ("HOME", home.display().to_string()),
        ("PATROL_KEYVAULT_URL", ep.extra["keyvault"].clone()),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret".into()),
        ("PATROL_KEYVAULT_TENANT_ID", ep.tenant.clone()),
        ("PATROL_KEYVAULT_CLIENT_ID", APP.into()),
        ("PATROL_KEYVAULT_CLIENT_SECRET", APP_SECRET.into()),
    ] {
        setup.set(k, v);
    }
    let mailbox = setup.mailbox();
    let world = World::open(setup, None, false).await;
    let env = world.env.clone();
    let (a, b) = (world.dir.path().join("a"), world.dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let mut transcript = String::new();

    // From directory a: the first rotation (the secret is missing).
    let (code, out, err) = patrol_in(&a, &env, &["rotate"], None);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    let pats = world.pats(DisplayFilter::Active).await.len();
    // From directory b: the same history, and nothing to do.
    let (code, out, err) = patrol_in(&b, &env, &["status", "--format", "json"], None);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["tokens"][0]["last_rotation"].is_object(), "b sees a's rotation: {v}");
    let default_dir = home.join(".local/share/patrol/data");
    assert!(v["state"].as_str().unwrap().contains(default_dir.to_str().unwrap()), "{}", v["state"]);
    let (code, out, err) = patrol_in(&b, &env, &["status"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("state: directory {}", default_dir.join("state").display())), "{out}");
    let (code, out, err) = patrol_in(&b, &env, &["rotate", "--format", "json"], None);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["rotated"].as_u64(), v["failed"].as_u64()), (Some(0), Some(0)), "{v}");
    assert_eq!(v["plan"]["entries"][0]["actions"], json!([]), "nothing to do from b: {v}");
    assert_eq!(world.pats(DisplayFilter::Active).await.len(), pats, "no second PAT");
    for d in [&a, &b] {
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing written in the working directory {d:?}");
    }

    // Pointed at an empty state: "state missing", where it looked, how to fix; no action, no CRITICAL.
    let empty = world.dir.path().join("empty-state");
    let mut elsewhere = env.clone();
    elsewhere.push(("PATROL_STATE_DIR".into(), empty.display().to_string()));
    let (code, out, err) = patrol_in(&b, &elsewhere, &["status", "--format", "json"], None);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = v["tokens"][0]["error"].as_str().unwrap_or_default();
    assert!(e.starts_with("state missing") && e.contains(empty.to_str().unwrap()), "{v}");
    assert!(e.contains("AzureWebJobsStorage") && e.contains("PATROL_STATE_DIR"), "{e}");
    for args in [&["plan"][..], &["rotate"], &["rotate", "ops-api", "--force"]] {
        let (_, out, err) = patrol_in(&b, &elsewhere, args, None);
        transcript.push_str(&(out.clone() + &err));
        let both = out.clone() + &err;
        assert!(both.contains("state missing"), "{args:?}: {out}{err}");
        assert!(!both.contains("adopt") && !both.contains("compromised"), "{args:?}: {out}{err}");
    }
    assert_eq!(world.pats(DisplayFilter::Active).await.len(), pats, "no PAT created or revoked");
    let mail = mailbox_subjects(&mailbox);
    assert!(!mail.contains("outside patrol") && !mail.contains("CRITICAL"), "{mail}");
    for s in world.minted().await {
        assert!(!transcript.contains(&s), "a secret value is in the output");
    }
    world.emu.shutdown().await.unwrap();
}

/// Item 4: `patrol adopt` onboards existing PATs — by authorization id with the value on stdin, by the
/// policy's display name with the value in an environment variable — refuses a value that does not
/// authenticate and a missing value (nothing written); the next runs treat them as current: no
/// `rotate (missing)`, no second PAT, no "changed outside patrol".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_onboards_existing_pats_without_a_second_pat_or_a_false_alarm() {
    let policy = format!(
        "{}notify = [\"email:sec@fabrikam.test\"]\n[[token]]\nsecret = \"ops-deploy\"\ndisplay_name = \"Ops deploy\"\n",
        policy(ORG)
    );
    let mut setup = Setup::start(seed(), &policy).await;
    let mailbox = setup.mailbox();
    let world = World::open(setup, None, false).await;
    let env = world.env.clone();
    let cwd = world.dir.path();
    let mut made = Vec::new();
    for name in ["Ops API", "Ops deploy"] {
        let c = world
            .api
            .create(&CreatePat {
                display_name: DisplayName::parse(name).unwrap(),
                scopes: Scopes::parse("vso.code").unwrap(),
                valid_to: world.emu.clock().now() + time::Duration::days(20),
                all_orgs: false,
            })
            .await
            .unwrap();
        made.push((c.pat.authorization_id, c.token.expose_secret().to_owned()));
    }
    let (api_id, api_value) = made[0].clone();
    let (deploy_id, deploy_value) = made[1].clone();
    let id = api_id.to_string();
    let mut transcript = String::new();

    // Before: the plan would create a second PAT for each.
    let (_, out, _) = patrol_in(cwd, &env, &["plan"], None);
    assert!(out.contains("rotate (missing)"), "{out}");

    // No value and none in the vault: exit 2, nothing written. A wrong value: exit 1, nothing written.
    let (code, out, err) = patrol_in(cwd, &env, &["adopt", "ops-api", "--pat", &id], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--value-stdin"), "{err}");
    let (code, out, err) =
        patrol_in(cwd, &env, &["adopt", "ops-api", "--pat", &id, "--value-stdin"], Some("not-the-pat-value\n"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("refused") && err.contains("nothing was written"), "{err}");
    assert!(world.current("ops-api").await.is_none());
    // The value on argv is not an option.
    let (code, _, err) = patrol_in(cwd, &env, &["adopt", "ops-api", "--pat", &id, "--value", &api_value], None);
    assert_eq!(code, 2, "{err}");

    // By authorization id, the value on stdin.
    let (code, out, err) =
        patrol_in(cwd, &env, &["adopt", "ops-api", "--pat", &id, "--value-stdin"], Some(&format!("{api_value}\n")));
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("adopted") && out.contains(&id), "{out}");
    assert_eq!(world.current("ops-api").await, Some((api_id, api_value.clone())));
    // By the policy's display name, the value in an environment variable.
    let mut with_var = env.clone();
    with_var.push(("OPS_DEPLOY_PAT".into(), deploy_value.clone()));
    let (code, out, err) =
        patrol_in(cwd, &with_var, &["adopt", "ops-deploy", "--value-env", "OPS_DEPLOY_PAT", "--format", "json"], None);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["authorization_id"], deploy_id.to_string());
    assert_eq!(v["already"], false);
    // Again, nothing to give: already adopted.
    let (code, out, err) = patrol_in(cwd, &env, &["adopt", "ops-api", "--pat", &id], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already adopted"), "{out}");

    // The next plan and run: nothing to do — no rotate (missing), no adopt, no second PAT, no alarm.
    let (code, out, err) = patrol_in(cwd, &env, &["plan", "--format", "json"], None);
    assert_eq!(code, 0, "{out}{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    for e in plan["entries"].as_array().unwrap() {
        assert_eq!(e["actions"], json!([]), "{e}");
    }
    let (code, out, err) = patrol_in(cwd, &env, &["rotate"], None);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    let active = world.pats(DisplayFilter::Active).await;
    assert_eq!(active.len(), 2, "no second PAT: {active:?}");
    assert_eq!(world.current("ops-api").await, Some((api_id, api_value.clone())));
    let (code, out, _) = patrol_in(cwd, &env, &["status"], None);
    assert_eq!(code, 0);
    assert!(out.contains("never (adopted"), "{out}");
    let mail = mailbox_subjects(&mailbox);
    assert!(!mail.contains("outside patrol") && !mail.contains("CRITICAL"), "{mail}");
    for s in [&api_value, &deploy_value] {
        assert!(!transcript.contains(s.as_str()), "a PAT value is in the output");
    }
    world.emu.shutdown().await.unwrap();
}

/// Every file under `dir` with its size and modification time.
fn file_tree(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Read-only commands write nothing (a security-team rule; issue 16) — not even the refresh token Entra
/// hands back on every refresh: `plan`, `status`, `inventory` and `report`, real processes each signing the
/// owner in with the stored refresh token, leave every file of patrol's state (journal, secret store with the
/// refresh-token secret, key) exactly as it was; the stored refresh token keeps working for the next process.
/// A writing command (`rotate`) still stores the rotated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_write_nothing_not_even_a_rotated_refresh_token() {
    let world = World::open(Setup::start(seed(), &policy(ORG)).await, None, false).await;
    let (cwd, env) = (world.dir.path().to_path_buf(), world.env.clone());
    let rt = patrol::domain::OwnerId::parse(OWNER).unwrap().refresh_token_secret();
    let versions = || async { world.local.own.list_versions(&rt).await.unwrap().len() };
    let signed_in = versions().await;
    // A writing command: the first PAT, and the refresh token Entra rotated is stored.
    let (code, out, err) = patrol_in(&cwd, &env, &["rotate"], None);
    assert_eq!(code, 0, "{out}{err}");
    let after_rotate = versions().await;
    assert!(after_rotate > signed_in, "rotate stores the rotated refresh token ({signed_in} → {after_rotate})");

    let before = file_tree(&cwd);
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"],
        &["status"],
        &["inventory"],
        &["report", "--out", "-"],
        &["history"],
    ] {
        let (code, out, err) = patrol_in(&cwd, &env, args, None);
        let what = args.join(" ");
        assert_eq!(code, 0, "{what}: {out}{err}");
        assert_eq!(file_tree(&cwd), before, "`patrol {what}` wrote to patrol's state");
        assert_eq!(versions().await, after_rotate, "`patrol {what}` stored a refresh token");
    }
    // The plan ran on the stored (not rotated) refresh token, and it still works for a writing command,
    // which stores the one Entra rotates.
    let (code, out, err) = patrol_in(&cwd, &env, &["rotate"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(versions().await > after_rotate);
    world.emu.shutdown().await.unwrap();
}

/// Issue 16 item 11: an owner who never signed in is told to sign in — "has not signed in yet" with the
/// exact command and their name — never to "sign in again", by `plan` (table and JSON) and `rotate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_who_never_signed_in_is_told_to_sign_in_not_to_sign_in_again() {
    let setup = Setup::start(seed(), &policy(ORG)).await;
    let (cwd, env) = (setup.dir.path().to_path_buf(), setup.env.clone());
    let want = format!("{OWNER} has not signed in yet: run `patrol login --owner {OWNER}`");
    for args in [&["plan"][..], &["plan", "--format", "json"], &["rotate"]] {
        let (code, out, err) = patrol_in(&cwd, &env, args, None);
        let what = args.join(" ");
        assert_eq!(code, 3, "{what}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(all.contains(&want), "{what}: {all}");
        assert!(!all.contains("sign in again") && !all.contains("<owner>"), "{what}: {all}");
    }
    setup.emu.shutdown().await.unwrap();
}
