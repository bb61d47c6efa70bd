//! `patrol revoke --owner … --prestage` as real processes against patrol-emulator: the confirmation is
//! refused without `--yes` when stdin is not a terminal (exit 4, nothing revoked); the dry run changes
//! nothing; a process killed between storing a replacement and revoking (the engine's `verified` and
//! `finished` boundaries) leaves the old value current or the new one stored, and the rerun resumes the
//! same break glass: it keeps the replacement already stored, replaces the other token, and revokes every
//! old PAT.

use super::world::{ORG, OWNER, World, env_pairs};
use patrol::devops::{CreatePat, DisplayFilter};
use patrol::domain::{AuthorizationId, DisplayName, Scopes, SecretName};
use patrol::rotation::engine::RunOptions;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::process::{Command, Stdio};

/// `patrol revoke [args]` with stdin closed (not a terminal); returns (exit code, stdout, stderr).
fn revoke(env: &[(String, String)], crash: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("revoke").args(["--org", ORG, "--owner", OWNER]).args(args);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(b) = crash {
        cmd.env("PATROL_TEST_CRASH_AFTER", b);
    }
    let out = cmd.output().expect("run patrol revoke");
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code().unwrap_or(-1), o, e)
}

async fn versions(w: &World, secret: &str) -> usize {
    w.local.store.list_versions(&SecretName::parse(secret).unwrap()).await.unwrap().len()
}

/// Killed after the first replacement is stored and verified, while its journal operation is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestaged_break_glass_for_an_owner_survives_a_kill_between_store_and_revoke() {
    scenario("verified").await;
}

/// Killed after the first replacement's rotation finished (journal closed), before any revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestaged_break_glass_for_an_owner_survives_a_kill_after_a_finished_replacement() {
    scenario("finished").await;
}

