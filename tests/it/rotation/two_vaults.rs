//! The two-vault layout end to end against patrol-emulator hosting three vaults with RBAC on: the consumer
//! vault `consumer-kv`, a team's consumer vault `team-kv` (a `[[token]]` names it) and patrol's own vault
//! `patrol-own`, which only patrol's identity may use. An existing one-vault deployment (refresh token in the
//! consumer vault, which a pipeline identity can read) moves its refresh token with
//! `patrol migrate-refresh-tokens` — killed after the copy, then run again — and keeps rotating without the
//! owner signing in again; afterwards no refresh token is in any consumer vault and the pipeline identity
//! gets 403 on patrol's vault. Every process output is scanned for every minted secret.

use super::world::{OWNER, Setup, minted, seed, settings_of, sign_in};
use patrol::cli::runtime::Local;
use patrol::clock::Clock;
use patrol::config::{Settings, Source};
use patrol::domain::{OwnerId, SecretName};
use patrol::store::{KeyVaultSecretStore, NewVersion, SecretStore, StoreError};
use patrol_emulator::EmulatorConfig;
use patrol_emulator::server::KeyVaultConfig;
use secrecy::SecretString;
use serde_json::{Value, json};

const PATROL_APP: &str = "0b6f7c2e-1d3a-4e5f-8a9b-0c1d2e3f4a5b";
const PATROL_SECRET: &str = "patrol-fn-client-secret-8d7c6b5a4f3e";
const PIPELINE_APP: &str = "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e0f";
const PIPELINE_SECRET: &str = "pipeline-client-secret-1f2e3d4c5b6a";

