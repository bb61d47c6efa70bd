//! Two and three real `patrol` processes on ONE local state directory (no `AzureWebJobsStorage`: file
//! journal, file secret store, file leases), rotating the same due tokens again and again, some of them
//! killed (SIGKILL at a random moment, or the crash hook at a random step boundary): issue 19 item 1.
//!
//! The tenant's maximum-lifespan policy clamps every new PAT to one day, so with `rotate_before_days = 7`
//! every token is due at every run: every process of every step wants to rotate every token. Checked
//! while the processes run (a poller) and after every step:
//! - the secret's current version names a PAT that is active, and its value authenticates;
//! - no double rotation: the vault versions of a secret form one chain — each version's
//!   `previous-authorization-id` is the PAT of the version before it, no PAT is the previous of two
//!   versions, no PAT is stored twice;
//! - no PAT patrol created is alive unless the chain still needs it (current, or the previous one whose
//!   revocation the next run does).
//!
//! And at the end, with the clamp lifted and the runs quiet: one active PAT per token (the current one),
//! every other PAT patrol ever created for it revoked, and no minted secret in any process's output.

use super::two_instances::{Instance, start_instance_logging, timer};
use super::world::{ORG, OWNER, Setup, World, seed, sign_in};
use patrol::devops::DisplayFilter;
use patrol::domain::{AuthorizationId, SecretName};
use patrol::store::tags;
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const TOKENS: usize = 3;
const BOUNDARIES: [&str; 8] = [
    "intent-saved",
    "create-returned",
    "created-saved",
    "store-returned",
    "verified",
    "finished",
    "previous-revoked",
    "previous-disabled",
];

fn policy() -> String {
    let mut p = format!("[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n");
    for i in 0..TOKENS {
        p.push_str(&format!(
            "[[token]]\nsecret = \"conc-{i}\"\ndisplay_name = \"Concurrent {i}\"\nvalidity_days = 30\n\
             rotate_before_days = 7\ngrace_days = 0\n"
        ));
    }
    p
}

fn secret(i: usize) -> SecretName {
    SecretName::parse(&format!("conc-{i}")).unwrap()
}

/// How a process of a step ends.
#[derive(Debug, Clone)]
enum Fate {
    Runs,
    /// `PATROL_TEST_CRASH_AFTER` (exit 86 at that step boundary).
    CrashAt(&'static str),
    /// SIGKILL after this long.
    KillAfter(Duration),
}

fn fate(rng: &mut impl Rng) -> Fate {
    match rng.random_range(0..4) {
        0 => Fate::CrashAt(BOUNDARIES[rng.random_range(0..BOUNDARIES.len())]),
        1 => Fate::KillAfter(Duration::from_millis(rng.random_range(20..2500))),
        _ => Fate::Runs,
    }
}

/// `patrol rotate` meeting its fate; returns (exit code or -9 when killed, stdout+stderr).
async fn cli(env: Vec<(String, String)>, fate: Fate) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_patrol"));
    cmd.arg("rotate").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env);
    if let Fate::CrashAt(b) = &fate {
        cmd.env("PATROL_TEST_CRASH_AFTER", b);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn patrol rotate");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = async move {
        use tokio::io::AsyncReadExt;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
        format!("{}{}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&b))
    };
    let reader = tokio::spawn(read);
    let code = match fate {
        Fate::KillAfter(after) => match tokio::time::timeout(after, child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => {
                child.kill().await.unwrap();
                -9
            }
        },
        _ => tokio::time::timeout(Duration::from_secs(120), child.wait())
            .await
            .expect("patrol rotate finished within 2 minutes")
            .unwrap()
            .code()
            .unwrap_or(-1),
    };
    (code, reader.await.unwrap())
}

