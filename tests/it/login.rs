//! `patrol login` as the real binary against patrol-emulator: the device-code prompt on stderr, the test
//! approving (or declining, or letting expire) the code through the emulator's control API, the exit code,
//! where the refresh token lands (the emulated Key Vault over HTTPS, or the encrypted file store) and that
//! no token the emulator minted ever reaches stdout or stderr.

use patrol::clock::Clock;
use patrol::domain::OwnerId;
use patrol::store::{FileSecretStore, REFRESH_TOKEN_CONTENT_TYPE, SecretStore};
use patrol_emulator::{Emulator, EmulatorConfig};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OWNER: &str = "login-owner@fabrikam.example";
/// Someone else in the tenant, who might enter the owner's code.
const OTHER: &str = "someone-else@fabrikam.example";
const CLIENT_ID: &str = "3b1f0c2d-9e8a-4f7b-a6c5-d4e3f2a1b0c9";
const KV_APP: &str = "8c7b6a59-4d3e-4f2a-9b1c-0d9e8f7a6b5c";

pub(crate) async fn emulator() -> (Emulator, String) {
    let seed = serde_json::from_value(json!({
        "organizations": [{ "name": "fabrikam" }],
        "users": [{ "upn": OWNER, "organizations": ["fabrikam"] }, { "upn": OTHER, "organizations": ["fabrikam"] }],
        "apps": [{ "clientId": KV_APP, "displayName": "patrol-login-kv", "kind": "servicePrincipal" }]
    }))
    .unwrap();
    let emu = Emulator::start(EmulatorConfig { seed: Some(seed), ..Default::default() }).await.unwrap();
    let secret = emu.context().secrets.list().into_iter().find(|(k, _)| *k == "client_secret").unwrap().1;
    (emu, secret)
}