/// `patrol <args>` as a child process with `env` (and the crash hook of test builds); (exit code, output).
fn patrol(env: &[(String, String)], crash: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(step) = crash {
        cmd.env("PATROL_TEST_CRASH_AFTER", step);
    }
    let out = cmd.output().expect("run patrol");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A Key Vault store on `url` as the app `client_id` sees it.
fn store_as(env: &[(String, String)], url: &str, client_id: &str, secret: &str) -> KeyVaultSecretStore {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap();
    let s = Settings::from_source(&Source::from_pairs([
        ("PATROL_KEYVAULT_URL", url),
        ("PATROL_KEYVAULT_NAME", "probe-kv"),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret"),
        ("PATROL_KEYVAULT_TENANT_ID", get("PATROL_TENANT_ID")),
        ("PATROL_KEYVAULT_CLIENT_ID", client_id),
        ("PATROL_KEYVAULT_CLIENT_SECRET", secret),
        ("PATROL_ENTRA_AUTHORITY", get("PATROL_ENTRA_AUTHORITY")),
        ("PATROL_CA_CERT", get("PATROL_CA_CERT")),
    ]))
    .unwrap();
    KeyVaultSecretStore::connect(s.keyvault.as_ref().unwrap(), &s.entra_authority, s.ca_cert.as_deref(), None).unwrap()
}

async fn names(store: &dyn SecretStore) -> Vec<String> {
    let mut v: Vec<String> = store.list().await.unwrap().into_iter().map(|s| s.name.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vaults_end_to_end_refresh_tokens_move_once_and_consumers_get_403() {
    let mut seed = seed();
    seed["apps"] = json!([
        { "clientId": PATROL_APP, "displayName": "patrol-fn", "kind": "servicePrincipal", "clientSecret": PATROL_SECRET },
        { "clientId": PIPELINE_APP, "displayName": "pipeline", "kind": "servicePrincipal", "clientSecret": PIPELINE_SECRET },
    ]);
    let policy = format!(
        "[defaults]\norganization = \"fabrikam\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 1\n\n[[token]]\nsecret = \"ci-pat\"\ndisplay_name = \"CI\"\n\n\
         [[token]]\nsecret = \"team-pat\"\ndisplay_name = \"Team\"\nvault = \"team-kv\"\n"
    );
    let config = EmulatorConfig {
        keyvault: KeyVaultConfig {
            vault_name: "consumer-kv".into(),
            extra_vaults: vec!["team-kv".into(), "patrol-own".into()],
            ..KeyVaultConfig::default()
        },
        ..EmulatorConfig::default()
    };
    let mut setup = Setup::start_with(seed, &policy, config).await;
    let ep = setup.emu.endpoints().clone();
    let (consumer_url, team_url, own_url) =
        (ep.extra["keyvault"].clone(), ep.extra["keyvault.team-kv"].clone(), ep.extra["keyvault.patrol-own"].clone());
    for (k, v) in [
        ("PATROL_KEYVAULT_URL", consumer_url.clone()),
        ("PATROL_KEYVAULT_NAME", "consumer-kv".into()),
        ("PATROL_CONSUMER_KEYVAULTS", format!("team-kv={team_url}")),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret".into()),
        ("PATROL_KEYVAULT_TENANT_ID", ep.tenant.clone()),
        ("PATROL_KEYVAULT_CLIENT_ID", PATROL_APP.into()),
        ("PATROL_KEYVAULT_CLIENT_SECRET", PATROL_SECRET.into()),
        ("PATROL_CA_CERT", ep.extra["ca_cert"].clone()),
    ] {
        setup.set(k, v);
    }
    // RBAC: patrol's identity is Secrets Officer everywhere; the pipeline reads the consumer vault (the
    // vault-wide Get/List a variable group linked to Key Vault needs) and one secret of the team's vault.
    let http = reqwest::Client::new();
    let officer = json!({ "principal": PATROL_APP, "role": "Key Vault Secrets Officer" });
    for (vault, body) in [
        ("consumer-kv", json!([officer, { "principal": PIPELINE_APP, "role": "Key Vault Secrets User" }])),
        (
            "team-kv",
            json!([officer, { "principal": PIPELINE_APP, "role": "Key Vault Secrets User", "secret": "team-pat" }]),
        ),
        ("patrol-own", json!([officer])),
    ] {
        let r = http.put(format!("{}/_control/keyvaults/{vault}/rbac", ep.control)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{vault}: {}", r.text().await.unwrap());
    }
    let mut transcript = String::new();
    let owner = OwnerId::parse(OWNER).unwrap();
    let refresh = owner.refresh_token_secret();
    let consumer = store_as(&setup.env, &consumer_url, PATROL_APP, PATROL_SECRET);
    let team = store_as(&setup.env, &team_url, PATROL_APP, PATROL_SECRET);
    let own = store_as(&setup.env, &own_url, PATROL_APP, PATROL_SECRET);
    let base_env = setup.env.clone();
    let pipeline = |url: &str| store_as(&base_env, url, PIPELINE_APP, PIPELINE_SECRET);

    // 1. An existing one-vault deployment: the refresh token sits in the consumer vault, with a warning.
    let one_vault = settings_of(&setup.env);
    assert_eq!(one_vault.trust_warnings().len(), 1);
    let local = Local::open(one_vault, Clock::system()).unwrap();
    sign_in(&setup.emu, &local).await;
    let (code, out) = patrol(&setup.env, None, &["rotate"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PATROL_OWN_KEYVAULT_URL"), "the CLI warns that consumers can read refresh tokens: {out}");
    let (code, out) = patrol(&setup.env, None, &["status", "--format", "json"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    // stdout (the JSON view) comes first; the same warning follows on stderr.
    let status: Value = serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap();
    assert!(status["warnings"][0].as_str().unwrap().contains("refresh tokens share the consumer vault"), "{out}");
    assert_eq!(names(&consumer).await, ["ci-pat", refresh.as_str()]);
    assert_eq!(names(&team).await, ["team-pat"], "the team's token went to its own vault");
    assert!(pipeline(&consumer_url).get(&refresh, None).await.unwrap().is_some(), "the hole: consumers read it");

    // 2. patrol's own vault is configured; the migration is killed right after copying, then run again.
    setup.set("PATROL_OWN_KEYVAULT_URL", own_url.clone());
    assert!(settings_of(&setup.env).trust_warnings().is_empty());
    let (code, out) = patrol(&setup.env, Some("refresh-token-copied"), &["migrate-refresh-tokens"]);
    transcript.push_str(&out);
    assert_eq!(code, 86, "killed after the copy: {out}");
    assert!(own.get(&refresh, None).await.unwrap().is_some(), "copied before the kill");
    assert!(consumer.get(&refresh, None).await.unwrap().is_some(), "not yet removed");
    let (code, out) = patrol(&setup.env, None, &["migrate-refresh-tokens", "--format", "json"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    let moved: Value =
        serde_json::from_str(out.lines().take_while(|l| !l.starts_with("patrol")).collect::<String>().trim())
            .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(moved[0]["secret"], json!(refresh.as_str()), "{out}");
    assert_eq!(own.list_versions(&refresh).await.unwrap().len(), 1, "the resumed run did not copy twice");
    // Nothing left behind: not listed, not readable, and purged (the name can be taken again).
    assert_eq!(names(&consumer).await, ["ci-pat"]);
    assert!(consumer.get(&refresh, None).await.unwrap().is_none());
    let probe = SecretName::parse("patrol-owner-probe").unwrap();
    consumer.set(&probe, &SecretString::from("probe"), NewVersion::default()).await.unwrap();
    consumer.delete(&probe).await.unwrap();
    match consumer.set(&refresh, &SecretString::from("probe"), NewVersion::default()).await {
        Ok(_) => consumer.delete(&refresh).await.unwrap(),
        Err(e) => panic!("the old refresh-token secret was not purged: {e}"),
    }
    let (code, out) = patrol(&setup.env, None, &["migrate-refresh-tokens"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no refresh token left"), "{out}");

    // 3. Rotation goes on with the moved refresh token (no new sign-in); it never reaches a consumer vault.
    let before = own.list_versions(&refresh).await.unwrap().len();
    let (code, out) = patrol(&setup.env, None, &["rotate", "--force"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    let (code, out) = patrol(&setup.env, None, &["status", "--format", "json"]);
    transcript.push_str(&out);
    assert_eq!(code, 0, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(status["owners"][0]["health"], "ok");
    assert_eq!(status["warnings"], json!([]));
    assert!(own.list_versions(&refresh).await.unwrap().len() > before, "the refreshed token went to patrol's vault");
    assert_eq!(names(&consumer).await, ["ci-pat"]);
    assert_eq!(names(&team).await, ["team-pat"]);
    assert_eq!(names(&own).await, [refresh.as_str()]);
    assert!(consumer.list_versions(&SecretName::parse("ci-pat").unwrap()).await.unwrap().len() >= 2, "rotated");

    // 4. RBAC: the pipeline reads what it was given, and gets 403 on patrol's vault and beyond its scope.
    assert!(pipeline(&consumer_url).get(&SecretName::parse("ci-pat").unwrap(), None).await.unwrap().is_some());
    assert!(pipeline(&team_url).get(&SecretName::parse("team-pat").unwrap(), None).await.unwrap().is_some());
    for r in [
        pipeline(&own_url).get(&refresh, None).await.map(|_| ()),
        pipeline(&own_url).list().await.map(|_| ()),
        pipeline(&team_url).list().await.map(|_| ()),
        pipeline(&consumer_url).set(&probe, &SecretString::from("x"), NewVersion::default()).await.map(|_| ()),
    ] {
        match r {
            Err(StoreError::Forbidden { .. }) => {}
            Err(StoreError::Other { message, .. }) if message.starts_with("Forbidden: Caller is not authorized") => {}
            other => panic!("expected 403 ForbiddenByRbac, got {other:?}"),
        }
    }

    // No minted secret (PATs, refresh and access tokens) or client secret reached any output.
    let mut secrets = minted(&http, &setup.emu).await;
    secrets.extend([PATROL_SECRET.to_owned(), PIPELINE_SECRET.to_owned()]);
    for s in secrets {
        assert!(!transcript.contains(&s), "a secret appeared in patrol's output");
    }
}