/// A `RotateTimer` on a `patrol serve` instance; returns (HTTP status, body).
async fn timer_on(instance: &Instance, now: time::OffsetDateTime) -> (u16, String) {
    let utc = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/RotateTimer", instance.url()))
        .header("X-Azure-Functions-InvocationId", uuid::Uuid::new_v4().to_string())
        .json(&json!({ "Data": timer(), "Metadata": { "sys": { "MethodName": "RotateTimer", "UtcNow": utc } } }))
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The invariants of one token, now (see the module doc). Returns the PATs the chain has ever stored.
async fn check_token(w: &World, i: usize, when: &str) -> BTreeSet<AuthorizationId> {
    let s = secret(i);
    let versions = w.local.store.list_versions(&s).await.unwrap();
    // A step whose every process was killed, crashed or found the token leased may end before anyone stored a
    // first value; the invariants below hold for whatever is stored, and at the end a value must exist.
    if versions.is_empty() && when != "end" {
        return BTreeSet::new();
    }
    assert!(!versions.is_empty(), "{when}: conc-{i} has a value");
    let id_of = |t: &BTreeMap<String, String>, k: &str| t.get(k).map(|v| AuthorizationId::parse(v).unwrap());
    let mut by_id = BTreeMap::new();
    let mut previous_of = BTreeMap::new();
    for v in &versions {
        let id = id_of(&v.tags, tags::AUTHORIZATION_ID).expect("every version names its PAT");
        assert!(by_id.insert(id, v.version.clone()).is_none(), "{when}: conc-{i}: PAT {id} stored twice");
        if let Some(p) = id_of(&v.tags, tags::PREVIOUS_AUTHORIZATION_ID) {
            assert!(
                previous_of.insert(p, id).is_none(),
                "{when}: conc-{i}: double rotation: two versions replaced PAT {p}"
            );
        }
    }
    // One chain: from the current version back through `previous` to the first, covering every version.
    let cur = w.local.store.get(&s, None).await.unwrap().unwrap();
    let current = id_of(&cur.properties.tags, tags::AUTHORIZATION_ID).unwrap();
    let replaced: BTreeMap<AuthorizationId, AuthorizationId> = previous_of.iter().map(|(p, n)| (*n, *p)).collect();
    let (mut at, mut steps) = (current, 1);
    while let Some(p) = replaced.get(&at) {
        assert!(by_id.contains_key(p), "{when}: conc-{i}: version replaced {p}, which no version stored");
        at = *p;
        steps += 1;
        assert!(steps <= versions.len(), "{when}: conc-{i}: the chain loops");
    }
    assert_eq!(steps, versions.len(), "{when}: conc-{i}: every version is on one chain (no fork)");
    assert!(!previous_of.contains_key(&current), "{when}: conc-{i}: the current PAT was replaced by a newer version");
    // The current value is a live PAT.
    assert!(
        w.authenticates(cur.value.expose_secret()).await,
        "{when}: conc-{i}: the current value does not authenticate"
    );
    by_id.into_keys().collect()
}

/// Every PAT patrol created for token `i` (all states).
async fn created(w: &World, i: usize, all: &[patrol::devops::Pat]) -> Vec<(AuthorizationId, bool)> {
    let active: BTreeSet<_> = w.pats(DisplayFilter::Active).await.into_iter().map(|p| p.authorization_id).collect();
    all.iter()
        .filter(|p| p.display_name.starts_with(&format!("Concurrent {i} (patrol:")))
        .map(|p| (p.authorization_id, active.contains(&p.authorization_id)))
        .collect()
}

/// While processes run: every secret's current value authenticates. A failure counts only if the secret
/// still has that version afterwards (else a process replaced it between the read and the use).
fn poller(w: Arc<World>, stop: Arc<AtomicBool>, checks: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut violations = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for i in 0..TOKENS {
                let Ok(Some(cur)) = w.local.store.get(&secret(i), None).await else { continue };
                if !w.authenticates(cur.value.expose_secret()).await {
                    let again = w.local.store.get(&secret(i), None).await.ok().flatten();
                    if again.is_some_and(|a| a.properties.version == cur.properties.version) {
                        violations.push(format!(
                            "conc-{i}: current version {} names a PAT that does not authenticate",
                            cur.properties.version
                        ));
                    }
                }
                checks.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        violations
    })
}

