//! Rotation engine integration tests against real services: Azurite (blob leases and the blob journal).
//! The scenarios against patrol-emulator live in `rotation/` (shared helpers in `rotation/world.rs`).

mod blob_retry;
mod breakglass;
mod clamp;
mod concurrent;
mod consumer_ack;
mod consumer_refusals;
pub(crate) mod consumers;
mod expiry_alerts;
mod failed_runs;
mod gate;
mod lost_create;
pub(crate) mod metrics;
mod new_pat_test;
mod operating;
mod refresh;
mod retire;
mod store_failure;
mod timer_audit;
mod two_instances;
mod two_vaults;
mod vault_clock;
mod weekly_timer;
pub(crate) mod world;
mod year;

use patrol::rotation::lease::{BlobLeases, Leases};
use patrol::state::blob::BlobAccount;
use patrol::state::{StateError, StateStore};
use secrecy::SecretString;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite() -> Option<Azurite> {
    azurite_with(&[])
}

fn azurite_with(extra: &[&str]) -> Option<Azurite> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/node_modules/.bin/azurite-blob");
    if !bin.exists() {
        panic!("azurite-blob is not installed in tools/node_modules (run scripts/setup.sh)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    // In-memory persistence (Azurite refuses it together with --location); the temp dir holds its debug log.
    let mut child = Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--inMemoryPersistence"])
        .args(["--skipApiVersionCheck", "--silent"])
        .args(extra)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start azurite-blob");
    // Node starts slowly on a loaded machine (several test binaries start Azurite at once).
    for _ in 0..450 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Azurite { child, port, _dir: dir });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("azurite-blob exited with {status}: {err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("azurite-blob did not listen on 127.0.0.1:{port} within 45 s");
}

fn account(a: &Azurite) -> BlobAccount {
    BlobAccount::from_connection_string(&SecretString::from(format!(
        "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1",
        a.port
    )))
    .unwrap()
}

#[tokio::test]
async fn blob_journal_is_compare_and_swap_on_azurite() {
    let Some(az) = azurite() else { return };
    let s = account(&az).state_store();
    // `patrol status` names where the state is: the container's URL, never the connection string's key.
    let at = s.location();
    assert!(at.starts_with("blob container `patrol` at http://127.0.0.1:") && at.contains("/patrol"), "{at}");
    assert!(!at.contains("AccountKey") && !at.contains("Eby8vdM02x"), "{at}");
    assert!(s.load("journal/tok-a").await.unwrap().is_none());
    let t1 = s.save("journal/tok-a", b"{\"v\":1}", None).await.unwrap();
    assert!(matches!(s.save("journal/tok-a", b"{}", None).await, Err(StateError::Conflict { .. })));
    let t2 = s.save("journal/tok-a", b"{\"v\":2}", Some(&t1)).await.unwrap();
    assert!(matches!(s.save("journal/tok-a", b"{}", Some(&t1)).await, Err(StateError::Conflict { .. })));
    let (body, tag) = s.load("journal/tok-a").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), tag), (&b"{\"v\":2}"[..], t2));
    s.save("journal/tok-b", b"{}", None).await.unwrap();
    s.save("notify/sent", b"{}", None).await.unwrap();
    assert_eq!(s.list("journal/").await.unwrap(), vec!["journal/tok-a".to_owned(), "journal/tok-b".to_owned()]);
    // A wrong key is refused by the blob service (SharedKey is really checked).
    let bad = BlobAccount::from_connection_string(&SecretString::from(format!(
        "AccountName=devstoreaccount1;AccountKey=a2V5a2V5;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1",
        az.port
    )))
    .unwrap()
    .state_store();
    assert!(matches!(bad.load("journal/tok-a").await, Err(StateError::Io { .. })));
}