fn write_policy(dir: &Path) -> String {
    let p = dir.join("patrol.toml");
    std::fs::write(
        &p,
        format!(
            "[defaults]\norganization = \"fabrikam\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\n\
             [[token]]\nsecret = \"ci-build-pat\"\ndisplay_name = \"CI build\"\n"
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// The settings of a file-store run; `vault` adds the emulated Key Vault (client secret credential).
pub(crate) fn settings(emu: &Emulator, dir: &Path, vault: Option<&str>) -> Vec<(String, String)> {
    let e = emu.endpoints();
    let mut v = vec![
        ("PATROL_POLICY_FILE".to_owned(), write_policy(dir)),
        ("PATROL_STATE_DIR".to_owned(), dir.join("state").display().to_string()),
        ("PATROL_STORE_KEY_FILE".to_owned(), dir.join("store.key").display().to_string()),
        ("PATROL_ENTRA_AUTHORITY".to_owned(), e.entra.clone()),
        ("PATROL_TENANT_ID".to_owned(), e.tenant.clone()),
        ("PATROL_CLIENT_ID".to_owned(), CLIENT_ID.to_owned()),
        // Entra is HTTPS with the emulator's CA (the same CA as the vault's).
        ("PATROL_CA_CERT".to_owned(), e.extra["ca_cert"].clone()),
    ];
    if let Some(client_secret) = vault {
        let url = e.extra["keyvault"].replace("127.0.0.1", "localhost");
        v.extend([
            ("PATROL_KEYVAULT_URL".to_owned(), url),
            ("PATROL_KEYVAULT_CREDENTIAL".to_owned(), "client-secret".to_owned()),
            ("PATROL_KEYVAULT_TENANT_ID".to_owned(), e.tenant.clone()),
            ("PATROL_KEYVAULT_CLIENT_ID".to_owned(), KV_APP.to_owned()),
            ("PATROL_KEYVAULT_CLIENT_SECRET".to_owned(), client_secret.to_owned()),
        ]);
    }
    v
}

pub(crate) fn spawn(dir: &Path, args: &[&str], env: &[(String, String)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
    c.arg("login").args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Reads stderr until the prompt names the code; returns the code and everything read so far. The rest of
/// stderr is drained on a thread (returned) so the child never blocks on a full pipe.
pub(crate) fn read_prompt(child: &mut Child) -> (String, String, std::thread::JoinHandle<String>) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr closed before the prompt: {seen}");
        seen.push_str(&line);
        if let Some(rest) = line.split("enter the code ").nth(1) {
            break rest.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no prompt: {seen}");
    };
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (code, seen, rest)
}

/// Waits for the child (bounded) and returns (exit code, stdout, stderr).
pub(crate) fn finish(
    mut child: Child,
    mut stderr: String,
    rest: std::thread::JoinHandle<String>,
) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("patrol login did not finish: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    stderr.push_str(&rest.join().unwrap());
    (status.code().unwrap_or(-1), stdout, stderr)
}

async fn control(emu: &Emulator, path: &str, body: Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", emu.endpoints().control)).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// Every value the emulator minted (refresh, access tokens, device codes, the client secret) is absent.
fn assert_no_secret(emu: &Emulator, output: &str) {
    let minted = emu.context().secrets.list();
    assert!(minted.iter().any(|(k, _)| *k == "device_code"), "the emulator recorded what it minted");
    for (kind, value) in minted {
        assert!(!output.contains(&value), "a {kind} reached the terminal");
    }
}

fn minted(emu: &Emulator, kind: &str) -> Vec<String> {
    emu.context().secrets.list().into_iter().filter(|(k, _)| *k == kind).map(|(_, v)| v).collect()
}

/// Runs a login to completion with the emulator approving the code; returns (exit code, stdout, stderr).
/// The embedded file store as `patrol login` opens it under `dir`.
fn file_store(dir: &Path) -> FileSecretStore {
    FileSecretStore::open(dir.join("state/secrets"), &dir.join("store.key"), Clock::system()).unwrap()
}

pub(crate) async fn approved_login(emu: &Emulator, dir: &Path, env: &[(String, String)]) -> (i32, String, String) {
    let mut child = spawn(dir, &["--owner", OWNER, "--poll-interval-ms", "50"], env);
    let (code, seen, rest) = tokio::task::block_in_place(|| read_prompt(&mut child));
    assert!(seen.contains(&format!("To sign in {OWNER}, open ")), "{seen}");
    control(emu, "/_control/devicecodes/approve", json!({ "userCode": code, "upn": OWNER })).await;
    tokio::task::block_in_place(|| finish(child, seen, rest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_the_refresh_token_in_the_emulated_key_vault() {
    let (emu, kv_secret) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let env = settings(&emu, dir.path(), Some(&kv_secret));
    let (code, stdout, stderr) = approved_login(&emu, dir.path(), &env).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let name = OwnerId::parse(OWNER).unwrap().refresh_token_secret();
    assert!(stdout.contains(&format!("refresh token is stored in secret {name}")), "{stdout}");

    // The vault holds exactly one version of the owner's secret: the refresh token Entra minted.
    let state = &emu.keyvault().state;
    let (_, versions) = state.vault.lock().unwrap().versions(name.as_str(), state.clock.now()).unwrap();
    assert_eq!(versions.len(), 1, "one version");
    let refresh = minted(&emu, "refresh_token");
    assert_eq!(refresh.len(), 1, "one refresh token minted");
    assert_eq!(versions[0].value, refresh[0], "the vault holds the refresh token Entra issued");
    assert_eq!(versions[0].content_type.as_deref(), Some(REFRESH_TOKEN_CONTENT_TYPE));
    // Nothing secret on the terminal, and nothing written to the file store or anywhere under the dir.
    assert_no_secret(&emu, &format!("{stdout}{stderr}"));
    assert!(!dir.path().join("state/secrets").exists() && !dir.path().join("store.key").exists());
    emu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_the_refresh_token_in_the_file_store() {
    let (emu, _) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let env = settings(&emu, dir.path(), None);
    let (code, stdout, stderr) = approved_login(&emu, dir.path(), &env).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    let store = file_store(dir.path());
    let name = OwnerId::parse(OWNER).unwrap().refresh_token_secret();
    let stored = store.get(&name, None).await.unwrap().expect("the refresh token is stored");
    let refresh = minted(&emu, "refresh_token");
    assert_eq!(refresh.len(), 1);
    assert_eq!(stored.value.expose_secret(), refresh[0]);
    assert_eq!(stored.properties.content_type.as_deref(), Some(REFRESH_TOKEN_CONTENT_TYPE));
    assert_no_secret(&emu, &format!("{stdout}{stderr}"));
    // Encrypted at rest: the value is in no file under the directory.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(refresh[0].len()).any(|w| w == refresh[0].as_bytes()), "{}", p.display());
            }
        }
    }
    emu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_or_expired_sign_in_exits_3_and_stores_nothing() {
    let (emu, _) = emulator().await;
    let name = OwnerId::parse(OWNER).unwrap().refresh_token_secret();

    // Declined by the person.
    let dir = tempfile::tempdir().unwrap();
    let env = settings(&emu, dir.path(), None);
    let mut child = spawn(dir.path(), &["--owner", OWNER, "--poll-interval-ms", "50"], &env);
    let (code, seen, rest) = tokio::task::block_in_place(|| read_prompt(&mut child));
    control(&emu, "/_control/devicecodes/deny", json!({ "userCode": code, "upn": OWNER })).await;
    let (exit, stdout, stderr) = tokio::task::block_in_place(|| finish(child, seen, rest));
    assert_eq!(exit, 3, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("declined") && stderr.contains("patrol login --owner"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_no_secret(&emu, &format!("{stdout}{stderr}"));
    let store = file_store(dir.path());
    assert!(store.get(&name, None).await.unwrap().is_none(), "nothing stored");

    // Nobody signs in before the code expires (the emulator's clock moves past its lifetime).
    let dir = tempfile::tempdir().unwrap();
    let env = settings(&emu, dir.path(), None);
    let mut child = spawn(dir.path(), &["--owner", OWNER, "--poll-interval-ms", "50"], &env);
    let (_, seen, rest) = tokio::task::block_in_place(|| read_prompt(&mut child));
    control(&emu, "/_control/clock/advance", json!({ "seconds": 3 * 3600 })).await;
    let (exit, stdout, stderr) = tokio::task::block_in_place(|| finish(child, seen, rest));
    assert_eq!(exit, 3, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("expired") && stderr.contains("patrol login --owner"), "{stderr}");
    assert_no_secret(&emu, &format!("{stdout}{stderr}"));
    assert!(minted(&emu, "refresh_token").is_empty(), "no refresh token was ever issued");
    emu.shutdown().await.unwrap();
}

/// The ID token names who signed in: another account entering the owner's code gets nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_by_another_account_is_refused_and_stores_nothing() {
    let (emu, _) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let env = settings(&emu, dir.path(), None);
    let mut child = spawn(dir.path(), &["--owner", OWNER, "--poll-interval-ms", "50"], &env);
    let (code, seen, rest) = tokio::task::block_in_place(|| read_prompt(&mut child));
    control(&emu, "/_control/devicecodes/approve", json!({ "userCode": code, "upn": OTHER })).await;
    let (exit, stdout, stderr) = tokio::task::block_in_place(|| finish(child, seen, rest));
    assert_eq!(exit, 3, "the owner must sign in: stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains(&format!("{OTHER} signed in, not {OWNER}")), "{stderr}");
    assert!(stderr.contains("patrol login --owner"), "{stderr}");
    assert_eq!(minted(&emu, "refresh_token").len(), 1, "Entra did issue a refresh token to the other account");
    assert_no_secret(&emu, &format!("{stdout}{stderr}"));
    let name = OwnerId::parse(OWNER).unwrap().refresh_token_secret();
    assert!(file_store(dir.path()).get(&name, None).await.unwrap().is_none(), "nothing stored under the owner");
    emu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_or_configuration_exits_2_naming_what_was_wrong() {
    let (emu, _) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let base = settings(&emu, dir.path(), None);
    let run = |args: &[&str], env: &[(String, String)]| {
        let child = spawn(dir.path(), args, env);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let with = |k: &str, v: Option<&str>| {
        let mut e: Vec<(String, String)> = base.iter().filter(|(n, _)| n != k).cloned().collect();
        if let Some(v) = v {
            e.push((k.to_owned(), v.to_owned()));
        }
        e
    };

    // An owner the policy does not name: refused before any sign-in starts.
    let (code, stdout, stderr) = run(&["--owner", "someone-else@fabrikam.example"], &base);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("someone-else@fabrikam.example") && stderr.contains(OWNER), "{stderr}");
    // Not an owner id at all.
    let (code, _, stderr) = run(&["--owner", "not an owner"], &base);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--owner"), "{stderr}");
    // A malformed setting is named.
    let (code, _, stderr) = run(&[], &with("PATROL_ENTRA_AUTHORITY", Some("not a url")));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("PATROL_ENTRA_AUTHORITY"), "{stderr}");
    // No app registration to sign in to.
    let (code, _, stderr) = run(&[], &with("PATROL_CLIENT_ID", None));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("PATROL_CLIENT_ID"), "{stderr}");
    // No policy file.
    let (code, _, stderr) =
        run(&[], &with("PATROL_POLICY_FILE", Some(&dir.path().join("nope.toml").display().to_string())));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
    assert!(minted(&emu, "device_code").is_empty(), "no sign-in was started for bad input");
    emu.shutdown().await.unwrap();
}