async fn hammer(processes: usize, with_serve: bool, steps: usize) {
    let mut s = seed();
    s["tenantPolicy"] = json!({ "maxLifespanDays": 1 });
    let setup = Setup::start(s, &policy()).await;
    let w = Arc::new(World::open(setup, None, false).await);
    let env = w.env.clone();
    let serve_log = w.dir.path().join("serve.log");
    let mut serve = if with_serve { Some(start_instance_logging(&env, &serve_log).await) } else { None };
    let mut rng = rand::rng();
    let mut transcript = String::new();
    let (mut killed, mut crashed, mut re_signed_in) = (0, 0, 0);
    let checks = Arc::new(AtomicUsize::new(0));

    for step in 0..steps {
        let stop = Arc::new(AtomicBool::new(false));
        let watch = poller(w.clone(), stop.clone(), checks.clone());
        let clis = if with_serve { processes - 1 } else { processes };
        let mut fates: Vec<Fate> = (0..clis).map(|_| fate(&mut rng)).collect();
        if step == 0
            && let Some(first) = fates.first_mut()
        {
            // At least one process dies mid-run whatever the machine's speed: a random fate may draw no kill,
            // and on a fast machine a late kill finds the process already done.
            *first = Fate::KillAfter(Duration::from_millis(rng.random_range(20..100)));
        }
        let runs = futures::future::join_all(fates.iter().map(|f| cli(env.clone(), f.clone())));
        let serve_kill = with_serve && rng.random_bool(0.25);
        let kill_after = Duration::from_millis(rng.random_range(20..2500));
        let serve_run = async {
            let instance = serve.as_ref()?;
            let now = w.emu.clock().now();
            if serve_kill {
                // The invocation is cut short by the instance's death.
                let r = tokio::time::timeout(kill_after, timer_on(instance, now)).await;
                Some(r.unwrap_or((0, "killed".into())))
            } else {
                Some(timer_on(instance, now).await)
            }
        };
        let (results, served) = tokio::join!(runs, serve_run);
        if serve_kill {
            drop(serve.take()); // SIGKILL (Instance::drop kills and reaps it)
            killed += 1;
            serve = Some(start_instance_logging(&env, &w.dir.path().join(format!("serve-{step}.log"))).await);
        }
        stop.store(true, Ordering::SeqCst);
        let violations = watch.await.unwrap();
        assert!(violations.is_empty(), "step {step}: {violations:#?}");
        let mut sign_in_needed = false;
        for ((code, out), f) in results.iter().zip(&fates) {
            transcript.push_str(out);
            match code {
                -9 => killed += 1,
                86 => crashed += 1,
                0 | 1 | 3 => {}
                other => panic!("step {step}: {f:?}: exit {other}: {out}"),
            }
            assert!(!out.contains("panicked"), "step {step}: {out}");
            // The symptoms of racing writers the issue saw: none, since the leases exclude.
            assert!(!out.contains("was changed by someone else"), "step {step}: {out}");
            assert!(!out.contains("refused to revoke"), "step {step}: {out}");
            sign_in_needed |= out.contains("must sign in");
        }
        if let Some((status, body)) = &served {
            transcript.push_str(body);
            sign_in_needed |= body.contains("must sign in");
            assert!(!body.contains("was changed by someone else") && !body.contains("refused to revoke"), "{body}");
            assert!(matches!(status, 0 | 200 | 500), "step {step}: serve answered {status}: {body}");
        }
        // Checked after every step.
        for i in 0..TOKENS {
            check_token(&w, i, &format!("step {step}")).await;
        }
        if sign_in_needed {
            // A process killed between redeeming the owner's refresh token and storing the new one broke
            // the (single-use, in the emulator) chain: the operator signs in again, as they would.
            sign_in(&w.emu, &w.local).await;
            re_signed_in += 1;
        }
    }

    // Quiet down: no clamp, one process at a time, until nothing is left to do.
    let r = w.http.put(w.control("policies/tenant")).json(&json!({ "maxLifespanDays": 365 })).send().await.unwrap();
    assert!(r.status().is_success());
    drop(serve);
    // Rotate off the one-day PATs, revoke what they replaced, then find nothing to do (bounded).
    let mut quiet = false;
    for _ in 0..6 {
        let (code, out) = cli(env.clone(), Fate::Runs).await;
        transcript.push_str(&out);
        if out.contains("must sign in") {
            sign_in(&w.emu, &w.local).await;
            continue;
        }
        assert_eq!(code, 0, "quiet run: {out}");
        if out.contains("planned: nothing changed") {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the runs never quietened down");
    let all = w.pats(DisplayFilter::All).await;
    let mut total = 0;
    for i in 0..TOKENS {
        let stored = check_token(&w, i, "end").await;
        let (current, _) = w.current(&format!("conc-{i}")).await.unwrap();
        let mine = created(&w, i, &all).await;
        let alive: Vec<_> = mine.iter().filter(|(_, a)| *a).map(|(id, _)| *id).collect();
        assert_eq!(alive, vec![current], "conc-{i}: exactly the current PAT is alive, every other one revoked");
        // Every PAT the chain stored was created by patrol and, but the current one, revoked.
        for id in &stored {
            assert!(mine.iter().any(|(m, a)| m == id && (*a == (*id == current))), "conc-{i}: {id}");
        }
        total += stored.len();
    }
    // The scenario really raced and really killed.
    assert!(total >= TOKENS * steps / 2, "rotations: {total}");
    assert!(killed + crashed > 0, "no process was killed");
    assert!(checks.load(Ordering::SeqCst) > steps, "the poller checked while processes ran");
    eprintln!(
        "{processes} processes, {steps} steps: {total} stored versions, {killed} killed, {crashed} crashed at a \
         boundary, {re_signed_in} sign-ins again, {} poller checks",
        checks.load(Ordering::SeqCst)
    );
    // No minted secret in any output or log.
    for f in std::fs::read_dir(w.dir.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().ends_with(".log") {
            transcript.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
    }
    for v in w.minted().await {
        assert!(!transcript.contains(&v), "a minted secret appeared in patrol's output");
    }
    if let Ok(w) = Arc::try_unwrap(w) {
        w.emu.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cli_processes_on_one_state_directory_never_double_rotate() {
    hammer(2, false, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cli_processes_and_serve_on_one_state_directory_never_double_rotate() {
    hammer(3, true, 10).await;
}