#[tokio::test]
async fn blob_leases_exclude_across_accounts_and_release() {
    let Some(az) = azurite() else { return };
    // Two independent clients stand for two Functions instances.
    let (a, b) = (BlobLeases::new(account(&az)), BlobLeases::new(account(&az)));
    let held = a.try_acquire("token/tok-a").await.unwrap().expect("free lease");
    assert!(b.try_acquire("token/tok-a").await.unwrap().is_none(), "held by the other instance");
    assert!(b.try_acquire("token/tok-b").await.unwrap().is_some());
    assert!(!held.is_lost());
    drop(held);
    // Release happens in the background; it is quick.
    let mut got = None;
    for _ in 0..50 {
        if let Some(g) = b.try_acquire("token/tok-a").await.unwrap() {
            got = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.is_some(), "released lease can be taken");
}

/// A credential standing in for the managed identity: an (unsigned) Entra-shaped JWT for `aud`, which
/// Azurite's `--oauth basic` checks for issuer, audience and lifetime.
#[derive(Debug)]
struct JwtCredential {
    aud: &'static str,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for JwtCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = time::OffsetDateTime::now_utc();
        let jwt = format!(
            "{}.{}.{}",
            b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
            b64(serde_json::json!({
                "aud": self.aud,
                "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
                "iat": now.unix_timestamp() - 60,
                "nbf": now.unix_timestamp() - 60,
                "exp": now.unix_timestamp() + 3600,
                "oid": "11111111-2222-3333-4444-555555555555",
            })),
            "c2ln"
        );
        Ok(azure_core::credentials::AccessToken::new(
            azure_core::credentials::Secret::new(jwt),
            now + time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn identity_based_storage_uses_bearer_tokens_on_azurite_oauth() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let az = azurite_with(&["--oauth", "basic", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .expect("azurite with --oauth basic");
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let uri = url::Url::parse(&format!("https://127.0.0.1:{}/devstoreaccount1", az.port)).unwrap();
    let good = BlobAccount::with_credential(
        &uri,
        std::sync::Arc::new(JwtCredential { aud: "https://storage.azure.com" }),
        http.clone(),
    )
    .unwrap();
    // Journal compare-and-swap and leases work with bearer auth alone.
    let s = good.state_store();
    let t1 = s.save("journal/tok-id", b"{\"v\":1}", None).await.unwrap();
    assert!(matches!(s.save("journal/tok-id", b"{}", None).await, Err(StateError::Conflict { .. })));
    s.save("journal/tok-id", b"{\"v\":2}", Some(&t1)).await.unwrap();
    assert_eq!(s.load("journal/tok-id").await.unwrap().unwrap().0, b"{\"v\":2}");
    let leases = BlobLeases::new(good.clone());
    let held = leases.try_acquire("token/tok-id").await.unwrap().expect("free lease");
    assert!(BlobLeases::new(good.clone()).try_acquire("token/tok-id").await.unwrap().is_none());
    drop(held);
    // A token for another audience is refused by the service: the bearer header is really checked.
    let bad =
        BlobAccount::with_credential(&uri, std::sync::Arc::new(JwtCredential { aud: "https://vault.azure.net" }), http)
            .unwrap()
            .state_store();
    match bad.load("journal/tok-id").await {
        Err(StateError::Io { message, .. }) => assert!(message.contains("401") || message.contains("403"), "{message}"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
}

// ---- a real `patrol` process killed at every step boundary, against patrol-emulator ----

mod kill {
    use patrol::cli::runtime::Local;
    use patrol::clock::Clock;
    use patrol::devops::DisplayFilter;
    use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
    use patrol::store::tags;
    use secrecy::ExposeSecret;

    use super::world::{OWNER, Setup, minted, seed, settings_of, sign_in};

    /// `patrol rotate [args]` as a child process; returns (exit code, stdout+stderr).
    fn patrol(env: &[(String, String)], crash: Option<&str>, args: &[&str]) -> (i32, String) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patrol"));
        cmd.arg("rotate").args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(b) = crash {
            cmd.env("PATROL_TEST_CRASH_AFTER", b);
        }
        let out = cmd.output().expect("run patrol");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_patrol_process_killed_at_every_step_boundary_converges() {
        let policy = format!(
            "[defaults]\norganization = \"fabrikam\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
             [[token]]\nsecret = \"kill-pat\"\ndisplay_name = \"Kill test\"\nvalidity_days = 30\n\
             rotate_before_days = 7\ngrace_days = 0\n"
        );
        let Setup { emu, dir: _dir, env } = Setup::start(seed(), &policy).await;
        let settings = settings_of(&env);
        let clock = Clock::system();
        let local = Local::open(settings, clock.clone()).unwrap();

        // The owner signs in with a device code (the emulator approves it).
        let owner = OwnerId::parse(OWNER).unwrap();
        sign_in(&emu, &local).await;

        let secret = SecretName::parse("kill-pat").unwrap();
        let api = local.connector().unwrap().pats(&owner, &OrgName::parse("fabrikam").unwrap());
        let mut transcript = String::new();
        let (code, out) = patrol(&env, None, &[]);
        transcript.push_str(&out);
        assert_eq!(code, 0, "first rotation: {out}");

        let boundaries = [
            "intent-saved",
            "create-returned",
            "created-saved",
            "store-returned",
            "verified",
            "finished",
            "previous-revoked",
            "previous-disabled",
        ];
        let mut revoked_before: Vec<AuthorizationId> = Vec::new();
        for b in boundaries {
            let before = local.store.get(&secret, None).await.unwrap().unwrap();
            let old = AuthorizationId::parse(&before.properties.tags[tags::AUTHORIZATION_ID]).unwrap();
            // Forced rotation, killed at `b` (the previous-* boundaries are reached by the drain run).
            let (code, out) = patrol(&env, Some(b), &["kill-pat", "--force"]);
            transcript.push_str(&out);
            let mut crashed = code == 86;
            if !crashed {
                assert_eq!(code, 0, "{b}: {out}");
                let (code, out) = patrol(&env, Some(b), &[]);
                transcript.push_str(&out);
                crashed = code == 86;
                assert!(crashed || code == 0, "{b}: {out}");
            }
            assert!(crashed, "the process never reached boundary {b}");
            // Restart (twice: resume, then drain the previous PAT whose grace is 0 days).
            for _ in 0..2 {
                let (code, out) = patrol(&env, None, &[]);
                transcript.push_str(&out);
                assert_eq!(code, 0, "{b}: restart: {out}");
            }
            // Converged: the current version's value is a live PAT; it is the only live PAT of this token.
            let cur = local.store.get(&secret, None).await.unwrap().expect("no lost secret");
            let id = AuthorizationId::parse(&cur.properties.tags[tags::AUTHORIZATION_ID]).unwrap();
            let active = api.list(DisplayFilter::Active).await.unwrap();
            let ours: Vec<_> = active.iter().filter(|p| p.display_name.starts_with("Kill test")).collect();
            assert_eq!(ours.len(), 1, "{b}: exactly one live PAT (no orphan, old revoked): {ours:?}");
            assert_eq!(ours[0].authorization_id, id, "{b}");
            if !b.starts_with("previous-") {
                // (A crash at a previous-* boundary may come from draining before the forced rotation.)
                assert_ne!(id, old, "{b}: rotated");
            }
            if id != old {
                assert!(!active.iter().any(|a| a.authorization_id == old), "{b}: the old PAT is revoked");
                revoked_before.push(old);
            }
            assert!(!revoked_before.contains(&id), "{b}: the current PAT was never revoked");
            // The stored value authenticates as that PAT (the emulator knows every minted value).
            let minted: serde_json::Value = reqwest::get(format!("{}/_control/secrets", emu.endpoints().control))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(minted.to_string().contains(cur.value.expose_secret()), "{b}: stored value was minted");
        }
        // No minted secret ever reached the process output.
        let values = minted(&reqwest::Client::new(), &emu).await;
        assert!(!values.is_empty());
        for v in values {
            assert!(!transcript.contains(&v), "a minted secret appeared in patrol's output");
        }
    }
}
