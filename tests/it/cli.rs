//! The operator's CLI, run as the real `patrol` binary: help, completions, exit codes, formats, the
//! report in headless Chromium, and `patrol demo` end to end.

use std::path::Path;
use std::process::{Command, Output};

fn patrol(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
    c.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
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
    let out = patrol(dir.path(), &["rotate", "nope-pat", "--force"], &[("PATROL_CLIENT_ID", "x")]);
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
    assert!(text(&out.stderr).contains("patrol login"));
}