async fn scenario(crash: &str) {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n\
         [[token]]\nsecret = \"bg-api\"\ndisplay_name = \"Break glass API\"\n\
         [[token]]\nsecret = \"bg-deploy\"\ndisplay_name = \"Break glass deploy\"\nscopes = \"vso.release\"\n"
    );
    let w = World::start(serde_json::from_value(super::world::seed()).unwrap(), &policy).await;
    let env = env_pairs(w.dir.path(), &w.emu);
    // Onboarding through the engine: both secrets hold a PAT. The owner also has a PAT patrol does not manage.
    let engine = w.local.engine().unwrap();
    let s = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!(s.rotated, 2, "{}", s.line());
    let script = w
        .api
        .create(&CreatePat {
            display_name: DisplayName::parse("owner's script").unwrap(),
            scopes: Scopes::parse("vso.code").unwrap(),
            valid_to: w.emu.clock().now() + time::Duration::days(10),
            all_orgs: false,
        })
        .await
        .unwrap();
    let script_value = script.token.expose_secret().to_owned();
    let (a_old, a_old_value) = w.current("bg-api").await.unwrap();
    let (d_old, d_old_value) = w.current("bg-deploy").await.unwrap();
    let all_old = [&a_old_value, &d_old_value, &script_value];
    let mut transcript = String::new();

    // No terminal, no --yes: refused with a clear message and its own exit code; nothing is revoked.
    let (code, out, err) = revoke(&env, None, &["--prestage"]);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("not a terminal") && err.contains("--yes"), "{err}");
    assert!(out.contains("declined; nothing was revoked"), "{out}");
    for v in all_old {
        assert!(w.authenticates(v).await, "declined, yet a PAT was revoked");
    }

    // Dry run: says what would happen, changes nothing.
    let (code, out, err) = revoke(&env, None, &["--prestage", "--dry-run"]);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("DRY RUN") && out.contains("3 PAT(s) would be revoked"), "{out}");
    for v in all_old {
        assert!(w.authenticates(v).await, "the dry run revoked a PAT");
    }
    assert_eq!((versions(&w, "bg-api").await, versions(&w, "bg-deploy").await), (1, 1), "the dry run stored a value");

    // For real, killed at `crash` in the first replacement, before any revoke.
    let (code, out, err) = revoke(&env, Some(crash), &["--prestage", "--yes"]);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 86, "the process did not die at {crash}: {out}{err}");
    for v in all_old {
        assert!(w.authenticates(v).await, "a PAT was revoked before every replacement was stored");
    }
    let replaced: Vec<&str> = {
        let mut r = Vec::new();
        for (secret, old) in [("bg-api", a_old), ("bg-deploy", d_old)] {
            let (id, value) = w.current(secret).await.expect("no lost secret");
            assert!(w.authenticates(&value).await, "{secret}: the current value does not authenticate");
            if id != old {
                r.push(secret);
            }
        }
        r
    };
    assert_eq!(replaced.len(), 1, "exactly one replacement was stored before the kill");
    let (kept_id, kept_value) = w.current(replaced[0]).await.unwrap();

    // The rerun resumes the same break glass and converges.
    let (code, out, err) = revoke(&env, None, &["--prestage", "--yes", "--format", "json"]);
    transcript.push_str(&(out.clone() + &err));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("resuming the unfinished break glass"), "{out}");
    let report: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    for v in all_old {
        assert!(!w.authenticates(v).await, "an old PAT still works after the break glass");
    }
    let (now_id, now_value) = w.current(replaced[0]).await.unwrap();
    assert_eq!((now_id, &now_value), (kept_id, &kept_value), "the stored replacement was replaced again");
    assert!(w.authenticates(&now_value).await);
    let other = if replaced[0] == "bg-api" { "bg-deploy" } else { "bg-api" };
    let (other_id, other_value) = w.current(other).await.unwrap();
    assert!(![a_old, d_old].contains(&other_id) && w.authenticates(&other_value).await);
    // One replacement per token: two vault versions each, and the owner's live PATs are exactly the two.
    assert_eq!((versions(&w, "bg-api").await, versions(&w, "bg-deploy").await), (2, 2));
    let mut live: Vec<AuthorizationId> =
        w.pats(DisplayFilter::Active).await.iter().map(|p| p.authorization_id).collect();
    live.sort();
    let mut expected = vec![kept_id, other_id];
    expected.sort();
    assert_eq!(live, expected, "the owner's live PATs are the two replacements");
    // The report lists the old PATs with their replacements, and the kept one.
    let rows = report["rows"].as_array().unwrap();
    let row = |id: AuthorizationId| rows.iter().find(|r| r["authorization_id"] == id.to_string()).cloned();
    for (secret, old) in [("bg-api", a_old), ("bg-deploy", d_old)] {
        let new = w.current(secret).await.unwrap().0;
        let r = row(old).expect("the old PAT is in the report");
        assert_eq!(r["outcome"], "revoked", "{r}");
        assert_eq!(r["replacement"]["authorization_id"], new.to_string(), "{secret}: {r}");
        // The replacement the killed run had stored is marked as found, not made, by the rerun — unless the
        // rerun had to finish its open operation (verified), which counts as making it.
        let resumed = secret == replaced[0] && crash == "finished";
        assert_eq!(r["replacement"]["resumed"].as_bool().unwrap_or(false), resumed, "{secret}: {r}");
    }
    assert_eq!(row(kept_id).expect("the kept replacement is listed")["outcome"], patrol::audit::breakglass::KEPT);
    assert_eq!(row(script.pat.authorization_id).unwrap()["outcome"], "revoked");

    // Done: a second rerun starts a new break glass (nothing resumed) — it would revoke the replacements,
    // so it is only surveyed here.
    let (code, out, _) = revoke(&env, None, &["--prestage", "--dry-run"]);
    assert!(code == 0 && !out.contains("resuming") && out.contains("2 PAT(s) would be revoked"), "{out}");

    // No PAT value reached any output.
    for v in w.minted().await {
        assert!(!transcript.contains(&v), "a minted secret appeared in patrol's output");
    }
    w.emu.shutdown().await.unwrap();
}
