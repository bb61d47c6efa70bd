//! One clock everywhere (issue 19 item 4): a running `patrol serve` whose secrets live in the emulated Key
//! Vault (loopback client-credentials grant) keeps working after the virtual clock moves past the
//! lifetime of the vault token it holds. The token's expiry is reckoned on patrol's clock — the one that
//! follows the host's `UtcNow` — so the next invocation fetches a new token instead of sending one the
//! vault calls expired (every vault call failing with 401).

use super::two_instances::{invoke, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, seed};
use serde_json::{Value, json};

const KV_APP: &str = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_serve_keeps_using_the_vault_after_the_virtual_clock_passes_the_token_lifetime() {
    let mut s = seed();
    s["apps"] = json!([{ "clientId": KV_APP, "displayName": "patrol-kv", "kind": "servicePrincipal" }]);
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"vault-clock-pat\"\ndisplay_name = \"Vault clock\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 1\n"
    );
    let mut setup = Setup::start(s, &policy).await;
    let e = setup.emu.endpoints();
    let client_secret =
        setup.emu.context().secrets.list().into_iter().find(|(k, _)| *k == "client_secret").unwrap().1.to_owned();
    let (url, tenant, ca) =
        (e.extra["keyvault"].replace("127.0.0.1", "localhost"), e.tenant.clone(), e.extra["ca_cert"].clone());
    setup.set("PATROL_KEYVAULT_URL", url);
    setup.set("PATROL_KEYVAULT_CREDENTIAL", "client-secret");
    setup.set("PATROL_KEYVAULT_TENANT_ID", tenant);
    setup.set("PATROL_KEYVAULT_CLIENT_ID", KV_APP);
    setup.set("PATROL_KEYVAULT_CLIENT_SECRET", client_secret.clone());
    setup.set("PATROL_CA_CERT", ca);
    let w = World::open(setup, None, false).await;
    let log = w.dir.path().join("serve.log");
    let serve = start_instance_logging(&w.env, &log).await;
    let detail = |v: &Value| v["ReturnValue"]["detail"].clone();

    // Onboarding: the first timer creates the PAT and writes it to the vault (a vault token is fetched).
    let first = invoke(&serve, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!((detail(&first)["rotated"].as_u64(), detail(&first)["failed"].as_u64()), (Some(1), Some(0)), "{first}");

    // 24 days later (the vault token lived one hour of that): the token is due; the same process must get
    // a new vault token on its own to read, write and verify.
    w.advance(time::Duration::days(24)).await;
    let due = invoke(&serve, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(due["ReturnValue"]["status"], "completed", "{due}");
    assert_eq!((detail(&due)["rotated"].as_u64(), detail(&due)["failed"].as_u64()), (Some(1), Some(0)), "{due}");
    // And a day on (grace over): the previous PAT revoked, its vault version disabled.
    w.advance(time::Duration::hours(25)).await;
    let drain = invoke(&serve, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!((detail(&drain)["revoked"].as_u64(), detail(&drain)["failed"].as_u64()), (Some(1), Some(0)), "{drain}");
    let (_, value) = w.current("vault-clock-pat").await.unwrap();
    assert!(w.authenticates(&value).await, "the vault's current value is a live PAT");

    // Nothing the emulator minted (the vault token and the client secret included) reached the log.
    drop(serve);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&client_secret));
    for v in w.minted().await {
        assert!(!text.contains(&v), "a minted secret appeared in patrol serve's output");
    }
}
