//! The operator's CLI, run as the real `patrol` binary: help, completions, exit codes, formats, the
//! report in headless Chromium, and `patrol demo` end to end.

use std::path::Path;
use std::process::{Command, Output};

fn patrol(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
    c.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // A home for the default state directory (never the working directory); created only by commands that write.
    c.env("HOME", dir.join("home"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_command_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = patrol(dir.path(), &["--help"], &[]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for cmd in ["serve", "plan", "rotate", "inventory", "status", "login", "report", "demo", "completions"] {
        assert!(s.contains(&format!("  {cmd}")), "help lacks {cmd}: {s}");
    }
    assert!(s.contains("Examples:") && s.contains("patrol demo"));
    let out = patrol(dir.path(), &["rotate", "--help"], &[]);
    assert!(text(&out.stdout).contains("patrol rotate ci-build-pat --force"));
}

#[test]
fn completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = patrol(dir.path(), &["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let s = text(&out.stdout);
        assert!(s.contains("inventory") && s.contains("patrol"), "{shell}: {s}");
    }
    let out = patrol(dir.path(), &["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_and_configuration_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown flag.
    assert_eq!(patrol(dir.path(), &["plan", "--bogus"], &[]).status.code(), Some(2));
    // No policy file.
    let out = patrol(dir.path(), &["plan"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("patrol.toml"), "{}", text(&out.stderr));
    // An invalid policy names file, line and field.
    std::fs::write(
        dir.path().join("patrol.toml"),
        "[defaults]\norganization = \"fabrikam\"\n\n[[token]]\nsecret = \"bad name!\"\n",
    )
    .unwrap();
    let out = patrol(dir.path(), &["inventory"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("patrol.toml:"), "{}", text(&out.stderr));
    // An invalid setting is named.
    let out = patrol(dir.path(), &["status"], &[("PATROL_MAX_CONCURRENCY", "lots")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("PATROL_MAX_CONCURRENCY"));
}

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("patrol.toml"),
        "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\n[[token]]\nsecret = \"ci-build-pat\"\ndisplay_name = \"CI build\"\n",
    )
    .unwrap();
}

#[test]
fn missing_client_id_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let out = patrol(dir.path(), &["inventory"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("PATROL_CLIENT_ID"));
    // A secret the policy does not manage is refused before any network.
    let out = patrol(
        dir.path(),
        &["rotate", "nope-pat", "--force"],
        &[("PATROL_CLIENT_ID", "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not managed"));
}

#[test]
fn status_without_sign_in_exits_3_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let out = patrol(dir.path(), &["status", "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["owners"][0]["owner"], "svc@contoso.com");
    assert_eq!(v["owners"][0]["health"], "sign-in-needed");
    assert_eq!(v["tokens"][0]["secret"], "ci-build-pat");
    assert!(v["tokens"][0]["last_rotation"].is_null());
    let out = patrol(dir.path(), &["status", "--format", "markdown"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains("| svc@contoso.com | sign-in-needed |"));
    let out = patrol(dir.path(), &["status"], &[]);
    assert!(text(&out.stdout).contains("OWNER"));
    // The command to run, with the owner's name (never a `<owner>` placeholder), and no "again" for an
    // owner who never signed in.
    let err = text(&out.stderr);
    assert!(err.contains("svc@contoso.com never signed in: run `patrol login --owner svc@contoso.com`"), "{err}");
    assert!(!err.contains("<owner>") && !err.contains("again"), "{err}");
    // The owners in status JSON appear once each (no key twice).
    let out = patrol(dir.path(), &["status", "--format", "json"], &[]);
    super::schemas::assert_no_duplicate_keys(&text(&out.stdout));
}

/// Headless Chromium (Debian's `chromium`), if installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())
}

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_job_without_leaking_and_its_report_renders() {
    use secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let outcome = patrol::cli::demo::run_demo(dir.path(), &patrol::config::Source::default()).await.unwrap();
    // A bound against a hung demo, not a performance measure: with the whole suite running on two shared
    // cores a debug-build demo takes several seconds (on an idle machine, release: about a second).
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());

    // What it shows.
    let t = &outcome.text;
    for want in [
        "== Inventory before",
        "== Plan",
        "RotateTimer",
        "RotateHttp",
        "EventGridSecretChanged",
        "== Rotations",
        "== Inventory after",
        "== Alerts",
        "Report written to",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let j = &outcome.json;
    assert_eq!(j["ok"], true);
    assert_eq!(j["secret_store"]["kind"], "azure-key-vault", "{}", j["secret_store"]);
    assert!(j["secret_store"]["url"].as_str().unwrap().starts_with("https://localhost:"));
    // Before onboarding: the organization's 8 PATs, none managed yet; the policy's 4 secrets are missing.
    let before = j["inventory_before"]["pats"].as_array().unwrap();
    let (pats, missing): (Vec<_>, Vec<_>) = before.iter().partition(|p| p["state"] != "missing");
    assert_eq!(pats.len(), 8, "{before:?}");
    assert_eq!(missing.len(), 4, "{before:?}");
    assert!(pats.iter().all(|p| p["managed"] == false && p["role"] == "unmanaged"), "{pats:?}");
    // All-organization PATs stopped working on 2026-12-01: never shown as "active".
    for (name, state) in [("Old deploy script", "expired"), ("Everything everywhere", "stopped-working")] {
        assert!(pats.iter().any(|p| p["display_name"] == name && p["state"] == state), "{name}");
    }
    assert!(pats.iter().any(|p| p["global"] == true));
    assert!(pats.iter().any(|p| p["full_access"] == true));
    let days = |name: &str| pats.iter().find(|p| p["display_name"] == name).unwrap()["days_left"].as_i64().unwrap();
    let managed_days: Vec<i64> =
        ["CI build agent", "Package feed publisher", "Release bot", "Wiki sync"].iter().map(|n| days(n)).collect();
    assert_eq!(managed_days, vec![3, 10, 20, 40]);
    // Onboarding wrote the four PATs into the emulated vault; Key Vault's events reached
    // EventGridSecretChanged through Event Grid's Functions-host delivery and were answered 200.
    let invocations = j["invocations"].as_array().unwrap();
    let grid: Vec<_> = invocations.iter().filter(|i| i["function"] == "EventGridSecretChanged").collect();
    assert!(grid.iter().all(|i| i["http_status"] == 200), "{grid:?}");
    for secret in ["ci-build-pat", "package-feed-pat", "release-bot-pat", "wiki-sync-pat"] {
        assert!(
            grid.iter().any(|i| i["event"] == "SecretNewVersionCreated" && i["secret"] == secret),
            "no SecretNewVersionCreated for {secret}: {grid:?}"
        );
    }
    for secret in ["ci-build-pat", "package-feed-pat", "release-bot-pat"] {
        assert!(grid.iter().any(|i| i["event"] == "SecretNearExpiry" && i["secret"] == secret), "{secret}: {grid:?}");
    }
    assert!(!grid.iter().any(|i| i["event"] == "SecretNearExpiry" && i["secret"] == "wiki-sync-pat"), "40 days: no");
    // Event Grid delivers concurrently: two events for one secret may arrive together, and the invocation
    // that finds the secret busy (the other holds its lease) leaves it to that one. One of them rotated it.
    let ci: Vec<_> = grid.iter().filter(|i| i["secret"] == "ci-build-pat").collect();
    assert!(
        ci.iter().any(|i| i["outcome"] == "completed" && i["summary"].as_str().unwrap().contains("1 rotated")),
        "{ci:?}"
    );
    assert!(
        ci.iter().all(|i| i["outcome"] != "incomplete" || i["summary"].as_str().unwrap().contains("1 busy")),
        "an incomplete invocation only ever found the secret busy: {ci:?}"
    );
    // Rotations happened through the handler: due (Event Grid at onboarding), forced (HTTP), due (timer).
    let rotations = j["rotations"].as_array().unwrap();
    let rotation = |s: &str| {
        rotations
            .iter()
            .find(|r| r["secret"] == s)
            .map(|r| (r["reason"].as_str().unwrap().to_owned(), r["by"].as_str().unwrap().to_owned()))
    };
    let (reason, by) = rotation("ci-build-pat").unwrap();
    assert_eq!((reason.as_str(), by.starts_with("EventGridSecretChanged")), ("due", true), "{by}");
    let (reason, by) = rotation("release-bot-pat").unwrap();
    assert_eq!((reason.as_str(), by.starts_with("RotateHttp")), ("forced", true), "{by}");
    let (reason, by) = rotation("package-feed-pat").unwrap();
    assert_eq!((reason.as_str(), by.starts_with("RotateTimer")), ("due", true), "{by}");
    assert_eq!(rotation("wiki-sync-pat"), None, "40 days left: not rotated");
    // The previous PATs of the two rotations whose grace ended were revoked by the timer run four days later.
    let after = j["inventory_after"]["pats"].as_array().unwrap();
    assert!(!after.iter().any(|p| p["display_name"] == "CI build agent"), "the original CI PAT was revoked");
    assert!(!after.iter().any(|p| p["display_name"] == "Release bot"), "the original release PAT was revoked");
    assert!(after.iter().any(|p| p["display_name"] == "Package feed publisher" && p["role"] == "draining"));
    // `patrol status`, shown by the demo while the vault still existed.
    assert!(t.contains("== patrol status"), "{t}");
    let status = &j["status"];
    assert_eq!(status["owners"][0]["health"], "ok", "{status}");
    assert!(status["owners"][0]["signed_in_at"].is_string());
    // Alerts went to the mailbox file.
    assert!(j["alerts"]["count"].as_u64().unwrap() >= 1, "{}", j["alerts"]);
    // Onboarding adopts the existing PATs (`patrol adopt`): no "changed outside patrol" alarm, no second PAT.
    let subjects = j["alerts"]["subjects"].to_string();
    assert!(!subjects.contains("outside patrol"), "onboarding raised a false alarm: {subjects}");
    assert!(t.contains("patrol adopt ci-build-pat --pat"), "{t}");

    // ci-build-pat's consumers: every one got the new PAT, each shown with its state.
    for want in [
        "ci-build-pat's consumers: the new PAT",
        "HMAC signature and timestamp verified",
        "(the new one)",
        "ci-build-pat's previous PAT revoked: every consumer had moved",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let ci = rotations.iter().find(|r| r["secret"] == "ci-build-pat").unwrap();
    let consumers = ci["consumers"].as_array().unwrap();
    let kinds: Vec<&str> = consumers.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["devops-service-connection", "devops-variable-group", "github-actions-secret", "webhook", "reference"],
        "{ci}"
    );
    assert!(consumers.iter().all(|c| c["moved"] == true), "{ci}");
    let written: Vec<_> = consumers.iter().filter(|c| c["written"] == true).collect();
    assert_eq!(written.len(), 4);
    assert!(written.iter().all(|c| c["state"] == "delivered" && c["delivered_at"].is_string()), "{ci}");
    let sc = &consumers[0];
    assert!(sc["last_used_at"].is_string() && sc["evidence"].as_str().unwrap().contains("ci-build"), "{sc}");
    let reference = &consumers[4];
    assert_eq!(
        (&reference["state"], &reference["lag_hours"]),
        (&serde_json::json!("reads-vault"), &serde_json::json!(72))
    );
    assert!(reference["lag_until"].is_string());
    // The webhook receiver verified every notification; each named the CI token and no value.
    let c = &j["consumers"];
    let hooks = c["webhook"].as_array().unwrap();
    assert!(!hooks.is_empty() && hooks.iter().all(|h| h["verified"] == true && h["secret"] == "ci-build-pat"), "{c}");
    // The pipeline run and the workflow authenticated with the new PAT.
    let uses = c["uses"].as_array().unwrap();
    assert_eq!(uses.len(), 2, "{c}");
    assert!(uses.iter().all(|u| u["result"] == "succeeded" && u["new_pat"] == true), "{c}");
    assert_eq!(uses[0]["authorization_id"], ci["authorization_id"]);
    // Day 2: grace over, pipeline evidence there, but the reference's 72 h lag held the revocation back;
    // day 4: revoked.
    let held = c["held_back"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{c}");
    assert!(held[0].as_str().unwrap().contains("may lag up to 72 h"), "{c}");
    assert!(c["revoked_after"].as_str().unwrap().contains("72 h lag ended"), "{c}");
    // inventory and plan show the same consumers (one view model).
    let inv = &j["inventory_after"]["consumers"];
    assert_eq!(inv[0]["secret"], "ci-build-pat", "{inv}");
    assert_eq!(inv[0]["consumers"], ci["consumers"], "inventory and the rotation summary agree");
    let planned = j["plan"]["entries"].as_array().unwrap().iter().find(|e| e["secret"] == "ci-build-pat").unwrap();
    assert_eq!(planned["consumers"].as_array().unwrap().len(), 5, "{planned}");
    // status shows the same consumers.
    let ci_status = status["tokens"].as_array().unwrap().iter().find(|t| t["secret"] == "ci-build-pat").unwrap();
    assert_eq!(ci_status["consumers"].as_array().unwrap().len(), 5);
    assert!(ci_status["pending_drains"].as_array().unwrap().is_empty(), "{ci_status}");

    // No secret on disk: the file store was never used, and no file under the demo's directory (policy,
    // journal, mailbox, report) holds any value the emulator minted or the vault held.
    assert!(!dir.path().join("store.key").exists() && !dir.path().join("state/secrets").exists());
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { files.push((p.display().to_string(), std::fs::read(&p).unwrap())) }
        }
    }
    assert!(files.len() >= 4, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    let json_text = j.to_string();
    assert!(outcome.minted.len() >= 12, "PATs, tokens, the client secret and the vault's values were collected");
    // Every consumer payload is scanned too: the webhook notifications (headers and body) as received.
    assert!(!outcome.payloads.is_empty());
    let payloads = outcome.payloads.concat();
    assert!(payloads.contains("ci-build-pat") && payloads.to_lowercase().contains("x-patrol-signature"));
    for s in &outcome.minted {
        let v = s.expose_secret();
        for (what, hay) in [("text", t.as_str()), ("json", &json_text), ("webhook payloads", &payloads)] {
            assert!(!hay.contains(v), "a minted secret leaked into the {what}");
        }
        for (path, bytes) in &files {
            assert!(!bytes.windows(v.len()).any(|w| w == v.as_bytes()), "a secret value is in {path}");
        }
    }

    // The report renders in headless Chromium: the SVG timeline and the table are in the DOM.
    let Some(chrome) = chromium() else {
        panic!("chromium is not installed (scripts/setup.sh installs it)");
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", outcome.report.display());
    let dom = Command::new(chrome).args(chromium_args(profile.path())).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(dom.status.success(), "{}", text(&dom.stderr));
    let dom = text(&dom.stdout);
    assert!(dom.contains("<svg") && dom.contains("</svg>"), "no SVG timeline in the rendered DOM");
    assert!(dom.contains("<table") && dom.contains("Everything everywhere"), "no inventory table in the DOM");
    assert!(dom.contains("All-organization PAT"), "the global PAT problem is listed");
    assert!(
        dom.contains("<h2>Consumers</h2>") && dom.contains("service-connection:fabrikam/web/ci-package-feed"),
        "the report shows the consumers"
    );
    // Since 2026-12-01 it "stopped working" (not "stops"), and its row does not say active; the period's
    // revocations (the two previous PATs whose grace ended) are listed with the rotations.
    assert!(dom.contains("stopped working on 2026-12-01") && !dom.contains("stops working"), "{dom}");
    let rows: Vec<&str> = dom.split("<tr").filter(|r| r.contains("Everything everywhere")).collect();
    assert!(rows.iter().any(|r| r.contains("stopped-working")), "{rows:?}");
    assert!(!rows.iter().any(|r| r.contains(">active<")), "{rows:?}");
    assert!(dom.contains("Recent rotations and revocations"), "{dom}");
    assert_eq!(dom.matches("revoked (previous PAT, grace over)").count(), 2, "{dom}");
    let shot = dir.path().join("report.png");
    let out = Command::new(chrome)
        .args(chromium_args(profile.path()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1100,1400")
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    if let Ok(keep) = std::env::var("PATROL_KEEP_REPORT_PNG") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn demo_binary_exits_0_quickly_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = patrol(dir.path(), &["demo", "--json", "--dir", "d"], &[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "a hung demo (see the other demo test)");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(dir.path().join("d/patrol-report.html").exists());
    // The published contract: docs/schemas/demo.schema.json (with the inventory, plan and status schemas it
    // embeds): one type per field (`http_status` a number or null, `outcome` a word), RFC 3339 times,
    // snake_case listed PATs, no key twice.
    super::schemas::assert_no_duplicate_keys(&text(&out.stdout));
    super::schemas::assert_valid("demo", &v);
    assert!(v["plan"]["unmanaged"].as_array().unwrap().iter().all(|u| u["pat"]["authorization_id"].is_string()));
    assert!(v["rotations"].as_array().unwrap().iter().all(|r| r["valid_to"].as_str().unwrap().contains('T')));

    // `patrol history` over the demo's state: what each trigger did, and why.
    let env = [
        ("PATROL_STATE_DIR", dir.path().join("d/state").display().to_string()),
        ("PATROL_POLICY_FILE", dir.path().join("d/patrol.toml").display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = patrol(dir.path(), &["history", "--format", "json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    super::schemas::assert_valid("history", &h);
    let events = h["events"].as_array().unwrap();
    let by = |kind: &str, secret: &str| {
        events.iter().find(|e| e["kind"] == kind && e["secret"] == secret).map(|e| e["by"].as_str().unwrap().to_owned())
    };
    assert_eq!(by("rotated", "ci-build-pat").as_deref(), Some("EventGridSecretChanged"), "{h}");
    assert_eq!(by("rotated", "release-bot-pat").as_deref(), Some("RotateHttp"), "{h}");
    assert_eq!(by("rotated", "package-feed-pat").as_deref(), Some("RotateTimer"), "{h}");
    assert_eq!(by("revoked", "ci-build-pat").as_deref(), Some("RotateTimer"), "{h}");
    let out = patrol(dir.path(), &["history", "release-bot-pat", "--format", "markdown"], &env);
    let md = text(&out.stdout);
    assert!(md.starts_with("| AT | EVENT |") && md.contains("| forced |") && !md.contains("ci-build-pat"), "{md}");
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1, "history wrote nothing next to d/");

    // The demo's own `patrol status` (the vault and the refresh token it reads are gone after the demo):
    // the owner signed in, three tokens rotated, one previous PAT still draining.
    let s = &v["status"];
    assert_eq!(s["owners"][0]["health"], "ok", "{s}");
    assert!(s["owners"][0]["signed_in_at"].is_string());
    let rotated = s["tokens"].as_array().unwrap().iter().filter(|t| t["last_rotation"].is_object()).count();
    assert_eq!(rotated, 3, "{s}");
    let drains: usize =
        s["tokens"].as_array().unwrap().iter().map(|t| t["pending_drains"].as_array().unwrap().len()).sum();
    assert_eq!(drains, 1, "package-feed-pat's previous PAT is still draining: {s}");
}

#[test]
fn demo_refuses_a_non_empty_dir_and_force_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("patrol.toml"), "# my own policy\n").unwrap();
    std::fs::write(d.join("notes.txt"), "mine\n").unwrap();

    // Not empty and no --force: exit 2, naming the directory and --force; nothing written or removed.
    let out = patrol(dir.path(), &["demo", "--dir", "d"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("is not empty") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("patrol.toml")).unwrap(), "# my own policy\n");
    assert!(!d.join("state").exists() && !d.join("patrol-report.html").exists());

    // --force: the demo's own files go, the operator's other files stay, and a second forced run starts
    // clean (no journal from the first run mixed in: the same status as a first run).
    for _ in 0..2 {
        let out = patrol(dir.path(), &["demo", "--json", "--dir", "d", "--force"], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rotated =
            v["status"]["tokens"].as_array().unwrap().iter().filter(|t| t["last_rotation"].is_object()).count();
        assert_eq!(rotated, 3, "{}", v["status"]);
        assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "mine\n");
        assert_ne!(std::fs::read_to_string(d.join("patrol.toml")).unwrap(), "# my own policy\n");
    }

    // --force without --dir is a usage error.
    let out = patrol(dir.path(), &["demo", "--force"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// `PATROL_TEST_CRASH_AFTER` is compiled only with the `test-hooks` feature: the binary `cargo test` built
/// has it, and the build without dev-dependencies (`cargo build --release`, the Function App package) does
/// not enable the feature.
#[test]
fn the_crash_hook_is_only_in_test_builds() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_patrol")).unwrap();
    let needle = b"PATROL_TEST_CRASH_AFTER";
    assert!(bin.windows(needle.len()).any(|w| w == needle), "the test build has the hook");
    let tree = |edges: &str| {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "-p", "patrol", "-e", edges, "-i", "patrol", "--prefix", "none"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(tree("all,features").contains("patrol feature \"test-hooks\""), "tests turn the feature on");
    let release = tree("normal,build,features");
    assert!(release.contains("patrol v") && !release.contains("test-hooks"), "{release}");
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let default = manifest.lines().find(|l| l.trim_start().starts_with("default =")).unwrap_or("");
    assert!(!default.contains("test-hooks"), "not a default feature: {default}");
}

/// Read-only commands create nothing: run in an empty directory with a valid policy elsewhere and no
/// Entra settings (so they fail on configuration after reading the stores), `plan`, `status`, `inventory`,
/// and `report` leave no `.patrol/` directory, no `.patrol-store.key` and nothing else behind.
#[test]
fn read_only_commands_create_nothing_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let policy = elsewhere.path().join("patrol.toml");
    std::fs::write(
        &policy,
        "[[token]]\nsecret = \"ro-check\"\ndisplay_name = \"Read only\"\norganization = \"fabrikam\"\n\
         owner = \"alice@fabrikam.test\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\n\
         grace_days = 2\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    for cmd in [&["plan"][..], &["status"], &["inventory"], &["report", "--out", "-"], &["consumers", "--check"]] {
        let out = patrol(cwd.path(), cmd, &[("PATROL_POLICY_FILE", policy)]);
        if cmd[0] == "plan" {
            // The defect as observed: the stores were opened (and created), then the configuration failed.
            assert!(text(&out.stderr).contains("PATROL_CLIENT_ID"), "{}", text(&out.stderr));
        }
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "`patrol {}` created {left:?} (stderr: {})", cmd.join(" "), text(&out.stderr));
        let listed: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(listed.len(), 1, "`patrol {}` created {listed:?} next to the policy", cmd.join(" "));
    }
}

/// `patrol consumers` and `patrol consumers --check`, the real binary against patrol-emulator: every consumer
/// kind listed and checked (reachable, writable, the right type) without a single write — no consumer
/// revision moves, no webhook is sent, no file changes; then the emulator's control API takes patrol's
/// rights on the variable group away, deletes the service connection and makes GitHub refuse (403): exit 1
/// naming each one with its fix; without patrol's consumer identity: exit 2. No secret in any output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_check_reaches_every_consumer_without_writing_and_names_what_fails() {
    use crate::rotation::consumers::{APP, APP_SECRET, EP, GH_TOKEN, HOOK_KEY};
    use crate::rotation::world::{ORG, OWNER, Setup, World};
    use patrol::domain::SecretName;
    use secrecy::SecretString;
    use serde_json::{Value, json};
    let placeholder = patrol_emulator::patsecret::generate(2026, 1);
    let seed = crate::rotation::consumers::seed(&placeholder);
    let mut setup = Setup::start(seed, "").await;
    let e = setup.emu.endpoints().clone();
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.packaging\"\n\n[consumers]\n\
         github_credential = \"patrol-github\"\ngithub_api = \"{}\"\n\n[[token]]\nsecret = \"feed-pat\"\n\
         display_name = \"Feed\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 1\n\n[[token.consumer]]\nkind = \"devops-service-connection\"\nproject = \"web\"\n\
         connection = \"npm-feed\"\ntype = \"externalnpmregistry\"\nscheme = \"Token\"\n\n[[token.consumer]]\n\
         kind = \"devops-variable-group\"\nproject = \"web\"\ngroup = \"release-secrets\"\nvariable = \"AZDO_PAT\"\n\n\
         [[token.consumer]]\nkind = \"github-actions-secret\"\nrepository = \"octo/app\"\nenvironment = \"prod\"\n\
         name = \"AZDO_PAT\"\n\n[[token.consumer]]\nkind = \"keyvault\"\nsecret = \"team-copy\"\n\n\
         [[token.consumer]]\nkind = \"webhook\"\nurl_secret = \"hook-url\"\nsigning_secret = \"hook-key\"\n\n\
         [[token.consumer]]\nkind = \"reference\"\ndescription = \"App Service web-prod\"\nlag_hours = 24\n",
        e.extra["github"]
    );
    std::fs::write(setup.dir.path().join("patrol.toml"), policy).unwrap();
    setup.set("PATROL_CONSUMER_CREDENTIAL", "client-secret");
    setup.set("PATROL_CONSUMER_TENANT_ID", e.tenant.clone());
    setup.set("PATROL_CONSUMER_CLIENT_ID", APP);
    setup.set("PATROL_CONSUMER_CLIENT_SECRET", APP_SECRET);
    let w = World::open(setup, None, false).await;
    let hook_url = format!("{}/_control/consumers/webhooks/team-a", e.control);
    for (name, value) in
        [("patrol-github", GH_TOKEN.to_owned()), ("hook-url", hook_url.clone()), ("hook-key", HOOK_KEY.into())]
    {
        let name = SecretName::parse(name).unwrap();
        w.local.store.set(&name, &SecretString::from(value), Default::default()).await.unwrap();
    }
    let env: Vec<(&str, &str)> = w.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ctl = |path: String| {
        let http = w.http.clone();
        async move { http.get(path).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let revisions = || async {
        (
            ctl(w.control(&format!("consumers/service-endpoints/{EP}"))).await["revision"].clone(),
            ctl(w.control("consumers/variable-groups/7")).await["revision"].clone(),
            ctl(w.control("consumers/github/secrets?repository=octo/app&environment=prod")).await.to_string(),
            ctl(w.control("consumers/webhooks/team-a")).await["received"].as_array().map(Vec::len),
        )
    };
    let files = |dir: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let m = std::fs::metadata(&p).unwrap();
                    out.push((p.display().to_string(), m.len(), m.modified().unwrap()));
                }
            }
        }
        out.sort();
        out
    };
    let before = (revisions().await, files(w.dir.path()));
    let mut transcript = String::new();

    // The listing: every declared consumer, none delivered yet.
    let out = patrol(w.dir.path(), &["consumers", "--format", "json"], &env);
    transcript.push_str(&format!("{}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = v["tokens"][0]["consumers"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{v}");
    assert!(listed.iter().all(|c| c["state"] == "unknown" && c["moved"] == false), "{v}");
    assert!(v.get("checks").is_none(), "no check without --check");

    // The check: all good, nothing written.
    let out = patrol(w.dir.path(), &["consumers", "--check", "--format", "json"], &env);
    transcript.push_str(&format!("{}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap().clone();
    assert_eq!(checks.len(), 6, "{v}");
    let check = |checks: &[Value], kind: &str| checks.iter().find(|c| c["kind"] == kind).unwrap().clone();
    for kind in ["devops-service-connection", "devops-variable-group"] {
        let c = check(&checks, kind);
        assert_eq!(
            (&c["ok"], &c["reachable"], &c["writable"], &c["right_type"]),
            (&json!(true), &json!(true), &json!(true), &json!(true)),
            "{c}"
        );
    }
    let gh = check(&checks, "github-actions-secret");
    assert_eq!(
        (&gh["reachable"], &gh["right_type"], &gh["writable"]),
        (&json!(true), &json!(true), &Value::Null),
        "{gh}"
    );
    let hook = check(&checks, "webhook");
    assert_eq!((&hook["ok"], &hook["reachable"]), (&json!(true), &json!(true)), "{hook}");
    assert_eq!(check(&checks, "keyvault")["ok"], true);
    assert_eq!(check(&checks, "reference")["ok"], true);
    assert_eq!((revisions().await, files(w.dir.path())), before, "the check wrote nothing anywhere");

    // Table and markdown formats show the same.
    let out = patrol(w.dir.path(), &["consumers", "feed-pat", "--check"], &env);
    let t = text(&out.stdout);
    transcript.push_str(&t);
    assert!(t.contains("REACHABLE") && t.contains("variable-group:fabrikam/web/release-secrets/AZDO_PAT"), "{t}");
    let out = patrol(w.dir.path(), &["consumers", "--check", "--format", "markdown"], &env);
    transcript.push_str(&text(&out.stdout));
    assert!(text(&out.stdout).contains("| SECRET | CONSUMER | CHECK |"), "{}", text(&out.stdout));

    // The control API breaks three consumers: no Administrator role on the group, the connection deleted,
    // GitHub refusing (403).
    let put = w
        .http
        .put(w.control("consumers/variable-groups/7/administrators"))
        .json(&json!({ "remove": [APP] }))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    assert!(
        w.http
            .delete(w.control(&format!("consumers/service-endpoints/{EP}")))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let fault = w
        .post(
            "consumers/faults",
            json!({ "api": "githubSecrets", "target": "octo/app/prod", "status": 403, "method": "GET" }),
        )
        .await;
    assert!(fault.status().is_success(), "{}", fault.text().await.unwrap());
    let before = files(w.dir.path());
    let out = patrol(w.dir.path(), &["consumers", "--check", "--format", "json"], &env);
    transcript.push_str(&format!("{}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap().clone();
    let sc = check(&checks, "devops-service-connection");
    assert_eq!((&sc["outcome"], &sc["reachable"]), (&json!("not-found"), &json!(false)), "{sc}");
    let vg = check(&checks, "devops-variable-group");
    assert_eq!(
        (&vg["outcome"], &vg["reachable"], &vg["writable"]),
        (&json!("forbidden"), &json!(true), &json!(false)),
        "{vg}"
    );
    assert!(vg["fix"].as_str().unwrap().contains("Administrator of the group"), "{vg}");
    let gh = check(&checks, "github-actions-secret");
    assert_eq!(gh["outcome"], "forbidden", "{gh}");
    assert!(gh["problem"].as_str().unwrap().contains("403"), "{gh}");
    for kind in ["keyvault", "webhook", "reference"] {
        assert_eq!(check(&checks, kind)["ok"], true, "{kind}");
    }
    let err = text(&out.stderr);
    assert!(err.contains("failed the check") && err.contains("service-connection:fabrikam/web/npm-feed"), "{err}");
    assert_eq!(files(w.dir.path()), before, "a failing check writes nothing either");

    // Without patrol's consumer identity, Azure DevOps consumers cannot be reached: configuration, exit 2.
    let no_identity: Vec<(&str, &str)> =
        env.iter().copied().filter(|(k, _)| !k.starts_with("PATROL_CONSUMER_")).collect();
    let out = patrol(w.dir.path(), &["consumers", "--check"], &no_identity);
    transcript.push_str(&format!("{}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(2), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("not set up to reach"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PATROL_CONSUMER_CREDENTIAL"), "{}", text(&out.stdout));

    // No secret in any output: the credentials, the webhook URL, the PATs.
    let mut secrets = w.minted().await;
    secrets.extend([GH_TOKEN.into(), HOOK_KEY.into(), APP_SECRET.into(), hook_url.clone(), placeholder.clone()]);
    for s in &secrets {
        assert!(!transcript.contains(s.as_str()), "a secret reached the output");
    }
    assert!(!transcript.contains("/_control/consumers/webhooks"), "the webhook URL is never shown");
}

/// Policy errors through the real binary: every problem at once, each `file:line: field: what is allowed`;
/// a type error names its field; an empty file is refused; a missing file is named without a fake
/// position; secret names differing only in case are one Key Vault secret.
#[test]
fn policy_errors_are_all_reported_at_once_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\n\
                  validity_days = \"thirty\"\nrotate_before_days = 7\ngrace_days = 1\n\n\
                  [[token]]\nsecret = \"ci-build-pat\"\ndisplay_name = \"CI build\"\n\n\
                  [[token]]\nsecret = \"CI-Build-PAT\"\ndisplay_name = \"Other\"\nscopes = \"vso.bogus\"\n";
    std::fs::write(dir.path().join("patrol.toml"), policy).unwrap();
    for cmd in [&["plan"][..], &["check"]] {
        let out = patrol(dir.path(), cmd, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for want in ["defaults.validity_days", "must be a whole number", "token[1].scopes", "vso.bogus"] {
            assert!(all.contains(want), "`patrol {}` lacks {want:?}:\n{all}", cmd[0]);
        }
        assert!(!all.contains("(syntax)"), "{all}");
    }
    let out = patrol(dir.path(), &["plan"], &[]);
    let err = text(&out.stderr);
    assert!(
        err.contains("patrol.toml:5: defaults.validity_days: must be a whole number (found string \"thirty\")"),
        "{err}"
    );
    assert!(err.contains("patrol.toml:16: token[1].scopes:"), "{err}");

    // Fix the type: now the case-only duplicate is the error.
    std::fs::write(dir.path().join("patrol.toml"), policy.replace("\"thirty\"", "30").replace("vso.bogus", "vso.code"))
        .unwrap();
    let err = text(&patrol(dir.path(), &["plan"], &[]).stderr);
    assert!(err.contains("patrol.toml:13: token[1].secret:") && err.contains("only in case"), "{err}");

    // Empty: refused. Missing: `file: cannot read: …`.
    std::fs::write(dir.path().join("patrol.toml"), "\n# nothing yet\n").unwrap();
    let out = patrol(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("patrol.toml:1") && text(&out.stdout).contains("empty"),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_file(dir.path().join("patrol.toml")).unwrap();
    let out = patrol(dir.path(), &["plan"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("patrol.toml: cannot read: No such file") && !err.contains(":0:"), "{err}");
}

/// Every policy shipped in the repository — `patrol.toml` at the root and any `examples/*.toml` — passes
/// `patrol check` with no error and no warning, so an operator who starts from one starts clean (issue 16:
/// the root example's 30-day warning on a 30-day PAT drew a warning).
#[test]
fn every_shipped_policy_passes_check_without_a_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut policies = vec![root.join("patrol.toml")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            policies.push(p);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for p in &policies {
        let env =
            [("PATROL_POLICY_FILE", p.to_str().unwrap()), ("PATROL_CLIENT_ID", "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6")];
        let out = patrol(dir.path(), &["check", "--format", "json"], &env);
        assert_eq!(out.status.code(), Some(0), "{}: {}{}", p.display(), text(&out.stdout), text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        super::schemas::assert_valid("check", &v);
        assert_eq!(v["errors"], serde_json::json!([]), "{}: {v}", p.display());
        assert_eq!(v["warnings"], serde_json::json!([]), "{}: {v}", p.display());
        assert!(v["tokens"].as_u64().unwrap_or(0) > 0, "{}: {v}", p.display());
        let table = text(&patrol(dir.path(), &["check"], &env).stdout);
        assert!(table.contains("0 warning(s)") && !table.contains("LEVEL"), "{}: {table}", p.display());
    }
}

/// `patrol check`: policy and settings offline, every error at once (exit 2), warnings for risky but legal
/// choices (exit 0), read-only, and its JSON matches docs/schemas/check.schema.json.
#[test]
fn check_reports_every_error_and_warns_about_risky_choices() {
    let dir = tempfile::tempdir().unwrap();
    // Errors in the policy and in the settings, reported together.
    std::fs::write(
        dir.path().join("patrol.toml"),
        "[[token]]\nsecret = \"a-pat\"\ndisplay_name = \"A\"\norganization = \"fabrikam\"\nowner = \"x@contoso.com\"\n\
         scopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 40\ngrace_days = 1\n",
    )
    .unwrap();
    let out = patrol(dir.path(), &["check", "--format", "json"], &[("PATROL_MAX_CONCURRENCY", "lots")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    super::schemas::assert_valid("check", &v);
    let errors = v["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["field"] == "PATROL_MAX_CONCURRENCY" && e["source"] == "settings"), "{v}");
    assert!(
        errors.iter().any(|e| e["field"] == "token[0].rotate_before_days" && e["location"] == "patrol.toml:8"),
        "{v}"
    );
    assert_eq!(v["ok"], false);

    // Legal but risky: warnings, exit 0.
    std::fs::write(
        dir.path().join("patrol.toml"),
        "[defaults]\norganization = \"fabrikam\"\nowner = \"x@contoso.com\"\nscopes = \"vso.code\"\n\
         validity_days = 30\nrotate_before_days = 7\ngrace_days = 1\nnotify = [\"email:ops@contoso.com\"]\n\
         expiry_thresholds = [30, 7]\n\n\
         [[token]]\nsecret = \"a-pat\"\ndisplay_name = \"A\"\n\n\
         [[token.consumer]]\nkind = \"reference\"\ndescription = \"App Service web-prod\"\nlag_hours = 48\n",
    )
    .unwrap();
    let env = [
        ("PATROL_CLIENT_ID", "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6"),
        ("PATROL_KEYVAULT_URL", "https://kv-patrol.vault.azure.net/"),
    ];
    let out = patrol(dir.path(), &["check", "--format", "json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    super::schemas::assert_valid("check", &v);
    let warned = |field: &str, words: &str| {
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["field"] == field && w["problem"].as_str().unwrap().contains(words))
    };
    assert!(warned("token[0].expiry_thresholds", "30-day warning on a 30-day PAT"), "{v}");
    assert!(warned("token[0].grace_days", "lag 48 hours"), "{v}");
    assert!(warned("PATROL_OWN_KEYVAULT_URL", "refresh tokens share the consumer vault"), "{v}");
    assert_eq!((v["ok"].as_bool(), v["tokens"].as_u64()), (Some(true), Some(1)));
    let out = patrol(dir.path(), &["check"], &env);
    let table = text(&out.stdout);
    assert!(table.starts_with("LEVEL") && table.contains("valid, 1 token(s), 3 warning(s)"), "{table}");
    // A token naming a vault the settings do not configure: an error (the stores would refuse to open).
    let policy = std::fs::read_to_string(dir.path().join("patrol.toml")).unwrap();
    std::fs::write(
        dir.path().join("patrol.toml"),
        policy.replace("display_name = \"A\"", "display_name = \"A\"\nvault = \"team-kv\""),
    )
    .unwrap();
    let out = patrol(dir.path(), &["check", "--format", "json"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "token[0].vault" && e["problem"].as_str().unwrap().contains("kv-patrol")),
        "{v}"
    );
    // Read-only: only the policy is there.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("patrol.toml")]);
}

/// The README's patrol-emulator section, step by step with the real binaries: `patrol-emulator --seed
/// examples/seed.json --eventgrid-target …`, patrol's settings taken from its ready line (no
/// `PATROL_KEYVAULT_NAME`), `patrol check`, `patrol serve`, `patrol login`, `plan`, `rotate`. Every Key Vault
/// event Event Grid delivered reached the handler as an event of a vault patrol manages (before, each was
/// `ignored: vault "patrol-emu" is not one patrol manages`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_emulator_section_works_with_the_real_binaries() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## patrol-emulator").unwrap()..];
    let seed_path = root.join("examples/seed.json");
    assert!(section.contains("--seed examples/seed.json") && seed_path.is_file(), "the README's seed exists");
    let seed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seed_path).unwrap()).unwrap();
    let app = &seed["apps"][0];
    let (kv_client, kv_secret) = (app["clientId"].as_str().unwrap(), app["clientSecret"].as_str().unwrap());
    assert!(section.contains(kv_client) && section.contains(kv_secret), "the README quotes the seed's app");

    // The emulator binary, as `cargo run -p patrol-emulator` builds it.
    let status = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO"))
            .args(["build", "--offline", "-p", "patrol-emulator", "--bin", "patrol-emulator"])
            .current_dir(root)
            .status()
            .unwrap()
    });
    assert!(status.success());
    let emulator_bin = Path::new(env!("CARGO_BIN_EXE_patrol")).with_file_name("patrol-emulator");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut emu = Command::new(&emulator_bin)
        .args(["--seed", seed_path.to_str().unwrap(), "--eventgrid-target", &format!("http://127.0.0.1:{port}")])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(emu.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let r = |k: &str| ready[k].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("PATROL_DEVOPS_URL", r("devops")),
        ("PATROL_AUDIT_URL", r("audit")),
        ("PATROL_ENTRA_AUTHORITY", r("entra")),
        ("PATROL_TENANT_ID", r("tenant")),
        ("PATROL_CA_CERT", r("ca_cert")),
        ("PATROL_KEYVAULT_URL", r("keyvault")),
        ("PATROL_KEYVAULT_CREDENTIAL", "client-secret".into()),
        ("PATROL_KEYVAULT_TENANT_ID", r("tenant")),
        ("PATROL_KEYVAULT_CLIENT_ID", kv_client.into()),
        ("PATROL_KEYVAULT_CLIENT_SECRET", kv_secret.into()),
        ("PATROL_CLIENT_ID", "3b1f0c2d-9e8a-4f7b-a6c5-d4e3f2a1b0c9".into()),
        ("PATROL_LEASE", "local".into()),
        ("PATROL_POLICY_FILE", root.join("patrol.toml").display().to_string()),
        ("PATROL_STATE_DIR", dir.path().join(".patrol").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, _) in &env {
        let documented =
            ["PATROL_POLICY_FILE", "PATROL_STATE_DIR"].contains(&k.as_str()) || section.contains(k.as_str());
        assert!(documented, "the README's emulator section sets {k}");
    }
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
        c.args(args).current_dir(dir.path()).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        tokio::task::block_in_place(|| c.output().unwrap())
    };
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));

    let mut serve = Command::new(env!("CARGO_BIN_EXE_patrol"));
    serve.args(["serve", "--port", &port.to_string()]).current_dir(dir.path()).env_clear();
    serve.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env("PATROL_LOG_FORMAT", "json");
    let mut serve = serve.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let serve_out = serve.stdout.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(serve_out).read_to_string(&mut s);
        s
    });
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "patrol serve did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut child =
        super::login::spawn(dir.path(), &["--owner", "svc-rotation@contoso.com", "--poll-interval-ms", "50"], &env);
    let (code, seen, rest) = tokio::task::block_in_place(|| super::login::read_prompt(&mut child));
    let approve = reqwest::Client::new()
        .post(format!("{}/_control/devicecodes/approve", r("control")))
        .json(&serde_json::json!({ "userCode": code, "upn": "svc-rotation@contoso.com" }))
        .send()
        .await
        .unwrap();
    assert!(approve.status().is_success());
    let (code, stdout, stderr) = tokio::task::block_in_place(|| super::login::finish(child, seen, rest));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let out = run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["rotate"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ci-build-pat"), "{}", text(&out.stdout));

    // Every event the vault raised (the refresh token, three PATs) was delivered and answered.
    let control = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let events: serde_json::Value = control
            .get(format!("{}/_control/eventgrid/events", r("control")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let deliveries: serde_json::Value = control
            .get(format!("{}/_control/eventgrid/deliveries", r("control")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let delivered = deliveries["value"].as_array().unwrap().iter().filter(|d| d["status"] == 200).count();
        let raised = events["count"].as_u64().unwrap() as usize;
        if raised >= 4 && delivered >= raised {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{events}\n{deliveries}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = emu.kill();
    let _ = emu.wait();
    let logs = logs.join().unwrap();
    assert!(logs.contains("EventGridSecretChanged"), "{logs}");
    assert!(!logs.contains("is not one patrol manages"), "events were ignored:\n{logs}");
    assert!(logs.contains("is not managed by patrol"), "the refresh token's event reached the engine:\n{logs}");
}

/// Every `PATROL_*` name the code reads (outside its unit tests), in patrol and in patrol-emulator, is in
/// the README — a row of the settings table, or the list of tooling variables below it — and the table
/// lists nothing the code does not read.
#[test]
fn every_patrol_setting_the_code_reads_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![root.join("src"), root.join("emulator/src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name.ends_with("_tests.rs") {
                continue;
            }
            let code = std::fs::read_to_string(&p).unwrap();
            let code = code.split("#[cfg(test)]").next().unwrap();
            let mut rest = code;
            while let Some(i) = rest.find("\"PATROL_") {
                let tail = &rest[i + 1..];
                let end = tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap();
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() >= 40 && names.contains("PATROL_KEYVAULT_URL"), "{names:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let missing: Vec<_> = names.iter().filter(|n| !readme.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "README.md does not list {missing:?}");
    let rows: Vec<&str> =
        readme.lines().filter_map(|l| l.strip_prefix("| `PATROL_")).map(|l| l.split('`').next().unwrap()).collect();
    let stale: Vec<_> = rows.iter().filter(|r| !names.contains(&format!("PATROL_{r}"))).collect();
    assert!(stale.is_empty(), "the README's settings table lists settings the code does not read: {stale:?}");
}

/// `--help` of every command: the JSON field lists are written as lines of at most 80 columns, so clap never
/// re-wraps them in the middle of a field list on an 80-column terminal (it wraps prose at spaces only).
#[test]
fn help_never_wraps_json_field_lists() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<String> =
        patrol::cli::Cli::command().get_subcommands().map(|c| c.get_name().to_owned()).collect();
    names.retain(|n| n != "help");
    assert!(names.iter().any(|n| n == "check") && names.iter().any(|n| n == "history"), "{names:?}");
    let mut json_paragraphs = 0;
    for name in &names {
        let out = patrol(dir.path(), &[name, "--help"], &[("COLUMNS", "80")]);
        assert!(out.status.success(), "{name}");
        let help = text(&out.stdout);
        let mut in_json = false;
        for line in help.lines() {
            if line.starts_with("JSON") {
                in_json = true;
                json_paragraphs += 1;
            } else if line.trim().is_empty() {
                in_json = false;
            }
            if in_json {
                assert!(line.chars().count() <= 80, "`patrol {name} --help` has a JSON line wider than 80:\n{line}");
            }
        }
    }
    assert!(json_paragraphs >= 8, "{json_paragraphs}");
}

/// `patrol demo` exports to a local collector when asked (issue 18): a real OTLP receiver gets the three
/// functions' invocations, the rotations they did and each managed token's state, and not one byte of any
/// value the demo minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exports_its_runs_to_a_real_otlp_receiver_when_asked() {
    use secrecy::ExposeSecret;
    let receiver = crate::rotation::metrics::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let env = patrol::config::Source::default().with("PATROL_OTLP_ENDPOINT", &receiver.url);
    let outcome = patrol::cli::demo::run_demo(dir.path(), &env).await.unwrap();
    assert_eq!(outcome.json["ok"], true);
    // The demo flushes each handler's metrics when it stops it, before it returns.
    receiver.wait_for(1, std::time::Duration::from_secs(10)).await;
    let pts = receiver.points_since(0);
    for function in ["RotateTimer", "RotateHttp", "EventGridSecretChanged"] {
        assert!(
            pts.iter().any(|p| p["name"] == "patrol.invocations" && p["attributes"]["patrol.function"] == function),
            "no invocation of {function}: {pts:?}"
        );
    }
    let rotated: f64 = pts
        .iter()
        .filter(|p| p["name"] == "patrol.run.tokens" && p["attributes"]["patrol.run.result"] == "rotated")
        .filter_map(|p| p["value"].as_f64())
        .sum();
    // Day 0 rotates ci-build-pat (Event Grid) and release-bot-pat (forced, RotateHttp); the timer rotates
    // package-feed-pat later: at least those three.
    assert!(rotated >= 3.0, "rotated {rotated}: {pts:?}");
    assert!(
        pts.iter()
            .any(|p| p["name"] == "patrol.token.state" && p["attributes"]["patrol.secret.name"] == "ci-build-pat"),
        "no state of ci-build-pat: {pts:?}"
    );
    for r in receiver.requests() {
        let text = r.to_string();
        for m in &outcome.minted {
            assert!(!text.contains(m.expose_secret()), "a minted secret was exported");
        }
    }
}
