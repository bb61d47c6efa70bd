//! The failed-invocation rule (issue 19 item 2, `rotation::verdict`) end to end: a pass in which every due
//! token's rotation fails is not `completed` — `RotateTimer` fails the invocation (500, naming each token
//! at risk), `RotateHttp` answers 500 with the report, `patrol rotate` exits 1 — and once the cause is gone
//! the same pass completes.

use super::store_failure::Frozen;
use super::two_instances::{invoke, start_instance_logging, timer};
use super::world::{ORG, OWNER, World, seed};
use serde_json::{Value, json};

async fn post(url: &str, function: &str, data: Value, now: time::OffsetDateTime) -> (u16, Value) {
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{url}/{function}"))
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(&json!({ "Data": data, "Metadata": { "sys": { "MethodName": function, "UtcNow": utc } } }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_where_every_due_token_fails_fails_the_invocation_and_the_cli() {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 1\n\
         [[token]]\nsecret = \"fail-a\"\ndisplay_name = \"Fail A\"\n\
         [[token]]\nsecret = \"fail-b\"\ndisplay_name = \"Fail B\"\n"
    );
    let w = World::start(seed(), &policy).await;
    let serve = start_instance_logging(&w.env, &w.dir.path().join("serve.log")).await;
    let first = invoke(&serve, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(first["ReturnValue"]["status"], "completed", "{first}");
    assert_eq!(first["ReturnValue"]["detail"]["rotated"], 2, "{first}");

    // Both tokens are due, and the secret store refuses every write.
    w.advance(time::Duration::days(24)).await;
    let frozen: Vec<_> =
        ["fail-a", "fail-b"].iter().map(|s| Frozen::new(&w.dir.path().join("state/secrets").join(s))).collect();
    let (status, body) = post(serve.url(), "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(status, 500, "the host records a failed invocation: {body}");
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("FAILED: 2 token(s) at risk"), "{e}");
    assert!(e.contains("fail-a: its due rotation failed") && e.contains("fail-b: its due rotation failed"), "{e}");

    let req = json!({ "req": { "Url": "http://localhost/api/rotate", "Method": "POST", "Query": {}, "Headers": {}, "Params": {} } });
    let (status, env) = post(serve.url(), "RotateHttp", req.clone(), w.emu.clock().now()).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["Outputs"]["res"]["statusCode"], 500, "{env}");
    let res: Value = serde_json::from_str(env["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(res["status"], "failed", "{res}");
    assert_eq!(res["detail"]["at_risk"].as_array().map(Vec::len), Some(2), "{res}");

    // The CLI follows the same rule (forced: an operator asked for these rotations).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patrol"))
        .args(["rotate", "--force"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(w.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("2 token(s) at risk") && text.contains("its forced rotation failed"), "{text}");

    // The store recovers: the same pass completes.
    drop(frozen);
    let healed = invoke(&serve, "RotateTimer", timer(), w.emu.clock().now()).await;
    assert_eq!(healed["ReturnValue"]["status"], "completed", "{healed}");
    assert_eq!(healed["ReturnValue"]["detail"]["rotated"], 2, "{healed}");
    for s in ["fail-a", "fail-b"] {
        let (_, value) = w.current(s).await.unwrap();
        assert!(w.authenticates(&value).await, "{s}");
    }
}
